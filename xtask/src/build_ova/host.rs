//! The build host: which external tools a verb needs, checked up front with one message that
//! names the Debian packages to install; as root on a Debian-family host the packages are
//! installed with apt-get instead. Also the root check for the steps that need it.

use anyhow::{bail, Context, Result};
use camino::Utf8Path;
use xshell::{cmd, Shell};

/// A program (or file) and the Debian package that provides it.
#[derive(Clone, Copy)]
pub struct Tool {
    pub path_or_name: &'static str,
    pub package: &'static str,
}

pub const fn tool(path_or_name: &'static str, package: &'static str) -> Tool {
    Tool {
        path_or_name,
        package,
    }
}

fn present(t: &Tool) -> bool {
    if t.path_or_name.starts_with('/') {
        return Utf8Path::new(t.path_or_name).exists();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(t.path_or_name).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Utf8Path::new(d).join(t.path_or_name).is_file())
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn debian_family() -> bool {
    Utf8Path::new("/etc/debian_version").exists()
}

/// Makes sure every tool is there, installing the missing packages when that is possible.
pub fn ensure(sh: &Shell, verb: &str, tools: &[Tool]) -> Result<()> {
    let mut missing: Vec<&'static str> = tools
        .iter()
        .filter(|t| !present(t))
        .map(|t| t.package)
        .collect();
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if is_root() && debian_family() {
        eprintln!("{verb}: installing the missing host packages: {list}");
        cmd!(sh, "apt-get update -q")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .run()?;
        cmd!(
            sh,
            "apt-get install -y -q --no-install-recommends {missing...}"
        )
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
        .with_context(|| format!("apt-get could not install {list}"))?;
        let still: Vec<_> = tools
            .iter()
            .filter(|t| !present(t))
            .map(|t| t.path_or_name)
            .collect();
        if !still.is_empty() {
            bail!(
                "{verb}: still missing after installing {list}: {}",
                still.join(", ")
            );
        }
        return Ok(());
    }
    bail!("{verb} needs host tools that are missing; install these Debian packages: apt-get install {list}")
}

/// The static agent is built for musl; rustup adds the target once.
pub fn ensure_musl_target(sh: &Shell) -> Result<()> {
    let installed = cmd!(sh, "rustup target list --installed")
        .quiet()
        .read()
        .unwrap_or_default();
    if installed.lines().any(|l| l.trim() == super::MUSL_TARGET) {
        return Ok(());
    }
    let target = super::MUSL_TARGET;
    eprintln!("adding the Rust target {target} for the static mt-agent");
    cmd!(sh, "rustup target add {target}")
        .run()
        .with_context(|| format!("the static mt-agent needs the Rust target {target}: run `rustup target add {target}`"))
}
