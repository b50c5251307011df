//! The bandwidth cap of one direction of the link.

use super::lock;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket for one direction of the link: long-run rate at most the cap, bursts of at
/// most 20 ms of it. Writers take tokens after writing (a debt the next write waits out), so a
/// write never waits for more tokens than a bucket can hold.
#[derive(Default)]
pub(super) struct TokenBucket(Mutex<Tokens>);

#[derive(Default)]
struct Tokens {
    rate: Option<u64>,
    tokens: f64,
    at: Option<Instant>,
}

impl Tokens {
    fn burst(rate: u64) -> f64 {
        (rate as f64 / 50.0).max(16384.0)
    }

    fn refill(&mut self) {
        let now = Instant::now();
        if let (Some(rate), Some(at)) = (self.rate, self.at) {
            let grown = self.tokens + rate as f64 * (now - at).as_secs_f64();
            self.tokens = grown.min(Self::burst(rate));
        }
        self.at = Some(now);
    }
}

impl TokenBucket {
    pub(super) fn set_rate(&self, rate: Option<u64>) {
        let mut t = lock(&self.0);
        t.refill();
        t.rate = rate;
        if let Some(rate) = rate {
            t.tokens = t.tokens.min(Tokens::burst(rate));
        }
    }

    /// How long to wait before the next write; `None` when it may go now.
    pub(super) fn delay(&self) -> Option<Duration> {
        let mut t = lock(&self.0);
        let rate = t.rate?;
        t.refill();
        (t.tokens < 0.0).then(|| Duration::from_secs_f64(-t.tokens / rate as f64))
    }

    /// The most one write may take of `left` bytes.
    pub(super) fn piece(&self, left: usize) -> usize {
        match lock(&self.0).rate {
            None => left,
            Some(rate) => left.min((rate / 50).max(4096) as usize),
        }
    }

    pub(super) fn charge(&self, n: usize) {
        let mut t = lock(&self.0);
        if t.rate.is_some() {
            t.refill();
            t.tokens -= n as f64;
        }
    }
}
