//! `mt-agent serve` run as the appliance runs it: it refuses a retention path that is a plain
//! directory (nothing mounted), and on a real, writable mount it announces readiness and answers
//! on its port, with its sizes in a unit that fits; `MT_AGENT_CONFIG` names its configuration.
//! Every path it uses (configuration, state, journals, the volume) is the test's own.

use crate::common;

use camino::Utf8Path;
use common::{serve_config, write_config, MT_AGENT};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `serve` with the configuration, server state and journals in `dir`.
fn serve(cmd: &mut Command, dir: &Utf8Path, config: &Utf8Path) {
    cmd.args(["serve", "--config", config.as_str()])
        .args(["--state", dir.join("state").as_str()])
        .args(["--retention", dir.join("journals").as_str()]);
}

#[test]
fn serve_refuses_a_retention_path_where_nothing_is_mounted() {
    let dir = testkit::scratch("serve-refuse");
    let retention = dir.join("retention");
    std::fs::create_dir(&retention).unwrap();
    let cfg = write_config(&dir, &serve_config(free_port(), &retention));
    let mut cmd = Command::new(MT_AGENT);
    serve(&mut cmd, &dir, &cfg);
    let out = testkit::run::output(&mut cmd);
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
    let dir = testkit::scratch("serve-ready");
    let volume = dir.join("volume");
    std::fs::create_dir(&volume).unwrap();
    let port = free_port();
    let cfg = write_config(&dir, &serve_config(port, &volume));
    let mut cmd = testkit::run::with_private_mount(&volume, MT_AGENT);
    serve(&mut cmd, &dir, &cfg);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.is_empty() {
        let out = child.wait_with_output().unwrap();
        panic!("serve ended: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(
        line.trim(),
        format!("mt-agent: ready port={port} retention={volume}")
    );
    let conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut hello = String::new();
    BufReader::new(conn).read_line(&mut hello).unwrap();
    assert!(hello.starts_with("mt-agent "), "{hello:?}");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    // Sizes in a unit that fits: the 16 MiB volume is not "0 GiB".
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(" MiB free)"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn serve_reads_the_configuration_named_by_mt_agent_config() {
    let dir = testkit::scratch("serve-env");
    let missing = dir.join("elsewhere.toml");
    let mut cmd = Command::new(MT_AGENT);
    cmd.arg("serve")
        .args(["--state", dir.join("state").as_str()])
        .env("MT_AGENT_CONFIG", &missing);
    let out = testkit::run::output(&mut cmd);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(missing.as_str()), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
