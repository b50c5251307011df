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
const RECIPE: u32 = 4;
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
const KDUMP_INITRD_DIR: &str = mt_contract::guest::KDUMP_TOOLS_DIR;

/// The kdump sysctl settings; kdump-config rebuilds the capture initramfs when they differ from
/// the copy it keeps in `KDUMP_INITRD_DIR` (`latest_sysctls-<version>`).
const KDUMP_SYSCTLS: &str = "/etc/kdump/sysctl.conf";

/// What both initramfs images need besides every controller's driver (`initramfs_drivers`) to
/// find and mount the root file system, and for the capture kernel to write the dump to
/// `/var/crash`: SCSI disks, ext4 and the checksum its metadata uses, and the driver of QEMU's
/// LSI controller model (the boot test's stand-in for VMware's LSI Logic parallel). Both are
/// made with `MODULES=list` from the modules file: Debian's default (`most`) packs every
/// storage and file system driver, a 36 MiB image the kernel spends seconds unpacking at each
/// boot under emulation, and kdump-tools' `dep` needs a running system.
const INITRAMFS_EXTRA_MODULES: [&str; 4] = ["sd_mod", "ext4", "crc32c_generic", "sym53c8xx"];

/// The module list both initramfs images are made from (`/etc/initramfs-tools/modules`).
fn initramfs_modules() -> Vec<&'static str> {
    let mut m = initramfs_drivers();
    m.extend(INITRAMFS_EXTRA_MODULES);
    m
}

/// Kernel modules (paths under each kernel's `kernel/` directory) for hardware a VMware virtual
/// machine cannot have: sound, cameras and TV, GPUs other than VMware's SVGA, wireless,
/// Bluetooth, CAN, ISDN, InfiniBand, sensors, laptop platforms, physical NICs and RAID/FC HBAs
/// (only reachable through PCI passthrough, which the appliance does not support). What stays:
/// every storage and network path of VMware's virtual hardware, file systems (xfs, reiserfs
/// among them), device-mapper and multipath, netfilter, USB and input. About 200 MiB of the
/// kernel's 384 MiB; a kernel installed later on the VM comes whole.
const PRUNED_MODULES: [&str; 60] = [
    "sound",
    "drivers/media",
    "drivers/staging",
    "drivers/comedi",
    "drivers/iio",
    "drivers/infiniband",
    "drivers/mtd",
    "drivers/mmc",
    "drivers/memstick",
    "drivers/isdn",
    "drivers/nfc",
    "drivers/bluetooth",
    "drivers/hwmon",
    "drivers/platform",
    "drivers/thunderbolt",
    "drivers/firewire",
    "drivers/atm",
    "drivers/gnss",
    "drivers/w1",
    "drivers/gpu/drm/amd",
    "drivers/gpu/drm/ast",
    "drivers/gpu/drm/gma500",
    "drivers/gpu/drm/i915",
    "drivers/gpu/drm/mgag200",
    "drivers/gpu/drm/nouveau",
    "drivers/gpu/drm/radeon",
    "drivers/gpu/drm/udl",
    "drivers/net/ethernet",
    "drivers/net/wireless",
    "drivers/net/usb",
    "drivers/net/can",
    "drivers/net/wan",
    "drivers/net/wwan",
    "drivers/net/hamradio",
    "drivers/net/ieee802154",
    "drivers/net/arcnet",
    "drivers/net/fddi",
    "drivers/net/appletalk",
    "drivers/net/hippi",
    "drivers/scsi/aacraid",
    "drivers/scsi/aic7xxx",
    "drivers/scsi/aic94xx",
    "drivers/scsi/be2iscsi",
    "drivers/scsi/bfa",
    "drivers/scsi/bnx2fc",
    "drivers/scsi/lpfc",
    "drivers/scsi/megaraid",
    "drivers/scsi/mpi3mr",
    "drivers/scsi/mpt3sas",
    "drivers/scsi/qedf",
    "drivers/scsi/qedi",
    "drivers/scsi/qla2xxx",
    "drivers/scsi/qla4xxx",
    "drivers/scsi/smartpqi",
    "net/bluetooth",
    "net/mac80211",
    "net/wireless",
    "net/can",
    "net/nfc",
    "lib/test_bpf.ko",
];

/// VMware virtual NICs whose drivers live among the physical ones: E1000, E1000e and the
/// Flexible adapter (AMD PCnet32).
const KEPT_IN_PRUNED: [&str; 3] = [
    "drivers/net/ethernet/intel/e1000",
    "drivers/net/ethernet/intel/e1000e",
    "drivers/net/ethernet/amd/pcnet32.ko",
];

/// Modules the image must keep whatever is pruned: the build checks each with `modinfo`
/// (besides every controller's driver and what the capture kernel needs).
const REQUIRED_MODULES: [&str; 8] = [
    "xfs",
    "reiserfs",
    "dm_multipath",
    "dm_snapshot",
    "scsi_dh_alua",
    "sr_mod",
    "nf_tables",
    "vmw_vmci",
];

/// The shell that prunes `PRUNED_MODULES` from every kernel in "$root", then every module that
/// needs a pruned one (9p over RDMA needs InfiniBand, for one), until none is left that lacks
/// a dependency: by the kernel package's own `modules.dep`, read before pruning (Debian's
/// System.map is a placeholder, so depmod cannot check symbols). Every required module must
/// still be there; depmod then indexes what is left.
fn prune_modules_script() -> String {
    let keep: String = KEPT_IN_PRUNED
        .iter()
        .map(|k| format!(" ! -path \"$k/{k}\" ! -path \"$k/{k}/*\""))
        .collect();
    let mut required = initramfs_modules();
    required.extend(REQUIRED_MODULES);
    format!(
        r#"for v in $(chroot "$root" linux-version list); do
    m="$root/usr/lib/modules/$v"
    k="$m/kernel"
    cp "$m/modules.dep" "$root/modules.dep.whole"
    for p in {pruned}; do
        if [ -e "$k/$p" ]; then find "$k/$p" -type f{keep} -delete; fi
    done
    find "$k" -type d -empty -delete
    while :; do
        broken=$(while IFS=: read -r mod deps; do
            if [ -e "$m/$mod" ]; then for d in $deps; do [ -e "$m/$d" ] || {{ echo "$mod"; break; }}; done; fi
        done < "$root/modules.dep.whole")
        [ -n "$broken" ] || break
        echo "pruned, needing a pruned module:" $broken
        for mod in $broken; do rm -f "$m/$mod"; done
    done
    rm -f "$root/modules.dep.whole"
    find "$k" -type d -empty -delete
    chroot "$root" depmod -a "$v"
    for mod in {required}; do chroot "$root" modinfo -k "$v" -F filename "$mod" > /dev/null; done
done
"#,
        pruned = PRUNED_MODULES.join(" "),
        required = required.join(" "),
    )
}

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

/// dpkg's option for the build only: no fsync per unpacked file (a build that dies is built
/// again; the image is written once, at the end). mmdebstrap keeps every `--dpkgopt` in the
/// image's dpkg configuration, so the customize hook takes this one out again: on the VM, dpkg
/// keeps its safe default.
const BUILD_ONLY_DPKG_OPTION: &str = "force-unsafe-io";

/// mmdebstrap's customize hook: runs with the finished tree as "$1", before it is packed. The
/// modules are pruned before the initramfs images are made from what is left.
fn customize_hook(packages: &[String]) -> String {
    let mut hook = format!(
        r#"set -e
root="$1"
sed -i '/^{BUILD_ONLY_DPKG_OPTION}$/d' "$root/etc/dpkg/dpkg.cfg.d/99mmdebstrap"
if grep -q '{BUILD_ONLY_DPKG_OPTION}' "$root"/etc/dpkg/dpkg.cfg.d/*; then echo "{BUILD_ONLY_DPKG_OPTION} would stay in the image" >&2; exit 1; fi
printf '%s\n' {drivers} >> "$root/etc/initramfs-tools/modules"
echo MODULES=list > "$root/etc/initramfs-tools/conf.d/modules-list"
# The image has no hibernation; without this the initramfs waits for a resume device.
echo RESUME=none > "$root/etc/initramfs-tools/conf.d/resume"
echo 'en_US.UTF-8 UTF-8' > "$root/etc/locale.gen"
chroot "$root" locale-gen
chroot "$root" update-locale LANG=en_US.UTF-8
{prune}chroot "$root" update-initramfs -u -k all
rm -f "$root/vmlinuz.old" "$root/initrd.img.old" "$root"/boot/*.old-dkms
"#,
        drivers = initramfs_modules().join(" "),
        prune = prune_modules_script(),
    );
    if has_kdump(packages) {
        hook.push_str(&format!(
            r#"chroot "$root" dpkg-divert --quiet --local --rename --remove {KDUMP_KERNEL_HOOK}
# The capture kernel's initramfs for the image's kernel, by kdump-tools' own hook (with the
# image's module list, as it runs again on every kernel installed later on the deployed VM).
# kdump-config rebuilds it when /etc/kdump/sysctl.conf differs from the copy it keeps beside it
# (`latest_sysctls-<version>`): the copy is made here as kdump-config would make it.
for v in $(chroot "$root" linux-version list); do
    chroot "$root" {KDUMP_KERNEL_HOOK} "$v"
    cp "$root{KDUMP_SYSCTLS}" "$root{KDUMP_INITRD_DIR}/latest_sysctls-$v"
done
for v in $(chroot "$root" linux-version list); do test -s "$root{KDUMP_INITRD_DIR}/initrd.img-$v"; done
"#
        ));
    }
    hook
}

/// The locale sources `en_US` is compiled from (its `copy` and `include` lines, followed): the
/// only locale the image generates; the others' sources are left out with the documentation.
const LOCALE_SOURCES: [&str; 16] = [
    "en_US",
    "en_GB",
    "i18n",
    "i18n_ctype",
    "iso14651_t1",
    "iso14651_t1_common",
    "translit_circle",
    "translit_cjk_compat",
    "translit_combining",
    "translit_compat",
    "translit_font",
    "translit_fraction",
    "translit_narrow",
    "translit_neutral",
    "translit_small",
    "translit_wide",
];

/// dpkg's path filters, as mkosi and debos set them: documentation, manuals, info pages,
/// translations and every locale but en_US's sources and charmap are never unpacked (the
/// copyright files stay, for the licences). They stay in the image's dpkg configuration, so
/// packages upgraded on a VM are filtered the same way.
fn dpkg_options() -> Vec<String> {
    let mut o: Vec<String> = [
        "path-exclude=/usr/share/man/*",
        "path-exclude=/usr/share/info/*",
        "path-exclude=/usr/share/locale/*",
        "path-include=/usr/share/locale/locale.alias",
        "path-exclude=/usr/share/doc/*",
        "path-include=/usr/share/doc/*/copyright",
        "path-exclude=/usr/share/i18n/charmaps/*",
        "path-include=/usr/share/i18n/charmaps/UTF-8.gz",
        "path-exclude=/usr/share/i18n/locales/*",
    ]
    .map(String::from)
    .to_vec();
    o.extend(
        LOCALE_SOURCES
            .iter()
            .map(|l| format!("path-include=/usr/share/i18n/locales/{l}")),
    );
    o
}

pub fn inputs(packages: &[String]) -> StageInputs {
    let mut inputs = StageInputs::new("rootfs", RECIPE);
    inputs
        .add("suite", SUITE.as_bytes())
        .add("sources", SOURCES.join("\n").as_bytes())
        .add("packages", packages.join(" ").as_bytes())
        .add("essential-hook", essential_hook(packages).as_bytes())
        .add("hook", customize_hook(packages).as_bytes())
        .add("dpkg", dpkg_options().join("\n").as_bytes())
        .add("dpkg-build", BUILD_ONLY_DPKG_OPTION.as_bytes());
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
    for o in dpkg_options() {
        cmd.arg(format!("--dpkgopt={o}"));
    }
    cmd.arg(format!("--dpkgopt={BUILD_ONLY_DPKG_OPTION}"));
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
        // The capture initramfs is made after the hook is back, with the image's module list.
        let made = customize
            .find(&format!("chroot \"$root\" {KDUMP_KERNEL_HOOK} \"$v\""))
            .unwrap();
        assert!(made > restore, "{customize}");
        assert!(customize[..made].contains("echo MODULES=list"));
        assert!(customize[made..].contains(&format!(
            "test -s \"$root{KDUMP_INITRD_DIR}/initrd.img-$v\""
        )));
        // Without the copy of the sysctls beside it, kdump-config deletes and rebuilds it.
        assert!(customize[made..].contains(&format!("{KDUMP_INITRD_DIR}/latest_sysctls-$v")));
        let without: Vec<String> = vec!["kexec-tools".into()];
        assert!(!essential_hook(&without).contains("kdump"));
        assert!(!customize_hook(&without).contains("dpkg-divert"));
    }

    /// What VMware's virtual hardware and the runbook use is never pruned: the kept NIC drivers
    /// lie inside pruned directories (else keeping them would mean nothing), storage, file
    /// systems and device-mapper stay whole, and the script is valid shell that checks every
    /// required module and depmod's unknown symbols.
    #[test]
    fn pruning_keeps_what_vmware_hardware_and_the_runbook_use() {
        for k in KEPT_IN_PRUNED {
            assert!(
                PRUNED_MODULES
                    .iter()
                    .any(|p| k.starts_with(&format!("{p}/"))),
                "{k} is not inside a pruned directory"
            );
        }
        for whole in [
            "fs",
            "drivers/md",
            "drivers/scsi/device_handler",
            "drivers/scsi/sym53c8xx_2",
            "drivers/message/fusion",
            "drivers/net/vmxnet3",
            "drivers/ata",
            "drivers/nvme",
            "drivers/usb",
            "drivers/gpu/drm/vmwgfx",
            "drivers/gpu/drm/ttm",
            "net/netfilter",
            "drivers/misc",
        ] {
            for p in PRUNED_MODULES {
                assert!(
                    !whole.starts_with(p) && !p.starts_with(&format!("{whole}/")),
                    "{p} prunes {whole}"
                );
            }
        }
        let script = prune_modules_script();
        for m in [
            "vmw_pvscsi",
            "mptsas",
            "e1000",
            "xfs",
            "reiserfs",
            "dm_multipath",
            "ext4",
        ] {
            assert!(
                script.contains(&format!(" {m} ")) || script.contains(&format!(" {m};")),
                "{m}"
            );
        }
        assert!(script.contains("pruned, needing a pruned module:"));
        assert!(script.contains("! -path \"$k/drivers/net/ethernet/intel/e1000/*\""));
        testkit::run::assert_bash_parses("the pruning script", &format!("root=/x\n{script}"));
    }

    #[test]
    fn the_build_only_dpkg_option_does_not_stay_in_the_image() {
        let hook = customize_hook(&[]);
        assert!(hook
            .contains("sed -i '/^force-unsafe-io$/d' \"$root/etc/dpkg/dpkg.cfg.d/99mmdebstrap\""));
        assert!(!dpkg_options()
            .iter()
            .any(|o| o.contains(BUILD_ONLY_DPKG_OPTION)));
    }

    #[test]
    fn only_en_us_sources_and_no_documentation_are_unpacked() {
        let o = dpkg_options();
        let exclude = o
            .iter()
            .position(|l| l == "path-exclude=/usr/share/i18n/locales/*")
            .unwrap();
        let include = o
            .iter()
            .position(|l| l == "path-include=/usr/share/i18n/locales/en_US")
            .unwrap();
        assert!(exclude < include, "dpkg applies the filters in order");
        assert!(o.contains(&"path-exclude=/usr/share/man/*".to_string()));
        assert!(o.contains(&"path-include=/usr/share/doc/*/copyright".to_string()));
    }

    #[test]
    fn the_initramfs_carries_every_controller_and_nic_driver() {
        let d = initramfs_drivers();
        for m in ["vmw_pvscsi", "mptspi", "mptsas", "vmxnet3", "e1000"] {
            assert!(d.contains(&m), "{m}");
        }
    }
}
