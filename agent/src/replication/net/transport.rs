//! The encrypted, mutually authenticated channel both ends talk through: a Noise handshake over
//! TCP (driven by [`super::auth`], which decides whose keys to trust), then a byte stream cut
//! into Noise transport messages of at most 64 KiB, each sealed with AES-256-GCM under a nonce
//! that counts up. A tampered, replayed, dropped or reordered record fails to open and ends the
//! connection. Liveness lives here too: TCP keepalive and `TCP_USER_TIMEOUT` on the socket, a
//! read and write timeout of the idle time, and a heartbeat thread, so a dead link or peer ends
//! the session on both ends within the idle time. This module must not decide trust: it
//! reports the peer's static key and stops.

use super::Message;
use snow::StatelessTransportState;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A session with nothing received for this long (no frame, acknowledgement or heartbeat) is
/// dead: a half-open link after a power loss or a NAT that forgot the flow looks like this.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Each end sends a heartbeat when it has sent nothing for this long; far below any idle
/// timeout allowed ([`MIN_IDLE_TIMEOUT`] is three of them), so a live link never idles out.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(6);

/// Noise's own limit on one message.
const NOISE_MAX: usize = 65535;
const TAG_LEN: usize = 16;
const PLAIN_MAX: usize = NOISE_MAX - TAG_LEN;
/// The handshake patterns: enrolment proves the passphrase (PSK) and exchanges static keys;
/// every later session authenticates both static keys, which the caller checks against pins.
pub const ENROL_PATTERN: &str = "Noise_XXpsk3_25519_AESGCM_SHA256";
pub const SESSION_PATTERN: &str = "Noise_XX_25519_AESGCM_SHA256";
/// The first bytes a sender writes: magic, protocol version, mode.
pub const HELLO_MAGIC: [u8; 4] = *b"MTRP";
pub const MODE_ENROL: u8 = 1;
pub const MODE_SESSION: u8 = 2;

/// Bytes that crossed the socket in each direction (ciphertext and framing included).
#[derive(Debug, Default)]
pub struct WireCounter {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

/// The sending half of a channel.
pub struct Tx {
    stream: TcpStream,
    noise: Arc<StatelessTransportState>,
    nonce: u64,
    out: Vec<u8>,
    wire: Arc<WireCounter>,
    last_sent: Instant,
}

impl Tx {
    pub fn send(&mut self, m: &Message) -> io::Result<()> {
        self.send_plain(&m.encode())
    }

    /// Seals and writes bytes as they are (tests use this to play a misbehaving peer).
    pub fn send_plain(&mut self, plain: &[u8]) -> io::Result<()> {
        self.out.clear();
        for chunk in plain.chunks(PLAIN_MAX) {
            let at = self.out.len();
            self.out.resize(at + 2 + chunk.len() + TAG_LEN, 0);
            let n = self
                .noise
                .write_message(self.nonce, chunk, &mut self.out[at + 2..])
                .map_err(|e| io::Error::other(format!("encryption failed: {e}")))?;
            self.nonce += 1;
            self.out[at..at + 2].copy_from_slice(&(n as u16).to_be_bytes());
            self.out.truncate(at + 2 + n);
        }
        self.stream
            .write_all(&self.out)
            .map_err(|e| idle_error(e, "send"))?;
        self.last_sent = Instant::now();
        self.wire
            .sent
            .fetch_add(self.out.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Stops the reading side only (a blocked read returns end of stream); the writing side
    /// still works, to tell the peer why.
    pub fn shutdown_read(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Read);
    }

    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// A handle that can end the connection from another thread (a session taken over).
    pub fn stopper(&self) -> io::Result<TcpStream> {
        self.stream.try_clone()
    }

    /// Bounds the next writes (a last refusal to a peer that may be gone must not hold the
    /// session open for a whole idle time).
    pub fn set_write_timeout(&self, d: Duration) {
        let _ = self.stream.set_write_timeout(Some(d));
    }
}

/// The receiving half: a [`Read`] over the opened records, and [`Rx::recv`] for messages.
pub struct Rx {
    stream: io::BufReader<TcpStream>,
    noise: Arc<StatelessTransportState>,
    nonce: u64,
    sealed: Vec<u8>,
    plain: Vec<u8>,
    pos: usize,
    wire: Arc<WireCounter>,
    /// Messages received so far (to name the bad one in errors).
    pub count: u64,
    /// Heartbeats among them (not counted as messages of the session).
    pub heartbeats: u64,
    /// A message body buffer given back with [`Rx::recycle`], used for the next message.
    spare: Vec<u8>,
}

impl Rx {
    /// The next message; `Ok(None)` when the peer closed cleanly between messages.
    pub fn recv(&mut self) -> Result<Option<Message>, String> {
        let index = self.count;
        let spare = std::mem::take(&mut self.spare);
        let m =
            Message::read_from_into(self, spare).map_err(|e| format!("message #{index}: {e}"))?;
        self.count += 1;
        Ok(m)
    }

    /// Gives a message body back for the next message to reuse (no allocation per frame).
    pub fn recycle(&mut self, body: Vec<u8>) {
        if body.capacity() > self.spare.capacity() {
            self.spare = body;
        }
    }

    /// The next message that is not a heartbeat (heartbeats only keep the link alive).
    pub fn recv_live(&mut self) -> Result<Option<Message>, String> {
        loop {
            match self.recv()? {
                Some(Message::Heartbeat) => {
                    self.count -= 1;
                    self.heartbeats += 1;
                }
                m => return Ok(m),
            }
        }
    }

    fn fill(&mut self) -> io::Result<bool> {
        self.fill_inner().map_err(|e| idle_error(e, "receive"))
    }

    fn fill_inner(&mut self) -> io::Result<bool> {
        let mut len = [0u8; 2];
        match self.stream.read(&mut len[..1])? {
            0 => return Ok(false),
            _ => self.stream.read_exact(&mut len[1..])?,
        }
        let n = u16::from_be_bytes(len) as usize;
        if n < TAG_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("an encrypted record of {n} bytes is shorter than its tag"),
            ));
        }
        self.sealed.resize(n, 0);
        self.stream.read_exact(&mut self.sealed)?;
        self.wire
            .received
            .fetch_add(2 + n as u64, Ordering::Relaxed);
        self.plain.resize(n, 0);
        let got = self
            .noise
            .read_message(self.nonce, &self.sealed, &mut self.plain)
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "encrypted record #{} does not authenticate (tampered, replayed or reordered data)",
                        self.nonce
                    ),
                )
            })?;
        self.nonce += 1;
        self.plain.truncate(got);
        self.pos = 0;
        Ok(true)
    }
}

impl Read for Rx {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.plain.len() {
            if !self.fill()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.plain.len() - self.pos);
        buf[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A socket timeout (the idle time passed with nothing moving) or a connection cut inside a
/// record, as the error a user reads.
fn idle_error(e: io::Error, what: &str) -> io::Error {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection ended inside an encrypted record (the peer stopped or the link broke)",
        ),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("could not {what} anything for the idle timeout (no frame, acknowledgement or heartbeat): the link or the peer is dead"),
        ),
        _ => e,
    }
}

/// Sets an integer socket option; the error names it.
fn setsockopt(stream: &TcpStream, level: i32, name: i32, value: i32, what: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor, a pointer to an i32 that lives across the call and its size.
    let r = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}

/// Makes a dead connection fail within `idle` on this end: TCP keepalive (probes after a third
/// of it), `TCP_USER_TIMEOUT` (unacknowledged data for longer than `idle` ends the connection;
/// Linux 2.6.37 and later: refused by el6's 2.6.32, where the timeouts and heartbeats below are
/// enough on their own), and read and write timeouts of `idle`. Every option here exists on
/// 2.6.32 except `TCP_USER_TIMEOUT`.
pub fn set_liveness(stream: &TcpStream, idle: Duration) -> io::Result<()> {
    let secs = idle.as_secs().clamp(1, i32::MAX as u64 / 1000) as i32;
    setsockopt(
        stream,
        libc::SOL_SOCKET,
        libc::SO_KEEPALIVE,
        1,
        "SO_KEEPALIVE",
    )?;
    setsockopt(
        stream,
        libc::IPPROTO_TCP,
        libc::TCP_KEEPIDLE,
        (secs / 3).max(1),
        "TCP_KEEPIDLE",
    )?;
    setsockopt(
        stream,
        libc::IPPROTO_TCP,
        libc::TCP_KEEPINTVL,
        (secs / 6).max(1),
        "TCP_KEEPINTVL",
    )?;
    setsockopt(
        stream,
        libc::IPPROTO_TCP,
        libc::TCP_KEEPCNT,
        3,
        "TCP_KEEPCNT",
    )?;
    // Refused on 2.6.32 (ENOPROTOOPT): tolerated, as the module comment says.
    let _ = setsockopt(
        stream,
        libc::IPPROTO_TCP,
        libc::TCP_USER_TIMEOUT,
        secs * 1000,
        "TCP_USER_TIMEOUT",
    );
    stream.set_read_timeout(Some(idle))?;
    stream.set_write_timeout(Some(idle))?;
    Ok(())
}

/// Sends a heartbeat on a shared sending half whenever nothing else went out for
/// [`HEARTBEAT_EVERY`]; stops when dropped or when the connection fails.
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    pub fn start(tx: Arc<Mutex<Tx>>) -> io::Result<Heartbeat> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    std::thread::park_timeout(HEARTBEAT_EVERY / 4);
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    let mut t = tx.lock().unwrap_or_else(|e| e.into_inner());
                    if t.last_sent.elapsed() >= HEARTBEAT_EVERY
                        && t.send(&Message::Heartbeat).is_err()
                    {
                        break;
                    }
                }
            })?;
        Ok(Heartbeat {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// An established channel and who is on the other end.
pub struct Channel {
    pub tx: Tx,
    pub rx: Rx,
    pub remote_key: [u8; 32],
    pub wire: Arc<WireCounter>,
}

impl Channel {
    /// A channel over a connection whose handshake `noise` finished, with the liveness of
    /// [`DEFAULT_IDLE_TIMEOUT`] ([`Channel::set_idle_timeout`] changes it).
    pub fn new(stream: TcpStream, noise: StatelessTransportState) -> io::Result<Channel> {
        let remote_key: [u8; 32] = noise
            .get_remote_static()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| io::Error::other("the handshake gave no peer key"))?;
        let noise = Arc::new(noise);
        let wire = Arc::new(WireCounter::default());
        let _ = stream.set_nodelay(true);
        set_liveness(&stream, DEFAULT_IDLE_TIMEOUT)?;
        Ok(Channel {
            tx: Tx {
                stream: stream.try_clone()?,
                noise: noise.clone(),
                nonce: 0,
                out: Vec::new(),
                wire: wire.clone(),
                last_sent: Instant::now(),
            },
            rx: Rx {
                stream: io::BufReader::with_capacity(256 << 10, stream),
                noise,
                nonce: 0,
                sealed: Vec::new(),
                plain: Vec::new(),
                pos: 0,
                wire: wire.clone(),
                count: 0,
                heartbeats: 0,
                spare: Vec::new(),
            },
            remote_key,
            wire,
        })
    }

    /// Liveness with another idle time (both directions of this end).
    pub fn set_idle_timeout(&self, idle: Duration) -> io::Result<()> {
        set_liveness(&self.tx.stream, idle)
    }
}

/// Writes one handshake message (big-endian u16 length, then the bytes).
pub fn write_record(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(2 + bytes.len());
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
    stream.write_all(&out)
}

/// Reads one handshake message.
pub fn read_record(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

/// The result byte the master target sends after the last handshake message, in the clear:
/// 0 = accepted (the encrypted channel starts), 1 = refused (a length-prefixed reason follows,
/// advisory only: it is not authenticated).
pub const STATUS_OK: u8 = 0;
pub const STATUS_REFUSED: u8 = 1;

pub fn write_status(stream: &mut TcpStream, refusal: Option<&str>) -> io::Result<()> {
    match refusal {
        None => stream.write_all(&[STATUS_OK]),
        Some(why) => {
            let why = &why.as_bytes()[..why.len().min(1024)];
            stream.write_all(&[STATUS_REFUSED])?;
            write_record(stream, why)
        }
    }
}

/// `Ok(None)` = accepted, `Ok(Some(reason))` = refused.
pub fn read_status(stream: &mut TcpStream) -> io::Result<Option<String>> {
    let mut b = [0u8; 1];
    stream.read_exact(&mut b)?;
    match b[0] {
        STATUS_OK => Ok(None),
        STATUS_REFUSED => {
            let why = read_record(stream)?;
            Ok(Some(String::from_utf8_lossy(&why).into_owned()))
        }
        s => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown handshake status {s}"),
        )),
    }
}
