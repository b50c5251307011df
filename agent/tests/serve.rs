//! `mt-agent serve` run as the appliance runs it: it refuses a retention path that is a plain
//! directory (nothing mounted), and on a real, writable mount it announces readiness and answers
//! on its port.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

fn config(dir: &std::path::Path, port: u16, retention: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "port = {port}\nretention_mount = \"{}\"\nrpo_threshold_minutes = 15\nretention_hours = 24\napp_consistent_frequency_minutes = 60\n",
            retention.display()
        ),
    )
    .unwrap();
    path
}

fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("mt-serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn serve_refuses_a_retention_path_where_nothing_is_mounted() {
    let dir = scratch("refuse");
    let retention = dir.join("retention");
    std::fs::create_dir(&retention).unwrap();
    let cfg = config(&dir, free_port(), &retention);
    let out = Command::new(env!("CARGO_BIN_EXE_mt-agent"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refuses to start") && err.contains("nothing is mounted"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn serve_on_a_mounted_volume_announces_readiness_and_answers() {
    // /dev/shm is a tmpfs mount of its own on Linux hosts and containers alike.
    let shm = std::path::Path::new("/dev/shm");
    let is_mount =
        std::fs::metadata(shm).unwrap().dev() != std::fs::metadata("/dev").unwrap().dev();
    assert!(is_mount, "this test needs /dev/shm to be a mount point");
    let dir = scratch("ready");
    let port = free_port();
    let cfg = config(&dir, port, shm);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mt-agent"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        format!("mt-agent: ready port={port} retention=/dev/shm")
    );
    let conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut hello = String::new();
    BufReader::new(conn).read_line(&mut hello).unwrap();
    assert!(hello.starts_with("mt-agent "), "{hello:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
