//! The OS disk's partition table, computed from the definition: where each partition starts and
//! how long it is, 1 MiB aligned, in definition order, the `grow` partition taking what is left.
//! Also writes the MBR partition table (pure bytes; no tool is run).

use crate::definition::{OsDisk, Partition};
use crate::units::{ByteSize, MIB, SECTOR};

/// The first partition starts at 1 MiB (sector 2048), leaving room for a BIOS boot loader's
/// core image between the MBR and the first partition.
pub const FIRST_PARTITION_OFFSET: u64 = MIB;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedPartition {
    /// 1-based MBR partition number (`sda1` …).
    pub number: u32,
    pub partition: Partition,
    pub offset: u64,
    pub size: u64,
    pub bootable: bool,
}

impl PlacedPartition {
    pub fn start_sector(&self) -> u64 {
        self.offset / SECTOR
    }
    pub fn sectors(&self) -> u64 {
        self.size / SECTOR
    }
    /// MBR partition type: 0x82 Linux swap, 0x83 Linux.
    pub fn mbr_type(&self) -> u8 {
        if self.partition.is_swap() {
            0x82
        } else {
            0x83
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLayout {
    pub disk_size: u64,
    pub partitions: Vec<PlacedPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("the partitions need {needed} (plus 1MiB for the partition table and boot loader) but os_disk.size is {disk}")]
    TooLarge { needed: ByteSize, disk: ByteSize },
    #[error("the disk is larger than an MBR partition table can address (2TiB)")]
    TooLargeForMbr,
}

impl DiskLayout {
    pub fn for_os_disk(disk: &OsDisk) -> Result<DiskLayout, LayoutError> {
        let disk_size = disk.size.bytes();
        if disk_size / SECTOR > u64::from(u32::MAX) {
            return Err(LayoutError::TooLargeForMbr);
        }
        let usable = disk_size.saturating_sub(FIRST_PARTITION_OFFSET);
        let minimum: u64 = disk
            .partitions
            .iter()
            .map(|p| round_up_mib(p.size.bytes()))
            .sum();
        if minimum > usable {
            return Err(LayoutError::TooLarge {
                needed: ByteSize(minimum),
                disk: disk.size,
            });
        }
        let spare = usable - minimum;
        let mut offset = FIRST_PARTITION_OFFSET;
        let mut partitions = Vec::new();
        for (i, p) in disk.partitions.iter().enumerate() {
            let mut size = round_up_mib(p.size.bytes());
            if p.grow {
                size += spare / MIB * MIB;
            }
            partitions.push(PlacedPartition {
                number: i as u32 + 1,
                partition: p.clone(),
                offset,
                size,
                bootable: p.mount == "/",
            });
            offset += size;
        }
        Ok(DiskLayout {
            disk_size,
            partitions,
        })
    }

    /// The partition mounted at `mount` (`"/"`, `"swap"` …).
    pub fn by_mount(&self, mount: &str) -> Option<&PlacedPartition> {
        self.partitions.iter().find(|p| p.partition.mount == mount)
    }

    /// The 64-byte partition table and boot signature to place at offset 446 of sector 0.
    /// CHS fields hold the "beyond CHS" marker (LBA addressing only), as current tools write.
    pub fn mbr_partition_table(&self) -> [u8; 66] {
        let mut t = [0u8; 66];
        for (i, p) in self.partitions.iter().enumerate().take(4) {
            let e = &mut t[i * 16..i * 16 + 16];
            e[0] = if p.bootable { 0x80 } else { 0 };
            e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
            e[4] = p.mbr_type();
            e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
            e[8..12].copy_from_slice(&(p.start_sector() as u32).to_le_bytes());
            e[12..16].copy_from_slice(&(p.sectors() as u32).to_le_bytes());
        }
        t[64] = 0x55;
        t[65] = 0xaa;
        t
    }
}

fn round_up_mib(b: u64) -> u64 {
    b.div_ceil(MIB) * MIB
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::FileSystem;

    fn part(mount: &str, mib: u64, grow: bool) -> Partition {
        Partition {
            mount: mount.into(),
            fs: if mount == "swap" {
                FileSystem::Swap
            } else {
                FileSystem::Ext4
            },
            size: ByteSize::from_mib(mib),
            grow,
            label: mount.trim_start_matches('/').replace('/', "-"),
        }
    }

    #[test]
    fn partitions_are_aligned_contiguous_and_the_grower_takes_the_rest() {
        let disk = OsDisk {
            size: ByteSize::from_mib(4096),
            partitions: vec![
                part("/", 1024, true),
                part("/var/crash", 512, false),
                part("swap", 256, false),
            ],
        };
        let l = DiskLayout::for_os_disk(&disk).unwrap();
        assert_eq!(l.partitions[0].offset, MIB);
        assert_eq!(l.partitions[0].size, (4096 - 1 - 512 - 256) * MIB);
        assert_eq!(
            l.partitions[1].offset,
            l.partitions[0].offset + l.partitions[0].size
        );
        let last = l.partitions.last().unwrap();
        assert_eq!(last.offset + last.size, 4096 * MIB);
        assert!(l.partitions[0].bootable && !l.partitions[1].bootable);
    }

    #[test]
    fn partitions_larger_than_the_disk_are_refused() {
        let disk = OsDisk {
            size: ByteSize::from_mib(1024),
            partitions: vec![part("/", 1024, false), part("swap", 1, false)],
        };
        assert!(matches!(
            DiskLayout::for_os_disk(&disk),
            Err(LayoutError::TooLarge { .. })
        ));
    }

    #[test]
    fn the_mbr_table_encodes_start_length_type_and_boot_flag() {
        let disk = OsDisk {
            size: ByteSize::from_mib(2048),
            partitions: vec![part("/", 1024, false), part("swap", 256, false)],
        };
        let t = DiskLayout::for_os_disk(&disk)
            .unwrap()
            .mbr_partition_table();
        assert_eq!(t[0], 0x80);
        assert_eq!(t[4], 0x83);
        assert_eq!(u32::from_le_bytes(t[8..12].try_into().unwrap()), 2048);
        assert_eq!(
            u32::from_le_bytes(t[12..16].try_into().unwrap()),
            1024 * 2048
        );
        assert_eq!(t[16 + 4], 0x82);
        assert_eq!(&t[64..], &[0x55, 0xaa]);
    }
}
