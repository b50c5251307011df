//! The retention journal: one ordered timeline per replication group, the undo store that keeps
//! 24 hours of recovery points, and recovery. Format: `agent/docs/journal-format.md`.
//!
//! Design (undo journal with a write-ahead rollback log, see the format document for why):
//! a batch of writes is acknowledged only after (1) the old content of every block it overwrites
//! is durable, in the open epoch's undo log (first overwrite of a block since the last point) or
//! in the rollback log (later overwrites), (2) the new data is durable on the targets, and (3) a
//! commit record is durable in the timeline. A crash anywhere rolls the unfinished batch back, so
//! the targets always hold exactly the acknowledged prefix of the stream ("latest" needs no
//! replay), and every recovery point is reached by applying undo epochs newest first.
//!
//! Everything runs on [`io::Fs`] and [`clock::Clock`]; this module never touches `std::fs` or the
//! system clock, and never panics on anything read from disk.
//!
//! This file holds the vocabulary every part shares ([`Lsn`], [`JournalError`]) and the map:
//! `volume` (the retention volume and a group's files), `group` (an open group, and its
//! recovery from a crash), `ingest` (frames to durable batches), `resync` (the resync mode),
//! `points` (recovery points, pruning, compaction), `recovery` (recovery to a point), `blocks`
//! (undo and rollback records), `record` (the framing of every log), `timeline` (the timeline's
//! records and state), `view` (a group read without its lock while another process writes it).

mod blocks;
pub mod clock;
#[cfg(test)]
mod clock_rule_tests;
mod group;
mod ingest;
pub mod io;
mod points;
pub mod policy;
pub mod record;
mod recovery;
mod resync;
pub mod sim;
pub(crate) mod timeline;
mod view;
mod volume;

use camino::{Utf8Path, Utf8PathBuf};
pub use group::GroupJournal;
pub use ingest::FrameOutcome;
pub use points::PointSelector;
pub use recovery::Recovered;
pub use resync::RESYNC_BATCH_BYTES;
pub use timeline::{ClosedEpoch, DiskSpec, OpenEpoch, PointKind, RecoveryPoint, TimelineState};
pub use view::GroupView;
pub use volume::{valid_group_name, RetentionVolume};

/// A position in a group's timeline. Every write, tag and recovery point has one; they increase
/// by one per frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
pub struct Lsn(pub u64);

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Group commit: a batch is made durable once it holds this many bytes of writes (or at a tag,
/// or when the caller flushes).
pub const DEFAULT_BATCH_BYTES: u64 = 8 << 20;

/// Why the journal refused or stopped.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {op} failed: {source}; the stream is stopped (a failed flush is never retried: restart the agent, it recovers from what is durable)")]
    Io {
        path: Utf8PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("{path} is damaged at byte {offset}: {what}")]
    Damaged {
        path: Utf8PathBuf,
        offset: u64,
        what: String,
    },
    #[error("retention volume full: {0}; nothing more is acknowledged until space is freed (raise the retention budget or free space on the volume, then resume the stream)")]
    RetentionFull(String),
    #[error("{0}")]
    Rejected(String),
}

impl JournalError {
    pub fn io(path: &Utf8Path, op: &'static str, source: std::io::Error) -> JournalError {
        JournalError::Io {
            path: path.to_owned(),
            op,
            source,
        }
    }
    pub fn damaged(path: &Utf8Path, offset: u64, what: &str) -> JournalError {
        JournalError::Damaged {
            path: path.to_owned(),
            offset,
            what: what.to_owned(),
        }
    }
}

type Result<T> = std::result::Result<T, JournalError>;
