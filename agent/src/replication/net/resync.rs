//! Block hashing for delta resync: both ends hash their copy of each disk in fixed blocks with
//! BLAKE3, at the same time; the master target streams its hashes and the sender sends only
//! blocks whose hashes differ. An unchanged disk costs one read on each side and 32 bytes of
//! hash per 64 KiB block on the wire. Reads only; never writes a disk.

use anyhow::{Context, Result};
use camino::Utf8Path;
use std::os::unix::fs::FileExt;

/// Bytes read per call (many blocks at a time, so small blocks do not mean small reads).
const READ_CHUNK: usize = 4 << 20;

/// How many `block`-sized blocks a disk of `capacity` bytes has (the last may be shorter).
pub fn block_count(capacity: u64, block: u32) -> u64 {
    capacity.div_ceil(u64::from(block))
}

/// Hashes the first `capacity` bytes of `path` block by block, in order, from block `first`
/// on (a resumed resync does not hash again what was confirmed).
pub fn hash_disk(
    path: &Utf8Path,
    capacity: u64,
    block: u32,
    first: u64,
    mut each: impl FnMut(u64, [u8; 32]) -> Result<()>,
) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
    let block = u64::from(block);
    let chunk = (READ_CHUNK as u64 / block).max(1) * block;
    let mut buf = vec![0u8; chunk as usize];
    let mut at = first.saturating_mul(block).min(capacity);
    while at < capacity {
        let n = chunk.min(capacity - at) as usize;
        file.read_exact_at(&mut buf[..n], at)
            .with_context(|| format!("cannot read {path} at byte {at}"))?;
        for (i, b) in buf[..n].chunks(block as usize).enumerate() {
            each(at / block + i as u64, *blake3::hash(b).as_bytes())?;
        }
        at += n as u64;
    }
    Ok(())
}

/// Adjacent differing blocks, merged into runs of at most `max` bytes.
#[derive(Debug, Default)]
pub struct Runs {
    pub current: Option<(u32, u64, u64)>,
}

impl Runs {
    /// Adds a differing range; returns a finished run when this one cannot extend it.
    pub fn push(&mut self, disk: u32, offset: u64, len: u64, max: u64) -> Option<(u32, u64, u64)> {
        match &mut self.current {
            Some((d, o, l)) if *d == disk && *o + *l == offset && *l + len <= max => {
                *l += len;
                None
            }
            _ => self.current.replace((disk, offset, len)),
        }
    }
    pub fn finish(&mut self) -> Option<(u32, u64, u64)> {
        self.current.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_adjacent_ranges_up_to_the_limit() {
        let mut r = Runs::default();
        assert_eq!(r.push(0, 0, 10, 25), None);
        assert_eq!(r.push(0, 10, 10, 25), None);
        assert_eq!(r.push(0, 20, 10, 25), Some((0, 0, 20)));
        assert_eq!(r.push(1, 30, 10, 25), Some((0, 20, 10)));
        assert_eq!(r.finish(), Some((1, 30, 10)));
    }
}
