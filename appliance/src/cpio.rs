//! The cpio "newc" format (`070701`, the one the Linux kernel unpacks as an initramfs), written and
//! read as pure bytes, and the initramfs as the kernel sees it: a concatenation of archives, each
//! plain or gzip-compressed, separated by zero padding.
//!
//! The CentOS build appends a small gzip-compressed archive holding `ks.cfg` to a copy of the
//! installer's initrd (the kernel unpacks every archive in turn, later files on top of earlier
//! ones); the reader exists to check such a patched initrd. Entries carry no owner and a zero
//! mtime, so the same files always give the same bytes. Nothing here touches the file system.

use flate2::bufread::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::fmt;
use std::io::{Read, Write};

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

pub const S_IFMT: u32 = 0o170000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;

/// One member of an archive. `mode` holds the file type bits and the permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioEntry {
    /// Path without a leading `/` (`ks.cfg`, `lib/modules/sd_mod.ko`).
    pub name: String,
    pub mode: u32,
    /// File content, or a symbolic link's target; empty for directories and devices.
    pub data: Vec<u8>,
    /// Major and minor number of a device node.
    pub rdev: (u32, u32),
}

impl CpioEntry {
    pub fn file(name: &str, perm: u32, data: impl Into<Vec<u8>>) -> CpioEntry {
        CpioEntry {
            name: name.to_string(),
            mode: S_IFREG | (perm & 0o7777),
            data: data.into(),
            rdev: (0, 0),
        }
    }

    pub fn dir(name: &str) -> CpioEntry {
        CpioEntry {
            name: name.to_string(),
            mode: S_IFDIR | 0o755,
            data: Vec::new(),
            rdev: (0, 0),
        }
    }

    pub fn symlink(name: &str, target: &str) -> CpioEntry {
        CpioEntry {
            name: name.to_string(),
            mode: S_IFLNK | 0o777,
            data: target.as_bytes().to_vec(),
            rdev: (0, 0),
        }
    }

    pub fn char_device(name: &str, perm: u32, major: u32, minor: u32) -> CpioEntry {
        CpioEntry {
            name: name.to_string(),
            mode: S_IFCHR | (perm & 0o7777),
            data: Vec::new(),
            rdev: (major, minor),
        }
    }

    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
}

/// A malformed archive, with the byte offset (from the start of the decoded archive, or of the
/// whole initramfs for [`read_initramfs`]) where reading stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioError {
    pub offset: u64,
    pub message: String,
}

impl fmt::Display for CpioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte offset {}: {}", self.offset, self.message)
    }
}

impl std::error::Error for CpioError {}

fn err(offset: usize, message: impl Into<String>) -> CpioError {
    CpioError {
        offset: offset as u64,
        message: message.into(),
    }
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// Writes a complete newc archive (with its trailer) of the entries, in order. Inode numbers are
/// assigned from 1 so that the kernel never takes two entries for hard links of each other.
///
/// Panics on a name with a NUL byte or a member larger than 4 GiB (the format's 32-bit fields):
/// callers build entries from their own names and small files.
pub fn write_newc(entries: &[CpioEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        push_entry(&mut out, i as u32 + 1, e);
    }
    push_entry(
        &mut out,
        0,
        &CpioEntry {
            name: TRAILER.to_string(),
            mode: 0,
            data: Vec::new(),
            rdev: (0, 0),
        },
    );
    out
}

fn push_entry(out: &mut Vec<u8>, ino: u32, e: &CpioEntry) {
    assert!(!e.name.contains('\0'), "cpio name {:?} has a NUL", e.name);
    let size = u32::try_from(e.data.len()).expect("a cpio member is at most 4 GiB");
    let nlink = if e.mode & S_IFMT == S_IFDIR { 2 } else { 1 };
    let fields: [u32; 13] = [
        ino,
        e.mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        size,
        0, // devmajor
        0, // devminor
        e.rdev.0,
        e.rdev.1,
        e.name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(MAGIC);
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(e.name.as_bytes());
    out.push(0);
    out.resize(out.len() + pad4(HEADER_LEN + e.name.len() + 1), 0);
    out.extend_from_slice(&e.data);
    out.resize(out.len() + pad4(e.data.len()), 0);
}

/// Compresses bytes as one gzip member with a zero mtime (reproducible output).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

/// The archive to append to an initrd so that the kernel adds the entries to its root: newc,
/// gzip-compressed (the RHEL 6 kernel's safest choice; xz support there is not assured).
pub fn initrd_overlay(entries: &[CpioEntry]) -> Vec<u8> {
    gzip(&write_newc(entries))
}

/// Zero bytes to put after an initrd of `len` bytes before appending another archive: the
/// kernel skips zeros between archives and expects an uncompressed one on a 4-byte boundary.
pub fn padding_before_append(len: u64) -> usize {
    pad4((len % 4) as usize)
}

/// Reads one newc archive from the start of `bytes`: its entries (the trailer excluded) and the
/// number of bytes it took (up to and including the trailer's padding).
pub fn read_newc(bytes: &[u8]) -> Result<(Vec<CpioEntry>, usize), CpioError> {
    let mut pos = 0;
    let mut entries = Vec::new();
    loop {
        let header = bytes
            .get(pos..pos + HEADER_LEN)
            .ok_or_else(|| err(pos, "the archive ends inside a header (no TRAILER!!!)"))?;
        if &header[..6] != MAGIC {
            return Err(err(
                pos,
                format!(
                    "expected the newc magic 070701, found {:?}",
                    String::from_utf8_lossy(&header[..6])
                ),
            ));
        }
        let mut fields = [0u32; 13];
        for (i, f) in fields.iter_mut().enumerate() {
            let start = 6 + i * 8;
            let hex = std::str::from_utf8(&header[start..start + 8])
                .ok()
                .and_then(|s| u32::from_str_radix(s, 16).ok())
                .ok_or_else(|| err(pos + start, "a header field is not 8 hex digits"))?;
            *f = hex;
        }
        let (mode, size, rdev, namesize) = (
            fields[1],
            fields[6] as usize,
            (fields[9], fields[10]),
            fields[11] as usize,
        );
        let name_start = pos + HEADER_LEN;
        if namesize == 0 {
            return Err(err(pos, "an entry has an empty name"));
        }
        let name_bytes = bytes
            .get(name_start..name_start + namesize)
            .ok_or_else(|| err(name_start, "the archive ends inside a name"))?;
        if name_bytes[namesize - 1] != 0 {
            return Err(err(name_start, "a name is not NUL-terminated"));
        }
        let name = std::str::from_utf8(&name_bytes[..namesize - 1])
            .map_err(|_| err(name_start, "a name is not UTF-8"))?
            .to_string();
        let data_start = name_start + namesize + pad4(HEADER_LEN + namesize);
        let data = bytes
            .get(data_start..data_start + size)
            .ok_or_else(|| err(data_start, format!("the archive ends inside {name:?}")))?;
        pos = data_start + size + pad4(size);
        if name == TRAILER {
            return Ok((entries, pos.min(bytes.len())));
        }
        entries.push(CpioEntry {
            name,
            mode,
            data: data.to_vec(),
            rdev,
        });
    }
}

/// How one archive of an initramfs is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveCompression {
    None,
    Gzip,
}

/// One archive of an initramfs as the kernel finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitramfsArchive {
    /// Where the archive starts in the initramfs.
    pub offset: u64,
    /// How many bytes of the initramfs it occupies (compressed size for gzip).
    pub len: u64,
    pub compression: ArchiveCompression,
    pub entries: Vec<CpioEntry>,
}

/// Splits an initramfs into its archives the way the kernel walks it: zero bytes are skipped, a
/// `070701` header starts a plain archive, a gzip member holds one (or more, back to back)
/// archive. Other compressions (xz, lzma, zstd …) are reported with their offset, not guessed.
pub fn read_initramfs(bytes: &[u8]) -> Result<Vec<InitramfsArchive>, CpioError> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest[0] == 0 {
            pos += 1;
            continue;
        }
        if rest.starts_with(MAGIC) {
            let (entries, used) =
                read_newc(rest).map_err(|e| err(pos + e.offset as usize, e.message))?;
            out.push(InitramfsArchive {
                offset: pos as u64,
                len: used as u64,
                compression: ArchiveCompression::None,
                entries,
            });
            pos += used;
        } else if rest.starts_with(&[0x1f, 0x8b]) {
            let mut dec = GzDecoder::new(rest);
            let mut plain = Vec::new();
            dec.read_to_end(&mut plain)
                .map_err(|e| err(pos, format!("a gzip member does not decompress: {e}")))?;
            let used = rest.len() - dec.into_inner().len();
            let mut entries = Vec::new();
            let mut at = 0;
            while at < plain.len() {
                if plain[at] == 0 {
                    at += 1;
                    continue;
                }
                let (more, n) = read_newc(&plain[at..]).map_err(|e| {
                    err(
                        pos,
                        format!(
                            "in the gzip member, at decompressed offset {}: {}",
                            at as u64 + e.offset,
                            e.message
                        ),
                    )
                })?;
                entries.extend(more);
                at += n;
            }
            out.push(InitramfsArchive {
                offset: pos as u64,
                len: used as u64,
                compression: ArchiveCompression::Gzip,
                entries,
            });
            pos += used;
        } else {
            let what = if rest.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
                "an xz-compressed archive, which this reader does not decompress"
            } else if rest.starts_with(&[0x5d, 0, 0]) {
                "an lzma-compressed archive, which this reader does not decompress"
            } else {
                "neither a newc archive nor a gzip member"
            };
            return Err(err(
                pos,
                format!("{what} (starts {:02x?})", &rest[..rest.len().min(6)]),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<CpioEntry> {
        vec![
            CpioEntry::dir("bin"),
            CpioEntry::file("bin/tool", 0o755, b"#!/bin/sh\necho hi\n".to_vec()),
            CpioEntry::symlink("sh", "bin/tool"),
            CpioEntry::char_device("dev/console", 0o600, 5, 1),
            CpioEntry::file("ks.cfg", 0o644, b"x".to_vec()),
            CpioEntry::file("empty", 0o644, Vec::new()),
        ]
    }

    #[test]
    fn an_archive_reads_back_as_written() {
        let bytes = write_newc(&sample());
        assert_eq!(bytes.len() % 4, 0);
        let (entries, used) = read_newc(&bytes).unwrap();
        assert_eq!(entries, sample());
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn the_header_of_a_file_has_the_fields_cpio_writes() {
        // As `cpio -o -H newc` writes it for a 1-byte file named ks.cfg (mtime, ino, uid aside).
        let bytes = write_newc(&[CpioEntry::file("ks.cfg", 0o644, b"x".to_vec())]);
        let header = std::str::from_utf8(&bytes[..HEADER_LEN]).unwrap();
        assert_eq!(&header[..6], "070701");
        assert_eq!(&header[14..22], "000081a4", "mode 0100644");
        assert_eq!(&header[54..62], "00000001", "filesize");
        assert_eq!(&header[94..102], "00000007", "namesize with the NUL");
        assert_eq!(&bytes[HEADER_LEN..HEADER_LEN + 7], b"ks.cfg\0");
        // 110 + 7 = 117 -> padded to 120, then the data byte.
        assert_eq!(bytes[120], b'x');
    }

    #[test]
    fn a_truncated_archive_is_refused_with_an_offset() {
        let bytes = write_newc(&sample());
        let e = read_newc(&bytes[..bytes.len() - 130]).unwrap_err();
        assert!(e.message.contains("ends inside"), "{e}");
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(read_newc(&bad).unwrap_err().offset, 0);
    }

    #[test]
    fn concatenated_archives_split_as_the_kernel_walks_them() {
        let first = gzip(&write_newc(&sample()));
        let mut initrd = first.clone();
        initrd.resize(initrd.len() + padding_before_append(first.len() as u64), 0);
        let plain_at = initrd.len();
        initrd.extend(write_newc(&[CpioEntry::file("a", 0o644, b"1".to_vec())]));
        initrd.extend([0u8; 512]);
        let gz_at = initrd.len();
        initrd.extend(initrd_overlay(&[CpioEntry::file(
            "ks.cfg",
            0o600,
            b"ks".to_vec(),
        )]));
        let parts = read_initramfs(&initrd).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!((parts[0].offset, parts[0].len), (0, first.len() as u64));
        assert_eq!(parts[0].entries, sample());
        assert_eq!(parts[1].offset, plain_at as u64);
        assert_eq!(parts[1].compression, ArchiveCompression::None);
        assert_eq!(parts[2].offset, gz_at as u64);
        assert_eq!(parts[2].compression, ArchiveCompression::Gzip);
        assert_eq!(parts[2].entries[0].data, b"ks");
    }

    #[test]
    fn an_unknown_compression_is_named_with_its_offset() {
        let mut initrd = vec![0u8; 8];
        initrd.extend([0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2]);
        let e = read_initramfs(&initrd).unwrap_err();
        assert_eq!(e.offset, 8);
        assert!(e.message.contains("xz"), "{e}");
    }
}
