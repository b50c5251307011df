//! The process server's end (`mt-agent send`): connects to an enrolled master target, names the
//! group, learns where to resume, then sends a full copy or a delta resync of source disks and/or
//! a recorded change stream, never more bytes than the receiver granted in credit. After a lost
//! connection it reconnects and resumes from the last acknowledged LSN; the journal drops any
//! resent frame it already has, so nothing is applied twice. Reads sources; never writes them.

use super::auth::SenderAuth;
use super::transport::{Tx, WireCounter};
use super::{resync, Message, RESYNC_BLOCK};
use crate::replication::frame::{encode, Frame, FrameReader, TagKind, BLOCK_SIZE};
use crate::replication::journal::clock::{Clock, SystemClock};
use crate::replication::journal::Lsn;
use anyhow::{anyhow, bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest write frame a resync sends (adjacent differing blocks are merged up to this).
const RESYNC_FRAME: u64 = 1 << 20;

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
    pub state: Utf8PathBuf,
    /// How long to keep reconnecting after a lost connection.
    pub retry_for: Duration,
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

struct Session {
    tx: Tx,
    events: mpsc::Receiver<Result<Option<Message>, String>>,
    queued: VecDeque<Message>,
    credit: u64,
    acked: u64,
    wire: Arc<WireCounter>,
    target: String,
    /// The message being sent and the block range being read: reused for every frame.
    msg: Vec<u8>,
    read_buf: Vec<u8>,
}

impl Session {
    fn open(auth: &SenderAuth, target: &str, start: &Frame) -> Result<Session> {
        let ch = auth.session(target).map_err(|e| {
            if e.root_cause().downcast_ref::<std::io::Error>().is_some() {
                transient(format!("{e:#}"))
            } else {
                e
            }
        })?;
        let (mut tx, mut rx, wire) = (ch.tx, ch.rx, ch.wire);
        let (etx, events) = mpsc::channel();
        std::thread::spawn(move || loop {
            let m = rx.recv();
            let end = !matches!(m, Ok(Some(_)));
            if etx.send(m).is_err() || end {
                break;
            }
        });
        tx.send(&Message::Frame(encode(start))).map_err(transient)?;
        let mut s = Session {
            tx,
            events,
            queued: VecDeque::new(),
            credit: 0,
            acked: 0,
            wire,
            target: target.to_owned(),
            msg: Vec::new(),
            read_buf: Vec::new(),
        };
        match s.next_raw()? {
            Message::Position { acked } => {
                s.acked = acked;
                Ok(s)
            }
            m => bail!(
                "{target} sent a {} message before the resume position",
                m.name()
            ),
        }
    }

    /// The next message from the receiver, handling refusals.
    fn next_raw(&mut self) -> Result<Message> {
        match self.events.recv() {
            Ok(ev) => self.check(ev),
            Err(_) => Err(transient(format!("{}: connection lost", self.target))),
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
            Message::Credit { bytes } => self.credit += bytes,
            Message::Ack { lsn } => self.acked = self.acked.max(lsn),
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
        self.tx.send_plain(&self.msg).map_err(transient)?;
        report.frames_sent += 1;
        Ok(())
    }

    fn flush_and_wait(&mut self, lsn: u64) -> Result<()> {
        self.tx.send(&Message::Flush).map_err(transient)?;
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

/// Where a recorded stream's LSNs land in the group: remembered so a resumed send maps every
/// frame to the same LSN as before.
fn stream_record(state: &Utf8Path, group: &str) -> Utf8PathBuf {
    state.join("streams").join(group)
}

fn read_stream_base(state: &Utf8Path, group: &str, id: &str) -> Option<u64> {
    let text = std::fs::read_to_string(stream_record(state, group)).ok()?;
    let (rid, base) = text.trim().split_once(' ')?;
    (rid == id).then(|| base.parse().ok()).flatten()
}

fn write_stream_base(state: &Utf8Path, group: &str, id: &str, base: u64) -> Result<()> {
    let p = stream_record(state, group);
    crate::atomic_file::write_atomic(&p, format!("{id} {base}\n").as_bytes(), 0o644)
        .with_context(|| format!("cannot write {p}"))
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
            Ok(Some(Frame::Start { group, disks })) => stream_start = Some((group, disks)),
            Ok(_) => bail!("{path}: frame #0 is not a start frame naming the group"),
            Err(e) => bail!("{path}: {e}"),
        }
        let mut h = blake3::Hasher::new();
        h.update_reader(std::fs::File::open(path)?)
            .with_context(|| format!("cannot read {path}"))?;
        stream_id = h.finalize().to_hex().to_string();
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
    let deadline = Instant::now() + opts.retry_for;
    let mut wire_total = (0u64, 0u64);
    loop {
        let attempt = (|| -> Result<()> {
            let mut s = Session::open(&auth, &opts.target, &start)?;
            let r = (|| -> Result<()> {
                if !resync_done {
                    let mut mode = opts.resync.unwrap_or(ResyncMode::Full);
                    if mode == ResyncMode::Full && report.reconnects > 0 {
                        // What the interrupted copy already wrote is not sent again.
                        log("resuming the full copy as a delta resync: only blocks that differ are sent");
                        mode = ResyncMode::Delta;
                    }
                    run_resync(&mut s, &sources, mode, &mut report, log)?;
                    resync_done = true;
                    // A new resync makes the target equal to the sources: a stream starts afresh.
                    let _ = std::fs::remove_file(stream_record(&opts.state, &opts.group));
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
            wire_total.0 += s.wire.sent.load(Ordering::Relaxed);
            wire_total.1 += s.wire.received.load(Ordering::Relaxed);
            s.tx.shutdown();
            r
        })();
        match attempt {
            Ok(()) => break,
            Err(e) if e.downcast_ref::<Transient>().is_some() && Instant::now() < deadline => {
                log(&format!(
                    "{e:#}; reconnecting to resume from the last acknowledged LSN"
                ));
                report.reconnects += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(e) => return Err(e),
        }
    }
    report.wire_bytes_sent = wire_total.0;
    report.wire_bytes_received = wire_total.1;
    Ok(report)
}

fn now() -> crate::replication::journal::clock::Timestamp {
    SystemClock.now()
}

fn send_range(
    s: &mut Session,
    src: &Source,
    disk: u32,
    offset: u64,
    len: u64,
    lsn: &mut u64,
    report: &mut SendReport,
) -> Result<()> {
    let mut data = std::mem::take(&mut s.read_buf);
    data.resize(len as usize, 0);
    src.file
        .read_exact_at(&mut data, offset)
        .with_context(|| format!("cannot read {} at byte {offset}", src.path))?;
    *lsn += 1;
    let frame = Frame::Write {
        lsn: Lsn(*lsn),
        source_time: now(),
        disk,
        offset,
        data,
        resync: true,
    };
    let r = s.send_frame(&frame, report);
    if let Frame::Write { data, .. } = frame {
        s.read_buf = data;
    }
    r
}

fn run_resync(
    s: &mut Session,
    sources: &[Source],
    mode: ResyncMode,
    report: &mut SendReport,
    log: &dyn Fn(&str),
) -> Result<()> {
    let mut lsn = s.acked;
    match mode {
        ResyncMode::Full => {
            for (i, src) in sources.iter().enumerate() {
                let mut at = 0;
                while at < src.capacity {
                    let n = RESYNC_FRAME.min(src.capacity - at);
                    send_range(s, src, i as u32, at, n, &mut lsn, report)?;
                    report.changed_bytes += n;
                    at += n;
                }
            }
        }
        ResyncMode::Delta => {
            s.tx.send(&Message::HashRequest {
                block_size: RESYNC_BLOCK,
            })
            .map_err(transient)?;
            let (htx, hrx) = mpsc::sync_channel::<Result<(u32, u64, [u8; 32]), String>>(4096);
            let paths: Vec<(Utf8PathBuf, u64)> = sources
                .iter()
                .map(|s| (s.path.clone(), s.capacity))
                .collect();
            // The source is hashed on its own thread while the target hashes its copy.
            std::thread::spawn(move || {
                for (i, (p, cap)) in paths.iter().enumerate() {
                    let r = resync::hash_disk(p, *cap, RESYNC_BLOCK, |b, h| {
                        htx.send(Ok((i as u32, b, h)))
                            .map_err(|_| anyhow!("stopped"))
                    });
                    if let Err(e) = r {
                        let _ = htx.send(Err(format!("{e:#}")));
                        return;
                    }
                }
            });
            let mut runs = resync::Runs::default();
            let mut done = vec![false; sources.len()];
            let mut next = vec![0u64; sources.len()];
            while done.iter().any(|d| !d) {
                match s.next_queued()? {
                    Message::Hashes {
                        disk,
                        first_block,
                        hashes,
                    } => {
                        let d = disk as usize;
                        if d >= sources.len() || first_block != next[d] || done[d] {
                            bail!(
                                "{} sent hashes for disk {disk} block {first_block} out of order",
                                s.target
                            );
                        }
                        report.hash_bytes_received += 12 + 32 * hashes.len() as u64;
                        let src = &sources[d];
                        for (k, remote) in hashes.iter().enumerate() {
                            let b = first_block + k as u64;
                            let (ld, lb, local) = hrx
                                .recv()
                                .map_err(|_| anyhow!("the source hasher stopped"))?
                                .map_err(|e| anyhow!(e))?;
                            if (ld, lb) != (disk, b) {
                                bail!(
                                    "{} sent more hashes for disk {disk} than it has blocks",
                                    s.target
                                );
                            }
                            report.blocks_compared += 1;
                            if local != *remote {
                                report.blocks_changed += 1;
                                let off = b * u64::from(RESYNC_BLOCK);
                                let len = u64::from(RESYNC_BLOCK).min(src.capacity - off);
                                report.changed_bytes += len;
                                if let Some((rd, ro, rl)) = runs.push(disk, off, len, RESYNC_FRAME)
                                {
                                    send_range(
                                        s,
                                        &sources[rd as usize],
                                        rd,
                                        ro,
                                        rl,
                                        &mut lsn,
                                        report,
                                    )?;
                                }
                            }
                        }
                        next[d] = first_block + hashes.len() as u64;
                    }
                    Message::HashesDone { disk } => {
                        let d = disk as usize;
                        if d >= sources.len()
                            || next[d] != resync::block_count(sources[d].capacity, RESYNC_BLOCK)
                        {
                            bail!("{} ended the hashes of disk {disk} early", s.target);
                        }
                        done[d] = true;
                    }
                    m => bail!("{} sent an unexpected {} message", s.target, m.name()),
                }
            }
            if let Some((rd, ro, rl)) = runs.finish() {
                send_range(s, &sources[rd as usize], rd, ro, rl, &mut lsn, report)?;
            }
        }
    }
    // The resync ends at a recovery point: the target equals the sources there.
    lsn += 1;
    s.send_frame(
        &Frame::Tag {
            lsn: Lsn(lsn),
            source_time: now(),
            kind: TagKind::Crash,
            name: "resync".into(),
        },
        report,
    )?;
    s.flush_and_wait(lsn)?;
    log(&format!(
        "resync ({mode:?}) done: {} of {} bytes sent, acknowledged through LSN {lsn}",
        report.changed_bytes,
        sources.iter().map(|s| s.capacity).sum::<u64>()
    ));
    Ok(())
}

fn run_stream(
    s: &mut Session,
    path: &Utf8Path,
    state: &Utf8Path,
    group: &str,
    id: &str,
    report: &mut SendReport,
) -> Result<()> {
    let base = match read_stream_base(state, group, id) {
        Some(b) => b,
        None => {
            write_stream_base(state, group, id, s.acked)?;
            s.acked
        }
    };
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
