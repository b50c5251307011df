//! Helpers shared by the end-to-end tests in `tests/tests/`: locating the workspace, running
//! `cargo xtask` and the built binaries. No test logic lives here.

use camino::{Utf8Path, Utf8PathBuf};

/// The workspace root.
pub fn workspace_root() -> Utf8PathBuf {
    Utf8Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_owned()
}
