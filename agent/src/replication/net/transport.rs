//! The encrypted, mutually authenticated channel both ends talk through: a Noise handshake over
//! TCP (driven by [`super::auth`], which decides whose keys to trust), then a byte stream cut
//! into Noise transport messages of at most 64 KiB, each sealed with AES-256-GCM under a nonce
//! that counts up. A tampered, replayed, dropped or reordered record fails to open and ends the
//! connection. This module must not decide trust: it reports the peer's static key and stops.

use super::Message;
use snow::StatelessTransportState;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
        self.stream.write_all(&self.out)?;
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

    fn fill(&mut self) -> io::Result<bool> {
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

/// An established channel and who is on the other end.
pub struct Channel {
    pub tx: Tx,
    pub rx: Rx,
    pub remote_key: [u8; 32],
    pub wire: Arc<WireCounter>,
}

impl Channel {
    pub fn new(stream: TcpStream, noise: StatelessTransportState) -> io::Result<Channel> {
        let remote_key: [u8; 32] = noise
            .get_remote_static()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| io::Error::other("the handshake gave no peer key"))?;
        let noise = Arc::new(noise);
        let wire = Arc::new(WireCounter::default());
        let _ = stream.set_nodelay(true);
        Ok(Channel {
            tx: Tx {
                stream: stream.try_clone()?,
                noise: noise.clone(),
                nonce: 0,
                out: Vec::new(),
                wire: wire.clone(),
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
                spare: Vec::new(),
            },
            remote_key,
            wire,
        })
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
