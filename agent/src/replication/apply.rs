//! Applying a recorded change stream (`mt-agent apply --from FILE`: frames of the network's format
//! one after another) to a group: the file's counterpart of `net::receiver`. One thread reads the
//! frames and checks their hashes while the caller's thread hands them to the journal, so decoding
//! overlaps the journal's flushes.
//!
//! It sits beside the journal, not in it: the journal never reads `std::fs` (all its I/O goes
//! through `io::Fs`, so the crash tests can simulate the disk), and a recorded stream is an input
//! file, not journal state. It only feeds [`GroupJournal::apply_frame`] and
//! [`GroupJournal::commit`]; it never writes a target or a journal file itself.

use crate::replication::frame::{Frame, FrameReader};
use crate::replication::journal::{FrameOutcome, GroupJournal, Lsn};
use anyhow::Context;
use camino::Utf8Path;
use std::io::Read;

/// What one recorded stream did to a group, including when it stopped early.
#[derive(Debug)]
pub struct AppliedStream {
    /// The acknowledged LSN before the stream.
    pub first_acked: Lsn,
    /// The acknowledged LSN after it (everything valid before an error included).
    pub acked: Lsn,
    /// Frames read and handed to the journal, the start frame included.
    pub frames: u64,
    /// Writes and tags the group had already acknowledged (the stream was applied before).
    pub resent_skipped: u64,
    /// Recovery points the stream's tags created.
    pub points: u64,
    /// Why the stream stopped before its end (a bad frame, a refused frame, a failed commit).
    pub stopped: Option<anyhow::Error>,
}

impl AppliedStream {
    /// `Err` if the stream stopped before its end; the counts stay meaningful either way.
    pub fn into_result(self) -> anyhow::Result<()> {
        self.stopped.map_or(Ok(()), Err)
    }
}

/// Frames in flight between the reading thread and the journal: at most 16 frames of at most
/// 4 MiB (about two group-commit batches), so memory is bounded whatever the file's size.
const FRAMES_IN_FLIGHT: usize = 16;
/// The read buffer of a recorded stream: one whole largest frame.
const READ_BUFFER: usize = 4 << 20;

/// Applies the recorded stream in the file `from`. `Err` only if the file cannot be opened (then
/// nothing was applied); any later failure is in [`AppliedStream::stopped`].
pub fn apply_recorded(jr: &mut GroupJournal, from: &Utf8Path) -> anyhow::Result<AppliedStream> {
    let file = std::fs::File::open(from).with_context(|| format!("cannot open {from}"))?;
    Ok(apply_stream(
        jr,
        std::io::BufReader::with_capacity(READ_BUFFER, file),
        from,
    ))
}

/// Applies the frames read from `input` (named `from` in errors). The stream must begin with a
/// start frame naming the group. Whatever was valid before an error is still made durable and
/// acknowledged.
pub fn apply_stream<R: Read + Send>(
    jr: &mut GroupJournal,
    input: R,
    from: &Utf8Path,
) -> AppliedStream {
    let mut reader = FrameReader::new(input);
    let first_acked = jr.acked();
    let (mut frames, mut dups, mut points) = (0u64, 0u64, 0u64);
    let mut started = false;
    let (tx, rx) = std::sync::mpsc::sync_channel(FRAMES_IN_FLIGHT);
    let result: anyhow::Result<()> = std::thread::scope(|s| {
        s.spawn(move || loop {
            let (index, offset) = reader.position();
            let next = reader.next_frame();
            let end = !matches!(next, Ok(Some(_)));
            if tx.send((index, offset, next)).is_err() || end {
                break;
            }
        });
        let rx = rx;
        loop {
            let Ok((index, offset, next)) = rx.recv() else {
                break Ok(());
            };
            let frame = match next {
                Ok(Some(f)) => f,
                Ok(None) => break Ok(()),
                Err(e) => break Err(anyhow::anyhow!("{from}: {e}")),
            };
            if !started && !matches!(frame, Frame::Start { .. }) {
                break Err(anyhow::anyhow!(
                    "{from}: frame #{index} (byte {offset}): the stream must begin with a start frame naming the group"
                ));
            }
            started = true;
            frames += 1;
            match jr.apply_frame(frame) {
                Ok(FrameOutcome::Duplicate) => dups += 1,
                Ok(FrameOutcome::Accepted) => {}
                Ok(FrameOutcome::PointCreated(_)) => points += 1,
                Err(e) => {
                    break Err(anyhow::Error::new(e)
                        .context(format!("{from}: frame #{index} (byte {offset})")))
                }
            }
        }
    });
    let commit = jr.commit();
    AppliedStream {
        first_acked,
        acked: jr.acked(),
        frames,
        // The journal reports the start frame as a duplicate too; it is no resend.
        resent_skipped: dups.saturating_sub(1),
        points,
        // A bad frame is the cause; a commit that also failed after it is a consequence.
        stopped: result.err().or(commit.err().map(anyhow::Error::new)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::frame::{encode, TagKind, BLOCK_SIZE};
    use crate::replication::journal::clock::{FakeClock, Timestamp};
    use crate::replication::journal::io::Fs;
    use crate::replication::journal::policy::Policy;
    use crate::replication::journal::sim::SimFs;
    use crate::replication::journal::{DiskSpec, JournalError, RetentionVolume};
    use camino::Utf8PathBuf;
    use std::sync::Arc;

    const T0: Timestamp = Timestamp(1_700_000_000);

    fn group() -> GroupJournal {
        let fs = SimFs::new();
        fs.create_dir_all(Utf8Path::new("/ret")).unwrap();
        let vol = RetentionVolume {
            fs: Arc::new(fs.clone()),
            clock: Arc::new(FakeClock::new(T0)),
            root: "/ret".into(),
            policy: Policy::runbook(),
            budget: None,
            batch_bytes: 4 * BLOCK_SIZE,
        };
        let target = Utf8PathBuf::from("/ret/d0.img");
        fs.put(&target, &vec![0; 16 * BLOCK_SIZE as usize]);
        let disk = DiskSpec {
            name: "d0".into(),
            target,
            capacity: 16 * BLOCK_SIZE,
        };
        vol.create_group("g", vec![disk]).unwrap();
        vol.open_group("g").unwrap()
    }

    fn start() -> Frame {
        Frame::Start {
            group: "g".into(),
            disks: vec![("d0".into(), 16 * BLOCK_SIZE)],
        }
    }

    fn write(lsn: u64) -> Frame {
        Frame::Write {
            lsn: Lsn(lsn),
            source_time: T0,
            disk: 0,
            offset: lsn * BLOCK_SIZE,
            data: vec![lsn as u8; BLOCK_SIZE as usize],
            resync: false,
        }
    }

    fn stream(frames: &[Frame]) -> Vec<u8> {
        frames.iter().flat_map(encode).collect()
    }

    #[test]
    fn a_stream_applied_twice_skips_its_resent_frames() {
        let mut jr = group();
        let tag = Frame::Tag {
            lsn: Lsn(3),
            source_time: T0,
            kind: TagKind::App,
            name: "p".into(),
        };
        let bytes = stream(&[start(), write(1), write(2), tag]);
        let first = apply_stream(&mut jr, &bytes[..], "s".into());
        assert!(first.stopped.is_none(), "{:?}", first.stopped);
        assert_eq!((first.first_acked, first.acked), (Lsn(0), Lsn(3)));
        assert_eq!(
            (first.frames, first.resent_skipped, first.points),
            (4, 0, 1)
        );
        let again = apply_stream(&mut jr, &bytes[..], "s".into());
        assert_eq!((again.first_acked, again.acked), (Lsn(3), Lsn(3)));
        assert_eq!(
            (again.frames, again.resent_skipped, again.points),
            (4, 3, 0)
        );
    }

    #[test]
    fn a_stream_without_a_start_frame_is_refused_naming_the_frame() {
        let mut jr = group();
        let r = apply_stream(&mut jr, &stream(&[write(1)])[..], "s".into());
        let e = format!("{:#}", r.into_result().unwrap_err());
        assert!(
            e.starts_with("s: frame #0 (byte 0): the stream must begin with a start frame"),
            "{e}"
        );
    }

    #[test]
    fn a_recorded_stream_cannot_end_a_resync_with_a_tag_of_its_own() {
        let mut jr = group();
        let resync_write = |lsn| {
            let mut f = write(lsn);
            if let Frame::Write { resync, .. } = &mut f {
                *resync = true;
            }
            f
        };
        let tag = Frame::Tag {
            lsn: Lsn(3),
            source_time: T0,
            kind: TagKind::Crash,
            name: "hostile".into(),
        };
        let r = apply_stream(
            &mut jr,
            &stream(&[start(), resync_write(1), resync_write(2), tag])[..],
            "s".into(),
        );
        assert_eq!((r.acked, r.points), (Lsn(2), 0));
        let e = format!("{:#}", r.into_result().unwrap_err());
        assert!(
            e.starts_with("s: frame #3 (byte ")
                && e.contains("LSN 3: tag \"hostile\" while the resync of group g begun at LSN 1"),
            "{e}"
        );
        assert!(jr.points().is_empty());
        assert!(jr.latest_is_consistent().is_err());
    }

    #[test]
    fn what_was_valid_before_a_refused_frame_is_acknowledged() {
        let mut jr = group();
        let mut beyond = write(2);
        if let Frame::Write { offset, .. } = &mut beyond {
            *offset = 64 * BLOCK_SIZE;
        }
        let r = apply_stream(
            &mut jr,
            &stream(&[start(), write(1), beyond])[..],
            "s".into(),
        );
        assert_eq!((r.acked, r.frames), (Lsn(1), 3));
        let e = r.into_result().unwrap_err();
        assert!(format!("{e:#}").starts_with("s: frame #2 (byte "), "{e:#}");
        assert!(e
            .chain()
            .any(|c| c.downcast_ref::<JournalError>().is_some()));
    }
}
