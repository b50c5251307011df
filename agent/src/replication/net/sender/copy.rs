//! A resync as one session sends it: a full copy in frames of [`RESYNC_FRAME`] or a delta by
//! block hashes, from where the resync cursor says the master target's acknowledged part ends,
//! to the closing tag (the only sender of one); and the progress line of a long one.
//! Reconnecting is the caller's.

use super::super::resume::{Cursor, Pos};
use super::super::{resync, Message, RESYNC_BLOCK};
use super::{now, ResyncMode, SendReport, Session, Source, PROGRESS_EVERY, RESYNC_FRAME};
use crate::replication::frame::{Frame, TagKind};
use crate::replication::journal::Lsn;
use anyhow::{anyhow, bail, Context, Result};
use camino::Utf8PathBuf;
use mt_contract::units::ByteSize;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::time::Instant;

/// A progress line now and then on a long resync.
pub(super) struct Progress<'a> {
    log: &'a dyn Fn(&str),
    started: Instant,
    last: Instant,
    at_start: u64,
}

impl<'a> Progress<'a> {
    pub(super) fn new(log: &'a dyn Fn(&str)) -> Progress<'a> {
        let now = Instant::now();
        Progress {
            log,
            started: now,
            last: now,
            at_start: 0,
        }
    }

    /// `sent`: source bytes read and sent or found equal so far.
    fn tick(&mut self, sent: u64, total: u64, acked: u64, stalled: bool) {
        if self.last.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = (sent.saturating_sub(self.at_start)) as f64 / secs / (1u64 << 20) as f64;
        let wait = if stalled {
            "; waiting for room on the master target's retention volume"
        } else {
            ""
        };
        (self.log)(&format!(
            "resync: {} of {} ({:.0} %), {rate:.1} MiB/s, acknowledged through LSN {acked}{wait}",
            ByteSize(sent).approx(),
            ByteSize(total).approx(),
            sent as f64 * 100.0 / total.max(1) as f64
        ));
    }
}

/// One session's part of a resync.
pub(super) struct Resync<'s, 'a> {
    pub(super) s: &'s mut Session<'a>,
    pub(super) sources: &'s [Source],
    pub(super) cursor: &'s mut Cursor,
    pub(super) report: &'s mut SendReport,
    pub(super) progress: Progress<'a>,
    pub(super) acked: &'s mut u64,
}

impl Resync<'_, '_> {
    /// The position after `offset` bytes of disk `disk` (the next disk's start at its end).
    fn pos(&self, disk: u32, offset: u64) -> Pos {
        match self.sources.get(disk as usize) {
            Some(src) if offset >= src.capacity => Pos {
                disk: disk + 1,
                offset: 0,
            },
            _ => Pos { disk, offset },
        }
    }

    fn total(&self) -> u64 {
        self.sources.iter().map(|s| s.capacity).sum()
    }

    /// Source bytes before `p`.
    fn bytes_before(&self, p: Pos) -> u64 {
        let whole: u64 = self.sources[..(p.disk as usize).min(self.sources.len())]
            .iter()
            .map(|s| s.capacity)
            .sum();
        whole + p.offset
    }

    fn send_range(&mut self, disk: u32, offset: u64, len: u64, lsn: &mut u64) -> Result<()> {
        let src = &self.sources[disk as usize];
        let mut data = std::mem::take(&mut self.s.read_buf);
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
        let r = self.s.send_frame(&frame, self.report);
        if let Frame::Write { data, .. } = frame {
            self.s.read_buf = data;
        }
        r?;
        self.cursor.sent(*lsn, Pos { disk, offset });
        self.after_frame()
    }

    fn after_frame(&mut self) -> Result<()> {
        *self.acked = self.s.acked;
        self.cursor.acked(self.s.acked)?;
        let sent = self.bytes_before(self.cursor.position());
        self.progress
            .tick(sent, self.total(), self.s.acked, self.s.stalled);
        Ok(())
    }

    /// Where a full copy stands after `frames` writes: they follow each other in frames of
    /// [`RESYNC_FRAME`] (shorter at a disk's end) over the disks in order.
    fn full_plan(sources: &[Source], mut frames: u64) -> Pos {
        for (i, src) in sources.iter().enumerate() {
            let n = src.capacity.div_ceil(RESYNC_FRAME);
            if frames < n {
                return Pos {
                    disk: i as u32,
                    offset: frames * RESYNC_FRAME,
                };
            }
            frames -= n;
        }
        Pos {
            disk: sources.len() as u32,
            offset: 0,
        }
    }

    pub(super) fn run(&mut self, mode: ResyncMode, log: &dyn Fn(&str)) -> Result<()> {
        let sources = self.sources;
        let plan = |n: u64| Self::full_plan(sources, n);
        let plan: Option<&dyn Fn(u64) -> Pos> = (mode == ResyncMode::Full).then_some(&plan);
        let from = self.cursor.begin(self.s.resync_since, self.s.acked, plan);
        let resumed = self.bytes_before(from);
        self.report.resumed_at_bytes = resumed;
        self.progress.at_start = resumed;
        if from != Pos::default() {
            log(&format!(
                "resuming the {} resync at disk {} byte {}: the {resumed} bytes before it are acknowledged and not read again",
                if mode == ResyncMode::Full { "full" } else { "delta" },
                from.disk,
                from.offset
            ));
        }
        let mut lsn = self.s.acked;
        let first = lsn;
        match mode {
            ResyncMode::Full => self.full(from, &mut lsn)?,
            ResyncMode::Delta => self.delta(from, &mut lsn)?,
        }
        // The resync ends at a recovery point: the target equals the sources there. The
        // journal's resync is open if the master target said so or this session sent a resync
        // write (the first one opens it); only then is there one to close. A delta that found
        // nothing to send to a consistent group marks it with an ordinary crash tag.
        let open = self.s.resync_since != 0 || lsn > first;
        lsn += 1;
        self.s.send_frame(
            &Frame::Tag {
                lsn: Lsn(lsn),
                source_time: now(),
                kind: if open {
                    TagKind::ResyncEnd
                } else {
                    TagKind::Crash
                },
                name: "resync".into(),
            },
            self.report,
        )?;
        self.s.flush_and_wait(lsn)?;
        *self.acked = self.s.acked;
        self.cursor.finish();
        log(&format!(
            "resync ({mode:?}) done: {} of {} bytes sent, acknowledged through LSN {lsn}",
            self.report.changed_bytes,
            self.total()
        ));
        Ok(())
    }

    fn full(&mut self, from: Pos, lsn: &mut u64) -> Result<()> {
        for (i, src) in self.sources.iter().enumerate().skip(from.disk as usize) {
            let mut at = if i == from.disk as usize {
                from.offset
            } else {
                0
            };
            while at < src.capacity {
                let n = RESYNC_FRAME.min(src.capacity - at);
                self.send_range(i as u32, at, n, lsn)?;
                self.report.changed_bytes += n;
                at += n;
                let next = self.pos(i as u32, at);
                self.cursor.scanned(next);
            }
        }
        Ok(())
    }

    fn delta(&mut self, from: Pos, lsn: &mut u64) -> Result<()> {
        let block = u64::from(RESYNC_BLOCK);
        let first_block = from.offset / block;
        self.s.send(
            &Message::HashRequest {
                block_size: RESYNC_BLOCK,
                from_disk: from.disk,
                from_block: first_block,
            },
            "the hash request",
        )?;
        let (htx, hrx) = mpsc::sync_channel::<Result<(u32, u64, [u8; 32]), String>>(4096);
        let paths: Vec<(Utf8PathBuf, u64)> = self
            .sources
            .iter()
            .map(|s| (s.path.clone(), s.capacity))
            .collect();
        // The source is hashed on its own thread while the target hashes its copy.
        std::thread::Builder::new()
            .name("hash source".into())
            .spawn(move || {
                for (i, (p, cap)) in paths.iter().enumerate().skip(from.disk as usize) {
                    let first = if i == from.disk as usize {
                        first_block
                    } else {
                        0
                    };
                    let r = resync::hash_disk(p, *cap, RESYNC_BLOCK, first, |b, h| {
                        htx.send(Ok((i as u32, b, h)))
                            .map_err(|_| anyhow!("stopped"))
                    });
                    if let Err(e) = r {
                        let _ = htx.send(Err(format!("{e:#}")));
                        return;
                    }
                }
            })?;
        let n = self.sources.len();
        let mut runs = resync::Runs::default();
        let mut done: Vec<bool> = (0..n).map(|d| d < from.disk as usize).collect();
        let mut next: Vec<u64> = (0..n)
            .map(|d| {
                if d == from.disk as usize {
                    first_block
                } else {
                    0
                }
            })
            .collect();
        let target = self.s.target.clone();
        while done.iter().any(|d| !d) {
            match self.s.next_queued()? {
                Message::Hashes {
                    disk,
                    first_block,
                    hashes,
                } => {
                    let d = disk as usize;
                    if d >= n || first_block != next[d] || done[d] {
                        bail!(
                            "{target} sent hashes for disk {disk} block {first_block} out of order"
                        );
                    }
                    self.report.hash_bytes_received += 12 + 32 * hashes.len() as u64;
                    let capacity = self.sources[d].capacity;
                    for (k, remote) in hashes.iter().enumerate() {
                        let b = first_block + k as u64;
                        let (ld, lb, local) = hrx
                            .recv()
                            .map_err(|_| anyhow!("the source hasher stopped"))?
                            .map_err(|e| anyhow!(e))?;
                        if (ld, lb) != (disk, b) {
                            bail!("{target} sent more hashes for disk {disk} than it has blocks");
                        }
                        self.report.blocks_compared += 1;
                        let off = b * block;
                        let len = block.min(capacity - off);
                        if local != *remote {
                            self.report.blocks_changed += 1;
                            self.report.changed_bytes += len;
                            if let Some((rd, ro, rl)) = runs.push(disk, off, len, RESYNC_FRAME) {
                                self.send_range(rd, ro, rl, lsn)?;
                            }
                        }
                        // Confirmed up to here unless a run of differing blocks waits to go.
                        let upto = match runs.current {
                            Some((rd, ro, _)) => Pos {
                                disk: rd,
                                offset: ro,
                            },
                            None => self.pos(disk, off + len),
                        };
                        self.cursor.scanned(upto);
                    }
                    next[d] = first_block + hashes.len() as u64;
                    self.after_frame()?;
                }
                Message::HashesDone { disk } => {
                    let d = disk as usize;
                    if d >= n
                        || next[d] != resync::block_count(self.sources[d].capacity, RESYNC_BLOCK)
                    {
                        bail!("{target} ended the hashes of disk {disk} early");
                    }
                    done[d] = true;
                }
                m => bail!("{target} sent an unexpected {} message", m.name()),
            }
        }
        if let Some((rd, ro, rl)) = runs.finish() {
            self.send_range(rd, ro, rl, lsn)?;
            let end = self.pos(rd, ro + rl);
            self.cursor.scanned(end);
        }
        Ok(())
    }
}
