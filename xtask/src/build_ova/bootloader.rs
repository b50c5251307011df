//! The BIOS boot loader: GRUB's core image built with `grub-mkimage` from the build host's
//! `grub-pc-bin`, GRUB's modules and a `grub.cfg` with a serial console copied into the root
//! file system's `/boot/grub`, and the MBR and core image written into the disk image through
//! `appliance::bootloader` (no `grub-install`, no device nodes). The command line itself is
//! `appliance::kernel_cmdline`'s.

use anyhow::{bail, Context, Result};
use appliance::layout::{DiskLayout, PlacedPartition};
use appliance::units::SECTOR;
use camino::{Utf8Path, Utf8PathBuf};
use std::io::{Read, Seek, SeekFrom, Write};
use xshell::{cmd, Shell};

/// GRUB's i386-pc files on a Debian host (package grub-pc-bin).
pub const GRUB_I386_PC: &str = "/usr/lib/grub/i386-pc";

/// Modules built into the core image: enough to read the MBR partition and ext4 holding
/// `/boot/grub`; everything else is loaded from there.
const CORE_MODULES: [&str; 8] = [
    "biosdisk",
    "part_msdos",
    "ext2",
    "normal",
    "serial",
    "terminal",
    "linux",
    "search",
];

/// Copies GRUB's modules and writes `grub.cfg` for the kernel found in the tree's `/boot`,
/// booting it with `cmdline`.
pub fn install_files(tree: &Utf8Path, cmdline: &str) -> Result<()> {
    let version = kernel_version(tree)?;
    let grub_dir = tree.join("boot/grub");
    let mod_dir = grub_dir.join("i386-pc");
    std::fs::create_dir_all(&mod_dir).with_context(|| format!("cannot create {mod_dir}"))?;
    for entry in std::fs::read_dir(GRUB_I386_PC)
        .with_context(|| format!("cannot list {GRUB_I386_PC} (Debian package: grub-pc-bin)"))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".mod") || name.ends_with(".lst") {
            std::fs::copy(entry.path(), mod_dir.join(&name))
                .with_context(|| format!("cannot copy {name} into {mod_dir}"))?;
        }
    }
    let cfg = format!(
        r#"serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=2
set default=0
menuentry 'Debian GNU/Linux 12, kernel {version}' {{
    linux /boot/vmlinuz-{version} {cmdline}
    initrd /boot/initrd.img-{version}
}}
"#
    );
    std::fs::write(grub_dir.join("grub.cfg"), cfg)
        .with_context(|| format!("cannot write {grub_dir}/grub.cfg"))
}

fn kernel_version(tree: &Utf8Path) -> Result<String> {
    let boot = tree.join("boot");
    let mut versions: Vec<String> = std::fs::read_dir(&boot)
        .with_context(|| format!("cannot list {boot}"))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("vmlinuz-")
                .map(str::to_owned)
        })
        .filter(|v| boot.join(format!("initrd.img-{v}")).is_file())
        .collect();
    versions.sort();
    match versions.pop() {
        Some(v) => Ok(v),
        None => bail!("{boot} has no vmlinuz-* with a matching initrd.img-*: the rootfs stage did not install linux-image-amd64"),
    }
}

/// Builds the core image with the prefix pointing at the root partition's `/boot/grub`.
pub fn make_core_image(sh: &Shell, work: &Utf8Path, root: &PlacedPartition) -> Result<Utf8PathBuf> {
    let core = work.join("core.img");
    let prefix = format!("(hd0,msdos{})/boot/grub", root.number);
    let modules = CORE_MODULES;
    cmd!(
        sh,
        "grub-mkimage -O i386-pc -d {GRUB_I386_PC} -p {prefix} -o {core} {modules...}"
    )
    .quiet()
    .run()
    .context("grub-mkimage failed (Debian package: grub-pc-bin)")?;
    Ok(core)
}

/// Writes the partition table, a disk signature, GRUB's boot code and the core image into the
/// first megabyte of `disk`.
pub fn write_boot_sectors(
    disk: &Utf8Path,
    layout: &DiskLayout,
    core: &Utf8Path,
    disk_signature: u32,
) -> Result<()> {
    let boot_img_path = Utf8Path::new(GRUB_I386_PC).join("boot.img");
    let boot_img = std::fs::read(&boot_img_path)
        .with_context(|| format!("cannot read {boot_img_path} (Debian package: grub-pc-bin)"))?;
    let mut core_img = std::fs::read(core).with_context(|| format!("cannot read {core}"))?;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .with_context(|| format!("cannot open {disk}"))?;
    let mut mbr = vec![0u8; SECTOR as usize];
    f.read_exact(&mut mbr)
        .with_context(|| format!("cannot read the MBR of {disk}"))?;
    mbr[440..444].copy_from_slice(&disk_signature.to_le_bytes());
    mbr[446..512].copy_from_slice(&layout.mbr_partition_table());
    let first = layout
        .partitions
        .first()
        .map(|p| p.start_sector())
        .context("the layout has no partition")?;
    let core_at =
        appliance::bootloader::install_bios_boot(&mut mbr, &boot_img, &mut core_img, first)
            .with_context(|| format!("installing GRUB into {disk}"))?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&mbr)?;
    f.seek(SeekFrom::Start(core_at))?;
    f.write_all(&core_img)?;
    f.sync_all()
        .with_context(|| format!("cannot flush {disk}"))?;
    Ok(())
}
