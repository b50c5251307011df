//! In-process tests of the centos6 pipeline: the ISO checks, the kickstart injected into the
//! initrd, the build-ova flags, and (slow) the install's failure modes with test-double installer
//! ISOs (`tests/tests/centos_double`) under second-scale limits. The success path and the
//! `Kickstart Error` path run through `cargo xtask build-ova` in `tests/tests/it/centos_build_cli.rs`.

use super::*;
use appliance::cpio::{self, CpioEntry};
use appliance::kickstart::POST_OK_MARKER;
use double::{centos_definition, double_iso, init_with, scratch};

#[path = "../../../appliance/tests/common/mod.rs"]
mod common;
#[path = "../../../tests/tests/centos_double/mod.rs"]
mod double;

/// Options for a double: stand-in RPMs pinned in a copy of the manifest, a small VM, short limits.
fn double_options(dir: &Utf8Path, def: &Definition) -> BuildOptions {
    let mut opts = BuildOptions::new(&crate::util::workspace_root());
    let (rpm_dir, manifest) = double::stand_in_rpms(dir, def);
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
