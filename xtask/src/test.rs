//! `cargo xtask test`: every test, including the slow ones that build and boot an OVA in QEMU.
//! `cargo test` alone runs the fast subset (the slow tests are `#[ignore]`d there).

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
        if self.fast {
            cmd!(sh, "cargo test --workspace").run()?;
        } else {
            cmd!(sh, "cargo test --workspace -- --include-ignored").run()?;
        }
        Ok(())
    }
}
