//! Hostile connections are contained: `serve` at a systemd service's default descriptor limit
//! (1024) takes 1,100 idle connections and 50 that trickle a byte every 20 s, all from one
//! address, while a real delta resync from another address goes through, and stays up with
//! its log barely grown; a peer trickling its handshake is closed at the handshake deadline;
//! a sender retrying a busy group is logged once, not per retry; out of descriptors, the
//! listener backs off and logs one line instead of spinning.

use crate::net_common;
use net_common::*;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const D0: u64 = 16 << 20;
const D1: u64 = 8 << 20;
/// The flood's address: not the sender's (127.0.0.1), as a flooding host is not the
/// process server.
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const IDLE: usize = 1100;
const TRICKLING: usize = 50;

/// Raises this process's soft descriptor limit to its hard limit (the flood holds more than
/// the usual 1024).
fn raise_own_nofile(need: u64) {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        l.rlim_cur = l.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
    }
    assert!(
        l.rlim_cur >= need,
        "this test holds {need} descriptors; the hard limit is {}",
        l.rlim_cur
    );
}

/// A TCP connection from `from` (std cannot bind before connecting).
fn connect_from(from: Ipv4Addr, to: SocketAddrV4) -> std::io::Result<TcpStream> {
    let addr = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a new descriptor, owned at once; the addresses are local structs of the right size.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let (src, dst) = (addr(SocketAddrV4::new(from, 0)), addr(to));
        if libc::bind(fd, (&src as *const libc::sockaddr_in).cast(), len) != 0
            || libc::connect(fd, (&dst as *const libc::sockaddr_in).cast(), len) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(TcpStream::from(owned))
    }
}

fn delta(rig: &Rig, sources: &[String]) -> (serde_json::Value, Duration) {
    let t = Instant::now();
    let out = rig.send(
        "sender",
        &["g", "--delta", "--disk", &sources[0], "--disk", &sources[1]],
    );
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "send --delta failed: {}\nserver log (tail):\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail(&rig.log())
    );
    (json(&out), took)
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn points(rig: &Rig) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&rig.mt_ok(&["points", "g", "--json"])).unwrap();
    v["points"].as_array().unwrap().clone()
}

fn assert_targets(rig: &Rig, src: &[Vec<u8>]) {
    for (name, data) in ["d0", "d1"].iter().zip(src) {
        let t = std::fs::read(rig.target(name)).unwrap();
        assert!(t == *data, "target {name} differs from its source");
    }
}

#[test]
fn a_flood_of_idle_and_trickling_connections_neither_stops_a_delta_resync_nor_fills_the_log() {
    raise_own_nofile((IDLE + TRICKLING + 100) as u64);
    let mut rig = Rig::new("flood");
    rig.nofile_limit = Some(1024);
    let mut rng = Rng::new(0x5eed_0f10);
    let mut src = vec![
        random_file(&rig.path("src-d0.img"), D0, &mut rng),
        random_file(&rig.path("src-d1.img"), D1, &mut rng),
    ];
    let sources = vec![
        format!("d0={}", rig.path("src-d0.img").display()),
        format!("d1={}", rig.path("src-d1.img").display()),
    ];
    rig.create_group("g", &[("d0", D0), ("d1", D1)]);
    rig.start_server();
    let pass = rig.path("passphrase").display().to_string();
    json(&rig.send(
        "sender",
        &[
            "g",
            "--full",
            "--passphrase-file",
            &pass,
            "--disk",
            &sources[0],
            "--disk",
            &sources[1],
        ],
    ));

    // The same amount of change with and without the flood, to compare the durations.
    let fraction = 0.15;
    change_blocks(&rig.path("src-d0.img"), &mut src[0], fraction, &mut rng);
    change_blocks(&rig.path("src-d1.img"), &mut src[1], fraction, &mut rng);
    let (_, quiet) = delta(&rig, &sources);
    assert_targets(&rig, &src);
    let c0 = change_blocks(&rig.path("src-d0.img"), &mut src[0], fraction, &mut rng);
    let c1 = change_blocks(&rig.path("src-d1.img"), &mut src[1], fraction, &mut rng);
    let before = points(&rig);
    let log_before = std::fs::metadata(rig.path("serve.log")).unwrap().len();

    let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, rig.port);
    let flood_start = Instant::now();
    let trickling: Vec<TcpStream> = (0..TRICKLING)
        .map(|_| connect_from(ATTACKER, to).unwrap())
        .collect();
    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|_| connect_from(ATTACKER, to).unwrap())
        .collect();
    eprintln!(
        "flood: {} connections open in {:.1?}",
        IDLE + TRICKLING,
        flood_start.elapsed()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // The beginning of a real hello, one byte at a time.
            let hello = b"MTRP\x01\x00\x02\x00\x20";
            let mut next = Instant::now();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    for mut s in &trickling {
                        // Most were closed by the master target: their writes fail.
                        let _ = s.write_all(&hello[i % hello.len()..][..1]);
                    }
                    i += 1;
                    next += Duration::from_secs(20);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let (r, flooded) = delta(&rig, &sources);
    assert_eq!(r["changed_bytes"].as_u64().unwrap(), c0 + c1, "{r}");
    println!(
        "send --delta of {} bytes: {quiet:.2?} without the flood, {flooded:.2?} with it",
        c0 + c1
    );
    assert_targets(&rig, &src);
    // The journal changed by what the send wrote only: one resync point, and it verifies.
    let after = points(&rig);
    assert_eq!(after.len(), before.len() + 1, "{before:?}\n{after:?}");
    assert_eq!(after[..before.len()], before[..]);
    assert_eq!(after[before.len()]["name"], "resync", "{after:?}");
    rig.mt_ok(&["verify", "g"]);

    // Still up, and answering, with the flood still held.
    let server = rig.server.as_mut().unwrap();
    assert!(
        server.try_wait().unwrap().is_none(),
        "serve exited: {}",
        tail(&rig.log())
    );
    let (r, _) = delta(&rig, &sources);
    assert_eq!(r["changed_bytes"].as_u64().unwrap(), 0, "{r}");
    let grown = std::fs::metadata(rig.path("serve.log")).unwrap().len() - log_before;
    assert!(
        grown < 1 << 20,
        "serve.log grew by {grown} bytes: {}",
        tail(&rig.log())
    );
    let log = rig.log();
    assert!(
        log.contains("handshakes in progress from this address"),
        "{}",
        tail(&log)
    );
    assert!(!log.contains("Too many open files"), "{}", tail(&log));
    stop.store(true, Ordering::Relaxed);
    trickler.join().unwrap();
    drop(idle);
}

#[test]
fn a_peer_trickling_its_handshake_is_closed_at_the_handshake_deadline() {
    let mut rig = Rig::new("trickle");
    rig.start_server();
    let mut s = TcpStream::connect(&rig.addr).unwrap();
    let start = Instant::now();
    let mut banner = String::new();
    BufReader::new(&s).read_line(&mut banner).unwrap();
    assert!(banner.starts_with("mt-agent "), "{banner:?}");
    // A valid hello and the start of a first handshake message, a byte every 2 s: every
    // read of the master target gets a byte well within any per-read timeout.
    let bytes = [b"MTRP\x01\x00\x02\x00\x20".as_slice(), &[0u8; 32]].concat();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut closed = None;
    for b in &bytes {
        if s.write_all(std::slice::from_ref(b)).is_err() {
            closed = Some(start.elapsed());
            break;
        }
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {
                closed = Some(start.elapsed());
                break;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Ok(_) | Err(_) => {
                closed = Some(start.elapsed());
                break;
            }
        }
        if start.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    let closed = closed.expect("the master target still holds the trickling handshake after 30 s");
    assert!(closed < Duration::from_secs(30), "closed after {closed:?}");
    println!("the trickling peer was closed after {closed:.1?}");
    let wait = Instant::now();
    while !rig.log().contains("handshake not finished within 10 s") {
        assert!(wait.elapsed() < Duration::from_secs(5), "{}", rig.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_sender_retrying_a_busy_group_is_logged_once_not_per_retry() {
    let mut rig = Rig::new("busy");
    let mut rng = Rng::new(0x5eed_0b05);
    random_file(&rig.path("src-d0.img"), 1 << 20, &mut rng);
    random_file(&rig.path("src-d1.img"), 1 << 20, &mut rng);
    rig.create_group("g", &[("d0", 1 << 20), ("d1", 1 << 20)]);
    rig.start_server();
    rig.enrol("sender");
    // Another holder of the group's lock, as a session that has not ended yet is.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(rig.path("ret/groups/g/lock"))
        .unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this test owns; released when it is closed.
    assert_eq!(
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let d0 = format!("d0={}", rig.path("src-d0.img").display());
    let d1 = format!("d1={}", rig.path("src-d1.img").display());
    let out = rig.send(
        "sender",
        &[
            "g",
            "--delta",
            "--retry-for",
            "3",
            "--disk",
            &d0,
            "--disk",
            &d1,
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The sender says the cause once, then how many attempts it made before giving up.
    assert_eq!(
        stderr.matches("reconnecting for up to").count(),
        1,
        "{stderr}"
    );
    let retries: u64 = stderr
        .split("gave up on ")
        .nth(1)
        .and_then(|t| t.split(" attempts").next())
        .and_then(|t| t.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no give-up message: {stderr}"));
    assert!(retries >= 2, "{stderr}");
    let log = rig.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot lock the group") && !l.contains("more refusal"))
        .collect();
    assert_eq!(lines.len(), 1, "{retries} retries:\n{log}");
    drop(lock);
}

#[test]
fn out_of_descriptors_the_listener_backs_off_and_logs_one_line_not_millions() {
    let mut rig = Rig::new("emfile");
    // Fewer descriptors than the handshake cap needs: accept itself fails with EMFILE.
    rig.nofile_limit = Some(64);
    let mut rng = Rng::new(0x5eed_0e4f);
    random_file(&rig.path("src-d0.img"), 1 << 20, &mut rng);
    random_file(&rig.path("src-d1.img"), 1 << 20, &mut rng);
    rig.create_group("g", &[("d0", 1 << 20), ("d1", 1 << 20)]);
    rig.start_server();
    rig.enrol("sender");
    let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, rig.port);
    // Ten addresses, eight each: within the per-address cap, beyond the descriptors.
    let conns: Vec<TcpStream> = (0..80u8)
        .map(|i| connect_from(Ipv4Addr::new(127, 0, 0, 2 + i % 10), to).unwrap())
        .collect();
    let emfile = |log: &str| {
        log.lines()
            .filter(|l| l.contains("Too many open files"))
            .count()
    };
    let wait = Instant::now();
    while emfile(&rig.log()) == 0 {
        assert!(
            wait.elapsed() < Duration::from_secs(5),
            "no accept error at 64 descriptors:\n{}",
            rig.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Out of descriptors for a while: the listener retries at most once a second by then.
    std::thread::sleep(Duration::from_secs(3));
    let log = rig.log();
    assert!(emfile(&log) <= 2, "{}", tail(&log));
    assert!(log.contains("accepting again in 50 ms"), "{}", tail(&log));
    // The handshakes end when their peers leave; then a sender gets in.
    drop(conns);
    let d0 = format!("d0={}", rig.path("src-d0.img").display());
    let d1 = format!("d1={}", rig.path("src-d1.img").display());
    json(&rig.send("sender", &["g", "--full", "--disk", &d0, "--disk", &d1]));
    let server = rig.server.as_mut().unwrap();
    assert!(server.try_wait().unwrap().is_none(), "{}", tail(&rig.log()));
    assert!(emfile(&rig.log()) <= 2, "{}", tail(&rig.log()));
}
