//! The retention volume: where the groups' journals live (`groups/<group>/`), their names, the
//! space they take, and creating a group's files. It opens a group but knows nothing of what
//! happens in one.

use super::group::lock_group;
use super::io::{Fs, FsFile, OpenMode};
use super::record::{self, FileKind};
use super::timeline::{self, DiskSpec, TimelineState};
use super::view::GroupView;
use super::{clock::Clock, policy::Policy, GroupJournal, JournalError, Result};
use crate::replication::frame::BLOCK_SIZE;
use camino::{Utf8Path, Utf8PathBuf};
use std::collections::HashSet;
use std::sync::Arc;

/// The retention volume: where every group's journal lives, with the services the journal needs.
#[derive(Clone)]
pub struct RetentionVolume {
    pub fs: Arc<dyn Fs>,
    pub clock: Arc<dyn Clock>,
    pub root: Utf8PathBuf,
    pub policy: Policy,
    /// Most bytes the journals may take on the volume (all groups); `None` = the free space.
    pub budget: Option<u64>,
    pub batch_bytes: u64,
}

pub fn valid_group_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid group name: use 1 to 64 letters, digits, '.', '_' or '-' (not starting with '.')"
        ))
    }
}

impl RetentionVolume {
    pub fn groups_dir(&self) -> Utf8PathBuf {
        self.root.join("groups")
    }
    pub fn group_dir(&self, name: &str) -> Utf8PathBuf {
        self.groups_dir().join(name)
    }
    /// Names of the groups on this volume.
    pub fn groups(&self) -> Vec<String> {
        let dir = self.groups_dir();
        let mut out = Vec::new();
        for name in self.fs.list(&dir).unwrap_or_default() {
            if self
                .fs
                .exists(&dir.join(&name).join(timeline::TIMELINE_FILE))
            {
                out.push(name);
            }
        }
        out
    }
    /// Bytes the journals take on the volume (every file under `groups/`).
    pub fn usage(&self) -> u64 {
        let dir = self.groups_dir();
        let mut total = 0;
        for g in self.fs.list(&dir).unwrap_or_default() {
            let gd = dir.join(&g);
            for f in self.fs.list(&gd).unwrap_or_default() {
                total += self.fs.file_size(&gd.join(f));
            }
        }
        total
    }
    pub fn group_usage(&self, name: &str) -> u64 {
        let gd = self.group_dir(name);
        self.fs
            .list(&gd)
            .unwrap_or_default()
            .iter()
            .map(|f| self.fs.file_size(&gd.join(f)))
            .sum()
    }

    /// Creates a group: its disks' targets must exist (files or block devices) and be at least
    /// as large as the capacity given (or, without a capacity, the target's size is the disk's).
    pub fn create_group(&self, name: &str, disks: Vec<DiskSpec>) -> Result<()> {
        valid_group_name(name).map_err(JournalError::Rejected)?;
        if disks.is_empty() {
            return Err(JournalError::Rejected(format!(
                "group {name}: give at least one disk (--disk NAME=TARGET)"
            )));
        }
        let mut seen = HashSet::new();
        for d in &disks {
            valid_group_name(&d.name)
                .map_err(|e| JournalError::Rejected(format!("disk name: {e}")))?;
            if !seen.insert(d.name.clone()) {
                return Err(JournalError::Rejected(format!(
                    "disk {} is named twice",
                    d.name
                )));
            }
            if d.capacity == 0 || d.capacity % BLOCK_SIZE != 0 {
                return Err(JournalError::Rejected(format!(
                    "disk {}: capacity {} is not a positive multiple of {BLOCK_SIZE} bytes",
                    d.name, d.capacity
                )));
            }
            open_target(self.fs.as_ref(), d, OpenMode::ReadWrite, false)?;
        }
        let dir = self.group_dir(name);
        if self.fs.exists(&dir.join(timeline::TIMELINE_FILE)) {
            return Err(JournalError::Rejected(format!(
                "group {name} already exists in {}",
                self.root
            )));
        }
        self.fs
            .create_dir_all(&dir)
            .map_err(|e| JournalError::io(&dir, "create directory", e))?;
        self.fs
            .sync_dir(&self.groups_dir())
            .map_err(|e| JournalError::io(&self.groups_dir(), "sync directory", e))?;
        let now = self.clock.now();
        let state = TimelineState::new(name, disks, now);
        create_log(
            self.fs.as_ref(),
            &dir.join(undo_file(state.open.id)),
            FileKind::Undo,
            state.open.id,
        )?;
        for name in timeline::ROLLBACK_FILES {
            create_log(self.fs.as_ref(), &dir.join(name), FileKind::Rollback, 0)?;
        }
        timeline::write_snapshot(self.fs.as_ref(), &dir, &state)?;
        Ok(())
    }

    /// Opens a group, recovering from any crash first.
    pub fn open_group(&self, name: &str) -> Result<GroupJournal> {
        self.open_group_as(name, "mt-agent")
    }

    /// Opens a group as [`RetentionVolume::open_group`] does; `what` says what this process
    /// does with it (kept with the lock, so another process that finds the group held can say
    /// who holds it).
    pub fn open_group_as(&self, name: &str, what: &str) -> Result<GroupJournal> {
        let dir = self.existing_group_dir(name)?;
        match lock_group(self, &dir, what)? {
            Ok(lock) => GroupJournal::open(self.clone(), dir, lock),
            Err(busy) => Err(JournalError::Rejected(busy)),
        }
    }

    /// Opens a group unless another process holds it: then `Ok(Err(why))`, `why` naming the
    /// holder where it left its line (read the group meanwhile through
    /// [`RetentionVolume::view_group`]).
    pub fn try_open_group(
        &self,
        name: &str,
        what: &str,
    ) -> Result<std::result::Result<GroupJournal, String>> {
        let dir = self.existing_group_dir(name)?;
        match lock_group(self, &dir, what)? {
            Ok(lock) => GroupJournal::open(self.clone(), dir, lock).map(Ok),
            Err(busy) => Ok(Err(busy)),
        }
    }

    /// A group as it is committed now, read without its lock while another process may be
    /// writing it (see [`GroupView`]).
    pub fn view_group(&self, name: &str) -> Result<GroupView> {
        let dir = self.existing_group_dir(name)?;
        GroupView::open(self.clone(), dir)
    }

    fn existing_group_dir(&self, name: &str) -> Result<Utf8PathBuf> {
        valid_group_name(name).map_err(JournalError::Rejected)?;
        let dir = self.group_dir(name);
        if !self.fs.exists(&dir.join(timeline::TIMELINE_FILE)) {
            return Err(JournalError::Rejected(format!(
                "no group {name} in {} (create it with `mt-agent group create {name} --disk NAME=TARGET`)",
                self.root
            )));
        }
        Ok(dir)
    }
}

pub(super) fn undo_file(id: u64) -> String {
    format!("undo-{id:016x}.log")
}

pub(super) fn create_log(
    fs: &dyn Fs,
    path: &Utf8Path,
    kind: FileKind,
    id: u64,
) -> Result<Box<dyn FsFile>> {
    let f = fs
        .open(path, OpenMode::CreateTruncate)
        .map_err(|e| JournalError::io(path, "create", e))?;
    f.write_all_at(&record::file_header(kind, id), 0)
        .map_err(|e| JournalError::io(path, "write", e))?;
    f.sync_data()
        .map_err(|e| JournalError::io(path, "flush", e))?;
    let dir = path.parent().unwrap_or(Utf8Path::new("."));
    fs.sync_dir(dir)
        .map_err(|e| JournalError::io(dir, "sync directory", e))?;
    Ok(f)
}

/// Opens a disk's target and checks that it holds at least the disk's capacity. A group being
/// created finds a target too small; an existing group finds one that shrank since (`reopen`),
/// which suggests the disk was replaced.
pub(super) fn open_target(
    fs: &dyn Fs,
    d: &DiskSpec,
    mode: OpenMode,
    reopen: bool,
) -> Result<Box<dyn FsFile>> {
    let (holds, hint) = if reopen {
        ("now holds", "; was it replaced?")
    } else {
        ("holds", "")
    };
    let f = fs
        .open(&d.target, mode)
        .map_err(|e| JournalError::io(&d.target, "open target", e))?;
    let len = f
        .len()
        .map_err(|e| JournalError::io(&d.target, "size", e))?;
    if len < d.capacity {
        return Err(JournalError::Rejected(format!(
            "disk {}: target {} {holds} {len} bytes, less than the disk's {} bytes{hint}",
            d.name, d.target, d.capacity
        )));
    }
    Ok(f)
}
