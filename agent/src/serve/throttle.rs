//! The enrolment backoff: failed enrolments delay later ones, per source address and overall.
//! After the n-th consecutive failure from an address, no enrolment from it is evaluated
//! before `min(base × 2^(n-1), cap)` has passed; a success resets the address. Once more than
//! [`OVERALL_THRESHOLD`] enrolments failed within [`OVERALL_WINDOW`], from any addresses, every
//! enrolment waits the same way counted from the latest failure, so a guesser spread over many
//! addresses is bounded too. The state is in memory only and bounded ([`MAX_SOURCES`]
//! addresses; the oldest is dropped); IPv6 addresses count per /64, the least a host gets.
//! Sessions of enrolled senders never come here. This module decides and counts; it does no
//! I/O and never sees a passphrase (the check it runs is the caller's closure).

use crate::replication::net::enrol_gate::{EnrolDelay, EnrolGate};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The delay after a first failure: a typo costs the sender a second.
pub const DEFAULT_BASE: Duration = Duration::from_secs(1);
/// The longest delay: a guesser gets at most one guess a minute per address (and, past the
/// overall threshold, overall), some 1440 a day, while a sender whose operator fixed the
/// passphrase waits a minute at worst.
pub const DEFAULT_CAP: Duration = Duration::from_secs(60);
/// Failures from all addresses together within [`OVERALL_WINDOW`] before every enrolment is
/// delayed: a site enrolling its process servers and mistyping a few times stays below it.
pub const OVERALL_THRESHOLD: usize = 10;
pub const OVERALL_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered: 4096 entries of a few dozen bytes each; an address dropped as the
/// oldest starts again at the base delay, but past the overall threshold it waits anyway.
pub const MAX_SOURCES: usize = 4096;
/// Failure times kept for the overall count: past the threshold plus the doublings to the cap
/// a larger count changes nothing, so this bounds memory, not the rule.
const MAX_RECENT: usize = 1024;

/// The schedule of delays: `min(base × 2^(n-1), cap)` after the n-th consecutive failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            base: DEFAULT_BASE,
            cap: DEFAULT_CAP,
        }
    }
}

impl Backoff {
    /// A schedule, or why it is not one (the words name the serve options).
    pub fn new(base: Duration, cap: Duration) -> Result<Backoff, String> {
        if base.is_zero() {
            return Err("--enrol-backoff must be more than 0".into());
        }
        if cap < base {
            return Err(format!(
                "--enrol-backoff-max ({} ms) is shorter than --enrol-backoff ({} ms)",
                cap.as_millis(),
                base.as_millis()
            ));
        }
        Ok(Backoff { base, cap })
    }

    /// The wait after the `n`-th consecutive failure (none before the first).
    pub fn delay(&self, n: u32) -> Duration {
        if n == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(n - 1).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(self.cap)
            .min(self.cap)
    }
}

/// What failures are counted against: an IPv4 address, or the /64 of an IPv6 one (an
/// IPv4-mapped IPv6 address is its IPv4 address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(addr: IpAddr) -> Source {
        match addr {
            IpAddr::V4(_) => Source(addr),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Source(IpAddr::V6(prefix.into()))
                }
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    consecutive: u32,
    last: Instant,
}

/// The backoff's state, without a clock of its own (tests drive it).
pub struct EnrolSchedule {
    backoff: Backoff,
    max_sources: usize,
    sources: HashMap<Source, Failures>,
    /// When recent failures happened, all addresses together, oldest first.
    recent: VecDeque<Instant>,
}

impl EnrolSchedule {
    pub fn new(backoff: Backoff, max_sources: usize) -> EnrolSchedule {
        EnrolSchedule {
            backoff,
            max_sources,
            sources: HashMap::new(),
            recent: VecDeque::new(),
        }
    }

    /// How long an enrolment from `addr` must still wait at `now`, if at all: the longer of
    /// its address's delay and the overall one.
    pub fn wait(&mut self, now: Instant, addr: IpAddr) -> Option<EnrolDelay> {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= OVERALL_WINDOW)
        {
            self.recent.pop_front();
        }
        let mut delay: Option<EnrolDelay> = None;
        if let Some(f) = self.sources.get(&Source::of(addr)) {
            let left = (f.last + self.backoff.delay(f.consecutive)).saturating_duration_since(now);
            if !left.is_zero() {
                let s = if f.consecutive == 1 { "" } else { "s" };
                delay = Some(EnrolDelay {
                    wait: left,
                    why: format!(
                        "after {} failed attempt{s} from this address",
                        f.consecutive
                    ),
                });
            }
        }
        let count = self.recent.len();
        if let (true, Some(last)) = (count > OVERALL_THRESHOLD, self.recent.back()) {
            let past = (count - OVERALL_THRESHOLD) as u32;
            let left = (*last + self.backoff.delay(past)).saturating_duration_since(now);
            if !left.is_zero() && delay.as_ref().is_none_or(|d| d.wait < left) {
                delay = Some(EnrolDelay {
                    wait: left,
                    why: format!(
                        "after {count} failed enrolments from all addresses in the last {} s",
                        OVERALL_WINDOW.as_secs()
                    ),
                });
            }
        }
        delay
    }

    /// An evaluated enrolment from `addr` failed at `now`.
    pub fn failed(&mut self, now: Instant, addr: IpAddr) {
        let source = Source::of(addr);
        if !self.sources.contains_key(&source) && self.sources.len() >= self.max_sources {
            let oldest = self
                .sources
                .iter()
                .min_by_key(|(_, f)| f.last)
                .map(|(s, _)| *s);
            if let Some(s) = oldest {
                self.sources.remove(&s);
            }
        }
        let f = self.sources.entry(source).or_insert(Failures {
            consecutive: 0,
            last: now,
        });
        f.consecutive = f.consecutive.saturating_add(1);
        f.last = now;
        self.recent.push_back(now);
        if self.recent.len() > MAX_RECENT {
            self.recent.pop_front();
        }
    }

    /// An enrolment from `addr` proved the passphrase: its address starts afresh.
    pub fn succeeded(&mut self, addr: IpAddr) {
        self.sources.remove(&Source::of(addr));
    }
}

/// The [`EnrolSchedule`] serve's connection threads share, as the handshake's [`EnrolGate`].
pub struct EnrolThrottle {
    schedule: Mutex<EnrolSchedule>,
}

impl EnrolThrottle {
    pub fn new(backoff: Backoff) -> EnrolThrottle {
        EnrolThrottle {
            schedule: Mutex::new(EnrolSchedule::new(backoff, MAX_SOURCES)),
        }
    }
}

impl EnrolGate for EnrolThrottle {
    fn delay(&self, source: IpAddr) -> Option<EnrolDelay> {
        let mut s = self.schedule.lock().unwrap_or_else(|e| e.into_inner());
        s.wait(Instant::now(), source)
    }

    /// The check runs under the lock: of attempts racing in parallel connections, one is
    /// evaluated and the rest see its failure (the check is a few Diffie-Hellman operations,
    /// the derived key being cached).
    fn evaluate(
        &self,
        source: IpAddr,
        attempt: &mut dyn FnMut() -> bool,
    ) -> Result<bool, EnrolDelay> {
        let mut s = self.schedule.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = s.wait(Instant::now(), source) {
            return Err(d);
        }
        let proved = attempt();
        if proved {
            s.succeeded(source);
        } else {
            s.failed(Instant::now(), source);
        }
        Ok(proved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const SEC: Duration = Duration::from_secs(1);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn schedule() -> EnrolSchedule {
        EnrolSchedule::new(Backoff::default(), MAX_SOURCES)
    }

    #[test]
    fn the_delay_doubles_from_the_base_up_to_the_cap_and_never_overflows() {
        let b = Backoff::default();
        let got: Vec<u64> = (0..9).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(got, [0, 1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.delay(40), DEFAULT_CAP);
        assert_eq!(b.delay(u32::MAX), DEFAULT_CAP);
        let small = Backoff::new(20 * MS, 200 * MS).unwrap();
        assert_eq!(small.delay(4), 160 * MS);
        assert_eq!(small.delay(5), 200 * MS);
        assert!(Backoff::new(Duration::ZERO, SEC).is_err());
        assert!(Backoff::new(2 * SEC, SEC).is_err());
    }

    #[test]
    fn an_address_waits_after_each_failure_longer_and_others_do_not() {
        let mut s = schedule();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!(s.wait(t0, a), None);
        s.failed(t0, a);
        let d = s.wait(t0 + 300 * MS, a).unwrap();
        assert_eq!(d.wait, 700 * MS);
        assert_eq!(d.why, "after 1 failed attempt from this address");
        assert!(
            d.refusal().ends_with("try again in 0.7 s"),
            "{}",
            d.refusal()
        );
        assert_eq!(s.wait(t0 + SEC, a), None);
        s.failed(t0 + SEC, a);
        assert_eq!(s.wait(t0 + SEC, a).unwrap().wait, 2 * SEC);
        s.failed(t0 + 3 * SEC, a);
        let d = s.wait(t0 + 3 * SEC, a).unwrap();
        assert_eq!(d.wait, 4 * SEC);
        assert_eq!(d.why, "after 3 failed attempts from this address");
        assert_eq!(s.wait(t0 + 3 * SEC, ip("192.0.2.2")), None);
    }

    #[test]
    fn a_success_resets_its_address_only() {
        let mut s = schedule();
        let t0 = Instant::now();
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        for i in 0..4 {
            s.failed(t0 + i * 100 * SEC, a);
            s.failed(t0 + i * 100 * SEC, b);
        }
        let later = t0 + 1000 * SEC;
        s.succeeded(a);
        s.failed(later, a);
        s.failed(later, b);
        assert_eq!(s.wait(later, a).unwrap().wait, SEC);
        assert_eq!(s.wait(later, b).unwrap().wait, 16 * SEC);
    }

    #[test]
    fn past_the_overall_threshold_every_address_waits_until_the_window_forgets() {
        let mut s = schedule();
        let t0 = Instant::now();
        let fresh = ip("198.51.100.7");
        for i in 0..OVERALL_THRESHOLD as u32 {
            s.failed(t0 + i * MS, ip(&format!("192.0.2.{i}")));
        }
        let t = t0 + 20 * MS;
        assert_eq!(s.wait(t, fresh), None, "at the threshold, not past it");
        s.failed(t, ip("203.0.113.1"));
        let d = s.wait(t, fresh).unwrap();
        assert_eq!(d.wait, SEC);
        assert_eq!(
            d.why,
            "after 11 failed enrolments from all addresses in the last 60 s"
        );
        s.failed(t + SEC, ip("203.0.113.2"));
        assert_eq!(s.wait(t + SEC, fresh).unwrap().wait, 2 * SEC);
        // Growing and capped like an address's delay.
        for i in 0..20 {
            s.failed(t + 2 * SEC, ip(&format!("203.0.113.{}", 10 + i)));
        }
        assert_eq!(s.wait(t + 2 * SEC, fresh).unwrap().wait, DEFAULT_CAP);
        // The failures age out of the window: nobody waits on their account any more.
        assert_eq!(s.wait(t + 2 * SEC + OVERALL_WINDOW, fresh), None);
    }

    #[test]
    fn the_longer_of_the_address_and_overall_delays_applies() {
        let mut s = schedule();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..12 {
            s.failed(t0, ip(&format!("198.51.100.{i}")));
        }
        assert_eq!(s.wait(t0, a).unwrap().wait, 2 * SEC);
        for _ in 0..3 {
            s.failed(t0, a);
        }
        let d = s.wait(t0, a).unwrap();
        assert_eq!(
            d.wait,
            16 * SEC,
            "overall: 15 failures, 5 past the threshold"
        );
        for _ in 0..3 {
            s.failed(t0, a);
        }
        let d = s.wait(t0, a).unwrap();
        assert_eq!(d.wait, DEFAULT_CAP);
        assert_eq!(s.wait(t0, ip("192.0.2.99")).unwrap().wait, DEFAULT_CAP);
    }

    #[test]
    fn the_table_is_bounded_and_drops_the_oldest_address() {
        let mut s = EnrolSchedule::new(Backoff::default(), 8);
        let t0 = Instant::now();
        for i in 0..20u32 {
            s.failed(t0 + i * MS, ip(&format!("192.0.2.{i}")));
        }
        assert_eq!(s.sources.len(), 8);
        assert!(!s.sources.contains_key(&Source::of(ip("192.0.2.11"))));
        assert!(s.sources.contains_key(&Source::of(ip("192.0.2.12"))));
        // A known address failing again takes no one's place.
        s.failed(t0 + SEC, ip("192.0.2.12"));
        assert_eq!(s.sources.len(), 8);
        assert!(s.sources.contains_key(&Source::of(ip("192.0.2.13"))));
        for _ in 0..10 * MAX_RECENT {
            s.failed(t0 + SEC, ip("192.0.2.19"));
        }
        assert_eq!(s.recent.len(), MAX_RECENT);
    }

    #[test]
    fn ipv6_addresses_count_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            Source::of(ip("2001:db8:1:2:aaaa::1")),
            Source::of(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Source::of(ip("::ffff:192.0.2.1")),
            Source::of(ip("192.0.2.1"))
        );
        let mut s = schedule();
        let t0 = Instant::now();
        s.failed(t0, ip("2001:db8:1:2::1"));
        assert!(s.wait(t0, ip("2001:db8:1:2::ffff")).is_some());
    }

    #[test]
    fn the_stated_wait_reads_back_from_the_refusal() {
        use crate::replication::net::enrol_gate::stated_delay;
        for wait in [MS, 20 * MS, 700 * MS, 1500 * MS, SEC, DEFAULT_CAP] {
            let d = EnrolDelay {
                wait,
                why: "after 2 failed attempts from this address".into(),
            };
            let told = format!("192.0.2.1:9443 refused the connection: {}", d.refusal());
            assert_eq!(stated_delay(&told), Some(wait), "{told}");
        }
        // Rounded up, never to nothing.
        let d = EnrolDelay {
            wait: Duration::from_micros(1),
            why: String::new(),
        };
        assert!(
            d.refusal().ends_with("try again in 0.001 s"),
            "{}",
            d.refusal()
        );
        assert_eq!(stated_delay("wrong passphrase"), None);
    }

    #[test]
    fn racing_attempts_are_evaluated_one_at_a_time_and_a_delayed_one_not_at_all() {
        let gate = EnrolThrottle::new(Backoff::new(SEC, 60 * SEC).unwrap());
        let a = ip("127.0.0.1");
        let mut checks = 0;
        let mut wrong = || {
            checks += 1;
            false
        };
        assert_eq!(gate.evaluate(a, &mut wrong), Ok(false));
        // Admitted at the hello together, the second reaches the check after the first failed.
        let d = gate.evaluate(a, &mut wrong).unwrap_err();
        assert!(d.wait <= SEC && d.wait > SEC / 2, "{d:?}");
        assert_eq!(checks, 1);
        assert!(gate.delay(a).is_some());
        assert!(gate.delay(ip("127.0.0.2")).is_none());
    }
}
