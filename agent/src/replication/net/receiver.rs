//! The master target's end of a replication session: opens the group the start frame names,
//! tells the sender where to resume (the journal's acknowledged LSN), grants credit while the
//! retention volume has room, checks every frame with the frame decoder and hands it to the
//! journal, acknowledges what is durable, and hashes the targets for a delta resync. Any bad
//! frame ends the session with an error naming it; what was valid before it is committed, the
//! bad frame never reaches a target. A full retention volume pauses the session (credit
//! withheld, a Stall recorded, the sender told) until pruning frees room; a session that hears
//! nothing for the idle time, or that a new session of the same sender takes over, ends and
//! releases its group. A key not allowed to write the group the start frame names is refused
//! before the group is claimed or opened. One session per thread; it must not touch other
//! groups.

use super::senders::SenderStore;
use super::sessions::{Sessions, Stopper};
use super::transport::{Channel, Heartbeat, Tx};
use super::{decode_frame, resync, Message, HASHES_PER_MESSAGE};
use crate::replication::frame::Frame;
use crate::replication::journal::{valid_group_name, GroupJournal, JournalError, RetentionVolume};
use anyhow::{anyhow, bail, Result};
use mt_contract::units::ByteSize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a last refusal may take to write: the peer may be gone.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes of frames a sender may have in flight (the receiver's memory per session is one frame
/// plus the journal's group-commit batch, whatever this is).
pub const CREDIT_WINDOW: u64 = 32 << 20;
/// Credit stops while the retention volume has less room than this beyond the credit windows
/// of all sessions on it.
pub const ROOM_RESERVE: u64 = 64 << 20;
/// How often (in consumed bytes) the receiver looks at the volume's room.
const ROOM_CHECK_EVERY: u64 = 8 << 20;

/// Free room for journals: the file system's free space, and the budget if one is set.
pub fn room(vol: &RetentionVolume) -> u64 {
    let free = vol.fs.free_space(&vol.root).unwrap_or(0);
    match vol.budget {
        Some(b) => free.min(b.saturating_sub(vol.usage())),
        None => free,
    }
}

fn send(tx: &Mutex<Tx>, m: &Message) -> Result<()> {
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(m)
        .map_err(|e| anyhow!("cannot send {} to the sender: {e}", m.name()))
}

/// What one session did.
#[derive(Debug, Default)]
pub struct SessionSummary {
    pub group: String,
    pub frames: u64,
    pub acked: u64,
    /// Where this session's resync writes began and how far they are acknowledged.
    pub resync: ResyncSpan,
}

/// The part of the sources a session's resync writes covered, as the master target saw it
/// (what the operator, and the WAN test, compare with where the next session resumes).
#[derive(Debug, Default)]
pub struct ResyncSpan {
    /// Disk and byte of the first resync write of the session.
    pub first: Option<(u32, u64)>,
    /// Disk and end byte of the last resync write acknowledged in the session.
    pub acked_end: Option<(u32, u64)>,
    unacked: std::collections::VecDeque<(u64, u32, u64)>,
}

impl ResyncSpan {
    fn applied(&mut self, frame: &Frame) {
        if let Frame::Write {
            lsn,
            disk,
            offset,
            data,
            resync: true,
            ..
        } = frame
        {
            self.first.get_or_insert((*disk, *offset));
            self.unacked
                .push_back((lsn.0, *disk, offset + data.len() as u64));
        }
    }

    fn acked(&mut self, lsn: u64) {
        while let Some(&(l, d, end)) = self.unacked.front() {
            if l > lsn {
                break;
            }
            self.acked_end = Some((d, end));
            self.unacked.pop_front();
        }
    }
}

impl std::fmt::Display for ResyncSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.first, self.acked_end) {
            (Some((d, o)), Some((ad, ao))) => write!(
                f,
                "; resync writes from disk {d} byte {o}, acknowledged through disk {ad} byte {ao}"
            ),
            (Some((d, o)), None) => {
                write!(
                    f,
                    "; resync writes from disk {d} byte {o}, none acknowledged"
                )
            }
            _ => Ok(()),
        }
    }
}

/// Room the volume must keep for the sessions now open: the reserve and every credit window.
fn room_needed(sessions: &Sessions) -> u64 {
    ROOM_RESERVE + CREDIT_WINDOW * sessions.count().max(1)
}

/// Runs one session to its end. `Err` is the reason the session ended badly (the sender has
/// been told when the connection still works). `peer` names the connection in the log.
pub fn run_session(
    ch: Channel,
    vol: &RetentionVolume,
    senders: &SenderStore,
    sessions: &Sessions,
    peer: &str,
    log: &(dyn Fn(&str) + Sync),
) -> Result<SessionSummary> {
    ch.set_idle_timeout(sessions.idle_timeout())?;
    let stopper = Arc::new(Stopper::new(ch.tx.stopper()?));
    let key = ch.remote_key;
    let Channel { tx, mut rx, .. } = ch;
    let tx = Arc::new(Mutex::new(tx));
    let _heartbeat = Heartbeat::start(tx.clone())?;
    let refuse = |retry: bool, why: &str| {
        let mut t = tx.lock().unwrap_or_else(|e| e.into_inner());
        t.set_write_timeout(REFUSAL_WRITE_TIMEOUT);
        let _ = t.send(&Message::Refused {
            retry,
            why: why.to_owned(),
        });
    };
    let first = match rx.recv_live() {
        Ok(Some(Message::Frame(b))) => b,
        Ok(None) => bail!("the sender closed the connection before naming a group"),
        Ok(Some(m)) => {
            let why = format!(
                "the session must begin with a start frame, not a {} message",
                m.name()
            );
            refuse(false, &why);
            bail!(why)
        }
        Err(e) => bail!("handshake done, before the start frame: {e}"),
    };
    let (group, disks) = match decode_frame(&first, 0) {
        Ok(Frame::Start { group, disks }) => (group, disks),
        Ok(_) => {
            let why = "frame #0: the session must begin with a start frame naming the group";
            refuse(false, why);
            bail!(why)
        }
        Err(e) => {
            refuse(false, &e);
            bail!(e)
        }
    };
    if let Err(why) = valid_group_name(&group) {
        refuse(false, &why);
        bail!(why);
    }
    // An unreadable file keeps the copy read before (the watcher in serve reports it).
    senders.refresh();
    if let Err(why) = senders.check(&key, &group) {
        refuse(false, &why);
        bail!(why);
    }
    // Declared before the journal, so the group is released only after the journal is closed.
    let claim = match sessions.claim(&group, key, peer, stopper.clone(), log) {
        Ok(c) => c,
        Err(why) => {
            refuse(true, &why);
            bail!(why);
        }
    };
    // A revocation the watcher applied between the check and the claim found no session to
    // stop: its copy is already the new one here.
    if let Err(why) = senders.check(&key, &group) {
        refuse(false, &why);
        bail!(why);
    }
    let holder = format!(
        "serve, session of sender key {} from {peer}",
        super::auth::hex(&key)
    );
    let mut jr = match vol.open_group_as(&group, &holder) {
        Ok(j) => j,
        Err(e) => {
            let why = format!("group {group}: {e}");
            let busy = matches!(&e, JournalError::Rejected(m) if m.contains("cannot lock"));
            refuse(busy, &why);
            bail!(why);
        }
    };
    for n in &jr.notes {
        log(&format!("group {group}: {n}"));
    }
    if let Err(e) = jr.check_start(&group, &disks) {
        let why = e.to_string();
        refuse(false, &why);
        bail!(why);
    }
    let stop = AtomicBool::new(false);
    let span = Mutex::new(ResyncSpan::default());
    let ended = AtomicBool::new(false);
    let ctx = Ctx {
        ended: &ended,
        tx: &tx,
        stopper: &stopper,
        sessions,
        log,
        span: &span,
    };
    let result = std::thread::scope(|s| {
        let r = session_loop(&mut jr, &mut rx, &ctx, s, &stop);
        stop.store(true, Ordering::Relaxed);
        r
    });
    let commit = jr.commit();
    let acked = jr.acked();
    let mut span = span.into_inner().unwrap_or_else(|e| e.into_inner());
    span.acked(acked.0);
    let summary = SessionSummary {
        group: group.clone(),
        frames: rx.count,
        acked: acked.0,
        resync: span,
    };
    // Release the group first: a session taking over waits for exactly this.
    drop(jr);
    drop(claim);
    match (result, commit) {
        (Ok(()), Ok(_)) => Ok(summary),
        (Err(e), _) => {
            let why = format!(
                "group {group}: {e:#}; acknowledged through LSN {acked}{}",
                summary.resync
            );
            if !stopper.is_stopped() {
                refuse(false, &why);
            }
            tx.lock().unwrap_or_else(|e| e.into_inner()).shutdown();
            Err(anyhow!(why))
        }
        (Ok(()), Err(e)) => Err(anyhow!("group {group}: {e}")),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What every part of a session shares.
struct Ctx<'a> {
    tx: &'a Arc<Mutex<Tx>>,
    stopper: &'a Stopper,
    sessions: &'a Sessions,
    log: &'a (dyn Fn(&str) + Sync),
    span: &'a Mutex<ResyncSpan>,
    /// The connection's reading side has ended: no wait (for room) may outlast it.
    ended: &'a AtomicBool,
}

/// What the network thread hands to the journal thread.
enum Op {
    Frame { frame: Frame, index: u64, size: u64 },
    Flush,
}

/// The session's two halves: this thread reads, decrypts and checks messages (the sender's
/// frames are decoded and verified here) while a journal thread applies them, commits and
/// acknowledges, so network and checksums overlap the journal's disk writes and flushes.
/// Memory stays bounded by the credit window: credit is returned only once the journal took a
/// frame.
fn session_loop<'s>(
    jr: &'s mut GroupJournal,
    rx: &mut super::transport::Rx,
    ctx: &'s Ctx<'s>,
    scope: &'s std::thread::Scope<'s, '_>,
    stop: &'s AtomicBool,
) -> Result<()> {
    let disks: Vec<_> = jr.disks().to_vec();
    let group = jr.name().to_owned();
    let outstanding = Arc::new(AtomicU64::new(CREDIT_WINDOW));
    send(
        ctx.tx,
        &Message::Position {
            acked: jr.acked().0,
            resync_since: jr.state().resync.map_or(0, |l| l.0),
        },
    )?;
    send(
        ctx.tx,
        &Message::Credit {
            bytes: CREDIT_WINDOW,
        },
    )?;
    let (ops, ops_rx) = std::sync::mpsc::sync_channel::<Op>(64);
    let journal = {
        let outstanding = outstanding.clone();
        std::thread::Builder::new()
            .name(format!("journal {group}"))
            .spawn_scoped(scope, move || {
                let r = journal_loop(jr, ops_rx, ctx, &outstanding);
                if r.is_err() {
                    // Wake the network thread, which may be waiting for a sender that waits for us.
                    ctx.tx
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .shutdown_read();
                }
                r
            })?
    };
    let net = network_loop(rx, ctx, scope, stop, &ops, &outstanding, &disks, &group);
    ctx.ended.store(true, Ordering::Release);
    drop(ops);
    let journal = journal
        .join()
        .unwrap_or_else(|_| Err(anyhow!("the journal thread panicked")));
    match (net, journal) {
        // The journal stopped first (a refused frame, a failed write): its reason.
        (Ok(NetEnd::JournalStopped | NetEnd::Closed), j) => j,
        (Err(_), Err(j)) => Err(j),
        (Err(e), Ok(())) if ctx.stopper.is_stopped() => match ctx.stopper.reason() {
            Some(why) => Err(anyhow!("ended: {why} ({e})")),
            None => Err(anyhow!(
                "ended: a new session of the same sender took over ({e})"
            )),
        },
        (Err(e), Ok(())) => Err(e),
    }
}

enum NetEnd {
    Closed,
    JournalStopped,
}

#[allow(clippy::too_many_arguments)]
fn network_loop<'s>(
    rx: &mut super::transport::Rx,
    ctx: &'s Ctx<'s>,
    scope: &'s std::thread::Scope<'s, '_>,
    stop: &'s AtomicBool,
    ops: &std::sync::mpsc::SyncSender<Op>,
    outstanding: &AtomicU64,
    disks: &[crate::replication::journal::DiskSpec],
    group: &str,
) -> Result<NetEnd> {
    let mut frame_index = 1u64;
    let mut hashing = false;
    loop {
        let msg = match rx.recv_live().map_err(|e| anyhow!("{e}"))? {
            Some(m) => m,
            None => return Ok(NetEnd::Closed),
        };
        match msg {
            Message::Frame(bytes) => {
                let index = frame_index;
                frame_index += 1;
                let size = bytes.len() as u64;
                let have = outstanding.load(Ordering::Acquire);
                if size > have {
                    bail!(
                        "frame #{index}: {size} bytes sent with only {have} bytes of credit (flow control violated)"
                    );
                }
                outstanding.fetch_sub(size, Ordering::AcqRel);
                let frame = decode_frame(&bytes, index).map_err(|e| anyhow!(e))?;
                rx.recycle(bytes);
                if matches!(frame, Frame::Start { .. }) {
                    bail!("frame #{index}: a second start frame");
                }
                if ops.send(Op::Frame { frame, index, size }).is_err() {
                    return Ok(NetEnd::JournalStopped);
                }
            }
            Message::Flush => {
                if ops.send(Op::Flush).is_err() {
                    return Ok(NetEnd::JournalStopped);
                }
            }
            Message::HashRequest {
                block_size,
                from_disk,
                from_block,
            } => {
                if hashing {
                    bail!("a second hash request in one session");
                }
                let (fd, fb) = (from_disk as usize, from_block);
                let fits = fd < disks.len()
                    && fb <= resync::block_count(disks[fd].capacity, block_size)
                    || fd == disks.len() && fb == 0;
                if !fits {
                    bail!("a hash request from disk {from_disk} block {from_block}, past the group's disks");
                }
                hashing = true;
                let disks = disks.to_vec();
                let tx = ctx.tx.clone();
                let log_err = format!("group {group}: hashing for delta resync failed");
                std::thread::Builder::new()
                    .name(format!("hash {group}"))
                    .spawn_scoped(scope, move || {
                        let r = hash_targets(&disks, block_size, fd, fb, &tx, stop);
                        if let Err(e) = r {
                            if !stop.load(Ordering::Relaxed) {
                                let why = format!("{log_err}: {e:#}");
                                let _ = send(&tx, &Message::Refused { retry: false, why });
                                tx.lock().unwrap_or_else(|e| e.into_inner()).shutdown();
                            }
                        }
                    })?;
            }
            m => bail!(
                "message #{}: a {} message is not expected from a sender",
                rx.count - 1,
                m.name()
            ),
        }
    }
}

/// Streams the hashes of the targets from block `first_block` of disk `first_disk` on.
fn hash_targets(
    disks: &[crate::replication::journal::DiskSpec],
    block_size: u32,
    first_disk: usize,
    first_block: u64,
    tx: &Mutex<Tx>,
    stop: &AtomicBool,
) -> Result<()> {
    for (i, d) in disks.iter().enumerate().skip(first_disk) {
        let from = if i == first_disk { first_block } else { 0 };
        let mut batch = Vec::with_capacity(HASHES_PER_MESSAGE);
        let mut first = 0u64;
        resync::hash_disk(&d.target, d.capacity, block_size, from, |b, h| {
            if stop.load(Ordering::Relaxed) {
                bail!("session ended");
            }
            if batch.is_empty() {
                first = b;
            }
            batch.push(h);
            if batch.len() == HASHES_PER_MESSAGE {
                let hashes = std::mem::take(&mut batch);
                send(
                    tx,
                    &Message::Hashes {
                        disk: i as u32,
                        first_block: first,
                        hashes,
                    },
                )?;
            }
            Ok(())
        })?;
        if !batch.is_empty() {
            send(
                tx,
                &Message::Hashes {
                    disk: i as u32,
                    first_block: first,
                    hashes: batch,
                },
            )?;
        }
        send(tx, &Message::HashesDone { disk: i as u32 })?;
    }
    Ok(())
}

/// Runs a journal step, and while the retention volume is full, waits for room and runs it
/// again (`retry`: what completes the step once it failed for lack of room).
fn with_room<T>(
    jr: &mut GroupJournal,
    ctx: &Ctx<'_>,
    first: impl FnOnce(&mut GroupJournal) -> std::result::Result<T, JournalError>,
    mut retry: impl FnMut(&mut GroupJournal) -> std::result::Result<T, JournalError>,
) -> Result<T> {
    let mut r = first(jr);
    loop {
        match r {
            Err(JournalError::RetentionFull(why)) => {
                wait_for_room(jr, ctx, &why)?;
                r = retry(jr);
            }
            r => return r.map_err(|e| anyhow!("{e}")),
        }
    }
}

/// The pause of a session whose retention volume has no room: the Stall is recorded (so
/// `status` says "stalled" and why), the sender is told, and the journal prunes what the
/// policy allows until there is room again; the wait ends with the session.
fn wait_for_room(jr: &mut GroupJournal, ctx: &Ctx<'_>, why: &str) -> Result<()> {
    let why = format!("retention volume full: {why}; credit withheld until pruning frees room");
    jr.record_stall(&why);
    (ctx.log)(&format!("group {}: {why}", jr.name()));
    send(ctx.tx, &Message::Stalled { why })?;
    loop {
        let room = room(jr.volume());
        if room >= room_needed(ctx.sessions) {
            (ctx.log)(&format!(
                "group {}: room again ({}); credit resumes",
                jr.name(),
                ByteSize(room).approx()
            ));
            return Ok(());
        }
        if ctx.stopper.is_stopped() || ctx.ended.load(Ordering::Acquire) {
            bail!("the session ended while it waited for room on the retention volume");
        }
        std::thread::sleep(Duration::from_millis(500));
        let _ = jr.prune();
    }
}

/// How often a journal thread with nothing to take looks whether its batch in flight is done.
const IDLE_POLL: Duration = Duration::from_millis(2);

/// The journal thread's next operation (`None`: the network side is gone). While none waits,
/// the batch in flight is acknowledged as soon as its flush is done, rather than with the next
/// batch (which a slow link or an idle source may bring much later), without waiting for that
/// flush when frames come first.
fn next_op(
    jr: &mut GroupJournal,
    ops: &std::sync::mpsc::Receiver<Op>,
    ack: &mut dyn FnMut(&GroupJournal) -> Result<()>,
) -> Result<Option<Op>> {
    use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
    loop {
        match ops.try_recv() {
            Ok(op) => return Ok(Some(op)),
            Err(TryRecvError::Disconnected) => return Ok(None),
            Err(TryRecvError::Empty) => {}
        }
        match jr.in_flight_done() {
            None => return Ok(ops.recv().ok()),
            Some(true) => {
                jr.finish_in_flight().map_err(|e| anyhow!("{e}"))?;
                ack(jr)?;
            }
            Some(false) => match ops.recv_timeout(IDLE_POLL) {
                Ok(op) => return Ok(Some(op)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
            },
        }
    }
}

/// The journal thread: applies frames in order, acknowledges what is durable, and returns
/// credit while the retention volume has room (withholding it, committing and waiting for
/// pruning when it does not).
fn journal_loop(
    jr: &mut GroupJournal,
    ops: std::sync::mpsc::Receiver<Op>,
    ctx: &Ctx<'_>,
    outstanding: &AtomicU64,
) -> Result<()> {
    let tx = ctx.tx;
    let mut last_ack = jr.acked().0;
    let mut owed = 0u64;
    let mut since_check = 0u64;
    let mut room_ok = true;
    // Credit is counted before the message that grants it goes out: the sender may use it as
    // soon as it arrives.
    let grant = |bytes: u64| -> Result<()> {
        outstanding.fetch_add(bytes, Ordering::AcqRel);
        send(tx, &Message::Credit { bytes })
    };
    let ack = |jr: &GroupJournal, last_ack: &mut u64, always: bool| -> Result<()> {
        if always || jr.acked().0 > *last_ack {
            *last_ack = jr.acked().0;
            lock(ctx.span).acked(*last_ack);
            send(tx, &Message::Ack { lsn: *last_ack })?;
        }
        Ok(())
    };
    let commit = |jr: &mut GroupJournal| with_room(jr, ctx, |j| j.commit(), |j| j.commit());
    loop {
        let Some(op) = next_op(jr, &ops, &mut |jr| ack(jr, &mut last_ack, false))? else {
            break;
        };
        match op {
            Op::Frame { frame, index, size } => {
                let lsn = frame.lsn().map(|l| l.0).unwrap_or(0);
                // A tag the volume had no room for is not taken: it is applied again; a write
                // is buffered all the same, and committing again completes it.
                let tag = matches!(frame, Frame::Tag { .. }).then(|| frame.clone());
                lock(ctx.span).applied(&frame);
                with_room(
                    jr,
                    ctx,
                    |j| j.apply_frame(frame).map(drop),
                    |j| match &tag {
                        Some(t) => j.apply_frame(t.clone()).map(drop),
                        None => j.commit().map(drop),
                    },
                )
                .map_err(|e| anyhow!("frame #{index} (LSN {lsn}): {e}"))?;
                ack(jr, &mut last_ack, false)?;
                since_check += size;
                if since_check >= ROOM_CHECK_EVERY {
                    since_check = 0;
                    room_ok = room(jr.volume()) >= room_needed(ctx.sessions);
                }
                if room_ok {
                    grant(size + owed)?;
                    owed = 0;
                } else {
                    owed += size;
                }
                let low = outstanding.load(Ordering::Acquire) < u64::from(super::MAX_MESSAGE_BODY);
                if !room_ok && low {
                    // The sender may be unable to send its next frame: make the batch durable
                    // and wait for room (what it may still send waits in the socket).
                    commit(jr)?;
                    ack(jr, &mut last_ack, false)?;
                    let why = format!(
                        "{} of room, less than the {} kept free for the sessions on it",
                        ByteSize(room(jr.volume())).approx(),
                        ByteSize(room_needed(ctx.sessions)).approx()
                    );
                    wait_for_room(jr, ctx, &why)?;
                    room_ok = true;
                    grant(owed)?;
                    owed = 0;
                }
            }
            Op::Flush => {
                commit(jr)?;
                ack(jr, &mut last_ack, true)?;
            }
        }
    }
    Ok(())
}
