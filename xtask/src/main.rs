//! `cargo xtask <verb>`: the build pipeline's entry point. A short dispatcher: parse flags, then
//! one module per verb. Orchestration only: the logic lives in the `appliance` library.

mod bench;
mod kickstart;
mod test;
mod util;

use clap::{Parser, Subcommand};

/// Builds, verifies and boot-tests the master-target appliance.
#[derive(Parser)]
#[command(name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    #[command(subcommand)]
    Bench(bench::Bench),
    Kickstart(kickstart::Kickstart),
    Test(test::Test),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let sh = xshell::Shell::new()?;
    sh.change_dir(util::workspace_root());
    match cli.verb {
        Verb::Bench(v) => v.run(&sh),
        Verb::Kickstart(v) => v.run(&sh),
        Verb::Test(v) => v.run(&sh),
    }
}
