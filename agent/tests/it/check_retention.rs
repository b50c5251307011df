//! `mt-agent check-retention` against real file systems on loop devices (needs root and loop
//! support; fails naming what is missing when it cannot run): an ext4 volume accepted, then each criterion
//! refused with its own message: a FAT volume made by mkfs.vfat, a zero-size device, a
//! replication target, a device mounted elsewhere, a volume locked by an agent, the agent's
//! own install volume, a directory that is not a mount.

use crate::common;

use camino::{Utf8Path, Utf8PathBuf};
use std::process::{Command, Output};

struct Scratch {
    dir: Utf8PathBuf,
    loops: Vec<String>,
    mounts: Vec<Utf8PathBuf>,
}

impl Scratch {
    fn new() -> Scratch {
        testkit::require_root("loop devices and mounts");
        testkit::require_tools(&["losetup", "mount", "umount", "mkfs.ext4", "mkfs.vfat"]);
        Scratch {
            dir: testkit::scratch("check-retention"),
            loops: Vec::new(),
            mounts: Vec::new(),
        }
    }
    fn image(&mut self, name: &str, bytes: u64, mkfs: Option<&[&str]>) -> String {
        let img = self.dir.join(name);
        std::fs::File::create(&img).unwrap().set_len(bytes).unwrap();
        if let Some(cmd) = mkfs {
            let st = Command::new(cmd[0])
                .args(&cmd[1..])
                .arg(&img)
                .output()
                .unwrap();
            assert!(
                st.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&st.stderr)
            );
        }
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        self.loops.push(dev.clone());
        dev
    }
    fn mount(&mut self, dev: &str, name: &str) -> Result<Utf8PathBuf, String> {
        let at = self.dir.join(name);
        std::fs::create_dir_all(&at).unwrap();
        let out = Command::new("mount").arg(dev).arg(&at).output().unwrap();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        self.mounts.push(at.clone());
        Ok(at)
    }
    fn config(&self, retention: &Utf8Path) -> Utf8PathBuf {
        let mut cfg = common::agent_config();
        cfg.retention_mount = retention.to_owned();
        common::write_config(&self.dir, &cfg)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg(m).status();
        }
        for l in &self.loops {
            let _ = Command::new("losetup").args(["-d", l]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn check(path: &str, config: &Utf8Path) -> (bool, String) {
    let o: Output = Command::new(common::MT_AGENT)
        .args(["check-retention", path])
        .env("MT_AGENT_CONFIG", config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn fails(text: &str, criterion: &str, message: &str) {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("FAIL {criterion}:")))
        .unwrap_or_else(|| panic!("no failed {criterion:?} in:\n{text}"));
    assert!(line.contains(message), "{line:?} lacks {message:?}");
}

#[test]
fn check_retention_reaches_every_criterion_on_real_file_systems() {
    let mut s = Scratch::new();
    let ext4 = s.image("ret.img", 32 << 20, Some(&["mkfs.ext4", "-q", "-F"]));
    let ret = s
        .mount(&ext4, "ret")
        .expect("ext4 mounts through a loop device");
    let cfg = s.config(&ret);

    let (ok, text) = check(ret.as_str(), &cfg);
    assert!(ok, "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ok   ")).count(),
        8,
        "{text}"
    );

    // Locked by a running agent (this process holds the lock as serve would).
    let held = mt_agent::guest::retention::lock(&ret).unwrap();
    let (ok, text) = check(ret.as_str(), &cfg);
    assert!(!ok);
    fails(
        &text,
        "not locked",
        &format!(
            "is locked by another mt-agent (pid {}, lock file",
            std::process::id()
        ),
    );
    drop(held);

    // A FAT volume made by mkfs.vfat: mounted if this kernel can, else as the device.
    let fat = s.image("fat.img", 16 << 20, Some(&["mkfs.vfat"]));
    match s.mount(&fat, "fat") {
        Ok(m) => {
            let (ok, text) = check(m.as_str(), &cfg);
            assert!(!ok);
            fails(&text, "not FAT/FAT32", "is FAT/FAT32/exFAT, which is not eligible");
        }
        Err(e) => eprintln!("\n*** check_retention: cannot mount vfat here ({e}); the FAT criterion is checked on the unmounted device instead ***\n"),
    }
    let (ok, text) = check(&fat, &cfg);
    assert!(!ok);
    fails(
        &text,
        "not FAT/FAT32",
        "is FAT/FAT32/exFAT, which is not eligible",
    );

    // A zero-size device.
    let zero = s.image("zero.img", 0, None);
    let (ok, text) = check(&zero, &cfg);
    assert!(!ok);
    fails(&text, "non-zero capacity", "has zero capacity");

    // A replication target: a group on the retention volume writes to this device.
    let target = s.image("target.img", 4 << 20, None);
    let o = Command::new(common::MT_AGENT)
        .args(["group", "create", "g", "--disk", &format!("d0={target}")])
        .env("MT_AGENT_CONFIG", &cfg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (ok, text) = check(&target, &cfg);
    assert!(!ok);
    fails(
        &text,
        "not in use as a replication target",
        &format!("is the replication target g/d0 ({target})"),
    );

    // A device in use for something else (mounted).
    let (ok, text) = check(&ext4, &cfg);
    assert!(!ok);
    fails(
        &text,
        "not in use for anything else",
        &format!("is mounted at {ret}"),
    );

    // The agent's own install volume, and a directory on it that is not a mount.
    let bin_dir = Utf8Path::new(common::MT_AGENT).parent().unwrap();
    let (ok, text) = check(bin_dir.as_str(), &cfg);
    assert!(!ok);
    fails(
        &text,
        "not the agent's install/cache volume",
        "is on the volume mt-agent itself lives on",
    );
    let plain = s.dir.join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let (ok, text) = check(plain.as_str(), &cfg);
    assert!(!ok);
    fails(&text, "a file system of its own", "nothing is mounted at");
}
