//! The transports of the OVF environment: VMware tools' `guestinfo.ovfEnv`, then any iso9660
//! CD-ROM carrying `ovf-env.xml`. Every program runs through the injectable [`Runner`], so tests
//! and the boot test's fakes stand in for `vmtoolsd`, `blkid`, `mount` and `umount`.

use super::{Transport, ISO_FILE_NAME};
use anyhow::{Context, Result};
use camino::Utf8PathBuf;

/// Runs a program and returns whether it succeeded and its standard output. Injected so tests
/// (and the boot test's fakes) can stand in for `vmtoolsd`, `blkid`, `mount` and `umount`.
pub trait Runner {
    fn run(&self, program: &str, args: &[&str]) -> std::io::Result<(bool, String)>;
}

/// The real runner: the programs on the guest's PATH.
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, program: &str, args: &[&str]) -> std::io::Result<(bool, String)> {
        let out = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    }
}

/// Finds the OVF environment: VMware tools first (vSphere's default), then a CD-ROM with
/// `ovf-env.xml`. `None` when neither carries one (not deployed from the OVF with properties).
pub fn read_environment(runner: &dyn Runner) -> Result<Option<(Transport, String)>> {
    // No vmtoolsd (ENOENT) or "No value found" (exit 1) both mean: not this transport.
    if let Ok((true, out)) = runner.run("vmtoolsd", &["--cmd", "info-get guestinfo.ovfEnv"]) {
        if !out.trim().is_empty() {
            return Ok(Some((Transport::GuestInfo, out)));
        }
    }
    let devices = match runner.run("blkid", &["-t", "TYPE=iso9660", "-o", "device"]) {
        Ok((true, out)) => out,
        _ => return Ok(None),
    };
    for device in devices.lines().map(str::trim).filter(|d| !d.is_empty()) {
        if let Some(text) = read_from_cdrom(runner, device)? {
            return Ok(Some((
                Transport::Iso {
                    device: device.to_string(),
                },
                text,
            )));
        }
    }
    Ok(None)
}

/// Mounts one iso9660 device read-only on a fresh directory and reads `ovf-env.xml` (plain
/// ISO 9660 level 1 names it `OVF-ENV.XML;1`, shown upper-case without Rock Ridge).
fn read_from_cdrom(runner: &dyn Runner, device: &str) -> Result<Option<String>> {
    let dir = std::env::temp_dir().join(format!(
        "mt-ovfenv-{}-{}",
        std::process::id(),
        device.replace('/', "_")
    ));
    let dir = Utf8PathBuf::from_path_buf(dir).map_err(|p| anyhow::anyhow!("{p:?} is not UTF-8"))?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir}"))?;
    let mounted = matches!(
        runner.run(
            "mount",
            &["-o", "ro", "-t", "iso9660", device, dir.as_str()]
        ),
        Ok((true, _))
    );
    let mut found = None;
    if mounted {
        for name in [ISO_FILE_NAME, "OVF-ENV.XML", "OVF-ENV.XML;1"] {
            if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
                found = Some(text);
                break;
            }
        }
        let _ = runner.run("umount", &[dir.as_str()]);
    }
    let _ = std::fs::remove_dir(&dir);
    Ok(found)
}
