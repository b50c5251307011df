//! `cargo xtask <verb>`: the build pipeline's entry point. A short dispatcher: parse flags, then
//! one module per verb. Orchestration only: the logic lives in the `appliance` library.

mod bench;
mod boot_test;
mod build_ova;
mod centos;
mod deploy_spec;
mod fetch_packages;
mod host;
mod kickstart;
mod ova;
mod qemu;
mod test;
mod util;
mod verify_ova;

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
    Bench(bench::Bench),
    Kickstart(kickstart::Kickstart),
    BuildOva(build_ova::BuildOva),
    BootTest(boot_test::BootTest),
    FetchPackages(fetch_packages::FetchPackages),
    Test(test::Test),
    VerifyOva(verify_ova::VerifyOva),
    #[command(hide = true)]
    VmdkConvert(bench::vmdk::VmdkConvert),
    Ova(ova::Ova),
    DeploySpec(deploy_spec::DeploySpec),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let sh = xshell::Shell::new()?;
    sh.change_dir(util::workspace_root());
    match cli.verb {
        Verb::Kickstart(v) => v.run(&sh),
        Verb::BuildOva(v) => v.run(&sh),
        Verb::BootTest(v) => v.run(&sh),
        Verb::FetchPackages(v) => v.run(&sh),
        Verb::Test(v) => v.run(&sh),
        Verb::VerifyOva(v) => v.run(&sh),
        Verb::Bench(v) => v.run(&sh),
        Verb::VmdkConvert(v) => v.run(&sh),
        Verb::Ova(v) => v.run(&sh),
        Verb::DeploySpec(v) => v.run(&sh),
    }
}
