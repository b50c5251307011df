//! The boot test's specification from the outside: reports the guest could send, judged as
//! the checks must judge them; the scripts the guest is sent, parsed by bash; the OVA read
//! through its tar index; the ovf-env CD.

use super::guest::{guest_script, probe_command};
use super::image;
use super::judge::{judge_crash_kernel, judge_firewall, judge_report, RetentionView};
use super::ovf_env::{make_iso, OvfEnvTest};
use super::restart::{
    judge_crash_dump, judge_kernel_change, kernel_change_script, reboot_script, Restart,
};
use super::session::Outcome;
use super::*;
use crate::qemu;
use appliance::definition::{LogicalPackage, NicKind, ScsiController, OS_DISK_SCSI_UNIT};
use appliance::Definition;
use xshell::cmd;

fn def() -> Definition {
    Definition::load(&util::workspace_root().join(appliance::definition::DEFAULT_DEFINITION))
        .unwrap()
}

fn hw() -> VmHardware {
    VmHardware::from_definition(&def(), &["os.raw".into(), "r.raw".into()])
}

fn good_report() -> Vec<String> {
    let d = def();
    let mut r = vec![
        "mount / ext4 root".to_string(),
        "mount /var/crash ext4 crash".into(),
        "mount /home ext4 home".into(),
        "mount /mnt/retention ext4 retention".into(),
        "swap swap".into(),
        "agent active".into(),
        "system running".into(),
        "hostname mt-appliance mt-appliance.localdomain".into(),
        "addr 10.0.2.15/24".into(),
        "service multipathd active".into(),
        "hostkeys 3".into(),
        format!("machineid {}", "a".repeat(32)),
        "failed-units".into(),
        "ordering-cycles 0".into(),
    ];
    for p in &d.packages {
        r.push(format!("tool {0} /usr/bin/{0}", probe_command(*p)));
        r.push(format!("use {} ok", p.as_str()));
    }
    for unit in [0, 1] {
        let (_, wwn) = qemu::disk_identity(&d.appliance.name, unit);
        r.push(format!("byid scsi-3{wwn:016x}"));
    }
    r.extend(
        [
            "service kdump-tools active",
            "nft-service active",
            "nft table inet filter {",
            "nft chain input {",
            "nft type filter hook input priority filter; policy drop;",
            "nft ct state established,related accept",
            "nft udp sport 67 udp dport 68 accept",
            "nft tcp dport { 22, 9443 } accept",
            "nft }",
            "nft }",
            "cmdline BOOT_IMAGE=/boot/vmlinuz root=LABEL=root ro console=ttyS0,115200n8 crashkernel=384M-2G:128M,2G-:256M",
            "kexec-crash 1 268435456",
            "kdump-initrd-built 0",
        ]
        .map(String::from),
    );
    r.extend(first_boot_retention(UUID));
    r
}

const UUID: &str = "0b7f3c1e-5d2a-4c8e-9f10-2a3b4c5d6e7f";

fn first_boot_retention(uuid: &str) -> Vec<String> {
    vec![
        format!("ret-disk {uuid}"),
        format!("ret-mount {uuid} /dev/sdb"),
        format!("ret-fstab UUID={uuid}"),
        format!("ret-formatted UUID={uuid} "),
        "ret-adopted".into(),
    ]
}

fn after_reboot(uuid: &str) -> Vec<String> {
    vec![
        format!("ret-disk {uuid}"),
        format!("ret-mount {uuid} /dev/sdb"),
        format!("ret-fstab UUID={uuid}"),
        "ret-formatted".into(),
        format!("ret-adopted UUID={uuid} "),
        format!("ret-marker boot-test {uuid}"),
        "kexec-crash 1 268435456".into(),
        "kdump-initrd-built 0".into(),
    ]
}

fn failures(outcomes: Vec<Outcome>) -> Vec<String> {
    outcomes
        .into_iter()
        .filter(|o| !o.ok)
        .map(|o| o.what)
        .collect()
}

#[test]
fn a_firewall_that_accepts_by_default_or_closes_a_port_fails() {
    let d = def();
    let judge = |edit: &dyn Fn(&str) -> String| {
        let r: Vec<String> = good_report().iter().map(|l| edit(l)).collect();
        failures(judge_firewall(&d, &r))
    };
    assert_eq!(judge(&|l| l.to_string()), Vec::<String>::new());
    assert_eq!(
        judge(&|l| l.replace("policy drop", "policy accept")),
        ["firewall input policy drop"]
    );
    assert_eq!(
        judge(&|l| l.replace("{ 22, 9443 }", "9443")),
        ["firewall accepts TCP 22 and 9443"]
    );
    assert_eq!(
        judge(&|l| l.replace("{ 22, 9443 } accept", "{ 22, 9443 } drop")),
        ["firewall accepts TCP 22 and 9443"]
    );
    assert_eq!(
        judge(&|l| l.replace("nft-service active", "nft-service failed")),
        ["nftables.service active"]
    );
}

#[test]
fn crash_kernel_checks_need_the_parameter_and_a_loaded_capture_kernel() {
    let d = def();
    let good = good_report();
    assert_eq!(
        failures(judge_crash_kernel(&d, &good, "")),
        Vec::<String>::new()
    );
    let edited = |from: &str, to: &str| -> Vec<String> {
        good.iter().map(|l| l.replace(from, to)).collect()
    };
    assert_eq!(
        failures(judge_crash_kernel(
            &d,
            &edited(" crashkernel=384M-2G:128M,2G-:256M", ""),
            ""
        )),
        ["/proc/cmdline has crashkernel=384M-2G:128M,2G-:256M"]
    );
    assert_eq!(
        failures(judge_crash_kernel(
            &d,
            &edited("kexec-crash 1 ", "kexec-crash 0 "),
            ""
        )),
        ["capture kernel loaded (kexec_crash_loaded = 1)"]
    );
    assert_eq!(
        failures(judge_crash_kernel(
            &d,
            &edited("kexec-crash 1 268435456", "kexec-crash 1 0"),
            ""
        )),
        ["capture kernel loaded (kexec_crash_loaded = 1)"]
    );
    // kdump-tools built the capture initramfs at boot: the image's was missing or discarded.
    assert_eq!(
        failures(judge_crash_kernel(
            &d,
            &edited("kdump-initrd-built 0", "kdump-initrd-built 1"),
            ""
        )),
        ["capture initramfs from the image, not built at boot"]
    );
    // Without kdump in the definition nothing is reserved, so nothing is expected.
    let mut no_kdump = def();
    no_kdump
        .packages
        .retain(|p| *p != LogicalPackage::KexecTools);
    assert!(judge_crash_kernel(&no_kdump, &[], "").is_empty());
}

#[test]
fn the_retention_volume_must_be_formatted_once_and_adopted_after_the_reboot() {
    let d = def();
    let first = RetentionView::parse(&first_boot_retention(UUID));
    assert_eq!(failures(first.judge_first_boot(&d)), Vec::<String>::new());
    let marker = format!("boot-test {UUID}");
    let again = RetentionView::parse(&after_reboot(UUID));
    assert_eq!(
        failures(again.judge_after_reboot(&d, &first, &marker, "after a reboot: ")),
        Vec::<String>::new()
    );

    // The build's label line instead of first boot's UUID line.
    let mut r = first_boot_retention(UUID);
    r[2] = "ret-fstab LABEL=retention".into();
    assert_eq!(
        failures(RetentionView::parse(&r).judge_first_boot(&d)),
        ["/mnt/retention is that file system, by UUID in fstab"]
    );
    // First boot adopted a volume the image brought instead of formatting a blank disk.
    let mut r = first_boot_retention(UUID);
    r[3] = "ret-formatted".into();
    r[4] = format!("ret-adopted UUID={UUID}");
    assert_eq!(
        failures(RetentionView::parse(&r).judge_first_boot(&d)),
        ["first boot formatted the retention disk once"]
    );
    // Formatted again at the second boot: a new UUID, the marker gone.
    let other = "11111111-2222-4333-8444-555555555555";
    let mut r = after_reboot(other);
    r[3] = format!("ret-formatted UUID={other}");
    r[4] = "ret-adopted".into();
    r[5] = "ret-marker cat: /mnt/retention/mt-boot-test-marker: No such file or directory".into();
    assert_eq!(
        failures(RetentionView::parse(&r).judge_after_reboot(&d, &first, &marker, "after a reboot: ")),
        [
            "after a reboot: /mnt/retention still mounted from UUID 0b7f3c1e-5d2a-4c8e-9f10-2a3b4c5d6e7f",
            "after a reboot: first boot adopted it, formatted nothing",
            "after a reboot: mt-boot-test-marker written before it is there",
        ]
    );
    // Nothing mounted at all is not a pass either.
    let empty = RetentionView::parse(&[]);
    assert_eq!(failures(empty.judge_first_boot(&d)).len(), 2);
}

#[test]
fn only_crash_restarts_through_a_kernel_crash_and_it_finds_the_dump() {
    let d = def();
    let plain = flags(&["x.ova"]).unwrap();
    let crash = flags(&["x.ova", "--crash"]).unwrap();
    assert!(crash.crash && !plain.crash);
    assert_eq!(Restart::for_test(&d, &plain).unwrap(), Restart::Clean);
    assert_eq!(Restart::for_test(&d, &crash).unwrap(), Restart::KernelCrash);
    let built = BootTestOptions::of_built_ova("x.ova".into(), "d.toml".into(), "pw");
    assert_eq!(Restart::for_test(&d, &built).unwrap(), Restart::Clean);
    let mut no_kdump = def();
    no_kdump
        .packages
        .retain(|p| *p != LogicalPackage::KexecTools);
    assert_eq!(
        Restart::for_test(&no_kdump, &plain).unwrap(),
        Restart::Clean
    );
    let err = Restart::for_test(&no_kdump, &crash)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("--crash: the definition has no kexec-tools"),
        "{err}"
    );
    assert!(reboot_script(&d, Restart::KernelCrash, false)
        .contains("grep -l 'sysrq triggered crash' /var/crash/*/dmesg.*"));
    assert!(!reboot_script(&d, Restart::Clean, false).contains("crash-saved"));
    let judged = |line: &str| judge_crash_dump(&[line.to_string()]).ok;
    assert!(judged("crash-saved 1 1"));
    assert!(!judged("crash-saved 0 0"), "no dump");
    assert!(!judged("crash-saved 1 0"), "a dump of another panic");
    assert!(!judged("crash-saved 2 2"), "a dump the image brought");
    assert!(!judge_crash_dump(&[]).ok);
}

#[test]
fn the_guest_scripts_ask_the_retention_disk_by_its_wwn_and_the_firstboot_journal() {
    let d = def();
    let (_, wwn) = qemu::disk_identity(&d.appliance.name, d.retention_disk.scsi_unit);
    let script = guest_script(&d, None);
    assert!(script.contains(&format!(
        "blkid -p -o value -s UUID /dev/disk/by-id/scsi-3{wwn:016x}"
    )));
    assert!(script.contains(
        "journalctl -b -o cat -u mt-agent-firstboot.service | grep 'formatted the retention disk'"
    ));
    assert!(script.contains("nft list chain inet filter input"));
    assert!(script.contains("cat /sys/kernel/kexec_crash_loaded"));
    assert!(script.ends_with("echo MTCHK-''END\n"));
}

/// The scripts are typed into the guest's bash as one line each: bash must parse them.
#[test]
fn the_guest_scripts_are_valid_shell() {
    let d = def();
    for (name, script) in [
        ("first boot", guest_script(&d, None)),
        (
            "first boot, ovf",
            guest_script(&d, Some(&ovf_test().config)),
        ),
        ("after the reboot", reboot_script(&d, Restart::Clean, false)),
        ("the kernel change", kernel_change_script()),
        (
            "after the crash",
            reboot_script(&d, Restart::KernelCrash, false),
        ),
        (
            "after the reboot, ovf",
            reboot_script(&d, Restart::Clean, true),
        ),
    ] {
        assert_eq!(script.lines().count(), 1, "{name}");
        testkit::run::assert_bash_parses(name, &script);
    }
}

#[test]
fn the_ova_is_read_through_its_tar_index_and_its_disks_extracted() {
    use appliance::ova::{write_ova, MemberSource, OvaMember};
    use appliance::ovf::{render, BuildInfo, DiskFile, DiskRole};
    let mut d = def();
    d.hardware.scsi_controller = ScsiController::LsilogicSas;
    d.hardware.nic = NicKind::E1000;
    let files: Vec<DiskFile> = DiskRole::ALL
        .iter()
        .map(|&role| DiskFile {
            role,
            file_size: 1 << 20,
            capacity: role.capacity(&d),
            populated_size: 1 << 20,
        })
        .collect();
    let build = BuildInfo {
        build_id: "test".into(),
    };
    let xml = render(&d, &files, &build).unwrap();
    let names: Vec<String> = DiskRole::ALL.iter().map(|r| r.file_name(&d)).collect();
    let disks: Vec<Vec<u8>> = (0..names.len()).map(|i| vec![i as u8 + 1; 1000]).collect();
    let dir = util::workspace_root().join("target/tmp-boot-test-image");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("work")).unwrap();
    let ova = dir.join("a.ova");
    let write = |members: &[(String, &[u8])]| {
        let members: Vec<OvaMember> = members
            .iter()
            .map(|(name, bytes)| OvaMember {
                name: name.clone(),
                source: MemberSource::Bytes(bytes),
            })
            .collect();
        write_ova(&ova, &members, 0).unwrap();
    };
    let mut members = vec![("a.ovf".to_string(), xml.as_bytes())];
    members.extend(names.iter().cloned().zip(disks.iter().map(Vec::as_slice)));
    write(&members);

    let work = dir.join("work");
    let hw = image::ova_hardware(&ova, &work).unwrap();
    assert_eq!(qemu::scsi_device(hw.scsi), "mptsas1068");
    assert_eq!(qemu::nic_device(hw.nic), "e1000");
    let units: Vec<u32> = hw.disks.iter().map(|x| x.unit).collect();
    assert_eq!(units, vec![OS_DISK_SCSI_UNIT, d.retention_disk.scsi_unit]);
    for (disk, bytes) in hw.disks.iter().zip(&disks) {
        assert_eq!(
            &std::fs::read(&disk.image).unwrap(),
            bytes,
            "{}",
            disk.image
        );
    }

    // A disk the descriptor names but the archive lacks.
    write(&members[..2]);
    let err = format!("{:#}", image::ova_hardware(&ova, &work).unwrap_err());
    assert!(
        err.contains("does not contain") && err.contains("a.ovf"),
        "{err}"
    );
    std::fs::write(&ova, b"not a tar").unwrap();
    let err = format!("{:#}", image::ova_hardware(&ova, &work).unwrap_err());
    assert!(err.contains("is not a tar archive"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_complete_report_passes_every_check() {
    let outcomes = judge_report(&def(), &hw(), &good_report(), None);
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.ok).map(|o| &o.what).collect();
    assert!(failed.is_empty(), "{failed:?}");
}

#[test]
fn a_missing_mount_tool_link_or_inactive_agent_fails() {
    for (drop, expect) in [
        ("service kdump-tools", "kdump-tools service active"),
        ("ordering-cycles", "no ordering cycle"),
        ("kexec-crash", "capture kernel loaded"),
        ("ret-fstab", "by UUID in fstab"),
        ("mount /home", "/home mounted"),
        ("tool reiserfsck", "tool reiserfsck"),
        ("use reiserfs", "reiserfs works"),
        ("use xfsprogs", "xfsprogs works"),
        ("byid", "/dev/disk/by-id/"),
        ("agent", "mt-agent.service active"),
        ("swap", "swap LABEL=swap active"),
    ] {
        let report: Vec<String> = good_report()
            .into_iter()
            .filter(|l| !l.starts_with(drop))
            .collect();
        let failed: Vec<String> = judge_report(&def(), &hw(), &report, None)
            .into_iter()
            .filter(|o| !o.ok)
            .map(|o| o.what)
            .collect();
        assert!(
            failed.iter().any(|f| f.contains(expect)),
            "dropping {drop:?}: {failed:?}"
        );
    }
}

const TEST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILVEmBxrznU42fpk9rKZu9ivwnUeuQJqEwJ65YtUSCkP mt-boot-test";

fn ovf_test() -> OvfEnvTest {
    let env = mt_agent::guest::ovfenv::parse(&test_environment(TEST_KEY)).unwrap();
    OvfEnvTest {
        iso: "ovf-env.iso".into(),
        config: env.config,
        right: Some("right".into()),
        wrong: "wrong".into(),
        sender: "mt-agent".into(),
        state: "state".into(),
        identity: None,
    }
}

fn ovf_report(passphrase: &str) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let hash: String = Sha256::digest(format!("{passphrase}\n").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    vec![
        "ovf-addr eth0    inet 10.0.2.15/24 brd 10.0.2.255 scope global eth0\\       valid_lft forever preferred_lft forever".into(),
        "ovf-iface iface eth0 inet static".into(),
        "ovf-route default via 10.0.2.2 dev eth0 onlink".into(),
        "ovf-resolv search drill.test nameserver 10.0.2.3 ".into(),
        "ovf-passmode 600 root".into(),
        format!("ovf-passhash {hash}"),
        "ovf-source configuration: OVF environment via iso (CD-ROM /dev/sr0) (blake3 0123456789abcdef)".into(),
        "ovf-unit active".into(),
        "ovf-ntp active ntp.drill.test".into(),
        "ovf-sshkey 1".into(),
    ]
}

#[test]
fn the_test_environment_is_valid_and_escapes_its_passphrase() {
    let xml = test_environment(TEST_KEY);
    assert!(
        xml.contains("fail&amp;back &lt;drill&gt; &quot;7&quot;"),
        "{xml}"
    );
    let o = ovf_test();
    assert_eq!(
        o.config.agent_passphrase.as_deref(),
        Some("fail&back <drill> \"7\"")
    );
    assert_eq!(o.config.hostname.as_deref(), Some("mt-ovf.drill.test"));
    assert_eq!(o.config.root_ssh_key.as_deref(), Some(TEST_KEY));
    assert!(o.config.ntp_server.is_some());
}

#[test]
fn the_ovf_checks_pass_only_when_the_environment_took_effect() {
    let o = ovf_test();
    let pass = o.config.agent_passphrase.clone().unwrap();
    let failed = |r: &[String]| -> Vec<String> {
        o.judge("eth0", r)
            .into_iter()
            .filter(|x| !x.ok)
            .map(|x| x.what)
            .collect()
    };
    assert_eq!(failed(&ovf_report(&pass)), Vec::<String>::new());
    // A DHCP lease gives QEMU's user network the same address: the flag tells them apart.
    let mut dhcp = ovf_report(&pass);
    dhcp[0] = dhcp[0].replace("scope global eth0", "scope global dynamic eth0");
    dhcp[1] = "ovf-iface iface eth0 inet dhcp".into();
    assert!(failed(&dhcp)[0].contains("configured statically"));
    assert!(failed(&ovf_report("changeme"))[0].contains("holds the passphrase"));
    let mut defaults = ovf_report(&pass);
    defaults[6] =
        "ovf-source configuration: build-time defaults (no OVF environment applied)".into();
    assert!(failed(&defaults)[0].contains("mt-agent status"));
    // timesyncd without the deploy-time server (the file unread, or no timesyncd at all).
    let mut ntp = ovf_report(&pass);
    ntp[8] = "ovf-ntp active ".into();
    assert!(failed(&ntp)[0].contains("NTP server"));
    ntp[8] = "ovf-ntp inactive ntp.drill.test".into();
    assert!(failed(&ntp)[0].contains("NTP server"));
    let mut key = ovf_report(&pass);
    key[9] = "ovf-sshkey 0".into();
    assert!(failed(&key)[0].contains("authorized_keys"));
}

#[test]
fn the_transport_cd_carries_ovf_env_xml() {
    let dir = util::workspace_root().join("target/tmp-ovf-iso-test");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("root")).unwrap();
    std::fs::write(dir.join("root/ovf-env.xml"), test_environment(TEST_KEY)).unwrap();
    let sh = Shell::new().unwrap();
    make_iso(&sh, &dir.join("root"), &dir.join("e.iso")).unwrap();
    let iso = std::fs::read(dir.join("e.iso")).unwrap();
    // The primary volume descriptor at sector 16: type 1, "CD001", the volume label.
    assert_eq!(&iso[0x8000..0x8006], b"\x01CD001");
    assert!(iso[0x8028..0x8048].starts_with(b"OVF_ENV"));
    let listing = cmd!(sh, "xorriso -indev {dir}/e.iso -find / -name ovf-env.xml")
        .quiet()
        .ignore_stderr()
        .read()
        .unwrap();
    assert!(listing.contains("ovf-env.xml"), "{listing}");
    std::fs::remove_dir_all(dir).unwrap();
}

fn flags(args: &[&str]) -> Result<BootTestOptions> {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        boot_test: BootTest,
    }
    let mut argv = vec!["boot-test"];
    argv.extend(args);
    Cli::try_parse_from(argv).unwrap().boot_test.options()
}

#[test]
fn the_flags_become_the_options_build_ova_fills_in_too() {
    let ova = Utf8Path::new("out/mt-appliance.ova");
    let def = Utf8Path::new("appliance/appliance.toml");
    let mut built = BootTestOptions::of_built_ova(ova, def, DEFAULT_PASSWORD);
    assert_eq!(
        flags(&[ova.as_str(), "--definition", def.as_str()]).unwrap(),
        built
    );
    built.accel = Accel::Tcg;
    built.timeout = Duration::from_secs(60);
    built.ovf_env = Some(OvfEnvSource::TestValues);
    assert_eq!(
        flags(&[
            ova.as_str(),
            "--definition",
            def.as_str(),
            "--accel",
            "tcg",
            "--timeout",
            "60",
            "--ovf-env-test"
        ])
        .unwrap(),
        built
    );
    let raw = flags(&["--raw", "os.raw", "--raw", "r.raw", "--ovf-env", "e.xml"]).unwrap();
    assert_eq!(
        raw.image,
        BootImage::Raw {
            os: "os.raw".into(),
            retention: "r.raw".into()
        }
    );
    assert_eq!(raw.ovf_env, Some(OvfEnvSource::File("e.xml".into())));
}

#[test]
fn a_crash_cannot_be_asked_of_an_ovf_environment_boot() {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        boot_test: BootTest,
    }
    for other in ["--ovf-env-test", "--ovf-env=e.xml"] {
        let err = <Cli as clap::Parser>::try_parse_from(["boot-test", "x.ova", "--crash", other])
            .err()
            .unwrap_or_else(|| panic!("--crash with {other} was accepted"));
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::ArgumentConflict,
            "{err}"
        );
    }
}

/// The kernel-upgrade path: the script removes the running kernel's capture initramfs and the
/// sysctls copy (without which kdump-config would not rebuild), loads as the unit does, and
/// the judge wants exactly one build, the file, and the capture kernel loaded.
#[test]
fn the_kernel_change_makes_kdump_config_build_the_initramfs_it_lacks() {
    let script = kernel_change_script();
    assert!(script.contains("rm -f $d/initrd.img-$v $d/latest_sysctls-$v"));
    assert!(script.contains("d=/var/lib/kdump;"));
    let (unload, load) = (
        script.find("kdump-config unload").unwrap(),
        script.find("kdump-config load").unwrap(),
    );
    assert!(unload < load, "kdump-config cannot relink while loaded");
    let judged = |lines: &[&str]| {
        judge_kernel_change(&lines.iter().map(|l| l.to_string()).collect::<Vec<_>>()).ok
    };
    let good = [
        "kchange-built 1",
        "kchange-initrd present",
        "kchange-loaded 1",
    ];
    assert!(judged(&good));
    for (i, bad) in [
        "kchange-built 0",
        "kchange-initrd missing",
        "kchange-loaded 0",
    ]
    .iter()
    .enumerate()
    {
        let mut lines = good;
        lines[i] = bad;
        assert!(!judged(&lines), "{bad}");
    }
    assert!(!judged(&[]));
}

#[test]
fn a_missing_image_or_an_unknown_accelerator_is_refused_in_the_words_of_before() {
    let err = flags(&[]).unwrap_err().to_string();
    assert!(err.starts_with("give the OVA to boot"), "{err}");
    let err = flags(&["--raw", "os.raw"]).unwrap_err().to_string();
    assert!(err.starts_with("give the OVA to boot"), "{err}");
    let err = flags(&["x.ova", "--accel", "hvf"]).unwrap_err().to_string();
    assert_eq!(err, "--accel \"hvf\": use kvm, tcg or auto");
}
