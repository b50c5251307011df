//! The master target's authorisation store, `STATE/authorised-senders`: which sender keys are
//! enrolled, which groups each may write and the address each enrolled from. One key a line,
//! `KEY [groups=G1,G2] [from=ADDR]`; a line of the format before groups (`KEY [ADDR]`) reads as
//! a key that is enrolled and allowed no group yet. Every change is a read-modify-write under
//! the lock file `STATE/authorised-senders.lock` through the one atomic writer, so
//! `mt-agent senders` and a running `serve` never lose each other's change; `serve` keeps a
//! copy ([`SenderStore`]) and reads the file again when it changes. This module decides who may
//! write what; it never ends a session or writes anything else.

use super::auth::{hex, unhex32};
use crate::replication::journal::valid_group_name;
use anyhow::{anyhow, bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::sync::Mutex;

/// The store's file in the master target's state directory.
pub const FILE: &str = "authorised-senders";
const LOCK_FILE: &str = "authorised-senders.lock";
/// The shortest key prefix an operator may type: 8 hex digits (32 bits) are unique among any
/// plausible number of senders and still short to type.
pub const MIN_KEY_PREFIX: usize = 8;

/// What the store says about one key.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SenderEntry {
    /// The groups this key may write.
    pub groups: BTreeSet<String>,
    /// The address the key enrolled from (none for a key an operator added by hand).
    pub from: Option<String>,
}

/// Every key of the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorisedSenders {
    keys: BTreeMap<[u8; 32], SenderEntry>,
}

/// What an enrolment's request for groups came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// Asked for and now allowed for this key.
    pub granted: Vec<String>,
    /// Asked for, but another key is allowed for the group: the operator decides
    /// (`mt-agent senders allow`); nothing was recorded for it.
    pub withheld: Vec<String>,
}

impl AuthorisedSenders {
    /// Reads the store's text; an error names `path` and the line.
    pub fn parse(path: &Utf8Path, text: &str) -> Result<AuthorisedSenders> {
        let mut keys = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let at = || format!("{path} line {}", n + 1);
            let mut words = line.split_whitespace();
            let Some(first) = words.next().filter(|w| !w.starts_with('#')) else {
                continue;
            };
            let key = unhex32(first)
                .ok_or_else(|| anyhow!("{}: {first:?} is not a 64-hex-digit key", at()))?;
            let mut entry = SenderEntry::default();
            let rest: Vec<&str> = words.collect();
            for (i, w) in rest.iter().enumerate() {
                if let Some(list) = w.strip_prefix("groups=") {
                    for g in list.split(',').filter(|g| !g.is_empty()) {
                        valid_group_name(g).map_err(|e| anyhow!("{}: {e}", at()))?;
                        entry.groups.insert(g.to_owned());
                    }
                } else if let Some(addr) = w.strip_prefix("from=") {
                    entry.from = Some(addr.to_owned()).filter(|a| !a.is_empty());
                } else if i == 0 && rest.len() == 1 && !w.contains('=') {
                    // The format before groups: the key and the address it enrolled from.
                    entry.from = Some((*w).to_owned());
                } else {
                    bail!(
                        "{}: {w:?} is neither groups=G1,G2 nor from=ADDR (a line is KEY [groups=G1,G2] [from=ADDR])",
                        at()
                    );
                }
            }
            if keys.insert(key, entry).is_some() {
                bail!("{}: key {} is listed twice", at(), hex(&key));
            }
        }
        Ok(AuthorisedSenders { keys })
    }

    /// The store's text, as [`AuthorisedSenders::parse`] reads it.
    pub fn render(&self) -> String {
        let mut text = String::from(
            "# mt-agent authorised senders: KEY groups=G1,G2 from=ADDR (change with mt-agent senders)\n",
        );
        for (key, e) in &self.keys {
            text.push_str(&hex(key));
            if !e.groups.is_empty() {
                let groups: Vec<&str> = e.groups.iter().map(String::as_str).collect();
                text.push_str(&format!(" groups={}", groups.join(",")));
            }
            if let Some(from) = &e.from {
                text.push_str(&format!(" from={from}"));
            }
            text.push('\n');
        }
        text
    }

    pub fn is_enrolled(&self, key: &[u8; 32]) -> bool {
        self.keys.contains_key(key)
    }

    pub fn may_write(&self, key: &[u8; 32], group: &str) -> bool {
        self.keys.get(key).is_some_and(|e| e.groups.contains(group))
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<&SenderEntry> {
        self.keys.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8; 32], &SenderEntry)> {
        self.keys.iter()
    }

    /// `Ok(())` if `key` may write `group`; otherwise the refusal, which says what the operator
    /// runs on the master target to allow it.
    pub fn check(&self, key: &[u8; 32], group: &str) -> std::result::Result<(), String> {
        if self.may_write(key, group) {
            return Ok(());
        }
        let k = hex(key);
        let now = match self.keys.get(key) {
            None => "is not enrolled".to_owned(),
            Some(e) if e.groups.is_empty() => "is allowed no group".to_owned(),
            Some(e) => format!(
                "is allowed only {}",
                e.groups.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        Err(format!(
            "sender key {k} may not write group {group} (the key {now}); to allow it, run on the master target: mt-agent senders allow {k} --group {group}"
        ))
    }

    /// Records an enrolment of `key` from `from`: the key is enrolled (its groups so far kept)
    /// and each asked group that no other key is allowed for is granted.
    pub fn enrol(&mut self, key: [u8; 32], from: &str, asked: &[String]) -> Grant {
        let mut grant = Grant::default();
        for g in asked.iter().collect::<BTreeSet<_>>() {
            let other = self
                .keys
                .iter()
                .any(|(k, e)| *k != key && e.groups.contains(g));
            if other {
                grant.withheld.push(g.clone());
            } else {
                grant.granted.push(g.clone());
            }
        }
        let entry = self.keys.entry(key).or_default();
        entry.from = Some(from.to_owned());
        entry.groups.extend(grant.granted.iter().cloned());
        grant
    }

    /// Allows `key` (enrolled or not) for `groups`; returns the groups it was not allowed before.
    pub fn allow(&mut self, key: [u8; 32], groups: &[String]) -> Vec<String> {
        let entry = self.keys.entry(key).or_default();
        groups
            .iter()
            .filter(|g| entry.groups.insert((*g).clone()))
            .cloned()
            .collect()
    }

    /// Takes `groups` from `key`; returns those it was allowed.
    pub fn revoke_groups(&mut self, key: &[u8; 32], groups: &[String]) -> Vec<String> {
        let Some(entry) = self.keys.get_mut(key) else {
            return Vec::new();
        };
        groups
            .iter()
            .filter(|g| entry.groups.remove(g.as_str()))
            .cloned()
            .collect()
    }

    /// Removes `key` entirely (it must enrol again).
    pub fn remove(&mut self, key: &[u8; 32]) -> Option<SenderEntry> {
        self.keys.remove(key)
    }

    /// The key an operator means: all 64 hex digits (a key the store need not hold yet), or a
    /// prefix of at least [`MIN_KEY_PREFIX`] digits that exactly one stored key starts with.
    pub fn resolve(&self, text: &str) -> Result<[u8; 32]> {
        let t = text.trim().to_ascii_lowercase();
        if let Some(k) = unhex32(&t) {
            return Ok(k);
        }
        if t.len() < MIN_KEY_PREFIX || t.len() > 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!(
                "{text:?} is not a sender key: give its 64 hex digits or a prefix of at least {MIN_KEY_PREFIX} (mt-agent senders list shows them)"
            );
        }
        let matching: Vec<[u8; 32]> = self
            .keys
            .keys()
            .filter(|k| hex(&k[..]).starts_with(&t))
            .copied()
            .collect();
        match matching.as_slice() {
            [k] => Ok(*k),
            [] => {
                bail!("no enrolled sender key starts with {t} (mt-agent senders list shows them)")
            }
            many => bail!(
                "{t} is the start of {} keys, give more digits: {}",
                many.len(),
                many.iter().map(|k| hex(k)).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

fn store_path(dir: &Utf8Path) -> Utf8PathBuf {
    dir.join(FILE)
}

/// Reads the store in `dir` (no file: no sender yet).
pub fn load(dir: &Utf8Path) -> Result<AuthorisedSenders> {
    let path = store_path(dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => AuthorisedSenders::parse(&path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AuthorisedSenders::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {path}")),
    }
}

/// Changes the store in `dir` under its lock: `change` gets what is on disk now, and what it
/// leaves is written (only if it differs).
pub fn update<T>(
    dir: &Utf8Path,
    change: impl FnOnce(&mut AuthorisedSenders) -> Result<T>,
) -> Result<T> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {dir}"))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .with_context(|| format!("cannot open {lock_path}"))?;
    // SAFETY: flock on a descriptor this function owns; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot lock {lock_path}"));
    }
    let before = load(dir)?;
    let mut after = before.clone();
    let out = change(&mut after)?;
    if after != before {
        crate::atomic_file::write_atomic(&store_path(dir), after.render().as_bytes(), 0o600)?;
    }
    drop(lock);
    Ok(out)
}

/// What identifies one version of the file: a replaced file has a new inode, an edited one a
/// new time or size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    len: u64,
}

fn version(path: &Utf8Path) -> Option<Version> {
    let m = std::fs::metadata(path).ok()?;
    Some(Version {
        dev: m.dev(),
        ino: m.ino(),
        mtime: (m.mtime(), m.mtime_nsec()),
        len: m.len(),
    })
}

/// `serve`'s copy of the store, read again whenever the file changed (at each session start,
/// and by the watcher about once a second).
pub struct SenderStore {
    dir: Utf8PathBuf,
    copy: Mutex<Copy>,
}

struct Copy {
    version: Option<Version>,
    senders: AuthorisedSenders,
    /// Counts the versions of the file read (whoever read them), so the watcher sees every
    /// change even when a session start read it first.
    generation: u64,
    /// Why the last version read does not parse (the copy is the one before it).
    error: Option<String>,
}

impl SenderStore {
    /// Reads the store in `dir`; a file that does not parse stops `serve` here.
    pub fn open(dir: &Utf8Path) -> Result<SenderStore> {
        let version = version(&store_path(dir));
        let senders = load(dir)?;
        Ok(SenderStore {
            dir: dir.to_owned(),
            copy: Mutex::new(Copy {
                version,
                senders,
                generation: 0,
                error: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Copy> {
        self.copy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the file again if it changed since it was last read. A file that does not parse
    /// leaves the copy as it was ([`SenderStore::generation`] says why).
    pub fn refresh(&self) {
        let mut copy = self.lock();
        let now = version(&store_path(&self.dir));
        if now == copy.version {
            return;
        }
        copy.version = now;
        copy.generation += 1;
        match load(&self.dir) {
            Ok(senders) => {
                copy.senders = senders;
                copy.error = None;
            }
            Err(e) => {
                copy.error = Some(format!(
                    "{e:#}; the authorised senders stay as they were until the file is fixed (mt-agent senders rewrites it)"
                ))
            }
        }
    }

    /// How many versions of the file were read, and why the last one does not parse.
    pub fn generation(&self) -> (u64, Option<String>) {
        let copy = self.lock();
        (copy.generation, copy.error.clone())
    }

    /// The copy as it is now.
    pub fn snapshot(&self) -> AuthorisedSenders {
        self.lock().senders.clone()
    }

    pub fn is_enrolled(&self, key: &[u8; 32]) -> bool {
        self.lock().senders.is_enrolled(key)
    }

    /// See [`AuthorisedSenders::check`] (on the copy; [`SenderStore::refresh`] first to see the
    /// file's latest state).
    pub fn check(&self, key: &[u8; 32], group: &str) -> std::result::Result<(), String> {
        self.lock().senders.check(key, group)
    }

    /// Records an enrolment in the file and the copy.
    pub fn enrol(&self, key: [u8; 32], from: &str, asked: &[String]) -> Result<Grant> {
        let grant = update(&self.dir, |s| Ok(s.enrol(key, from, asked)))?;
        self.refresh();
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/state/authorised-senders";

    fn key(b: u8) -> [u8; 32] {
        [b; 32]
    }

    #[test]
    fn the_format_before_groups_reads_as_enrolled_keys_allowed_no_group() {
        let text = format!(
            "# senders enrolled with the passphrase: key, first address\n{} 192.0.2.7:40112\n{} \n\n",
            hex(&key(1)),
            hex(&key(2))
        );
        let s = AuthorisedSenders::parse(P.into(), &text).unwrap();
        let one = s.get(&key(1)).unwrap();
        assert_eq!(one.from.as_deref(), Some("192.0.2.7:40112"));
        assert!(one.groups.is_empty());
        assert!(s.is_enrolled(&key(2)) && s.get(&key(2)).unwrap().from.is_none());
        assert!(!s.may_write(&key(1), "g"));
        let e = s.check(&key(1), "g").unwrap_err();
        assert!(e.contains("is allowed no group"), "{e}");
        assert!(
            e.contains(&format!(
                "mt-agent senders allow {} --group g",
                hex(&key(1))
            )),
            "{e}"
        );
    }

    #[test]
    fn the_store_round_trips_through_its_text() {
        let mut s = AuthorisedSenders::default();
        s.enrol(key(1), "192.0.2.7:1", &["a".into(), "b".into()]);
        s.allow(key(3), &["c".into()]);
        s.enrol(key(2), "[2001:db8::1]:5", &[]);
        let text = s.render();
        assert!(
            text.contains(&format!("{} groups=a,b from=192.0.2.7:1\n", hex(&key(1)))),
            "{text}"
        );
        assert_eq!(AuthorisedSenders::parse(P.into(), &text).unwrap(), s);
    }

    #[test]
    fn a_bad_line_is_named_by_the_file_and_its_number() {
        let good = hex(&key(1));
        for (text, line, what) in [
            (format!("{good}\nnot-a-key\n"), 2, "not a 64-hex-digit key"),
            (
                format!("# c\n\n{good} groups=a,b/c\n"),
                3,
                "not a valid group name",
            ),
            (format!("{good} color=red\n"), 1, "neither groups="),
            (
                format!("{good} 192.0.2.1:1 192.0.2.1:2\n"),
                1,
                "neither groups=",
            ),
            (format!("{good}\n{good} groups=a\n"), 2, "listed twice"),
        ] {
            let e = format!(
                "{:#}",
                AuthorisedSenders::parse(P.into(), &text).unwrap_err()
            );
            assert!(e.starts_with(&format!("{P} line {line}: ")), "{e}");
            assert!(e.contains(what), "{e}");
        }
    }

    #[test]
    fn enrolment_grants_only_groups_no_other_key_is_allowed_for() {
        let mut s = AuthorisedSenders::default();
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            s.enrol(key(1), "a:1", &g(&["a", "b"])).granted,
            g(&["a", "b"])
        );
        let second = s.enrol(key(2), "b:1", &g(&["b", "c"]));
        assert_eq!((second.granted, second.withheld), (g(&["c"]), g(&["b"])));
        // The same key asking again keeps what it has.
        let again = s.enrol(key(1), "a:2", &g(&["a"]));
        assert_eq!(again.granted, g(&["a"]));
        assert!(s.may_write(&key(1), "b") && !s.may_write(&key(2), "b"));
        // The operator decides: two keys may share a group.
        assert_eq!(s.allow(key(2), &g(&["b", "c"])), g(&["b"]));
        assert!(s.may_write(&key(2), "b"));
        assert_eq!(s.revoke_groups(&key(1), &g(&["b", "z"])), g(&["b"]));
        assert!(s.remove(&key(1)).is_some() && !s.is_enrolled(&key(1)));
    }

    #[test]
    fn a_key_is_named_by_its_digits_or_a_unique_prefix() {
        let mut s = AuthorisedSenders::default();
        let mut a = key(0xab);
        a[4] = 1;
        let mut b = key(0xab);
        b[4] = 2;
        s.allow(a, &[]);
        s.allow(b, &[]);
        s.allow(key(0x12), &[]);
        assert_eq!(s.resolve(&hex(&key(9))).unwrap(), key(9));
        assert_eq!(s.resolve("12121212").unwrap(), key(0x12));
        assert_eq!(s.resolve("ABABABAB01").unwrap(), a);
        let e = s.resolve("abababab").unwrap_err().to_string();
        assert!(e.contains(&hex(&a)) && e.contains(&hex(&b)), "{e}");
        assert!(s.resolve("1212").is_err());
        assert!(s
            .resolve("ffffffff")
            .unwrap_err()
            .to_string()
            .contains("no enrolled"));
    }
}
