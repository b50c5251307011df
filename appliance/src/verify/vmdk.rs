//! Each VMDK the OVF references: the VMDK module's stream lint (header fields, descriptor,
//! marker walk) with the capacity checked against the OVF's, then the reader's full structure
//! check, then (with a raw directory) the byte-for-byte comparison in `raw`. Offsets are moved
//! from the member into the OVA here.

use super::{raw, Ctx, Severity};
use crate::ova::{MemberReader, TarEntry};
use crate::ovf::OvfDescriptor;
use crate::units::SECTOR;
use crate::vmdk::lint::{self, LintFinding};
use crate::vmdk::{VmdkError, VmdkReader};

pub(super) fn check_disks(cx: &mut Ctx, d: &OvfDescriptor) {
    for disk in &d.disks {
        let Some(href) = &disk.href else { continue };
        let Some(e) = cx.member(href).cloned() else {
            continue;
        };
        if !href.ends_with(".vmdk") {
            continue;
        }
        if check_vmdk_header(cx, &e, disk.capacity_bytes) {
            check_vmdk_structure(cx, &e);
        }
    }
}

/// The stream-disk lints of the VMDK module (header fields, descriptor, the marker walk) and,
/// between them, the capacity against the OVF's; true if the header is a sparse extent header
/// worth the full structure check.
fn check_vmdk_header(cx: &mut Ctx, e: &TarEntry, ovf_capacity: u64) -> bool {
    let mut r = MemberReader::new(cx.file, e);
    let Some(h) = lint::header(&mut r, e.size, &mut |f| lint_finding(cx, e, f)) else {
        return false;
    };
    let capacity = h.capacity.saturating_mul(SECTOR);
    if capacity != ovf_capacity {
        cx.add(
            Severity::Error,
            Some(&e.name),
            "sparse extent header capacity",
            Some(e.data_offset + 12),
            format!("the disk holds {capacity} bytes but the OVF declares {ovf_capacity}: vSphere creates the disk from the OVF's number"),
        );
    }
    lint::descriptor(&mut r, e.size, &h, &mut |f| lint_finding(cx, e, f));
    lint::stream(&mut r, e.size, &h, &mut |f| lint_finding(cx, e, f));
    true
}

/// A finding of the stream lint, with the offset moved from the member into the OVA.
fn lint_finding(cx: &mut Ctx, e: &TarEntry, f: LintFinding) {
    cx.add(
        f.severity,
        Some(&e.name),
        f.structure,
        Some(e.data_offset + f.offset),
        f.message,
    );
}

/// A finding from a VMDK reader error, with the offset moved from the member into the OVA.
pub(super) fn vmdk_finding(cx: &mut Ctx, e: &TarEntry, err: VmdkError) {
    let m = Some(e.name.as_str());
    match err {
        VmdkError::Corrupt {
            structure,
            offset,
            problem,
        } => cx.add(
            Severity::Error,
            m,
            structure,
            Some(e.data_offset + offset),
            format!("{problem} (member byte {offset})"),
        ),
        VmdkError::Read {
            structure,
            offset,
            source,
        } => cx.add(
            Severity::Error,
            m,
            structure,
            Some(e.data_offset + offset),
            format!("cannot be read (member byte {offset}): {source}"),
        ),
        other => cx.add(
            Severity::Error,
            m,
            "VMDK",
            Some(e.data_offset),
            other.to_string(),
        ),
    }
}

/// The full structure check of the VMDK reader (header, footer, descriptor, grain directory and
/// tables, every grain decompressed), on a window over the member; then, with a raw directory,
/// the byte-for-byte comparison.
fn check_vmdk_structure(cx: &mut Ctx, e: &TarEntry) {
    let mut reader = match VmdkReader::open(MemberReader::new(cx.file, e), e.size) {
        Ok(r) => r,
        Err(err) => return vmdk_finding(cx, e, err),
    };
    match reader.check() {
        Ok(report) => {
            cx.report
                .disks_checked
                .push((e.name.clone(), report.capacity));
        }
        Err(err) => return vmdk_finding(cx, e, err),
    }
    raw::compare_with_raw(cx, e, &mut reader);
}
