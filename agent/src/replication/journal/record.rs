//! The framing shared by every on-disk log of the journal (see `agent/docs/journal-format.md`):
//! a 32-byte file header (magic, format version, id, CRC32C) and records of
//! `magic, length, kind, CRC32C` + body, so a torn tail or a flipped bit is always detected.
//! This module knows nothing of what the records mean.

use super::io::FsFile;
use super::JournalError;
use camino::Utf8Path;

pub const FORMAT_VERSION: u32 = 1;
pub const FILE_HEADER_LEN: u64 = 32;
pub const RECORD_HEADER_LEN: u64 = 16;
pub const RECORD_MAGIC: [u8; 4] = *b"MTR1";
/// No record is larger: a length field beyond it is damage, not a reason to allocate.
pub const MAX_RECORD_LEN: u64 = 64 << 20;

/// Which log a file is; the first 8 bytes of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Timeline,
    Undo,
    Rollback,
}

impl FileKind {
    fn magic(self) -> &'static [u8; 8] {
        match self {
            FileKind::Timeline => b"MTJTIMEL",
            FileKind::Undo => b"MTJUNDO1",
            FileKind::Rollback => b"MTJRBACK",
        }
    }
}

pub fn file_header(kind: FileKind, id: u64) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[0..8].copy_from_slice(kind.magic());
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&id.to_le_bytes());
    let crc = crc32c::crc32c(&h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a file header; returns the id it carries.
pub fn check_file_header(
    file: &dyn FsFile,
    path: &Utf8Path,
    kind: FileKind,
) -> Result<u64, JournalError> {
    let mut h = [0u8; 32];
    let len = file.len().map_err(|e| JournalError::io(path, "read", e))?;
    if len < FILE_HEADER_LEN {
        return Err(JournalError::damaged(
            path,
            len,
            "the file is shorter than its 32-byte header",
        ));
    }
    file.read_exact_at(&mut h, 0)
        .map_err(|e| JournalError::io(path, "read", e))?;
    if &h[0..8] != kind.magic() {
        return Err(JournalError::damaged(
            path,
            0,
            "wrong magic (not a journal file of this kind)",
        ));
    }
    if crc32c::crc32c(&h[..28]) != u32::from_le_bytes(h[28..32].try_into().unwrap()) {
        return Err(JournalError::damaged(
            path,
            28,
            "file header checksum mismatch",
        ));
    }
    let version = u32::from_le_bytes(h[8..12].try_into().unwrap());
    if version != FORMAT_VERSION {
        return Err(JournalError::damaged(
            path,
            8,
            &format!("format version {version}; this agent reads version {FORMAT_VERSION}"),
        ));
    }
    Ok(u64::from_le_bytes(h[16..24].try_into().unwrap()))
}

/// Appends one framed record to `out`.
pub fn encode_record(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&RECORD_MAGIC);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&[kind, 0, 0, 0]);
    let mut crc = crc32c::crc32c(&out[start..start + 12]);
    crc = crc32c::crc32c_append(crc, body);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(body);
}

/// One record found in a log.
#[derive(Debug, Clone)]
pub struct RecordAt {
    pub offset: u64,
    pub kind: u8,
    pub body: Vec<u8>,
}

/// Why a record could not be read.
#[derive(Debug, Clone)]
pub struct BadRecord {
    pub offset: u64,
    pub what: String,
}

/// Parses the record at `offset` of `bytes` (a whole file in memory).
pub fn parse_record(bytes: &[u8], offset: u64) -> Result<(RecordAt, u64), BadRecord> {
    let bad = |what: &str| BadRecord {
        offset,
        what: what.to_owned(),
    };
    let o = offset as usize;
    let Some(h) = bytes.get(o..o + RECORD_HEADER_LEN as usize) else {
        return Err(bad("truncated record header"));
    };
    if h[0..4] != RECORD_MAGIC {
        return Err(bad("no record magic"));
    }
    let len = u32::from_le_bytes(h[4..8].try_into().unwrap()) as u64;
    if len > MAX_RECORD_LEN {
        return Err(bad("record length field out of range"));
    }
    let body_start = o + RECORD_HEADER_LEN as usize;
    let Some(body) = bytes.get(body_start..body_start + len as usize) else {
        return Err(bad("record runs past the end of the file"));
    };
    let mut crc = crc32c::crc32c(&h[0..12]);
    crc = crc32c::crc32c_append(crc, body);
    if crc != u32::from_le_bytes(h[12..16].try_into().unwrap()) {
        return Err(bad("record checksum mismatch"));
    }
    Ok((
        RecordAt {
            offset,
            kind: h[8],
            body: body.to_vec(),
        },
        offset + RECORD_HEADER_LEN + len,
    ))
}

/// Reads a record through a file handle (for large logs not read whole).
/// With `verify` false only the header is read and the body is left empty.
pub fn read_record(
    file: &dyn FsFile,
    offset: u64,
    end: u64,
    verify: bool,
) -> Result<(RecordAt, u64), BadRecord> {
    let bad = |what: &str| BadRecord {
        offset,
        what: what.to_owned(),
    };
    if offset + RECORD_HEADER_LEN > end {
        return Err(bad("truncated record header"));
    }
    let mut h = [0u8; RECORD_HEADER_LEN as usize];
    file.read_exact_at(&mut h, offset)
        .map_err(|e| bad(&format!("cannot read: {e}")))?;
    if h[0..4] != RECORD_MAGIC {
        return Err(bad("no record magic"));
    }
    let len = u32::from_le_bytes(h[4..8].try_into().unwrap()) as u64;
    if len > MAX_RECORD_LEN || offset + RECORD_HEADER_LEN + len > end {
        return Err(bad("record runs past the end of the log"));
    }
    let mut body = Vec::new();
    if verify {
        body = vec![0u8; len as usize];
        file.read_exact_at(&mut body, offset + RECORD_HEADER_LEN)
            .map_err(|e| bad(&format!("cannot read: {e}")))?;
        let mut crc = crc32c::crc32c(&h[0..12]);
        crc = crc32c::crc32c_append(crc, &body);
        if crc != u32::from_le_bytes(h[12..16].try_into().unwrap()) {
            return Err(bad("record checksum mismatch"));
        }
    }
    Ok((
        RecordAt {
            offset,
            kind: h[8],
            body,
        },
        offset + RECORD_HEADER_LEN + len,
    ))
}

/// True when a valid record starts anywhere after `offset`: then a bad record at `offset` is
/// damage in the middle of the log, not a torn tail.
pub fn valid_record_after(bytes: &[u8], offset: u64) -> Option<u64> {
    let mut i = offset as usize + 1;
    while i + RECORD_HEADER_LEN as usize <= bytes.len() {
        if bytes[i..i + 4] == RECORD_MAGIC && parse_record(bytes, i as u64).is_ok() {
            return Some(i as u64);
        }
        i += 1;
    }
    None
}

/// Little-endian body builder and reader for record bodies.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
}

/// Reads a record body; every getter fails (never panics) on a short body.
pub struct Dec<'a> {
    pub bytes: &'a [u8],
    pub pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(bytes: &'a [u8]) -> Dec<'a> {
        Dec { bytes, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self
            .bytes
            .get(self.pos..self.pos + n)
            .ok_or_else(|| format!("record body too short at byte {}", self.pos))?;
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    pub fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    pub fn str(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        if n > 4096 {
            return Err(format!("string length {n} out of range"));
        }
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "string is not UTF-8".to_owned())
    }
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        s
    }
}

/// Reads a record's header and the first `head_len` bytes of its body (all of it, checked, with
/// `verify`). Returns the record, the offset after it and its body length.
pub fn read_record_head(
    file: &dyn FsFile,
    offset: u64,
    end: u64,
    verify: bool,
    head_len: usize,
) -> Result<(RecordAt, u64, u64), BadRecord> {
    if verify {
        let (r, next) = read_record(file, offset, end, true)?;
        let len = r.body.len() as u64;
        return Ok((r, next, len));
    }
    let (mut r, next) = read_record(file, offset, end, false)?;
    let len = next - offset - RECORD_HEADER_LEN;
    let n = (head_len as u64).min(len) as usize;
    r.body = vec![0u8; n];
    file.read_exact_at(&mut r.body, offset + RECORD_HEADER_LEN)
        .map_err(|e| BadRecord {
            offset,
            what: format!("cannot read: {e}"),
        })?;
    Ok((r, next, len))
}
