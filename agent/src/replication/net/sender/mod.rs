//! The process server's end (`mt-agent send`): connects to an enrolled master target, names the
//! group, learns where to resume, then sends a full copy or a delta resync of source disks and/or
//! a recorded change stream, never more bytes than the receiver granted in credit. After a lost
//! connection it reconnects with backoff for `--retry-for` counted from the loss (afresh after
//! every acknowledgement) and resumes from the last acknowledged LSN; an interrupted resync goes
//! on after the last block the master target acknowledged (the cursor, kept in the state
//! directory so a restarted send resumes too). The journal drops any resent frame it already
//! has, so nothing is applied twice. Reads sources; never writes them.

mod copy;
mod streams;

use super::auth::SenderAuth;
use super::resume::{Cursor, Retry, Verdict};
use super::transport::{Heartbeat, Tx, WireCounter};
use super::Message;
use crate::replication::frame::{encode, Frame, FrameReader, BLOCK_SIZE};
use crate::replication::journal::clock::{Clock, SystemClock};
use crate::replication::journal::Lsn;
use anyhow::{anyhow, bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest write frame a resync sends (adjacent differing blocks are merged up to this).
const RESYNC_FRAME: u64 = 1 << 20;
/// How often a long send prints where it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncMode {
    /// Send every block.
    Full,
    /// Send only blocks whose hash differs from the target's.
    Delta,
}

pub struct SendOptions {
    pub target: String,
    pub group: String,
    /// NAME, source file or device, in the group's disk order.
    pub disks: Vec<(String, Utf8PathBuf)>,
    pub resync: Option<ResyncMode>,
    pub stream: Option<Utf8PathBuf>,
    /// Send the stream into `group` even if it was recorded for another group.
    pub stream_group_override: bool,
    pub state: Utf8PathBuf,
    /// How long to keep reconnecting after a lost connection (`None`: for ever), counted from
    /// the loss and afresh after every acknowledgement.
    pub retry_for: Option<Duration>,
    /// A connection that receives nothing for this long is dead.
    pub idle_timeout: Duration,
}

/// What a send did, for the operator and the benchmark.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SendReport {
    pub blocks_compared: u64,
    pub blocks_changed: u64,
    pub changed_bytes: u64,
    pub frames_sent: u64,
    pub hash_bytes_received: u64,
    pub wire_bytes_sent: u64,
    pub wire_bytes_received: u64,
    pub acked: u64,
    pub reconnects: u64,
    /// Bytes of resync data sent again after a reconnect (not acknowledged before it).
    pub resent_bytes: u64,
    /// Where the resync began after the last (re)connection: bytes of the sources before it
    /// were acknowledged earlier and not read or sent again.
    pub resumed_at_bytes: u64,
}

/// An error after which the same request may succeed on a new connection.
#[derive(Debug)]
struct Transient(String);
impl std::fmt::Display for Transient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Transient {}

fn transient(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(Transient(e.to_string()))
}

struct Session<'a> {
    tx: Arc<Mutex<Tx>>,
    _heartbeat: Heartbeat,
    events: mpsc::Receiver<Result<Option<Message>, String>>,
    queued: VecDeque<Message>,
    credit: u64,
    acked: u64,
    /// The LSN the group's unfinished resync began at (0: none), as the master target said.
    resync_since: u64,
    wire: Arc<WireCounter>,
    target: String,
    /// The message being sent and the block range being read: reused for every frame.
    msg: Vec<u8>,
    read_buf: Vec<u8>,
    stalled: bool,
    log: &'a dyn Fn(&str),
}

impl<'a> Session<'a> {
    fn open(
        auth: &SenderAuth,
        opts: &SendOptions,
        start: &Frame,
        log: &'a dyn Fn(&str),
    ) -> Result<Session<'a>> {
        let target = opts.target.as_str();
        let ch = auth.session(target).map_err(|e| {
            if e.root_cause().downcast_ref::<std::io::Error>().is_some() {
                transient(format!("{e:#}"))
            } else {
                e
            }
        })?;
        ch.set_idle_timeout(opts.idle_timeout)
            .map_err(|e| transient(format!("{target}: {e}")))?;
        let (tx, mut rx, wire) = (ch.tx, ch.rx, ch.wire);
        let tx = Arc::new(Mutex::new(tx));
        let heartbeat = Heartbeat::start(tx.clone())?;
        let (etx, events) = mpsc::channel();
        std::thread::Builder::new()
            .name("receive".into())
            .spawn(move || loop {
                let m = rx.recv_live();
                let end = !matches!(m, Ok(Some(_)));
                if etx.send(m).is_err() || end {
                    break;
                }
            })?;
        let mut s = Session {
            tx,
            _heartbeat: heartbeat,
            events,
            queued: VecDeque::new(),
            credit: 0,
            acked: 0,
            resync_since: 0,
            wire,
            target: format!("{target} (group {})", opts.group),
            msg: Vec::new(),
            read_buf: Vec::new(),
            stalled: false,
            log,
        };
        s.send(&Message::Frame(encode(start)), "the start frame")?;
        match s.next_raw()? {
            Message::Position {
                acked,
                resync_since,
            } => {
                s.acked = acked;
                s.resync_since = resync_since;
                Ok(s)
            }
            m => bail!(
                "{target} sent a {} message before the resume position",
                m.name()
            ),
        }
    }

    fn send(&self, m: &Message, what: &str) -> Result<()> {
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(m)
            .map_err(|e| transient(format!("{}: sending {what}: {e}", self.target)))
    }

    /// The next message from the receiver, handling refusals.
    fn next_raw(&mut self) -> Result<Message> {
        let waiting = Instant::now();
        loop {
            match self.events.recv_timeout(PROGRESS_EVERY) {
                Ok(ev) => return self.check(ev),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.stalled {
                        (self.log)(&format!(
                            "waiting: {} still withholds credit for room on its retention volume ({} s so far)",
                            self.target,
                            waiting.elapsed().as_secs()
                        ));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(transient(format!("{}: connection lost", self.target)))
                }
            }
        }
    }

    fn check(&self, ev: Result<Option<Message>, String>) -> Result<Message> {
        match ev {
            Ok(Some(Message::Refused { retry, why })) => {
                let e = anyhow!("{} refused: {why}", self.target);
                Err(if retry {
                    transient(format!("{e:#}"))
                } else {
                    e
                })
            }
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(transient(format!("{} closed the connection", self.target))),
            Err(e) => Err(transient(format!("{}: {e}", self.target))),
        }
    }

    /// Takes in one message: credit and acks are counted, anything else is queued for the caller.
    fn pump(&mut self) -> Result<()> {
        let m = self.next_raw()?;
        self.take_message(m)
    }

    fn take_message(&mut self, m: Message) -> Result<()> {
        match m {
            Message::Credit { bytes } => {
                if self.stalled {
                    self.stalled = false;
                    (self.log)(&format!("{}: credit resumes; sending again", self.target));
                }
                self.credit += bytes
            }
            Message::Ack { lsn } => self.acked = self.acked.max(lsn),
            Message::Stalled { why } => {
                self.stalled = true;
                (self.log)(&format!(
                    "waiting: {} withholds credit: {why} (the session stays open)",
                    self.target
                ));
            }
            m @ (Message::Hashes { .. } | Message::HashesDone { .. }) => self.queued.push_back(m),
            m => bail!("{} sent an unexpected {} message", self.target, m.name()),
        }
        Ok(())
    }

    fn next_queued(&mut self) -> Result<Message> {
        loop {
            if let Some(m) = self.queued.pop_front() {
                return Ok(m);
            }
            self.pump()?;
        }
    }

    fn send_frame(&mut self, frame: &Frame, report: &mut SendReport) -> Result<()> {
        super::start_frame_message(&mut self.msg);
        crate::replication::frame::encode_into(frame, &mut self.msg);
        super::finish_frame_message(&mut self.msg);
        let size = (self.msg.len() - 5) as u64;
        // Take in whatever already arrived, so credits and acks never pile up unread.
        loop {
            match self.events.try_recv() {
                Ok(ev) => {
                    let m = self.check(ev)?;
                    self.take_message(m)?;
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(transient(format!("{}: connection lost", self.target)))
                }
            }
        }
        while self.credit < size {
            self.pump()?;
        }
        self.credit -= size;
        let lsn = frame.lsn().map_or(0, |l| l.0);
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send_plain(&self.msg)
            .map_err(|e| transient(format!("{}: sending frame LSN {lsn}: {e}", self.target)))?;
        report.frames_sent += 1;
        Ok(())
    }

    fn flush_and_wait(&mut self, lsn: u64) -> Result<()> {
        self.send(&Message::Flush, "a flush")?;
        while self.acked < lsn {
            self.pump()?;
        }
        Ok(())
    }
}

struct Source {
    name: String,
    path: Utf8PathBuf,
    file: std::fs::File,
    capacity: u64,
}

fn open_sources(disks: &[(String, Utf8PathBuf)]) -> Result<Vec<Source>> {
    disks
        .iter()
        .map(|(name, path)| {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open source disk {name} at {path}"))?;
            let len = file_len(&file).with_context(|| format!("cannot size {path}"))?;
            Ok(Source {
                name: name.clone(),
                path: path.clone(),
                file,
                capacity: len - len % BLOCK_SIZE,
            })
        })
        .collect()
}

fn file_len(f: &std::fs::File) -> std::io::Result<u64> {
    use std::io::Seek;
    // Works for block devices too, whose metadata length is 0.
    let mut f = f;
    let n = f.seek(std::io::SeekFrom::End(0))?;
    f.seek(std::io::SeekFrom::Start(0))?;
    Ok(n)
}

/// Runs a send to completion, reconnecting after lost connections.
pub fn send(opts: &SendOptions, log: &dyn Fn(&str)) -> Result<SendReport> {
    let auth = SenderAuth::load(&opts.state)?;
    let sources = open_sources(&opts.disks)?;
    let mut stream_start = None;
    let mut stream_id = String::new();
    if let Some(path) = &opts.stream {
        let mut r = FrameReader::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open the stream {path}"))?,
        ));
        match r.next_frame() {
            Ok(Some(Frame::Start { group, .. }))
                if group != opts.group && !opts.stream_group_override =>
            {
                let g = &opts.group;
                bail!("{path} was recorded for group {group}, not {g}; to send it into {g} all the same, add --stream-group-override")
            }
            Ok(Some(Frame::Start { group, disks })) => stream_start = Some((group, disks)),
            Ok(_) => bail!("{path}: frame #0 is not a start frame naming the group"),
            Err(e) => bail!("{path}: {e}"),
        }
        stream_id = streams::identify(path)?;
    }
    let disks: Vec<(String, u64)> = if sources.is_empty() {
        match &stream_start {
            Some((_, d)) => d.clone(),
            None => bail!("nothing to send: give --disk NAME=SOURCE (with --full or --delta) and/or --stream FILE"),
        }
    } else {
        let d: Vec<(String, u64)> = sources
            .iter()
            .map(|s| (s.name.clone(), s.capacity))
            .collect();
        if let Some((_, sd)) = &stream_start {
            if *sd != d {
                bail!("the stream's disks {sd:?} differ from the --disk sources {d:?}");
            }
        }
        d
    };
    if opts.resync.is_some() && sources.is_empty() {
        bail!("--full and --delta need the source disks (--disk NAME=SOURCE)");
    }
    let start = Frame::Start {
        group: opts.group.clone(),
        disks,
    };
    let mut report = SendReport::default();
    let mut resync_done = opts.resync.is_none();
    let mode = opts.resync.unwrap_or(ResyncMode::Full);
    let mut cursor = Cursor::load(&opts.state, &opts.group, fingerprint(opts, mode, &sources));
    let mut retry = Retry::new(opts.retry_for);
    let mut wire_total = (0u64, 0u64);
    let mut last_cause = String::new();
    let mut acked = 0;
    loop {
        let attempt = (|| -> Result<()> {
            let mut s = Session::open(&auth, opts, &start, log)?;
            acked = acked.max(s.acked);
            let r = (|| -> Result<()> {
                if !resync_done {
                    let mut rs = copy::Resync {
                        s: &mut s,
                        sources: &sources,
                        cursor: &mut cursor,
                        report: &mut report,
                        progress: copy::Progress::new(log),
                        acked: &mut acked,
                    };
                    rs.run(mode, log)?;
                    resync_done = true;
                    // The resync made the targets equal the sources: this command's stream
                    // goes on after it.
                    streams::StreamLog::load(&opts.state, &opts.group)?
                        .after_resync(opts.stream.as_ref().map(|_| stream_id.as_str()))?;
                }
                if let Some(path) = &opts.stream {
                    run_stream(
                        &mut s,
                        path,
                        &opts.state,
                        &opts.group,
                        &stream_id,
                        &mut report,
                    )?;
                }
                report.acked = s.acked;
                Ok(())
            })();
            acked = acked.max(s.acked);
            wire_total.0 += s.wire.sent.load(Ordering::Relaxed);
            wire_total.1 += s.wire.received.load(Ordering::Relaxed);
            s.tx.lock().unwrap_or_else(|e| e.into_inner()).shutdown();
            r
        })();
        let e = match attempt {
            Ok(()) => break,
            Err(e) if e.downcast_ref::<Transient>().is_some() => e,
            Err(e) => {
                let _ = cursor.save();
                return Err(e);
            }
        };
        cursor.acked(acked).and_then(|()| cursor.save())?;
        match retry.lost(acked, Instant::now()) {
            Verdict::GiveUp { tried, attempts } => bail!(
                "gave up on {} after reconnecting for {} s ({attempts} attempts since the connection was lost, acknowledged through LSN {acked}; --retry-for sets how long); the last error: {e:#}",
                opts.target,
                tried.as_secs()
            ),
            Verdict::Wait { pause, first } => {
                let cause = format!("{e:#}");
                // The same cause again (a busy group, a listener not back yet) is said once.
                if first || cause != last_cause {
                    let budget = match opts.retry_for {
                        Some(l) => format!("for up to {} s", l.as_secs()),
                        None => "for ever (--retry-for forever)".into(),
                    };
                    log(&format!(
                        "{cause}; reconnecting {budget} from here to resume after LSN {acked}"
                    ));
                    last_cause = cause;
                } else if retry.attempts().is_multiple_of(20) {
                    log(&format!(
                        "still reconnecting to {}: {} attempts in {} s",
                        opts.target,
                        retry.attempts(),
                        retry.since_loss().as_secs()
                    ));
                }
                report.reconnects += 1;
                std::thread::sleep(pause);
            }
        }
    }
    report.wire_bytes_sent = wire_total.0;
    report.wire_bytes_received = wire_total.1;
    Ok(report)
}

/// What makes a resync request the same one again: the master target, the group, the mode and
/// every source (name, path, size).
fn fingerprint(opts: &SendOptions, mode: ResyncMode, sources: &[Source]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(format!("{}\n{}\n{mode:?}\n", opts.target, opts.group).as_bytes());
    for s in sources {
        h.update(format!("{}={} {}\n", s.name, s.path, s.capacity).as_bytes());
    }
    h.finalize().to_hex()[..32].to_owned()
}

fn now() -> crate::replication::journal::clock::Timestamp {
    SystemClock.now()
}

fn run_stream(
    s: &mut Session,
    path: &Utf8Path,
    state: &Utf8Path,
    group: &str,
    id: &str,
    report: &mut SendReport,
) -> Result<()> {
    let base = streams::StreamLog::load(state, group)?.base_for(id, path, s.acked)?;
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
    let mut r = FrameReader::new(std::io::BufReader::with_capacity(4 << 20, file));
    let mut first_lsn = None;
    let mut last = s.acked;
    loop {
        let (index, offset) = r.position();
        let frame = match r.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => bail!("{path}: {e}"),
        };
        if frame.closes_resync() {
            bail!("{path}: frame #{index} (byte {offset}): a resync's closing tag; only the resync of mt-agent send --full or --delta sends one, never a recorded stream");
        }
        let Some(file_lsn) = frame.lsn() else {
            continue;
        };
        let first = *first_lsn.get_or_insert(file_lsn.0);
        let Some(lsn) = file_lsn.0.checked_sub(first).map(|d| base + d + 1) else {
            bail!("{path}: frame #{index} (byte {offset}): LSN {file_lsn} is before the stream's first");
        };
        if lsn <= s.acked {
            continue; // acknowledged before a reconnect: never sent twice
        }
        let frame = match frame {
            Frame::Write {
                source_time,
                disk,
                offset,
                data,
                resync,
                ..
            } => Frame::Write {
                lsn: Lsn(lsn),
                source_time,
                disk,
                offset,
                data,
                resync,
            },
            Frame::Tag {
                source_time,
                kind,
                name,
                ..
            } => Frame::Tag {
                lsn: Lsn(lsn),
                source_time,
                kind,
                name,
            },
            Frame::Start { .. } => continue,
        };
        s.send_frame(&frame, report)?;
        last = lsn;
    }
    s.flush_and_wait(last)?;
    Ok(())
}
