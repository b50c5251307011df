//! Undo and rollback records: the 32-byte block head in front of a block's old content (one
//! codec for writing and reading it), the scan of a log's block records, and the bitmap of the
//! blocks the open epoch has saved. Framing is `record`'s; what to save and when is `ingest`'s.

use super::io::FsFile;
use super::record::{self, BadRecord, RECORD_HEADER_LEN};
use super::timeline::DiskSpec;
use super::{JournalError, Result};
use crate::replication::frame::BLOCK_SIZE;
use camino::Utf8Path;

pub(super) const REC_UNDO: u8 = 1;
pub(super) const REC_ROLLBACK: u8 = 2;
/// Undo and rollback record head: seq u64, disk u32, reserved u32, offset u64, len u32, reserved u32.
pub(super) const BLOCK_HEAD_LEN: usize = 32;

/// One undo or rollback record found on disk.
#[derive(Debug, Clone)]
pub(super) struct BlockRecord {
    pub(super) disk: u32,
    pub(super) offset: u64,
    pub(super) len: u32,
    /// The commit sequence number of the batch that wrote the record.
    pub(super) tag: u64,
    /// Where the old data starts in its file.
    pub(super) data_at: u64,
}

/// Which blocks of each disk the open epoch has already saved: one bit per 4 KiB block, so the
/// memory is bounded by the disks' size (32 MiB per TiB), not by the churn.
pub(super) struct SavedBlocks(Vec<Vec<u64>>);

impl SavedBlocks {
    pub(super) fn new(disks: &[DiskSpec]) -> SavedBlocks {
        SavedBlocks(
            disks
                .iter()
                .map(|d| vec![0u64; (d.capacity / BLOCK_SIZE).div_ceil(64) as usize])
                .collect(),
        )
    }
    pub(super) fn contains(&self, disk: u32, block: u64) -> bool {
        self.0[disk as usize][(block / 64) as usize] & (1 << (block % 64)) != 0
    }
    pub(super) fn insert(&mut self, disk: u32, block: u64) {
        self.0[disk as usize][(block / 64) as usize] |= 1 << (block % 64);
    }
    pub(super) fn clear(&mut self) {
        for bits in &mut self.0 {
            bits.fill(0);
        }
    }
}

/// The head of an undo or rollback record's body; the block's old content follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BlockHead {
    /// The commit sequence number of the batch that wrote the record.
    pub(super) tag: u64,
    pub(super) disk: u32,
    pub(super) offset: u64,
    pub(super) len: u32,
}

impl BlockHead {
    pub(super) fn encode(&self) -> [u8; BLOCK_HEAD_LEN] {
        let mut h = [0u8; BLOCK_HEAD_LEN];
        h[0..8].copy_from_slice(&self.tag.to_le_bytes());
        h[8..12].copy_from_slice(&self.disk.to_le_bytes());
        h[16..24].copy_from_slice(&self.offset.to_le_bytes());
        h[24..28].copy_from_slice(&self.len.to_le_bytes());
        h
    }

    /// Decodes the head of a body of `body_len` bytes (of which `b` may hold only the head).
    pub(super) fn decode(b: &[u8], body_len: u64) -> std::result::Result<BlockHead, String> {
        if b.len() < BLOCK_HEAD_LEN {
            return Err("block record shorter than its head".into());
        }
        let len = u32::from_le_bytes(b[24..28].try_into().unwrap());
        if u64::from(len) + BLOCK_HEAD_LEN as u64 != body_len {
            return Err("block record length fields disagree".into());
        }
        Ok(BlockHead {
            tag: u64::from_le_bytes(b[0..8].try_into().unwrap()),
            disk: u32::from_le_bytes(b[8..12].try_into().unwrap()),
            offset: u64::from_le_bytes(b[16..24].try_into().unwrap()),
            len,
        })
    }
}

/// Appends one framed undo or rollback record to `out`; `fill` reads the `head.len` bytes of
/// old content straight into their place in the record (the hot path of every batch: no copy).
pub(super) fn append_block_record(
    out: &mut Vec<u8>,
    kind: u8,
    head: BlockHead,
    fill: impl FnOnce(&mut [u8]) -> Result<()>,
) -> Result<()> {
    let start = out.len();
    let head_end = start + RECORD_HEADER_LEN as usize + BLOCK_HEAD_LEN;
    out.resize(head_end + head.len as usize, 0);
    fill(&mut out[head_end..])?;
    out[head_end - BLOCK_HEAD_LEN..head_end].copy_from_slice(&head.encode());
    record::seal_record(&mut out[start..], kind);
    Ok(())
}

fn decode_block_record(
    rec: &record::RecordAt,
    body_len: u64,
) -> std::result::Result<BlockRecord, String> {
    let h = BlockHead::decode(&rec.body, body_len)?;
    Ok(BlockRecord {
        tag: h.tag,
        disk: h.disk,
        offset: h.offset,
        len: h.len,
        data_at: rec.offset + RECORD_HEADER_LEN + BLOCK_HEAD_LEN as u64,
    })
}

/// Reads the block records of a log between `start` and `end`. With `strict`, any bad record is
/// damage (committed data); otherwise reading stops at the first bad one (an unfinished batch).
pub(super) fn scan_blocks(
    file: &dyn FsFile,
    path: &Utf8Path,
    kind: u8,
    start: u64,
    end: u64,
    verify: bool,
    strict: bool,
) -> Result<Vec<BlockRecord>> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let rec = record::read_record_head(file, at, end, verify, BLOCK_HEAD_LEN);
        let parsed = rec.and_then(|(r, next, body_len)| {
            if r.kind != kind {
                return Err(BadRecord {
                    offset: at,
                    what: format!("unexpected record kind {}", r.kind),
                });
            }
            decode_block_record(&r, body_len)
                .map(|b| (b, next))
                .map_err(|what| BadRecord { offset: at, what })
        });
        match parsed {
            Ok((b, next)) => {
                out.push(b);
                at = next;
            }
            Err(bad) if strict => {
                return Err(JournalError::damaged(path, bad.offset, &bad.what));
            }
            Err(_) => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undo_record_is_laid_out_as_the_format_document_says() {
        let data: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        let head = BlockHead {
            tag: 0x1122_3344_5566_7788,
            disk: 3,
            offset: 5 * 4096,
            len: 4096,
        };
        let mut out = vec![9u8; 5];
        append_block_record(&mut out, REC_UNDO, head, |dst| {
            dst.copy_from_slice(&data);
            Ok(())
        })
        .unwrap();
        let r = &out[5..];
        let body = &r[16..];
        assert_eq!(body.len(), 32 + 4096);
        let mut expected = Vec::new();
        record::encode_record(&mut expected, 1, body);
        assert_eq!(r, expected.as_slice(), "framed as every other record");
        assert_eq!(&body[0..8], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&body[8..12], &3u32.to_le_bytes());
        assert_eq!(&body[12..16], &[0; 4]);
        assert_eq!(&body[16..24], &(5 * 4096u64).to_le_bytes());
        assert_eq!(&body[24..28], &4096u32.to_le_bytes());
        assert_eq!(&body[28..32], &[0; 4]);
        assert_eq!(&body[32..], data.as_slice());

        let decoded = BlockHead::decode(&body[..BLOCK_HEAD_LEN], body.len() as u64).unwrap();
        assert_eq!(decoded, head);
        assert!(BlockHead::decode(&body[..BLOCK_HEAD_LEN], body.len() as u64 + 1).is_err());
        assert!(BlockHead::decode(&body[..BLOCK_HEAD_LEN - 1], body.len() as u64).is_err());
    }
}
