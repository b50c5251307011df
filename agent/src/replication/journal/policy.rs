//! The failback policy as the journal applies it, and the status it reports against it (RPO,
//! app-consistent age, retention window, retention usage, degraded states).
//! The policy values come from [`crate::config::AgentConfig`]; none is written here twice.
//! Status only reads (it never repairs or locks), so it works while a stream is being applied.
//! Every age in it is by the master target's clock (receive times), never negative; the
//! source's clock only shows as the skew and its warnings.

use super::clock::{Timestamp, MICROS_PER_SECOND};
use super::timeline::{self, PointKind, RecoveryPoint, TimelineState};
use super::{JournalError, RetentionVolume};
use crate::config::AgentConfig;
use serde::Serialize;

/// ASR's crash-consistent cadence: a point at least every 5 minutes of incoming changes. Not a
/// setting of the appliance (the product keeps it fixed), so it lives only here.
pub const CRASH_POINT_INTERVAL_SECS: i64 = 5 * 60;
/// How far ahead of the master target's clock a frame's source time may be before the session
/// is refused (`serve --max-clock-skew`): NTP keeps two hosts within well under a second, so
/// 5 minutes is only ever passed by a clock that is wrong, and a point from the future would
/// outlive every real one for `recover --point TIME`.
pub const DEFAULT_MAX_CLOCK_SKEW_SECS: i64 = 5 * 60;
/// Usage of the retention limit above which the status warns that the window may not be kept.
pub const NEARLY_FULL_PERCENT: u64 = 90;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub rpo_threshold_secs: i64,
    pub retention_secs: i64,
    pub app_consistent_frequency_secs: i64,
    pub crash_point_interval_secs: i64,
    /// A source time further ahead of the master target's clock than this is refused; one as
    /// far behind is kept but `status` warns.
    pub max_clock_skew_secs: i64,
}

impl Policy {
    pub fn from_config(c: &AgentConfig) -> Policy {
        Policy {
            rpo_threshold_secs: i64::from(c.rpo_threshold_minutes) * 60,
            retention_secs: i64::from(c.retention_hours) * 3600,
            app_consistent_frequency_secs: i64::from(c.app_consistent_frequency_minutes) * 60,
            crash_point_interval_secs: CRASH_POINT_INTERVAL_SECS,
            max_clock_skew_secs: DEFAULT_MAX_CLOCK_SKEW_SECS,
        }
    }

    /// The runbook's policy (RPO 15 min, 24 h window, app-consistent hourly), for the unit
    /// tests' simulated volumes.
    #[cfg(test)]
    pub(crate) fn runbook() -> Policy {
        Policy {
            rpo_threshold_secs: 15 * 60,
            retention_secs: 24 * 3600,
            app_consistent_frequency_secs: 3600,
            crash_point_interval_secs: CRASH_POINT_INTERVAL_SECS,
            max_clock_skew_secs: DEFAULT_MAX_CLOCK_SKEW_SECS,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskStatus {
    pub name: String,
    pub target: String,
    pub capacity_bytes: u64,
    /// Source time of the newest write to this disk.
    pub last_write: Option<String>,
    /// Every disk shares the group's timeline, so its RPO is the group's.
    pub rpo_seconds: i64,
    pub rpo_exceeded: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    pub group: String,
    /// "ok", "degraded" or "stalled" (not acknowledging).
    pub state: &'static str,
    pub degraded_reasons: Vec<String>,
    pub latest_lsn: u64,
    pub latest_source_time: Option<String>,
    /// When the master target received the newest durable state.
    pub latest_received_time: Option<String>,
    /// The latest frame's source time minus its receive time (seconds, negative when the
    /// source's clock is behind); none while nothing arrived.
    pub skew_seconds: Option<i64>,
    /// Frames whose source time went back and was raised to the group's latest.
    pub clock_steps_back: u64,
    /// The largest such step, in seconds.
    pub largest_step_back_seconds: f64,
    /// What the source's clock did that an operator should correct.
    pub clock_warnings: Vec<String>,
    /// now - receive time of the newest durable state (since creation while nothing arrived),
    /// by the master target's clock; never negative.
    pub rpo_seconds: i64,
    pub rpo_threshold_seconds: i64,
    pub rpo_exceeded: bool,
    pub last_app_consistent: Option<String>,
    pub since_app_consistent_seconds: Option<i64>,
    pub app_consistent_frequency_seconds: i64,
    pub app_consistent_overdue: bool,
    pub window_oldest: Option<RecoveryPoint>,
    pub window_newest: Option<RecoveryPoint>,
    pub points: usize,
    pub retention_hours: i64,
    pub group_bytes: u64,
    pub disks: Vec<DiskStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VolumeStatus {
    pub retention: String,
    pub now: String,
    pub used_bytes: u64,
    pub budget_bytes: Option<u64>,
    pub free_bytes: u64,
    pub groups: Vec<GroupStatus>,
    /// Groups whose journal could not be read, with the reason.
    pub unreadable: Vec<String>,
}

fn when(t: Timestamp) -> Option<String> {
    (t.0 != 0).then(|| t.to_string())
}

pub fn group_status(vol: &RetentionVolume, s: &TimelineState, used: u64, free: u64) -> GroupStatus {
    let p = &vol.policy;
    let now = vol.clock.now();
    // The master target's clock may have stepped back since: an age is never negative.
    let age = |t: Timestamp| now.secs_since(t).max(0);
    let received = s.tip.0 != 0;
    let rpo = if received {
        age(s.tip_received)
    } else {
        age(s.created)
    };
    let rpo_exceeded = rpo > p.rpo_threshold_secs;
    let app = s.points.iter().rev().find(|x| x.kind == PointKind::App);
    let since_app = app.map(|a| age(a.received_time));
    let app_overdue = since_app.unwrap_or(age(s.created)) > p.app_consistent_frequency_secs;
    let skew = received.then(|| s.tip_time.secs_since(s.tip_received));
    let (clock_warnings, step_back) = clock_warnings(s, skew, p.max_clock_skew_secs);
    let mut reasons = Vec::new();
    let mut state = "ok";
    if let Some((since, why)) = &s.stalled {
        state = "stalled";
        reasons.push(format!("retention degraded since {since}: {why}"));
    }
    let limit = vol.budget.unwrap_or(used + free).min(used + free);
    if limit > 0 && used * 100 >= limit * NEARLY_FULL_PERCENT {
        if state == "ok" {
            state = "degraded";
        }
        reasons.push(format!(
            "retention degraded: the volume is {}% full ({used} of {limit} bytes); the {} h window may not be kept",
            used * 100 / limit,
            p.retention_secs / 3600
        ));
    }
    if let Some(to) = s.intent {
        reasons.push(format!(
            "an in-place recovery to LSN {to} is unfinished (opening the group finishes it)"
        ));
    }
    let disks = s
        .disks
        .iter()
        .zip(&s.last_write)
        .map(|(d, t)| DiskStatus {
            name: d.name.clone(),
            target: d.target.to_string(),
            capacity_bytes: d.capacity,
            last_write: when(*t),
            rpo_seconds: rpo,
            rpo_exceeded,
        })
        .collect();
    GroupStatus {
        group: s.group.clone(),
        state,
        degraded_reasons: reasons,
        latest_lsn: s.tip.0,
        latest_source_time: when(s.tip_time),
        latest_received_time: received.then(|| s.tip_received.to_string()),
        skew_seconds: skew,
        clock_steps_back: s.source_clock.clamped,
        largest_step_back_seconds: step_back,
        clock_warnings,
        rpo_seconds: rpo,
        rpo_threshold_seconds: p.rpo_threshold_secs,
        rpo_exceeded,
        last_app_consistent: app.map(|a| a.source_time.to_string()),
        since_app_consistent_seconds: since_app,
        app_consistent_frequency_seconds: p.app_consistent_frequency_secs,
        app_consistent_overdue: app_overdue,
        window_oldest: s.points.first().cloned(),
        window_newest: s.points.last().cloned(),
        points: s.points.len(),
        retention_hours: p.retention_secs / 3600,
        group_bytes: vol.group_usage(&s.group),
        disks,
    }
}

/// The warnings about a group's source clock, and its largest step back in seconds.
fn clock_warnings(s: &TimelineState, skew: Option<i64>, limit: i64) -> (Vec<String>, f64) {
    let mut out = Vec::new();
    let c = s.source_clock;
    let step = c.largest_step_back as f64 / MICROS_PER_SECOND as f64;
    if c.clamped > 0 {
        out.push(format!(
            "the source's clock went back {} times (at most {step:.3} s): those frames are kept under the group's latest source time",
            c.clamped
        ));
    }
    if let Some(skew) = skew.filter(|k| *k < limit.saturating_neg()) {
        out.push(format!(
            "the source's clock is {} s behind the master target's (more than {limit} s): retention runs on the master target's clock, but `recover --point TIME` selects by the source's",
            skew.saturating_neg()
        ));
    }
    (out, step)
}

/// The status of every group on the volume, read without locking or repairing anything.
pub fn volume_status(vol: &RetentionVolume) -> VolumeStatus {
    let used = vol.usage();
    let free = vol.fs.free_space(&vol.root).unwrap_or(0);
    let mut groups = Vec::new();
    let mut unreadable = Vec::new();
    for g in vol.groups() {
        let mut notes = Vec::new();
        match timeline::load(vol.fs.as_ref(), &vol.group_dir(&g), &mut notes, false) {
            Ok((s, _, _)) => groups.push(group_status(vol, &s, used, free)),
            Err(e) => unreadable.push(format!("{g}: {e}")),
        }
    }
    VolumeStatus {
        retention: vol.root.to_string(),
        now: vol.clock.now().to_string(),
        used_bytes: used,
        budget_bytes: vol.budget,
        free_bytes: free,
        groups,
        unreadable,
    }
}

/// Human-readable status.
pub fn render(v: &VolumeStatus) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let budget = v
        .budget_bytes
        .map_or("no budget".to_string(), |b| format!("budget {b} bytes"));
    let _ = writeln!(
        o,
        "retention {}: {} bytes used ({budget}), {} bytes free on the file system; now {}",
        v.retention, v.used_bytes, v.free_bytes, v.now
    );
    if v.groups.is_empty() && v.unreadable.is_empty() {
        let _ = writeln!(o, "no replication groups");
    }
    for g in &v.groups {
        let _ = writeln!(o, "group {}: {}", g.group, g.state.to_uppercase());
        for r in g.degraded_reasons.iter().chain(&g.clock_warnings) {
            let _ = writeln!(o, "  ! {r}");
        }
        let _ = writeln!(
            o,
            "  RPO {} s ({}; threshold {} s); latest LSN {} from {}",
            g.rpo_seconds,
            if g.rpo_exceeded { "EXCEEDED" } else { "within" },
            g.rpo_threshold_seconds,
            g.latest_lsn,
            g.latest_source_time
                .as_deref()
                .unwrap_or("nothing received yet")
        );
        if let (Some(k), Some(at)) = (g.skew_seconds, &g.latest_received_time) {
            let _ = writeln!(
                o,
                "  clock skew {k:+} s (the latest frame's source time minus its receive time, {at})"
            );
        }
        let _ = writeln!(
            o,
            "  app-consistent: {} ({}; expected every {} s)",
            match (&g.last_app_consistent, g.since_app_consistent_seconds) {
                (Some(t), Some(s)) => format!("last at {t}, {s} s ago"),
                _ => "none yet".to_string(),
            },
            if g.app_consistent_overdue {
                "OVERDUE"
            } else {
                "on time"
            },
            g.app_consistent_frequency_seconds
        );
        let _ = writeln!(
            o,
            "  retention window ({} h): {} points, oldest {}, newest {}; journal {} bytes",
            g.retention_hours,
            g.points,
            g.window_oldest
                .as_ref()
                .map_or("-".into(), |p| p.source_time.to_string()),
            g.window_newest
                .as_ref()
                .map_or("-".into(), |p| p.source_time.to_string()),
            g.group_bytes
        );
        for d in &g.disks {
            let _ = writeln!(
                o,
                "  disk {} -> {} ({} bytes): last write {}, RPO {} s{}",
                d.name,
                d.target,
                d.capacity_bytes,
                d.last_write.as_deref().unwrap_or("never"),
                d.rpo_seconds,
                if d.rpo_exceeded { " EXCEEDED" } else { "" }
            );
        }
    }
    for u in &v.unreadable {
        let _ = writeln!(o, "unreadable group {u}");
    }
    o
}

/// Looks up a group's status by name (for `status GROUP`-style callers and tests).
pub fn find<'a>(v: &'a VolumeStatus, group: &str) -> Result<&'a GroupStatus, JournalError> {
    v.groups
        .iter()
        .find(|g| g.group == group)
        .ok_or_else(|| JournalError::Rejected(format!("no group {group} on {}", v.retention)))
}
