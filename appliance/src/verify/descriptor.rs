//! The OVF descriptor: read from its member (UTF-8, well-formed, through `OvfDescriptor::parse`)
//! and checked against the rest of the package and the vSphere target: files and their sizes,
//! disks and their units, controllers, NICs, hardware family, guest id, VMware configuration,
//! deploy-time properties and sections vSphere mishandles.

use super::{Ctx, Severity, MAX_TEXT_MEMBER};
use crate::ova::TarEntry;
use crate::ovf::{
    ControllerKind, DiskAttachment, OvfDescriptor, OvfDisk, DISK_ENABLE_UUID,
    STREAM_OPTIMIZED_FORMAT,
};
use std::collections::BTreeMap;

const KNOWN_SCSI: [&str; 4] = ["lsilogic", "lsilogicsas", "buslogic", "VirtualSCSI"];
const KNOWN_NICS: [&str; 6] = ["VmxNet3", "E1000", "E1000e", "VmxNet2", "VmxNet", "PCNet32"];

pub(super) fn parse_descriptor(cx: &mut Ctx, e: &TarEntry) -> Option<OvfDescriptor> {
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

/// The descriptor against the rest of the package and the vSphere target, in the order a
/// reader of the report follows the OVF: files, disks, controllers, NICs, hardware, guest,
/// VMware configuration, product and foreign sections.
pub(super) fn check_descriptor(cx: &mut Ctx, ovf: &TarEntry, d: &OvfDescriptor) {
    check_files(cx, ovf, d);
    let mut units = BTreeMap::new();
    for disk in &d.disks {
        check_disk(cx, ovf, d, disk, &mut units);
    }
    check_controllers(cx, ovf, d);
    check_nics(cx, ovf, d);
    check_hardware_family(cx, ovf, d);
    check_guest_os(cx, ovf, d);
    check_vmware_config(cx, ovf, d);
    check_product_and_foreign_sections(cx, ovf, d);
}

/// Files: present, with the declared size, in References order after the ovf/mf; members
/// the OVF does not reference.
fn check_files(cx: &mut Ctx, ovf: &TarEntry, d: &OvfDescriptor) {
    let m = Some(ovf.name.as_str());
    let at = |o: usize| Some(ovf.data_offset + o as u64);
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
}

/// One disk of the DiskSection and the Item that attaches it; `units` collects the
/// (controller, unit) pairs taken so far.
fn check_disk(
    cx: &mut Ctx,
    ovf: &TarEntry,
    d: &OvfDescriptor,
    disk: &OvfDisk,
    units: &mut BTreeMap<(String, u32), String>,
) {
    let m = Some(ovf.name.as_str());
    let at = |o: usize| Some(ovf.data_offset + o as u64);
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
        return;
    };
    check_attachment(cx, ovf, d, disk, a, units);
}

/// The disk Item's controller and unit: a controller Item, a usable SCSI unit, not taken twice.
fn check_attachment(
    cx: &mut Ctx,
    ovf: &TarEntry,
    d: &OvfDescriptor,
    disk: &OvfDisk,
    a: &DiskAttachment,
    units: &mut BTreeMap<(String, u32), String>,
) {
    let m = Some(ovf.name.as_str());
    let at = |o: usize| Some(ovf.data_offset + o as u64);
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
        return;
    };
    let Some(unit) = a.unit else {
        cx.add(
            Severity::Warning,
            m,
            item,
            at(a.offset),
            "no rasd:AddressOnParent: vSphere picks the unit, so the disk order is not fixed",
        );
        return;
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
    if let Some(other) = units.insert((a.controller_instance.clone(), unit), disk.disk_id.clone()) {
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

fn check_controllers(cx: &mut Ctx, ovf: &TarEntry, d: &OvfDescriptor) {
    let m = Some(ovf.name.as_str());
    let at = |o: usize| Some(ovf.data_offset + o as u64);
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
}

fn check_nics(cx: &mut Ctx, ovf: &TarEntry, d: &OvfDescriptor) {
    let m = Some(ovf.name.as_str());
    let at = |o: usize| Some(ovf.data_offset + o as u64);
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
}

/// The hardware family for the compatibility target.
fn check_hardware_family(cx: &mut Ctx, ovf: &TarEntry, d: &OvfDescriptor) {
    let m = Some(ovf.name.as_str());
    let at = |o: usize| Some(ovf.data_offset + o as u64);
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
}

/// The guest id for the compatibility target.
fn check_guest_os(cx: &mut Ctx, ovf: &TarEntry, d: &OvfDescriptor) {
    let m = Some(ovf.name.as_str());
    let at = |o: usize| Some(ovf.data_offset + o as u64);
    let compat = cx.opts.compat;
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
                Severity::Warning,
                m,
                "OperatingSystemSection",
                os_at,
                format!("guest id {id} is unknown to vSphere {}: the import goes on, but ovftool warns and the VM becomes \"Other (32-bit)\" (32-bit defaults, the wrong guest type in vSphere); use an id this release lists", compat.as_str()),
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
}

/// `vmw:Config` and `vmw:ExtraConfig`.
fn check_vmware_config(cx: &mut Ctx, ovf: &TarEntry, d: &OvfDescriptor) {
    let m = Some(ovf.name.as_str());
    let at = |o: usize| Some(ovf.data_offset + o as u64);
    let hw_at = at(d.hardware_offset);
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
}

/// Deploy-time properties, and sections that make vSphere change or drop the import.
fn check_product_and_foreign_sections(cx: &mut Ctx, ovf: &TarEntry, d: &OvfDescriptor) {
    let m = Some(ovf.name.as_str());
    let at = |o: usize| Some(ovf.data_offset + o as u64);
    let hw_at = at(d.hardware_offset);
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
    if d.offers_iso_transport() && d.attached_cdroms().next().is_none() {
        cx.add(
            Severity::Error,
            m,
            "VirtualHardwareSection",
            hw_at,
            "the iso transport is offered but no CD-ROM drive is declared on an IDE or SATA controller: vSphere hands ovf-env.xml to the guest in the VM's CD-ROM drive, so a guest without VMware tools never gets its properties (declare an IDE controller and a CD-ROM Item, rasd:ResourceType 15)",
        );
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
