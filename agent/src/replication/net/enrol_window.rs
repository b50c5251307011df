//! The enrolment window, `STATE/enrolment-window`: whether the master target accepts
//! enrolments now. `serve` sets it when it starts (open for `--enrol-for`), `mt-agent senders
//! open` and `close` change it while serve runs, and serve reads it at each enrolment. One line:
//! `open until TIME` (RFC 3339), `open` (no end) or `closed`; no file is closed. Written only
//! through the atomic writer; this module only says whether the window is open.

use crate::replication::journal::clock::{Clock, SystemClock, Timestamp};
use anyhow::{anyhow, Context, Result};
use camino::Utf8Path;
use std::time::Duration;

/// The window's file in the master target's state directory.
pub const FILE: &str = "enrolment-window";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrolmentWindow {
    Closed,
    OpenUntil(Timestamp),
    Open,
}

impl EnrolmentWindow {
    /// Open from `now` for `d` (`None`: with no end; zero: closed).
    pub fn opened_for(d: Option<Duration>, now: Timestamp) -> EnrolmentWindow {
        match d {
            None => EnrolmentWindow::Open,
            Some(d) if d.is_zero() => EnrolmentWindow::Closed,
            // A century is "for ever" enough and keeps the arithmetic far from overflowing.
            Some(d) => EnrolmentWindow::OpenUntil(
                now.plus_secs(d.as_secs().min(100 * 365 * 86_400) as i64),
            ),
        }
    }

    pub fn is_open(&self, now: Timestamp) -> bool {
        match self {
            EnrolmentWindow::Closed => false,
            EnrolmentWindow::OpenUntil(t) => now < *t,
            EnrolmentWindow::Open => true,
        }
    }

    pub fn parse(text: &str) -> std::result::Result<EnrolmentWindow, String> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or("closed");
        match line {
            "closed" => Ok(EnrolmentWindow::Closed),
            "open" => Ok(EnrolmentWindow::Open),
            l => match l.strip_prefix("open until ") {
                Some(t) => Timestamp::parse_rfc3339(t.trim()).map(EnrolmentWindow::OpenUntil),
                None => Err(format!(
                    "{l:?} is not \"open until TIME\", \"open\" or \"closed\""
                )),
            },
        }
    }

    pub fn render(&self) -> String {
        let state = match self {
            EnrolmentWindow::Closed => "closed".to_owned(),
            EnrolmentWindow::OpenUntil(t) => format!("open until {t}"),
            EnrolmentWindow::Open => "open".to_owned(),
        };
        format!("# mt-agent enrolment window (change with mt-agent senders open/close)\n{state}\n")
    }

    /// Reads the window in `dir` (no file: closed).
    pub fn load(dir: &Utf8Path) -> Result<EnrolmentWindow> {
        let path = dir.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => EnrolmentWindow::parse(&text).map_err(|e| anyhow!("{path}: {e}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(EnrolmentWindow::Closed),
            Err(e) => Err(e).with_context(|| format!("cannot read {path}")),
        }
    }

    pub fn store(&self, dir: &Utf8Path) -> Result<()> {
        crate::atomic_file::write_atomic(&dir.join(FILE), self.render().as_bytes(), 0o600)
    }

    /// Whether an enrolment may go on now in `dir`; `Err` is the refusal the sender sees,
    /// which says how to open the window.
    pub fn check(dir: &Utf8Path) -> std::result::Result<(), String> {
        let how = "to open it, run on the master target: mt-agent senders open [--for 1h]";
        match EnrolmentWindow::load(dir) {
            Ok(w) if w.is_open(SystemClock.now()) => Ok(()),
            Ok(EnrolmentWindow::OpenUntil(t)) => Err(format!(
                "enrolment is closed on this master target (it was open until {t}); {how}"
            )),
            Ok(_) => Err(format!("enrolment is closed on this master target; {how}")),
            Err(e) => Err(format!(
                "enrolment is closed on this master target ({e:#}); {how}"
            )),
        }
    }
}

impl std::fmt::Display for EnrolmentWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnrolmentWindow::Closed => f.write_str("closed"),
            EnrolmentWindow::OpenUntil(t) => write!(f, "open until {t}"),
            EnrolmentWindow::Open => f.write_str("open with no end"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_round_trips_and_closes_at_its_end() {
        let now = Timestamp::parse_rfc3339("2026-12-02T07:00:00Z").unwrap();
        let w = EnrolmentWindow::opened_for(Some(Duration::from_secs(3600)), now);
        assert_eq!(EnrolmentWindow::parse(&w.render()), Ok(w));
        assert!(w.render().contains("open until 2026-12-02T08:00:00Z"));
        assert!(w.is_open(now.plus_secs(3599)) && !w.is_open(now.plus_secs(3600)));
        for w in [EnrolmentWindow::Open, EnrolmentWindow::Closed] {
            assert_eq!(EnrolmentWindow::parse(&w.render()), Ok(w));
        }
        assert_eq!(
            EnrolmentWindow::opened_for(Some(Duration::ZERO), now),
            EnrolmentWindow::Closed
        );
        assert!(EnrolmentWindow::parse("ajar").is_err());
    }
}
