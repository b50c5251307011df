//! Who may write what: a sender allowed for one group cannot write another (its targets, its
//! journal and the retention volume stay byte-identical, and both ends name the key and the
//! group); enrolment grants only groups no other key holds; a revoked key is refused at its next
//! session and its live session ends; enrolment outside the window is refused with how to open
//! it, and `senders open` opens it while serve runs; a stream recorded for another group is
//! refused unless the override says so.

use crate::net_common;
use mt_agent::replication::frame::TagKind;
use net_common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::link::FaultyLink;

const SIZE: u64 = 1 << 20;

/// Every file under `paths` (files or directories, walked) with the hash of its contents.
fn fingerprint(paths: &[PathBuf]) -> BTreeMap<PathBuf, String> {
    fn walk(p: &Path, out: &mut BTreeMap<PathBuf, String>) {
        if p.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), out);
            }
        } else {
            let data = std::fs::read(p).unwrap();
            out.insert(p.to_owned(), blake3::hash(&data).to_hex().to_string());
        }
    }
    let mut out = BTreeMap::new();
    for p in paths {
        walk(p, &mut out);
    }
    out
}

/// Waits (at most 30 s) until serve's log has a line containing `what`: serve logs the end of
/// a session after the sender was told.
fn wait_for_log_line(rig: &Rig, what: &str) {
    let t0 = Instant::now();
    while !rig.log().lines().any(|l| l.contains(what)) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "serve logged no line with {what:?}:\n{}",
            rig.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (at most 30 s) until the session of `group` has released it (its journal closed):
/// serve logs the end, as an error too when the sender left before the last acknowledgement.
fn wait_for_session_end(rig: &Rig, group: &str) {
    let (ok, err) = (
        format!("session for group {group} ended"),
        format!("session ended with an error: group {group}:"),
    );
    let t0 = Instant::now();
    while !rig
        .log()
        .lines()
        .any(|l| l.contains(&ok) || l.contains(&err))
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", rig.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_sender_allowed_for_one_group_cannot_write_another_and_nothing_of_it_changes() {
    let mut rig = Rig::new("authz-groups");
    rig.create_group("a", &[("a0", SIZE)]);
    rig.create_group("b", &[("b0", SIZE)]);
    rig.start_server();
    let mut rng = Rng::new(0xa17);
    let (src_a, src_b) = (rig.path("src-a.img"), rig.path("src-b.img"));
    let data_a = random_file(&src_a, SIZE, &mut rng);
    random_file(&src_b, SIZE, &mut rng);

    // Enrolment asks; the master target grants what no other key holds.
    let out = rig.enrol_asking("sa", "passphrase", &["a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("groups granted: a"),
        "{}",
        stdout(&out)
    );
    let out = rig.enrol_asking("sb", "passphrase", &["a", "b"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (ka, kb) = (rig.sender_key("sa"), rig.sender_key("sb"));
    assert!(
        stdout(&out).contains("groups granted: b"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains(&format!("mt-agent senders allow {kb} --group a")),
        "{}",
        stdout(&out)
    );
    let list: serde_json::Value =
        serde_json::from_str(&rig.senders_ok(&["list", "--json"])).unwrap();
    let groups_of = |k: &str| {
        list["senders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == k)
            .unwrap()["groups"]
            .clone()
    };
    assert_eq!(groups_of(&ka), serde_json::json!(["a"]));
    assert_eq!(groups_of(&kb), serde_json::json!(["b"]));

    // b has a history written by its own sender.
    let disk_b = format!("b0={}", src_b.display());
    json(&rig.send("sb", &["b", "--full", "--disk", &disk_b]));
    wait_for_session_end(&rig, "b");
    let b_files = [rig.path("ret"), rig.target("b0")];
    let before = fingerprint(&b_files);

    // The sender of a tries to write b: refused before a byte is written, both ends say why.
    let out = rig.send("sa", &["b", "--full", "--disk", &disk_b]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("sender key {ka} may not write group b"))
            && err.contains(&format!("mt-agent senders allow {ka} --group b")),
        "{err}"
    );
    assert!(
        fingerprint(&b_files) == before,
        "a file of b or of the retention volume changed"
    );
    wait_for_log_line(&rig, &format!("sender key {ka} may not write group b"));

    // Its own group it writes; a prefix of the key names it to the operator.
    let r = json(&rig.send(
        "sa",
        &["a", "--full", "--disk", &format!("a0={}", src_a.display())],
    ));
    assert!(r["acked"].as_u64().unwrap() > 0);
    assert!(std::fs::read(rig.target("a0")).unwrap() == data_a);
    let out = rig.senders_ok(&["allow", &ka[..10], "--group", "b"]);
    assert!(
        out.contains(&format!("sender key {ka} may now write a, b")),
        "{out}"
    );
    let out = rig.senders(&["allow", "0000", "--group", "b"]);
    assert!(stderr(&out).contains("at least 8"), "{}", stderr(&out));
    json(&rig.send("sa", &["b", "--delta", "--disk", &disk_b]));
}

#[test]
fn a_revoked_key_is_refused_and_its_live_session_ends() {
    const BIG: u64 = 64 << 20;
    let mut rig = Rig::new("authz-revoke");
    rig.create_group("g", &[("d0", BIG)]);
    rig.start_server();
    let src = rig.path("src.img");
    random_file(&src, BIG, &mut Rng::new(0x7e0));
    // A narrow link: the full copy takes about a minute, long enough to revoke it midway.
    let link = FaultyLink::start(rig.addr.parse().unwrap());
    link.set_bandwidth(Some(1 << 20));
    let (pass, state) = (rig.path("passphrase"), rig.path("sender"));
    let out = rig.mt(&[
        "enrol",
        "--to",
        &link.target(),
        "--passphrase-file",
        pass.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--group",
        "g",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key = rig.sender_key("sender");
    let send_args = |extra: &[&str]| {
        let mut a = vec![
            "send".to_string(),
            "g".into(),
            "--to".into(),
            link.target(),
            "--state".into(),
            state.display().to_string(),
            "--retry-for".into(),
            "20s".into(),
            "--disk".into(),
            format!("d0={}", src.display()),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let mut child = Command::new(BIN)
        .args(send_args(&["--full"]))
        .env("MT_AGENT_CONFIG", &rig.config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while link.bytes_up() < 4 << 20 {
        assert!(child.try_wait().unwrap().is_none(), "{}", rig.log());
        assert!(t0.elapsed() < Duration::from_secs(60), "{}", rig.log());
        std::thread::sleep(Duration::from_millis(20));
    }

    let out = rig.senders_ok(&["revoke", &key[..12], "--group", "g"]);
    assert!(out.contains("may no longer write g"), "{out}");
    // The session ends soon (serve looks about once a second); the sender's reconnect is
    // refused for good.
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the send goes on after the revocation:\n{}",
            rig.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("sender key {key} may not write group g")),
        "{err}"
    );
    wait_for_log_line(
        &rig,
        &format!("sender key {key} may no longer write group g: its session ends"),
    );
    assert!(
        std::fs::read(rig.target("d0")).unwrap() != std::fs::read(&src).unwrap(),
        "the copy was not cut short"
    );

    // Removed entirely, the key is refused at the handshake of its next session.
    let out = rig.senders_ok(&["revoke", &key]);
    assert!(out.contains(&format!("removed sender key {key}")), "{out}");
    let out = rig.mt(&send_args(&["--delta"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(
        !out.status.success() && stderr(&out).contains("unknown sender key"),
        "{}",
        stderr(&out)
    );
    assert!(rig
        .senders_ok(&["list"])
        .contains("no sender key is enrolled"));
}

#[test]
fn enrolment_outside_the_window_is_refused_until_senders_open_opens_it() {
    let mut rig = Rig::new("authz-window");
    rig.serve_args = vec!["--enrol-for".into(), "0".into()];
    rig.create_group("g", &[("d0", SIZE)]);
    rig.start_server();
    assert!(rig.log().contains("enrolment closed"), "{}", rig.log());
    let list: serde_json::Value =
        serde_json::from_str(&rig.senders_ok(&["list", "--json"])).unwrap();
    assert_eq!(list["enrolment"]["open"], false);

    let out = rig.enrol_asking("s", "passphrase", &["g"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("enrolment is closed on this master target")
            && err.contains("mt-agent senders open"),
        "{err}"
    );
    assert!(!rig.path("s/pinned").exists());

    // Opened while serve runs: the next enrolment goes through.
    let out = rig.senders_ok(&["open", "--for", "10m"]);
    assert!(out.contains("enrolment open until"), "{out}");
    let out = rig.enrol_asking("s", "passphrase", &["g"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: serde_json::Value =
        serde_json::from_str(&rig.senders_ok(&["list", "--json"])).unwrap();
    assert_eq!(list["enrolment"]["open"], true);
    assert!(list["enrolment"]["until"].is_string(), "{list}");
    let s = &list["senders"][0];
    assert_eq!(s["key"], rig.sender_key("s").as_str());
    assert!(
        s["enrolled_from"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{list}"
    );
    let text = rig.senders_ok(&["list"]);
    assert!(text.contains("enrolment: open until"), "{text}");

    // Closed again: refused again.
    let out = rig.senders_ok(&["close"]);
    assert!(out.contains("enrolment closed (it was open until"), "{out}");
    let out = rig.enrol_asking("t", "passphrase", &["g"]);
    assert!(
        !out.status.success() && stderr(&out).contains("enrolment is closed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_stream_recorded_for_another_group_is_refused_unless_overridden() {
    let mut rig = Rig::new("authz-stream");
    rig.create_group("g", &[("d0", SIZE)]);
    let h0 = rig.path("h-d0.img");
    std::fs::File::create(&h0).unwrap().set_len(SIZE).unwrap();
    rig.mt_ok(&[
        "group",
        "create",
        "h",
        "--disk",
        &format!("d0={}", h0.display()),
    ]);
    rig.start_server();
    rig.enrol("sender");
    let mut src = vec![vec![0u8; SIZE as usize]];
    let (bytes, expected) = tagged_stream(&mut src, &mut Rng::new(0x5742), (2, 4, 2), "t", |_| {
        TagKind::Crash
    });
    let stream = rig.path("g.stream");
    std::fs::write(&stream, bytes).unwrap();
    let stream = stream.to_str().unwrap();

    let before = fingerprint(&[rig.path("ret"), h0.clone()]);
    let out = rig.send("sender", &["h", "--stream", stream]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("recorded for group g, not h") && err.contains("--stream-group-override"),
        "{err}"
    );
    assert!(fingerprint(&[rig.path("ret"), h0.clone()]) == before);

    json(&rig.send(
        "sender",
        &["h", "--stream", stream, "--stream-group-override"],
    ));
    wait_for_session_end(&rig, "h");
    let points: serde_json::Value =
        serde_json::from_str(&rig.mt_ok(&["points", "h", "--json"])).unwrap();
    for (name, _) in &expected {
        assert!(
            points["points"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == name.as_str()),
            "{name}: {points}"
        );
    }
    assert!(std::fs::read(&h0).unwrap() == src[0]);
}
