//! Installing GRUB for BIOS into a disk image's first megabyte, as bytes: GRUB's `boot.img` goes
//! into the MBR's code area (keeping the disk signature and the partition table) and the core
//! image (`grub-mkimage -O i386-pc`) into the gap before the first partition, with the fields
//! `grub-bios-setup` patches. That tool cannot be used on an image file without a device node,
//! hence this module. It works on byte buffers only; reading GRUB's files and writing the image
//! is the caller's job.
//!
//! The offsets come from GRUB's `include/grub/i386/pc/boot.h` (the MBR) and the last 12 bytes of
//! `diskboot.img`, the first sector of every i386-pc core image (its block list).

use crate::units::SECTOR;

/// Bytes of `boot.img` that are boot code: the rest of the sector is the disk signature, the
/// partition table and the boot signature, which belong to the disk.
const MBR_CODE_END: usize = 0x1b8;
/// The 64-bit LBA of the core image's first sector (`GRUB_BOOT_MACHINE_KERNEL_SECTOR`).
const KERNEL_SECTOR: usize = 0x5c;
/// The boot drive number; 0xff means "the drive the BIOS booted from"
/// (`GRUB_BOOT_MACHINE_BOOT_DRIVE`).
const BOOT_DRIVE: usize = 0x64;
/// A two-byte jump over a work-around for BIOSes passing a wrong drive in DL
/// (`GRUB_BOOT_MACHINE_DRIVE_CHECK`); on a hard disk `grub-bios-setup` replaces it with NOPs so
/// the work-around runs.
const DRIVE_CHECK: usize = 0x66;
/// The block list entry at the end of the core image's first sector: start LBA (u64), sector
/// count (u16), load segment (u16).
const BLOCKLIST: usize = 0x200 - 12;
/// The segment diskboot loads the rest of the core image to (`GRUB_BOOT_I386_PC_KERNEL_SEG`
/// + one sector), which `grub-mkimage` writes; checking it tells a core image from other data.
const CORE_LOAD_SEGMENT: u16 = 0x800 + (SECTOR as u16 >> 4);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootloaderError {
    #[error("boot.img is {0} bytes; GRUB's i386-pc boot.img is exactly 512")]
    BootImageSize(usize),
    #[error("boot.img has no 55 AA boot signature at byte 510: is it GRUB's i386-pc boot.img?")]
    BootImageSignature,
    #[error("the core image is {0} bytes, less than one sector: was it made with grub-mkimage -O i386-pc?")]
    CoreTooSmall(usize),
    #[error("the core image's block list at byte {BLOCKLIST} has load segment {0:#06x}, not {CORE_LOAD_SEGMENT:#06x}: it is not an i386-pc core image (grub-mkimage -O i386-pc)")]
    NotACoreImage(u16),
    #[error("the core image needs {needed} sectors from sector {start}, but the first partition starts at sector {first_partition}: drop modules from grub-mkimage or move the partition")]
    CoreDoesNotFit {
        needed: u64,
        start: u64,
        first_partition: u64,
    },
    #[error("the MBR sector is {0} bytes; expected 512")]
    MbrSize(usize),
}

/// Where the core image goes: sector 1, right after the MBR (the "MBR gap").
pub const CORE_IMAGE_SECTOR: u64 = 1;

/// Writes GRUB's boot code into `mbr` (the disk's sector 0, which already holds the partition
/// table) and patches `core` in place so that it loads itself from `CORE_IMAGE_SECTOR`.
/// `first_partition_sector` bounds the gap the core image must fit in. The returned offset is
/// where `core` must be written.
pub fn install_bios_boot(
    mbr: &mut [u8],
    boot_img: &[u8],
    core: &mut [u8],
    first_partition_sector: u64,
) -> Result<u64, BootloaderError> {
    if mbr.len() != SECTOR as usize {
        return Err(BootloaderError::MbrSize(mbr.len()));
    }
    if boot_img.len() != SECTOR as usize {
        return Err(BootloaderError::BootImageSize(boot_img.len()));
    }
    if boot_img[510..512] != [0x55, 0xaa] {
        return Err(BootloaderError::BootImageSignature);
    }
    if core.len() < SECTOR as usize {
        return Err(BootloaderError::CoreTooSmall(core.len()));
    }
    let segment = u16::from_le_bytes([core[BLOCKLIST + 10], core[BLOCKLIST + 11]]);
    if segment != CORE_LOAD_SEGMENT {
        return Err(BootloaderError::NotACoreImage(segment));
    }
    let sectors = (core.len() as u64).div_ceil(SECTOR);
    if CORE_IMAGE_SECTOR + sectors > first_partition_sector || sectors - 1 > u64::from(u16::MAX) {
        return Err(BootloaderError::CoreDoesNotFit {
            needed: sectors,
            start: CORE_IMAGE_SECTOR,
            first_partition: first_partition_sector,
        });
    }

    mbr[..MBR_CODE_END].copy_from_slice(&boot_img[..MBR_CODE_END]);
    mbr[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&CORE_IMAGE_SECTOR.to_le_bytes());
    mbr[BOOT_DRIVE] = 0xff;
    mbr[DRIVE_CHECK] = 0x90;
    mbr[DRIVE_CHECK + 1] = 0x90;
    mbr[510] = 0x55;
    mbr[511] = 0xaa;

    // The rest of the core image follows its first sector contiguously.
    core[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&(CORE_IMAGE_SECTOR + 1).to_le_bytes());
    core[BLOCKLIST + 8..BLOCKLIST + 10].copy_from_slice(&((sectors - 1) as u16).to_le_bytes());
    Ok(CORE_IMAGE_SECTOR * SECTOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot_img() -> Vec<u8> {
        let mut b: Vec<u8> = (0..512u32).map(|i| (i * 7 + 3) as u8).collect();
        b[510] = 0x55;
        b[511] = 0xaa;
        b
    }

    fn core_img(sectors: usize) -> Vec<u8> {
        let mut c = vec![0xccu8; sectors * 512 - 100];
        c[BLOCKLIST..BLOCKLIST + 12].fill(0);
        c[BLOCKLIST + 10..BLOCKLIST + 12].copy_from_slice(&CORE_LOAD_SEGMENT.to_le_bytes());
        c
    }

    #[test]
    fn the_mbr_gets_boot_code_and_the_core_location_but_keeps_its_partition_table() {
        let mut mbr = vec![0u8; 512];
        mbr[0x1b8..0x1bc].copy_from_slice(&[1, 2, 3, 4]);
        mbr[0x1be] = 0x80;
        mbr[0x1c2] = 0x83;
        let mut core = core_img(280);
        let at = install_bios_boot(&mut mbr, &boot_img(), &mut core, 2048).unwrap();
        assert_eq!(at, 512);
        assert_eq!(mbr[..KERNEL_SECTOR], boot_img()[..KERNEL_SECTOR]);
        assert_eq!(u64::from_le_bytes(mbr[0x5c..0x64].try_into().unwrap()), 1);
        assert_eq!(&mbr[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(&mbr[0x1b8..0x1bc], &[1, 2, 3, 4], "disk signature kept");
        assert_eq!(
            (mbr[0x1be], mbr[0x1c2]),
            (0x80, 0x83),
            "partition table kept"
        );
        assert_eq!(&mbr[510..], &[0x55, 0xaa]);
        assert_eq!(
            u64::from_le_bytes(core[BLOCKLIST..BLOCKLIST + 8].try_into().unwrap()),
            2
        );
        assert_eq!(
            u16::from_le_bytes(core[BLOCKLIST + 8..BLOCKLIST + 10].try_into().unwrap()),
            279
        );
    }

    #[test]
    fn a_core_image_larger_than_the_gap_is_refused() {
        let mut mbr = vec![0u8; 512];
        let mut core = core_img(64);
        let err = install_bios_boot(&mut mbr, &boot_img(), &mut core, 63).unwrap_err();
        assert!(matches!(
            err,
            BootloaderError::CoreDoesNotFit { needed: 64, .. }
        ));
        assert!(err
            .to_string()
            .contains("first partition starts at sector 63"));
    }

    #[test]
    fn data_that_is_not_grub_is_refused() {
        let mut mbr = vec![0u8; 512];
        let mut not_core = vec![0u8; 4096];
        assert!(matches!(
            install_bios_boot(&mut mbr, &boot_img(), &mut not_core, 2048),
            Err(BootloaderError::NotACoreImage(0))
        ));
        let mut core = core_img(2);
        assert!(matches!(
            install_bios_boot(&mut mbr, &[0u8; 512], &mut core, 2048),
            Err(BootloaderError::BootImageSignature)
        ));
        assert!(matches!(
            install_bios_boot(&mut mbr, &[0u8; 440], &mut core, 2048),
            Err(BootloaderError::BootImageSize(440))
        ));
    }
}
