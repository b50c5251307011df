//! `mt-agent setup --root DIR --distro el6|debian12`: the runbook's custom changes on the
//! appliance's root file system, applied at image build time (the kickstart's `%post` on el6,
//! the Debian build). The changes are data: `plan` reads the root and lists what its files
//! must contain (`Change`s, built per distribution in the submodules), and `apply` writes only
//! what differs, so a second run changes nothing and `--dry-run` can show the difference as a
//! unified diff. A marker records the version of the changes and the paths they manage, so an
//! upgrade removes what a newer version no longer manages.
//!
//! Setup must not do what depends on the deployed VM (disk WWIDs, MACs, host keys): that is
//! `mt-agent firstboot`'s job.

use crate::atomic_file::write_atomic;
use crate::config::AgentConfig;
use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

mod debian12;
pub mod diff;
mod el6;
pub mod firewall;
pub mod kdump;
pub mod multipath;
pub mod seal;
pub mod sysctl;
pub mod sysv;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distro {
    El6,
    Debian12,
}

impl Distro {
    pub fn as_str(self) -> &'static str {
        match self {
            Distro::El6 => "el6",
            Distro::Debian12 => "debian12",
        }
    }
}

/// Where the agent and its files live inside the image.
pub const AGENT_BINARY: &str = "/usr/sbin/mt-agent";
/// The descriptors `serve` may hold (systemd's `LimitNOFILE`, el6's `ulimit -n`): one or two
/// per connection and a few per open group; the default 1024 of a service is what a flood of
/// idle connections used up. 65536 is systemd's own default hard limit and far above what
/// the handshake cap and a few hundred groups need.
pub const AGENT_NOFILE: u32 = 65536;
pub use mt_contract::guest::{AGENT_SERVICE as SERVICE, FIRSTBOOT_SERVICE, OVFENV_SERVICE};
pub const HOST_KEYS_SERVICE: &str = "mt-ssh-host-keys.service";
/// The marker of the changes applied (see `Marker`).
pub const MARKER: &str = "/etc/mt-agent/setup.applied";
/// Version of the set of changes; raise it whenever `plan` changes what it writes.
pub const CHANGES_VERSION: u32 = 7;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    File {
        path: String,
        contents: Vec<u8>,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// Remove every file in `dir` whose name starts with `prefix` (exact name when the prefix
    /// is the whole name).
    RemoveMatching {
        dir: String,
        prefix: String,
    },
}

impl Change {
    /// The path this change keeps in a state (files and links; removals manage nothing).
    fn managed(&self) -> Option<&str> {
        match self {
            Change::File { path, .. } | Change::Symlink { path, .. } => Some(path),
            Change::RemoveMatching { .. } => None,
        }
    }
}

/// The changes for a root, and what setup deliberately did not do there (printed, so a build
/// log says why a firewall or kdump is missing).
#[derive(Debug, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub notes: Vec<String>,
}

/// The systemd mount unit name of a path (`/mnt/retention` -> `mnt-retention.mount`).
pub fn mount_unit(path: &str) -> String {
    let mut out = String::new();
    for (i, part) in path.trim_matches('/').split('/').enumerate() {
        if i > 0 {
            out.push('-');
        }
        for (j, b) in part.bytes().enumerate() {
            if b.is_ascii_alphanumeric() || b == b'_' || (b == b'.' && j > 0) {
                out.push(b as char);
            } else {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    format!("{out}.mount")
}

/// Read access to the root being changed (plans depend on what is installed there).
pub struct Root<'a> {
    pub dir: &'a Utf8Path,
}

impl Root<'_> {
    pub fn path(&self, p: &str) -> Utf8PathBuf {
        inside(self.dir, p)
    }
    pub fn exists(&self, p: &str) -> bool {
        self.path(p).symlink_metadata().is_ok()
    }
    pub fn read_text(&self, p: &str) -> Option<String> {
        std::fs::read_to_string(self.path(p)).ok()
    }
    /// File names in a directory of the root, sorted (empty if it does not exist).
    pub fn list(&self, dir: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(dir))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// Everything setup does for a distribution on this root.
pub fn plan(
    root: &Utf8Path,
    distro: Distro,
    cfg: &AgentConfig,
    agent_binary: Vec<u8>,
) -> Result<Plan> {
    let r = Root { dir: root };
    let config = toml::to_string_pretty(cfg)?;
    let mut p = Plan::default();
    p.changes.push(Change::File {
        path: AGENT_BINARY.into(),
        contents: agent_binary,
        mode: 0o755,
    });
    p.changes.push(Change::File {
        path: crate::config::DEFAULT_CONFIG_PATH.into(),
        contents: config.into_bytes(),
        mode: 0o644,
    });
    p.changes.push(multipath::change(&r));
    p.changes.push(sysctl::change());
    match distro {
        Distro::El6 => el6::plan(&r, cfg, &mut p),
        Distro::Debian12 => debian12::plan(&r, cfg, &mut p),
    }
    let marker = Marker::previous(&r);
    let managed: BTreeSet<String> = p
        .changes
        .iter()
        .filter_map(|c| c.managed().map(str::to_owned))
        .collect();
    // Sealing edits files the distribution owns (and only while they need it): not managed.
    p.changes.extend(seal::changes(&r));
    // What an older version managed and this one no longer does is removed.
    for old in marker.managed.difference(&managed) {
        if let Some((dir, name)) = old.rsplit_once('/') {
            p.changes.push(Change::RemoveMatching {
                dir: if dir.is_empty() {
                    "/".into()
                } else {
                    dir.into()
                },
                prefix: name.into(),
            });
        }
    }
    p.changes.push(Change::File {
        path: MARKER.into(),
        contents: Marker::render(distro, &managed).into_bytes(),
        mode: 0o644,
    });
    Ok(p)
}

/// `/etc/mt-agent/setup.applied`: the changes' version and every path they manage.
#[derive(Debug, Default)]
pub struct Marker {
    pub version: Option<u32>,
    pub managed: BTreeSet<String>,
}

impl Marker {
    fn render(distro: Distro, managed: &BTreeSet<String>) -> String {
        let mut s = format!(
            "# mt-agent setup: the changes applied to this root. A newer setup removes the paths\n\
             # listed here that it no longer manages; delete this file to make it forget them.\n\
             version = {CHANGES_VERSION}\ndistro = {:?}\nmanaged = [\n",
            distro.as_str()
        );
        for m in managed {
            s.push_str(&format!("  {m:?},\n"));
        }
        s.push_str("]\n");
        s
    }

    pub fn previous(root: &Root) -> Marker {
        #[derive(serde::Deserialize)]
        struct OnDisk {
            version: u32,
            #[serde(default)]
            managed: BTreeSet<String>,
        }
        match root
            .read_text(MARKER)
            .and_then(|t| toml::from_str::<OnDisk>(&t).ok())
        {
            Some(m) => Marker {
                version: Some(m.version),
                managed: m.managed,
            },
            None => Marker::default(),
        }
    }
}

/// Checks that `root` is the distribution setup was asked to change.
pub fn check_root(root: &Utf8Path, distro: Distro) -> Result<()> {
    let r = Root { dir: root };
    match distro {
        Distro::Debian12 => {
            let version = r.read_text("/etc/debian_version").unwrap_or_default();
            let os_release = r.read_text("/etc/os-release").unwrap_or_default();
            let os_id = os_release_value(&os_release, "ID");
            let os_ver = os_release_value(&os_release, "VERSION_ID");
            let ok = version.trim_start().starts_with("12")
                && (os_release.is_empty() || (os_id == "debian" && os_ver == "12"));
            if !ok {
                bail!(
                    "{root} is not a Debian 12 root file system ({root}/etc/debian_version says {:?}, os-release ID={os_id:?} VERSION_ID={os_ver:?}); pass the right --root or --distro",
                    version.trim()
                );
            }
        }
        Distro::El6 => {
            let release = ["/etc/centos-release", "/etc/redhat-release"]
                .iter()
                .find_map(|f| r.read_text(f).map(|t| (f, t)));
            let Some((file, text)) = release else {
                bail!("{root} is not an el6 (CentOS/RHEL 6) root file system: it has neither /etc/centos-release nor /etc/redhat-release; pass the right --root or --distro");
            };
            let six = text
                .split_whitespace()
                .skip_while(|w| *w != "release")
                .nth(1)
                .is_some_and(|v| v == "6" || v.starts_with("6."));
            if !six {
                bail!("{root} is not an el6 root file system ({root}{file} says {:?}, not release 6.x); pass the right --root or --distro", text.trim());
            }
        }
    }
    Ok(())
}

fn os_release_value(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .unwrap_or_default()
}

/// What a change would do to the root: a human line and, for files, the unified diff.
struct Pending {
    line: String,
    diff: String,
    apply: Box<dyn FnOnce() -> Result<()>>,
}

fn pending(root: &Utf8Path, change: &Change) -> Result<Vec<Pending>> {
    let mut out = Vec::new();
    match change {
        Change::File {
            path,
            contents,
            mode,
        } => {
            let p = inside(root, path);
            let old = std::fs::read(&p).ok();
            let old_mode = std::fs::symlink_metadata(&p)
                .ok()
                .filter(|m| m.file_type().is_file())
                .map(|m| m.permissions().mode() & 0o7777);
            if old.as_ref() == Some(contents) && old_mode == Some(*mode) {
                return Ok(out);
            }
            let mut d = diff::unified(path, old.as_deref(), Some(contents));
            if old.as_ref() == Some(contents) {
                d = format!(
                    "mode {path}: {:o} -> {mode:o}\n",
                    old_mode.unwrap_or_default()
                );
            }
            let (contents, mode) = (contents.clone(), *mode);
            out.push(Pending {
                line: format!("wrote {path}"),
                diff: d,
                apply: Box::new(move || write_file(&p, &contents, mode)),
            });
        }
        Change::Symlink { path, target } => {
            let p = inside(root, path);
            let cur = std::fs::read_link(&p).ok();
            if cur.as_deref() == Some(Utf8Path::new(target).as_std_path()) {
                return Ok(out);
            }
            let target = target.clone();
            out.push(Pending {
                line: format!("linked {path} -> {target}"),
                diff: format!("symlink {path} -> {target}\n"),
                apply: Box::new(move || {
                    create_parent(&p)?;
                    if p.symlink_metadata().is_ok() {
                        std::fs::remove_file(&p).with_context(|| format!("cannot replace {p}"))?;
                    }
                    std::os::unix::fs::symlink(&target, &p)
                        .with_context(|| format!("cannot link {p}"))
                }),
            });
        }
        Change::RemoveMatching { dir, prefix } => {
            let r = Root { dir: root };
            for n in r
                .list(dir)
                .into_iter()
                .filter(|n| n.starts_with(prefix.as_str()))
            {
                let p = inside(root, dir).join(&n);
                if p.is_dir() && !p.is_symlink() {
                    continue;
                }
                let shown = format!("{}/{n}", dir.trim_end_matches('/'));
                let old = std::fs::read(&p).ok();
                out.push(Pending {
                    line: format!("removed {shown}"),
                    diff: diff::unified(&shown, old.as_deref(), None),
                    apply: Box::new(move || {
                        std::fs::remove_file(&p).with_context(|| format!("cannot remove {p}"))
                    }),
                });
            }
        }
    }
    Ok(out)
}

/// Applies the changes under `root`; returns a line per change actually made.
pub fn apply(root: &Utf8Path, changes: &[Change]) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for change in changes {
        for p in pending(root, change)? {
            (p.apply)()?;
            done.push(p.line);
        }
    }
    Ok(done)
}

/// The unified diff of everything `apply` would change (empty when nothing would).
pub fn dry_run(root: &Utf8Path, changes: &[Change]) -> Result<String> {
    let mut out = String::new();
    for change in changes {
        for p in pending(root, change)? {
            out.push_str(&p.diff);
        }
    }
    Ok(out)
}

/// Replaces a file of the root (see [`write_atomic`]: a crash leaves the old file or the new
/// one).
fn write_file(p: &Utf8Path, contents: &[u8], mode: u32) -> Result<()> {
    if p.is_dir() && !p.is_symlink() {
        bail!("{p} is a directory; setup needs a file there: remove it");
    }
    write_atomic(p, contents, mode)
}

pub fn inside(root: &Utf8Path, path: &str) -> Utf8PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn create_parent(p: &Utf8Path) -> Result<()> {
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {parent}"))?;
    }
    Ok(())
}

/// The whole command: check the root, plan, apply (or show the diff), report.
pub fn run(root: &Utf8Path, distro: Distro, config: Option<&Utf8Path>, dry: bool) -> Result<()> {
    check_root(root, distro)?;
    let installed = inside(root, crate::config::DEFAULT_CONFIG_PATH);
    let config = match config {
        Some(c) => c.to_owned(),
        None if installed.is_file() => installed,
        None => bail!(
            "no agent configuration: pass --config FILE (agent.toml rendered from the appliance definition) or install it at {installed} first"
        ),
    };
    let cfg = crate::config::load(&config)?;
    let exe = std::env::current_exe().context("cannot find the running mt-agent binary")?;
    let binary = std::fs::read(&exe).with_context(|| format!("cannot read {}", exe.display()))?;
    let plan = plan(root, distro, &cfg, binary)?;
    for n in &plan.notes {
        println!("mt-agent setup: note: {n}");
    }
    if dry {
        let d = dry_run(root, &plan.changes)?;
        if d.is_empty() {
            println!("mt-agent setup: {root} is up to date, nothing to change");
        }
        print!("{d}");
        return Ok(());
    }
    let done = apply(root, &plan.changes)?;
    if done.is_empty() {
        println!("mt-agent setup: {root} is up to date, nothing to change");
    }
    for line in done {
        println!("mt-agent setup: {line}");
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
