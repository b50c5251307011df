//! The manifest: its syntax, its algorithm for the vSphere target, every digest against the
//! member it names, and members it leaves out.

use super::{Ctx, Severity, MAX_TEXT_MEMBER};
use crate::definition::ManifestRisk;
use crate::manifest::{digest_reader, Manifest};
use crate::ova::{MemberReader, TarEntry};
use crate::ovf::OvfDescriptor;

pub(super) fn check_manifest(cx: &mut Ctx, descriptor: Option<&OvfDescriptor>) {
    let Some(e) = cx
        .report
        .members
        .iter()
        .find(|e| e.name.ends_with(".mf"))
        .cloned()
    else {
        cx.add(
            Severity::Warning,
            None,
            "manifest",
            None,
            "the OVA has no manifest (.mf): vSphere imports it, but nothing checks the transfer",
        );
        return;
    };
    let m = Some(e.name.as_str());
    let bytes = match cx.read_member(&e, MAX_TEXT_MEMBER) {
        Ok(b) => b,
        Err(why) => {
            cx.add(Severity::Error, m, "manifest", Some(e.data_offset), why);
            return;
        }
    };
    let manifest = match Manifest::parse(&bytes) {
        Ok(mf) => mf,
        Err(err) => {
            cx.add(
                Severity::Error,
                m,
                format!("manifest line {}", err.line),
                Some(e.data_offset + err.offset as u64),
                err.message,
            );
            return;
        }
    };
    if let Some((risk, why)) = cx
        .opts
        .compat
        .manifest_algorithm_problem(manifest.algorithm)
    {
        let sev = match risk {
            ManifestRisk::FailsImport => Severity::Error,
            ManifestRisk::Imports => Severity::Warning,
        };
        cx.add(
            sev,
            m,
            "manifest line 1",
            Some(e.data_offset),
            format!(
                "{} for a vSphere {} target: {why}",
                manifest.algorithm.manifest_name(),
                cx.opts.compat.as_str()
            ),
        );
    }
    check_digests(cx, &e, &manifest);
    check_unlisted(cx, &e, &manifest, descriptor);
    cx.report.manifest = Some(manifest);
}

/// Every line's digest against the member it names.
fn check_digests(cx: &mut Ctx, e: &TarEntry, manifest: &Manifest) {
    let m = Some(e.name.as_str());
    for (i, entry) in manifest.entries.iter().enumerate() {
        let structure = format!("manifest line {}", i + 1);
        let at = Some(e.data_offset + entry.offset as u64);
        let Some(target) = cx.member(&entry.file).cloned() else {
            cx.add(
                Severity::Error,
                m,
                structure,
                at,
                format!("lists {}, which is not in the OVA", entry.file),
            );
            continue;
        };
        match digest_reader(manifest.algorithm, MemberReader::new(cx.file, &target)) {
            Ok((digest, _)) if digest == entry.digest => {}
            Ok((digest, _)) => cx.add(
                Severity::Error,
                Some(&target.name),
                format!("data (digest from {} {structure})", e.name),
                Some(target.data_offset),
                format!(
                    "{} digest is {digest}, the manifest says {}: the member is corrupt or the manifest stale",
                    manifest.algorithm.manifest_name(),
                    entry.digest
                ),
            ),
            Err(err) => cx.add(
                Severity::Error,
                Some(&target.name),
                "data",
                Some(target.data_offset),
                format!("cannot be read: {err}"),
            ),
        }
    }
}

/// Members the manifest does not list: an error for those the OVF needs.
fn check_unlisted(
    cx: &mut Ctx,
    e: &TarEntry,
    manifest: &Manifest,
    descriptor: Option<&OvfDescriptor>,
) {
    let unlisted: Vec<TarEntry> = cx
        .report
        .members
        .iter()
        .filter(|t| {
            !t.name.ends_with(".mf")
                && !t.name.ends_with(".cert")
                && manifest.entry(&t.name).is_none()
        })
        .cloned()
        .collect();
    for t in unlisted {
        let referenced = descriptor.is_some_and(|d| d.files.iter().any(|f| f.href == t.name))
            || t.name.ends_with(".ovf");
        cx.add(
            if referenced {
                Severity::Error
            } else {
                Severity::Warning
            },
            Some(&t.name),
            "tar header",
            Some(t.header_offset),
            format!("is not listed in the manifest {}", e.name),
        );
    }
}
