//! Who may talk to whom. Each end has a static X25519 key pair kept in its state directory.
//! Enrolment (once): the sender proves it knows the master target's passphrase (a Noise XXpsk3
//! handshake whose pre-shared key is PBKDF2-HMAC-SHA256 of the passphrase with the agent's own
//! salt), only while the enrolment window is open ([`super::enrol_window`]); both ends learn
//! each other's static key; the master target records the sender's key and the groups it
//! grants of those asked ([`super::senders`]) and the sender pins the master target's key.
//! Every later session is a Noise XX handshake that the master target accepts only from an
//! enrolled key and the sender only with the pinned key. The passphrase file is read at every
//! enrolment (a changed file takes effect at the next handshake); the derived key is kept, in
//! memory only, by a digest of salt and passphrase, so an unchanged file costs no derivation.
//! Whether an enrolment attempt is evaluated at all is the [`EnrolGate`]'s decision (serve's
//! backoff, through [`super::enrol_gate`]). This module never stores or logs the passphrase or
//! a derived key.

use super::enrol_gate::{
    seconds, stated_delay, EnrolDelay, EnrolGate, OpenGate, RefusalKind, Refused,
};
use super::enrol_window::EnrolmentWindow;
use super::senders::{Grant, SenderStore};
use super::transport::{self, Channel, ENROL_PATTERN, HELLO_MAGIC, MODE_ENROL, MODE_SESSION};
use super::{Message, PROTOCOL_VERSION};
use crate::replication::journal::valid_group_name;
use anyhow::{anyhow, bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use std::io::{BufRead, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Where the master target's passphrase is read from (one line; readable only by root; a guest
/// fact of the contract). `mt-agent serve --passphrase-file` overrides it.
pub use mt_contract::guest::PASSPHRASE_PATH;
/// The master target's keys and authorised senders.
pub const DEFAULT_SERVER_STATE: &str = "/var/lib/mt-agent/serve";
/// A sender's key and the master-target keys it pinned.
pub const DEFAULT_SENDER_STATE: &str = "/var/lib/mt-agent/send";
/// PBKDF2-HMAC-SHA256 rounds (OWASP 2023 guidance for this KDF): an offline guess costs as
/// much as an enrolment.
pub const KDF_ROUNDS: u32 = 600_000;
const SALT_LEN: usize = 16;
/// How long a whole handshake may take on the master target, from accept to the status byte.
/// A handshake is four messages, a few round trips (well under a second across a WAN) plus,
/// on a first enrolment, the sender's and the master target's PBKDF2 (about half a second
/// each); 10 s leaves room for a slow link and bounds what a peer that sends nothing, or a
/// byte now and then, can hold: one handshake slot and its thread for 10 s. The sender uses it
/// as the limit of each wait for the master target.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// The most a sender waits in all for the delays a master target states before evaluating its
/// enrolment: the delay after a typo (a second by default) and the longest delay (a minute by
/// default) a few times over, but not for ever behind someone else's guesses from its address.
pub const ENROL_WAIT_MAX: Duration = Duration::from_secs(180);

/// A static key pair, stored as two hex lines (private, public) in a file only root can read.
#[derive(Clone)]
pub struct KeyPair {
    pub private: [u8; 32],
    pub public: [u8; 32],
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(super) fn unhex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("cannot read /dev/urandom")?;
    Ok(b)
}

/// Keys and salts: readable by their owner only.
fn write_private(path: &Utf8Path, text: &str) -> Result<()> {
    crate::atomic_file::write_atomic(path, text.as_bytes(), 0o600)
}

impl KeyPair {
    /// Loads `DIR/key`, creating it on first use. A key missing from a directory that shows
    /// it had one (authorised senders, pins) is an error, not a new key: every peer's record
    /// of the old key would then mismatch with no word of why.
    pub fn load_or_create(dir: &Utf8Path) -> Result<KeyPair> {
        let path = dir.join("key");
        if !path.exists() {
            let pins = std::fs::read_dir(dir.join("pinned"))
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            if pins || dir.join("authorised-senders").exists() {
                let (holds, again) = if pins {
                    (
                        "pinned master-target keys",
                        "enrol with every master target again",
                    )
                } else {
                    ("authorised senders", "enrol every sender again")
                };
                bail!(
                    "{path} is missing but {dir} holds {holds} made with it: the key was lost. Restore {path} from a backup; or, to start with a new key, move {dir} away and {again}"
                );
            }
        }
        if path.exists() {
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
            let mut lines = text.lines();
            let (Some(private), Some(public)) = (
                lines.next().and_then(unhex32),
                lines.next().and_then(unhex32),
            ) else {
                bail!("{path} is not a key file (two lines of 64 hex digits); move it away to make a new key, then enrol again");
            };
            return Ok(KeyPair { private, public });
        }
        let kp = snow::Builder::new(transport::SESSION_PATTERN.parse()?)
            .generate_keypair()
            .map_err(|e| anyhow!("cannot generate a key: {e}"))?;
        let pair = KeyPair {
            private: kp.private.as_slice().try_into()?,
            public: kp.public.as_slice().try_into()?,
        };
        write_private(
            &path,
            &format!("{}\n{}\n", hex(&pair.private), hex(&pair.public)),
        )?;
        Ok(pair)
    }
}

/// Reads the passphrase: the first line of a file nobody but its owner may read.
pub fn read_passphrase(path: &Utf8Path) -> Result<String> {
    let meta = std::fs::metadata(path).with_context(|| {
        format!("cannot read the passphrase file {path} (the master target's passphrase, one line)")
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "the passphrase file {path} is readable by others (mode {:o}); run chmod 600 {path}",
            meta.permissions().mode() & 0o777
        );
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        bail!("the passphrase file {path} is empty");
    }
    Ok(line.to_owned())
}

fn derive_psk(passphrase: &str, salt: &[u8], rounds: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(passphrase.as_bytes(), salt, rounds, &mut out);
    out
}

/// What identifies a passphrase in the cache of derived keys (never written anywhere).
fn passphrase_digest(passphrase: &str, salt: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(salt);
    h.update(passphrase.as_bytes());
    h.finalize().into()
}

/// The master target's side: its key, salt, passphrase and authorised senders.
pub struct ServerAuth {
    /// The state directory, where the enrolment window is read at each enrolment.
    dir: Utf8PathBuf,
    key: KeyPair,
    salt: [u8; SALT_LEN],
    passphrase_file: Utf8PathBuf,
    /// The key derived from the passphrase last read, by its digest: one slow derivation per
    /// passphrase, not per enrolment. The lock is held while deriving, so one change of the
    /// file costs one derivation however many enrolments come at once.
    psk: Mutex<Option<([u8; 32], [u8; 32])>>,
    enrol_gate: Arc<dyn EnrolGate>,
    senders: SenderStore,
}

/// What a sender asked for after a successful handshake.
pub enum Accepted {
    /// A replication session from an authorised sender.
    Session(Box<Channel>),
    /// A sender was just enrolled (the connection is finished): its key and the groups it
    /// asked for, granted or withheld.
    Enrolled([u8; 32], Grant),
}

impl ServerAuth {
    pub fn load(dir: &Utf8Path, passphrase_file: &Utf8Path) -> Result<ServerAuth> {
        crate::atomic_file::create_dirs(dir)?;
        let key = KeyPair::load_or_create(dir)?;
        let salt_path = dir.join("salt");
        let salt = if salt_path.exists() {
            let t = std::fs::read_to_string(&salt_path)
                .with_context(|| format!("cannot read {salt_path}"))?;
            let b = unhex32(&format!("{:0<64}", t.trim()))
                .filter(|_| t.trim().len() == 2 * SALT_LEN)
                .ok_or_else(|| anyhow!("{salt_path} is not 32 hex digits"))?;
            b[..SALT_LEN].try_into()?
        } else {
            let s: [u8; SALT_LEN] = random()?;
            write_private(&salt_path, &format!("{}\n", hex(&s)))?;
            s
        };
        let senders = SenderStore::open(dir)?;
        Ok(ServerAuth {
            dir: dir.to_owned(),
            key,
            salt,
            passphrase_file: passphrase_file.to_owned(),
            psk: Mutex::new(None),
            enrol_gate: Arc::new(OpenGate),
            senders,
        })
    }

    /// Enrolment attempts are evaluated only when `gate` allows.
    pub fn with_enrol_gate(mut self, gate: Arc<dyn EnrolGate>) -> ServerAuth {
        self.enrol_gate = gate;
        self
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.public
    }

    /// The authorised senders as this process sees them.
    pub fn senders(&self) -> &SenderStore {
        &self.senders
    }

    /// The pre-shared key of the passphrase the file holds now.
    fn psk(&self) -> std::result::Result<[u8; 32], String> {
        let passphrase = read_passphrase(&self.passphrase_file).map_err(|e| format!("{e:#}"))?;
        let digest = passphrase_digest(&passphrase, &self.salt);
        let mut cached = self.psk.lock().unwrap_or_else(|e| e.into_inner());
        match *cached {
            Some((d, key)) if d == digest => Ok(key),
            _ => {
                let key = derive_psk(&passphrase, &self.salt, KDF_ROUNDS);
                *cached = Some((digest, key));
                Ok(key)
            }
        }
    }

    /// Runs the server side of the handshake on a fresh connection, within
    /// [`HANDSHAKE_DEADLINE`] of now. An error is the reason the peer was refused (already told
    /// to the peer where possible).
    pub fn accept(&self, stream: TcpStream) -> Result<Accepted> {
        let deadline = Deadline::new(HANDSHAKE_DEADLINE);
        // A read timeout bounds each wait, but a peer sending a byte before each one ran out
        // would keep one `read_exact` going: at the deadline the socket is shut down.
        let watched = deadline_watch().map(|w| w.watch(&stream, deadline.at));
        let result = self.handshake(stream, &deadline);
        drop(watched);
        result.map_err(|e| {
            if deadline.expired() {
                e.context(format!(
                    "handshake not finished within {} s",
                    HANDSHAKE_DEADLINE.as_secs()
                ))
            } else {
                e
            }
        })
    }

    fn handshake(&self, mut stream: TcpStream, deadline: &Deadline) -> Result<Accepted> {
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        deadline.arm(&stream)?;
        // The banner: what the port answered before replication existed, kept for probes.
        writeln!(stream, "mt-agent {}", env!("CARGO_PKG_VERSION"))?;
        deadline.arm(&stream)?;
        let mut hello = [0u8; 7];
        stream
            .read_exact(&mut hello)
            .map_err(|e| anyhow!("no hello ({e})"))?;
        if hello[..4] != HELLO_MAGIC {
            bail!(
                "not an mt-agent replication peer (the first bytes are {:02x?}, not \"MTRP\")",
                &hello[..4]
            );
        }
        let version = u16::from_le_bytes([hello[4], hello[5]]);
        if version != PROTOCOL_VERSION {
            bail!("protocol version {version}; this agent speaks {PROTOCOL_VERSION}");
        }
        let mode = hello[6];
        let params = match mode {
            MODE_ENROL => ENROL_PATTERN,
            MODE_SESSION => transport::SESSION_PATTERN,
            m => bail!("unknown hello mode {m}"),
        };
        let mut prologue = hello.to_vec();
        let psk;
        // An enrolment refused before its passphrase is checked: the handshake still runs, with
        // a placeholder key that is never checked, so the sender reads the refusal where it
        // expects the status; that costs a few Diffie-Hellman operations and no derivation.
        let mut refuse: Option<(Refused, String)> = None;
        let source = stream
            .peer_addr()
            .map(|a| a.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let mut builder = snow::Builder::new(params.parse()?)
            .local_private_key(&self.key.private)
            .map_err(|e| anyhow!("{e}"))?;
        if mode == MODE_ENROL {
            // Before the offer: a closed window costs no key derivation and answers no guess.
            deadline.arm(&stream)?;
            if let Err(why) = EnrolmentWindow::check(&self.dir) {
                let _ = transport::write_status(&mut stream, Some(&why));
                bail!("enrolment refused: {why}");
            }
            transport::write_status(&mut stream, None)?;
            let mut offer = self.salt.to_vec();
            offer.extend_from_slice(&KDF_ROUNDS.to_le_bytes());
            deadline.arm(&stream)?;
            transport::write_record(&mut stream, &offer)?;
            prologue.extend_from_slice(&offer);
            psk = match self.enrol_gate.delay(source) {
                Some(delay) => {
                    refuse = Some(delayed(&delay));
                    [0u8; 32]
                }
                None => match self.psk() {
                    Ok(k) => k,
                    Err(why) => {
                        let peer_why =
                            "this master target has no usable passphrase; enrolment is closed";
                        refuse = Some((
                            Refused {
                                kind: RefusalKind::NoPassphrase,
                                why: format!("enrolment refused: {why}"),
                            },
                            peer_why.into(),
                        ));
                        [0u8; 32]
                    }
                },
            };
            builder = builder.psk(3, &psk).map_err(|e| anyhow!("{e}"))?;
        }
        let mut hs = builder
            .prologue(&prologue)
            .map_err(|e| anyhow!("{e}"))?
            .build_responder()
            .map_err(|e| anyhow!("{e}"))?;
        let mut buf = vec![0u8; 65535];
        deadline.arm(&stream)?;
        let m1 =
            transport::read_record(&mut stream).context("the sender left before the handshake")?;
        hs.read_message(&m1, &mut buf)
            .map_err(|e| anyhow!("bad first handshake message: {e}"))?;
        let n = hs
            .write_message(&[], &mut buf)
            .map_err(|e| anyhow!("{e}"))?;
        deadline.arm(&stream)?;
        transport::write_record(&mut stream, &buf[..n])?;
        deadline.arm(&stream)?;
        let m3 = transport::read_record(&mut stream).context(
            "the sender left during the handshake (a sender whose pin does not match this master target's key does that)",
        )?;
        let proved = if mode == MODE_ENROL {
            let evaluated = match refuse {
                Some(r) => Err(r),
                None => self
                    .enrol_gate
                    .evaluate(source, &mut || hs.read_message(&m3, &mut buf).is_ok())
                    .map_err(|d| delayed(&d)),
            };
            match evaluated {
                Ok(p) => p,
                Err((refused, peer_why)) => {
                    let _ = transport::write_status(&mut stream, Some(&peer_why));
                    return Err(refused.into());
                }
            }
        } else {
            hs.read_message(&m3, &mut buf).is_ok()
        };
        if !proved {
            let _ = transport::write_status(&mut stream, Some(why_unproved(mode)));
            if mode == MODE_ENROL {
                return Err(Refused {
                    kind: RefusalKind::WrongPassphrase,
                    why: why_unproved(mode).into(),
                }
                .into());
            }
            bail!("{}", why_unproved(mode));
        }
        let remote: [u8; 32] = hs
            .get_remote_static()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| anyhow!("no sender key in the handshake"))?;
        if mode == MODE_SESSION {
            // An unreadable file keeps the copy read before (the watcher in serve reports it).
            self.senders.refresh();
            if !self.senders.is_enrolled(&remote) {
                let why = format!(
                    "unknown sender key {}: enrol it first (mt-agent enrol with the master target's passphrase)",
                    hex(&remote)
                );
                let _ = transport::write_status(&mut stream, Some(&why));
                return Err(Refused {
                    kind: RefusalKind::UnknownKey,
                    why,
                }
                .into());
            }
        }
        deadline.arm(&stream)?;
        transport::write_status(&mut stream, None)?;
        // What the session's own timeouts will be is the session's business.
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(None)?;
        let noise = hs
            .into_stateless_transport_mode()
            .map_err(|e| anyhow!("{e}"))?;
        let mut ch = Channel::new(stream, noise)?;
        if mode == MODE_ENROL {
            let asked = match ch.rx.recv() {
                Ok(Some(Message::EnrolRequest { groups })) => groups,
                other => bail!(
                    "the sender asked for no groups after the enrolment handshake ({other:?})"
                ),
            };
            if let Some(why) = asked.iter().find_map(|g| valid_group_name(g).err()) {
                let _ = ch.tx.send(&Message::Refused {
                    retry: false,
                    why: why.clone(),
                });
                bail!("enrolment refused: {why}");
            }
            let grant = self.senders.enrol(remote, &peer, &asked)?;
            ch.tx.send(&Message::Enrolled {
                granted: grant.granted.clone(),
                withheld: grant.withheld.clone(),
            })?;
            return Ok(Accepted::Enrolled(remote, grant));
        }
        Ok(Accepted::Session(Box::new(ch)))
    }
}

/// A delayed enrolment: the error and what the sender is told (the same words).
fn delayed(d: &EnrolDelay) -> (Refused, String) {
    let why = d.refusal();
    (
        Refused {
            kind: RefusalKind::Delayed,
            why: why.clone(),
        },
        why,
    )
}

/// Why the last handshake message did not authenticate.
fn why_unproved(mode: u8) -> &'static str {
    if mode == MODE_ENROL {
        "wrong passphrase (the enrolment handshake does not authenticate)"
    } else {
        "the handshake does not authenticate"
    }
}

/// The end of a handshake: every read and write before it waits at most until then.
struct Deadline {
    at: Instant,
}

impl Deadline {
    fn new(limit: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + limit,
        }
    }

    /// Sets the socket's timeouts to the time left (before each step of the handshake).
    fn arm(&self, stream: &TcpStream) -> Result<()> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no time left");
        }
        stream.set_read_timeout(Some(left))?;
        stream.set_write_timeout(Some(left))?;
        Ok(())
    }

    /// Whether the handshake ran out of time (with the granularity of a socket timeout).
    fn expired(&self) -> bool {
        self.at.saturating_duration_since(Instant::now()) < Duration::from_millis(20)
    }
}

/// Shuts down the sockets of handshakes whose deadline passed (one thread for all of them,
/// started on the first handshake): a blocked read then returns at once.
struct DeadlineWatch {
    due: Mutex<Watching>,
    wake: Condvar,
}

/// The last id given, and each handshake watched: its id, deadline and socket.
type Watching = (u64, Vec<(u64, Instant, TcpStream)>);

/// Removes its handshake from the watch when the handshake ends.
struct Watched<'a> {
    watch: &'a DeadlineWatch,
    id: u64,
}

/// The one watch; `None` if its thread could not be started (each wait is still bounded by
/// the timeouts the deadline sets).
fn deadline_watch() -> Option<&'static DeadlineWatch> {
    static WATCH: OnceLock<Option<&'static DeadlineWatch>> = OnceLock::new();
    *WATCH.get_or_init(|| {
        let w: &'static DeadlineWatch = Box::leak(Box::new(DeadlineWatch {
            due: Mutex::new((0, Vec::new())),
            wake: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("handshake-deadline".into())
            .spawn(move || w.run())
            .ok()
            .map(|_| w)
    })
}

impl DeadlineWatch {
    fn watch(&self, stream: &TcpStream, at: Instant) -> Option<Watched<'_>> {
        // Out of descriptors: no watch, the timeouts still bound every wait.
        let clone = stream.try_clone().ok()?;
        let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        due.0 += 1;
        let id = due.0;
        due.1.push((id, at, clone));
        self.wake.notify_one();
        Some(Watched { watch: self, id })
    }

    fn run(&self) {
        let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = Instant::now();
            due.1.retain(|(_, at, s)| {
                let keep = *at > now;
                if !keep {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
                keep
            });
            let next = due.1.iter().map(|e| e.1).min();
            due = match next {
                None => self.wake.wait(due).unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    self.wake
                        .wait_timeout(due, at.saturating_duration_since(now))
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        let mut due = self.watch.due.lock().unwrap_or_else(|e| e.into_inner());
        due.1.retain(|e| e.0 != self.id);
    }
}

/// The sender's side: its key and the master-target keys it pinned.
pub struct SenderAuth {
    dir: Utf8PathBuf,
    key: KeyPair,
}

fn pin_path(dir: &Utf8Path, target: &str) -> Utf8PathBuf {
    let safe: String = target
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join("pinned").join(safe)
}

impl SenderAuth {
    pub fn load(dir: &Utf8Path) -> Result<SenderAuth> {
        crate::atomic_file::create_dirs(dir)?;
        Ok(SenderAuth {
            dir: dir.to_owned(),
            key: KeyPair::load_or_create(dir)?,
        })
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.public
    }

    /// The master-target key pinned for `target` (HOST:PORT), if enrolled.
    pub fn pinned(&self, target: &str) -> Result<Option<[u8; 32]>> {
        let p = pin_path(&self.dir, target);
        if !p.exists() {
            return Ok(None);
        }
        let t = std::fs::read_to_string(&p).with_context(|| format!("cannot read {p}"))?;
        unhex32(&t).map(Some).ok_or_else(|| {
            anyhow!("{p} is not a pinned key (64 hex digits); delete it and enrol again")
        })
    }

    fn connect(&self, target: &str, mode: u8) -> Result<TcpStream> {
        let mut stream =
            TcpStream::connect(target).with_context(|| format!("cannot connect to {target}"))?;
        stream.set_read_timeout(Some(HANDSHAKE_DEADLINE))?;
        let mut banner = Vec::new();
        std::io::BufReader::new((&stream).take(128))
            .read_until(b'\n', &mut banner)
            .with_context(|| format!("{target} sent no banner"))?;
        if banner.is_empty() {
            // The listener went away between accept and banner (a restart): worth retrying.
            return Err(anyhow::Error::new(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{target} closed the connection before its banner"),
            )));
        }
        if !banner.starts_with(b"mt-agent ") {
            bail!(
                "{target} is not an mt-agent (its banner is {:?})",
                String::from_utf8_lossy(&banner)
            );
        }
        let mut hello = HELLO_MAGIC.to_vec();
        hello.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        hello.push(mode);
        stream.write_all(&hello)?;
        Ok(stream)
    }

    fn finish(
        target: &str,
        mut stream: TcpStream,
        mut hs: snow::HandshakeState,
        expect: Option<[u8; 32]>,
    ) -> Result<Channel> {
        let mut buf = vec![0u8; 65535];
        let n = hs
            .write_message(&[], &mut buf)
            .map_err(|e| anyhow!("{e}"))?;
        transport::write_record(&mut stream, &buf[..n])?;
        let m2 = transport::read_record(&mut stream)
            .with_context(|| format!("{target} closed the connection during the handshake"))?;
        hs.read_message(&m2, &mut buf)
            .map_err(|e| anyhow!("{target}: bad handshake message: {e}"))?;
        let server: [u8; 32] = hs
            .get_remote_static()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| anyhow!("{target} sent no key"))?;
        if let Some(pinned) = expect {
            if server != pinned {
                bail!(
                    "refused: {target} presented key {} but key {} is pinned for it; if the master target was rebuilt, delete the pin and enrol again",
                    hex(&server),
                    hex(&pinned)
                );
            }
        }
        let n = hs
            .write_message(&[], &mut buf)
            .map_err(|e| anyhow!("{e}"))?;
        transport::write_record(&mut stream, &buf[..n])?;
        if let Some(why) = transport::read_status(&mut stream)
            .with_context(|| format!("{target} closed the connection during the handshake"))?
        {
            bail!("{target} refused the connection: {why}");
        }
        stream.set_read_timeout(None)?;
        let noise = hs
            .into_stateless_transport_mode()
            .map_err(|e| anyhow!("{e}"))?;
        Ok(Channel::new(stream, noise)?)
    }

    /// Proves the passphrase to `target`, pins its key, has this sender's key enrolled and asks
    /// to write `groups`: the master target's key and what it granted.
    pub fn enrol(
        &self,
        target: &str,
        passphrase: &str,
        groups: &[String],
    ) -> Result<([u8; 32], Grant)> {
        let mut stream = self.connect(target, MODE_ENROL)?;
        if let Some(why) = transport::read_status(&mut stream)
            .with_context(|| format!("{target} closed the connection before the enrolment offer"))?
        {
            bail!("{target} refused the enrolment: {why}");
        }
        let offer = transport::read_record(&mut stream)
            .with_context(|| format!("{target} sent no enrolment offer"))?;
        if offer.len() != SALT_LEN + 4 {
            bail!("{target} sent a malformed enrolment offer");
        }
        let rounds = u32::from_le_bytes(offer[SALT_LEN..].try_into()?);
        if !(100_000..=10_000_000).contains(&rounds) {
            bail!("{target} asks for {rounds} key-derivation rounds (100000 to 10000000 allowed)");
        }
        let psk = derive_psk(passphrase, &offer[..SALT_LEN], rounds);
        let mut prologue = HELLO_MAGIC.to_vec();
        prologue.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        prologue.push(MODE_ENROL);
        prologue.extend_from_slice(&offer);
        let hs = snow::Builder::new(ENROL_PATTERN.parse()?)
            .local_private_key(&self.key.private)
            .and_then(|b| b.psk(3, &psk))
            .and_then(|b| b.prologue(&prologue))
            .and_then(|b| b.build_initiator())
            .map_err(|e| anyhow!("{e}"))?;
        let mut ch = Self::finish(target, stream, hs, None)?;
        ch.tx.send(&Message::EnrolRequest {
            groups: groups.to_vec(),
        })?;
        let grant = match ch.rx.recv() {
            Ok(Some(Message::Enrolled { granted, withheld })) => Grant { granted, withheld },
            Ok(Some(Message::Refused { why, .. })) => {
                bail!("{target} refused the enrolment: {why}")
            }
            other => bail!("{target} did not confirm the enrolment ({other:?})"),
        };
        write_private(
            &pin_path(&self.dir, target),
            &format!("{}\n", hex(&ch.remote_key)),
        )?;
        Ok((ch.remote_key, grant))
    }

    /// [`SenderAuth::enrol`], waiting out each delay the master target states (told to
    /// `note` first), up to [`ENROL_WAIT_MAX`] in all; any other refusal is returned at once.
    pub fn enrol_waiting(
        &self,
        target: &str,
        passphrase: &str,
        groups: &[String],
        note: &dyn Fn(&str),
    ) -> Result<([u8; 32], Grant)> {
        let mut waited = Duration::ZERO;
        loop {
            let e = match self.enrol(target, passphrase, groups) {
                Ok(done) => return Ok(done),
                Err(e) => e,
            };
            let Some(wait) = stated_delay(&format!("{e:#}")) else {
                return Err(e);
            };
            if waited + wait > ENROL_WAIT_MAX {
                return Err(e.context(format!(
                    "not waiting more than {} s in all for enrolment; try again later",
                    ENROL_WAIT_MAX.as_secs()
                )));
            }
            note(&format!(
                "{e:#}; waiting {} s, then trying again",
                seconds(wait)
            ));
            std::thread::sleep(wait);
            waited += wait;
        }
    }

    /// Opens a replication session with an enrolled master target.
    pub fn session(&self, target: &str) -> Result<Channel> {
        let Some(pinned) = self.pinned(target)? else {
            bail!("no key is pinned for {target}: enrol first (mt-agent enrol --to {target} --passphrase-file FILE)");
        };
        let stream = self.connect(target, MODE_SESSION)?;
        let mut prologue = HELLO_MAGIC.to_vec();
        prologue.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        prologue.push(MODE_SESSION);
        let hs = snow::Builder::new(transport::SESSION_PATTERN.parse()?)
            .local_private_key(&self.key.private)
            .and_then(|b| b.prologue(&prologue))
            .and_then(|b| b.build_initiator())
            .map_err(|e| anyhow!("{e}"))?;
        Self::finish(target, stream, hs, Some(pinned))
    }
}
