//! The virtual hardware a VM of the appliance gets: from an OVA's descriptor (what a hypervisor
//! importing it would build) or from the definition (for booting raw disk images). Pure: it
//! reads no file and runs no process; which emulator device stands in for each model is the
//! launcher's business (`xtask`'s `qemu`).

use crate::definition::{NicKind, ScsiController, OS_DISK_SCSI_UNIT};
use crate::ovf::OvfDescriptor;
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
    /// An ISO image on an IDE CD-ROM (the OVF `iso` transport carries `ovf-env.xml` this way).
    pub cdrom: Option<Utf8PathBuf>,
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
            cdrom: None,
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
            cdrom: None,
        }
    }
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
    }
}
