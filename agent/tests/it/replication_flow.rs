//! Flow control as an operator meets it: with a retention budget nearly used, the master target
//! stops granting credit, so the sender stops (its memory and the journal stay bounded) and the
//! log says why; after the agent restarts with room, the sender resumes on its own from the
//! last acknowledged LSN and the copy completes byte-identical. The interrupted full copy goes
//! on after the last block the master target acknowledged, so what was already copied is
//! neither read nor sent again.

use crate::net_common;
use net_common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const SIZE: u64 = 64 << 20;

#[test]
fn credit_stops_when_the_retention_budget_is_nearly_used_and_the_send_resumes_after_a_restart() {
    let mut rig = Rig::new("flow");
    rig.create_group("g", &[("d0", SIZE)]);
    // Less than the receiver's reserve (credit window + 64 MiB): credit stops at the first check.
    rig.serve_args = vec!["--retention-budget".into(), "90MiB".into()];
    rig.start_server();
    rig.enrol("sender");
    let src = rig.path("src.img");
    let data = random_file(&src, SIZE, &mut Rng::new(0xf10));
    let mut sender = Command::new(BIN)
        .args([
            "send",
            "g",
            "--full",
            "--to",
            &rig.addr,
            "--retry-for",
            "120",
            "--json",
            "--state",
        ])
        .arg(rig.path("sender"))
        .arg(format!("--disk=d0={}", src.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut waited = 0;
    while !rig.log().contains("credit withheld") {
        assert!(waited < 300, "no credit stop logged:\n{}", rig.log());
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        sender.try_wait().unwrap().is_none(),
        "the sender finished without credit"
    );
    // At most the first window plus what was returned before the first room check arrived.
    let target = std::fs::read(rig.target("d0")).unwrap();
    assert!(
        target[40 << 20..].iter().all(|b| *b == 0),
        "data beyond the granted credit was written"
    );

    rig.kill_server();
    rig.serve_args.clear();
    rig.start_server();
    let out = sender.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the sender did not resume:\n{stderr}\n{}",
        rig.log()
    );
    assert!(stderr.contains("withholds credit"), "{stderr}");
    assert!(
        stderr.contains("resuming the full resync at disk 0 byte"),
        "{stderr}"
    );
    let report = json(&out);
    let sent = report["changed_bytes"].as_u64().unwrap();
    let resumed = report["resumed_at_bytes"].as_u64().unwrap();
    // The first attempt had at least one credit window (32 MiB) acknowledged; what travels
    // twice is at most what was in flight and not acknowledged when serve stopped.
    assert!(resumed >= 16 << 20, "resumed at byte {resumed}\n{stderr}");
    assert!(
        sent - SIZE <= 32 << 20 && sent >= SIZE,
        "{sent} bytes sent for a {SIZE}-byte disk resumed at {resumed}\n{stderr}"
    );
    assert!(
        std::fs::read(rig.target("d0")).unwrap() == data,
        "target differs after the resume"
    );
}
