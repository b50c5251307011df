//! Reading sparse VMDKs: ours (grain directory at the end, footer, end-of-stream) and other
//! writers' (QEMU's and open-vmdk's preallocated tables, hosted monolithicSparse).
//!
//! `open` reads the header, footer, descriptor, grain directory and grain tables, and checks
//! each against the file; `check` walks every marker from `overHead` to the end-of-stream
//! marker and decompresses every grain. Every error names the structure and its byte offset.
//! Generic over `Read + Seek` so that a VMDK inside an OVA can be read through a window on the
//! tar member. This module never writes a VMDK.

use super::header::{
    describe_marker, Descriptor, Marker, SparseExtentHeader, FLAG_ZEROED_GTE, GD_AT_END,
    GRAIN_MARKER_LEN,
};
use super::VmdkError;
use crate::units::SECTOR;
use flate2::{Decompress, FlushDecompress, Status};
use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom, Write};

/// Where the grain directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The stream layout of the format's specification and this project's writer: the header says
    /// "at the end", the footer has the real offset, the file ends with footer and end-of-stream.
    GdAtEnd,
    /// The header gives the grain directory (QEMU's and open-vmdk's stream files, hosted sparse).
    GdInHeader,
}

/// What `check` found: the facts a linter or an OVF writer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmdkReport {
    /// Virtual size in bytes.
    pub capacity: u64,
    pub file_size: u64,
    pub version: u32,
    pub flags: u32,
    pub layout: Layout,
    pub create_type: Option<String>,
    pub adapter_type: Option<String>,
    pub hw_version: Option<String>,
    pub tools_version: Option<String>,
    pub cid: Option<String>,
    /// Grains with data.
    pub grains: u64,
    /// `grains` × grain size in bytes.
    pub populated_size: u64,
    pub grain_tables: u64,
    /// The file was walked marker by marker from `overHead` to its end-of-stream marker.
    pub markers_walked: bool,
    /// Grain markers appeared in ascending LBA order (what ESXi's importer expects).
    pub grains_in_order: bool,
    /// The file ends with footer marker, footer and end-of-stream marker.
    pub has_footer_and_eos: bool,
}

pub struct VmdkReader<R: Read + Seek> {
    inner: R,
    len: u64,
    header: SparseExtentHeader,
    footer: Option<SparseExtentHeader>,
    layout: Layout,
    descriptor: Option<Descriptor>,
    gd_offset: u64,
    directory: Vec<u32>,
    /// Per grain table present in the file, per grain: the sector of its marker (or data),
    /// 0 for "reads as zeros". Only tables the file holds take memory, so a header claiming a
    /// huge capacity cannot make the reader allocate more than the file's size.
    tables: Vec<Option<Box<[u32]>>>,
    grains: u64,
    inflate: Decompress,
    compressed: Vec<u8>,
    cached: Option<u64>,
    cache: Vec<u8>,
}

impl<R: Read + Seek> VmdkReader<R> {
    /// Reads and checks the header, footer, descriptor, grain directory and grain tables of the
    /// VMDK in `r`, which is `len` bytes long.
    pub fn open(inner: R, len: u64) -> Result<Self, VmdkError> {
        let mut r = VmdkReader {
            inner,
            len,
            header: SparseExtentHeader::stream_optimized(1),
            footer: None,
            layout: Layout::GdInHeader,
            descriptor: None,
            gd_offset: 0,
            directory: Vec::new(),
            tables: Vec::new(),
            grains: 0,
            inflate: Decompress::new(true),
            compressed: Vec::new(),
            cached: None,
            cache: Vec::new(),
        };
        let mut sector = [0u8; SECTOR as usize];
        r.read_exact_at(0, &mut sector, "header")?;
        r.header = SparseExtentHeader::parse(&sector, 0, "header")?;

        if r.header.gd_offset == GD_AT_END {
            r.layout = Layout::GdAtEnd;
            r.read_trailer()?;
        }
        let effective = r.footer.clone().unwrap_or_else(|| r.header.clone());
        r.gd_offset = effective.gd_offset;
        r.read_descriptor()?;
        r.read_tables()?;
        Ok(r)
    }

    /// Virtual size in bytes.
    pub fn capacity(&self) -> u64 {
        self.header.capacity * SECTOR
    }
    pub fn header(&self) -> &SparseExtentHeader {
        &self.header
    }
    pub fn footer(&self) -> Option<&SparseExtentHeader> {
        self.footer.as_ref()
    }
    pub fn descriptor(&self) -> Option<&Descriptor> {
        self.descriptor.as_ref()
    }
    pub fn layout(&self) -> Layout {
        self.layout
    }
    pub fn grain_bytes(&self) -> u64 {
        self.header.grain_size * SECTOR
    }
    pub fn grain_count(&self) -> u64 {
        self.grains
    }
    /// Grains that hold data.
    pub fn allocated_grains(&self) -> u64 {
        self.tables
            .iter()
            .flatten()
            .map(|t| t.iter().filter(|&&s| s != 0).count() as u64)
            .sum()
    }

    fn read_exact_at(
        &mut self,
        offset: u64,
        buf: &mut [u8],
        structure: &'static str,
    ) -> Result<(), VmdkError> {
        let end = offset.saturating_add(buf.len() as u64);
        if end > self.len {
            return Err(VmdkError::corrupt(
                structure,
                offset,
                format!(
                    "needs bytes up to {end} but the file ends at byte {}: the file is truncated",
                    self.len
                ),
            ));
        }
        let io = |source| VmdkError::Read {
            structure,
            offset,
            source,
        };
        self.inner.seek(SeekFrom::Start(offset)).map_err(io)?;
        self.inner.read_exact(buf).map_err(io)
    }

    /// Footer marker, footer and end-of-stream marker: the last three sectors.
    fn read_trailer(&mut self) -> Result<(), VmdkError> {
        let len = self.len;
        if !len.is_multiple_of(SECTOR) {
            return Err(VmdkError::corrupt(
                "end of file",
                len,
                format!(
                    "{len} bytes is not whole sectors: the file is truncated or has bytes appended"
                ),
            ));
        }
        if len < (self.header.overhead + 3) * SECTOR {
            return Err(VmdkError::corrupt(
                "end of file",
                len,
                format!(
                    "the file is only {len} bytes, too short for the header's overHead ({} sectors) plus footer and end-of-stream: it is truncated",
                    self.header.overhead
                ),
            ));
        }
        let mut sector = [0u8; SECTOR as usize];
        let eos_at = len - SECTOR;
        self.read_exact_at(eos_at, &mut sector, "end-of-stream marker")?;
        if sector.iter().any(|&b| b != 0) {
            return Err(VmdkError::corrupt(
                "end-of-stream marker",
                eos_at,
                format!(
                    "the last sector must be 512 zero bytes, found {}: the file is truncated or does not end with an end-of-stream marker",
                    describe_marker(&sector)
                ),
            ));
        }
        let marker_at = len - 3 * SECTOR;
        self.read_exact_at(marker_at, &mut sector, "footer marker")?;
        match Marker::parse(&sector) {
            Marker::Footer { sectors: 1 } => {}
            _ => {
                return Err(VmdkError::corrupt(
                    "footer marker",
                    marker_at,
                    format!(
                        "expected a footer marker (type 3, 1 sector) three sectors before the end, found {}",
                        describe_marker(&sector)
                    ),
                ))
            }
        }
        let footer_at = len - 2 * SECTOR;
        self.read_exact_at(footer_at, &mut sector, "footer")?;
        let footer = SparseExtentHeader::parse(&sector, footer_at, "footer")?;
        if footer.gd_offset == GD_AT_END || footer.gd_offset == 0 {
            return Err(VmdkError::corrupt(
                "footer",
                footer_at,
                "gdOffset does not give the grain directory's sector".to_string(),
            ));
        }
        let same = SparseExtentHeader {
            gd_offset: self.header.gd_offset,
            ..footer.clone()
        };
        if same != self.header {
            return Err(VmdkError::corrupt(
                "footer",
                footer_at,
                format!(
                    "differs from the header in more than gdOffset (header {:?}, footer {:?})",
                    self.header, footer
                ),
            ));
        }
        self.footer = Some(footer);
        Ok(())
    }

    fn read_descriptor(&mut self) -> Result<(), VmdkError> {
        let h = &self.header;
        if h.descriptor_offset == 0 || h.descriptor_size == 0 {
            return Ok(());
        }
        if h.descriptor_size > 2048 {
            return Err(VmdkError::corrupt(
                "header",
                0,
                format!(
                    "descriptorSize {} sectors is more than any writer reserves",
                    h.descriptor_size
                ),
            ));
        }
        let at = h.descriptor_offset * SECTOR;
        let mut text = vec![0u8; (h.descriptor_size * SECTOR) as usize];
        self.read_exact_at(at, &mut text, "descriptor")?;
        let d = Descriptor::parse(&text, at)?;
        let total: u64 = d.extents.iter().map(|e| e.sectors).sum();
        if !d.extents.is_empty() && total != self.header.capacity {
            return Err(VmdkError::corrupt(
                "descriptor",
                at,
                format!(
                    "the extent lines add up to {total} sectors but the header's capacity is {} sectors",
                    self.header.capacity
                ),
            ));
        }
        self.descriptor = Some(d);
        Ok(())
    }

    fn read_tables(&mut self) -> Result<(), VmdkError> {
        let h = self.header.clone();
        let gts = h.grain_tables();
        let gd_at = self.gd_offset.saturating_mul(SECTOR);
        let gd_sectors = (gts * 4).div_ceil(SECTOR);
        if self.layout == Layout::GdAtEnd {
            self.expect_metadata_marker(
                self.gd_offset - 1,
                "grain-directory marker",
                "grain directory (type 2)",
                |m| matches!(m, Marker::GrainDirectory { sectors } if sectors >= gd_sectors),
            )?;
        }
        if self.gd_offset == 0 || gd_at.saturating_add(gts * 4) > self.len {
            return Err(VmdkError::corrupt(
                "grain directory",
                gd_at,
                format!(
                    "{gts} entries at sector {} do not fit in the {}-byte file",
                    self.gd_offset, self.len
                ),
            ));
        }
        let mut gd = vec![0u8; (gts * 4) as usize];
        self.read_exact_at(gd_at, &mut gd, "grain directory")?;
        self.directory = gd
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();

        let per_gt = u64::from(h.num_gtes_per_gt);
        let grains = h.grains();
        let file_sectors = self.len / SECTOR;
        let zeroed_gte = h.flags & FLAG_ZEROED_GTE != 0;
        self.grains = grains;
        self.tables = vec![None; gts as usize];
        let mut gt = vec![0u8; (per_gt * 4) as usize];
        for (t, &gde) in self.directory.clone().iter().enumerate() {
            if gde == 0 {
                continue; // the whole span reads as zeros
            }
            let gt_at = u64::from(gde) * SECTOR;
            if self.layout == Layout::GdAtEnd {
                let gt_sectors = (per_gt * 4).div_ceil(SECTOR);
                self.expect_metadata_marker(
                    u64::from(gde) - 1,
                    "grain-table marker",
                    "grain table (type 1)",
                    |m| matches!(m, Marker::GrainTable { sectors } if sectors == gt_sectors),
                )?;
            }
            self.read_exact_at(gt_at, &mut gt, "grain table")?;
            let mut entries = vec![0u32; per_gt as usize].into_boxed_slice();
            for (i, e) in gt.chunks_exact(4).enumerate() {
                let grain = t as u64 * per_gt + i as u64;
                let sector = u32::from_le_bytes(e.try_into().expect("4 bytes"));
                if grain >= grains || sector == 0 || (sector == 1 && zeroed_gte) {
                    continue;
                }
                if u64::from(sector) < h.overhead.min(h.descriptor_offset + h.descriptor_size)
                    || u64::from(sector) >= file_sectors
                {
                    return Err(VmdkError::corrupt(
                        "grain table",
                        gt_at,
                        format!(
                            "entry {i} (grain {grain}) points to sector {sector}, outside the grain area of this {}-byte file",
                            self.len
                        ),
                    ));
                }
                entries[i] = sector;
            }
            self.tables[t] = Some(entries);
        }
        Ok(())
    }

    fn expect_metadata_marker(
        &mut self,
        sector: u64,
        structure: &'static str,
        wanted: &str,
        ok: impl Fn(Marker) -> bool,
    ) -> Result<(), VmdkError> {
        let mut b = [0u8; SECTOR as usize];
        self.read_exact_at(sector * SECTOR, &mut b, structure)?;
        if !ok(Marker::parse(&b)) {
            return Err(VmdkError::corrupt(
                structure,
                sector * SECTOR,
                format!(
                    "expected a {wanted} marker with the table's size, found {}",
                    describe_marker(&b)
                ),
            ));
        }
        Ok(())
    }

    /// The sector grain `index` is stored at, 0 if it reads as zeros.
    fn grain_sector(&self, index: u64) -> u32 {
        let per_gt = u64::from(self.header.num_gtes_per_gt);
        self.tables[(index / per_gt) as usize]
            .as_ref()
            .map_or(0, |t| t[(index % per_gt) as usize])
    }

    /// Reads grain `index` into `out` (one grain long). Returns false, leaving `out` alone, for
    /// a grain that is not allocated (reads as zeros).
    pub fn read_grain(&mut self, index: u64, out: &mut Vec<u8>) -> Result<bool, VmdkError> {
        if index >= self.grains {
            return Err(VmdkError::corrupt(
                "virtual disk",
                index.saturating_mul(self.grain_bytes()),
                format!("grain {index} is beyond the last grain ({})", self.grains),
            ));
        }
        let sector = self.grain_sector(index);
        if sector == 0 {
            return Ok(false);
        }
        let lba = index * self.header.grain_size;
        self.read_grain_at(u64::from(sector), Some(lba), out)?;
        Ok(true)
    }

    /// Reads the grain stored at `sector`; returns the sectors its record takes. With markers,
    /// checks that the marker's lba is `expect_lba` when given.
    fn read_grain_at(
        &mut self,
        sector: u64,
        expect_lba: Option<u64>,
        out: &mut Vec<u8>,
    ) -> Result<u64, VmdkError> {
        let at = sector * SECTOR;
        let grain_bytes = self.grain_bytes() as usize;
        out.resize(grain_bytes, 0);
        if !self.header.is_compressed() {
            self.read_exact_at(at, out, "grain")?;
            return Ok(self.header.grain_size);
        }
        let (data_at, size, lba) = if self.header.has_markers() {
            let mut m = [0u8; GRAIN_MARKER_LEN];
            self.read_exact_at(at, &mut m, "grain marker")?;
            let Marker::Grain { lba, size } = Marker::parse(&m) else {
                return Err(VmdkError::corrupt(
                    "grain marker",
                    at,
                    format!(
                        "the grain table points here but the marker has size 0 ({})",
                        describe_marker(&m)
                    ),
                ));
            };
            (at + GRAIN_MARKER_LEN as u64, size as usize, Some(lba))
        } else {
            // No marker: the zlib stream ends itself; read what a grain can compress to at most.
            let most = (grain_bytes * 2 + 4096) as u64;
            (at, most.min(self.len - at) as usize, None)
        };
        if let Some(lba) = lba {
            self.check_grain_lba(at, lba, expect_lba)?;
            if size > grain_bytes * 2 + 4096 {
                return Err(VmdkError::corrupt(
                    "grain marker",
                    at,
                    format!(
                        "size {size} bytes is more than a {grain_bytes}-byte grain compresses to"
                    ),
                ));
            }
        }
        let mut compressed = std::mem::take(&mut self.compressed);
        compressed.resize(size, 0);
        let read = self.read_exact_at(data_at, &mut compressed, "grain data");
        let result = read.and_then(|()| {
            self.inflate_grain(&compressed, out, at, lba.or(expect_lba).unwrap_or(0))
        });
        self.compressed = compressed;
        let consumed = result?;
        Ok(match lba {
            Some(lba) => Marker::Grain {
                lba,
                size: size as u32,
            }
            .record_sectors(),
            None => consumed.div_ceil(SECTOR),
        })
    }

    fn check_grain_lba(&self, at: u64, lba: u64, expect: Option<u64>) -> Result<(), VmdkError> {
        let gs = self.header.grain_size;
        if !lba.is_multiple_of(gs) {
            return Err(VmdkError::corrupt(
                "grain marker",
                at,
                format!("lba {lba} is not grain-aligned (a grain is {gs} sectors)"),
            ));
        }
        if lba >= self.header.capacity {
            return Err(VmdkError::corrupt(
                "grain marker",
                at,
                format!(
                    "lba {lba} is beyond the capacity of {} sectors",
                    self.header.capacity
                ),
            ));
        }
        if let Some(e) = expect {
            if e != lba {
                return Err(VmdkError::corrupt(
                    "grain marker",
                    at,
                    format!("lba {lba}, but the grain table entry pointing here is for lba {e}"),
                ));
            }
        }
        Ok(())
    }

    /// Inflates one zlib stream into `out`; returns the compressed bytes it used.
    fn inflate_grain(
        &mut self,
        data: &[u8],
        out: &mut [u8],
        at: u64,
        lba: u64,
    ) -> Result<u64, VmdkError> {
        self.inflate.reset(true);
        // One spare byte tells "too long" from "exactly a grain".
        let mut spare = [0u8; 1];
        let status = self
            .inflate
            .decompress(data, out, FlushDecompress::Finish)
            .map_err(|e| {
                VmdkError::corrupt(
                    "grain",
                    at,
                    format!("lba {lba}: the zlib data is corrupt ({e})"),
                )
            })?;
        let produced = self.inflate.total_out() as usize;
        let ended = match status {
            Status::StreamEnd => true,
            _ if produced == out.len() => {
                let before = self.inflate.total_out();
                let used = self.inflate.total_in() as usize;
                let s = self
                    .inflate
                    .decompress(&data[used..], &mut spare, FlushDecompress::Finish)
                    .map_err(|e| {
                        VmdkError::corrupt(
                            "grain",
                            at,
                            format!("lba {lba}: the zlib data is corrupt ({e})"),
                        )
                    })?;
                if self.inflate.total_out() > before {
                    return Err(VmdkError::corrupt(
                        "grain",
                        at,
                        format!(
                            "lba {lba}: decompresses to more than a grain ({} bytes)",
                            out.len()
                        ),
                    ));
                }
                s == Status::StreamEnd
            }
            _ => false,
        };
        if !ended || produced != out.len() {
            return Err(VmdkError::corrupt(
                "grain",
                at,
                format!(
                    "lba {lba}: the zlib data ends after {produced} bytes, a grain is {} bytes",
                    out.len()
                ),
            ));
        }
        Ok(self.inflate.total_in())
    }

    /// Reads virtual-disk bytes at `offset` into `buf`.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), VmdkError> {
        let end = offset.saturating_add(buf.len() as u64);
        if end > self.capacity() {
            return Err(VmdkError::corrupt(
                "virtual disk",
                offset,
                format!(
                    "a read up to byte {end} is beyond the capacity of {} bytes",
                    self.capacity()
                ),
            ));
        }
        let gb = self.grain_bytes();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let grain = pos / gb;
            let within = (pos % gb) as usize;
            let take = (gb as usize - within).min(buf.len() - done);
            if self.cached != Some(grain) {
                let mut cache = std::mem::take(&mut self.cache);
                let allocated = self.read_grain(grain, &mut cache);
                self.cache = cache;
                if !allocated? {
                    self.cache.clear();
                    self.cache.resize(gb as usize, 0);
                }
                self.cached = Some(grain);
            }
            buf[done..done + take].copy_from_slice(&self.cache[within..within + take]);
            done += take;
        }
        Ok(())
    }

    /// Writes the whole virtual disk (capacity bytes) to `w`, zeros included.
    pub fn expand_to<W: Write>(&mut self, mut w: W) -> Result<u64, VmdkError> {
        let capacity = self.capacity();
        let gb = self.grain_bytes();
        let zeros = vec![0u8; gb as usize];
        let mut grain = Vec::new();
        let mut written = 0u64;
        for index in 0..self.grain_count() {
            let take = (capacity - index * gb).min(gb) as usize;
            let bytes = if self.read_grain(index, &mut grain)? {
                &grain[..take]
            } else {
                &zeros[..take]
            };
            w.write_all(bytes).map_err(VmdkError::Sink)?;
            written += take as u64;
        }
        w.flush().map_err(VmdkError::Sink)?;
        Ok(written)
    }

    /// Checks the whole file: with markers, a walk from `overHead` over every grain and metadata
    /// marker to the end-of-stream marker, cross-checked against the grain directory and tables;
    /// every grain is decompressed.
    pub fn check(&mut self) -> Result<VmdkReport, VmdkError> {
        let h = self.header.clone();
        let mut report = VmdkReport {
            capacity: self.capacity(),
            file_size: self.len,
            version: h.version,
            flags: h.flags,
            layout: self.layout,
            create_type: self.desc_value("createType"),
            adapter_type: self.desc_value("ddb.adapterType"),
            hw_version: self.desc_value("ddb.virtualHWVersion"),
            tools_version: self.desc_value("ddb.toolsVersion"),
            cid: self.desc_value("CID"),
            grains: self.allocated_grains(),
            populated_size: self.allocated_grains() * self.grain_bytes(),
            grain_tables: self.directory.iter().filter(|&&d| d != 0).count() as u64,
            markers_walked: false,
            grains_in_order: true,
            has_footer_and_eos: self.footer.is_some(),
        };
        let mut grain = Vec::new();
        if !(h.is_compressed() && h.has_markers()) {
            for index in 0..self.grain_count() {
                self.read_grain(index, &mut grain)?;
            }
            return Ok(report);
        }
        let (in_order, walked_eos) = self.walk_markers(&mut grain)?;
        report.grains_in_order = in_order;
        report.markers_walked = walked_eos;
        Ok(report)
    }

    fn desc_value(&self, key: &str) -> Option<String> {
        self.descriptor
            .as_ref()
            .and_then(|d| d.get(key))
            .map(str::to_string)
    }

    /// The sequential walk; returns (grains in ascending order, reached end-of-stream).
    fn walk_markers(&mut self, grain: &mut Vec<u8>) -> Result<(bool, bool), VmdkError> {
        let h = self.header.clone();
        let gs = h.grain_size;
        let last_sector = self.len / SECTOR - 1;
        let gt_sectors: BTreeSet<u64> = self
            .directory
            .iter()
            .filter(|&&d| d != 0)
            .map(|&d| u64::from(d))
            .collect();
        // Sectors of the grain markers found; the walk only moves forward, so this stays sorted.
        let mut seen: Vec<u32> = Vec::new();
        let mut in_order = true;
        let mut last_lba: Option<u64> = None;
        let mut s = h.overhead;
        let mut b = [0u8; SECTOR as usize];
        loop {
            let at = s * SECTOR;
            if s > last_sector {
                return Err(VmdkError::corrupt(
                    "marker walk",
                    at,
                    format!(
                        "the file ends at byte {} before an end-of-stream marker",
                        self.len
                    ),
                ));
            }
            self.read_exact_at(at, &mut b, "marker")?;
            let marker = Marker::parse(&b);
            match marker {
                Marker::Grain { lba, .. } => {
                    self.check_grain_lba(at, lba, None)?;
                    let index = lba / gs;
                    let listed = u64::from(self.grain_sector(index));
                    if listed != s {
                        return Err(VmdkError::corrupt(
                            "grain marker",
                            at,
                            format!(
                                "lba {lba} (grain {index}) is not where the grain table says: its entry is sector {listed}"
                            ),
                        ));
                    }
                    if last_lba.is_some_and(|l| lba <= l) {
                        in_order = false;
                    }
                    last_lba = Some(lba);
                    seen.push(s as u32);
                    s += self.read_grain_at(s, Some(lba), grain)?;
                }
                Marker::EndOfStream => {
                    if self.layout == Layout::GdAtEnd && s != last_sector {
                        return Err(VmdkError::corrupt(
                            "end-of-stream marker",
                            at,
                            format!(
                                "found before the footer; the stream must end at byte {}",
                                self.len
                            ),
                        ));
                    }
                    break;
                }
                Marker::GrainTable { .. } => {
                    if !gt_sectors.contains(&(s + 1)) {
                        return Err(VmdkError::corrupt(
                            "grain-table marker",
                            at,
                            format!(
                                "no grain directory entry points to its table at sector {}",
                                s + 1
                            ),
                        ));
                    }
                    s += marker.record_sectors();
                }
                Marker::GrainDirectory { .. } => {
                    if s + 1 != self.gd_offset {
                        return Err(VmdkError::corrupt(
                            "grain-directory marker",
                            at,
                            format!(
                                "its directory would be at sector {}, the footer says sector {}",
                                s + 1,
                                self.gd_offset
                            ),
                        ));
                    }
                    s += marker.record_sectors();
                }
                Marker::Footer { .. } => {
                    if self.layout != Layout::GdAtEnd || s + 3 != self.len / SECTOR {
                        return Err(VmdkError::corrupt(
                            "footer marker",
                            at,
                            "a footer is only allowed right before the end-of-stream marker"
                                .to_string(),
                        ));
                    }
                    s += marker.record_sectors();
                }
                Marker::Unknown { kind, .. } => {
                    return Err(VmdkError::corrupt(
                        "marker",
                        at,
                        format!(
                            "type {kind} is not a stream marker (0 end-of-stream, 1 grain table, 2 grain directory, 3 footer)"
                        ),
                    ));
                }
            }
        }
        self.check_every_entry_walked(&seen)?;
        Ok((in_order, true))
    }

    /// Every grain table entry must point at a grain marker the walk found (`seen`, sorted).
    fn check_every_entry_walked(&self, seen: &[u32]) -> Result<(), VmdkError> {
        let per_gt = u64::from(self.header.num_gtes_per_gt);
        for (t, table) in self.tables.iter().enumerate() {
            let Some(table) = table else { continue };
            for (i, &sector) in table.iter().enumerate() {
                if sector != 0 && seen.binary_search(&sector).is_err() {
                    let index = t as u64 * per_gt + i as u64;
                    let table_at = u64::from(self.directory[t]) * SECTOR;
                    return Err(VmdkError::corrupt(
                        "grain table",
                        table_at,
                        format!(
                            "the entry for grain {index} points to sector {sector}, where the marker walk found no grain marker"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
