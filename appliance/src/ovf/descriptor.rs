//! [`OvfDescriptor`]: the hardware and packaging an OVF declares, as far as vSphere import and
//! the boot test care, each element with its byte offset in the descriptor so that a finding can
//! point at it. Types and lookups only; `parser` fills them in.

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
    /// CD/DVD drives (`ResourceType` 15 and 16), in document order.
    pub cdroms: Vec<OvfCdrom>,
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

/// A CD or DVD drive Item (`ResourceType` 15 or 16): the controller and the unit on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfCdrom {
    /// `rasd:Parent`: the controller's InstanceID.
    pub controller_instance: String,
    /// `rasd:AddressOnParent` (master 0, slave 1 on IDE).
    pub unit: Option<u32>,
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
    /// Whether the OVF environment may reach the guest on a CD (the `iso` transport).
    pub fn offers_iso_transport(&self) -> bool {
        self.transports.iter().any(|t| t == "iso")
    }
    /// The CD/DVD drives attached to an IDE or SATA controller the descriptor declares: where
    /// vSphere can insert the `iso` transport's `ovf-env.xml`.
    pub fn attached_cdroms(&self) -> impl Iterator<Item = (&OvfCdrom, &OvfController)> {
        self.cdroms.iter().filter_map(|c| {
            let ctl = self.controller(&c.controller_instance)?;
            matches!(ctl.kind, ControllerKind::Ide | ControllerKind::Sata).then_some((c, ctl))
        })
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
