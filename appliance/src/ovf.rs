//! The OVF 1.x descriptor: written from the appliance definition (the hardware vSphere creates on
//! import) and parsed back into [`OvfDescriptor`], the hardware an OVF declares, which
//! `verify-ova` checks and the boot test maps to QEMU devices.
//!
//! Element order follows the DMTF DSP8023 1.1.1 schema: References, DiskSection, NetworkSection,
//! VirtualSystem; inside the VirtualHardwareSection System, then the Items, then `vmw:Config` and
//! `vmw:ExtraConfig`; the RASD children of an Item in alphabetical order (the schema's sequence).
//! There is no BootOrderSection (it flips firmware on import) and no VirtualBox section.
//!
//! XML is written with quick-xml (every attribute and text is escaped by the writer) and read with
//! roxmltree (namespace-aware, keeps byte positions for messages). This module never does I/O.

use crate::definition::{
    Definition, DeployProperty, DeployType, DEPLOY_PRODUCT_CLASS, OS_DISK_SCSI_UNIT,
};
use crate::units::MIB;
use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::Writer;
use std::fmt;
use std::io;

pub const NS_OVF: &str = "http://schemas.dmtf.org/ovf/envelope/1";
pub const NS_RASD: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData";
pub const NS_VSSD: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData";
pub const NS_VMW: &str = "http://www.vmware.com/schema/ovf";
pub const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// The `ovf:format` of a streamOptimized VMDK; vSphere refuses other strings for a stream disk.
pub const STREAM_OPTIMIZED_FORMAT: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";
/// The logical network the NIC is connected to; vSphere maps it at deploy time.
pub const NETWORK_NAME: &str = "VM Network";
/// The ExtraConfig key that exposes disk UUIDs to the guest (`/dev/disk/by-id/scsi-3…`).
pub const DISK_ENABLE_UUID: &str = "disk.EnableUUID";

/// Which of the appliance's two disks a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiskRole {
    Os,
    Retention,
}

impl DiskRole {
    /// In References (and tar) order.
    pub const ALL: [DiskRole; 2] = [DiskRole::Os, DiskRole::Retention];

    pub fn as_str(self) -> &'static str {
        match self {
            DiskRole::Os => "os",
            DiskRole::Retention => "retention",
        }
    }
    fn number(self) -> u32 {
        match self {
            DiskRole::Os => 1,
            DiskRole::Retention => 2,
        }
    }
    /// The file name inside the OVA: `<name>-disk1.vmdk`, `<name>-disk2.vmdk`.
    pub fn file_name(self, def: &Definition) -> String {
        format!("{}-disk{}.vmdk", def.appliance.name, self.number())
    }
    pub fn file_id(self) -> String {
        format!("file{}", self.number())
    }
    pub fn disk_id(self) -> String {
        format!("vmdisk{}", self.number())
    }
    pub fn scsi_unit(self, def: &Definition) -> u32 {
        match self {
            DiskRole::Os => OS_DISK_SCSI_UNIT,
            DiskRole::Retention => def.retention_disk.scsi_unit,
        }
    }
    /// The virtual size the definition gives this disk.
    pub fn capacity(self, def: &Definition) -> u64 {
        match self {
            DiskRole::Os => def.os_disk.size.bytes(),
            DiskRole::Retention => def.retention_disk.size.bytes(),
        }
    }
}

impl fmt::Display for DiskRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DiskRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "os" => Ok(DiskRole::Os),
            "retention" => Ok(DiskRole::Retention),
            _ => Err(format!("{s:?} is not a disk role: use os or retention")),
        }
    }
}

/// What the descriptor needs to know about one written disk file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFile {
    pub role: DiskRole,
    /// Exact byte size of the `.vmdk` (`ovf:size`; anything else aborts the import).
    pub file_size: u64,
    /// Virtual disk size in bytes (`ovf:capacity` with units `byte`).
    pub capacity: u64,
    /// Bytes of allocated grains (`ovf:populatedSize`, informational).
    pub populated_size: u64,
}

/// Build identification written into the ProductSection and AnnotationSection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub build_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OvfWriteError {
    #[error("the OVF needs exactly one {0} disk file, got {1}")]
    DiskCount(DiskRole, usize),
    #[error("the {role} disk's capacity {capacity} bytes differs from the definition's {expected} bytes")]
    Capacity {
        role: DiskRole,
        capacity: u64,
        expected: u64,
    },
    #[error("cannot write the OVF XML: {0}")]
    Xml(#[from] io::Error),
}

type W = Writer<Vec<u8>>;

fn text(w: &mut W, name: &str, value: &str) -> io::Result<()> {
    w.create_element(name)
        .write_text_content(BytesText::new(value))?;
    Ok(())
}

/// One RASD Item. Children are written in alphabetical order of their local names, which is
/// the order the schema's sequence requires; keeping them in a sorted list makes a wrong order
/// impossible rather than merely tested.
fn item(w: &mut W, mut children: Vec<(&str, String)>) -> io::Result<()> {
    children.sort_by(|a, b| a.0.cmp(b.0));
    w.create_element("Item").write_inner_content(|w| {
        for (name, value) in &children {
            text(w, &format!("rasd:{name}"), value)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// The OVF environment transports the VirtualHardwareSection declares (DSP0243 9.3): VMware
/// tools (`guestinfo.ovfEnv`) and a CD-ROM carrying `ovf-env.xml`.
pub const OVF_ENV_TRANSPORTS: &str = "com.vmware.guestInfo iso";

/// One `Property` of the deploy-time ProductSection. The schema wants Label before Description.
fn deploy_property(w: &mut W, def: &Definition, p: DeployProperty) -> io::Result<()> {
    let default = p.default_value(def);
    let ovf_type = match p.value_type() {
        DeployType::String | DeployType::Ipv4 => "string",
        DeployType::Uint8 => "uint8",
    };
    let mut attrs: Vec<(&str, &str)> = vec![("ovf:key", p.key()), ("ovf:type", ovf_type)];
    if let Some(q) = p.qualifiers() {
        attrs.push(("ovf:qualifiers", q));
    }
    attrs.push(("ovf:userConfigurable", "true"));
    attrs.push(("ovf:value", &default));
    if p.is_password() {
        attrs.push(("ovf:password", "true"));
    }
    if p.value_type() == DeployType::Ipv4 {
        attrs.push(("vmw:qualifiers", "Ip"));
    }
    w.create_element("Property")
        .with_attributes(attrs)
        .write_inner_content(|w| {
            text(w, "Label", p.label())?;
            text(w, "Description", p.description())
        })?;
    Ok(())
}

/// Renders the descriptor for `def` with the written disk files (one per [`DiskRole`]).
pub fn render(
    def: &Definition,
    disks: &[DiskFile],
    build: &BuildInfo,
) -> Result<String, OvfWriteError> {
    let mut ordered = Vec::new();
    for role in DiskRole::ALL {
        let found: Vec<&DiskFile> = disks.iter().filter(|d| d.role == role).collect();
        if found.len() != 1 {
            return Err(OvfWriteError::DiskCount(role, found.len()));
        }
        let d = found[0];
        if d.capacity != role.capacity(def) {
            return Err(OvfWriteError::Capacity {
                role,
                capacity: d.capacity,
                expected: role.capacity(def),
            });
        }
        ordered.push(d);
    }
    let name = def.appliance.name.as_str();
    let version = def.appliance.version.as_str();
    let compat = def.appliance.vsphere_compat;
    let (guest_id, cim_os) = compat.guest_os(def.appliance.base);
    let hw = &def.hardware;

    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.create_element("Envelope")
        .with_attributes([
            ("xmlns", NS_OVF),
            ("xmlns:ovf", NS_OVF),
            ("xmlns:rasd", NS_RASD),
            ("xmlns:vssd", NS_VSSD),
            ("xmlns:vmw", NS_VMW),
            ("xmlns:xsi", NS_XSI),
        ])
        .write_inner_content(|w| {
            w.create_element("References").write_inner_content(|w| {
                for d in &ordered {
                    w.create_element("File")
                        .with_attributes([
                            ("ovf:href", d.role.file_name(def).as_str()),
                            ("ovf:id", d.role.file_id().as_str()),
                            ("ovf:size", d.file_size.to_string().as_str()),
                        ])
                        .write_empty()?;
                }
                Ok(())
            })?;
            w.create_element("DiskSection").write_inner_content(|w| {
                text(w, "Info", "Virtual disk information")?;
                for d in &ordered {
                    w.create_element("Disk")
                        .with_attributes([
                            ("ovf:capacity", d.capacity.to_string().as_str()),
                            ("ovf:capacityAllocationUnits", "byte"),
                            ("ovf:diskId", d.role.disk_id().as_str()),
                            ("ovf:fileRef", d.role.file_id().as_str()),
                            ("ovf:format", STREAM_OPTIMIZED_FORMAT),
                            ("ovf:populatedSize", d.populated_size.to_string().as_str()),
                        ])
                        .write_empty()?;
                }
                Ok(())
            })?;
            w.create_element("NetworkSection").write_inner_content(|w| {
                text(w, "Info", "The list of logical networks")?;
                w.create_element("Network")
                    .with_attribute(("ovf:name", NETWORK_NAME))
                    .write_inner_content(|w| {
                        text(w, "Description", &format!("The {NETWORK_NAME} network"))
                    })?;
                Ok(())
            })?;
            w.create_element("VirtualSystem")
                .with_attribute(("ovf:id", name))
                .write_inner_content(|w| {
                    text(w, "Info", "The master-target appliance for failback")?;
                    text(w, "Name", name)?;
                    w.create_element("AnnotationSection")
                        .write_inner_content(|w| {
                            text(w, "Info", "A human-readable annotation")?;
                            text(
                                w,
                                "Annotation",
                                &format!(
                                    "{name} {version} (build {}): master target for disaster-recovery failback, {} base, vSphere {} or newer",
                                    build.build_id,
                                    def.appliance.base,
                                    compat.as_str()
                                ),
                            )
                        })?;
                    let mut product = w.create_element("ProductSection");
                    if def.deploy.properties {
                        product = product.with_attribute(("ovf:class", DEPLOY_PRODUCT_CLASS));
                    }
                    product.write_inner_content(|w| {
                        text(w, "Info", "Information about the installed software")?;
                        text(w, "Product", name)?;
                        text(w, "Version", version)?;
                        text(w, "FullVersion", &format!("{version} build {}", build.build_id))?;
                        if def.deploy.properties {
                            for p in DeployProperty::ALL {
                                deploy_property(w, def, p)?;
                            }
                        }
                        Ok(())
                    })?;
                    w.create_element("OperatingSystemSection")
                        .with_attributes([
                            ("ovf:id", cim_os.to_string().as_str()),
                            ("vmw:osType", guest_id),
                        ])
                        .write_inner_content(|w| {
                            text(w, "Info", "The kind of installed guest operating system")
                        })?;
                    let mut hardware = w.create_element("VirtualHardwareSection");
                    if def.deploy.properties {
                        hardware = hardware.with_attribute(("ovf:transport", OVF_ENV_TRANSPORTS));
                    }
                    hardware
                        .write_inner_content(|w| {
                            text(w, "Info", "Virtual hardware requirements")?;
                            w.create_element("System").write_inner_content(|w| {
                                text(w, "vssd:ElementName", "Virtual Hardware Family")?;
                                text(w, "vssd:InstanceID", "0")?;
                                text(w, "vssd:VirtualSystemIdentifier", name)?;
                                text(
                                    w,
                                    "vssd:VirtualSystemType",
                                    &format!("vmx-{:02}", def.hardware_version()),
                                )
                            })?;
                            let mem_mib = hw.memory.bytes() / MIB;
                            item(
                                w,
                                vec![
                                    ("AllocationUnits", "hertz * 10^6".into()),
                                    ("Description", "Number of Virtual CPUs".into()),
                                    ("ElementName", format!("{} virtual CPU(s)", hw.vcpus)),
                                    ("InstanceID", "1".into()),
                                    ("ResourceType", "3".into()),
                                    ("VirtualQuantity", hw.vcpus.to_string()),
                                ],
                            )?;
                            item(
                                w,
                                vec![
                                    ("AllocationUnits", "byte * 2^20".into()),
                                    ("Description", "Memory Size".into()),
                                    ("ElementName", format!("{mem_mib}MB of memory")),
                                    ("InstanceID", "2".into()),
                                    ("ResourceType", "4".into()),
                                    ("VirtualQuantity", mem_mib.to_string()),
                                ],
                            )?;
                            item(
                                w,
                                vec![
                                    ("Address", "0".into()),
                                    ("Description", "SCSI Controller".into()),
                                    ("ElementName", "SCSI Controller 0".into()),
                                    ("InstanceID", "3".into()),
                                    ("ResourceSubType", hw.scsi_controller.ovf_subtype().into()),
                                    ("ResourceType", "6".into()),
                                ],
                            )?;
                            for (i, d) in ordered.iter().enumerate() {
                                let label = match d.role {
                                    DiskRole::Os => "Hard Disk 1 (OS)".to_string(),
                                    DiskRole::Retention => "Hard Disk 2 (retention)".to_string(),
                                };
                                item(
                                    w,
                                    vec![
                                        ("AddressOnParent", d.role.scsi_unit(def).to_string()),
                                        ("ElementName", label),
                                        ("HostResource", format!("ovf:/disk/{}", d.role.disk_id())),
                                        ("InstanceID", (4 + i).to_string()),
                                        ("Parent", "3".into()),
                                        ("ResourceType", "17".into()),
                                    ],
                                )?;
                            }
                            let nic = hw.nic.ovf_subtype();
                            item(
                                w,
                                vec![
                                    ("AutomaticAllocation", "true".into()),
                                    ("Connection", NETWORK_NAME.into()),
                                    (
                                        "Description",
                                        format!("{nic} ethernet adapter on \"{NETWORK_NAME}\""),
                                    ),
                                    ("ElementName", "Network adapter 1".into()),
                                    ("InstanceID", (4 + ordered.len()).to_string()),
                                    ("ResourceSubType", nic.into()),
                                    ("ResourceType", "10".into()),
                                ],
                            )?;
                            w.create_element("vmw:Config")
                                .with_attributes([
                                    ("ovf:required", "false"),
                                    ("vmw:key", "firmware"),
                                    ("vmw:value", hw.firmware.as_str()),
                                ])
                                .write_empty()?;
                            w.create_element("vmw:ExtraConfig")
                                .with_attributes([
                                    ("ovf:required", "false"),
                                    ("vmw:key", DISK_ENABLE_UUID),
                                    ("vmw:value", "TRUE"),
                                ])
                                .write_empty()?;
                            Ok(())
                        })?;
                    Ok(())
                })?;
            Ok(())
        })?;
    let mut xml = String::from_utf8(w.into_inner()).expect("quick-xml writes UTF-8");
    xml.push('\n');
    Ok(xml)
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// A ProductSection `Property`: what the deploy wizard asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfProperty {
    pub key: String,
    pub ovf_type: String,
    pub qualifiers: Option<String>,
    /// `vmw:qualifiers` (`Ip`: vSphere checks for an IP address).
    pub vmw_qualifiers: Option<String>,
    pub user_configurable: bool,
    pub password: bool,
    /// `ovf:value`, the default.
    pub value: Option<String>,
    pub label: Option<String>,
    pub description: Option<String>,
    pub offset: usize,
}

/// The hardware and packaging an OVF declares, as far as vSphere import and the boot test care.
/// Every element keeps `offset`, its byte offset in the descriptor, so that a finding can point
/// at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfDescriptor {
    /// `References/File`, in document order (the order the files must follow in the tar).
    pub files: Vec<OvfFile>,
    /// `DiskSection/Disk`, joined with the disk Items that attach them.
    pub disks: Vec<OvfDisk>,
    /// `NetworkSection/Network` names.
    pub networks: Vec<String>,
    /// `VirtualSystem/@ovf:id`.
    pub virtual_system_id: String,
    /// `VirtualSystem/Name`.
    pub name: Option<String>,
    pub os: OperatingSystem,
    /// `vssd:VirtualSystemType` split at whitespace (`vmx-14`, or a list like `vmx-13 vmx-14`).
    pub hardware_families: Vec<String>,
    pub hardware_offset: usize,
    /// `ResourceType` 3, `VirtualQuantity`.
    pub cpus: u32,
    /// `ResourceType` 4, in bytes (VirtualQuantity × AllocationUnits).
    pub memory_bytes: u64,
    /// Storage controllers (SCSI, IDE, SATA), by Item.
    pub controllers: Vec<OvfController>,
    /// Ethernet adapters.
    pub nics: Vec<OvfNic>,
    /// `vmw:Config` key/value pairs of the VirtualHardwareSection (e.g. `firmware`).
    pub config: Vec<OvfKeyValue>,
    /// `vmw:ExtraConfig` key/value pairs (e.g. `disk.EnableUUID`), anywhere in the hardware section.
    pub extra_config: Vec<OvfKeyValue>,
    /// Whether a `vmw:Config`/`vmw:ExtraConfig` appears before an Item (the schema wants them
    /// after every Item; xmllint does not notice).
    pub config_before_items: bool,
    pub product: Option<OvfProduct>,
    pub annotation: Option<String>,
    /// Byte offset of a `BootOrderSection`, which makes vSphere flip EFI images to BIOS.
    pub boot_order_section: Option<usize>,
    /// `VirtualHardwareSection ovf:transport`, split on spaces (`com.vmware.guestInfo`, `iso`).
    pub transports: Vec<String>,
    /// Byte offset of a VirtualBox-specific section (`vbox:Machine`).
    pub virtualbox_section: Option<usize>,
}

/// `References/File`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfFile {
    pub id: String,
    pub href: String,
    /// `ovf:size`; must equal the member's byte size.
    pub size: Option<u64>,
    /// `ovf:compression` (vSphere refuses compressed files).
    pub compression: Option<String>,
    pub offset: usize,
}

/// A disk of the DiskSection and where the hardware section attaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfDisk {
    pub disk_id: String,
    /// `ovf:fileRef`; `None` for an empty disk created at deploy time.
    pub file_ref: Option<String>,
    /// The referenced file's name in the OVA, when `file_ref` resolves.
    pub href: Option<String>,
    /// The referenced file's declared `ovf:size`.
    pub file_size: Option<u64>,
    /// Virtual size in bytes (capacity × capacityAllocationUnits).
    pub capacity_bytes: u64,
    pub populated_size: Option<u64>,
    pub format: Option<String>,
    /// The disk Item that attaches this disk, if any.
    pub attachment: Option<DiskAttachment>,
    pub offset: usize,
}

/// A disk Item (`ResourceType` 17): the controller and the unit on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskAttachment {
    /// `rasd:Parent`: the controller's InstanceID.
    pub controller_instance: String,
    /// `rasd:AddressOnParent` (the SCSI unit).
    pub unit: Option<u32>,
    pub offset: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControllerKind {
    Scsi,
    Ide,
    Sata,
}

/// A storage controller Item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfController {
    pub instance_id: String,
    pub kind: ControllerKind,
    /// `rasd:ResourceSubType`: `VirtualSCSI` (PVSCSI), `lsilogic`, `lsilogicsas`, `buslogic`, …
    pub subtype: Option<String>,
    /// `rasd:Address` (bus number).
    pub bus: Option<u32>,
    pub offset: usize,
}

/// An ethernet adapter Item (`ResourceType` 10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfNic {
    /// `VmxNet3`, `E1000`, `E1000e`, …
    pub subtype: Option<String>,
    pub connection: Option<String>,
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfKeyValue {
    pub key: String,
    pub value: String,
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatingSystem {
    /// CIM OperatingSystemSection `ovf:id`.
    pub cim_id: u32,
    /// `vmw:osType`, the vSphere guest id.
    pub vmw_os_type: Option<String>,
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfProduct {
    pub product: Option<String>,
    pub version: Option<String>,
    pub full_version: Option<String>,
    /// `ovf:class`: prefixes every property key in the OVF environment.
    pub class: Option<String>,
    pub properties: Vec<OvfProperty>,
}

impl OvfDescriptor {
    /// The SCSI controllers.
    pub fn scsi_controllers(&self) -> impl Iterator<Item = &OvfController> {
        self.controllers
            .iter()
            .filter(|c| c.kind == ControllerKind::Scsi)
    }
    pub fn controller(&self, instance_id: &str) -> Option<&OvfController> {
        self.controllers
            .iter()
            .find(|c| c.instance_id == instance_id)
    }
    pub fn extra_config(&self, key: &str) -> Option<&str> {
        self.extra_config
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| kv.value.as_str())
    }
    pub fn config(&self, key: &str) -> Option<&str> {
        self.config
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| kv.value.as_str())
    }
    /// The `vmx-NN` numbers of the declared hardware families (non-vmx families are skipped).
    pub fn vmx_versions(&self) -> Vec<u32> {
        self.hardware_families
            .iter()
            .filter_map(|f| f.strip_prefix("vmx-")?.parse().ok())
            .collect()
    }
}

/// Why a descriptor could not be read: the position in the XML and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("OVF byte {offset} (line {line}, column {column}): {message}")]
pub struct OvfParseError {
    pub offset: usize,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

fn err_at(xml: &str, offset: usize, message: impl Into<String>) -> OvfParseError {
    let before = &xml[..offset.min(xml.len())];
    let line = before.matches('\n').count() as u32 + 1;
    let column = (before.len() - before.rfind('\n').map_or(0, |i| i + 1)) as u32 + 1;
    OvfParseError {
        offset,
        line,
        column,
        message: message.into(),
    }
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

fn is(n: &Node, ns: &str, name: &str) -> bool {
    n.is_element() && n.tag_name().name() == name && n.tag_name().namespace() == Some(ns)
}

fn child<'a, 'i>(n: Node<'a, 'i>, ns: &str, name: &str) -> Option<Node<'a, 'i>> {
    n.children().find(|c| is(c, ns, name))
}

fn child_text(n: Node, ns: &str, name: &str) -> Option<String> {
    child(n, ns, name).map(|c| c.text().unwrap_or("").trim().to_string())
}

fn attr<'a>(n: Node<'a, '_>, ns: &str, name: &str) -> Option<&'a str> {
    n.attribute((ns, name))
}

impl OvfDescriptor {
    /// Parses an OVF 1.x descriptor (a single VirtualSystem). Fails on XML that is not
    /// well-formed, a missing Envelope/VirtualSystem/hardware section, or numbers that do not
    /// parse, naming the byte offset; consistency (files present, units unique, …) is left to
    /// the caller, which has the rest of the package.
    pub fn parse(xml: &str) -> Result<OvfDescriptor, OvfParseError> {
        let doc = roxmltree::Document::parse(xml).map_err(|e| {
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
        })?;
        let root = doc.root_element();
        if !is(&root, NS_OVF, "Envelope") {
            return Err(err_at(
                xml,
                root.range().start,
                format!(
                    "the root element is {:?} in namespace {:?}, not an OVF Envelope ({NS_OVF})",
                    root.tag_name().name(),
                    root.tag_name().namespace().unwrap_or("")
                ),
            ));
        }
        let num = |n: Node, what: &str, v: &str| -> Result<u64, OvfParseError> {
            v.trim().parse::<u64>().map_err(|_| {
                err_at(
                    xml,
                    n.range().start,
                    format!("{what} {v:?} is not a whole number"),
                )
            })
        };

        let mut files = Vec::new();
        if let Some(refs) = child(root, NS_OVF, "References") {
            for f in refs.children().filter(|c| is(c, NS_OVF, "File")) {
                let need = |name: &str| {
                    attr(f, NS_OVF, name).ok_or_else(|| {
                        err_at(
                            xml,
                            f.range().start,
                            format!("References/File lacks ovf:{name}"),
                        )
                    })
                };
                let size = match attr(f, NS_OVF, "size") {
                    Some(s) => Some(num(f, "ovf:size", s)?),
                    None => None,
                };
                files.push(OvfFile {
                    id: need("id")?.to_string(),
                    href: need("href")?.to_string(),
                    size,
                    compression: attr(f, NS_OVF, "compression").map(str::to_string),
                    offset: f.range().start,
                });
            }
        }

        let mut disks = Vec::new();
        for section in root.children().filter(|c| is(c, NS_OVF, "DiskSection")) {
            for d in section.children().filter(|c| is(c, NS_OVF, "Disk")) {
                let at = d.range().start;
                let disk_id = attr(d, NS_OVF, "diskId")
                    .ok_or_else(|| err_at(xml, at, "Disk lacks ovf:diskId"))?;
                let cap = attr(d, NS_OVF, "capacity")
                    .ok_or_else(|| err_at(xml, at, "Disk lacks ovf:capacity"))?;
                let cap = num(d, "ovf:capacity", cap)?;
                let units = attr(d, NS_OVF, "capacityAllocationUnits").unwrap_or("byte");
                let mult = allocation_unit_bytes(units).ok_or_else(|| {
                    err_at(
                        xml,
                        at,
                        format!("ovf:capacityAllocationUnits {units:?} is not a unit like \"byte\" or \"byte * 2^20\""),
                    )
                })?;
                let capacity_bytes = cap
                    .checked_mul(mult)
                    .ok_or_else(|| err_at(xml, at, "ovf:capacity × units overflows 64 bits"))?;
                let populated_size = match attr(d, NS_OVF, "populatedSize") {
                    Some(s) => Some(num(d, "ovf:populatedSize", s)?),
                    None => None,
                };
                let file_ref = attr(d, NS_OVF, "fileRef").map(str::to_string);
                let file = file_ref
                    .as_deref()
                    .and_then(|r| files.iter().find(|f: &&OvfFile| f.id == r));
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
        }

        let mut networks = Vec::new();
        for section in root.children().filter(|c| is(c, NS_OVF, "NetworkSection")) {
            for n in section.children().filter(|c| is(c, NS_OVF, "Network")) {
                if let Some(name) = attr(n, NS_OVF, "name") {
                    networks.push(name.to_string());
                }
            }
        }

        let systems: Vec<Node> = root
            .children()
            .filter(|c| is(c, NS_OVF, "VirtualSystem"))
            .collect();
        if let Some(coll) = child(root, NS_OVF, "VirtualSystemCollection") {
            return Err(err_at(
                xml,
                coll.range().start,
                "a VirtualSystemCollection (vApp) is not supported: one VirtualSystem expected",
            ));
        }
        let vs = match systems.as_slice() {
            [vs] => *vs,
            [] => {
                return Err(err_at(
                    xml,
                    root.range().start,
                    "the Envelope has no VirtualSystem",
                ))
            }
            [_, second, ..] => {
                return Err(err_at(
                    xml,
                    second.range().start,
                    "more than one VirtualSystem: one expected",
                ))
            }
        };
        let virtual_system_id = attr(vs, NS_OVF, "id").unwrap_or("").to_string();
        let name = child_text(vs, NS_OVF, "Name");

        let os_node = child(vs, NS_OVF, "OperatingSystemSection").ok_or_else(|| {
            err_at(
                xml,
                vs.range().start,
                "the VirtualSystem has no OperatingSystemSection",
            )
        })?;
        let os = OperatingSystem {
            cim_id: num(
                os_node,
                "OperatingSystemSection ovf:id",
                attr(os_node, NS_OVF, "id").unwrap_or(""),
            )? as u32,
            vmw_os_type: attr(os_node, NS_VMW, "osType").map(str::to_string),
            offset: os_node.range().start,
        };

        let product = child(vs, NS_OVF, "ProductSection").map(|p| OvfProduct {
            product: child_text(p, NS_OVF, "Product"),
            version: child_text(p, NS_OVF, "Version"),
            full_version: child_text(p, NS_OVF, "FullVersion"),
            class: attr(p, NS_OVF, "class").map(str::to_string),
            properties: p
                .children()
                .filter(|c| is(c, NS_OVF, "Property"))
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
        });
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
            err_at(
                xml,
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

        let mut cpus = None;
        let mut memory_bytes = None;
        let mut controllers = Vec::new();
        let mut nics = Vec::new();
        let mut attachments: Vec<(String, DiskAttachment)> = Vec::new();
        let mut config = Vec::new();
        let mut extra_config = Vec::new();
        let mut seen_config = false;
        let mut config_before_items = false;
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
                    config.push(kv);
                } else {
                    extra_config.push(kv);
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
                config_before_items = true;
            }
            let rasd = |name: &str| {
                n.children()
                    .find(|c| c.is_element() && c.tag_name().name() == name)
                    .map(|c| c.text().unwrap_or("").trim().to_string())
            };
            let at = n.range().start;
            let rtype = rasd("ResourceType")
                .ok_or_else(|| err_at(xml, at, "an Item lacks rasd:ResourceType"))?;
            let rtype = num(n, "rasd:ResourceType", &rtype)?;
            let instance_id = rasd("InstanceID").unwrap_or_default();
            let quantity = |what: &str| -> Result<u64, OvfParseError> {
                let q = rasd("VirtualQuantity").ok_or_else(|| {
                    err_at(
                        xml,
                        at,
                        format!("the {what} Item lacks rasd:VirtualQuantity"),
                    )
                })?;
                num(n, "rasd:VirtualQuantity", &q)
            };
            match rtype {
                3 if cpus.is_none() => cpus = Some(quantity("CPU")? as u32),
                4 if memory_bytes.is_none() => {
                    let q = quantity("memory")?;
                    let units = rasd("AllocationUnits").unwrap_or_else(|| "byte * 2^20".into());
                    let mult = allocation_unit_bytes(&units).ok_or_else(|| {
                        err_at(
                            xml,
                            at,
                            format!("memory rasd:AllocationUnits {units:?} is not understood"),
                        )
                    })?;
                    memory_bytes = Some(q.saturating_mul(mult));
                }
                5 | 6 | 20 => {
                    let bus = match rasd("Address") {
                        Some(a) if !a.is_empty() => Some(num(n, "rasd:Address", &a)? as u32),
                        _ => None,
                    };
                    controllers.push(OvfController {
                        instance_id,
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
                10 => nics.push(OvfNic {
                    subtype: rasd("ResourceSubType"),
                    connection: rasd("Connection"),
                    offset: at,
                }),
                17 => {
                    let host = rasd("HostResource").unwrap_or_default();
                    let disk_id = host
                        .strip_prefix("ovf:/disk/")
                        .or_else(|| host.strip_prefix("/disk/"))
                        .ok_or_else(|| {
                            err_at(
                                xml,
                                at,
                                format!("disk Item rasd:HostResource {host:?} is not ovf:/disk/<diskId>"),
                            )
                        })?;
                    let unit = match rasd("AddressOnParent") {
                        Some(a) if !a.is_empty() => {
                            Some(num(n, "rasd:AddressOnParent", &a)? as u32)
                        }
                        _ => None,
                    };
                    attachments.push((
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
        }
        for (disk_id, a) in attachments {
            let Some(d) = disks.iter_mut().find(|d| d.disk_id == disk_id) else {
                return Err(err_at(
                    xml,
                    a.offset,
                    format!("a disk Item refers to ovf:/disk/{disk_id}, which the DiskSection does not declare"),
                ));
            };
            if d.attachment.is_some() {
                return Err(err_at(
                    xml,
                    a.offset,
                    format!("disk {disk_id} is attached by two Items"),
                ));
            }
            d.attachment = Some(a);
        }
        let hw_at = hw.range().start;
        Ok(OvfDescriptor {
            files,
            disks,
            networks,
            virtual_system_id,
            name,
            os,
            hardware_families,
            hardware_offset: hw_at,
            cpus: cpus.ok_or_else(|| err_at(xml, hw_at, "no CPU Item (rasd:ResourceType 3)"))?,
            memory_bytes: memory_bytes
                .ok_or_else(|| err_at(xml, hw_at, "no memory Item (rasd:ResourceType 4)"))?,
            controllers,
            nics,
            config,
            extra_config,
            config_before_items,
            product,
            annotation,
            boot_order_section,
            transports,
            virtualbox_section,
        })
    }
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
