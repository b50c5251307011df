//! Network replication between a process server (`mt-agent send`) and the master target
//! (`mt-agent serve`). Protocol and security design: `agent/docs/protocol.md`.
//!
//! Layers, bottom up: [`transport`] (TCP, the Noise handshake, an encrypted and authenticated
//! byte channel), [`auth`] (keys, passphrase enrolment, pinning; [`senders`]: which key may
//! write which group, [`enrol_window`]: when enrolment is open; [`enrol_gate`]: whether an
//! enrolment attempt is evaluated, and the kinds of refusal), the messages in this module
//! (length-limited, versioned; replication frames from [`crate::replication::frame`] travel inside them
//! unchanged), and the two ends, [`receiver`] and [`sender`], with [`resync`] for block hashing.
//! Nothing here writes to a target except through the retention journal's public API.

pub mod auth;
pub mod enrol_gate;
pub mod enrol_window;
pub mod receiver;
pub mod resume;
pub mod resync;
pub mod sender;
pub mod senders;
pub mod sessions;
pub mod transport;

use crate::replication::frame::{FRAME_HASH_LEN, FRAME_HEADER_LEN, MAX_FRAME_PAYLOAD};
use std::io::Read;

/// The version of the message layer (the frame format has its own). 2: heartbeats, the resync
/// cursor in `position` and `hash-request`, `stalled`. 3: enrolment asks for groups
/// (`enrol-request`, the groups granted and withheld in `enrolled`) and the master target
/// answers an enrolment's hello with a status (the enrolment window); a resync ends with a tag
/// of the kind that closes it (`TagKind::ResyncEnd`), the only tag the master target takes
/// during one.
pub const PROTOCOL_VERSION: u16 = 3;
/// Groups one enrolment may ask for (far more than a process server replicates).
pub const MAX_ENROL_GROUPS: usize = 256;
/// A message body is never larger than the largest frame.
pub const MAX_MESSAGE_BODY: u32 =
    FRAME_HEADER_LEN as u32 + MAX_FRAME_PAYLOAD + FRAME_HASH_LEN as u32;
/// Hashes per [`Message::Hashes`]: 512 x 64 KiB = 32 MiB of disk per message.
pub const HASHES_PER_MESSAGE: usize = 512;
/// Delta resync compares blocks of this size.
pub const RESYNC_BLOCK: u32 = 64 << 10;

const MSG_FRAME: u8 = 1;
const MSG_POSITION: u8 = 2;
const MSG_CREDIT: u8 = 3;
const MSG_ACK: u8 = 4;
const MSG_HASH_REQUEST: u8 = 5;
const MSG_HASHES: u8 = 6;
const MSG_HASHES_DONE: u8 = 7;
const MSG_FLUSH: u8 = 8;
const MSG_REFUSED: u8 = 9;
const MSG_ENROLLED: u8 = 10;
const MSG_HEARTBEAT: u8 = 11;
const MSG_STALLED: u8 = 12;
const MSG_ENROL_REQUEST: u8 = 13;

/// One message of the replication session (inside the encrypted channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A replication frame, exactly as [`crate::replication::frame::encode`] makes it (checked by the
    /// receiver with the frame decoder before anything reaches the journal).
    Frame(Vec<u8>),
    /// Receiver -> sender after the start frame: everything up to this LSN is durable, and the
    /// LSN the group's unfinished resync began at (0: none), so a sender can tell whether a
    /// resync cursor it kept belongs to this resync.
    Position { acked: u64, resync_since: u64 },
    /// Receiver -> sender: the sender may send this many more bytes of frames.
    Credit { bytes: u64 },
    /// Receiver -> sender: durable (acknowledged) through this LSN.
    Ack { lsn: u64 },
    /// Sender -> receiver: hash every disk in blocks of this size and stream the hashes, from
    /// block `from_block` of disk `from_disk` on (a resumed resync skips what is confirmed).
    HashRequest {
        block_size: u32,
        from_disk: u32,
        from_block: u64,
    },
    /// Receiver -> sender: BLAKE3 of consecutive blocks of one disk.
    Hashes {
        disk: u32,
        first_block: u64,
        hashes: Vec<[u8; 32]>,
    },
    /// Receiver -> sender: every block of this disk has been hashed.
    HashesDone { disk: u32 },
    /// Sender -> receiver: make everything received durable and acknowledge it.
    Flush,
    /// Either side, before closing: why. `retry` says whether the same request may succeed later.
    Refused { retry: bool, why: String },
    /// Sender -> receiver after the enrolment handshake: the groups it asks to write.
    EnrolRequest { groups: Vec<String> },
    /// Receiver -> sender at the end of an enrolment: the asked groups now allowed for the
    /// key, and those another key is allowed for (the operator decides; nothing was recorded).
    Enrolled {
        granted: Vec<String>,
        withheld: Vec<String>,
    },
    /// Either side, when it has sent nothing else for a while: the session is alive.
    Heartbeat,
    /// Receiver -> sender: credit is withheld, and why (the session stays; credit resumes).
    Stalled { why: String },
}

/// Starts a frame message in `out` (cleared): its type and length, to be followed by the frame
/// (`frame::encode_into`); [`finish_frame_message`] fills in the length.
pub fn start_frame_message(out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&message_head(MSG_FRAME, 0));
}

/// Sets the body length of a message begun by [`start_frame_message`].
pub fn finish_frame_message(out: &mut [u8]) {
    let len = out.len() - MESSAGE_HEAD_LEN;
    out[..MESSAGE_HEAD_LEN].copy_from_slice(&message_head(MSG_FRAME, len));
}

/// Every message starts with its type and its body length (u32 LE).
const MESSAGE_HEAD_LEN: usize = 5;

fn message_head(kind: u8, body_len: usize) -> [u8; MESSAGE_HEAD_LEN] {
    let mut h = [kind, 0, 0, 0, 0];
    h[1..].copy_from_slice(&(body_len as u32).to_le_bytes());
    h
}

impl Message {
    pub fn name(&self) -> &'static str {
        match self {
            Message::Frame(_) => "frame",
            Message::Position { .. } => "position",
            Message::Credit { .. } => "credit",
            Message::Ack { .. } => "ack",
            Message::HashRequest { .. } => "hash-request",
            Message::Hashes { .. } => "hashes",
            Message::HashesDone { .. } => "hashes-done",
            Message::Flush => "flush",
            Message::Refused { .. } => "refused",
            Message::EnrolRequest { .. } => "enrol-request",
            Message::Enrolled { .. } => "enrolled",
            Message::Heartbeat => "heartbeat",
            Message::Stalled { .. } => "stalled",
        }
    }

    /// Type byte, little-endian body length, body.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let kind = match self {
            Message::Frame(f) => {
                body.extend_from_slice(f);
                MSG_FRAME
            }
            Message::Position {
                acked,
                resync_since,
            } => {
                body.extend_from_slice(&acked.to_le_bytes());
                body.extend_from_slice(&resync_since.to_le_bytes());
                MSG_POSITION
            }
            Message::Credit { bytes } => {
                body.extend_from_slice(&bytes.to_le_bytes());
                MSG_CREDIT
            }
            Message::Ack { lsn } => {
                body.extend_from_slice(&lsn.to_le_bytes());
                MSG_ACK
            }
            Message::HashRequest {
                block_size,
                from_disk,
                from_block,
            } => {
                body.extend_from_slice(&block_size.to_le_bytes());
                body.extend_from_slice(&from_disk.to_le_bytes());
                body.extend_from_slice(&from_block.to_le_bytes());
                MSG_HASH_REQUEST
            }
            Message::Hashes {
                disk,
                first_block,
                hashes,
            } => {
                body.extend_from_slice(&disk.to_le_bytes());
                body.extend_from_slice(&first_block.to_le_bytes());
                for h in hashes {
                    body.extend_from_slice(h);
                }
                MSG_HASHES
            }
            Message::HashesDone { disk } => {
                body.extend_from_slice(&disk.to_le_bytes());
                MSG_HASHES_DONE
            }
            Message::Flush => MSG_FLUSH,
            Message::Refused { retry, why } => {
                body.push(u8::from(*retry));
                body.extend_from_slice(why.as_bytes());
                MSG_REFUSED
            }
            Message::EnrolRequest { groups } => {
                encode_names(&mut body, groups);
                MSG_ENROL_REQUEST
            }
            Message::Enrolled { granted, withheld } => {
                encode_names(&mut body, granted);
                encode_names(&mut body, withheld);
                MSG_ENROLLED
            }
            Message::Heartbeat => MSG_HEARTBEAT,
            Message::Stalled { why } => {
                body.extend_from_slice(&why.as_bytes()[..why.len().min(4096)]);
                MSG_STALLED
            }
        };
        let mut out = Vec::with_capacity(MESSAGE_HEAD_LEN + body.len());
        out.extend_from_slice(&message_head(kind, body.len()));
        out.extend_from_slice(&body);
        out
    }

    /// Reads one message. Errors say what was wrong; the caller adds which message it was.
    /// Never allocates more than [`MAX_MESSAGE_BODY`] and never panics.
    pub fn read_from(r: &mut impl Read) -> Result<Option<Message>, String> {
        Message::read_from_into(r, Vec::new())
    }

    /// Like [`Message::read_from`], reading the body into `body` (a buffer to reuse).
    pub fn read_from_into(r: &mut impl Read, mut body: Vec<u8>) -> Result<Option<Message>, String> {
        let mut head = [0u8; 5];
        match read_full(r, &mut head)? {
            0 => return Ok(None),
            5 => {}
            n => {
                return Err(format!(
                    "the connection ends {n} bytes into a message header"
                ))
            }
        }
        let kind = head[0];
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        if len > MAX_MESSAGE_BODY {
            return Err(format!(
                "a message of {len} bytes exceeds the limit of {MAX_MESSAGE_BODY}"
            ));
        }
        body.clear();
        body.resize(len as usize, 0);
        let got = read_full(r, &mut body)?;
        if got < body.len() {
            return Err(format!(
                "the connection ends {got} bytes into a {len}-byte message body"
            ));
        }
        Message::decode(kind, body).map(Some)
    }

    fn decode(kind: u8, body: Vec<u8>) -> Result<Message, String> {
        let fixed = |n: usize| -> Result<&[u8], String> {
            if body.len() == n {
                Ok(&body[..])
            } else {
                Err(format!(
                    "message type {kind} has a {}-byte body, expected {n}",
                    body.len()
                ))
            }
        };
        let u64_of = |b: &[u8]| u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]));
        let u32_of = |b: &[u8]| u32::from_le_bytes(b[..4].try_into().unwrap_or([0; 4]));
        Ok(match kind {
            MSG_FRAME => Message::Frame(body),
            MSG_POSITION => {
                let b = fixed(16)?;
                Message::Position {
                    acked: u64_of(b),
                    resync_since: u64_of(&b[8..]),
                }
            }
            MSG_CREDIT => Message::Credit {
                bytes: u64_of(fixed(8)?),
            },
            MSG_ACK => Message::Ack {
                lsn: u64_of(fixed(8)?),
            },
            MSG_HASH_REQUEST => {
                let b = fixed(16)?;
                let (block_size, from_disk, from_block) =
                    (u32_of(b), u32_of(&b[4..]), u64_of(&b[8..]));
                if block_size == 0
                    || block_size > MAX_FRAME_PAYLOAD
                    || !u64::from(block_size).is_multiple_of(crate::replication::frame::BLOCK_SIZE)
                {
                    return Err(format!(
                        "hash block size {block_size} is not a multiple of 4096 up to {MAX_FRAME_PAYLOAD}"
                    ));
                }
                Message::HashRequest {
                    block_size,
                    from_disk,
                    from_block,
                }
            }
            MSG_HASHES => {
                if body.len() < 12 || !(body.len() - 12).is_multiple_of(32) {
                    return Err(format!(
                        "a hashes message of {} bytes is not 12 + 32 per hash",
                        body.len()
                    ));
                }
                let hashes: Vec<[u8; 32]> = body[12..]
                    .chunks_exact(32)
                    .map(|c| c.try_into().unwrap_or([0; 32]))
                    .collect();
                if hashes.len() > HASHES_PER_MESSAGE {
                    return Err(format!("{} hashes in one message", hashes.len()));
                }
                Message::Hashes {
                    disk: u32_of(&body[..4]),
                    first_block: u64_of(&body[4..12]),
                    hashes,
                }
            }
            MSG_HASHES_DONE => Message::HashesDone {
                disk: u32_of(fixed(4)?),
            },
            MSG_FLUSH => {
                fixed(0)?;
                Message::Flush
            }
            MSG_REFUSED => {
                if body.is_empty() || body.len() > 4096 {
                    return Err("a refusal without a reason or with more than 4 KiB".into());
                }
                Message::Refused {
                    retry: body[0] != 0,
                    why: String::from_utf8_lossy(&body[1..]).into_owned(),
                }
            }
            MSG_ENROL_REQUEST => {
                let mut at = &body[..];
                let groups = decode_names(&mut at)?;
                no_rest(at)?;
                Message::EnrolRequest { groups }
            }
            MSG_ENROLLED => {
                let mut at = &body[..];
                let granted = decode_names(&mut at)?;
                let withheld = decode_names(&mut at)?;
                no_rest(at)?;
                Message::Enrolled { granted, withheld }
            }
            MSG_HEARTBEAT => {
                fixed(0)?;
                Message::Heartbeat
            }
            MSG_STALLED => {
                if body.len() > 4096 {
                    return Err("a stalled message with more than 4 KiB of reason".into());
                }
                Message::Stalled {
                    why: String::from_utf8_lossy(&body).into_owned(),
                }
            }
            k => return Err(format!("unknown message type {k}")),
        })
    }
}

/// A list of names: a u16 LE count, then each name as a u8 length and its UTF-8 bytes.
fn encode_names(out: &mut Vec<u8>, names: &[String]) {
    let names = &names[..names.len().min(MAX_ENROL_GROUPS)];
    out.extend_from_slice(&(names.len() as u16).to_le_bytes());
    for n in names {
        // Group names are at most 64 ASCII characters: nothing is ever cut here.
        let b = &n.as_bytes()[..n.len().min(255)];
        out.push(b.len() as u8);
        out.extend_from_slice(b);
    }
}

fn decode_names(at: &mut &[u8]) -> Result<Vec<String>, String> {
    let short = || "a list of names ends early".to_string();
    let (count, rest) = at.split_first_chunk::<2>().ok_or_else(short)?;
    let count = u16::from_le_bytes(*count) as usize;
    if count > MAX_ENROL_GROUPS {
        return Err(format!(
            "{count} names in a list (at most {MAX_ENROL_GROUPS})"
        ));
    }
    *at = rest;
    let mut names = Vec::with_capacity(count);
    for _ in 0..count {
        let (&len, rest) = at.split_first().ok_or_else(short)?;
        let name = rest.get(..len as usize).ok_or_else(short)?;
        names
            .push(String::from_utf8(name.to_vec()).map_err(|_| "a name is not UTF-8".to_string())?);
        *at = &rest[len as usize..];
    }
    Ok(names)
}

fn no_rest(at: &[u8]) -> Result<(), String> {
    if at.is_empty() {
        Ok(())
    } else {
        Err(format!("{} bytes after the last list of names", at.len()))
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, String> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(got)
}

/// Decodes the single replication frame a [`Message::Frame`] carries (no more, no less).
pub fn decode_frame(bytes: &[u8], index: u64) -> Result<crate::replication::frame::Frame, String> {
    crate::replication::frame::decode_slice(bytes).map_err(|what| format!("frame #{index}: {what}"))
}

/// The property the fuzz target (`agent/fuzz`) and its stable-toolchain stand-in
/// (`tests/replication_fuzz.rs`) check on arbitrary bytes: the frame and message decoders
/// return or refuse without panicking, never read past a limit, and whatever they accept is
/// exactly what the encoder makes of it (nothing unchecked slips through). Panics on a violation.
pub fn check_decoders(data: &[u8]) {
    let mut r = crate::replication::frame::FrameReader::new(data);
    let mut at = 0usize;
    while let Ok(Some(f)) = r.next_frame() {
        let end = r.position().1 as usize;
        assert_eq!(
            crate::replication::frame::encode(&f),
            data[at..end],
            "a decoded frame does not re-encode to its bytes"
        );
        assert_eq!(
            crate::replication::frame::decode_slice(&data[at..end]).as_ref(),
            Ok(&f),
            "the in-place decoder disagrees with the stream decoder"
        );
        at = end;
    }
    // The in-place decoder on the raw bytes: accepts only what re-encodes to exactly them.
    if let Ok(f) = crate::replication::frame::decode_slice(data) {
        assert_eq!(crate::replication::frame::encode(&f), data);
    }
    let mut m = data;
    while let Ok(Some(msg)) = Message::read_from(&mut m) {
        if let Message::Frame(bytes) = &msg {
            if let Ok(f) = decode_frame(bytes, 0) {
                assert_eq!(&crate::replication::frame::encode(&f), bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_oversized_ones_are_refused_before_allocating() {
        let all = vec![
            Message::Frame(vec![1, 2, 3]),
            Message::Position {
                acked: 7,
                resync_since: 3,
            },
            Message::Credit { bytes: 1 << 20 },
            Message::Ack { lsn: 9 },
            Message::HashRequest {
                block_size: 65536,
                from_disk: 1,
                from_block: 9,
            },
            Message::Hashes {
                disk: 1,
                first_block: 5,
                hashes: vec![[3; 32]; 4],
            },
            Message::HashesDone { disk: 1 },
            Message::Flush,
            Message::Refused {
                retry: true,
                why: "busy".into(),
            },
            Message::EnrolRequest {
                groups: vec!["a".into(), "b-2".into()],
            },
            Message::Enrolled {
                granted: vec!["a".into()],
                withheld: vec![],
            },
            Message::Heartbeat,
            Message::Stalled {
                why: "retention volume full".into(),
            },
        ];
        let bytes: Vec<u8> = all.iter().flat_map(|m| m.encode()).collect();
        let mut r = &bytes[..];
        for m in &all {
            assert_eq!(Message::read_from(&mut r).unwrap().as_ref(), Some(m));
        }
        assert_eq!(Message::read_from(&mut r).unwrap(), None);
        let mut huge = vec![MSG_FRAME];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let e = Message::read_from(&mut &huge[..]).unwrap_err();
        assert!(e.contains("exceeds the limit"), "{e}");
    }
}
