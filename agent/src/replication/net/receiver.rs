//! The master target's end of a replication session: opens the group the start frame names,
//! tells the sender where to resume (the journal's acknowledged LSN), grants credit while the
//! retention volume has room, checks every frame with the frame decoder and hands it to the
//! journal, acknowledges what is durable, and hashes the targets for a delta resync. Any bad
//! frame ends the session with an error naming it; what was valid before it is committed, the
//! bad frame never reaches a target. One session per thread; it must not touch other groups.

use super::transport::{Channel, Tx};
use super::{decode_frame, resync, Message, HASHES_PER_MESSAGE};
use crate::replication::frame::Frame;
use crate::replication::journal::{valid_group_name, GroupJournal, JournalError, RetentionVolume};
use anyhow::{anyhow, bail, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bytes of frames a sender may have in flight (the receiver's memory per session is one frame
/// plus the journal's group-commit batch, whatever this is).
pub const CREDIT_WINDOW: u64 = 32 << 20;
/// Credit stops while the retention volume has less room than this beyond the window.
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
}

/// Runs one session to its end. `Err` is the reason the session ended badly (the sender has
/// been told when the connection still works).
pub fn run_session(
    ch: Channel,
    vol: &RetentionVolume,
    log: &(dyn Fn(&str) + Sync),
) -> Result<SessionSummary> {
    let Channel { tx, mut rx, .. } = ch;
    let tx = Arc::new(Mutex::new(tx));
    let refuse = |retry: bool, why: &str| {
        let _ = send(
            &tx,
            &Message::Refused {
                retry,
                why: why.to_owned(),
            },
        );
    };
    let first = match rx.recv() {
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
        Err(e) => bail!("{e}"),
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
    let mut jr = match vol.open_group(&group) {
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
    let result = std::thread::scope(|s| {
        let r = session_loop(&mut jr, &mut rx, &tx, s, &stop, log);
        stop.store(true, Ordering::Relaxed);
        r
    });
    let commit = jr.commit();
    let summary = SessionSummary {
        group: group.clone(),
        frames: rx.count,
        acked: jr.acked().0,
    };
    match (result, commit) {
        (Ok(()), Ok(_)) => Ok(summary),
        (Err(e), _) => {
            let why = format!(
                "group {group}: {e:#}; acknowledged through LSN {}",
                jr.acked()
            );
            refuse(false, &why);
            tx.lock().unwrap_or_else(|e| e.into_inner()).shutdown();
            Err(anyhow!(why))
        }
        (Ok(()), Err(e)) => Err(anyhow!("group {group}: {e}")),
    }
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
    tx: &'s Arc<Mutex<Tx>>,
    scope: &'s std::thread::Scope<'s, '_>,
    stop: &'s AtomicBool,
    log: &'s (dyn Fn(&str) + Sync),
) -> Result<()> {
    let disks: Vec<_> = jr.disks().to_vec();
    let group = jr.name().to_owned();
    let outstanding = Arc::new(AtomicU64::new(CREDIT_WINDOW));
    send(
        tx,
        &Message::Position {
            acked: jr.acked().0,
        },
    )?;
    send(
        tx,
        &Message::Credit {
            bytes: CREDIT_WINDOW,
        },
    )?;
    let (ops, ops_rx) = std::sync::mpsc::sync_channel::<Op>(64);
    let journal = {
        let outstanding = outstanding.clone();
        scope.spawn(move || {
            let r = journal_loop(jr, ops_rx, tx, &outstanding, log);
            if r.is_err() {
                // Wake the network thread, which may be waiting for a sender that waits for us.
                tx.lock().unwrap_or_else(|e| e.into_inner()).shutdown_read();
            }
            r
        })
    };
    let net = network_loop(rx, tx, scope, stop, &ops, &outstanding, &disks, &group);
    drop(ops);
    let journal = journal
        .join()
        .unwrap_or_else(|_| Err(anyhow!("the journal thread panicked")));
    match (net, journal) {
        // The journal stopped first (a refused frame, a failed write): its reason.
        (Ok(NetEnd::JournalStopped | NetEnd::Closed), j) => j,
        (Err(_), Err(j)) => Err(j),
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
    tx: &'s Arc<Mutex<Tx>>,
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
        let msg = match rx.recv().map_err(|e| anyhow!("{e}"))? {
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
            Message::HashRequest { block_size } => {
                if hashing {
                    bail!("a second hash request in one session");
                }
                hashing = true;
                let disks = disks.to_vec();
                let tx = tx.clone();
                let log_err = format!("group {group}: hashing for delta resync failed");
                scope.spawn(move || {
                    let r = (|| -> Result<()> {
                        for (i, d) in disks.iter().enumerate() {
                            let mut batch = Vec::with_capacity(HASHES_PER_MESSAGE);
                            let mut first = 0u64;
                            resync::hash_disk(&d.target, d.capacity, block_size, |b, h| {
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
                                        &tx,
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
                                    &tx,
                                    &Message::Hashes {
                                        disk: i as u32,
                                        first_block: first,
                                        hashes: batch,
                                    },
                                )?;
                            }
                            send(&tx, &Message::HashesDone { disk: i as u32 })?;
                        }
                        Ok(())
                    })();
                    if let Err(e) = r {
                        if !stop.load(Ordering::Relaxed) {
                            let why = format!("{log_err}: {e:#}");
                            let _ = send(&tx, &Message::Refused { retry: false, why });
                            tx.lock().unwrap_or_else(|e| e.into_inner()).shutdown();
                        }
                    }
                });
            }
            m => bail!(
                "message #{}: a {} message is not expected from a sender",
                rx.count - 1,
                m.name()
            ),
        }
    }
}

/// The journal thread: applies frames in order, acknowledges what is durable, and returns
/// credit while the retention volume has room (withholding it, committing and waiting for
/// pruning when it does not).
fn journal_loop(
    jr: &mut GroupJournal,
    ops: std::sync::mpsc::Receiver<Op>,
    tx: &Mutex<Tx>,
    outstanding: &AtomicU64,
    log: &(dyn Fn(&str) + Sync),
) -> Result<()> {
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
            send(tx, &Message::Ack { lsn: *last_ack })?;
        }
        Ok(())
    };
    for op in ops {
        match op {
            Op::Frame { frame, index, size } => {
                let lsn = frame.lsn().map(|l| l.0).unwrap_or(0);
                jr.apply_frame(frame)
                    .map_err(|e| anyhow!("frame #{index} (LSN {lsn}): {e}"))?;
                ack(jr, &mut last_ack, false)?;
                since_check += size;
                if since_check >= ROOM_CHECK_EVERY {
                    since_check = 0;
                    room_ok = room(jr.volume()) >= ROOM_RESERVE + CREDIT_WINDOW;
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
                    jr.commit().map_err(|e| anyhow!("{e}"))?;
                    ack(jr, &mut last_ack, false)?;
                    log(&format!(
                        "group {}: retention volume nearly full ({} bytes of room); credit withheld until space is freed",
                        jr.name(),
                        room(jr.volume())
                    ));
                    while room(jr.volume()) < ROOM_RESERVE + CREDIT_WINDOW {
                        std::thread::sleep(Duration::from_secs(1));
                        let _ = jr.prune();
                    }
                    log(&format!("group {}: room again; credit resumes", jr.name()));
                    room_ok = true;
                    grant(owed)?;
                    owed = 0;
                }
            }
            Op::Flush => {
                jr.commit().map_err(|e| anyhow!("{e}"))?;
                ack(jr, &mut last_ack, true)?;
            }
        }
    }
    Ok(())
}
