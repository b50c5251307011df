//! `mt-agent serve`: loads the configuration, refuses to start unless the retention volume
//! passes its checks and its own disks are the ones first boot recorded, holds the volume's lock,
//! listens on the configured port and announces readiness on one line that tools (the boot test,
//! an operator watching the console) wait for, then accepts replication sessions and enrolments
//! ([`crate::replication::net`]), one thread per connection so a misbehaving peer only ends its own session.
//! What an unauthenticated peer can cost is bounded here: handshakes in progress are capped
//! (`admission`), a connection over the cap is closed before a thread is started for it, accept
//! errors back off, and refusals are logged at a bounded rate (`refusal_log`). Failed
//! enrolments delay later ones (`throttle`), and refusals are counted for `status`
//! (`handshake_counts`). The handshake's own deadline is the protocol's
//! ([`crate::replication::net::auth`]). At start it opens the enrolment window for
//! `--enrol-for`; while it runs it watches the authorised senders and ends the sessions of keys
//! no longer allowed their group.

mod admission;
pub mod handshake_counts;
pub mod refusal_log;
pub mod throttle;

use crate::config::AgentConfig;
use crate::replication::journal::clock::{Clock, SystemClock};
use crate::replication::net::auth::{hex, Accepted, ServerAuth};
use crate::replication::net::enrol_gate::refusal_kind;
use crate::replication::net::enrol_window::EnrolmentWindow;
use crate::replication::net::sessions::Sessions;
use admission::{HandshakeSlot, HandshakeSlots};
use anyhow::{Context, Result};
use handshake_counts::{HandshakeCounter, Outcome};
use mt_contract::units::ByteSize;
use refusal_log::RefusalLog;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

/// Unauthenticated handshakes in progress at once, all peers together. Each holds a thread and
/// two descriptors for at most the handshake deadline (10 s). A master target serves a few dozen
/// groups, one connection each, and a handshake takes a few round trips, so 64 lets all of them
/// reconnect at once, while a flood holds at most 64 threads and 128 descriptors: an eighth of
/// the 1024 a service gets by default, far below the unit's `LimitNOFILE`.
pub const MAX_HANDSHAKES: usize = 64;
/// Handshakes in progress from one address: a process server reconnecting its groups after an
/// outage gets 8 at a time (the rest retry), and one flooding address takes at most an eighth
/// of [`MAX_HANDSHAKES`], so it cannot lock out the other senders.
pub const MAX_HANDSHAKES_PER_ADDR: usize = 8;
/// After an accept error that a retry cannot fix at once (out of descriptors or memory), the
/// listener waits this long, doubling up to [`ACCEPT_BACKOFF_MAX`], and starts again from here
/// after the next accepted connection: at most 20 wake-ups a second instead of a busy loop, and
/// a descriptor freed by a finished session is used within a second.
pub const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(50);
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Refusals are logged at most [`LOG_LINES_PER_INTERVAL`] lines per interval (each reason from
/// one address once), then one summary line: about 6 lines per 10 s under any flood, some
/// 15 MiB a day at worst, which the el6 log rotation and journald both absorb, while the first
/// refusals of an incident are still there in full.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
pub const LOG_LINES_PER_INTERVAL: usize = 5;
/// How often serve looks whether `authorised-senders` changed (its inode, time and size): a
/// revocation ends the sessions it concerns about this long after `mt-agent senders revoke`.
pub const SENDERS_WATCH_EVERY: Duration = Duration::from_secs(1);

/// The prefix of the readiness line (a guest fact the boot test waits for).
pub use mt_contract::guest::READY_PREFIX;

pub fn readiness_line(cfg: &AgentConfig) -> String {
    mt_contract::guest::readiness_line(cfg.port, cfg.retention_mount.as_str())
}

/// Where and how `serve` runs; the defaults are the appliance's.
pub struct ServeOptions {
    pub config: camino::Utf8PathBuf,
    /// Listen here instead of every address on the configured port.
    pub listen: Option<SocketAddr>,
    /// The journals' directory [default: the configuration's retention mount, which is checked].
    pub retention: Option<camino::Utf8PathBuf>,
    pub retention_budget: Option<u64>,
    /// Group-commit size of every session's journal (bytes made durable per flush).
    pub batch_bytes: u64,
    /// Keys and authorised senders.
    pub state: camino::Utf8PathBuf,
    pub passphrase_file: camino::Utf8PathBuf,
    /// A session that hears nothing for this long ends and releases its group.
    pub idle_timeout: std::time::Duration,
    /// A frame whose source time is further ahead of this machine's clock is refused
    /// [default: the journal policy's].
    pub max_clock_skew: Option<std::time::Duration>,
    /// The delays after failed enrolments.
    pub enrol_backoff: throttle::Backoff,
    /// Enrolment is open for this long after the start (`None`: with no end; zero: closed).
    pub enrol_for: Option<Duration>,
}

fn log(line: &str) {
    eprintln!("mt-agent: {line}");
}

/// Runs until the process is stopped.
pub fn run(opts: &ServeOptions) -> Result<()> {
    let mut cfg = crate::config::load(&opts.config)?;
    crate::guest::disks::verify_identity(&crate::guest::disks::SystemPaths::default(), &cfg)
        .context("mt-agent refuses to start")?;
    let volume = crate::guest::retention::check(&cfg.retention_mount)
        .context("mt-agent refuses to start")?;
    // Held while serving: check-retention and a second agent see the volume as taken.
    let _lock = crate::guest::retention::lock(&volume.path)
        .map_err(anyhow::Error::msg)
        .context("mt-agent refuses to start")?;
    let addr = opts
        .listen
        .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, cfg.port)));
    let listener = TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} (agent.toml: port, or --listen)"))?;
    cfg.port = listener.local_addr()?.port();
    let auth = Arc::new(
        ServerAuth::load(&opts.state, &opts.passphrase_file)?
            .with_enrol_gate(Arc::new(throttle::EnrolThrottle::new(opts.enrol_backoff))),
    );
    let counts = Arc::new(HandshakeCounter::new(&opts.state));
    // Before any other thread is started: they inherit the blocked signals.
    write_counts_when_stopped(&counts);
    let root = opts
        .retention
        .clone()
        .unwrap_or_else(|| cfg.retention_mount.clone());
    let mut vol = crate::replication::local::retention_volume(
        &cfg,
        root,
        opts.retention_budget,
        opts.batch_bytes,
    );
    if let Some(skew) = opts.max_clock_skew {
        vol.policy.max_clock_skew_secs = i64::try_from(skew.as_secs()).unwrap_or(i64::MAX);
    }
    log(&format!(
        "retention volume {} ({}, {} free)",
        volume.path,
        ByteSize(volume.capacity_bytes).approx(),
        ByteSize(volume.free_bytes).approx()
    ));
    log(&format!("master target key {}", hex(&auth.public_key())));
    let window = EnrolmentWindow::opened_for(opts.enrol_for, SystemClock.now());
    window.store(&opts.state)?;
    log(&match window {
        EnrolmentWindow::Closed => "enrolment closed (mt-agent senders open opens it)".to_owned(),
        w => format!("enrolment {w} (mt-agent senders close ends it)"),
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", readiness_line(&cfg))?;
    out.flush()?;
    drop(out);
    let sessions = Arc::new(Sessions::new(opts.idle_timeout));
    let (watched, watching) = (auth.clone(), sessions.clone());
    std::thread::Builder::new()
        .name("senders-watch".into())
        .spawn(move || watch_senders(&watched, &watching))
        .context("cannot start the watch of the authorised senders")?;
    write_counts_every_second(&counts);
    let served = accept_loop(&listener, &auth, &vol, &sessions, &counts);
    if let Err(e) = counts.flush() {
        log(&format!("cannot write the handshake counts: {e:#}"));
    }
    served
}

/// Keeps `status`'s counts at most [`handshake_counts::WRITE_EVERY`] behind; a failed write is
/// logged once until one succeeds again.
fn write_counts_every_second(counts: &Arc<HandshakeCounter>) {
    let counts = counts.clone();
    let started = std::thread::Builder::new()
        .name("handshake-counts".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                match counts.flush() {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        log(&format!("cannot write the handshake counts: {e:#}"));
                    }
                    Err(_) => {}
                }
                std::thread::sleep(handshake_counts::WRITE_EVERY);
            }
        });
    if let Err(e) = started {
        log(&format!("cannot start the handshake counts' writer: {e}"));
    }
}

/// Writes the counts when serve is told to stop (SIGTERM from the service manager, SIGINT from a
/// terminal), then dies of that signal as it did before: the signals are blocked in every thread
/// and one thread waits for them. Must be called before any other thread exists.
fn write_counts_when_stopped(counts: &Arc<HandshakeCounter>) {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut stop: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `stop` is a valid sigset_t; blocking signals has no other effect on memory.
    let blocked = unsafe {
        libc::sigemptyset(&mut stop);
        libc::sigaddset(&mut stop, libc::SIGTERM);
        libc::sigaddset(&mut stop, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &stop, std::ptr::null_mut()) == 0
    };
    if !blocked {
        log("cannot block SIGTERM: the handshake counts are written once a second only");
        return;
    }
    let counts = counts.clone();
    let started = std::thread::Builder::new()
        .name("stop-signal".into())
        .spawn(move || {
            let mut signal: libc::c_int = 0;
            // SAFETY: `stop` and `signal` are valid for the call.
            if unsafe { libc::sigwait(&stop, &mut signal) } != 0 {
                return;
            }
            if let Err(e) = counts.flush() {
                log(&format!("cannot write the handshake counts: {e:#}"));
            }
            // SAFETY: unblocking in this thread and raising delivers the signal here, and its
            // default action ends the process, as if it had never been blocked.
            unsafe {
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &stop, std::ptr::null_mut());
                libc::raise(signal);
            }
        });
    if let Err(e) = started {
        log(&format!("cannot start the stop-signal thread: {e}"));
        // SAFETY: as above; without the thread the signals must end serve as before.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &stop, std::ptr::null_mut()) };
    }
}

/// Reads `authorised-senders` again whenever it changes and ends the sessions of keys that
/// lost their group (a revocation), one log line each; an unreadable file is logged once.
fn watch_senders(auth: &ServerAuth, sessions: &Sessions) {
    let mut seen = 0;
    loop {
        std::thread::sleep(SENDERS_WATCH_EVERY);
        let senders = auth.senders();
        senders.refresh();
        let (generation, error) = senders.generation();
        if generation == seen {
            continue;
        }
        seen = generation;
        if let Some(e) = error {
            log(&e);
            continue;
        }
        let now = senders.snapshot();
        let ended = sessions.stop_unless(
            |key, group| now.may_write(key, group),
            |key, group| {
                format!(
                    "sender key {} may no longer write group {group} (mt-agent senders revoke)",
                    hex(key)
                )
            },
        );
        for e in ended {
            log(&format!(
                "{}: sender key {} may no longer write group {}: its session ends",
                e.peer,
                hex(&e.key),
                e.group
            ));
        }
    }
}

/// The bounded logs: unauthenticated refusals (and accept errors) apart from the errors of
/// authenticated sessions, so a flood never hides why a real session ended; and the counts.
struct ServeLogs {
    handshakes: RefusalLog,
    sessions: RefusalLog,
    counts: Arc<HandshakeCounter>,
}

fn accept_loop(
    listener: &TcpListener,
    auth: &Arc<ServerAuth>,
    vol: &crate::replication::journal::RetentionVolume,
    sessions: &Arc<Sessions>,
    counts: &Arc<HandshakeCounter>,
) -> Result<()> {
    let slots = HandshakeSlots::new(MAX_HANDSHAKES, MAX_HANDSHAKES_PER_ADDR);
    let logs = Arc::new(ServeLogs {
        handshakes: RefusalLog::new(LOG_INTERVAL, LOG_LINES_PER_INTERVAL, log),
        sessions: RefusalLog::new(LOG_INTERVAL, LOG_LINES_PER_INTERVAL, log),
        counts: counts.clone(),
    });
    let ticker = logs.clone();
    // Summarises an interval even when nothing follows it; without it the summary comes with
    // the next refusal.
    if let Err(e) = std::thread::Builder::new()
        .name("refusal-log".into())
        .spawn(move || loop {
            std::thread::sleep(LOG_INTERVAL);
            ticker.handshakes.roll();
            ticker.sessions.roll();
        })
    {
        log(&format!("cannot start the refusal log's timer: {e}"));
    }
    let mut backoff = ACCEPT_BACKOFF_FIRST;
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                let pause = accept_pause(&e);
                let why = format!("accept failed: {e}");
                let wait = pause.then_some(backoff);
                logs.handshakes.note("the listener", &why, || match wait {
                    Some(d) => format!("{why}; accepting again in {} ms", d.as_millis()),
                    None => why.clone(),
                });
                if let Some(d) = wait {
                    std::thread::sleep(d);
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
                continue;
            }
        };
        backoff = ACCEPT_BACKOFF_FIRST;
        let source = peer.ip().to_string();
        let slot = match slots.claim(peer.ip()) {
            Ok(s) => s,
            Err(why) => {
                drop(stream);
                logs.counts.note(Outcome::Refused(None));
                logs.handshakes
                    .note(&source, &why, || format!("{peer}: {why}"));
                continue;
            }
        };
        let (auth, vol, thread_logs) = (auth.clone(), vol.clone(), logs.clone());
        let sessions = sessions.clone();
        let started = std::thread::Builder::new()
            .name(format!("conn {peer}"))
            .spawn(move || serve_connection(stream, slot, &auth, &vol, &sessions, &thread_logs));
        // On failure the closure, and with it the connection and its slot, is dropped.
        if let Err(e) = started {
            logs.counts.note(Outcome::Refused(None));
            let why = format!("refused: cannot start a thread for the connection: {e}");
            logs.handshakes
                .note(&source, &why, || format!("{peer}: {why}"));
        }
    }
}

/// Whether an accept error calls for a pause: a missing descriptor or buffer does not come
/// back by retrying at once. A connection the peer aborted before it was accepted, or an
/// interrupted call, is retried at once. Any other error pauses too, so none can spin.
fn accept_pause(e: &std::io::Error) -> bool {
    !matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EAGAIN)
    )
}

fn serve_connection(
    stream: std::net::TcpStream,
    slot: HandshakeSlot,
    auth: &ServerAuth,
    vol: &crate::replication::journal::RetentionVolume,
    sessions: &Sessions,
    logs: &ServeLogs,
) {
    let (peer, source) = match stream.peer_addr() {
        Ok(a) => (a.to_string(), a.ip().to_string()),
        Err(_) => ("?".into(), "?".into()),
    };
    let accepted = auth.accept(stream);
    // The handshake is over either way: its slot is free for the next peer.
    drop(slot);
    logs.counts.note(match &accepted {
        Err(e) => Outcome::Refused(refusal_kind(e)),
        Ok(Accepted::Enrolled(..)) => Outcome::Enrolled,
        Ok(Accepted::Session(_)) => Outcome::Session,
    });
    match accepted {
        Err(e) => {
            let why = format!("refused: {e:#}");
            logs.handshakes
                .note(&source, &why, || format!("{peer}: {why}"));
        }
        Ok(Accepted::Enrolled(key, grant)) => {
            let mut line = format!("{peer}: enrolled sender key {}", hex(&key));
            if !grant.granted.is_empty() {
                line.push_str(&format!("; granted groups {}", grant.granted.join(", ")));
            }
            if !grant.withheld.is_empty() {
                line.push_str(&format!(
                    "; not granted, another key is allowed for them: {} (mt-agent senders allow decides)",
                    grant.withheld.join(", ")
                ));
            }
            log(&line);
        }
        Ok(Accepted::Session(ch)) => {
            let key = hex(&ch.remote_key[..4]);
            let plog = |l: &str| log(&format!("{peer}: {l}"));
            match crate::replication::net::receiver::run_session(
                *ch,
                vol,
                auth.senders(),
                sessions,
                &peer,
                &plog,
            ) {
                Ok(s) => log(&format!(
                    "{peer} (sender {key}…): session for group {} ended; {} messages, acknowledged through LSN {}{}",
                    s.group, s.frames, s.acked, s.resync
                )),
                // A sender retrying a busy group gets the same error each time: printed once
                // per interval (same reason, same address), the rest counted.
                Err(e) => {
                    let why = format!("session ended with an error: {e:#}");
                    logs.sessions.note(&source, &why, || {
                        format!("{peer} (sender {key}…): {why}")
                    });
                }
            }
        }
    }
}
