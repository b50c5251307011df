//! `cargo xtask build-ova --base centos6 --iso FILE` run the way a user runs it, with test-double
//! installer ISOs (see `centos_double`): a double that reads `/ks.cfg`, reports what it sees and
//! powers off gives installed raw disks and a verified OVA; a double that shows `Kickstart Error`
//! and hangs fails the build at once with the console excerpt. These prove the pipeline around
//! the installer, not Anaconda.

use crate::centos_double;

use appliance::kickstart::EXTRAS_VOLUME_LABEL;
use camino::Utf8Path;
use centos_double as double;
use std::process::Output;

/// The shipped definition on centos6 with a smaller retention disk (sparse either way; smaller
/// only makes packing faster).
fn definition(dir: &Utf8Path) -> camino::Utf8PathBuf {
    let text = std::fs::read_to_string(
        double::workspace_root().join(appliance::definition::DEFAULT_DEFINITION),
    )
    .unwrap();
    let text = text.replacen("base = \"debian12\"", "base = \"centos6\"", 1);
    assert!(text.contains("size = \"64GiB\""));
    let text = text.replacen("size = \"64GiB\"", "size = \"4GiB\"", 1);
    let path = dir.join("appliance.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn build_ova(dir: &Utf8Path, init: &str) -> Output {
    let def_path = definition(dir);
    let def = appliance::Definition::load(&def_path).unwrap();
    let iso = double::double_iso(dir, init);
    let (rpm_dir, manifest) = double::stand_in_rpms(dir, &def);
    testkit::run::cargo_xtask()
        .args(["build-ova", "--base", "centos6"])
        .args(["--definition", def_path.as_str()])
        .args(["--iso", iso.as_str(), "--allow-unverified-iso"])
        .args([
            "--rpm-dir",
            rpm_dir.as_str(),
            "--manifest",
            manifest.as_str(),
        ])
        .args(["--build-dir", dir.join("build").as_str()])
        .args(["--out", dir.join("out").as_str()])
        .args([
            "--install-timeout-minutes",
            "15",
            "--install-idle-minutes",
            "3",
        ])
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("cannot run cargo xtask")
}

#[test]
#[ignore = "slow: boots a Debian kernel in QEMU (TCG), builds the musl mt-agent and packs an OVA; run by cargo xtask test"]
fn a_double_that_reads_the_kickstart_and_powers_off_gives_a_verified_ova() {
    let _qemu = testkit::qemu_exclusive();
    let dir = double::scratch("centos-cli-ok");
    let out = build_ova(&dir, double::SUCCESS_INIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let def = appliance::Definition::load(&dir.join("appliance.toml")).unwrap();
    let work = dir.join("build/centos6");

    // The console: the kernel got the kickstart argument and the injected file is the rendered
    // kickstart; the disks and both CDs are where the build attached them.
    let ks = std::fs::read_to_string(work.join("ks.cfg")).unwrap();
    assert_eq!(ks, appliance::kickstart::render(&def).unwrap());
    let ks_sha = double::sha256_file(&work.join("ks.cfg"));
    let console = std::fs::read_to_string(work.join("install-console.log")).unwrap();
    for needle in [
        "double: cmdline: ks=file:/ks.cfg console=ttyS0,115200 text".to_string(),
        format!("double: ks.cfg sha256: {ks_sha}"),
        // The build puts the OS disk on the IDE primary master and the retention disk on the
        // primary slave: the RHEL 6 kernel names them sda and sdb in that order.
        format!("at 0:0:0:0 sectors {}", def.os_disk.size.sectors()),
        format!("at 0:0:1:0 sectors {}", def.retention_disk.size.sectors()),
        // The ISO and the extras CD on the secondary channel.
        "at 1:0:0:0 label CentOS_6.6_Final".to_string(),
        format!("at 1:0:1:0 label {EXTRAS_VOLUME_LABEL}"),
    ] {
        assert!(console.contains(&needle), "no {needle:?} in:\n{console}");
    }
    // What the "installer" wrote reached the OS disk image.
    let os = std::fs::read(work.join("os-disk.raw")).unwrap();
    let marker = String::from_utf8_lossy(&os[2048 * 512..2049 * 512]).into_owned();
    assert!(
        marker.starts_with(&format!("MT-DOUBLE-INSTALLED ks-sha256={ks_sha}\n")),
        "{marker:?}"
    );
    // Progress was shown, and the OVA exists and passes verify-ova (run as the user would).
    assert!(stderr.contains("kernel started"), "{stderr}");
    assert!(stderr.contains("installed: QEMU powered off"), "{stderr}");
    let ova = dir.join("out").join(format!("{}.ova", def.appliance.name));
    assert!(ova.is_file(), "{stderr}");
    let verify = testkit::run::cargo_xtask()
        .args(["verify-ova", ova.as_str()])
        .args(["--definition", dir.join("appliance.toml").as_str()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    // el6 has no VMware tools: the iso transport is its only way to the OVF environment, so
    // its OVF must declare the CD-ROM drive vSphere inserts ovf-env.xml into.
    let ovf = ovf_of(&ova);
    assert!(ovf.offers_iso_transport(), "{:?}", ovf.transports);
    let (cd, controller) = ovf
        .attached_cdroms()
        .next()
        .expect("the el6 OVF declares no CD-ROM drive");
    assert_eq!(
        (controller.kind, controller.bus, cd.unit),
        (
            appliance::ovf::ControllerKind::Ide,
            Some(appliance::ovf::CDROM_IDE_BUS),
            Some(appliance::ovf::CDROM_IDE_UNIT)
        )
    );
}

/// The descriptor inside `ova`, read through the one tar reader.
fn ovf_of(ova: &Utf8Path) -> appliance::ovf::OvfDescriptor {
    use std::io::Read;
    let file = std::fs::File::open(ova).unwrap();
    let len = file.metadata().unwrap().len();
    let index = appliance::ova::read_index(&mut &file, len).unwrap();
    let entry = index
        .entries
        .iter()
        .find(|e| e.name.ends_with(".ovf"))
        .expect("no .ovf in the OVA");
    let mut text = String::new();
    appliance::ova::MemberReader::new(&file, entry)
        .read_to_string(&mut text)
        .unwrap();
    appliance::ovf::OvfDescriptor::parse(&text).unwrap()
}

#[test]
#[ignore = "slow: boots a Debian kernel in QEMU (TCG); run by cargo xtask test"]
fn a_kickstart_error_fails_the_build_at_once_with_the_console_excerpt() {
    let _qemu = testkit::qemu_exclusive();
    let dir = double::scratch("centos-cli-ks-error");
    let out = build_ova(&dir, double::KICKSTART_ERROR_INIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the console printed \"Kickstart Error\""),
        "{stderr}"
    );
    assert!(stderr.contains("QEMU was stopped"), "{stderr}");
    // The excerpt shows the dialog's text without its terminal codes.
    assert!(
        stderr.contains("  | ") && stderr.contains("The following error was found"),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "escape codes in: {stderr}");
    assert!(stderr.contains("install-console.log"), "{stderr}");
    assert!(!dir.join("build/centos6/os-disk.raw").exists());
    assert!(!dir.join("out").exists() || std::fs::read_dir(dir.join("out")).unwrap().count() == 0);
}
