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

use crate::definition::{DigestAlgorithm, VsphereCompat};
use crate::manifest::{digest_reader, Manifest};
use crate::ova::{read_index, HeaderFormat, MemberReader, TarEntry, TarIndex, USTAR_MAX_SIZE};
use crate::ovf::{ControllerKind, OvfDescriptor, DISK_ENABLE_UUID, STREAM_OPTIMIZED_FORMAT};
use crate::units::SECTOR;
use crate::vmdk::lint::{self, LintFinding};
use crate::vmdk::{VmdkError, VmdkReader};
use camino::{Utf8Path, Utf8PathBuf};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

/// What to check against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyOptions {
    /// The oldest vSphere release that must import the OVA.
    pub compat: VsphereCompat,
    /// A directory with the raw images each disk must expand to (`<vmdk stem>.<any extension>`).
    pub raw_dir: Option<Utf8PathBuf>,
}

pub use crate::finding::Severity;

/// One problem: where (member, structure, byte offset in the OVA) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub member: Option<String>,
    /// The structure inside the member (`tar header`, `manifest line 2`, `References/File`, …).
    pub structure: String,
    /// Absolute byte offset in the OVA file.
    pub offset: Option<u64>,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.severity)?;
        if let Some(m) = &self.member {
            write!(f, "{m}: ")?;
        }
        write!(f, "{}", self.structure)?;
        if let Some(o) = self.offset {
            write!(f, " at OVA byte {o}")?;
        }
        write!(f, ": {}", self.message)
    }
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

const MAX_TEXT_MEMBER: u64 = 16 << 20;
const KNOWN_SCSI: [&str; 4] = ["lsilogic", "lsilogicsas", "buslogic", "VirtualSCSI"];
const KNOWN_NICS: [&str; 6] = ["VmxNet3", "E1000", "E1000e", "VmxNet2", "VmxNet", "PCNet32"];

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
    check_tar(&mut cx, &index);
    // Even out of place, the descriptor is read so that everything else is checked too.
    let ovf = cx
        .report
        .members
        .iter()
        .find(|e| e.name.ends_with(".ovf"))
        .cloned();
    let descriptor = ovf.as_ref().and_then(|e| parse_descriptor(&mut cx, e));
    if ovf.is_none() && !cx.report.members.is_empty() {
        cx.add(
            Severity::Error,
            None,
            "member order",
            Some(0),
            "the OVA has no .ovf descriptor",
        );
    }
    check_manifest(&mut cx, descriptor.as_ref());
    if let (Some(e), Some(d)) = (&ovf, &descriptor) {
        check_descriptor(&mut cx, e, d);
        check_disks(&mut cx, d);
    }
    cx.report.descriptor = descriptor;
    Ok(cx.report)
}

fn check_tar(cx: &mut Ctx, index: &TarIndex) {
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

fn parse_descriptor(cx: &mut Ctx, e: &TarEntry) -> Option<OvfDescriptor> {
    let m = Some(e.name.as_str());
    let bytes = match cx.read_member(e, MAX_TEXT_MEMBER) {
        Ok(b) => b,
        Err(why) => {
            cx.add(
                Severity::Error,
                m,
                "OVF descriptor",
                Some(e.data_offset),
                why,
            );
            return None;
        }
    };
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => t,
        Err(err) => {
            cx.add(
                Severity::Error,
                m,
                "OVF descriptor",
                Some(e.data_offset + err.valid_up_to() as u64),
                "is not UTF-8",
            );
            return None;
        }
    };
    match OvfDescriptor::parse(text) {
        Ok(d) => Some(d),
        Err(err) => {
            cx.add(
                Severity::Error,
                m,
                format!("OVF line {} column {}", err.line, err.column),
                Some(e.data_offset + err.offset as u64),
                err.message,
            );
            None
        }
    }
}

fn check_manifest(cx: &mut Ctx, descriptor: Option<&OvfDescriptor>) {
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
    if let Some(why) = cx
        .opts
        .compat
        .manifest_algorithm_problem(manifest.algorithm)
    {
        let sev = if manifest.algorithm == DigestAlgorithm::Sha512 {
            Severity::Warning
        } else {
            Severity::Error
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
    cx.report.manifest = Some(manifest);
}

fn check_descriptor(cx: &mut Ctx, ovf: &TarEntry, d: &OvfDescriptor) {
    let m = Some(ovf.name.as_str());
    let at = |o: usize| Some(ovf.data_offset + o as u64);

    // Files: present, with the declared size, in References order after the ovf/mf.
    let mut last_pos = 0usize;
    for f in &d.files {
        let Some(pos) = cx.report.members.iter().position(|e| e.name == f.href) else {
            cx.add(
                Severity::Error,
                m,
                "References/File",
                at(f.offset),
                format!("{} ({}) is not in the OVA", f.href, f.id),
            );
            continue;
        };
        let member = cx.report.members[pos].clone();
        match f.size {
            Some(s) if s != member.size => cx.add(
                Severity::Error,
                m,
                "References/File",
                at(f.offset),
                format!(
                    "{} has ovf:size=\"{s}\" but the member is {} bytes: vSphere aborts the import",
                    f.href, member.size
                ),
            ),
            None => cx.add(
                Severity::Warning,
                m,
                "References/File",
                at(f.offset),
                format!("{} has no ovf:size (vSphere cannot show progress)", f.href),
            ),
            _ => {}
        }
        if let Some(c) = &f.compression {
            cx.add(
                Severity::Error,
                m,
                "References/File",
                at(f.offset),
                format!("{} has ovf:compression=\"{c}\": \"OVF package with compressed disks is currently not supported\"", f.href),
            );
        }
        if pos < last_pos {
            cx.add(
                Severity::Error,
                Some(&member.name),
                "member order",
                Some(member.header_offset),
                format!(
                    "comes after {} in the tar but before it in References: files follow References order",
                    cx.report.members[last_pos].name
                ),
            );
        }
        last_pos = last_pos.max(pos);
    }
    for e in cx.report.members.clone() {
        let known = e.name.ends_with(".ovf")
            || e.name.ends_with(".mf")
            || e.name.ends_with(".cert")
            || d.files.iter().any(|f| f.href == e.name);
        if !known && e.is_regular() {
            cx.add(
                Severity::Warning,
                Some(&e.name),
                "tar header",
                Some(e.header_offset),
                "is not referenced by the OVF (vSphere ignores it)",
            );
        }
    }

    // Disks and where they are attached.
    let mut units: BTreeMap<(String, u32), String> = BTreeMap::new();
    for disk in &d.disks {
        let s = format!("DiskSection/Disk {}", disk.disk_id);
        match (&disk.file_ref, &disk.href) {
            (Some(r), None) => cx.add(
                Severity::Error,
                m,
                s.clone(),
                at(disk.offset),
                format!("ovf:fileRef=\"{r}\" names no References/File"),
            ),
            (Some(_), Some(href)) if disk.format.as_deref() != Some(STREAM_OPTIMIZED_FORMAT) => {
                cx.add(
                    Severity::Error,
                    m,
                    s.clone(),
                    at(disk.offset),
                    format!(
                        "{href} has ovf:format {:?}; vSphere imports VMDKs in an OVA only as {STREAM_OPTIMIZED_FORMAT}",
                        disk.format.as_deref().unwrap_or("(none)")
                    ),
                );
            }
            _ => {}
        }
        if disk.capacity_bytes == 0 || !disk.capacity_bytes.is_multiple_of(512) {
            cx.add(
                Severity::Error,
                m,
                s.clone(),
                at(disk.offset),
                format!(
                    "capacity {} bytes is not a positive whole number of 512-byte sectors",
                    disk.capacity_bytes
                ),
            );
        }
        let Some(a) = &disk.attachment else {
            cx.add(
                Severity::Warning,
                m,
                s,
                at(disk.offset),
                "no hardware Item attaches this disk: vSphere imports it detached",
            );
            continue;
        };
        let item = format!("disk Item for {}", disk.disk_id);
        let Some(ctrl) = d.controller(&a.controller_instance) else {
            cx.add(
                Severity::Error,
                m,
                item,
                at(a.offset),
                format!(
                    "rasd:Parent {:?} is not the InstanceID of a disk controller Item",
                    a.controller_instance
                ),
            );
            continue;
        };
        let Some(unit) = a.unit else {
            cx.add(
                Severity::Warning,
                m,
                item,
                at(a.offset),
                "no rasd:AddressOnParent: vSphere picks the unit, so the disk order is not fixed",
            );
            continue;
        };
        if ctrl.kind == ControllerKind::Scsi && (unit == 7 || unit > 15) {
            cx.add(
                Severity::Error,
                m,
                item.clone(),
                at(a.offset),
                format!("SCSI unit {unit} is not usable (0-6 and 8-15; 7 is the controller)"),
            );
        }
        if let Some(other) =
            units.insert((a.controller_instance.clone(), unit), disk.disk_id.clone())
        {
            cx.add(
                Severity::Error,
                m,
                item,
                at(a.offset),
                format!(
                    "unit {unit} on controller {} is also used by {other}",
                    a.controller_instance
                ),
            );
        }
    }
    for c in &d.controllers {
        if c.kind != ControllerKind::Scsi {
            continue;
        }
        let s = format!("SCSI controller Item {}", c.instance_id);
        match c.subtype.as_deref() {
            Some(t) if KNOWN_SCSI.contains(&t) => {}
            Some(t) if KNOWN_SCSI.iter().any(|k| k.eq_ignore_ascii_case(t)) => cx.add(
                Severity::Warning,
                m,
                s,
                at(c.offset),
                format!("ResourceSubType {t:?}: vSphere spells it {:?}", KNOWN_SCSI.iter().find(|k| k.eq_ignore_ascii_case(t)).unwrap()),
            ),
            Some(t) => cx.add(
                Severity::Error,
                m,
                s,
                at(c.offset),
                format!("ResourceSubType {t:?} is not a vSphere SCSI controller ({})", KNOWN_SCSI.join(", ")),
            ),
            None => cx.add(
                Severity::Warning,
                m,
                s,
                at(c.offset),
                "no ResourceSubType: vSphere picks a default controller the guest may lack a driver for",
            ),
        }
    }
    for n in &d.nics {
        match n.subtype.as_deref() {
            Some(t) if KNOWN_NICS.contains(&t) => {}
            other => cx.add(
                Severity::Warning,
                m,
                "ethernet Item",
                at(n.offset),
                format!(
                    "ResourceSubType {other:?} is not one of {}",
                    KNOWN_NICS.join(", ")
                ),
            ),
        }
        match &n.connection {
            Some(c) if d.networks.iter().any(|net| net == c) => {}
            other => cx.add(
                Severity::Error,
                m,
                "ethernet Item",
                at(n.offset),
                format!("rasd:Connection {other:?} is not a Network of the NetworkSection"),
            ),
        }
    }

    // Hardware family and guest id for the compatibility target.
    let compat = cx.opts.compat;
    let hw_at = at(d.hardware_offset);
    let vmx = d.vmx_versions();
    if d.hardware_families.is_empty() {
        cx.add(
            Severity::Error,
            m,
            "VirtualHardwareSection/System",
            hw_at,
            "no vssd:VirtualSystemType: vSphere needs a vmx-NN hardware family",
        );
    } else if vmx.is_empty() {
        cx.add(
            Severity::Error,
            m,
            "VirtualHardwareSection/System",
            hw_at,
            format!(
                "unknown hardware family {:?}: vSphere needs vmx-NN",
                d.hardware_families.join(" ")
            ),
        );
    } else if vmx.iter().all(|&v| v > compat.max_hardware_version()) {
        cx.add(
            Severity::Error,
            m,
            "VirtualHardwareSection/System",
            hw_at,
            format!(
                "hardware family {} is too new for vSphere {} (it runs up to vmx-{}): \"Unsupported hardware family\"",
                d.hardware_families.join(" "),
                compat.as_str(),
                compat.max_hardware_version()
            ),
        );
    }
    let os_at = at(d.os.offset);
    match d.os.vmw_os_type.as_deref() {
        None => cx.add(
            Severity::Warning,
            m,
            "OperatingSystemSection",
            os_at,
            format!("no vmw:osType: vSphere guesses the guest from CIM id {}", d.os.cim_id),
        ),
        Some(id) if !id.ends_with("Guest") && !id.ends_with("Guest64") => cx.add(
            Severity::Error,
            m,
            "OperatingSystemSection",
            os_at,
            format!("vmw:osType {id:?} is not a vSphere guest id (those end in \"Guest\", e.g. debian10_64Guest; {id:?} looks like a .vmx guestOS name)"),
        ),
        Some(id) => match compat.knows_guest_id(id) {
            Some(true) => {}
            Some(false) => cx.add(
                Severity::Error,
                m,
                "OperatingSystemSection",
                os_at,
                format!("guest id {id} is unknown to vSphere {}: \"The guest operating system '{id}' is not supported\"", compat.as_str()),
            ),
            None => cx.add(
                Severity::Warning,
                m,
                "OperatingSystemSection",
                os_at,
                format!("guest id {id} is not in this tool's table; check that vSphere {} lists it", compat.as_str()),
            ),
        },
    }

    // VMware configuration.
    if d.config_before_items {
        cx.add(
            Severity::Error,
            m,
            "VirtualHardwareSection",
            hw_at,
            "a vmw:Config/vmw:ExtraConfig comes before an Item: the schema puts them after all Items",
        );
    }
    for kv in &d.extra_config {
        let s = format!("vmw:ExtraConfig {}", kv.key);
        if kv.key.is_empty() || kv.key.contains(char::is_whitespace) {
            cx.add(
                Severity::Error,
                m,
                s.clone(),
                at(kv.offset),
                format!("vmw:key {:?} is not a .vmx key", kv.key),
            );
        }
        if kv.key.eq_ignore_ascii_case(DISK_ENABLE_UUID) && !kv.value.eq_ignore_ascii_case("true") {
            cx.add(
                Severity::Warning,
                m,
                s,
                at(kv.offset),
                format!(
                    "{} = {:?}: the guest sees no disk UUIDs unless it is TRUE",
                    kv.key, kv.value
                ),
            );
        }
    }
    match d.extra_config.iter().find(|kv| kv.key.eq_ignore_ascii_case(DISK_ENABLE_UUID)) {
        None => cx.add(
            Severity::Warning,
            m,
            "VirtualHardwareSection",
            hw_at,
            format!("no vmw:ExtraConfig {DISK_ENABLE_UUID}=TRUE: the guest will not see stable disk UUIDs"),
        ),
        Some(kv) => cx.add(
            Severity::Note,
            m,
            format!("vmw:ExtraConfig {}", kv.key),
            at(kv.offset),
            "ovftool applies ExtraConfig only with --allowExtraConfig and vCloud Director strips it: check extraConfig on the deployed VM",
        ),
    }
    if d.config("firmware").is_none() {
        cx.add(
            Severity::Warning,
            m,
            "VirtualHardwareSection",
            hw_at,
            "no vmw:Config firmware: vSphere assumes BIOS; state bios or efi to match the disk",
        );
    }
    if let Some(product) = &d.product {
        for p in product.properties.iter().filter(|p| p.password) {
            if p.value.as_deref().is_some_and(|v| !v.is_empty()) {
                cx.add(
                    Severity::Error,
                    m,
                    "ProductSection/Property",
                    at(p.offset),
                    format!(
                        "the password property {} has a default value: a secret is baked into the template; leave ovf:value empty",
                        p.key
                    ),
                );
            }
        }
        if !product.properties.is_empty() && d.transports.is_empty() {
            cx.add(
                Severity::Warning,
                m,
                "VirtualHardwareSection",
                hw_at,
                "ProductSection properties but no ovf:transport: vSphere hands the guest no OVF environment (declare \"com.vmware.guestInfo iso\")",
            );
        }
    }
    if let Some(o) = d.boot_order_section {
        cx.add(
            Severity::Warning,
            m,
            "BootOrderSection",
            at(o),
            "a BootOrderSection makes vSphere reset the firmware to BIOS on import",
        );
    }
    if let Some(o) = d.virtualbox_section {
        cx.add(
            Severity::Warning,
            m,
            "VirtualBox section",
            at(o),
            "VirtualBox-specific elements: vSphere ignores or rejects them",
        );
    }
}

fn check_disks(cx: &mut Ctx, d: &OvfDescriptor) {
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
fn vmdk_finding(cx: &mut Ctx, e: &TarEntry, err: VmdkError) {
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
    let m = Some(e.name.as_str());
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
    let Some(dir) = cx.opts.raw_dir.clone() else {
        return;
    };
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
            return;
        }
    };
    let raw = match candidates.as_slice() {
        [one] => one.clone(),
        [] => {
            cx.add(
                Severity::Error,
                m,
                "raw image",
                None,
                format!("{dir} has no raw image named {stem}.* to compare with"),
            );
            return;
        }
        many => {
            cx.add(
                Severity::Error,
                m,
                "raw image",
                None,
                format!("{dir} has several files named {stem}.*: {many:?}"),
            );
            return;
        }
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
