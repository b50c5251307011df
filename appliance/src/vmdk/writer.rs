//! The stream-optimized VMDK writer: a raw image in, a `.vmdk` out, compressed on every core.
//!
//! Three stages joined by bounded channels:
//! 1. one *reader* walks the raw image's data extents (SEEK_DATA/SEEK_HOLE, so holes are never
//!    read) and cuts them into chunks of up to 16 grains that never cross a grain table's span;
//! 2. N *compressors* drop all-zero grains and turn the others into sector-padded grain records
//!    (marker + one zlib stream each);
//! 3. the calling thread *writes* chunks strictly in order, placing a grain table after each
//!    32 MiB span, then the grain directory, the footer and the end-of-stream marker.
//!
//! Memory is bounded by a pool of `WINDOW_PER_THREAD × threads` chunk buffers: the reader takes
//! one before reading, and the writer returns it only once the chunk is on disk, so chunks
//! queued, being compressed and waiting for their turn never exceed the pool.
//!
//! The CID and longContentID are a SHA-256 of the bytes written, so the same raw image and options
//! give a byte-identical file; the descriptor is written again at the end with those values.
//! This module must not decide OVF matters (file names in the OVA, sizes in the OVF).

use super::header::{
    DescriptorValues, Marker, SparseExtentHeader, DESCRIPTOR_OFFSET, GRAIN_MARKER_LEN, GTES_PER_GT,
    MARKER_FOOTER, MARKER_GD, MARKER_GT, OVERHEAD_SECTORS,
};
use super::{TempOutput, VmdkError, VmdkOptions, VmdkSummary, GRAIN_BYTES, GRAIN_SECTORS};
use crate::units::SECTOR;
use camino::Utf8Path;
use flate2::{Compress, Compression, FlushCompress, Status};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

/// Grains per chunk (1 MiB): divides a grain table's 512 grains, so a chunk never straddles a GT.
const CHUNK_GRAINS: u64 = 16;
/// Chunks in flight per compressor thread.
const WINDOW_PER_THREAD: usize = 4;
/// zlib level 6, the level QEMU's and VMware's writers use: the output stays as small as theirs.
const LEVEL: u32 = 6;
/// Bits per byte above which a grain is taken as already compressed (packages, compressed kernel
/// modules, images) and stored in deflate's uncompressed blocks: deflating such data at level 6
/// costs a quarter of the writer's time and comes out no smaller.
const INCOMPRESSIBLE_ENTROPY: f64 = 7.99;

/// Converts the raw image `raw` into the stream-optimized VMDK `out` (written to a temporary
/// name, renamed when complete). The capacity is the raw size rounded up to a whole grain
/// (64 KiB); the padding reads as zeros.
pub fn write_stream_optimized(
    raw: &Utf8Path,
    out: &Utf8Path,
    opts: &VmdkOptions,
) -> Result<VmdkSummary, VmdkError> {
    let source = File::open(raw).map_err(|e| VmdkError::file("open", raw, e))?;
    let meta = source
        .metadata()
        .map_err(|e| VmdkError::file("stat", raw, e))?;
    if !meta.is_file() {
        return Err(VmdkError::Input {
            path: raw.to_owned(),
            problem: "is not a regular file (give a raw disk image file)".to_string(),
        });
    }
    let raw_len = meta.len();
    if raw_len == 0 {
        return Err(VmdkError::Input {
            path: raw.to_owned(),
            problem: "is empty: a disk needs at least one sector".to_string(),
        });
    }
    let grains = raw_len.div_ceil(GRAIN_BYTES);
    if grains > u64::from(u32::MAX) / GRAIN_SECTORS {
        return Err(VmdkError::Input {
            path: raw.to_owned(),
            problem: format!("{raw_len} bytes is larger than a sparse VMDK can address"),
        });
    }
    let capacity_sectors = grains * GRAIN_SECTORS;
    let extent_name = out.file_name().unwrap_or("disk.vmdk").to_string();

    let (tmp, file) = TempOutput::new(out)?;
    let plan = Plan {
        raw,
        raw_len,
        grains,
        capacity_sectors,
        threads: opts.thread_count(),
    };
    let mut descriptor = DescriptorValues {
        cid: 0,
        long_content_id: [0; 16],
        capacity_sectors,
        extent_name,
        adapter: opts.adapter_type,
        hw_version: opts.hw_version,
    };
    let (file, summary) = run_pipeline(&plan, &source, file, &mut descriptor, &tmp.path)?;
    tmp.commit(file)?;
    Ok(summary)
}

struct Plan<'a> {
    raw: &'a Utf8Path,
    raw_len: u64,
    grains: u64,
    capacity_sectors: u64,
    threads: usize,
}

/// A run of grains read from the raw image.
struct Chunk {
    seq: u64,
    first_grain: u64,
    data: Vec<u8>,
}

/// A chunk after compression: `records` are sector-aligned grain markers with their data,
/// `grains` says which grain each record holds and how many sectors it takes.
struct Compressed {
    seq: u64,
    first_grain: u64,
    records: Vec<u8>,
    grains: Vec<(u64, u64)>,
    /// The input buffer, back to the pool once the chunk is written.
    buffer: Vec<u8>,
}

fn run_pipeline(
    plan: &Plan<'_>,
    source: &File,
    file: File,
    descriptor: &mut DescriptorValues,
    out_path: &Utf8Path,
) -> Result<(File, VmdkSummary), VmdkError> {
    let window = WINDOW_PER_THREAD * plan.threads.max(1);
    let (pool_tx, pool_rx) = sync_channel::<Vec<u8>>(window);
    for _ in 0..window {
        pool_tx
            .send(Vec::with_capacity((CHUNK_GRAINS * GRAIN_BYTES) as usize))
            .expect("the pool holds a full window");
    }
    // As many slots as buffers: the reader never blocks on a send, so when the writer stops
    // early (dropping the pool's sender) the reader drains the pool and ends instead of hanging.
    let (work_tx, work_rx) = sync_channel::<Chunk>(window);
    let (done_tx, done_rx) = sync_channel::<Compressed>(window);
    let work_rx = Mutex::new(work_rx);

    std::thread::scope(|scope| {
        let reader = scope.spawn(move || read_chunks(plan, source, pool_rx, work_tx));
        for _ in 0..plan.threads.max(1) {
            let done_tx = done_tx.clone();
            let work_rx = &work_rx;
            scope.spawn(move || compress_chunks(work_rx, done_tx));
        }
        drop(done_tx);
        let written = write_stream(plan, file, descriptor, done_rx, pool_tx, out_path);
        let read = reader.join().expect("the raw-image reader does not panic");
        // A read error ends the stream early: report it rather than the short stream.
        read?;
        written
    })
}

/// Stage 1: cut the raw image's data extents into chunks, reading only grains that hold data.
fn read_chunks(
    plan: &Plan<'_>,
    source: &File,
    pool: Receiver<Vec<u8>>,
    work: SyncSender<Chunk>,
) -> Result<(), VmdkError> {
    let mut seq = 0;
    let mut next_grain = 0;
    let mut offset = 0;
    while let Some((start, end)) = next_data_extent(source, offset, plan.raw_len)
        .map_err(|e| VmdkError::file("find the data extents of", plan.raw, e))?
    {
        offset = end;
        // Extents are file-system blocks; a grain may hold parts of several.
        let first = (start / GRAIN_BYTES).max(next_grain);
        let last = end.div_ceil(GRAIN_BYTES).min(plan.grains);
        let mut grain = first;
        while grain < last {
            let chunk_end = last.min((grain / CHUNK_GRAINS + 1) * CHUNK_GRAINS);
            let Ok(mut data) = pool.recv() else {
                return Ok(()); // the writer stopped; it reports why
            };
            let at = grain * GRAIN_BYTES;
            let want = ((chunk_end - grain) * GRAIN_BYTES) as usize;
            let avail = (plan.raw_len - at).min(want as u64) as usize;
            data.clear();
            data.resize(want, 0);
            source
                .read_exact_at(&mut data[..avail], at)
                .map_err(|e| VmdkError::Input {
                    path: plan.raw.to_owned(),
                    problem: format!("cannot read {avail} bytes at byte {at}: {e}"),
                })?;
            let chunk = Chunk {
                seq,
                first_grain: grain,
                data,
            };
            if work.send(chunk).is_err() {
                return Ok(());
            }
            seq += 1;
            grain = chunk_end;
        }
        next_grain = next_grain.max(last);
    }
    Ok(())
}

/// The next range of the file at or after `from` that may hold data. Holes are found with
/// SEEK_DATA/SEEK_HOLE; a file system without them reports the whole file as data.
fn next_data_extent(file: &File, from: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    if from >= len {
        return Ok(None);
    }
    let fd = file.as_raw_fd();
    let from_off = libc::off_t::try_from(from).map_err(io::Error::other)?;
    // SAFETY: lseek on a file descriptor we own; it only moves the offset, which no other code
    // uses (all reads are positioned).
    let data = unsafe { libc::lseek(fd, from_off, libc::SEEK_DATA) };
    if data < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(Some((from, len))),
            _ => Err(err),
        };
    }
    // SAFETY: as above.
    let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
    if hole < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some((data as u64, (hole as u64).min(len))))
}

/// Stage 2: compress each non-zero grain into its record.
fn compress_chunks(work: &Mutex<Receiver<Chunk>>, done: SyncSender<Compressed>) {
    let mut z = Compress::new(Compression::new(LEVEL), true);
    let mut stored = Compress::new(Compression::none(), true);
    loop {
        let next = work.lock().expect("no compressor panics").recv();
        let Ok(chunk) = next else { return };
        let mut records = Vec::with_capacity(chunk.data.len() / 2);
        let mut grains = Vec::new();
        for (i, grain) in chunk.data.chunks(GRAIN_BYTES as usize).enumerate() {
            if is_zero(grain) {
                continue;
            }
            let index = chunk.first_grain + i as u64;
            let start = records.len();
            let z = if byte_entropy(grain) > INCOMPRESSIBLE_ENTROPY {
                &mut stored
            } else {
                &mut z
            };
            compress_grain(z, grain, index * GRAIN_SECTORS, &mut records);
            grains.push((index, ((records.len() - start) as u64) / SECTOR));
        }
        let out = Compressed {
            seq: chunk.seq,
            first_grain: chunk.first_grain,
            records,
            grains,
            buffer: chunk.data,
        };
        if done.send(out).is_err() {
            return;
        }
    }
}

/// Appends one grain record: marker (lba, size), an independent zlib (RFC 1950) stream, zeros
/// to the next sector.
fn compress_grain(z: &mut Compress, grain: &[u8], lba: u64, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; GRAIN_MARKER_LEN]);
    z.reset();
    // Incompressible data grows by a few bytes per 16 KiB block plus the zlib wrapper.
    out.reserve(grain.len() + grain.len() / 256 + 64);
    loop {
        let consumed = z.total_in() as usize;
        let status = z
            .compress_vec(&grain[consumed..], out, FlushCompress::Finish)
            .expect("deflate of an in-memory buffer cannot fail");
        if status == Status::StreamEnd {
            break;
        }
        out.reserve(4096);
    }
    let size = (out.len() - start - GRAIN_MARKER_LEN) as u32;
    out[start..start + GRAIN_MARKER_LEN].copy_from_slice(&Marker::grain_prefix(lba, size));
    let padded = (out.len() as u64).next_multiple_of(SECTOR) as usize;
    out.resize(padded, 0);
}

/// Shannon entropy of the byte distribution, in bits per byte (8 for uniformly random bytes).
fn byte_entropy(b: &[u8]) -> f64 {
    // Four histograms break the store-to-load dependency on repeated byte values.
    let mut h = [[0u32; 256]; 4];
    let mut quads = b.chunks_exact(4);
    for q in &mut quads {
        h[0][q[0] as usize] += 1;
        h[1][q[1] as usize] += 1;
        h[2][q[2] as usize] += 1;
        h[3][q[3] as usize] += 1;
    }
    for &x in quads.remainder() {
        h[0][x as usize] += 1;
    }
    let n = b.len() as f64;
    (0..256)
        .map(|i| h[0][i] + h[1][i] + h[2][i] + h[3][i])
        .filter(|&c| c > 0)
        .map(|c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

fn is_zero(b: &[u8]) -> bool {
    // Word-wise OR over fixed blocks vectorises; `iter().all` with its early exit does not.
    b.chunks(512).all(|block| {
        block.chunks_exact(8).fold(0u64, |acc, w| {
            acc | u64::from_ne_bytes(w.try_into().expect("8 bytes"))
        }) == 0
            && block.chunks_exact(8).remainder().iter().all(|&x| x == 0)
    })
}

/// Stage 3: the file, in order. Also hashes everything it writes for the content ids.
struct StreamWriter<'a> {
    out: BufWriter<File>,
    path: &'a Utf8Path,
    /// Next sector to write.
    sector: u64,
    hash: Sha256,
}

impl StreamWriter<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), VmdkError> {
        debug_assert!(
            (bytes.len() as u64).is_multiple_of(SECTOR),
            "structures are whole sectors"
        );
        self.out
            .write_all(bytes)
            .map_err(|e| VmdkError::file("write", self.path, e))?;
        self.hash.update(bytes);
        self.sector += bytes.len() as u64 / SECTOR;
        Ok(())
    }

    /// `sector` as a table entry: tables hold u32 sectors, which caps a file at 2 TiB.
    fn table_entry(&self, sector: u64) -> Result<u32, VmdkError> {
        u32::try_from(sector).map_err(|_| VmdkError::Output {
            path: self.path.to_owned(),
            problem:
                "the VMDK would exceed 2 TiB, the most a sparse extent's u32 sector offsets reach"
                    .to_string(),
        })
    }

    /// A grain table marker and the table for one 32 MiB span.
    fn put_grain_table(&mut self, table: &[u32]) -> Result<u32, VmdkError> {
        let sectors = (table.len() as u64 * 4).div_ceil(SECTOR);
        self.put(&Marker::metadata_sector(MARKER_GT, sectors))?;
        let at = self.table_entry(self.sector)?;
        self.put(&u32_table_bytes(table))?;
        Ok(at)
    }
}

fn u32_table_bytes(table: &[u32]) -> Vec<u8> {
    let mut b: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
    b.resize((b.len() as u64).next_multiple_of(SECTOR) as usize, 0);
    b
}

fn write_stream(
    plan: &Plan<'_>,
    file: File,
    descriptor: &mut DescriptorValues,
    done: Receiver<Compressed>,
    pool: SyncSender<Vec<u8>>,
    path: &Utf8Path,
) -> Result<(File, VmdkSummary), VmdkError> {
    let header = SparseExtentHeader::stream_optimized(plan.capacity_sectors);
    let mut w = StreamWriter {
        out: BufWriter::with_capacity(1 << 20, file),
        path,
        sector: 0,
        hash: Sha256::new(),
    };
    // Header and a placeholder descriptor (same length; rewritten below with the content ids).
    let mut head = vec![0u8; (OVERHEAD_SECTORS * SECTOR) as usize];
    head[..SECTOR as usize].copy_from_slice(&header.to_bytes());
    let desc_at = (DESCRIPTOR_OFFSET * SECTOR) as usize;
    let desc = descriptor.to_sectors()?;
    head[desc_at..desc_at + desc.len()].copy_from_slice(&desc);
    w.put(&head)?;

    let gts = plan.grains.div_ceil(u64::from(GTES_PER_GT));
    let mut directory: Vec<u32> = Vec::with_capacity(gts as usize);
    let mut table = vec![0u32; GTES_PER_GT as usize];
    let mut pending = std::collections::BTreeMap::new();
    let mut next_seq = 0;
    let mut grains_written = 0u64;

    for chunk in done {
        pending.insert(chunk.seq, chunk);
        while let Some(chunk) = pending.remove(&next_seq) {
            next_seq += 1;
            let span = chunk.first_grain / u64::from(GTES_PER_GT);
            // Spans before this chunk's are complete: their tables go out now, empty ones too.
            while (directory.len() as u64) < span {
                directory.push(w.put_grain_table(&table)?);
                table.fill(0);
            }
            let mut at = w.sector;
            for &(grain, sectors) in &chunk.grains {
                table[(grain % u64::from(GTES_PER_GT)) as usize] = w.table_entry(at)?;
                at += sectors;
            }
            w.put(&chunk.records)?;
            debug_assert_eq!(at, w.sector, "records are the grains' sectors");
            grains_written += chunk.grains.len() as u64;
            // The pool's receiver is gone only if the reader stopped; the chunk is written anyway.
            let _ = pool.send(chunk.buffer);
        }
    }
    if !pending.is_empty() {
        // Only a failed reader leaves gaps; run_pipeline reports its error.
        return Err(VmdkError::Input {
            path: plan.raw.to_owned(),
            problem: "reading stopped before the end".to_string(),
        });
    }
    while (directory.len() as u64) < gts {
        directory.push(w.put_grain_table(&table)?);
        table.fill(0);
    }

    let gd_sectors = (gts * 4).div_ceil(SECTOR);
    w.put(&Marker::metadata_sector(MARKER_GD, gd_sectors))?;
    let gd_at = w.sector;
    w.put(&u32_table_bytes(&directory))?;
    w.put(&Marker::metadata_sector(MARKER_FOOTER, 1))?;
    let footer = SparseExtentHeader {
        gd_offset: gd_at,
        ..header
    };
    w.put(&footer.to_bytes())?;
    w.put(&[0u8; SECTOR as usize])?; // end-of-stream
    let file_size = w.sector * SECTOR;

    // The content ids: everything written so far (which covers the capacity and all grains).
    let digest = w.hash.finalize();
    descriptor.long_content_id.copy_from_slice(&digest[..16]);
    // VMware's CID is the low 32 bits of the longContentID; 0xffffffff and 0xfffffffe mean
    // "no parent"/"invalid", so they are never used.
    let mut cid = u32::from_be_bytes(digest[12..16].try_into().expect("4 bytes"));
    if cid >= 0xffff_fffe {
        cid = 0x7fff_fffe;
        descriptor.long_content_id[12..16].copy_from_slice(&cid.to_be_bytes());
    }
    descriptor.cid = cid;
    let mut file = w
        .out
        .into_inner()
        .map_err(|e| VmdkError::file("write", path, e.into_error()))?;
    file.seek(SeekFrom::Start(DESCRIPTOR_OFFSET * SECTOR))
        .and_then(|_| {
            file.write_all(
                &descriptor
                    .to_sectors()
                    .expect("fits: same length as before"),
            )
        })
        .map_err(|e| VmdkError::file("write the descriptor of", path, e))?;

    Ok((
        file,
        VmdkSummary {
            capacity: plan.capacity_sectors * SECTOR,
            file_size,
            populated_size: grains_written * GRAIN_BYTES,
            grains_written,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection_sees_a_single_byte_anywhere() {
        let mut g = vec![0u8; GRAIN_BYTES as usize];
        assert!(is_zero(&g));
        for at in [0, 7, 511, 512, 40_000, GRAIN_BYTES as usize - 1] {
            g[at] = 1;
            assert!(!is_zero(&g), "byte {at}");
            g[at] = 0;
        }
        assert!(!is_zero(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn only_random_looking_grains_count_as_incompressible() {
        let mut x = 0x1234_5678_9abc_def1u64;
        let random: Vec<u8> = (0..GRAIN_BYTES)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        assert!(byte_entropy(&random) > INCOMPRESSIBLE_ENTROPY);
        let text = b"the quick brown fox jumps over the lazy dog 0123456789\n".repeat(1200);
        assert!(byte_entropy(&text) < 5.0);
        let half: Vec<u8> = random[..32768]
            .iter()
            .chain(&[0u8; 32768])
            .copied()
            .collect();
        assert!(byte_entropy(&half) < INCOMPRESSIBLE_ENTROPY);
        assert_eq!(byte_entropy(&[7u8; 4096]), 0.0);
    }

    #[test]
    fn grain_records_are_zlib_streams_padded_to_sectors() {
        let grain: Vec<u8> = (0..GRAIN_BYTES).map(|i| (i % 251) as u8).collect();
        let mut z = Compress::new(Compression::new(LEVEL), true);
        let mut out = Vec::new();
        compress_grain(&mut z, &grain, 256, &mut out);
        assert_eq!(out.len() % 512, 0);
        match Marker::parse(&out) {
            Marker::Grain { lba, size } => {
                assert_eq!(lba, 256);
                let data = &out[12..12 + size as usize];
                assert_eq!(data[0], 0x78, "zlib header, not raw deflate");
                let mut back = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(data), &mut back)
                    .unwrap();
                assert_eq!(back, grain);
            }
            m => panic!("{m:?}"),
        }
    }
}
