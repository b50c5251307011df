//! What decides whether an enrolment attempt is evaluated, and how refusals are told apart:
//! the [`EnrolGate`] the master target's handshake asks (serve's backoff implements it; the
//! library alone has none), the wait it states in words ([`EnrolDelay::refusal`]) and reads back
//! on the sender ([`stated_delay`]), and the kinds of refusal ([`Refused`]) serve counts. No
//! I/O, no clock, no key material.

use std::net::IpAddr;
use std::time::Duration;

/// Why a handshake was refused, for counting; the error's message says it in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    WrongPassphrase,
    /// An enrolment not evaluated because failures before it must be waited out.
    Delayed,
    UnknownKey,
    /// Enrolment is closed: the passphrase file is missing, unreadable or bad.
    NoPassphrase,
}

/// A handshake refusal of a known kind (the peer was told `why`, or a shorter reason).
#[derive(Debug)]
pub struct Refused {
    pub kind: RefusalKind,
    pub why: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

impl std::error::Error for Refused {}

/// The kind of refusal a [`super::auth::ServerAuth::accept`] error is, if it is one of the known ones.
pub fn refusal_kind(e: &anyhow::Error) -> Option<RefusalKind> {
    e.chain()
        .find_map(|c| c.downcast_ref::<Refused>())
        .map(|r| r.kind)
}

/// An enrolment that must wait: how long, and why (words for the refusal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolDelay {
    pub wait: Duration,
    pub why: String,
}

impl EnrolDelay {
    /// The refusal the sender reads. [`stated_delay`] reads the wait back; the words are the
    /// only carrier of it, so a sender of any version shows them.
    pub fn refusal(&self) -> String {
        format!(
            "enrolment delayed {}: try again in {} s",
            self.why,
            seconds(self.wait)
        )
    }
}

/// A wait in seconds as the refusals state it: whole milliseconds, rounded up ("0.02", "1.5", "60").
pub(super) fn seconds(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000).max(1);
    let (s, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        return s.to_string();
    }
    format!("{s}.{frac:03}").trim_end_matches('0').to_owned()
}

/// The wait a master target stated in a delayed-enrolment refusal, if `message` holds one.
pub fn stated_delay(message: &str) -> Option<Duration> {
    const SAYS: &str = "try again in ";
    let rest = &message[message.find(SAYS)? + SAYS.len()..];
    let secs: f64 = rest.split(' ').next()?.parse().ok()?;
    (secs.is_finite() && (0.0..=86_400.0).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

/// Decides whether an enrolment attempt from `source` is evaluated (serve's backoff; the
/// library alone has none). The passphrase check runs inside [`EnrolGate::evaluate`], so
/// attempts that race one another are decided one at a time, each seeing the failures before it.
pub trait EnrolGate: Send + Sync {
    /// How long `source` must still wait, asked at the hello, before any work for the attempt.
    fn delay(&self, source: IpAddr) -> Option<EnrolDelay>;
    /// Runs `attempt` (the passphrase check: whether it proved) unless `source` must wait
    /// now, and records its outcome.
    fn evaluate(
        &self,
        source: IpAddr,
        attempt: &mut dyn FnMut() -> bool,
    ) -> Result<bool, EnrolDelay>;
}

/// Every attempt evaluated at once.
pub(super) struct OpenGate;

impl EnrolGate for OpenGate {
    fn delay(&self, _: IpAddr) -> Option<EnrolDelay> {
        None
    }
    fn evaluate(&self, _: IpAddr, attempt: &mut dyn FnMut() -> bool) -> Result<bool, EnrolDelay> {
        Ok(attempt())
    }
}
