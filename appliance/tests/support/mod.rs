//! Helpers shared by the OVF and OVA tests: the default definition and its variants, scratch
//! directories, the DMTF schema in the shared reference folder, and small VMDKs made by qemu-img.

#![allow(dead_code)]

use appliance::definition::{Base, NicKind, ScsiController, VsphereCompat};
use appliance::Definition;
use camino::{Utf8Path, Utf8PathBuf};
use std::process::Command;

pub fn workspace_root() -> Utf8PathBuf {
    Utf8Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

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

/// A fresh, empty directory under Cargo's per-target temporary directory.
pub fn scratch(name: &str) -> Utf8PathBuf {
    let dir = Utf8Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "vmdk", "-o"])
        .arg("subformat=streamOptimized,adapter_type=lsilogic")
        .arg(raw)
        .arg(vmdk)
        .status()
        .expect("qemu-img runs (Debian package qemu-utils)");
    assert!(st.success(), "qemu-img convert failed");
}

/// Pseudo-random bytes from a seed (xorshift), so test data is reproducible.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
