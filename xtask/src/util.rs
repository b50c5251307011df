//! Small helpers shared by the verbs: locating the workspace, loading the definition, writing a
//! file atomically (temporary name, fsync, rename, fsync of the directory).

use anyhow::{Context, Result};
use appliance::Definition;
use camino::{Utf8Path, Utf8PathBuf};
use std::io::Write;

pub fn workspace_root() -> Utf8PathBuf {
    Utf8Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// The definition named on the command line, or the project's default one.
pub fn load_definition(path: Option<&Utf8Path>) -> Result<(Utf8PathBuf, Definition)> {
    let path = match path {
        Some(p) => p.to_owned(),
        None => workspace_root().join(appliance::definition::DEFAULT_DEFINITION),
    };
    let def = Definition::load(&path)?;
    Ok((path, def))
}

/// Writes `bytes` to `path` through a temporary file in the same directory, so that a reader
/// never sees a half-written file and a failure leaves the old file (or none) in place; the
/// file is flushed before the rename and the directory after it, so that a crash leaves either
/// the old file or the whole new one.
pub fn write_atomic(path: &Utf8Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_str().is_empty())
        .unwrap_or(Utf8Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {dir}"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap_or("out"),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {tmp}"))?;
        f.write_all(bytes)
            .with_context(|| format!("cannot write {tmp}"))?;
        f.sync_all()
            .with_context(|| format!("cannot flush {tmp}"))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {tmp} to {path}"))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot flush the directory {dir}"))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
