//! The journal's resync mode (see "Resync mode" in the format document): the Resync record that
//! opens it, the larger batches, and the rules that hold until its closing tag ("latest" is
//! refused, change-stream writes are refused). Which old content a resync batch skips saving is
//! decided in `ingest`, from [`TimelineState::resync`](super::TimelineState).

use super::timeline::{self, TimelineState};
use super::{GroupJournal, JournalError, Lsn, Result};

/// A resync commits in larger batches (fewer flushes; bounded memory all the same).
pub const RESYNC_BATCH_BYTES: u64 = 32 << 20;

impl GroupJournal {
    /// A write flagged *resync* opens the mode (durably, before it is taken); a write without
    /// the flag is refused while the mode is open.
    pub(super) fn enter_or_check_resync(&mut self, lsn: Lsn, resync: bool) -> Result<()> {
        match (resync, self.state.resync) {
            (true, None) => self.begin_resync(lsn),
            (false, Some(from)) => Err(JournalError::Rejected(format!(
                "LSN {lsn}: a change-stream write while the resync of group {} begun at LSN {from} has not reached its closing tag; finish the resync first (mt-agent send --delta)",
                self.state.group
            ))),
            _ => Ok(()),
        }
    }

    /// Bytes of writes that make a batch.
    pub(super) fn batch_limit(&self) -> u64 {
        if self.state.resync.is_some() {
            self.vol.batch_bytes.max(RESYNC_BATCH_BYTES)
        } else {
            self.vol.batch_bytes
        }
    }

    /// Records durably that a resync starts at `lsn`, after committing what came before it.
    fn begin_resync(&mut self, lsn: Lsn) -> Result<()> {
        self.commit()?;
        let rec = timeline::Record::Resync { from: lsn };
        let r = self.append_timeline(&rec).and_then(|()| {
            rec.apply(&mut self.state)
                .map_err(|e| JournalError::damaged(&self.timeline_path(), self.timeline_len, &e))
        });
        self.guard(r)
    }

    /// Whether "latest" is a consistent state (see [`TimelineState::latest_is_consistent`]).
    pub fn latest_is_consistent(&self) -> std::result::Result<(), String> {
        self.state.latest_is_consistent()
    }
}

impl TimelineState {
    /// Whether "latest" is a consistent state: not while a resync is unfinished.
    pub fn latest_is_consistent(&self) -> std::result::Result<(), String> {
        match self.resync {
            None => Ok(()),
            Some(from) => Err(format!(
                "group {} is in the middle of a resync begun at LSN {from}: its newest state mixes old and new blocks and is not a recovery point until the resync's closing tag; recover one of its points instead (mt-agent points {})",
                self.group, self.group
            )),
        }
    }
}
