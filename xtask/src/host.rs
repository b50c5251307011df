//! The build host: the external tools and Rust toolchain parts a verb needs, checked up front with
//! one message that names what to install; as root on a Debian-family host the missing packages
//! are installed with apt-get (and Rust targets and components with rustup) instead. Which Debian
//! package provides which tool is written once, in `testkit::host::TEST_TOOLS`, the table the
//! tests check their own tools against; a verb here only names the tools it runs.

use anyhow::{bail, Context, Result};
use camino::Utf8Path;
use testkit::host::{package_of, present};
use xshell::{cmd, Shell};

pub use testkit::host::is_root;

/// The Rust target of the static agent shipped in images.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

fn debian_family() -> bool {
    Utf8Path::new("/etc/debian_version").exists()
}

/// Makes sure every tool (in the notation of `testkit::host::TEST_TOOLS`) is there, installing
/// the packages of the missing ones when that is possible. Only missing packages are named to
/// apt-get: asking for an installed one may make apt replace it (a newer `qemu-utils` from
/// backports would then block `qemu-system-x86`).
pub fn ensure(sh: &Shell, verb: &str, tools: &[&str]) -> Result<()> {
    let missing_tools: Vec<&str> = tools.iter().copied().filter(|t| !present(t)).collect();
    let mut missing: Vec<&'static str> = missing_tools.iter().map(|t| package_of(t)).collect();
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !(is_root() && debian_family()) {
        bail!(
            "{verb} needs host tools that are missing ({}); install these Debian packages: \
             apt-get install {list}",
            missing_tools.join(", ")
        )
    }
    eprintln!("{verb}: installing the missing host packages: {list}");
    cmd!(sh, "apt-get update -q")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
        .context("apt-get update failed: is a Debian mirror reachable?")?;
    apt_install(sh, &missing)?;
    // apt may remove a package to make room for one it installs: a fresh machine of the CI's
    // kind has qemu-utils from backports, which Debian's qemu-system-x86 replaces. The tools
    // that went missing that way come back in the version that fits what is now installed.
    let gone: Vec<&str> = tools.iter().copied().filter(|t| !present(t)).collect();
    if !gone.is_empty() {
        let mut again: Vec<&'static str> = gone.iter().map(|t| package_of(t)).collect();
        again.sort();
        again.dedup();
        eprintln!(
            "{verb}: installing again what apt removed meanwhile: {}",
            again.join(" ")
        );
        apt_install(sh, &again)?;
    }
    let still: Vec<&str> = tools.iter().copied().filter(|t| !present(t)).collect();
    if !still.is_empty() {
        bail!(
            "{verb}: still missing after installing {list}: {}",
            still.join(", ")
        );
    }
    Ok(())
}

fn apt_install(sh: &Shell, packages: &[&str]) -> Result<()> {
    cmd!(
        sh,
        "apt-get install -y -q --no-install-recommends {packages...}"
    )
    .env("DEBIAN_FRONTEND", "noninteractive")
    .run()
    .with_context(|| format!("apt-get could not install {}", packages.join(" ")))
}

/// The static agent is built for musl; rustup adds the target once.
pub fn ensure_musl_target(sh: &Shell) -> Result<()> {
    let installed = cmd!(sh, "rustup target list --installed")
        .quiet()
        .read()
        .unwrap_or_default();
    if installed.lines().any(|l| l.trim() == MUSL_TARGET) {
        return Ok(());
    }
    let target = MUSL_TARGET;
    eprintln!("adding the Rust target {target} for the static mt-agent");
    cmd!(sh, "rustup target add {target}")
        .run()
        .with_context(|| format!("the static mt-agent needs the Rust target {target}: run `rustup target add {target}`"))
}

/// Rust toolchain components a verb runs (`rustfmt`, `clippy`), added with rustup when missing.
pub fn ensure_components(sh: &Shell, verb: &str, components: &[&str]) -> Result<()> {
    let installed = cmd!(sh, "rustup component list --installed")
        .quiet()
        .read()
        .unwrap_or_default();
    let missing: Vec<&str> = components
        .iter()
        .copied()
        .filter(|c| {
            !installed
                .lines()
                .any(|l| l.trim().starts_with(&format!("{c}-")))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    eprintln!("{verb}: adding the Rust components {list}");
    cmd!(sh, "rustup component add {missing...}")
        .run()
        .with_context(|| {
            format!("{verb} needs the Rust components {list}: run `rustup component add {list}`")
        })
}
