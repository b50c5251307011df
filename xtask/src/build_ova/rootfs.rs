//! Stage 1: the Debian 12 root file system, built by `mmdebstrap` from Debian's archive into one
//! tar file (`build/rootfs-<hash>/rootfs.tar`). It depends only on the package list and the
//! recipe below, so a change to the agent or to the definition's network or disks reuses it.
//!
//! What must happen inside the Debian environment runs in mmdebstrap's own hooks, which is how
//! mmdebstrap is meant to be extended (the build never chroots into the tree itself): the
//! `--essential-hook` preseeds debconf answers before the packages are installed, the
//! `--customize-hook` generates the locale and the initramfs.

use super::cache::{Cache, StageInputs, StageOutput};
use super::progress::Ticker;
use anyhow::{bail, Context, Result};
use appliance::definition::{NicKind, ScsiController};
use appliance::packages::PackageManifest;
use appliance::Definition;
use camino::{Utf8Path, Utf8PathBuf};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// Bumped when the recipe (options, hooks) changes what the stage produces.
const RECIPE: u32 = 3;
const SUITE: &str = "bookworm";
const SOURCES: [&str; 3] = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
];

/// The complete, sorted list of Debian packages to install: the manifest's base packages and
/// the real names of the definition's logical packages (`packages/debian12.toml`).
pub fn package_list(manifest: &PackageManifest, def: &Definition) -> Vec<String> {
    let mut list: Vec<String> = manifest.base_packages().to_vec();
    list.extend(manifest.packages_for(def));
    list.sort();
    list.dedup();
    list
}

/// The drivers of every storage controller and NIC an OVF of this project can declare. They go
/// into the initramfs whatever hardware the build runs on, so that one image boots on any of
/// them (an initramfs without the LSI driver is a classic cause of a panic on vSphere).
pub fn initramfs_drivers() -> Vec<&'static str> {
    let scsi = [
        ScsiController::Paravirtual,
        ScsiController::Lsilogic,
        ScsiController::LsilogicSas,
    ];
    let nics = [NicKind::Vmxnet3, NicKind::E1000];
    scsi.iter()
        .map(|c| c.linux_driver())
        .chain(nics.iter().map(|n| n.linux_driver()))
        .collect()
}

/// kdump-tools' kernel hook: it builds the capture kernel's small initramfs with
/// `MODULES=dep`, which needs the running system's mounted root device. Inside mmdebstrap there
/// is none, so the hook fails, and with it the kernel package's configuration if dpkg happens
/// to configure the kernel after unpacking kdump-tools. It is diverted to a name run-parts
/// skips (names with a dot) while the packages are installed and put back afterwards.
const KDUMP_KERNEL_HOOK: &str = "/etc/kernel/postinst.d/kdump-tools";

/// Where kdump-tools keeps the capture kernel's initramfs (`initrd.img-<version>`): at boot
/// `kdump-config load` builds one only when it is missing, so the one the build puts here saves
/// every deployed copy that work on its first boot (70 s under emulation).
const KDUMP_INITRD_DIR: &str = "/var/lib/kdump";

/// The kdump sysctl settings; kdump-config rebuilds the capture initramfs when they differ from
/// the copy it keeps in `KDUMP_INITRD_DIR` (`latest_sysctls-<version>`).
const KDUMP_SYSCTLS: &str = "/etc/kdump/sysctl.conf";

/// What the capture kernel needs to find and mount the root file system and write the dump to
/// `/var/crash`, besides every controller's driver (`initramfs_drivers`, already in the modules
/// file): SCSI disks, ext4 and the checksum its metadata uses. The build's capture initramfs is
/// made with `MODULES=list` from these (the hook's `dep` needs a running system).
const KDUMP_EXTRA_MODULES: [&str; 3] = ["sd_mod", "ext4", "crc32c_generic"];

/// Whether the package list brings kdump-tools (the definition's `kexec-tools` on Debian).
fn has_kdump(packages: &[String]) -> bool {
    packages.iter().any(|p| p == "kdump-tools")
}

/// mmdebstrap's essential hook: runs with the tree as "$1" after the Essential packages (which
/// bring debconf and dpkg) are installed and before the rest. Nothing may ask a question: the
/// debconf answers the appliance needs are set here rather than left to the defaults.
fn essential_hook(packages: &[String]) -> String {
    let mut hook = String::from("set -e\n");
    if has_kdump(packages) {
        hook.push_str(&format!(
            r#"# kdump-tools loads the capture kernel at boot; kexec-tools must not turn every reboot into
# a kexec (the VM reboots through its firmware, as vSphere expects).
printf '%s\n' 'kdump-tools kdump-tools/use_kdump boolean true' \
    'kexec-tools kexec-tools/load_kexec boolean false' | chroot "$1" debconf-set-selections
chroot "$1" dpkg-divert --quiet --local --rename --divert {KDUMP_KERNEL_HOOK}.mt-build --add {KDUMP_KERNEL_HOOK}
"#
        ));
    }
    hook
}

/// mmdebstrap's customize hook: runs with the finished tree as "$1", before it is packed.
fn customize_hook(packages: &[String]) -> String {
    let mut hook = format!(
        r#"set -e
root="$1"
printf '%s\n' {drivers} >> "$root/etc/initramfs-tools/modules"
# The image has no hibernation; without this the initramfs waits for a resume device.
echo RESUME=none > "$root/etc/initramfs-tools/conf.d/resume"
echo 'en_US.UTF-8 UTF-8' > "$root/etc/locale.gen"
chroot "$root" locale-gen
chroot "$root" update-locale LANG=en_US.UTF-8
chroot "$root" update-initramfs -u -k all
rm -f "$root/vmlinuz.old" "$root/initrd.img.old" "$root"/boot/*.old-dkms
"#,
        drivers = initramfs_drivers().join(" ")
    );
    if has_kdump(packages) {
        hook.push_str(&format!(
            r#"chroot "$root" dpkg-divert --quiet --local --rename --remove {KDUMP_KERNEL_HOOK}
# The capture kernel's initramfs for the image's kernel, by kdump-tools' own hook, with the
# module list instead of the running system's (there is none here); the hook itself runs again
# on every kernel installed later, on the deployed VM, as Debian has it.
# kdump-config rebuilds it when /etc/kdump/sysctl.conf differs from the copy it keeps beside it
# (`latest_sysctls-<version>`): the copy is made here as kdump-config would make it.
conf="$root/etc/initramfs-tools"
cp -p "$conf/modules" "$root/modules.mt-build"
printf '%s\n' {extra} >> "$conf/modules"
echo MODULES=list > "$conf/conf.d/zz-mt-kdump-build"
for v in $(chroot "$root" linux-version list); do
    chroot "$root" {KDUMP_KERNEL_HOOK} "$v"
    cp "$root{KDUMP_SYSCTLS}" "$root{KDUMP_INITRD_DIR}/latest_sysctls-$v"
done
mv "$root/modules.mt-build" "$conf/modules"
rm -f "$conf/conf.d/zz-mt-kdump-build" "$root{KDUMP_INITRD_DIR}/initramfs-tools/conf.d/zz-mt-kdump-build"
for v in $(chroot "$root" linux-version list); do test -s "$root{KDUMP_INITRD_DIR}/initrd.img-$v"; done
"#,
            extra = KDUMP_EXTRA_MODULES.join(" "),
        ));
    }
    hook
}

/// Documentation and translations are left out (copyright files stay, for the licences).
const DPKG_OPTIONS: [&str; 5] = [
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
];

pub fn inputs(packages: &[String]) -> StageInputs {
    let mut inputs = StageInputs::new("rootfs", RECIPE);
    inputs
        .add("suite", SUITE.as_bytes())
        .add("sources", SOURCES.join("\n").as_bytes())
        .add("packages", packages.join(" ").as_bytes())
        .add("essential-hook", essential_hook(packages).as_bytes())
        .add("hook", customize_hook(packages).as_bytes())
        .add("dpkg", DPKG_OPTIONS.join("\n").as_bytes());
    inputs
}

/// The rootfs tar, built or reused.
pub fn build(cache: &Cache, packages: &[String]) -> Result<(Utf8PathBuf, StageOutput)> {
    let expected = cache.last_duration("rootfs");
    let out = cache.stage(&inputs(packages), |dir| mmdebstrap(packages, dir, expected))?;
    Ok((out.dir.join("rootfs.tar"), out))
}

fn mmdebstrap(
    packages: &[String],
    dir: &Utf8Path,
    expected: Option<std::time::Duration>,
) -> Result<()> {
    let tar = dir.join("rootfs.tar");
    let log_path = dir.join("mmdebstrap.log");
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg("--variant=minbase")
        .arg("--mode=root")
        .arg("--format=tar")
        .arg(format!("--include={}", packages.join(",")))
        .arg(format!("--essential-hook={}", essential_hook(packages)))
        .arg(format!("--customize-hook={}", customize_hook(packages)));
    for o in DPKG_OPTIONS {
        cmd.arg(format!("--dpkgopt={o}"));
    }
    cmd.arg(SUITE).arg(tar.as_str());
    for s in SOURCES {
        cmd.arg(s);
    }
    eprintln!(
        "rootfs: mmdebstrap {SUITE} with {} packages (log: {log_path})",
        packages.len()
    );
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run mmdebstrap (Debian package: mmdebstrap)")?;
    let status_line = Arc::new(Mutex::new(String::new()));
    let log = Arc::new(Mutex::new(
        std::fs::File::create(&log_path).with_context(|| format!("cannot create {log_path}"))?,
    ));
    let mut readers = Vec::new();
    let streams: Vec<Box<dyn std::io::Read + Send>> = vec![
        Box::new(child.stdout.take().expect("piped")),
        Box::new(child.stderr.take().expect("piped")),
    ];
    for stream in streams {
        let (log, status) = (log.clone(), status_line.clone());
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Ok(mut f) = log.lock() {
                    let _ = writeln!(f, "{line}");
                }
                if line.starts_with("I: ") {
                    if let Ok(mut s) = status.lock() {
                        *s = line;
                    }
                }
            }
        }));
    }
    let status = {
        let _ticker = Ticker::start("rootfs", expected, status_line);
        let status = child.wait().context("waiting for mmdebstrap")?;
        for r in readers {
            let _ = r.join();
        }
        status
    };
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "mmdebstrap failed ({status}); the last lines of {log_path}:\n{}",
            tail.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_logical_package_of_the_definition_maps_into_the_list() {
        let path = crate::util::workspace_root().join(appliance::definition::DEFAULT_DEFINITION);
        let def = Definition::load(&path).unwrap();
        let manifest = PackageManifest::shipped(appliance::definition::Base::Debian12);
        let list = package_list(&manifest, &def);
        for p in [
            "locales",
            "initramfs-tools",
            "multipath-tools",
            "reiserfsprogs",
            "kexec-tools",
            "kdump-tools",
            "makedumpfile",
            "nftables",
            "linux-image-amd64",
        ] {
            assert!(list.iter().any(|l| l == p), "{p} missing from {list:?}");
        }
        let mut sorted = list.clone();
        sorted.sort();
        assert_eq!(list, sorted);
    }

    #[test]
    fn kdump_tools_is_preseeded_and_its_kernel_hook_diverted_only_while_installing() {
        let with: Vec<String> = ["kexec-tools", "kdump-tools"].map(String::from).to_vec();
        let essential = essential_hook(&with);
        assert!(essential.contains("kdump-tools/use_kdump boolean true"));
        assert!(essential.contains("kexec-tools/load_kexec boolean false"));
        let divert =
            format!("--rename --divert {KDUMP_KERNEL_HOOK}.mt-build --add {KDUMP_KERNEL_HOOK}");
        assert!(essential.contains(&divert), "{essential}");
        let customize = customize_hook(&with);
        let restore = customize
            .find(&format!("--rename --remove {KDUMP_KERNEL_HOOK}"))
            .expect("the diversion is removed");
        assert!(
            restore > customize.find("update-initramfs").unwrap(),
            "{customize}"
        );
        // run-parts skips names with a dot: the diverted hook cannot run during the install.
        let name = KDUMP_KERNEL_HOOK.rsplit('/').next().unwrap();
        assert!(!name.contains('.') && divert.contains(&format!("{name}.mt-build")));
        // The capture initramfs is made after the hook is back, with the list, and the build's
        // settings do not stay behind.
        let made = customize
            .find(&format!("chroot \"$root\" {KDUMP_KERNEL_HOOK} \"$v\""))
            .unwrap();
        assert!(made > restore, "{customize}");
        assert!(customize[..made].contains("echo MODULES=list"));
        assert!(customize[made..].contains("rm -f \"$conf/conf.d/zz-mt-kdump-build\""));
        assert!(customize[made..].contains(&format!(
            "test -s \"$root{KDUMP_INITRD_DIR}/initrd.img-$v\""
        )));
        // Without the copy of the sysctls beside it, kdump-config deletes and rebuilds it.
        assert!(customize[made..].contains(&format!("{KDUMP_INITRD_DIR}/latest_sysctls-$v")));
        let without: Vec<String> = vec!["kexec-tools".into()];
        assert!(!essential_hook(&without).contains("kdump"));
        assert!(!customize_hook(&without).contains("dpkg-divert"));
    }

    #[test]
    fn the_initramfs_carries_every_controller_and_nic_driver() {
        let d = initramfs_drivers();
        for m in ["vmw_pvscsi", "mptspi", "mptsas", "vmxnet3", "e1000"] {
            assert!(d.contains(&m), "{m}");
        }
    }
}
