//! The tar itself: every header's type and format, names, duplicates, the end of the archive,
//! and the member order vSphere needs (descriptor first, manifest second or last).

use super::{Ctx, Severity};
use crate::ova::{HeaderFormat, TarEntry, TarIndex, USTAR_MAX_SIZE};
use std::collections::BTreeMap;

pub(super) fn check_tar(cx: &mut Ctx, index: &TarIndex) {
    check_headers(cx, index);
    check_order(cx, &index.entries);
}

/// Each member's header (type, format, name, duplicates) and the end-of-archive blocks.
fn check_headers(cx: &mut Ctx, index: &TarIndex) {
    let members = index.entries.clone();
    let mut seen = BTreeMap::new();
    for e in &members {
        let at = Some(e.header_offset);
        let m = Some(e.name.as_str());
        if !e.is_regular() {
            let why = match e.type_flag {
                b'x' | b'g' => "vSphere does not support PAX archives; write ustar (or GNU for members of 8 GiB and more)",
                b'L' | b'K' => "a GNU long-name record: OVA member names must fit the 100-byte ustar name field",
                _ => "an OVA holds regular files only",
            };
            cx.add(
                Severity::Error,
                m,
                "tar header",
                at,
                format!(
                    "is a {} (typeflag {:?}): {why}",
                    e.type_name(),
                    e.type_flag as char
                ),
            );
            continue;
        }
        match e.format {
            HeaderFormat::Ustar if e.size_base256 => cx.add(
                Severity::Warning,
                m,
                "tar header",
                at,
                "a ustar header with a base-256 size (a GNU extension): use a GNU header for members of 8 GiB and more",
            ),
            HeaderFormat::Gnu if e.size <= USTAR_MAX_SIZE => cx.add(
                Severity::Note,
                m,
                "tar header",
                at,
                "GNU header where ustar would do (vSphere reads both)",
            ),
            HeaderFormat::V7 | HeaderFormat::Unknown => cx.add(
                Severity::Warning,
                m,
                "tar header",
                at,
                "neither a ustar nor a GNU header (no \"ustar\" magic at header byte 257)",
            ),
            _ => {}
        }
        if e.name.contains('/') {
            cx.add(
                Severity::Error,
                m,
                "tar header",
                at,
                "is inside a directory: OVA members are top-level files",
            );
        }
        if let Some(prev) = seen.insert(e.name.clone(), e.header_offset) {
            cx.add(
                Severity::Error,
                m,
                "tar header",
                at,
                format!("is a second member of that name (the first is at byte {prev})"),
            );
        }
    }
    if index.end_blocks < 2 {
        cx.add(
            Severity::Warning,
            None,
            "end of archive",
            Some(index.end_offset),
            "only one zero block ends the archive (tar writes two)",
        );
    }
}

/// The descriptor first and once; the manifest right after it (or last) and once.
fn check_order(cx: &mut Ctx, members: &[TarEntry]) {
    match members.first() {
        None => cx.add(
            Severity::Error,
            None,
            "tar",
            Some(0),
            "the archive has no members",
        ),
        Some(first) if !first.name.ends_with(".ovf") => cx.add(
            Severity::Error,
            Some(&first.name),
            "member order",
            Some(first.header_offset),
            "is the first member, but the OVF descriptor (.ovf) must come first: vSphere, ovftool and Workstation stop otherwise",
        ),
        Some(_) => {}
    }
    for e in members.iter().skip(1).filter(|e| e.name.ends_with(".ovf")) {
        cx.add(
            Severity::Error,
            Some(&e.name),
            "member order",
            Some(e.header_offset),
            "a second .ovf descriptor (an OVA carries exactly one, first)",
        );
    }
    let mfs: Vec<(usize, &TarEntry)> = members
        .iter()
        .enumerate()
        .filter(|(_, e)| e.name.ends_with(".mf"))
        .collect();
    for (i, e) in &mfs {
        if *i != 1 && *i != members.len() - 1 {
            cx.add(
                Severity::Error,
                Some(&e.name),
                "member order",
                Some(e.header_offset),
                format!(
                    "the manifest is member {} of {}: it goes right after the .ovf (or last)",
                    i + 1,
                    members.len()
                ),
            );
        }
    }
    if mfs.len() > 1 {
        cx.add(
            Severity::Error,
            Some(&mfs[1].1.name),
            "member order",
            Some(mfs[1].1.header_offset),
            "a second manifest",
        );
    }
}
