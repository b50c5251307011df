//! Writing the OVF 1.x descriptor from the appliance definition with quick-xml (every
//! attribute and text is escaped by the writer), one function per section in DSP8023 order:
//! References, DiskSection, NetworkSection, VirtualSystem (annotation, product, guest OS,
//! virtual hardware). No I/O.

use super::{
    offers_ovf_environment, DiskRole, CDROM_IDE_BUS, CDROM_IDE_UNIT, DISK_ENABLE_UUID,
    NETWORK_NAME, NS_OVF, NS_RASD, NS_VMW, NS_VSSD, NS_XSI, STREAM_OPTIMIZED_FORMAT,
};
use crate::definition::{Definition, DeployProperty, DeployType, DEPLOY_PRODUCT_CLASS};
use crate::units::MIB;
use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::Writer;
use std::io;

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
    let ordered = ordered_disks(def, disks)?;
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
            references(w, def, &ordered)?;
            disk_section(w, &ordered)?;
            network_section(w)?;
            virtual_system(w, def, &ordered, build)
        })?;
    let mut xml = String::from_utf8(w.into_inner()).expect("quick-xml writes UTF-8");
    xml.push('\n');
    Ok(xml)
}

/// One disk file per role, in References order, each of the definition's capacity.
fn ordered_disks<'d>(
    def: &Definition,
    disks: &'d [DiskFile],
) -> Result<Vec<&'d DiskFile>, OvfWriteError> {
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
    Ok(ordered)
}

fn references(w: &mut W, def: &Definition, ordered: &[&DiskFile]) -> io::Result<()> {
    w.create_element("References").write_inner_content(|w| {
        for d in ordered {
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
    Ok(())
}

fn disk_section(w: &mut W, ordered: &[&DiskFile]) -> io::Result<()> {
    w.create_element("DiskSection").write_inner_content(|w| {
        text(w, "Info", "Virtual disk information")?;
        for d in ordered {
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
    Ok(())
}

fn network_section(w: &mut W) -> io::Result<()> {
    w.create_element("NetworkSection")
        .write_inner_content(|w| {
            text(w, "Info", "The list of logical networks")?;
            w.create_element("Network")
                .with_attribute(("ovf:name", NETWORK_NAME))
                .write_inner_content(|w| {
                    text(w, "Description", &format!("The {NETWORK_NAME} network"))
                })?;
            Ok(())
        })?;
    Ok(())
}

fn virtual_system(
    w: &mut W,
    def: &Definition,
    ordered: &[&DiskFile],
    build: &BuildInfo,
) -> io::Result<()> {
    let name = def.appliance.name.as_str();
    w.create_element("VirtualSystem")
        .with_attribute(("ovf:id", name))
        .write_inner_content(|w| {
            text(w, "Info", "The master-target appliance for failback")?;
            text(w, "Name", name)?;
            annotation_section(w, def, build)?;
            product_section(w, def, build)?;
            operating_system_section(w, def)?;
            virtual_hardware_section(w, def, ordered)
        })?;
    Ok(())
}

fn annotation_section(w: &mut W, def: &Definition, build: &BuildInfo) -> io::Result<()> {
    let name = def.appliance.name.as_str();
    let version = def.appliance.version.as_str();
    let compat = def.appliance.vsphere_compat;
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
    Ok(())
}

fn product_section(w: &mut W, def: &Definition, build: &BuildInfo) -> io::Result<()> {
    let name = def.appliance.name.as_str();
    let version = def.appliance.version.as_str();
    let mut product = w.create_element("ProductSection");
    if def.deploy.properties {
        product = product.with_attribute(("ovf:class", DEPLOY_PRODUCT_CLASS));
    }
    product.write_inner_content(|w| {
        text(w, "Info", "Information about the installed software")?;
        text(w, "Product", name)?;
        text(w, "Version", version)?;
        text(
            w,
            "FullVersion",
            &format!("{version} build {}", build.build_id),
        )?;
        if def.deploy.properties {
            for p in DeployProperty::ALL {
                deploy_property(w, def, p)?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

fn operating_system_section(w: &mut W, def: &Definition) -> io::Result<()> {
    let (guest_id, cim_os) = def.appliance.vsphere_compat.guest_os(def.appliance.base);
    w.create_element("OperatingSystemSection")
        .with_attributes([
            ("ovf:id", cim_os.to_string().as_str()),
            ("vmw:osType", guest_id),
        ])
        .write_inner_content(|w| text(w, "Info", "The kind of installed guest operating system"))?;
    Ok(())
}

fn virtual_hardware_section(w: &mut W, def: &Definition, ordered: &[&DiskFile]) -> io::Result<()> {
    let name = def.appliance.name.as_str();
    let hw = &def.hardware;
    let mut hardware = w.create_element("VirtualHardwareSection");
    if offers_ovf_environment(def) {
        hardware = hardware.with_attribute(("ovf:transport", OVF_ENV_TRANSPORTS));
    }
    hardware.write_inner_content(|w| {
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
        hardware_items(w, def, ordered)?;
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
}

/// The CPU, memory, SCSI controller, disk and NIC Items, and with the OVF environment an IDE
/// controller and its CD-ROM drive (the `iso` transport's `ovf-env.xml` goes into that drive).
fn hardware_items(w: &mut W, def: &Definition, ordered: &[&DiskFile]) -> io::Result<()> {
    let hw = &def.hardware;
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
    if offers_ovf_environment(def) {
        let ide = (5 + ordered.len()).to_string();
        item(
            w,
            vec![
                ("Address", CDROM_IDE_BUS.to_string()),
                ("Description", "IDE Controller".into()),
                (
                    "ElementName",
                    format!("VirtualIDEController {CDROM_IDE_BUS}"),
                ),
                ("InstanceID", ide.clone()),
                ("ResourceType", "5".into()),
            ],
        )?;
        // Not connected at power-on: vSphere inserts and connects the transport's ISO itself
        // (a remote-passthrough backing is what VMware's own exports declare for an empty drive).
        item(
            w,
            vec![
                ("AddressOnParent", CDROM_IDE_UNIT.to_string()),
                ("AutomaticAllocation", "false".into()),
                (
                    "Description",
                    "CD-ROM drive for the OVF environment (iso transport)".into(),
                ),
                ("ElementName", "CD/DVD drive 1".into()),
                ("InstanceID", (6 + ordered.len()).to_string()),
                ("Parent", ide),
                ("ResourceSubType", "vmware.cdrom.remotepassthrough".into()),
                ("ResourceType", "15".into()),
            ],
        )?;
    }
    Ok(())
}
