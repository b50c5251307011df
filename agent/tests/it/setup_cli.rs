//! `mt-agent setup`, `disks` and `firstboot` as the image build and the appliance run them:
//! setup on el6- and Debian-shaped roots (dry run first, then twice: byte-identical, "nothing
//! to change"), wrong roots refused; `disks --json` and `firstboot` (real mkfs.ext4 and
//! ssh-keygen) on a fake sysfs/dev tree, the second first boot changing nothing.

use crate::common;

use camino::{Utf8Path, Utf8PathBuf};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn scratch(name: &str) -> Utf8PathBuf {
    testkit::scratch(&format!("setup-cli-{name}"))
}

fn put(root: &Utf8Path, path: &str, text: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn config(dir: &Utf8Path) -> Utf8PathBuf {
    common::write_config(dir, &common::agent_config())
}

fn agent(args: &[&str]) -> (bool, String) {
    let o = testkit::run::output(&mut common::mt_agent(args));
    (o.status.success(), testkit::run::text(&o))
}

fn snapshot(root: &Utf8Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in d.read_dir_utf8().unwrap() {
            let p = e.unwrap().path().to_owned();
            let m = p.symlink_metadata().unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string();
            if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(rel, (0, t.to_string_lossy().as_bytes().to_vec()));
            } else if m.is_dir() {
                out.insert(rel, (m.permissions().mode(), Vec::new()));
                stack.push(p);
            } else {
                out.insert(rel, (m.permissions().mode(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn twice(
    root: &Utf8Path,
    distro: &str,
    cfg: &Utf8Path,
    expect_first: &[&str],
    expect_diff: &[&str],
) {
    let base = [
        "setup",
        "--root",
        root.as_str(),
        "--distro",
        distro,
        "--config",
        cfg.as_str(),
    ];
    let before = snapshot(root);
    let mut dry = base.to_vec();
    dry.push("--dry-run");
    let (ok, diff) = agent(&dry);
    assert!(ok, "{diff}");
    assert!(before == snapshot(root), "--dry-run changed the root");
    for e in expect_diff {
        assert!(diff.contains(e), "the dry run lacks {e:?}:\n{diff}");
    }
    let (ok, first) = agent(&base);
    assert!(ok, "{first}");
    for e in expect_first {
        assert!(first.contains(e), "the first run lacks {e:?}:\n{first}");
    }
    let after = snapshot(root);
    let (ok, second) = agent(&base);
    assert!(ok, "{second}");
    assert!(
        second.contains("is up to date, nothing to change"),
        "{second}"
    );
    assert!(after == snapshot(root), "the second run changed the root");
    let (ok, dry2) = agent(&dry);
    assert!(
        ok && dry2.contains("nothing to change") && !dry2.contains("+++"),
        "{dry2}"
    );
}

#[test]
fn setup_on_an_el6_root_twice() {
    let dir = scratch("el6");
    let root = dir.join("root");
    put(&root, "/etc/centos-release", "CentOS release 6.6 (Final)\n");
    put(
        &root,
        "/etc/sysconfig/network-scripts/ifcfg-eth0",
        "DEVICE=eth0\nHWADDR=52:54:00:12:34:56\nUUID=6a1c6b2e\nONBOOT=yes\n",
    );
    put(&root, "/etc/ssh/ssh_host_rsa_key", "secret");
    put(
        &root,
        "/etc/rc.d/init.d/kdump",
        "#!/bin/sh\n# chkconfig: 2345 20 80\n",
    );
    let cfg = config(&dir);
    twice(
        &root,
        "el6",
        &cfg,
        &["wrote /etc/rc.d/init.d/mt-agent", "linked /etc/rc.d/rc3.d/S90mt-agent -> ../init.d/mt-agent", "removed /etc/ssh/ssh_host_rsa_key", "note: /etc/rc.d/init.d/multipathd is not in the root"],
        &["--- a/etc/sysconfig/network-scripts/ifcfg-eth0\n+++ b/etc/sysconfig/network-scripts/ifcfg-eth0\n", "-HWADDR=52:54:00:12:34:56\n-UUID=6a1c6b2e\n", "+path /var/crash\n", "+    user_friendly_names no\n"],
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn setup_on_a_debian_root_twice() {
    let dir = scratch("deb");
    let root = dir.join("root");
    put(&root, "/etc/debian_version", "12.8\n");
    put(&root, "/etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
    put(
        &root,
        "/etc/machine-id",
        "0123456789abcdef0123456789abcdef\n",
    );
    // What the kdump-tools and nftables packages install (the image's package manifest).
    put(
        &root,
        "/etc/default/kdump-tools",
        "USE_KDUMP=0\nKDUMP_KERNEL=/var/lib/kdump/vmlinuz\n#KDUMP_COREDIR=\"/var/crash\"\n",
    );
    put(&root, "/usr/sbin/nft", "");
    put(
        &root,
        "/etc/nftables.conf",
        "#!/usr/sbin/nft -f\n\nflush ruleset\n",
    );
    let cfg = config(&dir);
    twice(
        &root,
        "debian12",
        &cfg,
        &[
            "wrote /etc/systemd/system/mt-agent-firstboot.service",
            "wrote /etc/default/kdump-tools",
            "wrote /etc/systemd/system/kdump-tools.service",
            "wrote /etc/systemd/system/kdump-tools-dump.service",
            "linked /etc/systemd/system/basic.target.wants/kdump-tools.service -> /etc/systemd/system/kdump-tools.service",
            "wrote /etc/nftables.conf",
            "linked /etc/systemd/system/sysinit.target.wants/nftables.service -> /lib/systemd/system/nftables.service",
        ],
        &[
            "--- a/etc/machine-id\n+++ b/etc/machine-id\n@@ -1 +0,0 @@\n-0123456789abcdef0123456789abcdef\n",
            "+LimitCORE=infinity\n",
            "-USE_KDUMP=0\n+USE_KDUMP=1\n KDUMP_KERNEL=/var/lib/kdump/vmlinuz\n-#KDUMP_COREDIR=\"/var/crash\"\n+KDUMP_COREDIR=\"/var/crash\"\n",
            "+\t\ttype filter hook input priority filter; policy drop;\n",
            "+\t\ttcp dport { 22, 9443 } accept\n",
        ],
    );
    let (ok, out) = agent(&[
        "setup",
        "--root",
        root.as_str(),
        "--distro",
        "debian12",
        "--config",
        cfg.as_str(),
    ]);
    assert!(ok && !out.contains("note:"), "{out}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn wrong_roots_and_a_missing_configuration_are_refused() {
    let dir = scratch("wrong");
    let root = dir.join("root");
    put(&root, "/etc/debian_version", "12.8\n");
    let cfg = config(&dir);
    let (ok, text) = agent(&[
        "setup",
        "--root",
        root.as_str(),
        "--distro",
        "el6",
        "--config",
        cfg.as_str(),
    ]);
    assert!(
        !ok && text.contains("is not an el6 (CentOS/RHEL 6) root file system"),
        "{text}"
    );
    assert!(
        !root.join("etc/mt-agent").exists(),
        "nothing is written to a refused root"
    );
    let (ok, text) = agent(&["setup", "--root", root.as_str(), "--distro", "debian12"]);
    assert!(
        !ok && text.contains("no agent configuration: pass --config FILE"),
        "{text}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A kernel-shaped sysfs: `block/sdX/{size,device -> …/H:C:T:L}` and a VMware page 0x83.
fn fake_disk(base: &Utf8Path, name: &str, addr: &str, bytes: u64, naa_last: Option<u8>) {
    let devdir = base.join("devices").join(addr);
    std::fs::create_dir_all(&devdir).unwrap();
    if let Some(last) = naa_last {
        let mut page = vec![0x00, 0x83, 0x00, 20, 0x01, 0x03, 0x00, 16];
        page.extend_from_slice(&[
            0x60, 0x00, 0xc2, 0x9a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last,
        ]);
        std::fs::write(devdir.join("vpd_pg83"), page).unwrap();
    }
    let dir = base.join("sys/block").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(&devdir, dir.join("device")).unwrap();
    std::fs::write(dir.join("size"), format!("{}\n", bytes / 512)).unwrap();
    std::fs::create_dir_all(base.join("dev")).unwrap();
    std::fs::File::create(base.join("dev").join(name))
        .unwrap()
        .set_len(bytes)
        .unwrap();
}

#[test]
fn disks_and_firstboot_on_a_fake_tree() {
    testkit::require_tools(&["mkfs.ext4", "ssh-keygen", "blkid"]);
    let base = scratch("fb");
    fake_disk(&base, "sda", "0:0:0:0", 64 << 20, Some(0x0a));
    fake_disk(&base, "sdb", "0:0:1:0", 48 << 20, Some(0x0b));
    fake_disk(&base, "sdc", "1:0:0:0", 8 << 20, None);
    let root = base.join("root");
    put(&root, "/etc/fstab", "UUID=1111 / ext4 defaults 1 1\n");
    // The retention mount point is already mounted, so the real `mount` is not called.
    put(
        &root,
        "/proc/self/mounts",
        "/dev/sdb /mnt/retention ext4 rw 0 0\n",
    );
    std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
    let cfg = config(&base);
    let sys = [
        "--sys-root",
        &format!("{base}/sys"),
        "--dev-root",
        &format!("{base}/dev"),
        "--system-root",
        root.as_str(),
    ]
    .map(String::from);
    let run = |cmd: &[&str]| {
        let mut args: Vec<&str> = cmd.to_vec();
        args.extend(["--config", cfg.as_str()]);
        args.extend(sys.iter().map(String::as_str));
        agent(&args)
    };

    let (ok, json) = run(&["disks", "--json"]);
    assert!(ok, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let roles: Vec<(&str, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["name"].as_str().unwrap(), d["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [("sda", "os"), ("sdb", "retention"), ("sdc", "free")]
    );
    assert_eq!(v[1]["stable_id"], "36000c29a00000000000000000000000b");
    assert_eq!(v[1]["size_bytes"], 48 << 20);
    assert!(v[2]["problem"]
        .as_str()
        .unwrap()
        .contains("disk.EnableUUID=TRUE"));
    let (ok, table) = run(&["disks"]);
    assert!(
        ok && table.contains("sdc: no stable ID: set disk.EnableUUID=TRUE"),
        "{table}"
    );

    let (ok, first) = run(&["firstboot"]);
    assert!(ok, "{first}");
    for e in [
        "blacklisted the OS disk 36000c29a00000000000000000000000a",
        "formatted the retention disk",
        "created the SSH host key /etc/ssh/ssh_host_rsa_key",
        "recorded the OS disk",
    ] {
        assert!(first.contains(e), "{e:?} missing from:\n{first}");
    }
    let blkid = Command::new("blkid")
        .args(["-o", "value", "-s", "UUID"])
        .arg(base.join("dev/sdb"))
        .output()
        .unwrap();
    let uuid = String::from_utf8(blkid.stdout).unwrap().trim().to_owned();
    let fstab = std::fs::read_to_string(root.join("etc/fstab")).unwrap();
    assert!(
        fstab.ends_with(&format!(
            "UUID={uuid} /mnt/retention ext4 defaults,nofail 0 2\n"
        )),
        "{fstab}"
    );
    let key = std::fs::read_to_string(root.join("etc/ssh/ssh_host_rsa_key.pub")).unwrap();
    assert!(key.starts_with("ssh-rsa "));

    assert!(
        first.contains(&format!("as ext4 labelled retention (UUID={uuid})")),
        "{first}"
    );

    let (ok, second) = run(&["firstboot"]);
    assert!(
        ok && second.contains("already set up, nothing to change"),
        "{second}"
    );
    assert!(
        second.contains(&format!(
            "already holds the ext4 file system retention (UUID={uuid}): adopted, not formatted"
        )),
        "{second}"
    );
    let blkid = Command::new("blkid")
        .args(["-o", "value", "-s", "UUID"])
        .arg(base.join("dev/sdb"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(blkid.stdout).unwrap().trim(),
        uuid,
        "reformatted"
    );
    std::fs::remove_dir_all(base).unwrap();
}
