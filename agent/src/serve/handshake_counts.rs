//! How many handshakes serve refused, by kind, since it started: the counters, the one file
//! they are kept in (`STATE/handshake-counts.json`, written through the atomic writer at most
//! once a second and when serve stops) and the line `mt-agent status` prints from it. It
//! counts and writes; what is refused, and why, is decided elsewhere.

use crate::replication::journal::clock::{Clock, SystemClock};
use crate::replication::net::enrol_gate::RefusalKind;
use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;

/// The file in serve's state directory.
pub const FILE_NAME: &str = "handshake-counts.json";
/// The counters reach the file at most this often: a flood of refusals costs one small write
/// a second, and `status` is at most this far behind.
pub const WRITE_EVERY: Duration = Duration::from_secs(1);

/// The counters, as the file holds them and `status --json` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeCounts {
    /// When serve started counting (RFC 3339, UTC).
    pub since: String,
    /// When the file was last written.
    pub updated: String,
    /// Senders enrolled (the passphrase proved).
    pub enrolled: u64,
    /// Enrolments whose passphrase was wrong (evaluated and failed).
    pub wrong_passphrase: u64,
    /// Enrolments refused unevaluated because earlier failures must be waited out.
    pub delayed: u64,
    /// Sessions refused because their key is not enrolled.
    pub unknown_key: u64,
    /// Every other refused handshake: no or a bad hello, a peer that left or ran out of time,
    /// enrolment closed for want of a passphrase, a connection over the handshake caps.
    pub other: u64,
}

/// What became of one handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Enrolled,
    Session,
    /// Refused; the kind if it is one the counters tell apart.
    Refused(Option<RefusalKind>),
}

/// The counters serve's threads share and their file.
pub struct HandshakeCounter {
    path: Utf8PathBuf,
    state: Mutex<(HandshakeCounts, bool)>,
}

impl HandshakeCounter {
    /// Counting from now, into `STATE/`[`FILE_NAME`].
    pub fn new(state_dir: &Utf8Path) -> HandshakeCounter {
        let counts = HandshakeCounts {
            since: SystemClock.now().to_string(),
            ..HandshakeCounts::default()
        };
        HandshakeCounter {
            path: state_dir.join(FILE_NAME),
            // Dirty from the start: the first write says since when serve counts.
            state: Mutex::new((counts, true)),
        }
    }

    pub fn note(&self, outcome: Outcome) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let c = &mut s.0;
        let n = match outcome {
            Outcome::Session => return,
            Outcome::Enrolled => &mut c.enrolled,
            Outcome::Refused(Some(RefusalKind::WrongPassphrase)) => &mut c.wrong_passphrase,
            Outcome::Refused(Some(RefusalKind::Delayed)) => &mut c.delayed,
            Outcome::Refused(Some(RefusalKind::UnknownKey)) => &mut c.unknown_key,
            Outcome::Refused(Some(RefusalKind::NoPassphrase) | None) => &mut c.other,
        };
        *n = n.saturating_add(1);
        s.1 = true;
    }

    /// Writes the counters if they changed since the last write.
    pub fn flush(&self) -> Result<()> {
        let text = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if !s.1 {
                return Ok(());
            }
            s.1 = false;
            s.0.updated = SystemClock.now().to_string();
            serde_json::to_string_pretty(&s.0)? + "\n"
        };
        crate::atomic_file::write_atomic(&self.path, text.as_bytes(), 0o644)
    }
}

/// The counters serve last wrote in `state_dir`; `None` if it never wrote any there.
pub fn load(state_dir: &Utf8Path) -> Result<Option<HandshakeCounts>> {
    let path = state_dir.join(FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {path}")),
    };
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("{path} is not a file of handshake counts"))
}

/// The line `status` prints.
pub fn render(counts: Option<&HandshakeCounts>, state_dir: &Utf8Path) -> String {
    match counts {
        None => format!(
            "handshakes: no counts (serve writes them to {} while it runs)",
            state_dir.join(FILE_NAME)
        ),
        Some(c) => format!(
            "handshakes since {}: {} refused for a wrong passphrase, {} delayed, {} unknown key, {} other; {} enrolled (as of {})",
            c.since, c.wrong_passphrase, c.delayed, c.unknown_key, c.other, c.enrolled, c.updated
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reach_the_file_once_per_change_and_read_back() {
        let dir = testkit::scratch("handshake-counts").join("state");
        let c = HandshakeCounter::new(&dir);
        assert_eq!(load(&dir).unwrap(), None);
        c.flush().unwrap();
        let first = load(&dir).unwrap().unwrap();
        assert_eq!(first.wrong_passphrase, 0);
        for o in [
            Outcome::Refused(Some(RefusalKind::WrongPassphrase)),
            Outcome::Refused(Some(RefusalKind::WrongPassphrase)),
            Outcome::Refused(Some(RefusalKind::Delayed)),
            Outcome::Refused(Some(RefusalKind::UnknownKey)),
            Outcome::Refused(Some(RefusalKind::NoPassphrase)),
            Outcome::Refused(None),
            Outcome::Session,
            Outcome::Enrolled,
        ] {
            c.note(o);
        }
        c.flush().unwrap();
        let got = load(&dir).unwrap().unwrap();
        assert_eq!(
            (
                got.wrong_passphrase,
                got.delayed,
                got.unknown_key,
                got.other,
                got.enrolled
            ),
            (2, 1, 1, 2, 1)
        );
        assert_eq!(got.since, first.since);
        // Unchanged: not written again.
        std::fs::remove_file(dir.join(FILE_NAME)).unwrap();
        c.flush().unwrap();
        assert_eq!(load(&dir).unwrap(), None);
        let line = render(Some(&got), &dir);
        assert!(
            line.contains(
                "2 refused for a wrong passphrase, 1 delayed, 1 unknown key, 2 other; 1 enrolled"
            ),
            "{line}"
        );
    }
}
