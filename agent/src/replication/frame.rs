//! The replication frame format: what the network carries and what `mt-agent apply --from FILE`
//! reads (a recorded change stream is just the frames one after another). Encoder and decoder.
//!
//! Every frame is versioned, length-limited and checked twice: a CRC32C over the fixed header (so
//! a damaged length is refused before anything is allocated) and a BLAKE3 hash over header and
//! payload (so a block is verified end to end before it reaches the journal). The decoder never
//! panics on any input and never returns part of a frame. It must not touch the journal or disks.
//! Layout: `agent/docs/journal-format.md`, section "Frames".

use crate::replication::journal::clock::Timestamp;
use crate::replication::journal::Lsn;
use std::io::{self, Read, Write};

pub const FRAME_MAGIC: [u8; 4] = *b"MTFR";
pub const FRAME_VERSION: u16 = 1;
pub const FRAME_HEADER_LEN: usize = 48;
pub const FRAME_HASH_LEN: usize = 32;
/// The largest payload a frame may carry (a 4 MiB write, or a Start frame).
pub const MAX_FRAME_PAYLOAD: u32 = 4 << 20;
/// Write frames carry whole 4 KiB blocks: offset and length are multiples of this.
pub const BLOCK_SIZE: u64 = 4096;
/// Tag names are at most this long (as InMage's agent).
pub const MAX_TAG_NAME: usize = 256;

const KIND_START: u8 = 1;
const KIND_WRITE: u8 = 2;
const KIND_TAG: u8 = 3;
/// Tag kinds (header bytes 12..16 of a Tag frame). 3 came with protocol version 3; a recorded
/// stream made before it holds only 1 and 2, so every such file still reads as it did.
const TAG_CRASH: u32 = 1;
const TAG_APP: u32 = 2;
const TAG_RESYNC_END: u32 = 3;
/// Write-frame flag: the write is part of a resync (full copy or delta), so the target is not a
/// consistent image of the source until the resync's closing tag (see the journal's resync mode).
const FLAG_RESYNC: u8 = 1;

/// What a tag from the source marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TagKind {
    /// Crash-consistent: the source inserted a barrier.
    Crash,
    /// Application-consistent: the source's applications were quiesced (VSS-style bookmark).
    App,
    /// The tag that closes a resync (full copy or delta): the targets equal the sources there,
    /// a crash-consistent point. While a resync is open the journal takes no other tag, and it
    /// refuses this one when none is open; only a sender's `--full` or `--delta` sends it.
    ResyncEnd,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream: names the group and its disks (name, capacity in bytes), in disk order.
    Start {
        group: String,
        disks: Vec<(String, u64)>,
    },
    /// New content for `data.len()` bytes of disk number `disk` at byte `offset`.
    Write {
        lsn: Lsn,
        source_time: Timestamp,
        disk: u32,
        offset: u64,
        data: Vec<u8>,
        /// Part of a resync: no state between here and the next tag needs to be recoverable.
        resync: bool,
    },
    /// A consistency point the source marked.
    Tag {
        lsn: Lsn,
        source_time: Timestamp,
        kind: TagKind,
        name: String,
    },
}

impl Frame {
    pub fn lsn(&self) -> Option<Lsn> {
        match self {
            Frame::Start { .. } => None,
            Frame::Write { lsn, .. } | Frame::Tag { lsn, .. } => Some(*lsn),
        }
    }

    /// Whether this is the tag that closes a resync.
    pub fn closes_resync(&self) -> bool {
        matches!(
            self,
            Frame::Tag {
                kind: TagKind::ResyncEnd,
                ..
            }
        )
    }
}

/// A frame the decoder refused: which frame, where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame #{index} (byte {offset} of the stream): {what}")]
pub struct FrameError {
    pub index: u64,
    pub offset: u64,
    pub what: String,
}

/// Encodes one frame.
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(frame, &mut out);
    out
}

/// Appends one encoded frame to `out` (no allocation when `out` has room: the sender reuses
/// one buffer for every frame).
pub fn encode_into(frame: &Frame, out: &mut Vec<u8>) {
    let at = out.len();
    out.resize(at + FRAME_HEADER_LEN, 0);
    let mut flags = 0u8;
    let (kind, disk, lsn, time, offset) = match frame {
        Frame::Start { group, disks } => {
            put_str(out, group);
            out.extend_from_slice(&(disks.len() as u32).to_le_bytes());
            for (name, cap) in disks {
                put_str(out, name);
                out.extend_from_slice(&cap.to_le_bytes());
            }
            (KIND_START, 0, 0, 0, 0)
        }
        Frame::Write {
            lsn,
            source_time,
            disk,
            offset,
            data,
            resync,
        } => {
            out.extend_from_slice(data);
            if *resync {
                flags |= FLAG_RESYNC;
            }
            (KIND_WRITE, *disk, lsn.0, source_time.0, *offset)
        }
        Frame::Tag {
            lsn,
            source_time,
            kind,
            name,
        } => {
            put_str(out, name);
            let k = match kind {
                TagKind::Crash => TAG_CRASH,
                TagKind::App => TAG_APP,
                TagKind::ResyncEnd => TAG_RESYNC_END,
            };
            (KIND_TAG, k, lsn.0, source_time.0, 0)
        }
    };
    let payload_len = out.len() - at - FRAME_HEADER_LEN;
    let h = &mut out[at..at + FRAME_HEADER_LEN];
    h[0..4].copy_from_slice(&FRAME_MAGIC);
    h[4..6].copy_from_slice(&FRAME_VERSION.to_le_bytes());
    h[6] = kind;
    h[7] = flags;
    h[8..12].copy_from_slice(&(payload_len as u32).to_le_bytes());
    h[12..16].copy_from_slice(&disk.to_le_bytes());
    h[16..24].copy_from_slice(&lsn.to_le_bytes());
    h[24..32].copy_from_slice(&time.to_le_bytes());
    h[32..40].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32c::crc32c(&h[..44]);
    h[44..48].copy_from_slice(&crc.to_le_bytes());
    let mut hasher = blake3::Hasher::new();
    hasher.update(&out[at..at + 44]);
    hasher.update(&out[at + FRAME_HEADER_LEN..]);
    out.extend_from_slice(hasher.finalize().as_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Writes frames to a file or socket.
pub struct FrameWriter<W: Write> {
    out: W,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(out: W) -> FrameWriter<W> {
        FrameWriter { out }
    }
    pub fn write(&mut self, frame: &Frame) -> io::Result<()> {
        self.out.write_all(&encode(frame))
    }
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Reads frames, checking each completely before returning it.
pub struct FrameReader<R: Read> {
    input: R,
    index: u64,
    offset: u64,
}

impl<R: Read> FrameReader<R> {
    pub fn new(input: R) -> FrameReader<R> {
        FrameReader {
            input,
            index: 0,
            offset: 0,
        }
    }

    /// The next frame, `Ok(None)` at a clean end of stream.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let (index, offset) = (self.index, self.offset);
        let err = |what: String| FrameError {
            index,
            offset,
            what,
        };
        let mut h = [0u8; FRAME_HEADER_LEN];
        let got =
            read_full(&mut self.input, &mut h).map_err(|e| err(format!("read error: {e}")))?;
        if got == 0 {
            return Ok(None);
        }
        if got < FRAME_HEADER_LEN {
            return Err(err(format!(
                "truncated: the stream ends {got} bytes into the {FRAME_HEADER_LEN}-byte header"
            )));
        }
        let len = check_header(&h).map_err(&err)?;
        let mut rest = vec![0u8; len as usize + FRAME_HASH_LEN];
        let got =
            read_full(&mut self.input, &mut rest).map_err(|e| err(format!("read error: {e}")))?;
        if got < rest.len() {
            return Err(err(format!(
                "truncated: the stream ends {got} bytes into a {}-byte body",
                rest.len()
            )));
        }
        let frame = check_body(&h, &rest).map_err(&err)?;
        self.index += 1;
        self.offset += (FRAME_HEADER_LEN + rest.len()) as u64;
        Ok(Some(frame))
    }

    /// Index and byte offset the next frame will have (for error messages).
    pub fn position(&self) -> (u64, u64) {
        (self.index, self.offset)
    }
}

/// Checks exactly one frame held in `bytes` (a network message) without copying it first;
/// the error says why, without a frame number.
pub fn decode_slice(bytes: &[u8]) -> Result<Frame, String> {
    let h: &[u8; FRAME_HEADER_LEN] = bytes
        .get(..FRAME_HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| {
            format!(
                "truncated: {} bytes, less than the {FRAME_HEADER_LEN}-byte header",
                bytes.len()
            )
        })?;
    let len = check_header(h)? as usize;
    let rest = &bytes[FRAME_HEADER_LEN..];
    if rest.len() < len + FRAME_HASH_LEN {
        return Err(format!(
            "truncated: {} bytes of a {}-byte body",
            rest.len(),
            len + FRAME_HASH_LEN
        ));
    }
    if rest.len() > len + FRAME_HASH_LEN {
        return Err("trailing bytes after the frame".into());
    }
    check_body(h, rest)
}

/// Magic, header CRC, version and payload limit; returns the payload length.
fn check_header(h: &[u8; FRAME_HEADER_LEN]) -> Result<u32, String> {
    if h[0..4] != FRAME_MAGIC {
        return Err("not a frame (bad magic)".into());
    }
    if crc32c::crc32c(&h[..44]) != u32::from_le_bytes(h[44..48].try_into().unwrap()) {
        return Err("header checksum mismatch (damaged header)".into());
    }
    let version = u16::from_le_bytes([h[4], h[5]]);
    if version != FRAME_VERSION {
        return Err(format!(
            "frame version {version}; this agent speaks version {FRAME_VERSION}"
        ));
    }
    let len = u32::from_le_bytes(h[8..12].try_into().unwrap());
    if len > MAX_FRAME_PAYLOAD {
        return Err(format!(
            "payload of {len} bytes exceeds the limit of {MAX_FRAME_PAYLOAD}"
        ));
    }
    Ok(len)
}

/// The BLAKE3 hash over header and payload, then the fields; `rest` is the payload and hash
/// (lengths already checked against the header).
fn check_body(h: &[u8; FRAME_HEADER_LEN], rest: &[u8]) -> Result<Frame, String> {
    let len = rest.len() - FRAME_HASH_LEN;
    let (payload, hash) = rest.split_at(len);
    let mut hasher = blake3::Hasher::new();
    hasher.update(&h[..44]);
    hasher.update(payload);
    if hasher.finalize().as_bytes() != hash {
        return Err("BLAKE3 checksum mismatch (damaged or tampered payload)".into());
    }
    let disk = u32::from_le_bytes(h[12..16].try_into().unwrap());
    let lsn = Lsn(u64::from_le_bytes(h[16..24].try_into().unwrap()));
    let source_time = Timestamp(i64::from_le_bytes(h[24..32].try_into().unwrap()));
    let off = u64::from_le_bytes(h[32..40].try_into().unwrap());
    let flags = h[7];
    let allowed = if h[6] == KIND_WRITE { FLAG_RESYNC } else { 0 };
    if flags & !allowed != 0 {
        return Err(format!(
            "unknown flags {flags:#04x} for frame kind {}",
            h[6]
        ));
    }
    Ok(match h[6] {
        KIND_START => {
            let mut p = Cursor { b: payload, pos: 0 };
            let group = p.str()?;
            let n = p.u32()?;
            if n == 0 || n > 256 {
                return Err(format!("a group of {n} disks (1 to 256 allowed)"));
            }
            let mut disks = Vec::new();
            for _ in 0..n {
                let name = p.str()?;
                let cap = p.u64()?;
                disks.push((name, cap));
            }
            if p.pos != payload.len() {
                return Err("trailing bytes in the start frame".into());
            }
            Frame::Start { group, disks }
        }
        KIND_WRITE => {
            if len == 0
                || !(len as u64).is_multiple_of(BLOCK_SIZE)
                || !off.is_multiple_of(BLOCK_SIZE)
            {
                return Err(format!(
                    "write of {len} bytes at offset {off} is not whole {BLOCK_SIZE}-byte blocks"
                ));
            }
            Frame::Write {
                lsn,
                source_time,
                disk,
                offset: off,
                data: payload.to_vec(),
                resync: flags & FLAG_RESYNC != 0,
            }
        }
        KIND_TAG => {
            let kind = match disk {
                TAG_CRASH => TagKind::Crash,
                TAG_APP => TagKind::App,
                TAG_RESYNC_END => TagKind::ResyncEnd,
                k => return Err(format!("unknown tag kind {k}")),
            };
            let mut p = Cursor { b: payload, pos: 0 };
            let name = p.str()?;
            if name.len() > MAX_TAG_NAME || p.pos != payload.len() {
                return Err(format!("tag name longer than {MAX_TAG_NAME} bytes"));
            }
            Frame::Tag {
                lsn,
                source_time,
                kind,
                name,
            }
        }
        k => return Err(format!("unknown frame kind {k}")),
    })
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let s = self
            .b
            .get(self.pos..self.pos.saturating_add(n))
            .ok_or_else(|| "payload too short for its fields".to_owned())?;
        self.pos += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn str(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        if n > 4096 {
            return Err(format!("a name of {n} bytes"));
        }
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a name that is not UTF-8".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Frame> {
        vec![
            Frame::Start {
                group: "g".into(),
                disks: vec![("d0".into(), 1 << 20)],
            },
            Frame::Write {
                lsn: Lsn(1),
                source_time: Timestamp(5),
                disk: 0,
                offset: 4096,
                data: vec![7u8; 8192],
                resync: false,
            },
            Frame::Tag {
                lsn: Lsn(2),
                source_time: Timestamp(6),
                kind: TagKind::App,
                name: "vss".into(),
            },
            Frame::Tag {
                lsn: Lsn(3),
                source_time: Timestamp(7),
                kind: TagKind::ResyncEnd,
                name: "resync".into(),
            },
        ]
    }

    /// A Tag frame laid out by hand as the format document says (version 1, flags 0).
    fn tag_by_hand(tag_kind: u32) -> Vec<u8> {
        let name = b"t1";
        let mut payload = (name.len() as u32).to_le_bytes().to_vec();
        payload.extend_from_slice(name);
        let mut b = vec![0u8; FRAME_HEADER_LEN];
        b[0..4].copy_from_slice(b"MTFR");
        b[4..6].copy_from_slice(&1u16.to_le_bytes());
        b[6] = 3;
        b[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        b[12..16].copy_from_slice(&tag_kind.to_le_bytes());
        b[16..24].copy_from_slice(&9u64.to_le_bytes());
        b[24..32].copy_from_slice(&11i64.to_le_bytes());
        let crc = crc32c::crc32c(&b[..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        let mut h = blake3::Hasher::new();
        h.update(&b[..44]);
        h.update(&payload);
        b.extend_from_slice(&payload);
        b.extend_from_slice(h.finalize().as_bytes());
        b
    }

    #[test]
    fn tags_of_streams_recorded_before_the_closing_kind_read_as_ordinary_tags() {
        for (code, kind) in [(1, TagKind::Crash), (2, TagKind::App)] {
            let f = decode_slice(&tag_by_hand(code)).unwrap();
            assert!(!f.closes_resync(), "{f:?}");
            assert_eq!(
                f,
                Frame::Tag {
                    lsn: Lsn(9),
                    source_time: Timestamp(11),
                    kind,
                    name: "t1".into(),
                }
            );
        }
        let closing = decode_slice(&tag_by_hand(3)).unwrap();
        assert!(closing.closes_resync(), "{closing:?}");
        assert_eq!(encode(&closing), tag_by_hand(3));
        let e = decode_slice(&tag_by_hand(4)).unwrap_err();
        assert_eq!(e, "unknown tag kind 4");
    }

    #[test]
    fn frames_round_trip() {
        let bytes: Vec<u8> = sample().iter().flat_map(encode).collect();
        let mut r = FrameReader::new(&bytes[..]);
        for f in sample() {
            assert_eq!(r.next_frame().unwrap(), Some(f));
        }
        assert_eq!(r.next_frame().unwrap(), None);
    }

    #[test]
    fn every_flipped_bit_and_every_cut_inside_a_frame_is_refused_without_panic() {
        let bytes: Vec<u8> = sample().iter().flat_map(encode).collect();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            let mut r = FrameReader::new(&b[..]);
            let res = (0..4).try_for_each(|_| r.next_frame().map(|_| ()));
            assert!(res.is_err(), "bit {i} flipped went unnoticed");
        }
        let mut boundaries = vec![0];
        for f in sample() {
            boundaries.push(boundaries.last().unwrap() + encode(&f).len());
        }
        for cut in (1..bytes.len()).filter(|c| !boundaries.contains(c)) {
            let mut r = FrameReader::new(&bytes[..cut]);
            let res = (0..4).try_for_each(|_| r.next_frame().map(|_| ()));
            assert!(res.is_err(), "cut at {cut} went unnoticed");
        }
    }

    #[test]
    fn a_frame_claiming_4_gib_is_refused_before_allocating() {
        let mut b = encode(&sample()[1]);
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32c::crc32c(&b[..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        let e = FrameReader::new(&b[..]).next_frame().unwrap_err();
        assert!(e.what.contains("exceeds the limit"), "{e}");
        assert_eq!((e.index, e.offset), (0, 0));
    }
}
