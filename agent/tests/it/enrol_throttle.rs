//! What guessing the passphrase costs, with the real `mt-agent serve`: each failed enrolment
//! delays the next from the same address by the configured schedule, parallel connections get
//! no more guesses evaluated than one, the right passphrase still enrols (`mt-agent enrol`
//! waits out a stated delay), `status --json` counts the refusals, and a changed passphrase
//! file takes effect at the next enrolment without a restart.

use crate::net_common;
use mt_agent::replication::net::auth::SenderAuth;
use mt_agent::replication::net::enrol_gate::stated_delay;
use mt_agent::replication::net::transport::{
    read_record, read_status, write_record, ENROL_PATTERN, HELLO_MAGIC, MODE_ENROL,
};
use mt_agent::replication::net::PROTOCOL_VERSION;
use net_common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One enrolment guess as a guesser makes it, with a pre-shared key no passphrase is known to
/// derive to (so no key derivation on the guesser's side): the master target's refusal, or
/// `None` if it closed the connection before saying one (over the handshake caps).
fn guess(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => {}
            _ => return None,
        }
    }
    let mut hello = HELLO_MAGIC.to_vec();
    hello.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    hello.push(MODE_ENROL);
    s.write_all(&hello).ok()?;
    // The enrolment window's answer comes first: a closed window is a refusal in words too.
    if let Some(why) = read_status(&mut s).ok()? {
        return Some(why);
    }
    let offer = read_record(&mut s).ok()?;
    let mut prologue = hello;
    prologue.extend_from_slice(&offer);
    let params: snow::params::NoiseParams = ENROL_PATTERN.parse().unwrap();
    let key = snow::Builder::new(params.clone())
        .generate_keypair()
        .unwrap();
    let mut hs = snow::Builder::new(params)
        .local_private_key(&key.private)
        .and_then(|b| b.psk(3, &[0x5a; 32]))
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_initiator())
        .unwrap();
    let mut buf = vec![0u8; 65535];
    let n = hs.write_message(&[], &mut buf).unwrap();
    write_record(&mut s, &buf[..n]).ok()?;
    let m2 = read_record(&mut s).ok()?;
    hs.read_message(&m2, &mut buf).unwrap();
    let n = hs.write_message(&[], &mut buf).unwrap();
    write_record(&mut s, &buf[..n]).ok()?;
    Some(
        read_status(&mut s)
            .ok()?
            .expect("a wrong key must not be accepted"),
    )
}

/// The wait after the n-th consecutive failure, written out here apart from the agent's code:
/// `min(base × 2^(n-1), cap)`.
fn schedule(base: Duration, cap: Duration, n: u32) -> Duration {
    (base * 2u32.pow((n - 1).min(20))).min(cap)
}

/// Serve's counts as `status --json` shows them, once they satisfy `done` (they are written at
/// most once a second).
fn counts(rig: &Rig, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let state = rig.path("server-state").display().to_string();
    let started = Instant::now();
    loop {
        let st = json(&rig.mt(&["status", "--json", "--state", &state]));
        let c = st["handshakes"].clone();
        if done(&c) || started.elapsed() > Duration::from_secs(10) {
            return c;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn n(c: &serde_json::Value, field: &str) -> u64 {
    c[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {c}"))
}

#[test]
fn a_hundred_wrong_passphrases_take_the_backoff_and_the_right_one_still_enrols() {
    let (base, cap) = (Duration::from_millis(20), Duration::from_millis(100));
    let mut rig = Rig::new("throttle-hundred");
    rig.serve_args = ["--enrol-backoff", "20ms", "--enrol-backoff-max", "100ms"]
        .map(String::from)
        .to_vec();
    rig.start_server();
    let started = Instant::now();
    let mut delayed = 0u64;
    for _ in 0..100 {
        loop {
            let why = guess(&rig.addr).expect("a refusal in words");
            if why.contains("wrong passphrase") {
                break;
            }
            assert!(why.starts_with("enrolment delayed after "), "{why}");
            let wait = stated_delay(&why).unwrap_or_else(|| panic!("no wait stated: {why}"));
            assert!(wait <= cap, "{why}");
            delayed += 1;
            std::thread::sleep(wait);
        }
    }
    let elapsed = started.elapsed();
    // Before the k-th evaluated guess (k ≥ 2) the k-1-th failure's delay has passed.
    let bound: Duration = (1..100).map(|n| schedule(base, cap, n)).sum();
    assert!(
        elapsed >= bound,
        "100 wrong guesses took {elapsed:?}, less than the schedule's {bound:?}"
    );

    // Sessions are not enrolments: the right passphrase enrols and its session opens at once.
    rig.enrol("sender");
    let auth = SenderAuth::load(camino::Utf8Path::from_path(&rig.path("sender")).unwrap()).unwrap();
    drop(
        auth.session(&rig.addr)
            .expect("an enrolled sender's session"),
    );

    let c = counts(&rig, |c| {
        c["wrong_passphrase"] == 100 && c["enrolled"] == 1 && c["delayed"].as_u64() >= Some(delayed)
    });
    assert_eq!(n(&c, "wrong_passphrase"), 100, "{c}");
    assert_eq!(n(&c, "enrolled"), 1, "{c}");
    // The sender's own enrolment may have been delayed once too.
    assert!((delayed..=delayed + 1).contains(&n(&c, "delayed")), "{c}");
    assert_eq!(n(&c, "unknown_key"), 0, "{c}");
    assert!(c["since"].is_string(), "{c}");
    let state = rig.path("server-state").display().to_string();
    let human = rig.mt_ok(&["status", "--state", &state]);
    assert!(
        human.contains("100 refused for a wrong passphrase"),
        "{human}"
    );
}

#[test]
fn parallel_guessers_from_one_address_get_no_more_guesses_evaluated_than_one() {
    let (base, cap) = (Duration::from_millis(50), Duration::from_millis(200));
    let mut rig = Rig::new("throttle-parallel");
    rig.serve_args = ["--enrol-backoff", "50ms", "--enrol-backoff-max", "200ms"]
        .map(String::from)
        .to_vec();
    rig.start_server();
    let started = Instant::now();
    let run_for = Duration::from_secs(2);
    let attempts: u64 = std::thread::scope(|s| {
        let guessers: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let mut made = 0u64;
                    while started.elapsed() < run_for {
                        // A guesser does not wait: it asks again at once.
                        let _ = guess(&rig.addr);
                        made += 1;
                    }
                    made
                })
            })
            .collect();
        guessers.into_iter().map(|g| g.join().unwrap()).sum()
    });
    let elapsed = started.elapsed();
    // Every connection is counted once, whatever became of it.
    let c = counts(&rig, |c| {
        ["wrong_passphrase", "delayed", "other"]
            .iter()
            .map(|f| c[f].as_u64().unwrap_or(0))
            .sum::<u64>()
            >= attempts
    });
    let evaluated = n(&c, "wrong_passphrase");
    // The most evaluations the schedule allows within the time the guessers ran.
    let mut allowed = 1u32;
    let mut waited = Duration::ZERO;
    loop {
        waited += schedule(base, cap, allowed);
        if waited > elapsed {
            break;
        }
        allowed += 1;
    }
    assert!(
        (1..=u64::from(allowed)).contains(&evaluated),
        "{attempts} attempts in {elapsed:?}: {evaluated} evaluated, the schedule allows {allowed}: {c}"
    );
    assert!(
        n(&c, "delayed") + n(&c, "other") + evaluated >= attempts,
        "{attempts} attempts: {c}"
    );
    assert!(
        n(&c, "delayed") > u64::from(allowed),
        "the guessers were barely refused: {c}"
    );
}

#[test]
fn a_changed_passphrase_file_takes_effect_at_the_next_enrolment() {
    let mut rig = Rig::new("throttle-reload");
    rig.serve_args = ["--enrol-backoff", "3s"].map(String::from).to_vec();
    rig.start_server();
    rig.enrol("a");
    let a = SenderAuth::load(camino::Utf8Path::from_path(&rig.path("a")).unwrap()).unwrap();

    // The operator changes the passphrase; serve keeps running.
    let new = "a passphrase chosen later";
    write_secret(&rig.path("passphrase"), new);
    write_secret(&rig.path("old"), PASSPHRASE);
    write_secret(&rig.path("new"), new);
    let out = rig.enrol_with("b", "old");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("wrong passphrase"),
        "the old passphrase still enrols: {err}"
    );
    // Enrolment failures never delay an enrolled sender's session.
    drop(
        a.session(&rig.addr)
            .expect("a session while enrolment is delayed"),
    );
    // The new one enrols: `mt-agent enrol` is told to wait after the failure, says so, waits.
    let out = rig.enrol_with("b", "new");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}\n{}", rig.log());
    assert!(
        err.contains("enrolment delayed after 1 failed attempt from this address: try again in")
            && err.contains("then trying again"),
        "{err}"
    );

    // A passphrase file that became bad closes enrolment, with the reason in the log; the
    // senders already enrolled go on.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        rig.path("passphrase"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = rig.enrol_with("c", "new");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no usable passphrase; enrolment is closed"),
        "{err}"
    );
    assert!(rig.log().contains("is readable by others"), "{}", rig.log());
    drop(
        a.session(&rig.addr)
            .expect("a session with the passphrase file bad"),
    );
    // Fixed again: enrolment opens without a restart.
    std::fs::set_permissions(
        rig.path("passphrase"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let out = rig.enrol_with("c", "new");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_stopped_by_sigterm_writes_the_counts_and_dies_of_the_signal() {
    let mut rig = Rig::new("throttle-stop");
    rig.start_server();
    let why = guess(&rig.addr).expect("a refusal in words");
    assert!(why.contains("wrong passphrase"), "{why}");
    // Serve counts the refusal before it logs it, and the sender may hear it before either:
    // wait for the line, then stop serve at once, before the once-a-second write sees it.
    let logged = Instant::now();
    while !rig.log().contains("wrong passphrase") {
        assert!(logged.elapsed() < Duration::from_secs(10), "{}", rig.log());
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut serve = rig.server.take().unwrap();
    // SAFETY: a signal to the child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) }, 0);
    let status = serve.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    let file = rig.path("server-state").join("handshake-counts.json");
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(n(&c, "wrong_passphrase"), 1, "{c}");
}
