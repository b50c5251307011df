//! A log of refusals that cannot flood the disk: in each interval the first few lines are
//! printed, a line already printed from the same source for the same reason is not printed
//! again, and what was held back is one summary line when the interval ends ("N more refusals
//! in the last 10 s, most from ADDR: REASON"). It only decides what to print; the caller's
//! sink writes it. It must not hold more than a bounded number of distinct reasons.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Distinct (source, reason) pairs remembered per interval: a flood with varied reasons is
/// still counted, only no longer attributed.
const MAX_TRACKED: usize = 256;

/// The counting, without a clock or output of its own (so tests drive it).
pub struct RefusalWindow {
    interval: Duration,
    lines_per_interval: usize,
    started: Instant,
    printed: usize,
    printed_keys: HashSet<(String, String)>,
    held: u64,
    held_by: HashMap<(String, String), u64>,
}

impl RefusalWindow {
    pub fn new(interval: Duration, lines_per_interval: usize, now: Instant) -> RefusalWindow {
        RefusalWindow {
            interval,
            lines_per_interval,
            started: now,
            printed: 0,
            printed_keys: HashSet::new(),
            held: 0,
            held_by: HashMap::new(),
        }
    }

    /// One refusal from `source` (an address) for `reason` (what repeats: no port, no
    /// counter); `line` is what to print if it is printed. Returns the lines to print now.
    pub fn note(
        &mut self,
        now: Instant,
        source: &str,
        reason: &str,
        line: impl FnOnce() -> String,
    ) -> Vec<String> {
        let mut out = self.roll(now);
        let key = (source.to_owned(), reason.to_owned());
        if self.printed < self.lines_per_interval && !self.printed_keys.contains(&key) {
            self.printed += 1;
            self.printed_keys.insert(key);
            out.push(line());
        } else {
            self.held += 1;
            if let Some(n) = self.held_by.get_mut(&key) {
                *n += 1;
            } else if self.held_by.len() < MAX_TRACKED {
                self.held_by.insert(key, 1);
            }
        }
        out
    }

    /// The summary of an interval that has ended (called on a timer, and before each note).
    pub fn roll(&mut self, now: Instant) -> Vec<String> {
        if now.duration_since(self.started) < self.interval {
            return Vec::new();
        }
        let mut out = Vec::new();
        if self.held > 0 {
            let secs = self.interval.as_secs();
            let mut line = format!(
                "{} more refusal{} in the last {secs} s",
                self.held,
                if self.held == 1 { "" } else { "s" }
            );
            // Ties go to the smaller key, so the line does not depend on hash order.
            let top = self
                .held_by
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)));
            if let Some(((source, reason), _)) = top {
                line.push_str(&format!(", most from {source}: {reason}"));
            }
            out.push(line);
        }
        *self = RefusalWindow::new(self.interval, self.lines_per_interval, now);
        out
    }
}

/// A [`RefusalWindow`] shared by the connection threads, printing through `sink`.
pub struct RefusalLog {
    window: Mutex<RefusalWindow>,
    sink: fn(&str),
}

impl RefusalLog {
    pub fn new(interval: Duration, lines_per_interval: usize, sink: fn(&str)) -> RefusalLog {
        RefusalLog {
            window: Mutex::new(RefusalWindow::new(
                interval,
                lines_per_interval,
                Instant::now(),
            )),
            sink,
        }
    }

    pub fn note(&self, source: &str, reason: &str, line: impl FnOnce() -> String) {
        let lines = self.window.lock().unwrap_or_else(|e| e.into_inner()).note(
            Instant::now(),
            source,
            reason,
            line,
        );
        lines.iter().for_each(|l| (self.sink)(l));
    }

    /// Prints the summary of an interval that ended (a timer calls this, so the last
    /// interval of a flood is summarised even when nothing follows it).
    pub fn roll(&self) {
        let lines = self
            .window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .roll(Instant::now());
        lines.iter().for_each(|l| (self.sink)(l));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN: Duration = Duration::from_secs(10);

    #[test]
    fn a_flood_prints_a_few_lines_then_one_summary_per_interval() {
        let t0 = Instant::now();
        let mut w = RefusalWindow::new(TEN, 3, t0);
        let mut printed = Vec::new();
        for i in 0..10_000u32 {
            let src = format!("10.0.0.{}", i % 7);
            let at = t0 + Duration::from_millis(u64::from(i));
            printed.extend(w.note(at, &src, "no hello", || format!("{src}: refused: no hello")));
        }
        // 10 s of notes: three lines, the rest held back.
        assert_eq!(printed.len(), 3, "{printed:?}");
        assert_eq!(w.roll(t0 + Duration::from_secs(5)), Vec::<String>::new());
        let summary = w.roll(t0 + TEN);
        assert_eq!(summary.len(), 1, "{summary:?}");
        assert!(
            summary[0].starts_with("9997 more refusals in the last 10 s, most from 10.0.0."),
            "{summary:?}"
        );
        assert!(summary[0].ends_with(": no hello"), "{summary:?}");
        // A quiet interval prints nothing.
        assert_eq!(w.roll(t0 + 2 * TEN), Vec::<String>::new());
    }

    #[test]
    fn the_same_refusal_from_the_same_address_is_printed_once_per_interval() {
        let t0 = Instant::now();
        let mut w = RefusalWindow::new(TEN, 5, t0);
        let busy = "group g: cannot lock the group";
        let mut printed = Vec::new();
        for i in 0..30u64 {
            let at = t0 + Duration::from_millis(300 * i);
            printed.extend(w.note(at, "192.0.2.7", busy, || format!("192.0.2.7:{i}: {busy}")));
        }
        assert_eq!(printed, [format!("192.0.2.7:0: {busy}")]);
        // The next interval begins with the summary; another reason is printed at once.
        let next = w.note(
            t0 + Duration::from_secs(12),
            "192.0.2.7",
            "bad frame",
            || "bad frame".into(),
        );
        assert_eq!(
            next,
            [
                format!("29 more refusals in the last 10 s, most from 192.0.2.7: {busy}"),
                "bad frame".into(),
            ]
        );
    }

    #[test]
    fn varied_reasons_are_counted_without_unbounded_memory() {
        let t0 = Instant::now();
        let mut w = RefusalWindow::new(TEN, 1, t0);
        for i in 0..10 * MAX_TRACKED {
            w.note(t0, &format!("src{i}"), &format!("reason {i}"), String::new);
        }
        assert!(w.held_by.len() <= MAX_TRACKED);
        let s = w.roll(t0 + TEN);
        assert!(
            s[0].starts_with(&format!("{} more refusals", 10 * MAX_TRACKED - 1)),
            "{s:?}"
        );
    }
}
