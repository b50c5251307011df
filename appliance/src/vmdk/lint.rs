//! The stream-disk lint: reads a stream-optimized VMDK the way a streaming importer (ESXi) does
//! and reports every problem it sees to a sink, each with the structure and its byte offset in
//! the file, going on where it can instead of stopping at the first (stopping is
//! `VmdkReader::check`'s way). The lint decodes only through `header` (the one decoder of the
//! sparse extent header and the stream markers) and never writes.
//!
//! The steps are separate so that a caller can check its own facts between them (`verify`
//! compares the capacity with the OVF's after the header fields and before the descriptor).

use super::header::{
    Marker, SparseExtentHeader, COMPRESSION_DEFLATE, FLAG_COMPRESSED, FLAG_MARKERS, GD_AT_END,
    MAGIC, VERSION,
};
use crate::finding::Severity;
use crate::units::SECTOR;
use std::io::{self, Read, Seek, SeekFrom};

/// One problem of the file; `offset` is a byte offset in the VMDK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintFinding {
    pub severity: Severity,
    pub structure: String,
    pub offset: u64,
    pub message: String,
}

/// Where the lint reports, in the order it finds things.
pub type Sink<'s> = &'s mut dyn FnMut(LintFinding);

fn report(sink: &mut Sink, severity: Severity, structure: &str, offset: u64, message: String) {
    sink(LintFinding {
        severity,
        structure: structure.to_string(),
        offset,
        message,
    });
}

fn error(sink: &mut Sink, structure: &str, offset: u64, message: impl Into<String>) {
    report(sink, Severity::Error, structure, offset, message.into());
}

/// The file's size, magic, version and flags, from the first sector. Returns the decoded header
/// if the file is a sparse extent worth walking.
pub fn header<R: Read + Seek>(r: &mut R, len: u64, mut sink: Sink) -> Option<SparseExtentHeader> {
    if len < 3 * SECTOR || !len.is_multiple_of(SECTOR) {
        error(
            &mut sink,
            "VMDK file",
            0,
            format!(
                "{len} bytes is not a whole number of 512-byte sectors of at least a header, footer and end-of-stream marker"
            ),
        );
        if len < SECTOR {
            return None;
        }
    }
    let mut head = [0u8; SECTOR as usize];
    if let Err(err) = read_at(r, 0, &mut head) {
        error(
            &mut sink,
            "sparse extent header",
            0,
            format!("cannot be read: {err}"),
        );
        return None;
    }
    if head[0..4] != MAGIC.to_le_bytes() {
        let what = if head.starts_with(b"# Disk DescriptorFile") {
            "a VMDK descriptor file, not a monolithic streamOptimized disk"
        } else {
            "not a sparse VMDK (no KDMV magic)"
        };
        error(&mut sink, "sparse extent header", 0, what);
        return None;
    }
    let h = SparseExtentHeader::decode(&head);
    if h.version < VERSION {
        error(
            &mut sink,
            "sparse extent header version",
            4,
            format!(
                "version {}: ESXi answers \"sparse VMDK version too old\" (stream disks are version 3)",
                h.version
            ),
        );
    }
    if h.flags & FLAG_COMPRESSED == 0
        || h.flags & FLAG_MARKERS == 0
        || h.compress_algorithm != COMPRESSION_DEFLATE
    {
        error(
            &mut sink,
            "sparse extent header flags",
            8,
            format!(
                "flags {:#010x}, compressAlgorithm {}: a stream disk has compressed grains (bit 16), markers (bit 17) and DEFLATE (1)",
                h.flags, h.compress_algorithm
            ),
        );
    }
    Some(h)
}

/// The embedded descriptor's `createType`, when the header places a plausible descriptor inside
/// the file.
pub fn descriptor<R: Read + Seek>(r: &mut R, len: u64, h: &SparseExtentHeader, mut sink: Sink) {
    let (at, sectors) = (h.descriptor_offset, h.descriptor_size);
    if !(at > 0
        && sectors > 0
        && sectors <= 128
        && at.saturating_add(sectors).saturating_mul(SECTOR) <= len)
    {
        return;
    }
    let mut desc = vec![0u8; (sectors * SECTOR) as usize];
    if read_at(r, at * SECTOR, &mut desc).is_ok() {
        // Text, not `Descriptor::parse`: a descriptor the parser refuses still gets this lint.
        let text = String::from_utf8_lossy(&desc);
        if !text.contains("createType=\"streamOptimized\"") {
            error(
                &mut sink,
                "embedded descriptor",
                at * SECTOR,
                "createType is not \"streamOptimized\"",
            );
        }
    }
}

/// Walks the stream from the first grain marker (`overHead`) to the end-of-stream marker the
/// way a streaming importer reads it: grain markers (LBA, compressed size), metadata markers
/// (GT, GD, footer) and the all-zero EOS that must be the file's last sector. Reads only the
/// 16 marker bytes of each structure. Works for any producer's layout (tables at the front or
/// at the end).
pub fn stream<R: Read + Seek>(r: &mut R, len: u64, h: &SparseExtentHeader, mut sink: Sink) {
    let over_head = h.overhead;
    let mut pos = over_head.saturating_mul(SECTOR);
    if over_head == 0 || pos > len {
        error(
            &mut sink,
            "sparse extent header overHead",
            64,
            format!(
                "overHead sector {over_head} is not where grains start inside the {len}-byte file"
            ),
        );
        return;
    }
    let mut last_lba = None;
    loop {
        if pos + SECTOR > len {
            error(
                &mut sink,
                "end-of-stream marker",
                pos,
                format!(
                    "the marker walk from sector {over_head} reaches the end of the file at byte {pos} without an end-of-stream marker: ESXi rejects such disks (qemu-img writes none)"
                ),
            );
            return;
        }
        let mut mk = [0u8; 16];
        if let Err(err) = read_at(r, pos, &mut mk) {
            error(&mut sink, "marker", pos, format!("cannot be read: {err}"));
            return;
        }
        let marker = Marker::parse(&mk);
        let next = pos.saturating_add(marker.record_sectors().saturating_mul(SECTOR));
        match marker {
            Marker::Grain { lba, size } => {
                if !grain_marker(&mut sink, pos, lba, size, h, &mut last_lba) {
                    return;
                }
                if next > len {
                    error(
                        &mut sink,
                        &format!("grain marker (LBA {lba})"),
                        pos,
                    format!("the grain's {size} compressed bytes run past the end of the file ({len} bytes): truncated"),
                );
                    return;
                }
            }
            Marker::EndOfStream => return end_of_stream(r, len, pos, h, sink),
            Marker::GrainTable { sectors }
            | Marker::GrainDirectory { sectors }
            | Marker::Footer { sectors } => {
                if sectors == 0 || next > len {
                    let name = match marker {
                        Marker::GrainTable { .. } => "grain table marker",
                        Marker::GrainDirectory { .. } => "grain directory marker",
                        _ => "footer marker",
                    };
                    error(
                        &mut sink,
                        name,
                        pos,
                        format!("announces {sectors} sectors, which do not fit in the {len}-byte file: truncated or a bad marker"),
                    );
                    return;
                }
            }
            Marker::Unknown { kind, .. } => {
                error(
                    &mut sink,
                    "marker",
                    pos,
                    format!("unknown metadata marker type {kind} (0 EOS, 1 GT, 2 GD, 3 footer): bad marker"),
                );
                return;
            }
        }
        pos = next;
    }
}

/// The LBA, size and order of the grain marker at `pos`; false if the walk cannot go on.
/// `last_lba` is the previous grain's.
fn grain_marker(
    sink: &mut Sink,
    pos: u64,
    lba: u64,
    size: u32,
    h: &SparseExtentHeader,
    last_lba: &mut Option<u64>,
) -> bool {
    let (capacity, grain) = (h.capacity, h.grain_size);
    let structure = format!("grain marker (LBA {lba})");
    if grain == 0 || !lba.is_multiple_of(grain) || lba >= capacity {
        error(
            sink,
            &structure,
            pos,
            format!(
                "LBA {lba} is not a grain start inside the disk's {capacity} sectors (bad marker)"
            ),
        );
        return false;
    }
    if u64::from(size) > 2 * grain * SECTOR + SECTOR {
        error(
            sink,
            &structure,
            pos,
            format!("compressed size {size} is larger than any {}-byte grain compresses to (bad marker)", grain * SECTOR),
        );
        return false;
    }
    if last_lba.is_some_and(|l| lba <= l) {
        report(
            sink,
            Severity::Warning,
            &structure,
            pos,
            "grains are not in ascending LBA order (some importers expect them sorted)".to_string(),
        );
    }
    *last_lba = Some(lba);
    true
}

/// The end-of-stream marker at `pos` must be the file's last sector; what follows it decides
/// how bad it is that it is not.
fn end_of_stream<R: Read + Seek>(
    r: &mut R,
    len: u64,
    pos: u64,
    h: &SparseExtentHeader,
    mut sink: Sink,
) {
    let after = pos + SECTOR;
    if after == len {
        return;
    }
    let trailing_zero = match all_zero(r, after) {
        Ok(z) => z,
        Err(err) => {
            error(
                &mut sink,
                "end-of-stream marker",
                pos,
                format!("the bytes after it cannot be read: {err}"),
            );
            return;
        }
    };
    let (severity, why) = if h.gd_offset == GD_AT_END {
        (Severity::Error, "with the grain directory at the end, readers find the footer at end of file - 1536 bytes, so the end-of-stream marker must be the last sector")
    } else if trailing_zero {
        (
            Severity::Note,
            "only zero padding follows (qemu-img does this); stream readers stop at the marker",
        )
    } else {
        (Severity::Error, "data follows the end of the stream")
    };
    report(
        &mut sink,
        severity,
        "end-of-stream marker",
        pos,
        format!(
            "the stream ends here but the file goes on for {} bytes: {why}",
            len - after
        ),
    );
}

fn read_at<R: Read + Seek>(r: &mut R, pos: u64, buf: &mut [u8]) -> io::Result<()> {
    r.seek(SeekFrom::Start(pos))?;
    r.read_exact(buf)
}

/// Whether the file is all zero from `from` to its end.
fn all_zero<R: Read + Seek>(r: &mut R, from: u64) -> io::Result<bool> {
    r.seek(SeekFrom::Start(from))?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
}
