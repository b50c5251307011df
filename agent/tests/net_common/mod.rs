//! Shared rig for the replication tests (on top of `common`): a scratch directory of the
//! test's own, an agent configuration, `mt-agent serve` run as a child process on a loopback
//! port with its own retention volume (a private mount, so no lock or path is shared with
//! another test or run), enrolment and the master target's `senders` verbs, the `mt-agent`
//! binary for every other step, and disk
//! contents, changes and tagged change streams from the tests' seeded generator, and the check
//! that every point of a stream recovers exactly.
#![allow(dead_code)]

use crate::common::{serve_config, write_config};
use mt_agent::replication::frame::{encode, Frame, TagKind};
use mt_agent::replication::journal::clock::{Clock, SystemClock, Timestamp};
use mt_agent::replication::journal::Lsn;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
pub use testkit::Rng;

pub const BIN: &str = crate::common::MT_AGENT;
pub const PASSPHRASE: &str = "correct horse battery staple";

pub struct Rig {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub server: Option<Child>,
    pub addr: String,
    pub port: u16,
    /// Extra arguments for `serve` (e.g. a retention budget).
    pub serve_args: Vec<String>,
    /// The `mt-agent` every step runs: [`BIN`] unless a test sets another build.
    pub bin: PathBuf,
    /// Applied to every command the rig runs, `serve` included (e.g. a seccomp filter that a
    /// `pre_exec` installs and every exec after it inherits).
    pub wrap: Option<fn(Command) -> Command>,
    /// Soft and hard RLIMIT_NOFILE of `serve` (e.g. 1024, a systemd service's default).
    pub nofile_limit: Option<u64>,
}

impl Rig {
    /// A scratch directory with a passphrase file, an agent configuration whose retention
    /// volume is `volume/` (mounted only for `serve`) and the journals in `ret/`.
    pub fn new(name: &str) -> Rig {
        let dir = testkit::scratch(&format!("net-{name}"));
        std::fs::create_dir_all(dir.join("ret")).unwrap();
        std::fs::create_dir_all(dir.join("volume")).unwrap();
        let config = write_config(&dir, &serve_config(0, &dir.join("volume"))).into_std_path_buf();
        let dir = dir.into_std_path_buf();
        write_secret(&dir.join("passphrase"), PASSPHRASE);
        Rig {
            dir,
            config,
            server: None,
            addr: String::new(),
            port: 0,
            serve_args: Vec::new(),
            bin: PathBuf::from(BIN),
            wrap: None,
            nofile_limit: None,
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    /// Starts `mt-agent serve` (on the previous port if there was one) and waits for readiness.
    pub fn start_server(&mut self) {
        let listen = format!("127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("serve.log"))
            .unwrap();
        let volume = camino::Utf8PathBuf::from_path_buf(self.path("volume")).unwrap();
        let mut serve = testkit::run::with_private_mount(&volume, &self.bin);
        if let Some(n) = self.nofile_limit {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: only setrlimit (async-signal-safe) runs between fork and exec; the
            // limit is inherited by serve through unshare's exec.
            unsafe {
                serve.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                });
            }
        }
        serve
            .args(["serve", "--config"])
            .arg(&self.config)
            .args(["--listen", &listen, "--retention"])
            .arg(self.path("ret"))
            .arg("--state")
            .arg(self.path("server-state"))
            .arg("--passphrase-file")
            .arg(self.path("passphrase"))
            .args(&self.serve_args)
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = self.wrapped(serve).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("mt-agent: ready port="),
            "{line:?}: {}",
            self.log()
        );
        let port: u16 = line["mt-agent: ready port=".len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        self.port = port;
        self.addr = format!("127.0.0.1:{port}");
        self.server = Some(child);
    }

    pub fn kill_server(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("serve.log")).unwrap_or_default()
    }

    /// The server's log once it contains `want`, or as it is after 10 s (a session's end is
    /// logged after the sender was told, so a sender may exit before the line is written).
    pub fn log_once(&self, want: &str) -> String {
        let start = std::time::Instant::now();
        loop {
            let log = self.log();
            if log.contains(want) || start.elapsed() > std::time::Duration::from_secs(10) {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Runs `mt-agent ARGS` with the rig's configuration and retention directory in the
    /// environment (journal commands) and returns its output.
    pub fn mt(&self, args: &[&str]) -> Output {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("MT_AGENT_CONFIG", &self.config)
            .env("MT_AGENT_RETENTION", self.path("ret"));
        self.wrapped(c).output().unwrap()
    }

    fn wrapped(&self, c: Command) -> Command {
        match self.wrap {
            Some(wrap) => wrap(c),
            None => c,
        }
    }

    pub fn mt_ok(&self, args: &[&str]) -> String {
        let out = self.mt(args);
        assert!(
            out.status.success(),
            "mt-agent {args:?} failed: {}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `mt-agent enrol` of the sender state `state` (a rig path) with the passphrase file
    /// `passphrase` (a rig path), asking for no group; its output, for tests of refusals.
    pub fn enrol_with(&self, state: &str, passphrase: &str) -> Output {
        self.enrol_asking(state, passphrase, &[])
    }

    /// `mt-agent enrol` of the sender state `state` with the passphrase file `passphrase` (rig
    /// paths), asking for `groups`; its output.
    pub fn enrol_asking(&self, state: &str, passphrase: &str, groups: &[&str]) -> Output {
        let (state, passphrase) = (self.path(state), self.path(passphrase));
        let mut args = vec![
            "enrol",
            "--to",
            &self.addr,
            "--passphrase-file",
            passphrase.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ];
        for g in groups {
            args.extend(["--group", g]);
        }
        self.mt(&args)
    }

    /// Enrols the sender state `state` with the rig's passphrase, asking for every group
    /// created so far, and allows it each of them on the master target (also a group another
    /// key was granted first): the sender may write every group. Fails the test, with the
    /// server's log, if the master target refuses.
    pub fn enrol(&self, state: &str) {
        let groups = self.groups();
        let asked: Vec<&str> = groups.iter().map(String::as_str).collect();
        let out = self.enrol_asking(state, "passphrase", &asked);
        assert!(
            out.status.success(),
            "mt-agent enrol failed: {}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        for g in &asked {
            self.allow(state, g);
        }
    }

    /// The groups created on the master target so far, by name.
    pub fn groups(&self) -> Vec<String> {
        let mut out: Vec<String> = match std::fs::read_dir(self.path("ret").join("groups")) {
            Ok(dir) => dir
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        out.sort();
        out
    }

    /// The public key (hex) of the sender state `state` (a rig path).
    pub fn sender_key(&self, state: &str) -> String {
        let text = std::fs::read_to_string(self.path(state).join("key")).unwrap();
        text.lines().nth(1).unwrap().to_owned()
    }

    /// `mt-agent senders ARGS --state` the master target's state directory; its output.
    pub fn senders(&self, args: &[&str]) -> Output {
        let state = self.path("server-state");
        let mut a = vec!["senders"];
        a.extend(args);
        a.extend(["--state", state.to_str().unwrap()]);
        self.mt(&a)
    }

    /// [`Rig::senders`], failing the test unless it succeeds; its standard output.
    pub fn senders_ok(&self, args: &[&str]) -> String {
        let mut a = vec!["senders"];
        a.extend(args);
        let out = self.senders(args);
        assert!(
            out.status.success(),
            "mt-agent {a:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Allows the sender state `state`'s key to write `group` (`mt-agent senders allow`).
    pub fn allow(&self, state: &str, group: &str) {
        self.senders_ok(&["allow", &self.sender_key(state), "--group", group]);
    }

    /// Creates group `g` with one target per (name, size), targets zero-filled files.
    pub fn create_group(&self, group: &str, disks: &[(&str, u64)]) {
        let mut args = vec!["group".to_string(), "create".into(), group.into()];
        for (name, size) in disks {
            let t = self.path(&format!("target-{name}.img"));
            std::fs::File::create(&t).unwrap().set_len(*size).unwrap();
            args.push("--disk".into());
            args.push(format!("{name}={}", t.display()));
        }
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        self.mt_ok(&a);
    }

    pub fn target(&self, name: &str) -> PathBuf {
        self.path(&format!("target-{name}.img"))
    }

    /// `mt-agent send` with the rig's sender state; the report as JSON.
    pub fn send(&self, state: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "send".to_string(),
            "--to".into(),
            self.addr.clone(),
            "--state".into(),
            self.path(state).display().to_string(),
            "--json".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        self.mt(&a)
    }

    /// Every file of the group's journal with its contents' hash (to prove nothing changed);
    /// the empty lock file any opening of the group creates is left out.
    pub fn journal_fingerprint(&self, group: &str) -> Vec<(String, String)> {
        let dir = self.path("ret").join("groups").join(group);
        let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name() != "lock")
            .map(|e| {
                let data = std::fs::read(e.path()).unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    blake3::hash(&data).to_hex().to_string(),
                )
            })
            .collect();
        out.sort();
        out
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.kill_server();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

pub fn random_file(path: &Path, size: u64, rng: &mut Rng) -> Vec<u8> {
    let mut data = vec![0u8; size as usize];
    rng.fill(&mut data);
    std::fs::write(path, &data).unwrap();
    data
}

/// Rewrites `fraction` of the 64 KiB blocks of `data` (distinct blocks) and saves it.
pub fn change_blocks(path: &Path, data: &mut [u8], fraction: f64, rng: &mut Rng) -> u64 {
    let block = 64 << 10;
    let blocks = data.len() / block;
    let want = ((blocks as f64) * fraction).ceil() as usize;
    let mut chosen = std::collections::BTreeSet::new();
    while chosen.len() < want {
        chosen.insert(rng.below(blocks as u64) as usize);
    }
    for b in &chosen {
        rng.fill(&mut data[b * block..(b + 1) * block]);
    }
    std::fs::write(path, &*data).unwrap();
    (chosen.len() * block) as u64
}

pub fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One tag of a [`tagged_stream`] and the disks as they are at it.
pub type ExpectedPoint = (String, Vec<Vec<u8>>);

/// A recorded change stream for group "g" over disks d0, d1, ... (their contents `src`, changed
/// in place as the stream changes them): `tags` rounds of `writes` random writes of 1 to
/// `max_blocks` 4 KiB blocks, each round closed by a tag named `{prefix}{round}` of the kind
/// `kind(round)`. Source times are whole seconds from a minute ahead (recovery selects points
/// by time). Returns the stream's bytes and every tag with the disks at it.
pub fn tagged_stream(
    src: &mut [Vec<u8>],
    rng: &mut Rng,
    shape: (u64, u64, u64),
    prefix: &str,
    kind: impl Fn(u64) -> TagKind,
) -> (Vec<u8>, Vec<ExpectedPoint>) {
    tagged_stream_from(src, rng, shape, prefix, kind, 60)
}

/// [`tagged_stream`] whose source times begin `ahead` seconds from now (a stream that follows
/// another keeps its times after the other's).
pub fn tagged_stream_from(
    src: &mut [Vec<u8>],
    rng: &mut Rng,
    (tags, writes, max_blocks): (u64, u64, u64),
    prefix: &str,
    kind: impl Fn(u64) -> TagKind,
    ahead: i64,
) -> (Vec<u8>, Vec<ExpectedPoint>) {
    let base = (SystemClock.now().0 / 1_000_000 + ahead) * 1_000_000;
    let at = |secs: u64| Timestamp(base + secs as i64 * 1_000_000);
    let mut frames = vec![Frame::Start {
        group: "g".into(),
        disks: src
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("d{i}"), d.len() as u64))
            .collect(),
    }];
    let mut expected = Vec::new();
    let mut lsn = 0;
    for t in 0..tags {
        for _ in 0..writes {
            let disk = rng.below(src.len() as u64) as usize;
            let cap = src[disk].len() as u64;
            let len = (1 + rng.below(max_blocks)) * 4096;
            let off = rng.below((cap - len) / 4096) * 4096;
            let mut data = vec![0u8; len as usize];
            rng.fill(&mut data);
            src[disk][off as usize..(off + len) as usize].copy_from_slice(&data);
            lsn += 1;
            frames.push(Frame::Write {
                lsn: Lsn(lsn),
                source_time: at(t * 10 + 1),
                disk: disk as u32,
                offset: off,
                data,
                resync: false,
            });
        }
        lsn += 1;
        let name = format!("{prefix}{t}");
        frames.push(Frame::Tag {
            lsn: Lsn(lsn),
            source_time: at(t * 10 + 5),
            kind: kind(t),
            name: name.clone(),
        });
        expected.push((name, src.to_vec()));
    }
    (frames.iter().flat_map(encode).collect(), expected)
}

/// Every expected point of group "g" exists exactly once, and `recover` at its time gives
/// exactly the disks recorded for it.
pub fn assert_points_recover(rig: &Rig, expected: &[ExpectedPoint]) {
    let points: serde_json::Value =
        serde_json::from_str(&rig.mt_ok(&["points", "g", "--json"])).unwrap();
    let points = points["points"].as_array().unwrap().clone();
    for (name, images) in expected {
        let matching: Vec<_> = points
            .iter()
            .filter(|p| p["name"] == name.as_str())
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "point {name} exists exactly once: {points:?}"
        );
        let out = rig.path(&format!("recovered-{name}"));
        rig.mt_ok(&[
            "recover",
            "g",
            "--point",
            matching[0]["source_time"].as_str().unwrap(),
            "--to",
            out.to_str().unwrap(),
        ]);
        for (i, data) in images.iter().enumerate() {
            let got = std::fs::read(out.join(format!("d{i}.img"))).unwrap();
            assert!(
                got == *data,
                "d{i} recovered at {name} differs from the source then"
            );
        }
        std::fs::remove_dir_all(out).unwrap();
    }
}
