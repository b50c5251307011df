//! End-to-end tests of the centos6 pipeline with test-double installer ISOs, because the CentOS
//! ISO cannot be downloaded here. A double is an ISO with `isolinux/vmlinuz` (Debian's kernel,
//! from Debian's archive) and `isolinux/initrd.img` (busybox from `busybox-static`, the few disk
//! drivers the kernel needs, and an `/init` script). These test the pipeline (ISO check override,
//! kickstart injection, extras CD, disks, console watch, success and failure), not Anaconda.

use super::*;
use appliance::cpio::{self, CpioEntry};
use appliance::kickstart::{EXTRAS_VOLUME_LABEL, POST_OK_MARKER};
use std::collections::BTreeMap;
use std::process::Command;

#[path = "../../../appliance/tests/common/mod.rs"]
mod common;

fn target_dir() -> Utf8PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(Utf8PathBuf::from)
        .unwrap_or_else(|_| crate::util::workspace_root().join("target"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

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

const SUCCESS_INIT: &str = r#"#!/bin/busybox sh
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
for d in /sys/block/*; do echo "double: disk $(basename $d) sectors $(cat $d/size)"; done
for cd in sr0 sr1; do echo "double: $cd label $(dd if=/dev/$cd bs=1 skip=32808 count=32 2>/dev/null | tr -d ' ')"; done
echo "MT-DOUBLE-INSTALLED ks-sha256=$(sha256sum /ks.cfg | cut -d' ' -f1)" | dd of=/dev/sda bs=512 seek=2048 conv=notrunc,fsync 2>/dev/null
sync
echo @POST_OK@
poweroff -f
"#;

/// Draws a newt-like dialog without ending the line, then waits for a person, as the loader does.
const KICKSTART_ERROR_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
printf '\033[1;1H\033[0;37;44m\016lqqqqq\017\033[5;20HKickstart Error\033[7;5HThe following error was found while parsing the kickstart configuration file:'
while true; do sleep 3600; done
"#;

/// An init that only mounts /proc and installs busybox' applets, then runs `body`.
fn init_with(body: &str) -> String {
    format!(
        "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n/bin/busybox --install -s /bin\nexport PATH=/bin\n{body}\n"
    )
}

/// Writes a double ISO whose initrd runs `init`.
fn double_iso(dir: &Utf8Path, init: &str) -> Utf8PathBuf {
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

fn scratch(name: &str) -> Utf8PathBuf {
    let dir = target_dir()
        .join("test-scratch")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn centos_definition() -> Definition {
    let root = crate::util::workspace_root();
    let text = std::fs::read_to_string(root.join(appliance::definition::DEFAULT_DEFINITION))
        .unwrap()
        .replacen("base = \"debian12\"", "base = \"centos6\"", 1);
    Definition::from_toml(&text, Utf8Path::new("centos6.toml")).unwrap()
}

/// Options for a double: the definition's external files as small stand-in RPMs, pinned in a
/// copy of the manifest; a TCG-friendly VM; short limits.
fn double_options(dir: &Utf8Path, def: &Definition) -> BuildOptions {
    let root = crate::util::workspace_root();
    let mut opts = BuildOptions::new(&root);
    let shipped = PackageManifest::load(&opts.manifest).unwrap();
    let rpm_dir = dir.join("rpms");
    std::fs::create_dir_all(&rpm_dir).unwrap();
    let mut manifest_text = std::fs::read_to_string(&opts.manifest).unwrap();
    for f in shipped.external_files_for(def) {
        let path = rpm_dir.join(&f.file);
        std::fs::write(&path, format!("stand-in for {}\n", f.file)).unwrap();
        let digest = crate::fetch_packages::sha256_file(&path).unwrap();
        let url_line = format!("url = \"{}\"\nsha256 = \"{}\"", f.url, f.sha256);
        assert!(manifest_text.contains(&url_line), "{url_line}");
        manifest_text = manifest_text.replace(
            &url_line,
            &format!("url = \"{}\"\nsha256 = \"{digest}\"", f.url),
        );
    }
    let manifest = dir.join("el6.toml");
    std::fs::write(&manifest, manifest_text).unwrap();
    opts.manifest = manifest;
    opts.rpm_dir = rpm_dir;
    opts.allow_unverified_iso = true;
    opts.work_dir = dir.join("work");
    opts.install_memory_mib = 512;
    opts.install_limits = install::Limits {
        timeout: Duration::from_secs(600),
        idle: Duration::from_secs(120),
    };
    opts
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

#[test]
#[ignore = "slow: boots a Debian kernel in QEMU (TCG) and builds the musl mt-agent; run by cargo xtask test"]
fn the_pipeline_installs_with_a_double_that_reads_the_kickstart_and_powers_off() {
    let dir = scratch("centos-double-ok");
    let def = centos_definition();
    let iso = double_iso(&dir, SUCCESS_INIT);
    let opts = double_options(&dir, &def);
    let sh = Shell::new().unwrap();
    let disks = install_disks(&sh, &def, Some(&iso), &opts).unwrap_or_else(|e| panic!("{e:#}"));

    let ks = appliance::kickstart::render(&def).unwrap();
    let ks_sha = sha256_hex(ks.as_bytes());
    let console = std::fs::read_to_string(&disks.console_log).unwrap();
    let has = |needle: &str| {
        assert!(
            console.contains(needle),
            "no {needle:?} in the console:\n{console}"
        );
    };
    // The kernel got the kickstart argument and found the injected file with the rendered text.
    has(&format!("double: cmdline: {}", kernel_append()));
    has(&format!("double: ks.cfg sha256: {ks_sha}"));
    // The installer sees the OS and retention disks as sda and sdb with the definition's sizes,
    // the ISO and the extras CD (by its volume label) as the two CD drives.
    has(&format!(
        "double: disk sda sectors {}",
        def.os_disk.size.sectors()
    ));
    has(&format!(
        "double: disk sdb sectors {}",
        def.retention_disk.size.sectors()
    ));
    has("double: sr0 label CentOS_6.6_Final");
    has(&format!("double: sr1 label {EXTRAS_VOLUME_LABEL}"));
    // What the "installer" wrote is on the OS disk image.
    let os = std::fs::read(&disks.os_disk).map(|b| b[2048 * 512..2049 * 512].to_vec());
    let marker = String::from_utf8_lossy(&os.unwrap()).into_owned();
    assert!(
        marker.starts_with(&format!("MT-DOUBLE-INSTALLED ks-sha256={ks_sha}\n")),
        "{marker:?}"
    );
    assert_eq!(
        std::fs::metadata(&disks.retention_disk).unwrap().len(),
        def.retention_disk.size.bytes()
    );
    // The kickstart the build injected is the one it kept next to the disks.
    assert_eq!(std::fs::read_to_string(&disks.kickstart).unwrap(), ks);
}

#[test]
#[ignore = "slow: boots a Debian kernel in QEMU (TCG); run by cargo xtask test"]
fn a_kickstart_error_on_the_console_fails_the_build_with_an_excerpt() {
    let dir = scratch("centos-double-ks-error");
    let def = centos_definition();
    let iso = double_iso(&dir, KICKSTART_ERROR_INIT);
    let mut opts = double_options(&dir, &def);
    // The failure must come from the console, long before these limits.
    opts.install_limits = install::Limits {
        timeout: Duration::from_secs(3600),
        idle: Duration::from_secs(3600),
    };
    let sh = Shell::new().unwrap();
    let err = format!(
        "{:#}",
        install_disks(&sh, &def, Some(&iso), &opts).unwrap_err()
    );
    assert!(
        err.contains("the console printed \"Kickstart Error\""),
        "{err}"
    );
    assert!(err.contains("QEMU was stopped"), "{err}");
    assert!(err.contains("  | "), "no console excerpt: {err}");
    assert!(err.contains("install-console.log"), "{err}");
    assert!(
        !opts.work_dir.join("os-disk.raw").exists(),
        "a failed install must not leave a disk image"
    );
}

#[test]
#[ignore = "slow: boots a Debian kernel in QEMU (TCG) three times; run by cargo xtask test"]
fn a_power_off_without_success_silence_and_the_time_out_each_fail_the_build() {
    let def = centos_definition();
    let sh = Shell::new().unwrap();
    let cases = [
        (
            "no-marker",
            init_with("echo 'the installer gave up quietly'; poweroff -f"),
            (600, 600),
            "QEMU exited",
        ),
        (
            "silent",
            init_with("while true; do sleep 3600; done"),
            (600, 20),
            "no disk or console activity for 0m20s",
        ),
        (
            "endless",
            init_with("while true; do echo still working; sleep 1; done"),
            (30, 600),
            "not finished after 0m30s (time-out)",
        ),
    ];
    for (name, init, (timeout, idle), expected) in cases {
        let dir = scratch(&format!("centos-double-{name}"));
        let iso = double_iso(&dir, &init);
        let mut opts = double_options(&dir, &def);
        opts.install_limits = install::Limits {
            timeout: Duration::from_secs(timeout),
            idle: Duration::from_secs(idle),
        };
        let err = format!(
            "{:#}",
            install_disks(&sh, &def, Some(&iso), &opts).unwrap_err()
        );
        assert!(
            err.contains(expected),
            "{name}: expected {expected:?} in: {err}"
        );
        assert!(err.contains("install-console.log"), "{name}: {err}");
        assert!(!opts.work_dir.join("os-disk.raw").exists(), "{name}");
    }
}

#[test]
fn a_missing_iso_fails_at_once_saying_where_it_is_published() {
    let def = centos_definition();
    let sh = Shell::new().unwrap();
    let opts = BuildOptions::new(&crate::util::workspace_root());
    let missing = Utf8Path::new("no/such/CentOS.iso");
    let err = format!(
        "{:#}",
        install_disks(&sh, &def, Some(missing), &opts).unwrap_err()
    );
    assert!(err.contains("no/such/CentOS.iso"), "{err}");
    assert!(err.contains(iso::ISO_PUBLISHED_AT[0]), "{err}");
}

#[test]
fn without_an_iso_the_build_says_what_is_needed_and_where_it_is_published() {
    let err = format!("{:#}", iso::locate_from(None, None).unwrap_err());
    for needle in [
        "CentOS-6.6-x86_64-minimal.iso",
        iso::ISO_SHA256,
        "https://vault.centos.org/6.6/isos/x86_64/",
        "https://archive.kernel.org/centos-vault/6.6/isos/x86_64/",
        "--iso FILE",
        "MT_CENTOS_ISO",
    ] {
        assert!(err.contains(needle), "no {needle:?} in: {err}");
    }
    let dir = scratch("centos-iso-env");
    let iso = dir.join("from-env.iso");
    std::fs::write(&iso, b"x").unwrap();
    assert_eq!(iso::locate_from(None, Some(iso.to_string())).unwrap(), iso);
}

#[test]
fn an_iso_that_is_not_the_published_one_is_refused_unless_allowed() {
    let dir = scratch("centos-iso-check");
    let fake = dir.join("CentOS-6.6-x86_64-minimal.iso");
    std::fs::write(&fake, b"not an iso").unwrap();
    let digest = crate::fetch_packages::sha256_file(&fake).unwrap();
    let err = iso::verify(&fake, false).unwrap_err().to_string();
    assert!(
        err.contains(&digest) && err.contains(iso::ISO_SHA256),
        "{err}"
    );
    assert!(err.contains("--allow-unverified-iso"), "{err}");
    assert_eq!(iso::verify(&fake, true).unwrap(), digest);
}

#[test]
fn the_patched_initrd_keeps_the_original_and_adds_the_kickstart() {
    let dir = scratch("centos-initrd");
    // An original as distributions ship it: one gzip-compressed archive, of an odd length.
    let original_entries = vec![
        CpioEntry::dir("sbin"),
        CpioEntry::file("sbin/loader", 0o755, b"\x7fELF stand-in".to_vec()),
    ];
    let mut original = cpio::gzip(&cpio::write_newc(&original_entries));
    original.push(0);
    original.push(0);
    original.push(0);
    let original_path = dir.join("initrd.img");
    std::fs::write(&original_path, &original).unwrap();
    let ks = appliance::kickstart::render(&centos_definition()).unwrap();
    let patched_path = dir.join("initrd-ks.img");
    initrd::inject(&original_path, &ks, &patched_path).unwrap();
    let patched = std::fs::read(&patched_path).unwrap();
    assert_eq!(
        &patched[..original.len()],
        &original[..],
        "original bytes changed"
    );
    let archives = cpio::read_initramfs(&patched).unwrap();
    assert_eq!(archives.len(), 2, "{archives:?}");
    assert_eq!(archives[0].entries, original_entries);
    assert_eq!(archives[1].offset % 4, 0);
    assert_eq!(archives[1].entries.len(), 1);
    let ks_entry = &archives[1].entries[0];
    assert_eq!(ks_entry.name, initrd::KS_FILE);
    assert!(ks_entry.is_file());
    assert_eq!(ks_entry.data, ks.as_bytes());
}

#[test]
fn the_injected_kickstart_passes_ksvalidator_and_carries_what_the_install_needs() {
    let dir = scratch("centos-ks");
    let def = centos_definition();
    let ks = appliance::kickstart::render(&def).unwrap();
    let original = dir.join("initrd.img");
    std::fs::write(
        &original,
        cpio::gzip(&cpio::write_newc(&[CpioEntry::dir("etc")])),
    )
    .unwrap();
    let patched = dir.join("initrd-ks.img");
    initrd::inject(&original, &ks, &patched).unwrap();
    // What the loader will read: the file in the patched initrd that the kernel argument names.
    let archives = cpio::read_initramfs(&std::fs::read(&patched).unwrap()).unwrap();
    let entry = &archives.last().unwrap().entries[0];
    let ks_arg = format!("ks=file:/{}", entry.name);
    assert!(
        kernel_append().split(' ').any(|a| a == ks_arg),
        "{ks_arg} not in {}",
        kernel_append()
    );
    assert!(kernel_append().contains("console=ttyS0,115200"));
    let injected = String::from_utf8(entry.data.clone()).unwrap();
    common::ksvalidator_rhel6(&injected, &dir).unwrap_or_else(|e| panic!("{e}"));

    let lines: Vec<&str> = injected.lines().map(str::trim).collect();
    let line = |l: &str| assert!(lines.contains(&l), "no line {l:?} in:\n{injected}");
    // Installed from the ISO on the first CD, unattended, powering off so that QEMU exits.
    line("cdrom");
    line("text");
    line("poweroff");
    line("zerombr");
    line("ignoredisk --only-use=sda,sdb");
    line("%packages --nobase --ignoremissing");
    // The extras CD: found by its label, its RPM directory and the agent copied into the target.
    assert!(lines.iter().any(|l| l.starts_with("%post --nochroot")));
    for needle in [
        "/dev/disk/by-label/MTEXTRAS",
        "cp -a \"$src\"/rpms",
        "\"$src\"/mt-agent",
    ] {
        assert!(injected.contains(needle), "no {needle:?} in:\n{injected}");
    }
    let shipped = PackageManifest::shipped(appliance::definition::Base::Centos6);
    for f in shipped.external_files_for(&def) {
        assert!(injected.contains(&f.file), "{} is not installed", f.file);
    }
    // %post sets the appliance up with the agent for this distribution and reports success in
    // the words the console watch waits for.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("/usr/sbin/mt-agent setup --root / --distro el6 ")),
        "{injected}"
    );
    line("say MT-KICKSTART-POST-OK");
    assert_eq!(POST_OK_MARKER, "MT-KICKSTART-POST-OK");
}

#[test]
fn the_build_ova_flags_become_build_options() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        centos: CentosArgs,
    }
    let cli = Cli::try_parse_from([
        "build-ova",
        "--iso",
        "c.iso",
        "--allow-unverified-iso",
        "--accel",
        "tcg",
        "--install-idle-minutes",
        "5",
        "--rpm-dir",
        "r",
    ])
    .unwrap();
    assert_eq!(cli.centos.iso.as_deref(), Some(Utf8Path::new("c.iso")));
    let o = cli.centos.options(Utf8Path::new("ws"));
    assert!(o.allow_unverified_iso);
    assert_eq!(o.accel, Accel::Tcg);
    assert_eq!(o.install_limits.idle, Duration::from_secs(300));
    assert_eq!(o.install_limits.timeout, Duration::from_secs(180 * 60));
    assert_eq!(o.rpm_dir, "r");
    assert_eq!(o.manifest, "ws/packages/el6.toml");
    let defaults = Cli::try_parse_from(["build-ova"]).unwrap().centos;
    assert_eq!(defaults.accel, Accel::Auto);
    assert!(!defaults.allow_unverified_iso);
}
