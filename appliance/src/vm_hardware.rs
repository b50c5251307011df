//! The virtual hardware a VM of the appliance gets: from an OVA's descriptor (what a hypervisor
//! importing it would build) or from the definition (for booting raw disk images). Pure: it
//! reads no file and runs no process; which emulator device stands in for each model is the
//! launcher's business (`xtask`'s `qemu`).

use crate::definition::{NicKind, ScsiController, OS_DISK_SCSI_UNIT};
use crate::ovf::{
    offers_ovf_environment, ControllerKind, OvfDescriptor, CDROM_IDE_BUS, CDROM_IDE_UNIT,
};
use crate::Definition;
use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

#[derive(Debug, Clone)]
pub struct VmHardware {
    pub cpus: u32,
    pub memory_mib: u64,
    pub scsi: ScsiController,
    pub nic: NicKind,
    /// In SCSI unit order.
    pub disks: Vec<VmDisk>,
    /// The CD-ROM drive the hardware declares, if any (the OVF `iso` transport carries
    /// `ovf-env.xml` in it).
    pub cdrom: Option<CdromDrive>,
}

/// A CD-ROM drive on an IDE channel, empty or holding an ISO image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdromDrive {
    /// The IDE channel (0 primary, 1 secondary): the controller's `rasd:Address`.
    pub ide_bus: u32,
    /// Master (0) or slave (1) on the channel.
    pub unit: u32,
    /// The medium in the drive; `None` for an empty drive, as a VM is imported.
    pub iso: Option<Utf8PathBuf>,
}

#[derive(Debug, Clone)]
pub struct VmDisk {
    pub image: Utf8PathBuf,
    pub format: DiskFormat,
    pub unit: u32,
}

/// How a disk image file is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    /// An OVA's streamOptimized VMDK, as extracted.
    Vmdk,
    /// A plain disk image.
    Raw,
}

impl DiskFormat {
    /// The name emulators use for it (QEMU's `format=`).
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Raw => "raw",
        }
    }
}

impl VmHardware {
    /// The hardware `ovf` declares, its disks being the members named in `extracted` that were
    /// written into `dir`. Fails on what no VM here could be given (an unknown controller or
    /// adapter, a disk without a file or a SCSI unit).
    pub fn from_ovf(ovf: &OvfDescriptor, dir: &Utf8Path, extracted: &[String]) -> Result<Self> {
        let controller = ovf
            .scsi_controllers()
            .next()
            .context("declares no SCSI controller")?;
        let subtype = controller.subtype.as_deref().unwrap_or("");
        let scsi = [ScsiController::Paravirtual, ScsiController::Lsilogic, ScsiController::LsilogicSas]
            .into_iter()
            .find(|c| c.ovf_subtype().eq_ignore_ascii_case(subtype))
            .with_context(|| format!("SCSI controller subtype {subtype:?} has no QEMU model here (VirtualSCSI, lsilogic, lsilogicsas)"))?;
        let nic_subtype = ovf
            .nics
            .first()
            .and_then(|n| n.subtype.as_deref())
            .context("declares no network adapter")?;
        let nic = [NicKind::Vmxnet3, NicKind::E1000]
            .into_iter()
            .find(|n| n.ovf_subtype().eq_ignore_ascii_case(nic_subtype))
            .with_context(|| {
                format!(
                    "network adapter subtype {nic_subtype:?} has no QEMU model here (VmxNet3, E1000)"
                )
            })?;
        let mut disks = Vec::new();
        for d in &ovf.disks {
            let href = d
                .href
                .as_deref()
                .with_context(|| format!("disk {} references no file", d.disk_id))?;
            if !extracted.iter().any(|e| e == href) {
                bail!(
                    "disk {} references {href}, which the OVA does not contain",
                    d.disk_id
                );
            }
            let attachment = d
                .attachment
                .as_ref()
                .with_context(|| format!("disk {} is attached to no controller", d.disk_id))?;
            if attachment.controller_instance != controller.instance_id {
                bail!(
                    "disk {} is attached to controller {}, not the SCSI controller {}",
                    d.disk_id,
                    attachment.controller_instance,
                    controller.instance_id
                );
            }
            let unit = attachment.unit.with_context(|| {
                format!("disk {} has no AddressOnParent (SCSI unit)", d.disk_id)
            })?;
            disks.push(VmDisk {
                image: dir.join(href),
                format: DiskFormat::Vmdk,
                unit,
            });
        }
        if disks.is_empty() {
            bail!("declares no disks");
        }
        disks.sort_by_key(|d| d.unit);
        Ok(VmHardware {
            cpus: ovf.cpus,
            memory_mib: ovf.memory_bytes / (1024 * 1024),
            scsi,
            nic,
            disks,
            cdrom: cdrom_of(ovf)?,
        })
    }

    /// The hardware the definition declares, with raw images on its SCSI units: the OS disk's
    /// first, then the retention disk's (images beyond those two are not attached).
    pub fn from_definition(def: &Definition, raw: &[Utf8PathBuf]) -> Self {
        let units = [OS_DISK_SCSI_UNIT, def.retention_disk.scsi_unit];
        VmHardware {
            cpus: def.hardware.vcpus,
            memory_mib: def.hardware.memory.mib(),
            scsi: def.hardware.scsi_controller,
            nic: def.hardware.nic,
            disks: raw
                .iter()
                .zip(units)
                .map(|(p, unit)| VmDisk {
                    image: p.clone(),
                    format: DiskFormat::Raw,
                    unit,
                })
                .collect(),
            cdrom: offers_ovf_environment(def).then_some(CdromDrive {
                ide_bus: CDROM_IDE_BUS,
                unit: CDROM_IDE_UNIT,
                iso: None,
            }),
        }
    }
}

/// The first CD-ROM drive the OVF declares, on the IDE channel and unit it names. An IDE channel
/// has two units and a PC two channels; a drive elsewhere (SATA, or an address a PC does not
/// have) has no device here.
fn cdrom_of(ovf: &OvfDescriptor) -> Result<Option<CdromDrive>> {
    let Some(cd) = ovf.cdroms.first() else {
        return Ok(None);
    };
    let ctl = ovf.controller(&cd.controller_instance).with_context(|| {
        format!(
            "the CD-ROM drive's parent {:?} is no controller the OVF declares",
            cd.controller_instance
        )
    })?;
    if ctl.kind != ControllerKind::Ide {
        bail!(
            "the CD-ROM drive is on a {:?} controller: only IDE CD-ROM drives have a QEMU model here",
            ctl.kind
        );
    }
    let (ide_bus, unit) = (ctl.bus.unwrap_or(0), cd.unit.unwrap_or(0));
    if ide_bus > 1 || unit > 1 {
        bail!("the CD-ROM drive is at IDE {ide_bus}:{unit}; a PC has IDE 0:0 to 1:1");
    }
    Ok(Some(CdromDrive {
        ide_bus,
        unit,
        iso: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovf::{render, BuildInfo, DiskFile, DiskRole};

    fn def() -> Definition {
        let workspace = Utf8Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        Definition::load(&workspace.join(crate::definition::DEFAULT_DEFINITION)).unwrap()
    }

    #[test]
    fn the_ovf_of_a_definition_maps_to_the_hardware_it_declares() {
        let mut d = def();
        d.hardware.scsi_controller = ScsiController::LsilogicSas;
        d.hardware.nic = NicKind::E1000;
        let files: Vec<DiskFile> = DiskRole::ALL
            .iter()
            .map(|&role| DiskFile {
                role,
                file_size: 1 << 20,
                capacity: role.capacity(&d),
                populated_size: 1 << 20,
            })
            .collect();
        let build = BuildInfo {
            build_id: "test".into(),
        };
        let ovf = OvfDescriptor::parse(&render(&d, &files, &build).unwrap()).unwrap();
        let names: Vec<String> = DiskRole::ALL.iter().map(|r| r.file_name(&d)).collect();
        let dir = Utf8Path::new("/nonexistent");
        let hw = VmHardware::from_ovf(&ovf, dir, &names).unwrap();
        assert_eq!(
            (hw.scsi, hw.nic),
            (ScsiController::LsilogicSas, NicKind::E1000)
        );
        assert_eq!(
            (hw.cpus, hw.memory_mib),
            (d.hardware.vcpus, d.hardware.memory.mib())
        );
        let units: Vec<u32> = hw.disks.iter().map(|x| x.unit).collect();
        assert_eq!(units, vec![OS_DISK_SCSI_UNIT, d.retention_disk.scsi_unit]);
        assert_eq!(hw.disks[0].image, dir.join(&names[0]));
        assert_eq!(hw.disks[0].format, DiskFormat::Vmdk);
        assert_eq!(
            hw.cdrom,
            Some(CdromDrive {
                ide_bus: CDROM_IDE_BUS,
                unit: CDROM_IDE_UNIT,
                iso: None
            }),
            "the iso transport's drive"
        );
        d.deploy.properties = false;
        let bare = OvfDescriptor::parse(&render(&d, &files, &build).unwrap()).unwrap();
        assert!(bare.transports.is_empty() && bare.cdroms.is_empty());
        assert_eq!(
            VmHardware::from_ovf(&bare, dir, &names).unwrap().cdrom,
            None
        );
        let err = VmHardware::from_ovf(&ovf, dir, &names[..1])
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not contain"), "{err}");
    }

    #[test]
    fn raw_images_go_on_the_os_and_retention_units() {
        let d = def();
        let hw = VmHardware::from_definition(&d, &["os.raw".into(), "r.raw".into()]);
        let disks: Vec<(&str, u32, DiskFormat)> = hw
            .disks
            .iter()
            .map(|x| (x.image.as_str(), x.unit, x.format))
            .collect();
        assert_eq!(
            disks,
            [
                ("os.raw", OS_DISK_SCSI_UNIT, DiskFormat::Raw),
                ("r.raw", d.retention_disk.scsi_unit, DiskFormat::Raw)
            ]
        );
        assert_eq!(hw.scsi, d.hardware.scsi_controller);
        assert_eq!(
            hw.cdrom.map(|c| (c.ide_bus, c.unit)),
            Some((CDROM_IDE_BUS, CDROM_IDE_UNIT))
        );
    }

    #[test]
    fn a_cdrom_a_pc_cannot_have_is_refused_with_its_place() {
        let xml = |bus: u32, unit: u32, kind: u32| {
            format!(
                r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"><References><File ovf:id="f" ovf:href="d.vmdk"/></References><DiskSection><Disk ovf:diskId="d" ovf:fileRef="f" ovf:capacity="1"/></DiskSection><VirtualSystem ovf:id="v"><OperatingSystemSection ovf:id="36"/><VirtualHardwareSection>
<Item><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
<Item><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>512</rasd:VirtualQuantity></Item>
<Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>6</rasd:ResourceType><rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType></Item>
<Item><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>{kind}</rasd:ResourceType><rasd:Address>{bus}</rasd:Address></Item>
<Item><rasd:HostResource>ovf:/disk/d</rasd:HostResource><rasd:Parent>3</rasd:Parent><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ResourceType>17</rasd:ResourceType></Item>
<Item><rasd:ResourceType>10</rasd:ResourceType><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType></Item>
<Item><rasd:Parent>4</rasd:Parent><rasd:AddressOnParent>{unit}</rasd:AddressOnParent><rasd:ResourceType>15</rasd:ResourceType></Item>
</VirtualHardwareSection></VirtualSystem></Envelope>"#
            )
        };
        let hw = |x: String| {
            let ovf = OvfDescriptor::parse(&x).unwrap();
            VmHardware::from_ovf(&ovf, Utf8Path::new("/x"), &["d.vmdk".to_string()])
        };
        let ok = hw(xml(0, 1, 5)).unwrap().cdrom.unwrap();
        assert_eq!((ok.ide_bus, ok.unit), (0, 1));
        let err = hw(xml(2, 0, 5)).unwrap_err().to_string();
        assert!(err.contains("IDE 2:0"), "{err}");
        let err = hw(xml(0, 0, 20)).unwrap_err().to_string();
        assert!(err.contains("Sata"), "{err}");
    }
}
