//! Stages 2 and 3: the raw disk images. The OS disk is assembled without loop devices, mounts or
//! partition device nodes: the rootfs tar is unpacked into a directory, the definition and
//! `mt-agent setup` are applied to it, each mount point's subtree becomes one partition's
//! content, and `mke2fs -E offset=… -d DIR` writes each file system straight into the image at
//! the offset `appliance::layout` computed. Swap headers, the partition table and GRUB are bytes
//! from the `appliance` crate. The retention disk ships blank (all zeros, a sparse file that the
//! VMDK writer reduces to a few grain tables): each deployed VM's first boot formats it
//! (`mt-agent firstboot`), so every copy gets a file system UUID of its own.

use super::bootloader;
use super::cache::{Cache, StageInputs, StageOutput};
use super::configure;
use super::progress::Progress;
use anyhow::{bail, Context, Result};
use appliance::definition::FileSystem;
use appliance::kernel_cmdline;
use appliance::layout::DiskLayout;
use appliance::units::KIB;
use appliance::Definition;
use camino::{Utf8Path, Utf8PathBuf};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};
use std::process::{Command, Stdio};
use xshell::{cmd, Shell};

const OS_RECIPE: u32 = 2;
const RETENTION_RECIPE: u32 = 2;

/// What the image contains, reported at the end of the build.
pub struct OsDiskSummary {
    pub packages: usize,
    pub root_bytes: u64,
}

pub struct OsDiskInputs<'a> {
    pub def: &'a Definition,
    pub rootfs_tar: &'a Utf8Path,
    pub rootfs_stage: &'a Utf8Path,
    pub agent: &'a Utf8Path,
}

pub fn os_disk(sh: &Shell, cache: &Cache, i: &OsDiskInputs) -> Result<(Utf8PathBuf, StageOutput)> {
    let def = i.def;
    let mut inputs = StageInputs::new("os-disk", OS_RECIPE);
    inputs
        .add(
            "rootfs",
            i.rootfs_stage.file_name().unwrap_or("").as_bytes(),
        )
        .add("os_disk", &serde_json::to_vec(&def.os_disk)?)
        .add("retention_disk", &serde_json::to_vec(&def.retention_disk)?)
        .add("network", &serde_json::to_vec(&def.network)?)
        .add("system", &serde_json::to_vec(&def.system)?)
        .add("policy", &serde_json::to_vec(&def.policy)?)
        .add("agent", &serde_json::to_vec(&def.agent)?)
        .add("name", def.appliance.name.as_bytes());
    inputs.add_file("agent-binary", i.agent)?;
    inputs.add_file(
        "grub-boot.img",
        &Utf8Path::new(bootloader::GRUB_I386_PC).join("boot.img"),
    )?;
    inputs.add_file(
        "grub-kernel.img",
        &Utf8Path::new(bootloader::GRUB_I386_PC).join("kernel.img"),
    )?;
    let out = cache.stage(&inputs, |dir| build_os_disk(sh, dir, i))?;
    Ok((out.dir.join("os.raw"), out))
}

fn build_os_disk(sh: &Shell, dir: &Utf8Path, i: &OsDiskInputs) -> Result<()> {
    let def = i.def;
    let layout = DiskLayout::for_os_disk(&def.os_disk)?;
    let tree = dir.join("tree");
    unpack(i.rootfs_tar, &tree)?;

    configure::apply(&tree, def)?;
    let agent_toml = dir.join("agent.toml");
    std::fs::write(&agent_toml, super::agent_config_toml(def)?)
        .with_context(|| format!("cannot write {agent_toml}"))?;
    let agent = i.agent;
    cmd!(
        sh,
        "{agent} setup --root {tree} --distro debian12 --config {agent_toml}"
    )
    .run()
    .context("mt-agent setup failed on the image's root tree")?;
    let root = layout
        .by_mount("/")
        .context("the layout has no / partition")?;
    let cmdline = kernel_cmdline::kernel_command_line(
        &root.partition.label,
        kernel_cmdline::crash_kernel(def),
    );
    bootloader::install_files(&tree, &cmdline)?;

    let summary = OsDiskSummary {
        packages: installed_packages(&tree)?,
        root_bytes: tree_bytes(&tree)?,
    };
    std::fs::write(
        dir.join("summary.txt"),
        format!(
            "packages={}\nroot_bytes={}\n",
            summary.packages, summary.root_bytes
        ),
    )?;

    // Each separate mount point's subtree moves out of the root tree; an empty directory stays
    // behind as the mount point.
    let mut contents = Vec::new();
    for p in &layout.partitions {
        let content = match p.partition.fs {
            FileSystem::Swap => None,
            _ if p.partition.mount == "/" => Some(tree.clone()),
            _ => {
                let inside = tree.join(p.partition.mount.trim_start_matches('/'));
                let moved = dir.join(format!("part{}", p.number));
                let mode = std::fs::metadata(&inside).map(|m| {
                    use std::os::unix::fs::PermissionsExt;
                    m.permissions().mode()
                })?;
                std::fs::rename(&inside, &moved)
                    .with_context(|| format!("cannot move {inside}"))?;
                std::fs::create_dir(&inside)?;
                std::fs::set_permissions(
                    &inside,
                    std::os::unix::fs::PermissionsExt::from_mode(mode),
                )?;
                Some(moved)
            }
        };
        contents.push(content);
    }

    let disk = dir.join("os.raw");
    assemble(sh, dir, &disk, &layout, &contents, &disk_seed(def))?;

    // The trees were inputs of mke2fs; keeping them would double the cache's size.
    for c in contents.into_iter().flatten() {
        remove_tree(&c)?;
    }
    Ok(())
}

/// Writes the whole OS disk image: every partition's file system (or swap header) at its offset,
/// then the partition table and GRUB. `contents[i]` is partition i's tree (None for swap).
fn assemble(
    sh: &Shell,
    work: &Utf8Path,
    disk: &Utf8Path,
    layout: &DiskLayout,
    contents: &[Option<Utf8PathBuf>],
    seed: &[u8; 32],
) -> Result<()> {
    create_sparse(disk, layout.disk_size)?;
    for (p, content) in layout.partitions.iter().zip(contents) {
        let uuid = uuid_from(seed, &p.partition.label);
        match (p.partition.fs, content) {
            (FileSystem::Swap, _) => {
                let header = appliance::swap::swap_header(p.size, &p.partition.label, uuid)?;
                let mut f = std::fs::OpenOptions::new().write(true).open(disk)?;
                f.seek(SeekFrom::Start(p.offset))?;
                f.write_all(&header)?;
            }
            (FileSystem::Ext4, Some(content)) => {
                eprintln!(
                    "os-disk: ext4 {} ({}) at byte {}",
                    p.partition.mount,
                    appliance::units::ByteSize(p.size),
                    p.offset
                );
                mke2fs(sh, disk, p.offset, p.size, &p.partition.label, uuid, content)?;
            }
            (fs, _) => bail!(
                "os_disk.partitions: {} has fs = {:?}; the debian12 build writes ext4 and swap partitions",
                p.partition.mount,
                fs.as_str()
            ),
        }
    }
    let root = layout
        .by_mount("/")
        .context("the layout has no / partition")?;
    let core = bootloader::make_core_image(sh, work, root)?;
    let signature = u32::from_le_bytes(seed[..4].try_into().expect("4 bytes"));
    bootloader::write_boot_sectors(disk, layout, &core, signature)?;
    std::fs::remove_file(&core).with_context(|| format!("cannot remove {core}"))?;
    Ok(())
}

/// The retention disk: `retention_disk.size` of zeros. First boot formats a disk only when its
/// first and last MiB are all zeros, which is how this one ships.
pub fn retention_disk(cache: &Cache, def: &Definition) -> Result<(Utf8PathBuf, StageOutput)> {
    let mut inputs = StageInputs::new("retention-disk", RETENTION_RECIPE);
    inputs.add("size", &def.retention_disk.size.bytes().to_le_bytes());
    let out = cache.stage(&inputs, |dir| {
        create_sparse(&dir.join("retention.raw"), def.retention_disk.size.bytes())
    })?;
    Ok((out.dir.join("retention.raw"), out))
}

/// `mke2fs` writing at `offset` inside the image; `content` becomes the file system's tree
/// (owners, modes, links, device nodes and extended attributes included).
fn mke2fs(
    sh: &Shell,
    disk: &Utf8Path,
    offset: u64,
    size: u64,
    label: &str,
    uuid: [u8; 16],
    content: &Utf8Path,
) -> Result<()> {
    let uuid = format_uuid(uuid);
    // The image is a new sparse file, so its blocks already read as zeros: nothing needs
    // discarding or zeroing, which keeps the image sparse and mke2fs fast.
    let ext = format!("offset={offset},assume_storage_prezeroed=1,nodiscard,hash_seed={uuid}");
    let kib = format!("{}k", size / KIB);
    cmd!(
        sh,
        "mke2fs -q -F -t ext4 -L {label} -U {uuid} -E {ext} -d {content} {disk} {kib}"
    )
    .run()
    .with_context(|| {
        format!("mke2fs of {label} at byte {offset} of {disk} failed (Debian package: e2fsprogs)")
    })
}

/// Unpacks the rootfs tar with GNU tar (owners, modes, device nodes, extended attributes),
/// feeding it through this process to show progress.
fn unpack(tar: &Utf8Path, tree: &Utf8Path) -> Result<()> {
    std::fs::create_dir_all(tree).with_context(|| format!("cannot create {tree}"))?;
    let total = std::fs::metadata(tar)
        .with_context(|| format!("cannot read {tar}"))?
        .len();
    let mut child = Command::new("tar")
        .args([
            "--extract",
            "--file=-",
            "--numeric-owner",
            "--same-permissions",
            "--same-owner",
            "--xattrs",
            "--xattrs-include=*",
        ])
        .arg(format!("--directory={tree}"))
        .stdin(Stdio::piped())
        .spawn()
        .context("cannot run tar")?;
    let mut input = std::fs::File::open(tar).with_context(|| format!("cannot open {tar}"))?;
    let mut pipe = child.stdin.take().expect("piped");
    let mut progress = Progress::bytes("os-disk: unpacking the root file system", total);
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        pipe.write_all(&buf[..n])
            .context("tar stopped reading the root file system")?;
        done += n as u64;
        progress.set(done);
    }
    drop(pipe);
    let status = child.wait()?;
    if !status.success() {
        bail!("tar failed to unpack {tar} into {tree} ({status})");
    }
    progress.finish();
    Ok(())
}

fn create_sparse(path: &Utf8Path, size: u64) -> Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("cannot create {path}"))?;
    f.set_len(size)
        .with_context(|| format!("cannot size {path} to {size} bytes"))
}

fn remove_tree(path: &Utf8Path) -> Result<()> {
    std::fs::remove_dir_all(path).with_context(|| format!("cannot remove {path}"))
}

/// Installed packages, from dpkg's status database.
fn installed_packages(tree: &Utf8Path) -> Result<usize> {
    let path = tree.join("var/lib/dpkg/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    Ok(text
        .lines()
        .filter(|l| *l == "Status: install ok installed")
        .count())
}

/// Bytes of regular files in the tree (what the root file systems hold before metadata).
fn tree_bytes(dir: &Utf8Path) -> Result<u64> {
    let mut total = 0;
    let mut stack = vec![dir.as_std_path().to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                total += e.metadata()?.len();
            }
        }
    }
    Ok(total)
}

/// File system UUIDs and the disk signature are derived from the definition, so that the same
/// definition gives the same identifiers (reproducible images); every deployed copy of a
/// template shares them anyway, as clones of one disk do.
fn disk_seed(def: &Definition) -> [u8; 32] {
    Sha256::digest(format!("{}:{}", def.appliance.name, def.appliance.version)).into()
}

fn uuid_from(seed: &[u8; 32], label: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(seed);
    h.update(label.as_bytes());
    let d = h.finalize();
    let mut u = [0u8; 16];
    u.copy_from_slice(&d[..16]);
    u[6] = (u[6] & 0x0f) | 0x40; // version 4 layout (random-looking)
    u[8] = (u[8] & 0x3f) | 0x80; // RFC 4122 variant
    u
}

fn format_uuid(u: [u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

pub fn read_summary(stage: &Utf8Path) -> Option<OsDiskSummary> {
    let text = std::fs::read_to_string(stage.join("summary.txt")).ok()?;
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(OsDiskSummary {
        packages: get("packages")? as usize,
        root_bytes: get("root_bytes")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use appliance::definition::{OsDisk, Partition};
    use appliance::units::ByteSize;

    /// A small disk assembled exactly as the build does, then read by the tools a user would
    /// trust: sfdisk for the table, blkid and e2fsck for the file systems at their offsets.
    #[test]
    fn an_assembled_disk_is_read_back_by_sfdisk_blkid_and_e2fsck() {
        testkit::require_tools(&["sfdisk", "blkid", "e2fsck", "mke2fs"]);
        let sh = Shell::new().unwrap();
        let work = testkit::scratch("assemble");
        let content = work.join("root");
        std::fs::create_dir_all(content.join("boot/grub")).unwrap();
        std::fs::write(content.join("boot/grub/grub.cfg"), "set timeout=0\n").unwrap();
        let part = |mount: &str, fs, mib, label: &str| Partition {
            mount: mount.into(),
            fs,
            size: ByteSize::from_mib(mib),
            grow: mount == "/",
            label: label.into(),
        };
        let layout = DiskLayout::for_os_disk(&OsDisk {
            size: ByteSize::from_mib(64),
            partitions: vec![
                part("/", FileSystem::Ext4, 32, "root"),
                part("swap", FileSystem::Swap, 8, "swap"),
            ],
        })
        .unwrap();
        let disk = work.join("os.raw");
        assemble(
            &sh,
            &work,
            &disk,
            &layout,
            &[Some(content), None],
            &[3u8; 32],
        )
        .unwrap();

        let table = cmd!(sh, "sfdisk -J {disk}").read().unwrap();
        assert!(table.contains("\"label\": \"dos\""), "{table}");
        assert!(
            table.contains("\"start\": 2048") && table.contains("\"bootable\": true"),
            "{table}"
        );
        assert!(table.contains("\"type\": \"82\""), "{table}");
        let root_at = layout.partitions[0].offset.to_string();
        let root = cmd!(sh, "blkid -p -O {root_at} {disk}").read().unwrap();
        assert!(
            root.contains("LABEL=\"root\"") && root.contains("TYPE=\"ext4\""),
            "{root}"
        );
        let swap_at = layout.partitions[1].offset.to_string();
        let swap = cmd!(sh, "blkid -p -O {swap_at} {disk}").read().unwrap();
        assert!(
            swap.contains("LABEL=\"swap\"") && swap.contains("TYPE=\"swap\""),
            "{swap}"
        );
        let fsck_target = format!("{disk}?offset={root_at}");
        cmd!(sh, "e2fsck -fn {fsck_target}")
            .quiet()
            .ignore_stdout()
            .run()
            .unwrap();
        let mbr = std::fs::read(&disk).unwrap();
        assert_eq!(
            u64::from_le_bytes(mbr[0x5c..0x64].try_into().unwrap()),
            1,
            "GRUB's core image at sector 1"
        );
        std::fs::remove_dir_all(work).unwrap();
    }

    #[test]
    fn uuids_are_stable_distinct_and_well_formed() {
        let seed = [7u8; 32];
        let a = format_uuid(uuid_from(&seed, "root"));
        assert_eq!(a, format_uuid(uuid_from(&seed, "root")));
        assert_ne!(a, format_uuid(uuid_from(&seed, "home")));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
