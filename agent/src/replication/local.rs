//! The retention journal on this machine: a [`RetentionVolume`] over the real file system and
//! clock with the configured failback policy, the disk targets its groups replicate to, and the
//! capacity of a new group's disk. The journal takes its `Fs` and `Clock` as parameters (the crash
//! tests give it a simulated disk and time); this is the one place that picks the real ones.
//! It adds no journal rule: every decision about a group stays in [`crate::replication::journal`].

use crate::config::AgentConfig;
use crate::replication::frame::BLOCK_SIZE;
use crate::replication::journal::clock::SystemClock;
use crate::replication::journal::io::{OpenMode, RealFs};
use crate::replication::journal::policy::Policy;
use crate::replication::journal::{RetentionVolume, DEFAULT_BATCH_BYTES};
use anyhow::{bail, Context};
use camino::{Utf8Path, Utf8PathBuf};
use std::sync::Arc;

/// The journals in `root` on the real disks, under the configuration's policy.
pub fn retention_volume(
    cfg: &AgentConfig,
    root: Utf8PathBuf,
    budget: Option<u64>,
    batch_bytes: u64,
) -> RetentionVolume {
    RetentionVolume {
        fs: Arc::new(RealFs),
        clock: Arc::new(SystemClock),
        root,
        policy: Policy::from_config(cfg),
        budget,
        batch_bytes,
    }
}

/// Every group's disk targets on the configured retention volume ("group/disk", target); none if
/// the volume is not mounted. A group that cannot be read is reported through `warn` and skipped.
pub fn disk_targets(cfg: &AgentConfig, warn: &dyn Fn(&str)) -> Vec<(String, Utf8PathBuf)> {
    let vol = retention_volume(cfg, cfg.retention_mount.clone(), None, DEFAULT_BATCH_BYTES);
    let mut out = Vec::new();
    if !vol.root.is_dir() {
        return out;
    }
    for g in vol.groups() {
        match vol.open_group(&g) {
            Ok(j) => out.extend(
                j.disks()
                    .iter()
                    .map(|d| (format!("{g}/{}", d.name), d.target.clone())),
            ),
            Err(e) => warn(&format!("group {g} cannot be read: {e}")),
        }
    }
    out
}

/// The capacity of a new group's disk on `target`: `size` (creating a missing file target of that
/// size, sparse), or the target's size in whole blocks.
pub fn target_capacity(
    vol: &RetentionVolume,
    target: &Utf8Path,
    size: Option<u64>,
) -> anyhow::Result<u64> {
    let fs = vol.fs.as_ref();
    if !fs.exists(target) {
        let Some(size) = size else {
            bail!("target {target} does not exist (pass --size to create a file target)");
        };
        let f = fs
            .open(target, OpenMode::CreateTruncate)
            .with_context(|| format!("cannot create target {target}"))?;
        f.set_len(size)
            .and_then(|_| f.sync_data())
            .with_context(|| format!("cannot size target {target}"))?;
        return Ok(size);
    }
    let len = fs
        .open(target, OpenMode::Read)
        .and_then(|f| f.len())
        .with_context(|| format!("cannot open target {target}"))?;
    Ok(size.unwrap_or(len - len % BLOCK_SIZE))
}
