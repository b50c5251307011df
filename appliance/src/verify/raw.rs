//! The byte-for-byte check: each disk expanded through the VMDK reader and compared with the
//! raw image of the same stem in the raw directory, holes of the raw image read as zeros
//! without reading them.

use super::vmdk::vmdk_finding;
use super::{Ctx, Severity};
use crate::ova::{MemberReader, TarEntry};
use crate::vmdk::VmdkReader;
use camino::{Utf8Path, Utf8PathBuf};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

/// With a raw directory, expands the disk into a comparison with its raw image.
pub(super) fn compare_with_raw(cx: &mut Ctx, e: &TarEntry, reader: &mut VmdkReader<MemberReader>) {
    let m = Some(e.name.as_str());
    let Some(dir) = cx.opts.raw_dir.clone() else {
        return;
    };
    let Some(raw) = find_raw_image(cx, e, &dir) else {
        return;
    };
    let raw_file = match File::open(&raw) {
        Ok(f) => f,
        Err(err) => {
            cx.add(
                Severity::Error,
                m,
                "raw image",
                None,
                format!("cannot open {raw}: {err}"),
            );
            return;
        }
    };
    let raw_len = raw_file.metadata().map(|md| md.len()).unwrap_or(0);
    let mut cmp = RawComparer::new(raw_file, raw_len);
    let grain_bytes = reader.grain_bytes().max(1);
    let expanded = match reader.expand_to(&mut cmp) {
        Ok(n) => n,
        Err(_) if cmp.mismatch.is_some() => cmp.pos,
        Err(err) => return vmdk_finding(cx, e, err),
    };
    if let Some(at) = cmp.mismatch {
        cx.add(
            Severity::Error,
            m,
            "virtual disk content",
            Some(e.data_offset),
            format!(
                "differs from {raw} at disk byte {at} (grain {})",
                at / grain_bytes
            ),
        );
    } else if expanded != raw_len {
        cx.add(
            Severity::Error,
            m,
            "virtual disk content",
            Some(e.data_offset),
            format!("expands to {expanded} bytes but {raw} has {raw_len}"),
        );
    } else {
        cx.report.disks_compared.push((e.name.clone(), raw));
    }
}

/// The one file of the disk's stem in `dir`, or a finding why there is none.
fn find_raw_image(cx: &mut Ctx, e: &TarEntry, dir: &Utf8Path) -> Option<Utf8PathBuf> {
    let m = Some(e.name.as_str());
    let stem = e.name.trim_end_matches(".vmdk");
    let candidates: Vec<Utf8PathBuf> = match dir.read_dir_utf8() {
        Ok(rd) => rd
            .filter_map(|d| d.ok())
            .map(|d| d.into_path())
            .filter(|p| p.file_stem() == Some(stem) && p.is_file())
            .collect(),
        Err(err) => {
            cx.add(
                Severity::Error,
                m,
                "raw image",
                None,
                format!("cannot list {dir}: {err}"),
            );
            return None;
        }
    };
    match candidates.as_slice() {
        [one] => Some(one.clone()),
        [] => {
            cx.add(
                Severity::Error,
                m,
                "raw image",
                None,
                format!("{dir} has no raw image named {stem}.* to compare with"),
            );
            None
        }
        many => {
            cx.add(
                Severity::Error,
                m,
                "raw image",
                None,
                format!("{dir} has several files named {stem}.*: {many:?}"),
            );
            None
        }
    }
}

/// A sink that compares what it is given with a raw image and stops at the first difference.
/// Where the raw image has a hole (SEEK_DATA), the expected bytes are zeros and nothing is read:
/// a 64 GiB retention disk compares in seconds.
struct RawComparer {
    raw: File,
    len: u64,
    pos: u64,
    mismatch: Option<u64>,
    buf: Vec<u8>,
    /// A known hole `[start, end)` of the raw image.
    hole: (u64, u64),
}

static ZEROS: [u8; 1 << 16] = [0; 1 << 16];

impl RawComparer {
    fn new(raw: File, len: u64) -> RawComparer {
        RawComparer {
            raw,
            len,
            pos: 0,
            mismatch: None,
            buf: Vec::new(),
            hole: (0, 0),
        }
    }

    /// Whether `[pos, end)` lies in a hole of the raw image.
    fn in_hole(&mut self, pos: u64, end: u64) -> bool {
        if end > self.len {
            return false;
        }
        if !(self.hole.0 <= pos && end <= self.hole.1) {
            let Ok(off) = libc::off_t::try_from(pos) else {
                return false;
            };
            // SAFETY: lseek on a descriptor this struct owns; only positioned reads use it.
            let data = unsafe { libc::lseek(self.raw.as_raw_fd(), off, libc::SEEK_DATA) };
            self.hole = if data >= 0 {
                (pos, data as u64)
            } else if io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
                (pos, self.len)
            } else {
                (0, 0)
            };
        }
        self.hole.0 <= pos && end <= self.hole.1
    }
}

impl io::Write for RawComparer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let end = self.pos + data.len() as u64;
        let (same, got) = if self.in_hole(self.pos, end) {
            let zero = data.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()]);
            if zero {
                (true, data.len())
            } else {
                self.buf.clear();
                self.buf.resize(data.len(), 0);
                (false, data.len())
            }
        } else {
            self.buf.resize(data.len(), 0);
            let mut got = 0;
            while got < data.len() {
                let n = self
                    .raw
                    .read_at(&mut self.buf[got..], self.pos + got as u64)?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            (got == data.len() && self.buf[..got] == data[..], got)
        };
        if !same {
            let i = (0..data.len())
                .find(|&i| i >= got || self.buf[i] != data[i])
                .unwrap_or(data.len());
            self.mismatch = Some(self.pos + i as u64);
            self.pos += i as u64;
            return Err(io::Error::other("content differs from the raw image"));
        }
        self.pos = end;
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
