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

/// The record header as read: everything but the body's checksum is checked by
/// [`RecordHeader::decode`]; [`RecordHeader::matches`] checks the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: u8,
    pub body_len: u64,
    /// Bytes 0..12 as found (the reserved bytes too: the checksum covers them).
    covered: [u8; 12],
    crc: u32,
}

/// Why a record header is refused; each log words it for its own reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderFault {
    NoMagic,
    /// A length beyond [`MAX_RECORD_LEN`]: damage, never a reason to allocate.
    TooLong,
}

impl RecordHeader {
    /// Writes the header of `body` (magic, length, kind, reserved 0, CRC32C of bytes 0..12 then
    /// the body).
    pub fn encode(kind: u8, body: &[u8]) -> [u8; RECORD_HEADER_LEN as usize] {
        let mut h = [0u8; RECORD_HEADER_LEN as usize];
        h[0..4].copy_from_slice(&RECORD_MAGIC);
        h[4..8].copy_from_slice(&(body.len() as u32).to_le_bytes());
        h[8] = kind;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&h[0..12]), body);
        h[12..16].copy_from_slice(&crc.to_le_bytes());
        h
    }

    pub fn decode(h: &[u8; RECORD_HEADER_LEN as usize]) -> Result<RecordHeader, HeaderFault> {
        if h[0..4] != RECORD_MAGIC {
            return Err(HeaderFault::NoMagic);
        }
        let body_len = u64::from(u32::from_le_bytes(h[4..8].try_into().unwrap()));
        if body_len > MAX_RECORD_LEN {
            return Err(HeaderFault::TooLong);
        }
        Ok(RecordHeader {
            kind: h[8],
            body_len,
            covered: h[0..12].try_into().unwrap(),
            crc: u32::from_le_bytes(h[12..16].try_into().unwrap()),
        })
    }

    /// Whether `body` is the one this header's checksum was computed over.
    pub fn matches(&self, body: &[u8]) -> bool {
        crc32c::crc32c_append(crc32c::crc32c(&self.covered), body) == self.crc
    }

    /// The record's size on disk, header included.
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN + self.body_len
    }
}

/// Frames a record in place: `record` is [`RECORD_HEADER_LEN`] bytes of room followed by the
/// body, so a caller can read a large body straight into its final place.
pub fn seal_record(record: &mut [u8], kind: u8) {
    let (head, body) = record.split_at_mut(RECORD_HEADER_LEN as usize);
    head.copy_from_slice(&RecordHeader::encode(kind, body));
}

/// Appends one framed record to `out`.
pub fn encode_record(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.extend_from_slice(&RecordHeader::encode(kind, body));
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
    let head = RecordHeader::decode(h.try_into().unwrap()).map_err(|f| match f {
        HeaderFault::NoMagic => bad("no record magic"),
        HeaderFault::TooLong => bad("record length field out of range"),
    })?;
    let body_start = o + RECORD_HEADER_LEN as usize;
    let Some(body) = bytes.get(body_start..body_start + head.body_len as usize) else {
        return Err(bad("record runs past the end of the file"));
    };
    if !head.matches(body) {
        return Err(bad("record checksum mismatch"));
    }
    Ok((
        RecordAt {
            offset,
            kind: head.kind,
            body: body.to_vec(),
        },
        offset + head.record_len(),
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
    let past_end = "record runs past the end of the log";
    let head = RecordHeader::decode(&h).map_err(|f| match f {
        HeaderFault::NoMagic => bad("no record magic"),
        HeaderFault::TooLong => bad(past_end),
    })?;
    if offset + head.record_len() > end {
        return Err(bad(past_end));
    }
    let mut body = Vec::new();
    if verify {
        body = vec![0u8; head.body_len as usize];
        file.read_exact_at(&mut body, offset + RECORD_HEADER_LEN)
            .map_err(|e| bad(&format!("cannot read: {e}")))?;
        if !head.matches(&body) {
            return Err(bad("record checksum mismatch"));
        }
    }
    Ok((
        RecordAt {
            offset,
            kind: head.kind,
            body,
        },
        offset + head.record_len(),
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

#[cfg(test)]
mod tests {
    //! The byte layouts of `agent/docs/journal-format.md`, built here field by field from the
    //! document (not from the codec), so a change to the codec that moves a byte fails.
    use super::*;
    use crate::replication::journal::io::{Fs, OpenMode};
    use crate::replication::journal::sim::SimFs;

    /// Kind, body and the offset after it: what a reader gives back.
    type Read = std::result::Result<(u8, Vec<u8>, u64), ()>;

    fn le32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn a_record_is_laid_out_as_the_format_document_says() {
        let body = b"twelve bytes";
        let mut out = b"prefix".to_vec();
        encode_record(&mut out, 3, body);
        let r = &out[6..];
        assert_eq!(r.len(), 16 + body.len());
        assert_eq!(&r[0..4], b"MTR1");
        assert_eq!(le32(r, 4), body.len() as u32);
        assert_eq!(r[8], 3);
        assert_eq!(&r[9..12], &[0, 0, 0]);
        let mut covered = r[0..12].to_vec();
        covered.extend_from_slice(body);
        assert_eq!(le32(r, 12), crc32c::crc32c(&covered));
        assert_eq!(&r[16..], body);
    }

    #[test]
    fn sealing_in_place_gives_the_same_bytes_as_encoding() {
        let body = [7u8; 100];
        let mut encoded = Vec::new();
        encode_record(&mut encoded, 2, &body);
        let mut sealed = vec![0xAA; 16];
        sealed.extend_from_slice(&body);
        seal_record(&mut sealed, 2);
        assert_eq!(sealed, encoded);
    }

    #[test]
    fn a_file_header_is_laid_out_as_the_format_document_says() {
        for (kind, magic) in [
            (FileKind::Timeline, b"MTJTIMEL"),
            (FileKind::Undo, b"MTJUNDO1"),
            (FileKind::Rollback, b"MTJRBACK"),
        ] {
            let h = file_header(kind, 0x0102_0304_0506_0708);
            assert_eq!(&h[0..8], magic);
            assert_eq!(le32(&h, 8), 1);
            assert_eq!(le32(&h, 12), 0);
            assert_eq!(&h[16..24], &0x0102_0304_0506_0708u64.to_le_bytes());
            assert_eq!(le32(&h, 24), 0);
            assert_eq!(le32(&h, 28), crc32c::crc32c(&h[0..28]));
        }
    }

    #[test]
    fn both_readers_give_back_what_was_encoded_and_agree_on_damage() {
        let fs = SimFs::new();
        let path = Utf8Path::new("/log");
        let mut bytes = Vec::new();
        encode_record(&mut bytes, 4, b"first");
        encode_record(&mut bytes, 5, b"");
        let end = bytes.len() as u64;
        let check = |bytes: &[u8]| -> Vec<Read> {
            fs.put(path, bytes);
            let f = fs.open(path, OpenMode::Read).unwrap();
            let mut out = Vec::new();
            for at in [0, 21] {
                let parsed = parse_record(bytes, at).map(|(r, n)| (r.kind, r.body, n));
                let read = read_record(f.as_ref(), at, end, true).map(|(r, n)| (r.kind, r.body, n));
                assert_eq!(parsed.is_ok(), read.is_ok(), "at {at}");
                out.push(parsed.map_err(|_| ()));
            }
            out
        };
        assert_eq!(
            check(&bytes),
            vec![Ok((4, b"first".to_vec(), 21)), Ok((5, Vec::new(), 37))]
        );
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            let which = usize::from(i >= 21);
            assert!(
                check(&damaged)[which].is_err(),
                "a flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn a_length_beyond_the_limit_is_refused_before_reading_the_body() {
        let mut h = RecordHeader::encode(1, b"");
        h[4..8].copy_from_slice(&((MAX_RECORD_LEN + 1) as u32).to_le_bytes());
        assert_eq!(RecordHeader::decode(&h), Err(HeaderFault::TooLong));
        h[0] = b'X';
        assert_eq!(RecordHeader::decode(&h), Err(HeaderFault::NoMagic));
    }
}
