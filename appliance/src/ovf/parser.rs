//! Reading an OVF 1.x descriptor into [`OvfDescriptor`] with roxmltree (namespace-aware, keeps
//! byte positions): one function per section, in document order. It fails only on what makes
//! the descriptor unreadable (not well-formed, no Envelope/VirtualSystem/hardware section,
//! numbers that do not parse), naming the byte offset; whether the package is consistent is
//! `verify`'s question. No I/O.

use super::descriptor::{
    ControllerKind, DiskAttachment, OperatingSystem, OvfCdrom, OvfController, OvfDescriptor,
    OvfDisk, OvfFile, OvfKeyValue, OvfNic, OvfProduct, OvfProperty,
};
use super::{NS_OVF, NS_VMW, NS_VSSD};

/// Why a descriptor could not be read: the position in the XML and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("OVF byte {offset} (line {line}, column {column}): {message}")]
pub struct OvfParseError {
    pub offset: usize,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// The multiplier of a DMTF programmatic unit (`byte`, `byte * 2^20`, `byte * 10^6`,
/// `MegaBytes`, …); `None` if not understood.
pub fn allocation_unit_bytes(units: &str) -> Option<u64> {
    let u: String = units
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let named = match u.as_str() {
        "byte" | "bytes" => Some(1),
        "kilobytes" | "kb" | "kib" => Some(1 << 10),
        "megabytes" | "mb" | "mib" => Some(1 << 20),
        "gigabytes" | "gb" | "gib" => Some(1 << 30),
        "terabytes" | "tb" | "tib" => Some(1 << 40),
        _ => None,
    };
    if named.is_some() {
        return named;
    }
    let rest = u.strip_prefix("byte*")?;
    let mut mult: u64 = 1;
    for factor in rest.split('*') {
        let v = match factor.split_once('^') {
            Some((base, exp)) => {
                let base: u64 = base.parse().ok()?;
                let exp: u32 = exp.parse().ok()?;
                base.checked_pow(exp)?
            }
            None => factor.parse().ok()?,
        };
        mult = mult.checked_mul(v)?;
    }
    Some(mult)
}

type Node<'a, 'i> = roxmltree::Node<'a, 'i>;
type Parsed<T> = Result<T, OvfParseError>;

fn is(n: &Node, ns: &str, name: &str) -> bool {
    n.is_element() && n.tag_name().name() == name && n.tag_name().namespace() == Some(ns)
}

fn child<'a, 'i>(n: Node<'a, 'i>, ns: &str, name: &str) -> Option<Node<'a, 'i>> {
    n.children().find(|c| is(c, ns, name))
}

fn children<'a, 'i>(
    n: Node<'a, 'i>,
    ns: &'static str,
    name: &'static str,
) -> impl Iterator<Item = Node<'a, 'i>> {
    n.children().filter(move |c| is(c, ns, name))
}

fn child_text(n: Node, ns: &str, name: &str) -> Option<String> {
    child(n, ns, name).map(|c| c.text().unwrap_or("").trim().to_string())
}

fn attr<'a>(n: Node<'a, '_>, ns: &str, name: &str) -> Option<&'a str> {
    n.attribute((ns, name))
}

/// The descriptor text, for positions in errors.
#[derive(Clone, Copy)]
struct Xml<'x>(&'x str);

impl Xml<'_> {
    fn err(self, offset: usize, message: impl Into<String>) -> OvfParseError {
        let before = &self.0[..offset.min(self.0.len())];
        let line = before.matches('\n').count() as u32 + 1;
        let column = (before.len() - before.rfind('\n').map_or(0, |i| i + 1)) as u32 + 1;
        OvfParseError {
            offset,
            line,
            column,
            message: message.into(),
        }
    }

    fn num(self, n: Node, what: &str, v: &str) -> Parsed<u64> {
        v.trim().parse::<u64>().map_err(|_| {
            self.err(
                n.range().start,
                format!("{what} {v:?} is not a whole number"),
            )
        })
    }

    fn optional_num(self, n: Node, what: &str, v: Option<&str>) -> Parsed<Option<u64>> {
        v.map(|v| self.num(n, what, v)).transpose()
    }
}

impl OvfDescriptor {
    /// Parses an OVF 1.x descriptor (a single VirtualSystem). Fails on XML that is not
    /// well-formed, a missing Envelope/VirtualSystem/hardware section, or numbers that do not
    /// parse, naming the byte offset; consistency (files present, units unique, …) is left to
    /// the caller, which has the rest of the package.
    pub fn parse(xml: &str) -> Result<OvfDescriptor, OvfParseError> {
        let doc = roxmltree::Document::parse(xml).map_err(|e| not_well_formed(xml, e))?;
        let x = Xml(xml);
        let root = doc.root_element();
        if !is(&root, NS_OVF, "Envelope") {
            return Err(x.err(
                root.range().start,
                format!(
                    "the root element is {:?} in namespace {:?}, not an OVF Envelope ({NS_OVF})",
                    root.tag_name().name(),
                    root.tag_name().namespace().unwrap_or("")
                ),
            ));
        }
        let files = references(x, root)?;
        let mut disks = disk_section(x, root, &files)?;
        let networks = children(root, NS_OVF, "NetworkSection")
            .flat_map(|s| children(s, NS_OVF, "Network"))
            .filter_map(|n| attr(n, NS_OVF, "name").map(str::to_string))
            .collect();
        let vs = virtual_system(x, root)?;
        let os = operating_system(x, vs)?;
        let product = child(vs, NS_OVF, "ProductSection").map(product_section);
        let annotation = child(vs, NS_OVF, "AnnotationSection")
            .and_then(|a| child_text(a, NS_OVF, "Annotation"));
        let boot_order_section = vs
            .descendants()
            .find(|n| n.is_element() && n.tag_name().name() == "BootOrderSection")
            .map(|n| n.range().start);
        let virtualbox_section = root
            .descendants()
            .find(|n| {
                n.is_element()
                    && n.tag_name()
                        .namespace()
                        .is_some_and(|ns| ns.contains("virtualbox"))
            })
            .map(|n| n.range().start);
        let hw = child(vs, NS_OVF, "VirtualHardwareSection").ok_or_else(|| {
            x.err(
                vs.range().start,
                "the VirtualSystem has no VirtualHardwareSection",
            )
        })?;
        let transports = attr(hw, NS_OVF, "transport")
            .map(|t| t.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let hardware_families = child(hw, NS_OVF, "System")
            .and_then(|s| child_text(s, NS_VSSD, "VirtualSystemType"))
            .map(|t| t.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let items = hardware_items(x, hw)?;
        attach_disks(x, &mut disks, items.attachments)?;
        let hw_at = hw.range().start;
        Ok(OvfDescriptor {
            files,
            disks,
            networks,
            virtual_system_id: attr(vs, NS_OVF, "id").unwrap_or("").to_string(),
            name: child_text(vs, NS_OVF, "Name"),
            os,
            hardware_families,
            hardware_offset: hw_at,
            cpus: items
                .cpus
                .ok_or_else(|| x.err(hw_at, "no CPU Item (rasd:ResourceType 3)"))?,
            memory_bytes: items
                .memory_bytes
                .ok_or_else(|| x.err(hw_at, "no memory Item (rasd:ResourceType 4)"))?,
            controllers: items.controllers,
            nics: items.nics,
            cdroms: items.cdroms,
            config: items.config,
            extra_config: items.extra_config,
            config_before_items: items.config_before_items,
            product,
            annotation,
            boot_order_section,
            transports,
            virtualbox_section,
        })
    }
}

fn not_well_formed(xml: &str, e: roxmltree::Error) -> OvfParseError {
    let p = e.pos();
    let offset = xml
        .split_inclusive('\n')
        .take(p.row.saturating_sub(1) as usize)
        .map(str::len)
        .sum::<usize>()
        + p.col.saturating_sub(1) as usize;
    OvfParseError {
        offset,
        line: p.row,
        column: p.col,
        message: format!("not well-formed XML: {e}"),
    }
}

/// `References/File`, in document order.
fn references(x: Xml, root: Node) -> Parsed<Vec<OvfFile>> {
    let mut files = Vec::new();
    let Some(refs) = child(root, NS_OVF, "References") else {
        return Ok(files);
    };
    for f in children(refs, NS_OVF, "File") {
        let need = |name: &str| {
            attr(f, NS_OVF, name)
                .ok_or_else(|| x.err(f.range().start, format!("References/File lacks ovf:{name}")))
        };
        let size = x.optional_num(f, "ovf:size", attr(f, NS_OVF, "size"))?;
        files.push(OvfFile {
            id: need("id")?.to_string(),
            href: need("href")?.to_string(),
            size,
            compression: attr(f, NS_OVF, "compression").map(str::to_string),
            offset: f.range().start,
        });
    }
    Ok(files)
}

/// `DiskSection/Disk`, joined with the files they reference (attachments come later).
fn disk_section(x: Xml, root: Node, files: &[OvfFile]) -> Parsed<Vec<OvfDisk>> {
    let mut disks = Vec::new();
    for d in children(root, NS_OVF, "DiskSection").flat_map(|s| children(s, NS_OVF, "Disk")) {
        let at = d.range().start;
        let disk_id =
            attr(d, NS_OVF, "diskId").ok_or_else(|| x.err(at, "Disk lacks ovf:diskId"))?;
        let cap =
            attr(d, NS_OVF, "capacity").ok_or_else(|| x.err(at, "Disk lacks ovf:capacity"))?;
        let cap = x.num(d, "ovf:capacity", cap)?;
        let units = attr(d, NS_OVF, "capacityAllocationUnits").unwrap_or("byte");
        let mult = allocation_unit_bytes(units).ok_or_else(|| {
            x.err(
                at,
                format!("ovf:capacityAllocationUnits {units:?} is not a unit like \"byte\" or \"byte * 2^20\""),
            )
        })?;
        let capacity_bytes = cap
            .checked_mul(mult)
            .ok_or_else(|| x.err(at, "ovf:capacity × units overflows 64 bits"))?;
        let populated_size =
            x.optional_num(d, "ovf:populatedSize", attr(d, NS_OVF, "populatedSize"))?;
        let file_ref = attr(d, NS_OVF, "fileRef").map(str::to_string);
        let file = file_ref
            .as_deref()
            .and_then(|r| files.iter().find(|f| f.id == r));
        disks.push(OvfDisk {
            disk_id: disk_id.to_string(),
            href: file.map(|f| f.href.clone()),
            file_size: file.and_then(|f| f.size),
            file_ref,
            capacity_bytes,
            populated_size,
            format: attr(d, NS_OVF, "format").map(str::to_string),
            attachment: None,
            offset: at,
        });
    }
    Ok(disks)
}

/// The one `VirtualSystem` (a VirtualSystemCollection is refused).
fn virtual_system<'a, 'i>(x: Xml, root: Node<'a, 'i>) -> Parsed<Node<'a, 'i>> {
    let systems: Vec<Node> = children(root, NS_OVF, "VirtualSystem").collect();
    if let Some(coll) = child(root, NS_OVF, "VirtualSystemCollection") {
        return Err(x.err(
            coll.range().start,
            "a VirtualSystemCollection (vApp) is not supported: one VirtualSystem expected",
        ));
    }
    match systems.as_slice() {
        [vs] => Ok(*vs),
        [] => Err(x.err(root.range().start, "the Envelope has no VirtualSystem")),
        [_, second, ..] => Err(x.err(
            second.range().start,
            "more than one VirtualSystem: one expected",
        )),
    }
}

fn operating_system(x: Xml, vs: Node) -> Parsed<OperatingSystem> {
    let os = child(vs, NS_OVF, "OperatingSystemSection").ok_or_else(|| {
        x.err(
            vs.range().start,
            "the VirtualSystem has no OperatingSystemSection",
        )
    })?;
    Ok(OperatingSystem {
        cim_id: x.num(
            os,
            "OperatingSystemSection ovf:id",
            attr(os, NS_OVF, "id").unwrap_or(""),
        )? as u32,
        vmw_os_type: attr(os, NS_VMW, "osType").map(str::to_string),
        offset: os.range().start,
    })
}

fn product_section(p: Node) -> OvfProduct {
    OvfProduct {
        product: child_text(p, NS_OVF, "Product"),
        version: child_text(p, NS_OVF, "Version"),
        full_version: child_text(p, NS_OVF, "FullVersion"),
        class: attr(p, NS_OVF, "class").map(str::to_string),
        properties: children(p, NS_OVF, "Property")
            .map(|c| OvfProperty {
                key: attr(c, NS_OVF, "key").unwrap_or("").to_string(),
                ovf_type: attr(c, NS_OVF, "type").unwrap_or("").to_string(),
                qualifiers: attr(c, NS_OVF, "qualifiers").map(str::to_string),
                vmw_qualifiers: attr(c, NS_VMW, "qualifiers").map(str::to_string),
                user_configurable: attr(c, NS_OVF, "userConfigurable") == Some("true"),
                password: attr(c, NS_OVF, "password") == Some("true"),
                value: attr(c, NS_OVF, "value").map(str::to_string),
                label: child_text(c, NS_OVF, "Label"),
                description: child_text(c, NS_OVF, "Description"),
                offset: c.range().start,
            })
            .collect(),
    }
}

/// What the Items and VMware settings of the VirtualHardwareSection declare.
#[derive(Default)]
struct HardwareItems {
    cpus: Option<u32>,
    memory_bytes: Option<u64>,
    controllers: Vec<OvfController>,
    nics: Vec<OvfNic>,
    cdroms: Vec<OvfCdrom>,
    /// (disk id, the Item that attaches it), in document order.
    attachments: Vec<(String, DiskAttachment)>,
    config: Vec<OvfKeyValue>,
    extra_config: Vec<OvfKeyValue>,
    config_before_items: bool,
}

/// Every Item and `vmw:Config`/`vmw:ExtraConfig` under the hardware section, in document order.
fn hardware_items(x: Xml, hw: Node) -> Parsed<HardwareItems> {
    let mut items = HardwareItems::default();
    let mut seen_config = false;
    for n in hw.descendants().filter(|n| n.is_element()) {
        if is(&n, NS_VMW, "Config") || is(&n, NS_VMW, "ExtraConfig") {
            let kv = OvfKeyValue {
                key: attr(n, NS_VMW, "key").unwrap_or("").to_string(),
                value: attr(n, NS_VMW, "value").unwrap_or("").to_string(),
                offset: n.range().start,
            };
            // Only the section-level ones count for placement; an Item may carry its own.
            if n.parent() == Some(hw) {
                seen_config = true;
            }
            if n.tag_name().name() == "Config" {
                items.config.push(kv);
            } else {
                items.extra_config.push(kv);
            }
            continue;
        }
        if !(is(&n, NS_OVF, "Item")
            || is(&n, NS_OVF, "StorageItem")
            || is(&n, NS_OVF, "EthernetPortItem"))
        {
            continue;
        }
        if seen_config {
            items.config_before_items = true;
        }
        hardware_item(x, n, &mut items)?;
    }
    Ok(items)
}

/// One Item, by its `rasd:ResourceType`: CPU (3), memory (4), a disk controller (5 IDE,
/// 6 SCSI, 20 SATA), an ethernet adapter (10), a CD or DVD drive (15, 16) or a disk (17); others
/// are ignored.
fn hardware_item(x: Xml, n: Node, items: &mut HardwareItems) -> Parsed<()> {
    let rasd = |name: &str| {
        n.children()
            .find(|c| c.is_element() && c.tag_name().name() == name)
            .map(|c| c.text().unwrap_or("").trim().to_string())
    };
    let at = n.range().start;
    let rtype = rasd("ResourceType").ok_or_else(|| x.err(at, "an Item lacks rasd:ResourceType"))?;
    let rtype = x.num(n, "rasd:ResourceType", &rtype)?;
    let quantity = |what: &str| -> Parsed<u64> {
        let q = rasd("VirtualQuantity")
            .ok_or_else(|| x.err(at, format!("the {what} Item lacks rasd:VirtualQuantity")))?;
        x.num(n, "rasd:VirtualQuantity", &q)
    };
    match rtype {
        3 if items.cpus.is_none() => items.cpus = Some(quantity("CPU")? as u32),
        4 if items.memory_bytes.is_none() => {
            let q = quantity("memory")?;
            let units = rasd("AllocationUnits").unwrap_or_else(|| "byte * 2^20".into());
            let mult = allocation_unit_bytes(&units).ok_or_else(|| {
                x.err(
                    at,
                    format!("memory rasd:AllocationUnits {units:?} is not understood"),
                )
            })?;
            items.memory_bytes = Some(q.saturating_mul(mult));
        }
        5 | 6 | 20 => {
            let bus = match rasd("Address") {
                Some(a) if !a.is_empty() => Some(x.num(n, "rasd:Address", &a)? as u32),
                _ => None,
            };
            items.controllers.push(OvfController {
                instance_id: rasd("InstanceID").unwrap_or_default(),
                kind: match rtype {
                    5 => ControllerKind::Ide,
                    6 => ControllerKind::Scsi,
                    _ => ControllerKind::Sata,
                },
                subtype: rasd("ResourceSubType"),
                bus,
                offset: at,
            });
        }
        10 => items.nics.push(OvfNic {
            subtype: rasd("ResourceSubType"),
            connection: rasd("Connection"),
            offset: at,
        }),
        15 | 16 => {
            let unit = match rasd("AddressOnParent") {
                Some(a) if !a.is_empty() => Some(x.num(n, "rasd:AddressOnParent", &a)? as u32),
                _ => None,
            };
            items.cdroms.push(OvfCdrom {
                controller_instance: rasd("Parent").unwrap_or_default(),
                unit,
                offset: at,
            });
        }
        17 => {
            let host = rasd("HostResource").unwrap_or_default();
            let disk_id = host
                .strip_prefix("ovf:/disk/")
                .or_else(|| host.strip_prefix("/disk/"))
                .ok_or_else(|| {
                    x.err(
                        at,
                        format!("disk Item rasd:HostResource {host:?} is not ovf:/disk/<diskId>"),
                    )
                })?;
            let unit = match rasd("AddressOnParent") {
                Some(a) if !a.is_empty() => Some(x.num(n, "rasd:AddressOnParent", &a)? as u32),
                _ => None,
            };
            items.attachments.push((
                disk_id.to_string(),
                DiskAttachment {
                    controller_instance: rasd("Parent").unwrap_or_default(),
                    unit,
                    offset: at,
                },
            ));
        }
        _ => {}
    }
    Ok(())
}

/// Joins each disk Item to the DiskSection disk it names: at most one Item per disk.
fn attach_disks(
    x: Xml,
    disks: &mut [OvfDisk],
    attachments: Vec<(String, DiskAttachment)>,
) -> Parsed<()> {
    for (disk_id, a) in attachments {
        let Some(d) = disks.iter_mut().find(|d| d.disk_id == disk_id) else {
            return Err(x.err(
                a.offset,
                format!("a disk Item refers to ovf:/disk/{disk_id}, which the DiskSection does not declare"),
            ));
        };
        if d.attachment.is_some() {
            return Err(x.err(a.offset, format!("disk {disk_id} is attached by two Items")));
        }
        d.attachment = Some(a);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programmatic_units_are_understood() {
        assert_eq!(allocation_unit_bytes("byte"), Some(1));
        assert_eq!(allocation_unit_bytes("byte * 2^20"), Some(1 << 20));
        assert_eq!(allocation_unit_bytes("byte * 10^6"), Some(1_000_000));
        assert_eq!(allocation_unit_bytes("MegaBytes"), Some(1 << 20));
        assert_eq!(allocation_unit_bytes("furlongs"), None);
    }
}
