//! Test-double installer ISOs for the centos6 pipeline, shared by the in-process tests in
//! `xtask` and the `cargo xtask build-ova --base centos6` tests here. The CentOS ISO cannot be
//! downloaded on the build machines, so a double stands in: an ISO with `isolinux/vmlinuz`
//! (Debian's kernel, from Debian's archive through apt) and `isolinux/initrd.img` (busybox from
//! `busybox-static`, the disk drivers the kernel needs, and an `/init` script). Doubles test the
//! pipeline around the installer, not Anaconda.
#![allow(dead_code)]

use appliance::cpio::{self, CpioEntry};
use appliance::kickstart::POST_OK_MARKER;
use appliance::packages::PackageManifest;
use appliance::Definition;
use camino::{Utf8Path, Utf8PathBuf};
use std::collections::BTreeMap;
use std::process::Command;

pub use testkit::run::ok as run;
pub use testkit::{scratch, target_dir, workspace_root};

/// Debian's current kernel and static busybox, downloaded once with apt and unpacked under
/// `target/centos-double/` (needs Debian's archive in apt's lists).
struct DebianParts {
    kernel: Utf8PathBuf,
    modules: Utf8PathBuf,
    busybox: Utf8PathBuf,
}

fn debian_parts() -> &'static DebianParts {
    // Both slow tests want them; one download per process (the directory names carry the pid).
    static PARTS: std::sync::OnceLock<DebianParts> = std::sync::OnceLock::new();
    PARTS.get_or_init(fetch_debian_parts)
}

fn fetch_debian_parts() -> DebianParts {
    let dir = target_dir().join("centos-double");
    let ready = dir.join(".ready");
    if !ready.exists() {
        testkit::require_tools(&["apt-cache", "apt-get", "dpkg-deb"]);
        let tmp = target_dir().join(format!("centos-double.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        let depends = run(Command::new("apt-cache").args(["depends", "linux-image-amd64"]));
        let image = depends
            .lines()
            .find_map(|l| l.trim().strip_prefix("Depends: linux-image-"))
            .map(|v| format!("linux-image-{v}"))
            .expect("apt-cache names the kernel package linux-image-amd64 depends on");
        run(Command::new("apt-get").current_dir(&tmp).args([
            "download",
            "-q",
            &image,
            "busybox-static",
        ]));
        for entry in std::fs::read_dir(&tmp).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "deb") {
                run(Command::new("dpkg-deb")
                    .arg("-x")
                    .arg(&p)
                    .arg(tmp.join("root")));
            }
        }
        std::fs::write(tmp.join(".ready"), image).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).unwrap();
    }
    let root = dir.join("root");
    let kernel = std::fs::read_dir(root.join("boot"))
        .unwrap()
        .map(|e| Utf8PathBuf::from_path_buf(e.unwrap().path()).unwrap())
        .find(|p| p.file_name().unwrap().starts_with("vmlinuz-"))
        .expect("the kernel package has /boot/vmlinuz-*");
    let version = kernel.file_name().unwrap().trim_start_matches("vmlinuz-");
    DebianParts {
        modules: root.join("lib/modules").join(version),
        kernel,
        busybox: root.join("bin/busybox"),
    }
}

/// Every `.ko` under the modules tree by module name (`-` and `_` are the same to the kernel).
fn module_index(dir: &Utf8Path) -> BTreeMap<String, Utf8PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = Utf8PathBuf::from_path_buf(e.unwrap().path()).unwrap();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(name) = p.file_name().unwrap().strip_suffix(".ko") {
                out.insert(name.replace('-', "_"), p);
            }
        }
    }
    out
}

/// The `depends=` field of a module's `.modinfo` section.
fn depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    ko.windows(key.len())
        .position(|w| w == key)
        .map(|at| {
            let rest = &ko[at + key.len()..];
            let end = rest.iter().position(|b| *b == 0).unwrap();
            String::from_utf8_lossy(&rest[..end])
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default()
}

/// The modules to load, dependencies first.
fn load_order(index: &BTreeMap<String, Utf8PathBuf>, wanted: &[&str]) -> Vec<(String, Vec<u8>)> {
    fn visit(name: &str, index: &BTreeMap<String, Utf8PathBuf>, out: &mut Vec<(String, Vec<u8>)>) {
        if out.iter().any(|(n, _)| n == name) {
            return;
        }
        let path = index
            .get(name)
            .unwrap_or_else(|| panic!("the kernel has no module {name}"));
        let bytes = std::fs::read(path).unwrap();
        for dep in depends(&bytes) {
            visit(&dep, index, out);
        }
        out.push((name.to_string(), bytes));
    }
    let mut out = Vec::new();
    for w in wanted {
        visit(w, index, &mut out);
    }
    out
}

pub const SUCCESS_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m.ko; done
echo "double: cmdline: $(cat /proc/cmdline)"
echo "double: ks.cfg sha256: $(sha256sum /ks.cfg | cut -d' ' -f1)"
i=0
while [ $i -lt 150 ] && ! { [ -b /dev/sda ] && [ -b /dev/sdb ] && [ -b /dev/sr1 ]; }; do sleep 0.2; i=$((i+1)); done
# A newer kernel probes disks in parallel, so sdX names may come in either order: report each
# device by its SCSI address (host:channel:target:lun; IDE primary master = 0:0:0:0), which is
# what the build controls, and write to the primary master.
os=
for d in /sys/block/sd* /sys/block/sr*; do
    n=$(basename $d); at=$(basename $(readlink -f $d/device))
    case $n in
        sd*) echo "double: disk $n at $at sectors $(cat $d/size)"; [ "$at" = 0:0:0:0 ] && os=$n ;;
        sr*) echo "double: cd $n at $at label $(dd if=/dev/$n bs=1 skip=32808 count=32 2>/dev/null | tr -d ' ')" ;;
    esac
done
echo "MT-DOUBLE-INSTALLED ks-sha256=$(sha256sum /ks.cfg | cut -d' ' -f1)" | dd of=/dev/$os bs=512 seek=2048 conv=notrunc,fsync 2>/dev/null
sync
echo @POST_OK@
poweroff -f
"#;

/// Draws a newt-like dialog without ending the line, then waits for a person, as the loader does.
pub const KICKSTART_ERROR_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
printf '\033[1;1H\033[0;37;44m\016lqqqqq\017\033[5;20HKickstart Error\033[7;5HThe following error was found while parsing the kickstart configuration file:'
while true; do sleep 3600; done
"#;

/// An init that only mounts /proc and installs busybox' applets, then runs `body`.
pub fn init_with(body: &str) -> String {
    format!(
        "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n/bin/busybox --install -s /bin\nexport PATH=/bin\n{body}\n"
    )
}

/// Writes a double ISO whose initrd runs `init`.
pub fn double_iso(dir: &Utf8Path, init: &str) -> Utf8PathBuf {
    let parts = debian_parts();
    let index = module_index(&parts.modules);
    let modules = load_order(
        &index,
        &["crct10dif_generic", "ata_piix", "sd_mod", "sr_mod"],
    );
    let mut entries = vec![
        CpioEntry::dir("bin"),
        CpioEntry::dir("dev"),
        CpioEntry::char_device("dev/console", 0o600, 5, 1),
        CpioEntry::dir("proc"),
        CpioEntry::dir("sys"),
        CpioEntry::dir("lib"),
        CpioEntry::dir("lib/modules"),
        CpioEntry::file("bin/busybox", 0o755, std::fs::read(&parts.busybox).unwrap()),
        CpioEntry::file("init", 0o755, init.replace("@POST_OK@", POST_OK_MARKER)),
        CpioEntry::file(
            "modules.order",
            0o644,
            modules
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    ];
    for (name, bytes) in modules {
        entries.push(CpioEntry::file(
            &format!("lib/modules/{name}.ko"),
            0o644,
            bytes,
        ));
    }
    let root = dir.join("iso-root");
    std::fs::create_dir_all(root.join("isolinux")).unwrap();
    std::fs::copy(&parts.kernel, root.join("isolinux/vmlinuz")).unwrap();
    std::fs::write(
        root.join("isolinux/initrd.img"),
        cpio::gzip(&cpio::write_newc(&entries)),
    )
    .unwrap();
    let iso = dir.join("double.iso");
    testkit::require_tool("xorriso");
    run(Command::new("xorriso").args([
        "-as",
        "mkisofs",
        "-quiet",
        "-r",
        "-V",
        "CentOS_6.6_Final",
        "-o",
        iso.as_str(),
        root.as_str(),
    ]));
    iso
}

/// The shipped definition on the centos6 base.
pub fn centos_definition() -> Definition {
    let text =
        std::fs::read_to_string(workspace_root().join(appliance::definition::DEFAULT_DEFINITION))
            .unwrap()
            .replacen("base = \"debian12\"", "base = \"centos6\"", 1);
    Definition::from_toml(&text, Utf8Path::new("centos6.toml")).unwrap()
}

pub fn sha256_file(path: &Utf8Path) -> String {
    testkit::require_tool("sha256sum");
    run(Command::new("sha256sum").arg(path))[..64].to_string()
}

/// Small stand-ins for the definition's external RPMs in `dir/rpms`, pinned in a copy of the
/// shipped el6 manifest at `dir/el6.toml`. Returns (rpm dir, manifest).
pub fn stand_in_rpms(dir: &Utf8Path, def: &Definition) -> (Utf8PathBuf, Utf8PathBuf) {
    let shipped_path = workspace_root().join(appliance::packages::EL6_MANIFEST);
    let shipped = PackageManifest::load(&shipped_path).unwrap();
    let rpm_dir = dir.join("rpms");
    std::fs::create_dir_all(&rpm_dir).unwrap();
    let mut text = std::fs::read_to_string(&shipped_path).unwrap();
    for f in shipped.external_files_for(def) {
        let path = rpm_dir.join(&f.file);
        std::fs::write(&path, format!("stand-in for {}\n", f.file)).unwrap();
        let url_line = format!("url = \"{}\"\nsha256 = \"{}\"", f.url, f.sha256);
        assert!(text.contains(&url_line), "{url_line}");
        text = text.replace(
            &url_line,
            &format!("url = \"{}\"\nsha256 = \"{}\"", f.url, sha256_file(&path)),
        );
    }
    let manifest = dir.join("el6.toml");
    std::fs::write(&manifest, text).unwrap();
    (rpm_dir, manifest)
}
