//! The CentOS 6.6 minimal ISO: where the user's copy is (flag or environment), whether it is the
//! published file (SHA-256), and the installer's kernel and initrd taken out of it with xorriso.
//!
//! Nothing is downloaded: CentOS 6 is end of life and the ISO is the user's to supply.

use super::run_tool;
use crate::fetch_packages::sha256_file;
use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::{cmd, Shell};

/// Environment variable naming the ISO when `--iso` is not given.
pub const ISO_ENV: &str = "MT_CENTOS_ISO";
/// The published file and its SHA-256 (CentOS' `sha256sum.txt` for 6.6/isos/x86_64).
pub const ISO_NAME: &str = "CentOS-6.6-x86_64-minimal.iso";
pub const ISO_SHA256: &str = "5458f357e8a55e3a866dd856896c7e0ac88e7f9220a3dd74c58a3b0acede8e4d";
/// Where CentOS still publishes it (with `sha256sum.txt` and its signed `.asc` next to it).
pub const ISO_PUBLISHED_AT: [&str; 2] = [
    "https://vault.centos.org/6.6/isos/x86_64/",
    "https://archive.kernel.org/centos-vault/6.6/isos/x86_64/",
];
/// The installer's kernel and initrd inside the ISO (the same on the DVD and netinstall ISOs).
pub const ISO_KERNEL: &str = "/isolinux/vmlinuz";
pub const ISO_INITRD: &str = "/isolinux/initrd.img";

/// The ISO from `--iso`, else from the environment; without either, an error saying what is
/// needed and where it is published.
pub fn locate(flag: Option<&Utf8Path>) -> Result<Utf8PathBuf> {
    locate_from(flag, std::env::var(ISO_ENV).ok())
}

/// [`locate`] with the environment variable's value given.
pub fn locate_from(flag: Option<&Utf8Path>, env: Option<String>) -> Result<Utf8PathBuf> {
    let path = match flag {
        Some(p) => p.to_owned(),
        None => match env {
            Some(p) if !p.is_empty() => Utf8PathBuf::from(p),
            _ => bail!(
                "the centos6 base is installed from the CentOS 6.6 minimal ISO, which this build cannot download: \
                 get {ISO_NAME} (SHA-256 {ISO_SHA256}) from {} or {} and pass it with --iso FILE or {ISO_ENV}=FILE",
                ISO_PUBLISHED_AT[0],
                ISO_PUBLISHED_AT[1]
            ),
        },
    };
    if !path.is_file() {
        bail!(
            "the CentOS ISO {path} does not exist or is not a file (expected {ISO_NAME}, published at {})",
            ISO_PUBLISHED_AT[0]
        );
    }
    Ok(path)
}

/// Checks the ISO is the published one. Another file is refused unless `allow_unverified`, and
/// then only with a warning: what it installs is whatever that file holds.
pub fn verify(path: &Utf8Path, allow_unverified: bool) -> Result<String> {
    eprintln!("checking the SHA-256 of {path}");
    let actual = sha256_file(path)?;
    if actual == ISO_SHA256 {
        eprintln!("{path} is {ISO_NAME} as published");
        return Ok(actual);
    }
    if allow_unverified {
        eprintln!(
            "WARNING: {path} has SHA-256 {actual}, not the published {ISO_SHA256} of {ISO_NAME}; \
             building from it anyway because of --allow-unverified-iso"
        );
        return Ok(actual);
    }
    bail!(
        "{path} has SHA-256 {actual}, but {ISO_NAME} as published has {ISO_SHA256}: \
         it is not the CentOS 6.6 minimal ISO (download it again from {}), \
         or pass --allow-unverified-iso to build from this file anyway",
        ISO_PUBLISHED_AT[0]
    )
}

/// The installer's kernel and initrd, copied out of the ISO.
pub struct BootFiles {
    pub kernel: Utf8PathBuf,
    pub initrd: Utf8PathBuf,
}

/// Extracts `isolinux/vmlinuz` and `isolinux/initrd.img` into `dir`.
pub fn extract_boot_files(sh: &Shell, iso: &Utf8Path, dir: &Utf8Path) -> Result<BootFiles> {
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initrd.img");
    for f in [&kernel, &initrd] {
        if f.exists() {
            std::fs::remove_file(f).with_context(|| format!("cannot remove the old {f}"))?;
        }
    }
    run_tool(
        cmd!(
            sh,
            "xorriso -osirrox on -indev {iso} -extract {ISO_KERNEL} {kernel} -extract {ISO_INITRD} {initrd}"
        ),
        &format!("extracting {ISO_KERNEL} and {ISO_INITRD} from {iso}"),
    )?;
    for (f, inside) in [(&kernel, ISO_KERNEL), (&initrd, ISO_INITRD)] {
        if !f.is_file() {
            bail!("{iso} has no {inside}: is it an installer ISO? (expected {ISO_NAME})");
        }
    }
    Ok(BootFiles { kernel, initrd })
}
