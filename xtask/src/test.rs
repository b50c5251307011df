//! `cargo xtask test`: every test, including the slow ones that build and boot an OVA in QEMU.
//! `cargo test` alone runs the fast subset (the slow tests are `#[ignore]`d there).
//!
//! Before cargo runs, the host gets what the tests need, so the command works on a fresh Debian
//! machine with only rustup: every tool of `testkit::host::TEST_TOOLS` (as root on Debian, the
//! missing packages are installed; elsewhere the command stops and names them), the musl target
//! of the static agent, and the rustfmt and clippy components the tidy test runs.

use anyhow::Result;
use xshell::cmd;

/// Run every test: the fast unit and integration tests and the QEMU builds and boots.
#[derive(clap::Args)]
pub struct Test {
    /// Only the fast tests (what `cargo test` runs).
    #[arg(long)]
    fast: bool,
}

impl Test {
    pub fn run(self, sh: &xshell::Shell) -> Result<()> {
        let tools: Vec<&str> = testkit::host::TEST_TOOLS.iter().map(|(t, _)| *t).collect();
        crate::host::ensure(sh, "test", &tools)?;
        crate::host::ensure_musl_target(sh)?;
        crate::host::ensure_components(sh, "test", &["rustfmt", "clippy"])?;
        if self.fast {
            cmd!(sh, "cargo test --workspace").run()?;
        } else {
            cmd!(sh, "cargo test --workspace -- --include-ignored").run()?;
        }
        Ok(())
    }
}
