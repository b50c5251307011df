//! The on-disk structures of a sparse VMDK extent: the 512-byte sparse extent header (also used
//! as the footer), the stream markers, and the embedded text descriptor. Encoding and decoding
//! only: no I/O, no policy about which layout to write (that is `writer`), no walking (`reader`).
//!
//! Field offsets follow VMware's *Virtual Disk Format 5.0* technote (header p.6-7, stream
//! markers p.12-13); see `docs/vmdk-format.md`.

use super::{AdapterType, VmdkError, GRAIN_SECTORS};
use crate::units::SECTOR;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// "KDMV" read as a little-endian u32.
pub const MAGIC: u32 = 0x564d_444b;
/// The version every stream-optimized writer uses; ESXi refuses older stream files.
pub const VERSION: u32 = 3;
/// Bit 0: the newline-detection bytes are valid.
pub const FLAG_VALID_NEWLINE_DETECT: u32 = 1 << 0;
/// Bit 1: a redundant grain directory exists (we never write one).
pub const FLAG_REDUNDANT_GD: u32 = 1 << 1;
/// Bit 2: a grain table entry of 1 means "this grain reads as zeros".
pub const FLAG_ZEROED_GTE: u32 = 1 << 2;
/// Bit 16: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Bit 17: grains carry a marker (lba + size) and metadata is preceded by markers.
pub const FLAG_MARKERS: u32 = 1 << 17;
/// The flags of a stream-optimized extent as VMware's own writer sets them.
pub const STREAM_FLAGS: u32 = FLAG_VALID_NEWLINE_DETECT | FLAG_COMPRESSED | FLAG_MARKERS;
/// `gdOffset` in the header when the grain directory is at the end (its real place is in the footer).
pub const GD_AT_END: u64 = u64::MAX;
pub const COMPRESSION_DEFLATE: u16 = 1;
/// Grain table entries per grain table: the format fixes 512 (32 MiB of 64 KiB grains).
pub const GTES_PER_GT: u32 = 512;
pub const DESCRIPTOR_OFFSET: u64 = 1;
/// Descriptor sectors reserved: QEMU and VMware both reserve (and QEMU reads) 20.
pub const DESCRIPTOR_SECTORS: u64 = 20;
/// Where the first grain marker goes (and the header's `overHead`).
pub const OVERHEAD_SECTORS: u64 = 128;
const NEWLINE_CHARS: [u8; 4] = *b"\n \r\n";

/// The sparse extent header (sector 0) and, with the real `gd_offset`, the footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseExtentHeader {
    pub version: u32,
    pub flags: u32,
    /// Virtual size in sectors.
    pub capacity: u64,
    /// Sectors per grain.
    pub grain_size: u64,
    pub descriptor_offset: u64,
    pub descriptor_size: u64,
    pub num_gtes_per_gt: u32,
    pub rgd_offset: u64,
    pub gd_offset: u64,
    pub overhead: u64,
    pub unclean_shutdown: u8,
    pub newline_chars: [u8; 4],
    pub compress_algorithm: u16,
}

impl SparseExtentHeader {
    /// The header of a stream-optimized extent of `capacity` sectors with the grain directory
    /// at the end.
    pub fn stream_optimized(capacity: u64) -> Self {
        SparseExtentHeader {
            version: VERSION,
            flags: STREAM_FLAGS,
            capacity,
            grain_size: GRAIN_SECTORS,
            descriptor_offset: DESCRIPTOR_OFFSET,
            descriptor_size: DESCRIPTOR_SECTORS,
            num_gtes_per_gt: GTES_PER_GT,
            rgd_offset: 0,
            gd_offset: GD_AT_END,
            overhead: OVERHEAD_SECTORS,
            unclean_shutdown: 0,
            newline_chars: NEWLINE_CHARS,
            compress_algorithm: COMPRESSION_DEFLATE,
        }
    }

    pub fn is_compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }
    pub fn has_markers(&self) -> bool {
        self.flags & FLAG_MARKERS != 0
    }

    pub fn to_bytes(&self) -> [u8; SECTOR as usize] {
        let mut b = [0u8; SECTOR as usize];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..20].copy_from_slice(&self.capacity.to_le_bytes());
        b[20..28].copy_from_slice(&self.grain_size.to_le_bytes());
        b[28..36].copy_from_slice(&self.descriptor_offset.to_le_bytes());
        b[36..44].copy_from_slice(&self.descriptor_size.to_le_bytes());
        b[44..48].copy_from_slice(&self.num_gtes_per_gt.to_le_bytes());
        b[48..56].copy_from_slice(&self.rgd_offset.to_le_bytes());
        b[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        b[64..72].copy_from_slice(&self.overhead.to_le_bytes());
        b[72] = self.unclean_shutdown;
        b[73..77].copy_from_slice(&self.newline_chars);
        // The header is packed: compressAlgorithm sits at the odd offset 77.
        b[77..79].copy_from_slice(&self.compress_algorithm.to_le_bytes());
        b
    }

    /// Decodes the fields of a sparse extent header (at least 512 bytes) without judging them:
    /// the stream lint reports each odd field itself, and `parse` refuses them.
    pub fn decode(b: &[u8]) -> Self {
        SparseExtentHeader {
            version: u32_at(b, 4),
            flags: u32_at(b, 8),
            capacity: u64_at(b, 12),
            grain_size: u64_at(b, 20),
            descriptor_offset: u64_at(b, 28),
            descriptor_size: u64_at(b, 36),
            num_gtes_per_gt: u32_at(b, 44),
            rgd_offset: u64_at(b, 48),
            gd_offset: u64_at(b, 56),
            overhead: u64_at(b, 64),
            unclean_shutdown: b[72],
            newline_chars: [b[73], b[74], b[75], b[76]],
            compress_algorithm: u16::from_le_bytes([b[77], b[78]]),
        }
    }

    /// Decodes and validates a header (or footer) read at byte `offset`; `structure` names it
    /// in errors ("header", "footer").
    pub fn parse(b: &[u8], offset: u64, structure: &'static str) -> Result<Self, VmdkError> {
        let bad = |problem: String| VmdkError::corrupt(structure, offset, problem);
        if b.len() < SECTOR as usize {
            return Err(bad(format!(
                "only {} bytes, a sparse extent header is 512",
                b.len()
            )));
        }
        let magic = u32_at(b, 0);
        if magic != MAGIC {
            return Err(bad(if &b[0..4] == b"vmdk" {
                "magic is \"vmdk\" (lowercase): the writer did not finish this file".to_string()
            } else {
                format!(
                    "magic is {:02x} {:02x} {:02x} {:02x}, a sparse VMDK starts with \"KDMV\" (4b 44 4d 56)",
                    b[0], b[1], b[2], b[3]
                )
            }));
        }
        let h = SparseExtentHeader::decode(b);
        if !(1..=3).contains(&h.version) {
            return Err(bad(format!(
                "version {} is not a sparse extent version (1, 2 or 3)",
                h.version
            )));
        }
        if h.grain_size == 0 || !h.grain_size.is_power_of_two() || h.grain_size > 2048 {
            return Err(bad(format!(
                "grain size {} sectors is not a power of two between 1 and 2048",
                h.grain_size
            )));
        }
        if h.num_gtes_per_gt == 0 || h.num_gtes_per_gt > GTES_PER_GT {
            return Err(bad(format!(
                "{} entries per grain table; the format allows 1 to 512",
                h.num_gtes_per_gt
            )));
        }
        if h.flags & FLAG_VALID_NEWLINE_DETECT != 0 && h.newline_chars != NEWLINE_CHARS {
            return Err(bad(format!(
                "newline-detection bytes are {:02x?}, expected 0a 20 0d 0a: the file went through a text-mode transfer",
                h.newline_chars
            )));
        }
        if h.is_compressed() && h.compress_algorithm != COMPRESSION_DEFLATE {
            return Err(bad(format!(
                "compression algorithm {} is unknown (1 = deflate)",
                h.compress_algorithm
            )));
        }
        if h.capacity == 0 {
            return Err(bad("capacity is 0 sectors".to_string()));
        }
        // Offsets are u32 sectors in the tables: a capacity beyond what a u32 GD can index is
        // not a file any writer made.
        if h.capacity.div_ceil(h.grain_size) > u64::from(u32::MAX) {
            return Err(bad(format!(
                "capacity {} sectors is beyond what a sparse extent can address",
                h.capacity
            )));
        }
        Ok(h)
    }

    /// Grains of the virtual disk.
    pub fn grains(&self) -> u64 {
        self.capacity.div_ceil(self.grain_size)
    }
    /// Grain tables (and grain directory entries) of the virtual disk.
    pub fn grain_tables(&self) -> u64 {
        self.grains().div_ceil(u64::from(self.num_gtes_per_gt))
    }
}

/// What a 512-byte stream marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// A compressed grain: `lba` in sectors, `size` compressed bytes following the 12-byte marker.
    Grain {
        lba: u64,
        size: u32,
    },
    EndOfStream,
    /// Metadata markers: `sectors` of metadata follow the marker sector.
    GrainTable {
        sectors: u64,
    },
    GrainDirectory {
        sectors: u64,
    },
    Footer {
        sectors: u64,
    },
    Unknown {
        kind: u32,
        sectors: u64,
    },
}

pub const MARKER_EOS: u32 = 0;
pub const MARKER_GT: u32 = 1;
pub const MARKER_GD: u32 = 2;
pub const MARKER_FOOTER: u32 = 3;
/// Bytes of a grain marker before the compressed data.
pub const GRAIN_MARKER_LEN: usize = 12;

impl Marker {
    /// Decodes the first 16 bytes of a marker sector (missing bytes count as zeros).
    pub fn parse(bytes: &[u8]) -> Marker {
        let mut b = [0u8; 16];
        let n = bytes.len().min(16);
        b[..n].copy_from_slice(&bytes[..n]);
        let b = &b[..];
        let value = u64_at(b, 0);
        let size = u32_at(b, 8);
        if size != 0 {
            return Marker::Grain { lba: value, size };
        }
        match u32_at(b, 12) {
            MARKER_EOS => Marker::EndOfStream,
            MARKER_GT => Marker::GrainTable { sectors: value },
            MARKER_GD => Marker::GrainDirectory { sectors: value },
            MARKER_FOOTER => Marker::Footer { sectors: value },
            kind => Marker::Unknown {
                kind,
                sectors: value,
            },
        }
    }

    /// Sectors from this marker to the next one: a grain's 12-byte marker and compressed data
    /// rounded up to whole sectors, or a metadata marker's sector and the metadata after it.
    pub fn record_sectors(self) -> u64 {
        match self {
            Marker::Grain { size, .. } => {
                (GRAIN_MARKER_LEN as u64 + u64::from(size)).div_ceil(SECTOR)
            }
            Marker::EndOfStream => 1,
            Marker::GrainTable { sectors }
            | Marker::GrainDirectory { sectors }
            | Marker::Footer { sectors }
            | Marker::Unknown { sectors, .. } => sectors.saturating_add(1),
        }
    }

    /// A metadata marker sector (`numSectors`, size 0, type, zero padding).
    pub fn metadata_sector(kind: u32, sectors: u64) -> [u8; SECTOR as usize] {
        let mut b = [0u8; SECTOR as usize];
        b[0..8].copy_from_slice(&sectors.to_le_bytes());
        b[12..16].copy_from_slice(&kind.to_le_bytes());
        b
    }

    /// The 12-byte marker in front of a compressed grain.
    pub fn grain_prefix(lba: u64, size: u32) -> [u8; GRAIN_MARKER_LEN] {
        let mut b = [0u8; GRAIN_MARKER_LEN];
        b[0..8].copy_from_slice(&lba.to_le_bytes());
        b[8..12].copy_from_slice(&size.to_le_bytes());
        b
    }
}

/// A marker sector in words, for error messages.
pub(crate) fn describe_marker(b: &[u8]) -> String {
    match Marker::parse(b) {
        Marker::Grain { lba, size } => format!("a grain marker (lba {lba}, {size} bytes)"),
        Marker::EndOfStream if b.iter().all(|&x| x == 0) => "an end-of-stream marker".to_string(),
        Marker::EndOfStream => "a type-0 marker followed by non-zero bytes".to_string(),
        Marker::GrainTable { sectors } => format!("a grain-table marker ({sectors} sectors)"),
        Marker::GrainDirectory { sectors } => {
            format!("a grain-directory marker ({sectors} sectors)")
        }
        Marker::Footer { sectors } => format!("a footer marker ({sectors} sectors)"),
        Marker::Unknown { kind, .. } => format!("a marker of unknown type {kind}"),
    }
}

/// The values of the embedded descriptor this project writes (section 1.3 of the format note).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorValues {
    pub cid: u32,
    pub long_content_id: [u8; 16],
    pub capacity_sectors: u64,
    pub extent_name: String,
    pub adapter: AdapterType,
    pub hw_version: u32,
}

impl DescriptorValues {
    /// The descriptor text, as VMware's open-vmdk writes it.
    pub fn render(&self) -> String {
        let (cylinders, heads, sectors) = geometry(self.capacity_sectors);
        let mut long_id = String::with_capacity(32);
        for byte in self.long_content_id {
            let _ = write!(long_id, "{byte:02x}");
        }
        // A quote in the name would end the string early; the name is informational only.
        let name: String = self
            .extent_name
            .chars()
            .map(|c| if c == '"' || c.is_control() { '_' } else { c })
            .collect();
        format!(
            "# Disk DescriptorFile\n\
             version=1\n\
             encoding=\"UTF-8\"\n\
             CID={cid:08x}\n\
             parentCID=ffffffff\n\
             createType=\"streamOptimized\"\n\
             \n\
             # Extent description\n\
             RW {capacity} SPARSE \"{name}\"\n\
             \n\
             # The Disk Data Base\n\
             #DDB\n\
             \n\
             ddb.longContentID = \"{long_id}\"\n\
             ddb.virtualHWVersion = \"{hw}\"\n\
             ddb.geometry.cylinders = \"{cylinders}\"\n\
             ddb.geometry.heads = \"{heads}\"\n\
             ddb.geometry.sectors = \"{sectors}\"\n\
             ddb.adapterType = \"{adapter}\"\n\
             ddb.toolsInstallType = \"4\"\n\
             ddb.toolsVersion = \"2147483647\"\n",
            cid = self.cid,
            capacity = self.capacity_sectors,
            hw = self.hw_version,
            adapter = self.adapter.as_str(),
        )
    }

    /// The descriptor padded with NULs to its reserved sectors.
    pub fn to_sectors(&self) -> Result<Vec<u8>, VmdkError> {
        let text = self.render();
        let reserved = (DESCRIPTOR_SECTORS * SECTOR) as usize;
        if text.len() >= reserved {
            return Err(VmdkError::corrupt(
                "descriptor",
                DESCRIPTOR_OFFSET * SECTOR,
                format!(
                    "{} bytes do not fit the {reserved} reserved bytes (shorten the extent name)",
                    text.len()
                ),
            ));
        }
        let mut b = text.into_bytes();
        b.resize(reserved, 0);
        Ok(b)
    }
}

/// BIOS geometry for `capacity` sectors: 255 heads, 63 sectors, and as many cylinders as cover
/// the disk (rounded up, as VMware's writer does, so that a tiny disk still has one), capped at 65535.
pub fn geometry(capacity: u64) -> (u64, u32, u32) {
    const HEADS: u32 = 255;
    const SECTORS: u32 = 63;
    let cylinders = capacity.div_ceil(u64::from(HEADS * SECTORS)).min(65535);
    (cylinders, HEADS, SECTORS)
}

/// A parsed embedded descriptor: the `key=value` lines and the extent lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// Header keys (`version`, `CID`, `createType`, ...) and `ddb.*` keys, unquoted.
    pub entries: BTreeMap<String, String>,
    pub extents: Vec<ExtentLine>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    pub access: String,
    pub sectors: u64,
    pub kind: String,
    pub file: String,
}

impl Descriptor {
    /// Parses the descriptor text (the bytes before the first NUL). `offset` is the descriptor's
    /// byte offset in the file, for errors.
    pub fn parse(bytes: &[u8], offset: u64) -> Result<Self, VmdkError> {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let text = std::str::from_utf8(&bytes[..end]).map_err(|e| {
            VmdkError::corrupt(
                "descriptor",
                offset + e.valid_up_to() as u64,
                "is not UTF-8 text".to_string(),
            )
        })?;
        let mut d = Descriptor::default();
        let mut line_offset = offset;
        for raw_line in text.split_inclusive('\n') {
            let here = line_offset;
            line_offset += raw_line.len() as u64;
            let line = raw_line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or("");
            if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
                d.extents.push(parse_extent_line(line, here)?);
            } else if let Some((k, v)) = line.split_once('=') {
                d.entries
                    .insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
            } else {
                return Err(VmdkError::corrupt(
                    "descriptor line",
                    here,
                    format!("{line:?} is neither `key = value` nor an extent line"),
                ));
            }
        }
        Ok(d)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }
}

fn parse_extent_line(line: &str, offset: u64) -> Result<ExtentLine, VmdkError> {
    let bad =
        |p: &str| VmdkError::corrupt("descriptor extent line", offset, format!("{line:?}: {p}"));
    let mut parts = line.splitn(4, char::is_whitespace);
    let access = parts.next().unwrap_or_default().to_string();
    let sectors = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("the size in sectors is not a number"))?;
    let kind = parts
        .next()
        .ok_or_else(|| bad("the extent type is missing"))?
        .to_string();
    let file = parts
        .next()
        .map(|f| f.trim().trim_matches('"').to_string())
        .unwrap_or_default();
    Ok(ExtentLine {
        access,
        sectors,
        kind,
        file,
    })
}

pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_puts_compress_algorithm_at_odd_offset_77() {
        let h = SparseExtentHeader::stream_optimized(8 * 128);
        let b = h.to_bytes();
        assert_eq!(&b[0..4], b"KDMV");
        assert_eq!(u32_at(&b, 8), 0x0003_0001);
        assert_eq!(u64_at(&b, 56), u64::MAX);
        assert_eq!(&b[77..79], &[1, 0]);
        assert!(b[79..].iter().all(|&x| x == 0));
        assert_eq!(SparseExtentHeader::parse(&b, 0, "header").unwrap(), h);
    }

    #[test]
    fn header_with_wrong_magic_names_the_offset() {
        let mut b = SparseExtentHeader::stream_optimized(128).to_bytes();
        b[0] = b'X';
        let e = SparseExtentHeader::parse(&b, 1536, "footer").unwrap_err();
        assert!(
            e.to_string().starts_with("footer at byte 1536: magic"),
            "{e}"
        );
    }

    #[test]
    fn geometry_rounds_cylinders_up_and_caps_them() {
        assert_eq!(geometry(128), (1, 255, 63));
        assert_eq!(geometry(255 * 63 * 10 + 1), (11, 255, 63));
        assert_eq!(geometry(u64::from(u32::MAX)), (65535, 255, 63));
    }

    #[test]
    fn descriptor_renders_and_parses_back() {
        let v = DescriptorValues {
            cid: 0x1234_abcd,
            long_content_id: [0xab; 16],
            capacity_sectors: 4096,
            extent_name: "disk\"1.vmdk".into(),
            adapter: AdapterType::Lsilogic,
            hw_version: 4,
        };
        let sectors = v.to_sectors().unwrap();
        assert_eq!(sectors.len(), 20 * 512);
        let d = Descriptor::parse(&sectors, 512).unwrap();
        assert_eq!(d.get("CID"), Some("1234abcd"));
        assert_eq!(d.get("createType"), Some("streamOptimized"));
        assert_eq!(d.get("ddb.adapterType"), Some("lsilogic"));
        assert_eq!(d.get("ddb.toolsVersion"), Some("2147483647"));
        assert_eq!(d.get("ddb.geometry.cylinders"), Some("1"));
        assert_eq!(d.extents.len(), 1);
        assert_eq!(d.extents[0].sectors, 4096);
        assert_eq!(d.extents[0].file, "disk_1.vmdk");
    }

    #[test]
    fn markers_decode_by_size_then_type() {
        assert_eq!(
            Marker::parse(&Marker::grain_prefix(256, 77)),
            Marker::Grain { lba: 256, size: 77 }
        );
        assert_eq!(
            Marker::parse(&Marker::metadata_sector(MARKER_GT, 4)),
            Marker::GrainTable { sectors: 4 }
        );
        assert_eq!(Marker::parse(&[0u8; 512]), Marker::EndOfStream);
        assert_eq!(
            Marker::parse(&Marker::metadata_sector(9, 1)),
            Marker::Unknown {
                kind: 9,
                sectors: 1
            }
        );
    }
}
