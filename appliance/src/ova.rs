//! The OVA: a plain tar with the descriptor first, then the manifest, then the disks in
//! References order, as vSphere requires. Headers are ustar, switching to GNU with a base-256
//! size only for a member of 8 GiB or more (ustar's octal size field ends at 8 GiB - 1); never
//! PAX, which vSphere rejects. Metadata is fixed (uid/gid 0, mode 0644, no user names, mtime from
//! `SOURCE_DATE_EPOCH`, else 0) so that the same inputs give the same bytes.
//!
//! Also a tar reader that indexes members with their byte offsets (for `verify-ova`, which must
//! point at the byte where something is wrong) and a windowed reader over one member.
//!
//! The archive is written to a temporary name in the output directory and renamed only when
//! complete. This module does file I/O but never runs a process.

use crate::manifest::hex;
use camino::{Utf8Path, Utf8PathBuf};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

pub const BLOCK: u64 = 512;
/// The largest size a ustar header's 11 octal digits can hold.
pub const USTAR_MAX_SIZE: u64 = (1 << 33) - 1;
/// The mode of every member.
pub const MEMBER_MODE: u32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum OvaError {
    #[error("{name:?} cannot be an OVA member name: {why}")]
    BadName { name: String, why: &'static str },
    #[error("cannot read {path}: {source}")]
    Read {
        path: Utf8PathBuf,
        source: io::Error,
    },
    #[error("{path} changed size while it was being packed (expected {expected} bytes); nothing was written")]
    SourceChanged { path: Utf8PathBuf, expected: u64 },
    #[error("cannot write {path}: {source}")]
    Write {
        path: Utf8PathBuf,
        source: io::Error,
    },
}

/// Checks that `name` is a plain top-level file name a ustar header holds in its name field.
pub fn check_member_name(name: &str) -> Result<(), OvaError> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 100 {
        Some("it is longer than 100 bytes (the ustar name field)")
    } else if !name.is_ascii() || name.bytes().any(|b| b.is_ascii_control()) {
        Some("it is not printable ASCII")
    } else if name.contains('/') || name == "." || name == ".." {
        Some("OVA members are top-level files, without directories")
    } else {
        None
    };
    match why {
        Some(why) => Err(OvaError::BadName {
            name: name.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

/// The tar header of one member: ustar while the size fits its octal field, else GNU with a
/// base-256 size (what GNU tar and vSphere read); deterministic metadata.
pub fn member_header(name: &str, size: u64, mtime: u64) -> Result<tar::Header, OvaError> {
    check_member_name(name)?;
    let mut h = if size <= USTAR_MAX_SIZE {
        tar::Header::new_ustar()
    } else {
        tar::Header::new_gnu()
    };
    h.set_path(name).map_err(|e| OvaError::BadName {
        name: name.to_string(),
        why: if e.kind() == io::ErrorKind::InvalidInput {
            "the tar crate refused it"
        } else {
            "it cannot be stored in a tar header"
        },
    })?;
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(MEMBER_MODE);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_cksum();
    Ok(h)
}

/// Where a member's bytes come from.
pub enum MemberSource<'a> {
    Bytes(&'a [u8]),
    File(&'a Utf8Path),
}

pub struct OvaMember<'a> {
    pub name: String,
    pub source: MemberSource<'a>,
}

/// The finished archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvaWritten {
    pub path: Utf8PathBuf,
    pub size: u64,
    /// SHA-256 of the whole OVA, computed while writing.
    pub sha256: String,
}

struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Yields exactly `remaining` bytes of `inner`, failing if it ends early: the header already
/// promised that size.
struct ExactReader<R: Read> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.remaining as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ended before the size recorded in its tar header",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// The temporary name next to `out` that an output is built under before the rename.
pub fn temp_path_for(out: &Utf8Path, what: &str) -> Utf8PathBuf {
    let dir = out
        .parent()
        .filter(|d| !d.as_str().is_empty())
        .unwrap_or(Utf8Path::new("."));
    dir.join(format!(
        ".{}.{what}-{}",
        out.file_name().unwrap_or("out"),
        std::process::id()
    ))
}

/// Writes the members, in the given order, as a tar at `out` (temporary name, then rename).
/// On any failure `out` is untouched and the temporary file removed.
pub fn write_ova(
    out: &Utf8Path,
    members: &[OvaMember<'_>],
    mtime: u64,
) -> Result<OvaWritten, OvaError> {
    for m in members {
        check_member_name(&m.name)?;
    }
    let tmp = temp_path_for(out, "tmp");
    let result = write_tar(&tmp, members, mtime).and_then(|written| {
        std::fs::rename(&tmp, out).map_err(|source| OvaError::Write {
            path: out.to_owned(),
            source,
        })?;
        Ok(OvaWritten {
            path: out.to_owned(),
            ..written
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_tar(
    tmp: &Utf8Path,
    members: &[OvaMember<'_>],
    mtime: u64,
) -> Result<OvaWritten, OvaError> {
    let werr = |source| OvaError::Write {
        path: tmp.to_owned(),
        source,
    };
    let file = File::create(tmp).map_err(werr)?;
    let sink = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hash: Sha256::new(),
        written: 0,
    };
    let mut builder = tar::Builder::new(sink);
    for m in members {
        match &m.source {
            MemberSource::Bytes(b) => {
                let h = member_header(&m.name, b.len() as u64, mtime)?;
                builder.append(&h, *b).map_err(werr)?;
            }
            MemberSource::File(path) => {
                let rerr = |source| OvaError::Read {
                    path: path.to_path_buf(),
                    source,
                };
                let f = File::open(path).map_err(rerr)?;
                let size = f.metadata().map_err(rerr)?.len();
                let h = member_header(&m.name, size, mtime)?;
                let mut src = ExactReader {
                    inner: f,
                    remaining: size,
                };
                if let Err(e) = builder.append(&h, &mut src) {
                    return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                        OvaError::SourceChanged {
                            path: path.to_path_buf(),
                            expected: size,
                        }
                    } else {
                        werr(e)
                    });
                }
                let now = std::fs::metadata(path).map_err(rerr)?.len();
                if now != size {
                    return Err(OvaError::SourceChanged {
                        path: path.to_path_buf(),
                        expected: size,
                    });
                }
            }
        }
    }
    let sink = builder.into_inner().map_err(werr)?;
    let HashingWriter {
        inner,
        hash,
        written,
    } = sink;
    let file = inner.into_inner().map_err(|e| werr(e.into_error()))?;
    file.sync_all().map_err(werr)?;
    Ok(OvaWritten {
        path: tmp.to_owned(),
        size: written,
        sha256: hex(&hash.finalize()),
    })
}

// ---------------------------------------------------------------------------------------------
// Reading

/// The header flavour of a tar member, from its magic and version fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderFormat {
    /// `ustar\0` + `00` (POSIX 1003.1-1988).
    Ustar,
    /// `ustar ` + ` \0` (GNU tar).
    Gnu,
    /// No magic (pre-POSIX tar).
    V7,
    Unknown,
}

/// One member as it sits in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    pub name: String,
    pub header_offset: u64,
    pub data_offset: u64,
    pub size: u64,
    pub format: HeaderFormat,
    /// The typeflag byte (`b'0'` regular, `b'x'`/`b'g'` PAX, `b'L'` GNU long name, …).
    pub type_flag: u8,
    /// Whether the size field is base-256 (GNU extension) rather than octal.
    pub size_base256: bool,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

impl TarEntry {
    pub fn is_regular(&self) -> bool {
        matches!(self.type_flag, b'0' | 0)
    }
    /// What the typeflag means, for messages.
    pub fn type_name(&self) -> &'static str {
        match self.type_flag {
            b'0' | 0 => "regular file",
            b'1' => "hard link",
            b'2' => "symbolic link",
            b'3' | b'4' => "device node",
            b'5' => "directory",
            b'6' => "FIFO",
            b'x' => "PAX extended header",
            b'g' => "PAX global header",
            b'L' => "GNU long-name header",
            b'K' => "GNU long-link header",
            b'S' => "GNU sparse file",
            _ => "unknown member type",
        }
    }
}

/// The members of a tar and how it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarIndex {
    pub entries: Vec<TarEntry>,
    /// Offset of the first end-of-archive (all-zero) block.
    pub end_offset: u64,
    /// How many zero blocks follow the last member (2 expected; 1 is tolerated by readers).
    pub end_blocks: u32,
}

/// A tar that cannot be indexed: the member (if known), the byte offset, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}tar byte {offset}: {message}", .member.as_ref().map(|m| format!("member {m}, ")).unwrap_or_default())]
pub struct TarError {
    pub member: Option<String>,
    pub offset: u64,
    pub message: String,
}

fn octal(field: &[u8]) -> Option<u64> {
    let s: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    let s = std::str::from_utf8(&s).ok()?;
    u64::from_str_radix(s, 8).ok()
}

fn numeric(field: &[u8]) -> Option<(u64, bool)> {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        Some((v, true))
    } else {
        octal(field).map(|v| (v, false))
    }
}

fn c_string(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Indexes a tar of `len` bytes: every header, with the offsets of header and data. Fails on a
/// bad header checksum or an archive cut short, naming the member and the byte offset.
pub fn read_index(r: &mut (impl Read + Seek), len: u64) -> Result<TarIndex, TarError> {
    let mut entries = Vec::new();
    let mut off = 0u64;
    let mut block = [0u8; BLOCK as usize];
    let mut read_block = |at: u64, block: &mut [u8; 512]| -> io::Result<bool> {
        if at + BLOCK > len {
            return Ok(false);
        }
        r.seek(SeekFrom::Start(at))?;
        r.read_exact(block)?;
        Ok(true)
    };
    let io_err = |at: u64, e: io::Error| TarError {
        member: None,
        offset: at,
        message: format!("cannot read: {e}"),
    };
    loop {
        let after = entries.last().map(|e: &TarEntry| e.name.clone());
        if !read_block(off, &mut block).map_err(|e| io_err(off, e))? {
            return Err(TarError {
                member: None,
                offset: off,
                message: match after {
                    Some(prev) => format!("the archive ends after member {prev} without the end-of-archive blocks (truncated)"),
                    None if len == 0 => "the file is empty".to_string(),
                    None => "the file is shorter than one tar header (truncated or not a tar)".to_string(),
                },
            });
        }
        if block.iter().all(|&b| b == 0) {
            let mut end_blocks = 1;
            if read_block(off + BLOCK, &mut block).map_err(|e| io_err(off + BLOCK, e))?
                && block.iter().all(|&b| b == 0)
            {
                end_blocks = 2;
            }
            return Ok(TarIndex {
                entries,
                end_offset: off,
                end_blocks,
            });
        }
        let name_raw = c_string(&block[0..100]);
        let member = Some(name_raw.clone());
        let bad = |message: String| TarError {
            member: member.clone(),
            offset: off,
            message,
        };
        let recorded = octal(&block[148..156]).ok_or_else(|| {
            bad("the header checksum field is not octal (not a tar header)".into())
        })?;
        let computed: u64 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        if recorded != computed {
            return Err(bad(format!(
                "header checksum {recorded} does not match the header's bytes ({computed}): corrupt or not a tar header"
            )));
        }
        let format = match (&block[257..263], &block[263..265]) {
            (b"ustar\0", b"00") => HeaderFormat::Ustar,
            (b"ustar ", b" \0") => HeaderFormat::Gnu,
            (m, v) if m.iter().chain(v).all(|&b| b == 0) => HeaderFormat::V7,
            _ => HeaderFormat::Unknown,
        };
        let name = if format == HeaderFormat::Ustar && block[345] != 0 {
            format!("{}/{}", c_string(&block[345..500]), name_raw)
        } else {
            name_raw
        };
        let (size, size_base256) = numeric(&block[124..136])
            .ok_or_else(|| bad("the size field is not a number".into()))?;
        let entry = TarEntry {
            name,
            header_offset: off,
            data_offset: off + BLOCK,
            size,
            format,
            type_flag: block[156],
            size_base256,
            mode: octal(&block[100..108]).unwrap_or(0) as u32,
            uid: numeric(&block[108..116]).map_or(0, |v| v.0),
            gid: numeric(&block[116..124]).map_or(0, |v| v.0),
            mtime: numeric(&block[136..148]).map_or(0, |v| v.0),
        };
        let padded = size.div_ceil(BLOCK) * BLOCK;
        let next = entry
            .data_offset
            .checked_add(padded)
            .ok_or_else(|| bad("the size field overflows".into()))?;
        if entry.data_offset + size > len {
            return Err(TarError {
                member: Some(entry.name.clone()),
                offset: entry.data_offset,
                message: format!(
                    "the header declares {size} bytes but only {} remain in the file (truncated)",
                    len.saturating_sub(entry.data_offset)
                ),
            });
        }
        entries.push(entry);
        off = next;
    }
}

/// A read-only window onto one member's bytes (positioned reads, so several can share a file).
pub struct MemberReader<'f> {
    file: &'f File,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'f> MemberReader<'f> {
    pub fn new(file: &'f File, entry: &TarEntry) -> MemberReader<'f> {
        MemberReader {
            file,
            start: entry.data_offset,
            len: entry.size,
            pos: 0,
        }
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Read for MemberReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let want = buf.len().min((self.len - self.pos) as usize);
        let n = self.file.read_at(&mut buf[..want], self.start + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for MemberReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the member",
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Packing the appliance

/// What varies between two packs of the same disks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackOptions {
    /// Member mtime (`SOURCE_DATE_EPOCH`); 0 (1970-01-01) when unset, so that the OVA depends
    /// only on its inputs.
    pub source_date_epoch: Option<u64>,
    /// Names the build in the ProductSection and AnnotationSection.
    pub build_id: String,
}

/// What `pack` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvaSummary {
    pub path: Utf8PathBuf,
    pub size: u64,
    pub sha256: String,
    pub manifest_algorithm: crate::definition::DigestAlgorithm,
    /// (member name, bytes) in tar order.
    pub members: Vec<(String, u64)>,
    pub disks: Vec<(crate::ovf::DiskRole, crate::vmdk::VmdkSummary)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("the {0} disk is given twice: give each of os and retention once")]
    DuplicateDisk(crate::ovf::DiskRole),
    #[error("no {0} disk given: the OVA needs a raw image for each of os and retention")]
    MissingDisk(crate::ovf::DiskRole),
    #[error("cannot read the raw {role} disk {path}: {source}")]
    Raw {
        role: crate::ovf::DiskRole,
        path: Utf8PathBuf,
        source: io::Error,
    },
    #[error("the raw {role} disk {path} is {size} bytes but the definition's {field} is {expected} bytes: build the image from this definition (or fix {field})")]
    RawSize {
        role: crate::ovf::DiskRole,
        path: Utf8PathBuf,
        size: u64,
        field: &'static str,
        expected: u64,
    },
    #[error("cannot create the work directory {path}: {source}")]
    WorkDir {
        path: Utf8PathBuf,
        source: io::Error,
    },
    #[error("{role} disk: {source}")]
    Vmdk {
        role: crate::ovf::DiskRole,
        source: crate::vmdk::VmdkError,
    },
    #[error(transparent)]
    Ovf(#[from] crate::ovf::OvfWriteError),
    #[error(transparent)]
    Ova(#[from] OvaError),
}

/// Packs the appliance: each raw disk becomes a streamOptimized VMDK in a work directory next to
/// `out`, the OVF gets their exact sizes, the manifest hashes the final bytes, and the tar is
/// written under a temporary name and renamed to `out` only when complete. The work directory is
/// removed whatever happens.
pub fn pack(
    def: &crate::Definition,
    disks: &[(crate::ovf::DiskRole, &Utf8Path)],
    out: &Utf8Path,
    opts: &PackOptions,
) -> Result<OvaSummary, PackError> {
    use crate::ovf::DiskRole;
    let mut raws = Vec::new();
    for role in DiskRole::ALL {
        let given: Vec<&Utf8Path> = disks
            .iter()
            .filter(|(r, _)| *r == role)
            .map(|(_, p)| *p)
            .collect();
        let path = match given.as_slice() {
            [p] => *p,
            [] => return Err(PackError::MissingDisk(role)),
            _ => return Err(PackError::DuplicateDisk(role)),
        };
        let size = std::fs::metadata(path)
            .map_err(|source| PackError::Raw {
                role,
                path: path.to_owned(),
                source,
            })?
            .len();
        if size != role.capacity(def) {
            return Err(PackError::RawSize {
                role,
                path: path.to_owned(),
                size,
                field: match role {
                    DiskRole::Os => "os_disk.size",
                    DiskRole::Retention => "retention_disk.size",
                },
                expected: role.capacity(def),
            });
        }
        raws.push((role, path));
    }
    let work = temp_path_for(out, "parts");
    std::fs::create_dir_all(&work).map_err(|source| PackError::WorkDir {
        path: work.clone(),
        source,
    })?;
    let result = pack_in(def, &raws, &work, out, opts);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn pack_in(
    def: &crate::Definition,
    raws: &[(crate::ovf::DiskRole, &Utf8Path)],
    work: &Utf8Path,
    out: &Utf8Path,
    opts: &PackOptions,
) -> Result<OvaSummary, PackError> {
    use crate::manifest::{digest_bytes, digest_reader, Manifest};
    use crate::ovf::{render, BuildInfo, DiskFile};
    use crate::vmdk::{write_stream_optimized, VmdkOptions};
    let vmdk_opts = VmdkOptions::for_definition(def);
    let mut files = Vec::new();
    let mut summaries = Vec::new();
    let mut vmdks = Vec::new();
    for &(role, raw) in raws {
        let vmdk = work.join(role.file_name(def));
        let s = write_stream_optimized(raw, &vmdk, &vmdk_opts)
            .map_err(|source| PackError::Vmdk { role, source })?;
        files.push(DiskFile {
            role,
            file_size: s.file_size,
            capacity: s.capacity,
            populated_size: s.populated_size,
        });
        summaries.push((role, s));
        vmdks.push((role.file_name(def), vmdk));
    }
    let ovf = render(
        def,
        &files,
        &BuildInfo {
            build_id: opts.build_id.clone(),
        },
    )?;
    let ovf_name = format!("{}.ovf", def.appliance.name);
    let mf_name = format!("{}.mf", def.appliance.name);
    let alg = def.manifest_algorithm();
    let mut manifest = Manifest::new(alg);
    manifest.push(&ovf_name, digest_bytes(alg, ovf.as_bytes()));
    for (name, path) in &vmdks {
        let f = File::open(path).map_err(|source| OvaError::Read {
            path: path.clone(),
            source,
        })?;
        let (digest, _) = digest_reader(alg, f).map_err(|source| OvaError::Read {
            path: path.clone(),
            source,
        })?;
        manifest.push(name, digest);
    }
    let mf = manifest.render();
    let mut members = vec![
        OvaMember {
            name: ovf_name,
            source: MemberSource::Bytes(ovf.as_bytes()),
        },
        OvaMember {
            name: mf_name,
            source: MemberSource::Bytes(mf.as_bytes()),
        },
    ];
    for (name, path) in &vmdks {
        members.push(OvaMember {
            name: name.clone(),
            source: MemberSource::File(path),
        });
    }
    let member_sizes = members
        .iter()
        .map(|m| {
            let size = match &m.source {
                MemberSource::Bytes(b) => b.len() as u64,
                MemberSource::File(_) => files
                    .iter()
                    .find(|f| f.role.file_name(def) == m.name)
                    .map_or(0, |f| f.file_size),
            };
            (m.name.clone(), size)
        })
        .collect();
    let written = write_ova(out, &members, opts.source_date_epoch.unwrap_or(0))?;
    Ok(OvaSummary {
        path: written.path,
        size: written.size,
        sha256: written.sha256,
        manifest_algorithm: alg,
        members: member_sizes,
        disks: summaries,
    })
}
