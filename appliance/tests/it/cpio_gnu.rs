//! The newc writer and reader against GNU cpio, the tool that defines the format in practice:
//! `cpio -i` extracts what `write_newc` wrote (files, modes, a symlink, a directory), and
//! `read_newc` reads what `cpio -o -H newc` wrote.

use appliance::cpio::{self, CpioEntry, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use camino::Utf8PathBuf;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

fn scratch(name: &str) -> Utf8PathBuf {
    testkit::scratch(&format!("cpio-{name}"))
}

fn cpio(dir: &Utf8PathBuf, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    testkit::require_tool("cpio");
    let mut child = Command::new("cpio")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("GNU cpio is installed (apt-get install cpio)");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "cpio {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn gnu_cpio_extracts_what_the_writer_wrote() {
    let dir = scratch("cpio-extract");
    let big: Vec<u8> = (0..70_001u32).map(|i| (i * 7 % 251) as u8).collect();
    let archive = cpio::write_newc(&[
        CpioEntry::dir("etc"),
        CpioEntry::file("etc/ks.cfg", 0o600, b"#version=RHEL6\npoweroff\n".to_vec()),
        CpioEntry::file("init", 0o755, big.clone()),
        CpioEntry::symlink("linuxrc", "init"),
        CpioEntry::file("empty", 0o644, Vec::new()),
    ]);
    cpio(&dir, &["-i", "--quiet", "--make-directories"], &archive);
    assert_eq!(
        std::fs::read(dir.join("etc/ks.cfg")).unwrap(),
        b"#version=RHEL6\npoweroff\n"
    );
    let mode = |p: &str| {
        std::fs::symlink_metadata(dir.join(p))
            .unwrap()
            .permissions()
            .mode()
    };
    assert_eq!(mode("etc/ks.cfg"), S_IFREG | 0o600);
    assert_eq!(mode("init"), S_IFREG | 0o755);
    assert_eq!(mode("etc") & S_IFMT, S_IFDIR);
    assert_eq!(std::fs::read(dir.join("init")).unwrap(), big);
    assert_eq!(
        std::fs::read_link(dir.join("linuxrc")).unwrap().to_str(),
        Some("init")
    );
    assert_eq!(std::fs::read(dir.join("empty")).unwrap().len(), 0);
}

#[test]
fn the_reader_reads_what_gnu_cpio_wrote() {
    let dir = scratch("cpio-create");
    std::fs::create_dir_all(dir.join("d")).unwrap();
    std::fs::write(dir.join("d/a.txt"), b"alpha\n").unwrap();
    std::fs::write(dir.join("odd"), b"12345").unwrap();
    std::os::unix::fs::symlink("d/a.txt", dir.join("link")).unwrap();
    let archive = cpio(
        &dir,
        &["-o", "-H", "newc", "--quiet"],
        b"d\nd/a.txt\nodd\nlink\n",
    );
    let (entries, used) = cpio::read_newc(&archive).unwrap();
    assert!(used <= archive.len());
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["d", "d/a.txt", "odd", "link"]);
    assert_eq!(entries[1].data, b"alpha\n");
    assert_eq!(entries[2].data, b"12345");
    assert_eq!(entries[3].mode & S_IFMT, S_IFLNK);
    assert_eq!(entries[3].data, b"d/a.txt");
    // GNU cpio pads the whole archive to 512 bytes; the initramfs reader skips that padding.
    let parts = cpio::read_initramfs(&archive).unwrap();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].entries, entries);
}
