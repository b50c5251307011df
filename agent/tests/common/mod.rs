//! The agent's test support (workspace paths, scratch directories, the random generator and host
//! tools come from `testkit`): the `mt-agent` binary, the agent configuration taken from the
//! appliance definition and the one writer of `agent.toml` (so the policy is never restated and
//! no test types TOML by hand), a journal on the simulated disk with a fake clock, a reference
//! model of the group's disks, and a random workload driven by a seed.
#![allow(dead_code)]

use camino::{Utf8Path, Utf8PathBuf};
use mt_agent::config::AgentConfig;
use mt_agent::replication::frame::{Frame, TagKind, BLOCK_SIZE};
use mt_agent::replication::journal::clock::{FakeClock, Timestamp};
use mt_agent::replication::journal::io::Fs;
use mt_agent::replication::journal::policy::Policy;
use mt_agent::replication::journal::sim::{SimFs, SimRng};
use mt_agent::replication::journal::{DiskSpec, GroupJournal, Lsn, RecoveryPoint, RetentionVolume};
use std::process::Command;
use std::sync::Arc;
use testkit::Rng;

/// The binary under test (Cargo builds it for the package's integration tests).
pub const MT_AGENT: &str = env!("CARGO_BIN_EXE_mt-agent");

/// `mt-agent ARGS`.
pub fn mt_agent(args: &[&str]) -> Command {
    let mut c = Command::new(MT_AGENT);
    c.args(args);
    c
}

/// The agent configuration the appliance build would write (policy from the definition).
pub fn agent_config() -> AgentConfig {
    let def = appliance::Definition::load(
        &testkit::workspace_root().join(appliance::definition::DEFAULT_DEFINITION),
    )
    .expect("the default appliance definition loads");
    AgentConfig {
        port: def.agent.port,
        retention_mount: def.retention_disk.mount.clone().into(),
        rpo_threshold_minutes: def.policy.rpo_threshold_minutes,
        retention_hours: def.policy.retention_hours,
        app_consistent_frequency_minutes: def.policy.app_consistent_frequency_minutes,
        retention_disk: Some(mt_agent::config::RetentionDiskConfig {
            scsi_unit: def.retention_disk.scsi_unit,
            fs: def.retention_disk.fs.as_str().to_owned(),
            label: def.retention_disk.label.clone(),
        }),
    }
}

/// The configuration of an agent that serves on `port` (0: any free one) with its retention
/// volume at `retention_mount`, and no retention disk rule (so `serve` never looks for this
/// host's recorded disk identity).
pub fn serve_config(port: u16, retention_mount: &Utf8Path) -> AgentConfig {
    AgentConfig {
        port,
        retention_mount: retention_mount.to_owned(),
        retention_disk: None,
        ..agent_config()
    }
}

/// Writes `cfg` as `dir/agent.toml` (serialized, as the image build writes it); returns its path.
pub fn write_config(dir: &Utf8Path, cfg: &AgentConfig) -> Utf8PathBuf {
    let path = dir.join("agent.toml");
    let text = toml::to_string(cfg).expect("an agent configuration serializes to TOML");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    path
}

/// A simulated power loss of `fs`, its choices drawn from the test's generator.
pub fn power_loss(fs: &SimFs, rng: &mut Rng) -> SimFs {
    fs.after_power_loss(&mut SimRng::new(rng.next_u64()))
}

pub fn policy() -> Policy {
    Policy::from_config(&agent_config())
}

/// 2026-11-26T00:00:00Z: tests start their fake clocks here.
pub const T0: Timestamp = Timestamp(1_795_651_200_000_000);

pub fn sim_volume(fs: &SimFs, clock: &Arc<FakeClock>, batch_bytes: u64) -> RetentionVolume {
    fs.create_dir_all(Utf8Path::new("/ret")).unwrap();
    RetentionVolume {
        fs: Arc::new(fs.clone()),
        clock: clock.clone(),
        root: "/ret".into(),
        policy: policy(),
        budget: None,
        batch_bytes,
    }
}

/// The group's disks as the source has them: initial content plus every write, by LSN.
#[derive(Clone)]
pub struct Model {
    pub initial: Vec<Vec<u8>>,
    pub log: Vec<(Lsn, u32, u64, Vec<u8>)>,
}

impl Model {
    pub fn state_at(&self, lsn: Lsn) -> Vec<Vec<u8>> {
        let mut disks = self.initial.clone();
        for (l, d, off, data) in &self.log {
            if *l > lsn {
                break;
            }
            disks[*d as usize][*off as usize..*off as usize + data.len()].copy_from_slice(data);
        }
        disks
    }
    /// Forgets everything after `lsn` (the source resends or the targets were rolled back).
    pub fn truncate(&mut self, lsn: Lsn) {
        self.log.retain(|(l, ..)| *l <= lsn);
    }
}

/// A group of `disks` disks of `blocks` blocks each, with random initial content, on `fs`.
pub fn make_group(
    fs: &SimFs,
    vol: &RetentionVolume,
    rng: &mut Rng,
    disks: usize,
    blocks: u64,
) -> Model {
    fs.create_dir_all(Utf8Path::new("/t")).unwrap();
    let mut specs = Vec::new();
    let mut initial = Vec::new();
    for d in 0..disks {
        let mut data = vec![0u8; (blocks * BLOCK_SIZE) as usize];
        rng.fill(&mut data);
        let target = Utf8PathBuf::from(format!("/t/disk{d}.img"));
        fs.put(&target, &data);
        specs.push(DiskSpec {
            name: format!("disk{d}"),
            target,
            capacity: blocks * BLOCK_SIZE,
        });
        initial.push(data);
    }
    vol.create_group("g", specs).unwrap();
    Model {
        initial,
        log: Vec::new(),
    }
}

/// A random write frame at the journal's next LSN; recorded in the model.
pub fn random_write(j: &GroupJournal, model: &mut Model, rng: &mut Rng, now: Timestamp) -> Frame {
    random_write_of(j, model, rng, now, false)
}

/// A random write frame, part of a resync or not.
pub fn random_write_of(
    j: &GroupJournal,
    model: &mut Model,
    rng: &mut Rng,
    now: Timestamp,
    resync: bool,
) -> Frame {
    let disks = j.disks();
    let d = rng.below(disks.len() as u64) as u32;
    let blocks = disks[d as usize].capacity / BLOCK_SIZE;
    let n = 1 + rng.below(4.min(blocks));
    let b = rng.below(blocks - n + 1);
    let mut data = vec![0u8; (n * BLOCK_SIZE) as usize];
    rng.fill(&mut data);
    let lsn = j.next_lsn();
    model.log.push((lsn, d, b * BLOCK_SIZE, data.clone()));
    Frame::Write {
        lsn,
        source_time: now,
        disk: d,
        offset: b * BLOCK_SIZE,
        data,
        resync,
    }
}

pub fn random_tag(j: &GroupJournal, rng: &mut Rng, now: Timestamp) -> Frame {
    let app = rng.chance(40);
    Frame::Tag {
        lsn: j.next_lsn(),
        source_time: now,
        kind: if app { TagKind::App } else { TagKind::Crash },
        name: format!("{}-{}", if app { "app" } else { "crash" }, j.next_lsn()),
    }
}

/// Recovers `p` into a fresh directory and compares every disk with the model.
pub fn check_point(fs: &SimFs, j: &mut GroupJournal, model: &Model, p: &RecoveryPoint, tag: &str) {
    let dir = Utf8PathBuf::from(format!("/out/{tag}-{}-{}", p.lsn, fs.ops()));
    let sel = match p.kind {
        mt_agent::replication::journal::PointKind::Latest => {
            mt_agent::replication::journal::PointSelector::Latest
        }
        _ => mt_agent::replication::journal::PointSelector::AtOrBefore(p.source_time),
    };
    // Several points can share a source time; recover through the exact point instead.
    let r = j
        .recover_point(p, Some(&dir))
        .unwrap_or_else(|e| panic!("{tag}: recovering point {p:?} ({sel:?}) failed: {e}"));
    let want = model.state_at(p.lsn);
    for (i, img) in r.images.iter().enumerate() {
        let got = fs.read_all(img).unwrap();
        assert!(
            got == want[i],
            "{tag}: disk {i} at point {p:?} differs from the model"
        );
    }
}

/// Every target equals the model at the journal's acknowledged LSN.
pub fn check_targets(fs: &SimFs, j: &GroupJournal, model: &Model, tag: &str) {
    let want = model.state_at(j.acked());
    for (i, d) in j.disks().iter().enumerate() {
        let got = fs.read_all(&d.target).unwrap();
        assert!(
            got == want[i],
            "{tag}: target {} differs from the model at LSN {}",
            d.target,
            j.acked()
        );
    }
}
