//! `verify-ova` as a library: reads an OVA (from any producer) the way vSphere will and reports
//! every problem that would fail or degrade the import, each naming the member, the structure
//! and the byte offset in the OVA.
//!
//! Checks: the tar itself (headers, checksums, order, PAX/GNU long names, truncation), the
//! manifest's syntax and every digest, the OVF (well-formed, files present with the declared
//! size, disks/controllers/NIC consistent, hardware family and guest id known to the vSphere
//! compatibility target, ExtraConfig keys, firmware flips), each VMDK (header version, flags,
//! descriptor, end-of-stream marker and the full structure walk of the VMDK reader) and,
//! optionally, that each disk expands byte-for-byte to a given raw image.
//!
//! Schema validation needs an external validator (`xmllint`) and is done by the tests; this
//! module never runs a process.
//!
//! One submodule per part of the package: `tar` (headers and member order), `manifest`,
//! `descriptor` (the OVF against the package and the vSphere target), `vmdk` (the VMDK module's
//! stream lint and reader on each disk), `raw` (the byte-for-byte comparison) and `findings`.

mod descriptor;
mod findings;
mod manifest;
mod raw;
mod tar;
mod vmdk;

pub use crate::finding::Severity;
pub use findings::Finding;

use crate::definition::VsphereCompat;
use crate::manifest::Manifest;
use crate::ova::{read_index, MemberReader, TarEntry};
use crate::ovf::OvfDescriptor;
use camino::{Utf8Path, Utf8PathBuf};
use std::fs::File;
use std::io::{self, Read};

/// What to check against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyOptions {
    /// The oldest vSphere release that must import the OVA.
    pub compat: VsphereCompat,
    /// A directory with the raw images each disk must expand to (`<vmdk stem>.<any extension>`).
    pub raw_dir: Option<Utf8PathBuf>,
}

/// Everything `verify_ova` found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub findings: Vec<Finding>,
    pub members: Vec<TarEntry>,
    pub descriptor: Option<OvfDescriptor>,
    pub manifest: Option<Manifest>,
    /// Disks whose VMDK structure was walked, with their capacity in bytes.
    pub disks_checked: Vec<(String, u64)>,
    /// Disks compared byte-for-byte with a raw image.
    pub disks_compared: Vec<(String, Utf8PathBuf)>,
}

impl VerifyReport {
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }
    pub fn is_ok(&self) -> bool {
        self.errors().next().is_none()
    }
}

/// The OVA could not be opened at all (every other problem is a finding).
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct VerifyIoError {
    pub path: Utf8PathBuf,
    pub source: io::Error,
}

/// The report being built, the OVA it is about and what to check it against.
struct Ctx<'a> {
    report: VerifyReport,
    file: &'a File,
    opts: &'a VerifyOptions,
}

impl Ctx<'_> {
    fn add(
        &mut self,
        severity: Severity,
        member: Option<&str>,
        structure: impl Into<String>,
        offset: Option<u64>,
        message: impl Into<String>,
    ) {
        self.report.findings.push(Finding {
            severity,
            member: member.map(str::to_string),
            structure: structure.into(),
            offset,
            message: message.into(),
        });
    }
    fn member(&self, name: &str) -> Option<&TarEntry> {
        self.report.members.iter().find(|e| e.name == name)
    }
    fn read_member(&self, e: &TarEntry, limit: u64) -> Result<Vec<u8>, String> {
        if e.size > limit {
            return Err(format!(
                "is {} bytes, more than the {limit} a descriptor or manifest can plausibly be",
                e.size
            ));
        }
        let mut buf = Vec::with_capacity(e.size as usize);
        MemberReader::new(self.file, e)
            .read_to_end(&mut buf)
            .map_err(|err| format!("cannot be read: {err}"))?;
        Ok(buf)
    }
}

/// The most a descriptor or manifest can plausibly be; larger members are not read into memory.
const MAX_TEXT_MEMBER: u64 = 16 << 20;

/// Verifies the OVA at `path`.
pub fn verify_ova(path: &Utf8Path, opts: &VerifyOptions) -> Result<VerifyReport, VerifyIoError> {
    let ioe = |source| VerifyIoError {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(ioe)?;
    let len = file.metadata().map_err(ioe)?.len();
    let index = match read_index(&mut file, len) {
        Ok(i) => i,
        Err(e) => {
            let mut report = VerifyReport::default();
            report.findings.push(Finding {
                severity: Severity::Error,
                member: e.member,
                structure: "tar header".into(),
                offset: Some(e.offset),
                message: e.message,
            });
            return Ok(report);
        }
    };
    let mut cx = Ctx {
        report: VerifyReport {
            members: index.entries.clone(),
            ..VerifyReport::default()
        },
        file: &file,
        opts,
    };
    tar::check_tar(&mut cx, &index);
    // Even out of place, the descriptor is read so that everything else is checked too.
    let ovf = cx
        .report
        .members
        .iter()
        .find(|e| e.name.ends_with(".ovf"))
        .cloned();
    let descriptor = ovf
        .as_ref()
        .and_then(|e| descriptor::parse_descriptor(&mut cx, e));
    if ovf.is_none() && !cx.report.members.is_empty() {
        cx.add(
            Severity::Error,
            None,
            "member order",
            Some(0),
            "the OVA has no .ovf descriptor",
        );
    }
    manifest::check_manifest(&mut cx, descriptor.as_ref());
    if let (Some(e), Some(d)) = (&ovf, &descriptor) {
        descriptor::check_descriptor(&mut cx, e, d);
        vmdk::check_disks(&mut cx, d);
    }
    cx.report.descriptor = descriptor;
    Ok(cx.report)
}
