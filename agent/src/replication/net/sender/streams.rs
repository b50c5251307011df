//! Which recorded change streams this sender has sent into each group, in order, and where each
//! one's LSNs land in the group (`STATE/streams/GROUP`, one line per stream: its identity and
//! the group LSN before its first frame). A stream is identified by its content (a digest of its
//! first MiB: a recording that grew since is the same stream and resumes where it was), so a
//! resumed send maps every frame to the same LSN as before, and a stream sent again after a
//! newer one is refused instead of being applied a second time at new LSNs. Written only through
//! the one atomic writer.

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use std::io::Read;

/// How much of a stream file names it: its start frame and first frames, enough that two
/// different recordings never share it, and fixed so that appending to a recording keeps it.
const IDENTITY_PREFIX: u64 = 1 << 20;

/// The streams sent into one group, oldest first.
pub struct StreamLog {
    path: Utf8PathBuf,
    /// (identity, group LSN before the stream's first frame).
    sent: Vec<(String, u64)>,
}

/// A stream file's identity: the BLAKE3 digest of its first [`IDENTITY_PREFIX`] bytes.
pub fn identify(path: &Utf8Path) -> Result<String> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open the stream {path}"))?;
    let mut h = blake3::Hasher::new();
    h.update_reader(file.take(IDENTITY_PREFIX))
        .with_context(|| format!("cannot read {path}"))?;
    Ok(h.finalize().to_hex().to_string())
}

impl StreamLog {
    pub fn load(state: &Utf8Path, group: &str) -> Result<StreamLog> {
        let path = state.join("streams").join(group);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {path}")),
        };
        let mut sent = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let parsed = line
                .split_once(' ')
                .and_then(|(id, base)| Some((id.to_owned(), base.trim().parse::<u64>().ok()?)));
            match parsed {
                Some(entry) => sent.push(entry),
                None => bail!(
                    "{path} line {}: not \"IDENTITY LSN\"; it records which streams were sent into group {group}: repair it, or remove it only if no stream of this group will be sent again",
                    n + 1
                ),
            }
        }
        Ok(StreamLog { path, sent })
    }

    /// The group LSN before the stream's first frame: where it landed before if it is the
    /// stream sent last, `acked` (recorded now) if it was never sent. A stream sent before
    /// another one is refused: its writes are in the group already, and the newer stream's
    /// writes after them.
    pub fn base_for(&mut self, id: &str, file: &Utf8Path, acked: u64) -> Result<u64> {
        match self.sent.iter().position(|(i, _)| i == id) {
            Some(k) if k + 1 == self.sent.len() => Ok(self.sent[k].1),
            Some(k) => bail!(
                "{file} was sent into this group before {} newer stream(s) (it starts after LSN {}); sending it again would apply its writes a second time, after newer ones; record a new stream, or run --delta to make the targets equal the sources",
                self.sent.len() - k - 1,
                self.sent[k].1
            ),
            None => {
                self.sent.push((id.to_owned(), acked));
                self.save()?;
                Ok(acked)
            }
        }
    }

    /// A resync just made the targets equal the sources: the stream of the same command (if
    /// any) goes on after it, at new LSNs. Older streams stay refused.
    pub fn after_resync(&mut self, id: Option<&str>) -> Result<()> {
        let before = self.sent.len();
        self.sent.retain(|(i, _)| Some(i.as_str()) != id);
        if self.sent.len() != before {
            self.save()?;
        }
        Ok(())
    }

    fn save(&self) -> Result<()> {
        let text: String = self
            .sent
            .iter()
            .map(|(id, base)| format!("{id} {base}\n"))
            .collect();
        crate::atomic_file::write_atomic(&self.path, text.as_bytes(), 0o644)
            .with_context(|| format!("cannot write {}", self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::setup::tests::scratch;

    #[test]
    fn the_last_stream_resumes_a_new_one_is_recorded_and_an_older_one_is_refused() {
        let dir = scratch("stream-log");
        let f = Utf8Path::new("s.mtfr");
        let mut log = StreamLog::load(&dir, "g").unwrap();
        assert_eq!(log.base_for("a", f, 10).unwrap(), 10);
        assert_eq!(log.base_for("a", f, 25).unwrap(), 10, "resumed");
        assert_eq!(log.base_for("b", f, 40).unwrap(), 40);
        let mut again = StreamLog::load(&dir, "g").unwrap();
        assert_eq!(again.base_for("b", f, 55).unwrap(), 40, "kept on disk");
        let e = again.base_for("a", f, 55).unwrap_err().to_string();
        assert!(
            e.contains("before 1 newer stream") && e.contains("LSN 10"),
            "{e}"
        );
        again.after_resync(Some("b")).unwrap();
        assert_eq!(
            again.base_for("b", f, 70).unwrap(),
            70,
            "rebased after a resync"
        );
        assert!(again.base_for("a", f, 70).is_err(), "still refused");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_record_is_an_error_naming_the_line() {
        let dir = scratch("stream-log-bad");
        std::fs::create_dir_all(dir.join("streams")).unwrap();
        std::fs::write(dir.join("streams/g"), "a 1\nnot-a-record\n").unwrap();
        let e = StreamLog::load(&dir, "g").err().unwrap().to_string();
        assert!(e.contains("line 2"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_recording_that_grew_keeps_its_identity() {
        let dir = scratch("stream-id");
        let p = dir.join("s");
        let mut bytes = vec![7u8; (IDENTITY_PREFIX + 10) as usize];
        std::fs::write(&p, &bytes).unwrap();
        let id = identify(&p).unwrap();
        bytes.extend_from_slice(b"more frames");
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(identify(&p).unwrap(), id);
        bytes[5] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        assert_ne!(identify(&p).unwrap(), id);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
