//! The group's timeline log (`timeline.log`): the group definition, commits, recovery points,
//! recovery intents and stalls, as CRC-framed records; replaying them gives [`TimelineState`].
//! It is compacted into a single snapshot record through a temporary file and a rename.
//! Records written before the master target's clock rule ended without its fields (the first
//! receive time of the open epoch, [`SourceClock`]); they are read with those left unknown.

use super::clock::Timestamp;
use super::io::{Fs, FsFile, OpenMode};
use super::record::{self, Dec, Enc, FileKind, FILE_HEADER_LEN};
use super::{JournalError, Lsn};
use camino::{Utf8Path, Utf8PathBuf};

pub const TIMELINE_FILE: &str = "timeline.log";
pub const TIMELINE_TMP: &str = "timeline.tmp";
/// The rollback logs: batches of even commit sequence numbers use the first, odd ones the
/// second (two batches may be in flight; see "Two batches in flight" in the format document).
pub const ROLLBACK_FILES: [&str; 2] = ["rollback.log", "rollback-odd.log"];

const REC_SNAPSHOT: u8 = 1;
const REC_COMMIT: u8 = 2;
const REC_POINT: u8 = 3;
const REC_INTENT: u8 = 4;
const REC_STALL: u8 = 5;
const REC_RESYNC: u8 = 6;

/// One disk of a group and where its data goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiskSpec {
    pub name: String,
    /// A file or block device (`/dev/disk/by-id/scsi-3…`).
    pub target: Utf8PathBuf,
    pub capacity: u64,
}

/// What a recovery point guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PointKind {
    /// Crash-consistent (a tag from the source, or the agent's 5-minute point).
    Crash,
    /// Application-consistent (a bookmark the source inserted with its applications quiesced).
    App,
    /// The newest acknowledged state (crash-consistent); not stored as a point.
    Latest,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryPoint {
    pub lsn: Lsn,
    pub kind: PointKind,
    /// The tag's name, or "auto" for the agent's own crash-consistent points.
    pub name: String,
    /// When the source wrote the data the point covers, by the source's clock (raised to the
    /// group's latest when it went back): what `recover --point TIME` selects by.
    #[serde(serialize_with = "ser_time")]
    pub source_time: Timestamp,
    /// When the master target made the point, by its own clock: retention and ages use this.
    #[serde(serialize_with = "ser_time")]
    pub received_time: Timestamp,
}

/// JSON carries the full precision, so a time read from it selects exactly its point.
pub fn ser_time<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{t:#}"))
}

/// An undo epoch between two points: its log holds the content at `start` of every block
/// changed before `end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedEpoch {
    pub id: u64,
    pub start: Lsn,
    pub end: Lsn,
    pub undo_len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenEpoch {
    pub id: u64,
    pub start: Lsn,
    /// Committed length of its undo log.
    pub undo_len: u64,
    /// Source time of its first write.
    pub first_change: Option<Timestamp>,
    /// When the master target received its first write (the 5-minute crash point counts from
    /// here); unknown for an epoch a journal of an earlier version opened.
    pub first_received: Option<Timestamp>,
}

/// What a group's source clock did that the master target corrected: frames whose source time
/// was earlier than the group's latest were kept under the latest (so points stay in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourceClock {
    /// How many frames.
    pub clamped: u64,
    /// The largest step back, in microseconds.
    pub largest_step_back: i64,
}

impl SourceClock {
    /// This record with one more frame `step` microseconds back (none if `step` is 0).
    pub fn with_step_back(self, step: i64) -> SourceClock {
        if step <= 0 {
            return self;
        }
        SourceClock {
            clamped: self.clamped.saturating_add(1),
            largest_step_back: self.largest_step_back.max(step),
        }
    }
}

/// Everything the timeline says about a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineState {
    pub group: String,
    pub created: Timestamp,
    pub disks: Vec<DiskSpec>,
    pub last_write: Vec<Timestamp>,
    pub commit_seq: u64,
    pub tip: Lsn,
    pub tip_time: Timestamp,
    pub tip_received: Timestamp,
    pub points: Vec<RecoveryPoint>,
    pub closed: Vec<ClosedEpoch>,
    pub open: OpenEpoch,
    pub next_epoch_id: u64,
    pub stalled: Option<(Timestamp, String)>,
    pub intent: Option<Lsn>,
    /// A resync (full copy or delta) began with the write at this LSN and has not reached its
    /// closing tag: the targets are a mix of old and new blocks, so "latest" is not consistent.
    pub resync: Option<Lsn>,
    pub source_clock: SourceClock,
}

impl TimelineState {
    pub fn new(group: &str, disks: Vec<DiskSpec>, now: Timestamp) -> TimelineState {
        TimelineState {
            group: group.to_owned(),
            created: now,
            last_write: vec![Timestamp(0); disks.len()],
            disks,
            commit_seq: 0,
            tip: Lsn(0),
            tip_time: Timestamp(0),
            tip_received: Timestamp(0),
            points: Vec::new(),
            closed: Vec::new(),
            open: OpenEpoch {
                id: 1,
                start: Lsn(0),
                undo_len: FILE_HEADER_LEN,
                first_change: None,
                first_received: None,
            },
            next_epoch_id: 2,
            stalled: None,
            intent: None,
            resync: None,
            source_clock: SourceClock::default(),
        }
    }
}

/// A timeline record.
#[derive(Debug, Clone)]
pub enum Record {
    Snapshot(Box<TimelineState>),
    Commit {
        seq: u64,
        tip: Lsn,
        tip_time: Timestamp,
        received: Timestamp,
        epoch: u64,
        undo_len: u64,
        first_change: Timestamp,
        last_write: Vec<Timestamp>,
        /// The open epoch's first receive time and the source clock's corrections so far
        /// (`None`: a record of an earlier version, which has neither).
        clock: Option<(Timestamp, SourceClock)>,
    },
    /// Closes the open epoch at the point and opens `next_epoch` (one record, so atomic).
    Point {
        seq: u64,
        point: RecoveryPoint,
        closed_undo_len: u64,
        next_epoch: u64,
        source_clock: Option<SourceClock>,
    },
    /// An in-place recovery to this point has started.
    Intent {
        to: Lsn,
    },
    /// Acknowledgements stopped (retention volume full).
    Stall {
        since: Timestamp,
        reason: String,
    },
    /// A resync begins with the write at this LSN (it ends at the next point).
    Resync {
        from: Lsn,
    },
}

fn kind_code(k: PointKind) -> u8 {
    match k {
        PointKind::Crash => 1,
        PointKind::App => 2,
        PointKind::Latest => 3,
    }
}

fn enc_point(e: &mut Enc, p: &RecoveryPoint) {
    e.u64(p.lsn.0)
        .u8(kind_code(p.kind))
        .str(&p.name)
        .i64(p.source_time.0)
        .i64(p.received_time.0);
}

fn enc_source_clock(e: &mut Enc, c: &SourceClock) {
    e.u64(c.clamped).i64(c.largest_step_back);
}

fn dec_source_clock(d: &mut Dec) -> Result<SourceClock, String> {
    Ok(SourceClock {
        clamped: d.u64()?,
        largest_step_back: d.i64()?,
    })
}

/// Whether a record goes on past the fields every version writes (the clock fields, added later).
fn has_tail(d: &Dec, body: &[u8]) -> bool {
    d.pos < body.len()
}

fn dec_point(d: &mut Dec) -> Result<RecoveryPoint, String> {
    Ok(RecoveryPoint {
        lsn: Lsn(d.u64()?),
        kind: match d.u8()? {
            1 => PointKind::Crash,
            2 => PointKind::App,
            k => return Err(format!("unknown point kind {k}")),
        },
        name: d.str()?,
        source_time: Timestamp(d.i64()?),
        received_time: Timestamp(d.i64()?),
    })
}

impl Record {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut e = Enc::default();
        let kind = match self {
            Record::Snapshot(s) => {
                e.str(&s.group).i64(s.created.0).u32(s.disks.len() as u32);
                for (d, t) in s.disks.iter().zip(&s.last_write) {
                    e.str(&d.name)
                        .str(d.target.as_str())
                        .u64(d.capacity)
                        .i64(t.0);
                }
                e.u64(s.commit_seq)
                    .u64(s.tip.0)
                    .i64(s.tip_time.0)
                    .i64(s.tip_received.0);
                e.u32(s.points.len() as u32);
                for p in &s.points {
                    enc_point(&mut e, p);
                }
                e.u32(s.closed.len() as u32);
                for c in &s.closed {
                    e.u64(c.id).u64(c.start.0).u64(c.end.0).u64(c.undo_len);
                }
                e.u64(s.open.id).u64(s.open.start.0).u64(s.open.undo_len);
                match s.open.first_change {
                    Some(t) => e.u8(1).i64(t.0),
                    None => e.u8(0).i64(0),
                };
                e.u64(s.next_epoch_id);
                match &s.stalled {
                    Some((t, why)) => e.u8(1).i64(t.0).str(why),
                    None => e.u8(0),
                };
                match s.intent {
                    Some(l) => e.u8(1).u64(l.0),
                    None => e.u8(0),
                };
                match s.resync {
                    Some(l) => e.u8(1).u64(l.0),
                    None => e.u8(0),
                };
                match s.open.first_received {
                    Some(t) => e.u8(1).i64(t.0),
                    None => e.u8(0).i64(0),
                };
                enc_source_clock(&mut e, &s.source_clock);
                REC_SNAPSHOT
            }
            Record::Commit {
                seq,
                tip,
                tip_time,
                received,
                epoch,
                undo_len,
                first_change,
                last_write,
                clock,
            } => {
                e.u64(*seq).u64(tip.0).i64(tip_time.0).i64(received.0);
                e.u64(*epoch).u64(*undo_len);
                e.i64(first_change.0).u32(last_write.len() as u32);
                for t in last_write {
                    e.i64(t.0);
                }
                if let Some((first_received, c)) = clock {
                    e.i64(first_received.0);
                    enc_source_clock(&mut e, c);
                }
                REC_COMMIT
            }
            Record::Point {
                seq,
                point,
                closed_undo_len,
                next_epoch,
                source_clock,
            } => {
                e.u64(*seq);
                enc_point(&mut e, point);
                e.u64(*closed_undo_len).u64(*next_epoch);
                if let Some(c) = source_clock {
                    enc_source_clock(&mut e, c);
                }
                REC_POINT
            }
            Record::Intent { to } => {
                e.u64(to.0);
                REC_INTENT
            }
            Record::Stall { since, reason } => {
                e.i64(since.0).str(reason);
                REC_STALL
            }
            Record::Resync { from } => {
                e.u64(from.0);
                REC_RESYNC
            }
        };
        record::encode_record(out, kind, &e.0);
    }

    pub fn decode(kind: u8, body: &[u8]) -> Result<Record, String> {
        let mut d = Dec::new(body);
        let r = match kind {
            REC_SNAPSHOT => {
                let group = d.str()?;
                let created = Timestamp(d.i64()?);
                let n = d.u32()?;
                if n > 256 {
                    return Err(format!("{n} disks"));
                }
                let (mut disks, mut last_write) = (Vec::new(), Vec::new());
                for _ in 0..n {
                    disks.push(DiskSpec {
                        name: d.str()?,
                        target: Utf8PathBuf::from(d.str()?),
                        capacity: d.u64()?,
                    });
                    last_write.push(Timestamp(d.i64()?));
                }
                let (commit_seq, tip, tip_time, tip_received) = (
                    d.u64()?,
                    Lsn(d.u64()?),
                    Timestamp(d.i64()?),
                    Timestamp(d.i64()?),
                );
                let n = d.u32()?;
                let mut points = Vec::new();
                for _ in 0..n {
                    points.push(dec_point(&mut d)?);
                }
                let n = d.u32()?;
                let mut closed = Vec::new();
                for _ in 0..n {
                    closed.push(ClosedEpoch {
                        id: d.u64()?,
                        start: Lsn(d.u64()?),
                        end: Lsn(d.u64()?),
                        undo_len: d.u64()?,
                    });
                }
                let (id, start, undo_len) = (d.u64()?, Lsn(d.u64()?), d.u64()?);
                let has = d.u8()?;
                let t = Timestamp(d.i64()?);
                let mut open = OpenEpoch {
                    id,
                    start,
                    undo_len,
                    first_change: (has == 1).then_some(t),
                    first_received: None,
                };
                let next_epoch_id = d.u64()?;
                let stalled = match d.u8()? {
                    1 => Some((Timestamp(d.i64()?), d.str()?)),
                    _ => None,
                };
                let intent = match d.u8()? {
                    1 => Some(Lsn(d.u64()?)),
                    _ => None,
                };
                let resync = match d.u8()? {
                    1 => Some(Lsn(d.u64()?)),
                    _ => None,
                };
                let mut source_clock = SourceClock::default();
                if has_tail(&d, body) {
                    let has = d.u8()?;
                    let t = Timestamp(d.i64()?);
                    open.first_received = (has == 1).then_some(t);
                    source_clock = dec_source_clock(&mut d)?;
                }
                Record::Snapshot(Box::new(TimelineState {
                    group,
                    created,
                    disks,
                    last_write,
                    commit_seq,
                    tip,
                    tip_time,
                    tip_received,
                    points,
                    closed,
                    open,
                    next_epoch_id,
                    stalled,
                    intent,
                    resync,
                    source_clock,
                }))
            }
            REC_COMMIT => {
                let (seq, tip, tip_time, received) = (
                    d.u64()?,
                    Lsn(d.u64()?),
                    Timestamp(d.i64()?),
                    Timestamp(d.i64()?),
                );
                let (epoch, undo_len) = (d.u64()?, d.u64()?);
                let first_change = Timestamp(d.i64()?);
                let n = d.u32()?;
                if n > 256 {
                    return Err(format!("{n} disks"));
                }
                let mut last_write = Vec::new();
                for _ in 0..n {
                    last_write.push(Timestamp(d.i64()?));
                }
                let clock = if has_tail(&d, body) {
                    Some((Timestamp(d.i64()?), dec_source_clock(&mut d)?))
                } else {
                    None
                };
                Record::Commit {
                    seq,
                    tip,
                    tip_time,
                    received,
                    epoch,
                    undo_len,
                    first_change,
                    last_write,
                    clock,
                }
            }
            REC_POINT => Record::Point {
                seq: d.u64()?,
                point: dec_point(&mut d)?,
                closed_undo_len: d.u64()?,
                next_epoch: d.u64()?,
                source_clock: if has_tail(&d, body) {
                    Some(dec_source_clock(&mut d)?)
                } else {
                    None
                },
            },
            REC_INTENT => Record::Intent { to: Lsn(d.u64()?) },
            REC_STALL => Record::Stall {
                since: Timestamp(d.i64()?),
                reason: d.str()?,
            },
            REC_RESYNC => Record::Resync {
                from: Lsn(d.u64()?),
            },
            k => return Err(format!("unknown timeline record kind {k}")),
        };
        if d.pos != body.len() {
            return Err("trailing bytes in a timeline record".into());
        }
        Ok(r)
    }

    /// Applies the record to the state, refusing one that contradicts it.
    pub fn apply(&self, s: &mut TimelineState) -> Result<(), String> {
        match self {
            Record::Snapshot(snap) => *s = (**snap).clone(),
            Record::Commit {
                seq,
                tip,
                tip_time,
                received,
                epoch,
                undo_len,
                first_change,
                last_write,
                clock,
            } => {
                if *seq != s.commit_seq + 1 || *epoch != s.open.id || *tip <= s.tip {
                    return Err("commit record out of sequence".into());
                }
                if *undo_len < s.open.undo_len || last_write.len() != s.disks.len() {
                    return Err("commit record contradicts the timeline".into());
                }
                s.commit_seq = *seq;
                s.tip = *tip;
                s.tip_time = *tip_time;
                s.tip_received = *received;
                s.open.undo_len = *undo_len;
                s.open.first_change = Some(*first_change);
                match clock {
                    Some((first_received, c)) => {
                        s.open.first_received = Some(*first_received);
                        s.source_clock = *c;
                    }
                    // An earlier version's record: the epoch began no later than this batch.
                    None => {
                        s.open.first_received = s.open.first_received.or(Some(*received));
                    }
                }
                s.last_write = last_write.clone();
                s.stalled = None;
            }
            Record::Point {
                seq,
                point,
                closed_undo_len,
                next_epoch,
                source_clock,
            } => {
                if *seq != s.commit_seq + 1
                    || *closed_undo_len != s.open.undo_len
                    || *next_epoch != s.next_epoch_id
                    || point.lsn < s.tip
                {
                    return Err("point record out of sequence".into());
                }
                s.commit_seq = *seq;
                s.closed.push(ClosedEpoch {
                    id: s.open.id,
                    start: s.open.start,
                    end: point.lsn,
                    undo_len: *closed_undo_len,
                });
                s.open = OpenEpoch {
                    id: *next_epoch,
                    start: point.lsn,
                    undo_len: FILE_HEADER_LEN,
                    first_change: None,
                    first_received: None,
                };
                s.next_epoch_id = next_epoch + 1;
                if point.lsn > s.tip {
                    s.tip = point.lsn;
                    s.tip_time = point.source_time;
                }
                s.tip_received = point.received_time;
                if let Some(c) = source_clock {
                    s.source_clock = *c;
                }
                s.points.push(point.clone());
                s.stalled = None;
                s.resync = None;
            }
            Record::Intent { to } => {
                if !s.points.iter().any(|p| p.lsn == *to) {
                    return Err("recovery intent names no point".into());
                }
                s.intent = Some(*to);
            }
            Record::Stall { since, reason } => s.stalled = Some((*since, reason.clone())),
            Record::Resync { from } => {
                if *from <= s.tip || s.resync.is_some() {
                    return Err("resync record out of sequence".into());
                }
                s.resync = Some(*from);
            }
        }
        Ok(())
    }
}

/// Reads the timeline: cuts a torn tail (noted), refuses damage in the middle.
/// With `repair` false (status, while another process may be appending) nothing is written.
pub fn load(
    fs: &dyn Fs,
    dir: &Utf8Path,
    notes: &mut Vec<String>,
    repair: bool,
) -> Result<(TimelineState, Box<dyn FsFile>, u64), JournalError> {
    let path = dir.join(TIMELINE_FILE);
    let mode = if repair {
        OpenMode::ReadWrite
    } else {
        OpenMode::Read
    };
    let f = fs
        .open(&path, mode)
        .map_err(|e| JournalError::io(&path, "open", e))?;
    record::check_file_header(f.as_ref(), &path, FileKind::Timeline)?;
    let len = f.len().map_err(|e| JournalError::io(&path, "size", e))?;
    let mut bytes = vec![0u8; len as usize];
    f.read_exact_at(&mut bytes, 0)
        .map_err(|e| JournalError::io(&path, "read", e))?;
    let mut state: Option<TimelineState> = None;
    let mut at = FILE_HEADER_LEN;
    while at < len {
        match record::parse_record(&bytes, at) {
            Ok((rec, next)) => {
                let r = Record::decode(rec.kind, &rec.body)
                    .map_err(|e| JournalError::damaged(&path, at, &e))?;
                match (&mut state, &r) {
                    (None, Record::Snapshot(s)) => state = Some((**s).clone()),
                    (None, _) => {
                        return Err(JournalError::damaged(
                            &path,
                            at,
                            "the first record is not a snapshot",
                        ))
                    }
                    (Some(s), r) => r
                        .apply(s)
                        .map_err(|e| JournalError::damaged(&path, at, &e))?,
                }
                at = next;
            }
            Err(bad) => {
                if let Some(later) = record::valid_record_after(&bytes, at) {
                    return Err(JournalError::damaged(
                        &path,
                        bad.offset,
                        &format!(
                            "{} (valid records follow at byte {later}, so this is not a torn tail)",
                            bad.what
                        ),
                    ));
                }
                // Only the last append can be unfinished: every append is flushed before the next.
                notes.push(format!(
                    "{path}: cut a torn tail at byte {} ({}; {} bytes dropped)",
                    bad.offset,
                    bad.what,
                    len - bad.offset
                ));
                if repair {
                    f.set_len(at)
                        .and_then(|_| f.sync_data())
                        .map_err(|e| JournalError::io(&path, "cut torn tail", e))?;
                }
                break;
            }
        }
    }
    let state =
        state.ok_or_else(|| JournalError::damaged(&path, FILE_HEADER_LEN, "no snapshot record"))?;
    let end = at.min(len);
    Ok((state, f, end))
}

/// Writes a timeline holding one snapshot: temporary file, flush, rename, flush the directory.
pub fn write_snapshot(
    fs: &dyn Fs,
    dir: &Utf8Path,
    state: &TimelineState,
) -> Result<(Box<dyn FsFile>, u64), JournalError> {
    let tmp = dir.join(TIMELINE_TMP);
    let fin = dir.join(TIMELINE_FILE);
    let mut buf = record::file_header(FileKind::Timeline, 0).to_vec();
    Record::Snapshot(Box::new(state.clone())).encode(&mut buf);
    let f = fs
        .open(&tmp, OpenMode::CreateTruncate)
        .map_err(|e| JournalError::io(&tmp, "create", e))?;
    f.write_all_at(&buf, 0)
        .map_err(|e| JournalError::io(&tmp, "write", e))?;
    f.sync_data()
        .map_err(|e| JournalError::io(&tmp, "flush", e))?;
    fs.rename(&tmp, &fin)
        .map_err(|e| JournalError::io(&tmp, "rename", e))?;
    fs.sync_dir(dir)
        .map_err(|e| JournalError::io(dir, "sync directory", e))?;
    Ok((f, buf.len() as u64))
}
