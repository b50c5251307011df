//! Helpers shared by the OVF and OVA tests (paths and scratch directories come from `testkit`):
//! the default definition and its variants, the DMTF schema in the shared reference folder, and small VMDKs made by qemu-img.

#![allow(dead_code)]

use appliance::definition::{Base, NicKind, ScsiController, VsphereCompat};
use appliance::Definition;
use camino::{Utf8Path, Utf8PathBuf};
use std::process::Command;

pub use testkit::{scratch, workspace_root};

pub fn default_definition() -> Definition {
    let path = workspace_root().join(appliance::definition::DEFAULT_DEFINITION);
    Definition::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// The default definition with the given base, controller, NIC and vSphere target; still valid.
pub fn variant(
    base: Base,
    scsi: ScsiController,
    nic: NicKind,
    compat: VsphereCompat,
) -> Definition {
    let mut d = default_definition();
    d.appliance.base = base;
    d.appliance.vsphere_compat = compat;
    d.hardware.scsi_controller = scsi;
    d.hardware.nic = nic;
    let errors = d.validate();
    assert!(errors.is_empty(), "variant is invalid: {errors:?}");
    d
}

/// The DMTF OVF envelope schema from the shared reference folder, `shared/` beside the
/// workspace (CI) or beside one of its ancestors (a worktree). Missing is a failure: the schema
/// check is the point of these tests.
pub fn ovf_schema() -> Utf8PathBuf {
    let rel = "shared/reference/ovf-xsd/dsp8023_1.1.1.xsd";
    let root = workspace_root();
    for dir in root.ancestors().skip(1) {
        let p = dir.join(rel);
        if p.is_file() {
            return p;
        }
    }
    panic!("the DMTF OVF schema {rel} was not found beside {root} or any parent: it belongs in ../shared (CI copies it there)");
}

/// Runs `xmllint --schema` on a file: `Err(xmllint's output)` unless it validates.
pub fn schema_check(ovf: &Utf8Path) -> Result<(), String> {
    testkit::require_tool("xmllint");
    let out = Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(ovf_schema())
        .arg(ovf)
        .output()
        .expect("xmllint runs (Debian package libxml2-utils)");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() && stderr.contains("validates") {
        Ok(())
    } else {
        Err(stderr)
    }
}

pub fn assert_schema_valid(ovf: &Utf8Path) {
    if let Err(out) = schema_check(ovf) {
        panic!("xmllint rejects {ovf}:\n{out}");
    }
}

/// Writes a raw image of `size` bytes with `data` at offset 0 (the rest a hole).
pub fn raw_image(path: &Utf8Path, size: u64, data: &[u8]) {
    std::fs::write(path, data).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(size).unwrap();
}

/// Converts a raw image with qemu-img into a streamOptimized VMDK (a producer other than ours).
pub fn qemu_stream_vmdk(raw: &Utf8Path, vmdk: &Utf8Path) {
    testkit::require_tool("qemu-img");
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "vmdk", "-o"])
        .arg("subformat=streamOptimized,adapter_type=lsilogic")
        .arg(raw)
        .arg(vmdk)
        .status()
        .expect("qemu-img runs (Debian package qemu-utils)");
    assert!(st.success(), "qemu-img convert failed");
}

/// Pseudo-random bytes from a seed, so test data is reproducible.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    testkit::Rng::new(seed).bytes(len)
}

/// The default definition shrunk to the smallest valid disks (1 GiB OS disk, 64 MiB retention),
/// so that packing tests stay fast; raw images are sparse.
pub fn small_definition() -> Definition {
    let mut d = default_definition();
    d.os_disk.size = "1GiB".parse().unwrap();
    for p in &mut d.os_disk.partitions {
        p.size = if p.mount == "/" { "256MiB" } else { "64MiB" }
            .parse()
            .unwrap();
    }
    d.retention_disk.size = "64MiB".parse().unwrap();
    let errors = d.validate();
    assert!(errors.is_empty(), "small definition is invalid: {errors:?}");
    d
}

/// The pieces of an OVA before they are put into a tar, so that a test can corrupt or reorder
/// any of them.
pub struct Parts {
    pub ovf_name: String,
    pub ovf: Vec<u8>,
    pub mf_name: String,
    pub mf: Vec<u8>,
    /// (member name, file) in References order.
    pub disks: Vec<(String, Utf8PathBuf)>,
    /// (member name, raw image) in References order.
    pub raws: Vec<(String, Utf8PathBuf)>,
}

/// Raw images for the small definition: an OS disk with noise and text among holes, an all-zero
/// retention disk. Returns (role, raw path).
pub fn small_raws(
    dir: &Utf8Path,
    def: &Definition,
) -> Vec<(appliance::ovf::DiskRole, Utf8PathBuf)> {
    use appliance::ovf::DiskRole;
    let os = dir.join("os.raw");
    let mut data = noise(7, 1 << 20);
    data.extend(std::iter::repeat_n(0u8, 3 << 20));
    data.extend(b"master target text grain ".repeat(40_000));
    raw_image(&os, DiskRole::Os.capacity(def), &data);
    let ret = dir.join("retention.raw");
    raw_image(&ret, DiskRole::Retention.capacity(def), &[]);
    vec![(DiskRole::Os, os), (DiskRole::Retention, ret)]
}

/// The parts of an OVA whose disks qemu-img made (plus the end-of-stream sector ESXi needs and
/// qemu-img omits), with our descriptor and manifest over the final bytes.
pub fn qemu_parts(dir: &Utf8Path, def: &Definition) -> Parts {
    use appliance::manifest::{digest_bytes, digest_reader, Manifest};
    use appliance::ovf::{render, BuildInfo, DiskFile};
    let alg = def.manifest_algorithm();
    let mut files = Vec::new();
    let mut disks = Vec::new();
    let mut raws = Vec::new();
    for (role, raw) in small_raws(dir, def) {
        let name = role.file_name(def);
        let vmdk = dir.join(&name);
        qemu_stream_vmdk(&raw, &vmdk);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&vmdk)
            .unwrap();
        std::io::Write::write_all(&mut f, &[0u8; 512]).unwrap();
        files.push(DiskFile {
            role,
            file_size: std::fs::metadata(&vmdk).unwrap().len(),
            capacity: role.capacity(def),
            populated_size: 0,
        });
        disks.push((name.clone(), vmdk));
        let stem = name.trim_end_matches(".vmdk");
        raws.push((format!("{stem}.raw"), raw));
    }
    let ovf = render(
        def,
        &files,
        &BuildInfo {
            build_id: "test".into(),
        },
    )
    .unwrap()
    .into_bytes();
    let ovf_name = format!("{}.ovf", def.appliance.name);
    let mut mf = Manifest::new(alg);
    mf.push(&ovf_name, digest_bytes(alg, &ovf));
    for (name, path) in &disks {
        let (d, _) = digest_reader(alg, std::fs::File::open(path).unwrap()).unwrap();
        mf.push(name, d);
    }
    Parts {
        mf_name: format!("{}.mf", def.appliance.name),
        ovf_name,
        ovf,
        mf: mf.render().into_bytes(),
        disks,
        raws,
    }
}

/// Packs the parts with our tar writer, members in the given order of names.
pub fn pack_parts(out: &Utf8Path, parts: &Parts, order: &[&str]) {
    use appliance::ova::{write_ova, MemberSource, OvaMember};
    let members: Vec<OvaMember> = order
        .iter()
        .map(|&n| OvaMember {
            name: n.to_string(),
            source: if n == parts.ovf_name {
                MemberSource::Bytes(&parts.ovf)
            } else if n == parts.mf_name {
                MemberSource::Bytes(&parts.mf)
            } else {
                let p = &parts.disks.iter().find(|(d, _)| d == n).expect("a part").1;
                MemberSource::File(p)
            },
        })
        .collect();
    write_ova(out, &members, 1_700_000_000).unwrap();
}

impl Parts {
    /// ovf, mf, then the disks: the order vSphere wants.
    pub fn order(&self) -> Vec<&str> {
        let mut v = vec![self.ovf_name.as_str(), self.mf_name.as_str()];
        v.extend(self.disks.iter().map(|(n, _)| n.as_str()));
        v
    }
}

/// Writes a definition as TOML (for the command-line tests) and checks it loads back equal.
pub fn write_definition(def: &Definition, path: &Utf8Path) {
    let text = toml::to_string(def).expect("a definition serializes to TOML");
    std::fs::write(path, &text).unwrap();
    let back = Definition::load(path).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(&back, def);
}
