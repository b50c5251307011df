//! First boot on a fake sysfs/dev tree: the retention disk found, formatted once (a fake
//! mkfs, and once the real mkfs.ext4 on an image file), never a disk holding data, fstab by
//! UUID, host keys, the multipath blacklist, re-runs after a crash, a changed identity.

use super::*;
use crate::config::RetentionDiskConfig;
use crate::guest::disks::fake::FakeSystem;
use std::cell::RefCell;

fn cfg() -> AgentConfig {
    AgentConfig {
        port: 9443,
        retention_mount: "/mnt/retention".into(),
        rpo_threshold_minutes: 15,
        retention_hours: 24,
        app_consistent_frequency_minutes: 60,
        retention_disk: Some(RetentionDiskConfig {
            scsi_unit: 1,
            fs: "ext4".into(),
            label: "retention".into(),
        }),
    }
}

/// Records calls; its mkfs writes an ext4 superblock's magic, UUID and label.
#[derive(Default)]
struct FakeTools {
    calls: RefCell<Vec<String>>,
    fail_mount: RefCell<bool>,
}

impl Tools for FakeTools {
    fn mkfs(&self, device: &Utf8Path, fs: &str, label: &str) -> Result<()> {
        self.calls
            .borrow_mut()
            .push(format!("mkfs {fs} {label} {}", device.file_name().unwrap()));
        let f = std::fs::OpenOptions::new().write(true).open(device)?;
        f.write_all_at(&[0x53, 0xef], 1024 + 0x38)?;
        f.write_all_at(&[0xab; 16], 1024 + 0x68)?;
        f.write_all_at(label.as_bytes(), 1024 + 0x78)?;
        Ok(())
    }
    fn mount(&self, _: &SystemPaths, mountpoint: &str) -> Result<()> {
        if *self.fail_mount.borrow() {
            bail!("simulated crash before mount");
        }
        self.calls.borrow_mut().push(format!("mount {mountpoint}"));
        Ok(())
    }
    fn ssh_keygen(&self, kind: &str, key: &Utf8Path) -> Result<()> {
        self.calls.borrow_mut().push(format!("ssh-keygen {kind}"));
        std::fs::write(key, "private")?;
        std::fs::write(key.with_extension("pub"), "public")?;
        Ok(())
    }
}

fn naa(last: u8) -> Option<[u8; 16]> {
    let mut n = [0x60, 0x00, 0xc2, 0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    n[15] = last;
    Some(n)
}

fn appliance(name: &str) -> FakeSystem {
    let f = FakeSystem::new(name);
    f.disk("sda", "0:0:0:0", 64 << 20, naa(0xa0));
    f.disk("sdb", "0:0:1:0", 32 << 20, naa(0xb1));
    std::fs::write(
        f.paths.in_root("/etc/fstab"),
        "UUID=1111 / ext4 defaults 1 1\n",
    )
    .unwrap();
    std::fs::create_dir_all(f.paths.in_root("/etc/ssh")).unwrap();
    f
}

#[test]
fn first_boot_formats_a_blank_retention_disk_once() {
    let f = appliance("once");
    let tools = FakeTools::default();
    let done = run_firstboot(&cfg(), &f.paths, &tools).unwrap().done;
    assert_eq!(
        *tools.calls.borrow(),
        [
            "mkfs ext4 retention sdb",
            "mount /mnt/retention",
            "ssh-keygen rsa",
            "ssh-keygen dsa"
        ]
    );
    assert!(
        done[0].contains("blacklisted the OS disk 36000c2900000000000000000000000a0"),
        "{done:?}"
    );
    let mp = std::fs::read_to_string(f.paths.in_root("/etc/multipath.conf")).unwrap();
    assert_eq!(
        multipath::os_disk_wwid(&mp).as_deref(),
        Some("36000c2900000000000000000000000a0")
    );
    assert_eq!(
        std::fs::read_to_string(f.paths.in_root("/etc/fstab")).unwrap(),
        "UUID=1111 / ext4 defaults 1 1\nUUID=abababab-abab-abab-abab-abababababab /mnt/retention ext4 defaults,nofail 0 2\n"
    );
    let id = Identity::load(&f.paths).unwrap().unwrap();
    assert_eq!(
        id.retention_disk.as_deref(),
        Some("36000c2900000000000000000000000b1")
    );

    let uuid = "abababab-abab-abab-abab-abababababab";
    assert!(
        done[1].starts_with("formatted the retention disk ")
            && done[1].ends_with(&format!(" as ext4 labelled retention (UUID={uuid})")),
        "{done:?}"
    );

    // The second boot: nothing to do but mount; the volume is adopted, and says so.
    tools.calls.borrow_mut().clear();
    let again = run_firstboot(&cfg(), &f.paths, &tools).unwrap();
    assert_eq!(again.done, Vec::<String>::new());
    assert_eq!(
        again.kept,
        [format!(
            "the retention disk {} already holds the ext4 file system retention (UUID={uuid}): adopted, not formatted",
            f.paths.dev.join("sdb")
        )]
    );
    assert_eq!(*tools.calls.borrow(), ["mount /mnt/retention"]);
}

#[test]
fn a_crash_halfway_is_finished_by_the_next_run_without_reformatting() {
    let f = appliance("crash");
    let tools = FakeTools::default();
    *tools.fail_mount.borrow_mut() = true;
    assert!(run_firstboot(&cfg(), &f.paths, &tools).is_err());
    assert!(
        Identity::load(&f.paths).unwrap().is_none(),
        "identity is recorded last"
    );
    *tools.fail_mount.borrow_mut() = false;
    tools.calls.borrow_mut().clear();
    run_firstboot(&cfg(), &f.paths, &tools).unwrap();
    assert_eq!(
        *tools.calls.borrow(),
        ["mount /mnt/retention", "ssh-keygen rsa", "ssh-keygen dsa"]
    );
    assert!(Identity::load(&f.paths).unwrap().is_some());
}

#[test]
fn a_disk_holding_data_is_never_formatted() {
    for (what, offset, bytes) in [
        ("an MBR partition table", 510u64, &[0x55u8, 0xaa][..]),
        ("a GPT partition table", 512, b"EFI PART"),
        ("data in its first or last MiB", (32 << 20) - 100, b"x"),
    ] {
        let f = appliance("data");
        let dev = f.paths.dev.join("sdb");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&dev)
            .unwrap()
            .write_all_at(bytes, offset)
            .unwrap();
        let before = std::fs::read(&dev).unwrap();
        let tools = FakeTools::default();
        let err = run_firstboot(&cfg(), &f.paths, &tools)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("holds {what}: not formatting it")),
            "{err}"
        );
        assert!(std::fs::read(&dev).unwrap() == before);
        assert!(!tools.calls.borrow().iter().any(|c| c.starts_with("mkfs")));
    }
    // Somebody else's ext4 is not adopted either.
    let f = appliance("foreign");
    FakeTools::default()
        .mkfs(&f.paths.dev.join("sdb"), "ext4", "payroll")
        .unwrap();
    let err = run_firstboot(&cfg(), &f.paths, &FakeTools::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("labelled \"payroll\", not the retention volume"),
        "{err}"
    );
}

/// A disk laid out like the el6 kickstart's: an MBR whose entries are `(type, start, sectors)`.
fn partition(dev: &Utf8Path, entries: &[(u8, u32, u32)]) {
    let f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
    for (i, (kind, start, sectors)) in entries.iter().enumerate() {
        let mut e = [0u8; 16];
        e[4] = *kind;
        e[8..12].copy_from_slice(&start.to_le_bytes());
        e[12..16].copy_from_slice(&sectors.to_le_bytes());
        f.write_all_at(&e, 446 + 16 * i as u64).unwrap();
    }
    f.write_all_at(&[0x55, 0xaa], 510).unwrap();
}

/// Writes a fake ext4 superblock (magic, UUID 0xcd.., label) at byte `at` of `dev`.
fn ext4_at(dev: &Utf8Path, at: u64, label: &str) {
    let f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
    f.write_all_at(&[0x53, 0xef], at + 1024 + 0x38).unwrap();
    f.write_all_at(&[0xcd; 16], at + 1024 + 0x68).unwrap();
    f.write_all_at(label.as_bytes(), at + 1024 + 0x78).unwrap();
}

#[test]
fn a_retention_partition_made_at_install_time_is_adopted_not_formatted() {
    let f = appliance("el6-part");
    let dev = f.paths.dev.join("sdb");
    // 32 MiB disk: one Linux partition from 1 MiB to the end, ext4 labelled retention.
    partition(&dev, &[(0x83, 2048, (31 << 20) / 512)]);
    ext4_at(&dev, 1 << 20, "retention");
    let before = std::fs::read(&dev).unwrap();
    let tools = FakeTools::default();
    let report = run_firstboot(&cfg(), &f.paths, &tools).unwrap();
    assert!(
        std::fs::read(&dev).unwrap() == before,
        "the disk was written"
    );
    assert!(!tools.calls.borrow().iter().any(|c| c.starts_with("mkfs")));
    let uuid = "cdcdcdcd-cdcd-cdcd-cdcd-cdcdcdcdcdcd";
    assert_eq!(
        report.kept,
        [format!("partition 1 of the retention disk {dev} already holds the ext4 file system retention (UUID={uuid}): adopted, not formatted")]
    );
    assert!(std::fs::read_to_string(f.paths.in_root("/etc/fstab"))
        .unwrap()
        .ends_with(&format!(
            "UUID={uuid} /mnt/retention ext4 defaults,nofail 0 2\n"
        )),);
}

#[test]
fn any_other_partition_table_is_left_alone() {
    for (why, entries, label) in [
        (
            "two partitions",
            &[(0x83u8, 2048u32, 16384u32), (0x83, 18432, 8192)][..],
            "retention",
        ),
        ("an LVM partition", &[(0x8e, 2048, 16384)][..], "retention"),
        (
            "past the disk's end",
            &[(0x83, 2048, 1 << 20)][..],
            "retention",
        ),
        ("no file system in it", &[(0x83, 2048, 16384)][..], ""),
    ] {
        let f = appliance("other-part");
        let dev = f.paths.dev.join("sdb");
        partition(&dev, entries);
        if !label.is_empty() {
            ext4_at(&dev, 1 << 20, label);
        }
        let tools = FakeTools::default();
        let err = run_firstboot(&cfg(), &f.paths, &tools)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("holds an MBR partition table: not formatting it"),
            "{why}: {err}"
        );
        assert!(tools.calls.borrow().is_empty(), "{why}");
    }
    // One Linux partition with somebody else's file system is named, not adopted.
    let f = appliance("foreign-part");
    let dev = f.paths.dev.join("sdb");
    partition(&dev, &[(0x83, 2048, 16384)]);
    ext4_at(&dev, 1 << 20, "payroll");
    let err = run_firstboot(&cfg(), &f.paths, &FakeTools::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("labelled \"payroll\", not the retention volume"),
        "{err}"
    );
}

/// The layout the el6 install leaves, made by the tools an operator would use (sfdisk, mke2fs
/// at the partition's offset), read back as blkid reads it.
#[test]
fn examine_finds_a_real_ext4_in_the_only_partition() {
    testkit::require_tools(&["sfdisk", "mke2fs", "blkid"]);
    let f = appliance("real-part");
    let img = f.paths.dev.join("sdb");
    let mut sfdisk = std::process::Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("sfdisk (Debian package fdisk)");
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"start=2048, type=83\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let ok = std::process::Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "retention"])
        .args(["-E", "offset=1048576"])
        .arg(&img)
        .arg("31744k")
        .status()
        .unwrap();
    assert!(ok.success());
    let blkid = std::process::Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "UUID", "-O", "1048576"])
        .arg(&img)
        .output()
        .unwrap();
    let uuid = String::from_utf8(blkid.stdout).unwrap().trim().to_owned();
    assert_eq!(uuid.len(), 36, "blkid found no UUID");
    assert_eq!(
        examine(&img).unwrap(),
        Contents::FileSystem {
            fs: "ext4",
            label: "retention".into(),
            uuid,
            partition: Some(1),
        }
    );
}

#[test]
fn a_missing_retention_disk_and_changed_identities_are_refused() {
    let f = FakeSystem::new("missing");
    f.disk("sda", "0:0:0:0", 64 << 20, naa(0xa0));
    let err = run_firstboot(&cfg(), &f.paths, &FakeTools::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no retention disk at SCSI unit 1"), "{err}");

    let f = appliance("moved");
    run_firstboot(&cfg(), &f.paths, &FakeTools::default()).unwrap();
    // The retention disk is replaced by another one (a storage migration gone wrong).
    std::fs::remove_dir_all(f.paths.sys.join("block/sdb")).unwrap();
    f.disk("sdc", "0:0:1:0", 32 << 20, naa(0xc2));
    let err = run_firstboot(&cfg(), &f.paths, &FakeTools::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("the retention disk was 36000c2900000000000000000000000b1 at first boot and is 36000c2900000000000000000000000c2 now"), "{err}");
}

#[test]
fn the_real_mkfs_ext4_formats_an_image_once() {
    struct RealMkfs(FakeTools);
    impl Tools for RealMkfs {
        fn mkfs(&self, device: &Utf8Path, fs: &str, label: &str) -> Result<()> {
            self.0.calls.borrow_mut().push("mkfs".into());
            SystemTools.mkfs(device, fs, label)
        }
        fn mount(&self, p: &SystemPaths, m: &str) -> Result<()> {
            self.0.mount(p, m)
        }
        fn ssh_keygen(&self, k: &str, key: &Utf8Path) -> Result<()> {
            self.0.ssh_keygen(k, key)
        }
    }
    testkit::require_tools(&["mkfs.ext4", "blkid"]);
    let f = appliance("mkfs");
    let tools = RealMkfs(FakeTools::default());
    run_firstboot(&cfg(), &f.paths, &tools).unwrap();
    run_firstboot(&cfg(), &f.paths, &tools).unwrap();
    assert_eq!(
        tools
            .0
            .calls
            .borrow()
            .iter()
            .filter(|c| *c == "mkfs")
            .count(),
        1
    );
    let dev = f.paths.dev.join("sdb");
    let blkid = std::process::Command::new("blkid")
        .args(["-o", "export"])
        .arg(&dev)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&blkid.stdout);
    assert!(
        out.contains("TYPE=ext4") && out.contains("LABEL=retention"),
        "{out}"
    );
    let uuid = out.lines().find_map(|l| l.strip_prefix("UUID=")).unwrap();
    let fstab = std::fs::read_to_string(f.paths.in_root("/etc/fstab")).unwrap();
    assert!(
        fstab.contains(&format!("UUID={uuid} /mnt/retention ext4")),
        "{fstab} vs {uuid}"
    );
}

#[test]
fn fstab_lines_for_the_mount_point_are_replaced_not_added() {
    let cur = "# /mnt/retention was sdb\n/dev/sdb /mnt/retention ext4 rw 0 0\nUUID=1 / ext4 defaults 1 1\n";
    let once = fstab_with(cur, "u-2", "/mnt/retention", "ext4");
    assert_eq!(once, "# /mnt/retention was sdb\nUUID=u-2 /mnt/retention ext4 rw 0 0\nUUID=1 / ext4 defaults 1 1\n");
    let fresh = fstab_with(
        "UUID=1 / ext4 defaults 1 1\n",
        "u-3",
        "/mnt/retention",
        "xfs",
    );
    assert_eq!(
        fresh,
        "UUID=1 / ext4 defaults 1 1\nUUID=u-3 /mnt/retention xfs defaults,nofail 0 2\n"
    );
    assert_eq!(fstab_with(&once, "u-2", "/mnt/retention", "ext4"), once);
}

#[test]
fn serve_refuses_when_the_recorded_disks_changed_identity() {
    let f = appliance("serve-identity");
    // Before first boot there is nothing to compare with.
    disks::verify_identity(&f.paths, &cfg()).unwrap();
    run_firstboot(&cfg(), &f.paths, &FakeTools::default()).unwrap();
    disks::verify_identity(&f.paths, &cfg()).unwrap();
    // A storage migration gave the OS disk a new identity.
    std::fs::remove_dir_all(f.paths.sys.join("block/sda")).unwrap();
    f.disk("sda", "0:0:0:0", 64 << 20, naa(0xd3));
    let err = disks::verify_identity(&f.paths, &cfg())
        .unwrap_err()
        .to_string();
    assert!(err.contains("the OS disk was 36000c2900000000000000000000000a0 at first boot and is 36000c2900000000000000000000000d3 now"), "{err}");
    assert!(err.contains("as after a storage migration"), "{err}");
}

#[test]
fn a_disk_multipath_claimed_is_formatted_through_its_map() {
    let f = appliance("mapper");
    // multipathd made /dev/mapper/<wwid> for the retention disk before first boot ran.
    let id = format!("36000c29{}b1", "0".repeat(23));
    std::fs::create_dir_all(f.paths.dev.join("mapper")).unwrap();
    std::fs::File::create(f.paths.dev.join("mapper").join(&id))
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let tools = FakeTools::default();
    run_firstboot(&cfg(), &f.paths, &tools).unwrap();
    assert_eq!(tools.calls.borrow()[0], format!("mkfs ext4 retention {id}"));
}
