//! Progress of long steps: bytes, percent and ETA redrawn on one line when stderr is a terminal;
//! plain, timestamped lines otherwise (CI logs, `CI=true`), at most one every few seconds.
//!
//! Only presentation lives here; the steps report what they did through `Progress::set` or
//! run under a `Ticker` when the tool they wait for reports nothing measurable.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Plain lines in CI and when stderr is not a terminal.
pub fn interactive() -> bool {
    std::io::stderr().is_terminal() && std::env::var("CI").map_or(true, |v| v != "true")
}

const PLAIN_EVERY: Duration = Duration::from_secs(10);

pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    start: Instant,
    last_draw: Option<Instant>,
    interactive: bool,
}

impl Progress {
    pub fn bytes(label: impl Into<String>, total: u64) -> Progress {
        Progress {
            label: label.into(),
            total,
            done: 0,
            start: Instant::now(),
            last_draw: None,
            interactive: interactive(),
        }
    }

    pub fn set(&mut self, done: u64) {
        self.done = done.min(self.total);
        let every = if self.interactive {
            Duration::from_millis(200)
        } else {
            PLAIN_EVERY
        };
        if self.last_draw.is_none_or(|t| t.elapsed() >= every) {
            self.draw();
        }
    }

    pub fn finish(mut self) {
        self.done = self.total;
        let line = format!(
            "{}: {} in {}",
            self.label,
            human_bytes(self.total),
            human_duration(self.start.elapsed())
        );
        if self.interactive {
            eprintln!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }

    fn draw(&mut self) {
        self.last_draw = Some(Instant::now());
        let line = format!(
            "{}: {} / {} ({}%){}",
            self.label,
            human_bytes(self.done),
            human_bytes(self.total),
            percent(self.done, self.total),
            eta(self.start.elapsed(), self.done, self.total)
                .map(|d| format!(", ETA {}", human_duration(d)))
                .unwrap_or_default()
        );
        if self.interactive {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("{line}");
        }
    }
}

/// Shows that a step without measurable progress is alive: elapsed time, the estimate from the
/// last run, and the newest status line the step produced (e.g. mmdebstrap's `I: …` lines).
pub struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    pub fn start(
        label: impl Into<String>,
        expected: Option<Duration>,
        status: Arc<Mutex<String>>,
    ) -> Ticker {
        let label = label.into();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let interactive = interactive();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut last_plain = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let elapsed = start.elapsed();
                let left = expected
                    .map(|e| match e.checked_sub(elapsed) {
                        Some(l) => format!(", about {} left", human_duration(l)),
                        None => ", taking longer than last time".to_string(),
                    })
                    .unwrap_or_default();
                let status = status.lock().map(|s| s.clone()).unwrap_or_default();
                let line = format!("{label}: {}{left}  {status}", human_duration(elapsed));
                if interactive {
                    let width = 150;
                    let line: String = line.chars().take(width).collect();
                    eprint!("\r\x1b[2K{line}");
                    let _ = std::io::stderr().flush();
                } else if last_plain.elapsed() >= PLAIN_EVERY {
                    last_plain = Instant::now();
                    eprintln!("{line}");
                }
            }
            if interactive {
                eprint!("\r\x1b[2K");
            }
        });
        Ticker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn percent(done: u64, total: u64) -> u64 {
    (done * 100).checked_div(total).unwrap_or(100)
}

fn eta(elapsed: Duration, done: u64, total: u64) -> Option<Duration> {
    if done == 0 || elapsed < Duration::from_millis(500) {
        return None;
    }
    let rate = done as f64 / elapsed.as_secs_f64();
    Some(Duration::from_secs_f64((total - done) as f64 / rate))
}

pub fn human_bytes(b: u64) -> String {
    mt_contract::units::ByteSize(b).approx().to_string()
}

pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(human_duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2m05s");
    }

    #[test]
    fn the_eta_follows_the_average_rate() {
        assert_eq!(
            eta(Duration::from_secs(10), 25, 100),
            Some(Duration::from_secs(30))
        );
        assert_eq!(eta(Duration::from_secs(10), 0, 100), None);
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(0, 0), 100);
    }
}
