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
//!
//! `writer` renders the descriptor, `descriptor` holds the [`OvfDescriptor`] types and `parser`
//! reads any descriptor into them; `environment` writes the OVF environment a guest receives; this file keeps the names both sides share (namespaces,
//! the disk roles and their file names).

mod descriptor;
mod environment;
mod parser;
mod writer;

pub use descriptor::{
    ControllerKind, DiskAttachment, OperatingSystem, OvfCdrom, OvfController, OvfDescriptor,
    OvfDisk, OvfFile, OvfKeyValue, OvfNic, OvfProduct, OvfProperty,
};
pub use environment::{render_environment, NS_OE};
pub use parser::{allocation_unit_bytes, OvfParseError};
pub use writer::{render, BuildInfo, DiskFile, OvfWriteError, OVF_ENV_TRANSPORTS};

use crate::definition::{Definition, OS_DISK_SCSI_UNIT};
use std::fmt;

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

/// The IDE bus (`rasd:Address` of the IDE controller) and unit of the CD-ROM drive the OVF
/// declares for the `iso` transport: the secondary channel's master, as VMware's own templates
/// place it (the primary is where a guest expects a hard disk).
pub const CDROM_IDE_BUS: u32 = 1;
pub const CDROM_IDE_UNIT: u32 = 0;

/// Whether the OVF offers the OVF environment transports (`com.vmware.guestInfo iso`), and with
/// them a CD-ROM drive on IDE for the `iso` transport: whenever it offers deploy-time properties.
/// vSphere hands the `iso` transport's `ovf-env.xml` to the guest in the VM's CD-ROM drive, so
/// the transport without the drive would deliver nothing (el6 has no VMware tools).
pub fn offers_ovf_environment(def: &Definition) -> bool {
    def.deploy.properties
}

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
