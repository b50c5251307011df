//! The golden test of `verify-ova`: OVAs made by this crate's own writers (`ova::pack`,
//! `ova::write_ova`, the VMDK and OVF writers), then damaged byte by byte, one class of finding
//! each, are verified through `verify_ova` as `cargo xtask verify-ova` does, and the rendered
//! findings must equal the files under `tests/golden/verify/`. A refactoring of the verifier
//! leaves every line as it is; after an intended change of a message, run
//! `UPDATE_GOLDEN=1 cargo test -p appliance --test it verify_golden` and review the diff.
//!
//! The definition is a frozen copy (`golden/verify/appliance.toml`) with disks of 2 MiB and
//! 1 MiB, so the offsets do not move with the shipped definition and the test runs in seconds.

use crate::support;

use appliance::definition::{DigestAlgorithm, VsphereCompat};
use appliance::manifest::{digest_bytes, Manifest};
use appliance::ova::{pack, read_index, write_ova, MemberSource, OvaMember, PackOptions, TarIndex};
use appliance::ovf::DiskRole;
use appliance::verify::{verify_ova, VerifyOptions};
use appliance::vmdk::{Marker, SparseExtentHeader};
use appliance::Definition;
use camino::{Utf8Path, Utf8PathBuf};
use std::fmt::Write as _;
use std::sync::OnceLock;
use support::{noise, raw_image, scratch};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/verify");
const OVF: &str = "mt-appliance.ovf";
const MF: &str = "mt-appliance.mf";
const OS: &str = "mt-appliance-disk1.vmdk";
const RET: &str = "mt-appliance-disk2.vmdk";
const MTIME: u64 = 1_700_000_000;
const SECTOR: usize = 512;

/// The good OVA as `ova::pack` wrote it, its members, and the raw disks they came from.
struct Fixture {
    dir: Utf8PathBuf,
    good: Utf8PathBuf,
    members: Vec<(String, Vec<u8>)>,
    os_raw: Utf8PathBuf,
    retention_raw: Utf8PathBuf,
    alg: DigestAlgorithm,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = scratch("verify-golden");
        let mut def = Definition::load(&Utf8PathBuf::from(format!("{GOLDEN}/appliance.toml")))
            .unwrap_or_else(|e| panic!("{e}"));
        def.os_disk.size = "2MiB".parse().unwrap();
        def.retention_disk.size = "1MiB".parse().unwrap();
        // Two incompressible grains, a hole, then grains of text that deflate well.
        let os_raw = dir.join("os.raw");
        let mut data = noise(7, 128 << 10);
        data.resize(1 << 20, 0);
        data.extend(b"master target text grain ".repeat(4000));
        raw_image(&os_raw, DiskRole::Os.capacity(&def), &data);
        let retention_raw = dir.join("retention.raw");
        raw_image(&retention_raw, DiskRole::Retention.capacity(&def), &[]);
        let good = dir.join("good.ova");
        let disks = [
            (DiskRole::Os, os_raw.as_path()),
            (DiskRole::Retention, retention_raw.as_path()),
        ];
        let opts = PackOptions {
            source_date_epoch: Some(MTIME),
            build_id: "golden".into(),
        };
        pack(&def, &disks, &good, &opts).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let members = index_of(&bytes)
            .entries
            .iter()
            .map(|e| (e.name.clone(), member_bytes(&bytes, e).to_vec()))
            .collect();
        Fixture {
            dir,
            good,
            members,
            os_raw,
            retention_raw,
            alg: def.manifest_algorithm(),
        }
    })
}

fn index_of(bytes: &[u8]) -> TarIndex {
    read_index(&mut std::io::Cursor::new(bytes), bytes.len() as u64).unwrap()
}

fn member_bytes<'b>(bytes: &'b [u8], e: &appliance::ova::TarEntry) -> &'b [u8] {
    &bytes[e.data_offset as usize..(e.data_offset + e.size) as usize]
}

/// Renders the report as `verify-ova` prints it (findings, then the members and the disks),
/// with the scratch directory written as `$DIR`.
fn render(ova: &Utf8Path, compat: VsphereCompat, raw_dir: Option<Utf8PathBuf>) -> String {
    let r = verify_ova(ova, &VerifyOptions { compat, raw_dir }).unwrap();
    let mut out = String::new();
    for f in &r.findings {
        writeln!(out, "{f}").unwrap();
    }
    let members: Vec<String> = r
        .members
        .iter()
        .map(|m| format!("{} ({} bytes)", m.name, m.size))
        .collect();
    writeln!(out, "members: {}", members.join(", ")).unwrap();
    for (disk, capacity) in &r.disks_checked {
        writeln!(out, "{disk}: structure checked, capacity {capacity} bytes").unwrap();
    }
    for (disk, raw) in &r.disks_compared {
        writeln!(out, "{disk} expands to {raw} byte for byte").unwrap();
    }
    out.replace(fixture().dir.as_str(), "$DIR")
}

fn golden(case: &str, ova: &Utf8Path, compat: VsphereCompat, raw_dir: Option<Utf8PathBuf>) {
    let got = render(ova, compat, raw_dir);
    let path = format!("{GOLDEN}/{case}.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!("{path} is missing: run the test with UPDATE_GOLDEN=1 to write it")
    });
    if got != want {
        let mut diff = String::new();
        for line in want.lines().filter(|l| !got.lines().any(|g| g == *l)) {
            writeln!(diff, "- {line}").unwrap();
        }
        for line in got.lines().filter(|l| !want.lines().any(|w| w == *l)) {
            writeln!(diff, "+ {line}").unwrap();
        }
        panic!("verify-ova findings for {case} changed (- golden, + now):\n{diff}\nnow:\n{got}");
    }
}

/// Verifies the case's OVA for vSphere 6.7 (the frozen definition's target) and compares.
fn check(case: &str, ova: &Ova) {
    golden(case, &ova.write(case), VsphereCompat::V6_7, None);
}

/// Replaces the first `from` (which must occur) by `to`.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} does not occur");
    text.replacen(from, to, 1)
}

/// Replaces the first `from` after `anchor` (both must occur) by `to`.
fn edit_after(text: &str, anchor: &str, from: &str, to: &str) -> String {
    let a = text
        .find(anchor)
        .unwrap_or_else(|| panic!("{anchor:?} does not occur"));
    let at = a + text[a..]
        .find(from)
        .unwrap_or_else(|| panic!("{from:?} does not occur after {anchor:?}"));
    format!("{}{to}{}", &text[..at], &text[at + from.len()..])
}

/// Replaces the last `from` before `anchor` (both must occur) by `to`.
fn edit_before(text: &str, anchor: &str, from: &str, to: &str) -> String {
    let a = text
        .find(anchor)
        .unwrap_or_else(|| panic!("{anchor:?} does not occur"));
    let at = text[..a]
        .rfind(from)
        .unwrap_or_else(|| panic!("{from:?} does not occur before {anchor:?}"));
    format!("{}{to}{}", &text[..at], &text[at + from.len()..])
}

/// The members of an OVA before they are written, in tar order.
#[derive(Clone)]
struct Ova {
    members: Vec<(String, Vec<u8>)>,
}

impl Ova {
    fn good() -> Ova {
        Ova {
            members: fixture().members.clone(),
        }
    }
    fn bytes(&mut self, name: &str) -> &mut Vec<u8> {
        &mut self
            .members
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no member {name}"))
            .1
    }
    fn ovf(mut self, f: impl FnOnce(&str) -> String) -> Ova {
        let b = self.bytes(OVF);
        *b = f(std::str::from_utf8(b).unwrap()).into_bytes();
        self
    }
    fn mf(mut self, f: impl FnOnce(&str) -> String) -> Ova {
        let b = self.bytes(MF);
        *b = f(std::str::from_utf8(b).unwrap()).into_bytes();
        self
    }
    fn disk(mut self, name: &str, f: impl FnOnce(&mut Vec<u8>)) -> Ova {
        f(self.bytes(name));
        self
    }
    fn order(self, names: &[&str]) -> Ova {
        let find = |n: &str| self.members.iter().find(|(m, _)| m == n).unwrap().1.clone();
        Ova {
            members: names.iter().map(|&n| (n.to_string(), find(n))).collect(),
        }
    }
    fn without(mut self, name: &str) -> Ova {
        self.members.retain(|(n, _)| n != name);
        self
    }
    fn with(mut self, name: &str, bytes: &[u8]) -> Ova {
        self.members.push((name.to_string(), bytes.to_vec()));
        self
    }
    /// The manifest recomputed over every other member: a producer that damaged a file before
    /// hashing it, so that only the damage itself is reported.
    fn remanifest(self) -> Ova {
        self.remanifest_with(fixture().alg)
    }
    fn remanifest_with(mut self, alg: DigestAlgorithm) -> Ova {
        let mut m = Manifest::new(alg);
        for (n, b) in self.members.iter().filter(|(n, _)| !n.ends_with(".mf")) {
            m.push(n, digest_bytes(alg, b));
        }
        let text = m.render().into_bytes();
        for (_, b) in self.members.iter_mut().filter(|(n, _)| n.ends_with(".mf")) {
            b.clone_from(&text);
        }
        self
    }
    /// The OVF's `ovf:size` of `name` set to the member's length (a producer that wrote the
    /// descriptor after the damage).
    fn resize(mut self, name: &str) -> Ova {
        let len = self.bytes(name).len();
        self.ovf(|t| {
            let anchor = format!("ovf:href=\"{name}\"");
            let a = t.find(&anchor).unwrap();
            let s = a + t[a..].find("ovf:size=\"").unwrap() + "ovf:size=\"".len();
            let e = s + t[s..].find('"').unwrap();
            format!("{}{len}{}", &t[..s], &t[e..])
        })
    }
    fn write(&self, case: &str) -> Utf8PathBuf {
        let path = fixture().dir.join(format!("{case}.ova"));
        let members: Vec<OvaMember> = self
            .members
            .iter()
            .map(|(n, b)| OvaMember {
                name: n.clone(),
                source: MemberSource::Bytes(b),
            })
            .collect();
        write_ova(&path, &members, MTIME).unwrap();
        path
    }
}

/// Rewrites the OVA file's bytes (tar-level damage); `f` gets the bytes and their index.
fn patch_file(path: &Utf8Path, f: impl FnOnce(&mut Vec<u8>, &TarIndex)) {
    let mut bytes = std::fs::read(path).unwrap();
    let index = index_of(&bytes);
    f(&mut bytes, &index);
    std::fs::write(path, &bytes).unwrap();
}

/// Changes the tar header of member `i` and writes a checksum that matches again.
fn patch_header(path: &Utf8Path, i: usize, f: impl FnOnce(&mut [u8])) {
    patch_file(path, |bytes, index| {
        let at = index.entries[i].header_offset as usize;
        let h = &mut bytes[at..at + 512];
        f(h);
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    });
}

fn tar_case(case: &str, f: impl FnOnce(&Utf8Path)) {
    let path = Ova::good().write(case);
    f(&path);
    golden(case, &path, VsphereCompat::V6_7, None);
}

/// The byte offset and the decoded marker of every stream marker, walking from `overHead`.
fn markers(vmdk: &[u8]) -> Vec<(usize, Marker)> {
    let mut pos = SparseExtentHeader::decode(vmdk).overhead as usize * SECTOR;
    let mut out = Vec::new();
    while pos + SECTOR <= vmdk.len() {
        let m = Marker::parse(&vmdk[pos..pos + 16]);
        out.push((pos, m));
        if m == Marker::EndOfStream {
            break;
        }
        pos += m.record_sectors() as usize * SECTOR;
    }
    out
}

/// The offset of the `n`th grain marker of the OS disk (0-based).
fn grain_marker(vmdk: &[u8], n: usize) -> usize {
    markers(vmdk)
        .into_iter()
        .filter(|(_, m)| matches!(m, Marker::Grain { .. }))
        .nth(n)
        .expect("the OS disk has that many grains")
        .0
}

fn metadata_marker(vmdk: &[u8], want: fn(&Marker) -> bool) -> usize {
    markers(vmdk)
        .into_iter()
        .find(|(_, m)| want(m))
        .expect("the marker is there")
        .0
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A VMDK case on the OS disk: `f` damages its bytes, then the manifest (and, if the length
/// changed, the OVF's size) is recomputed so that only the VMDK check can notice.
fn vmdk_case(case: &str, disk: &str, f: impl FnOnce(&mut Vec<u8>)) {
    check(case, &Ova::good().disk(disk, f).resize(disk).remanifest());
}

fn ovf_case(case: &str, f: impl FnOnce(&str) -> String) {
    check(case, &Ova::good().ovf(f).remanifest());
}

// ---------------------------------------------------------------------------------------------
// A good OVA and the compatibility targets

#[test]
fn good() {
    let ova = Ova::good();
    let path = ova.write("good");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&fixture().good).unwrap(),
        "rewriting the packed members gives the packed bytes"
    );
    golden("good", &path, VsphereCompat::V6_7, None);
}

#[test]
fn good_for_vsphere_6_0() {
    golden(
        "good_for_vsphere_6_0",
        &fixture().good,
        VsphereCompat::V6_0,
        None,
    );
}

#[test]
fn good_for_vsphere_8_0() {
    golden(
        "good_for_vsphere_8_0",
        &fixture().good,
        VsphereCompat::V8_0,
        None,
    );
}

// ---------------------------------------------------------------------------------------------
// Raw images

fn raw_dir(case: &str, files: &[(&str, &Utf8Path)]) -> Utf8PathBuf {
    let dir = fixture().dir.join(format!("{case}.raw"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, from) in files {
        std::fs::copy(from, dir.join(name)).unwrap();
    }
    dir
}

fn raw_case(case: &str, files: &[(&str, &Utf8Path)], f: impl FnOnce(&Utf8Path)) {
    let dir = raw_dir(case, files);
    f(&dir);
    golden(case, &fixture().good, VsphereCompat::V6_7, Some(dir));
}

#[test]
fn raw_images_match() {
    let fx = fixture();
    let files = [
        ("mt-appliance-disk1.raw", fx.os_raw.as_path()),
        ("mt-appliance-disk2.img", fx.retention_raw.as_path()),
    ];
    raw_case("raw_images_match", &files, |_| {});
}

#[test]
fn raw_image_differs() {
    let fx = fixture();
    let files = [
        ("mt-appliance-disk1.raw", fx.os_raw.as_path()),
        ("mt-appliance-disk2.raw", fx.retention_raw.as_path()),
    ];
    raw_case("raw_image_differs", &files, |dir| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("mt-appliance-disk1.raw"))
            .unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"X", (1 << 20) + (1 << 19) + 3).unwrap();
    });
}

#[test]
fn raw_image_missing_or_twice() {
    let fx = fixture();
    let files = [
        ("mt-appliance-disk2.raw", fx.retention_raw.as_path()),
        ("mt-appliance-disk2.img", fx.retention_raw.as_path()),
    ];
    raw_case("raw_image_missing_or_twice", &files, |_| {});
}

#[test]
fn raw_image_of_another_size() {
    let fx = fixture();
    let files = [
        ("mt-appliance-disk1.raw", fx.os_raw.as_path()),
        ("mt-appliance-disk2.raw", fx.retention_raw.as_path()),
    ];
    raw_case("raw_image_of_another_size", &files, |dir| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("mt-appliance-disk2.raw"))
            .unwrap();
        f.set_len((1 << 20) + 512).unwrap();
    });
}

#[test]
fn raw_dir_absent() {
    let dir = fixture().dir.join("no-such-raw-dir");
    golden(
        "raw_dir_absent",
        &fixture().good,
        VsphereCompat::V6_7,
        Some(dir),
    );
}

// ---------------------------------------------------------------------------------------------
// The tar

#[test]
fn tar_empty_file() {
    tar_case("tar_empty_file", |p| std::fs::write(p, b"").unwrap());
}

#[test]
fn tar_shorter_than_a_header() {
    tar_case("tar_shorter_than_a_header", |p| {
        patch_file(p, |b, _| b.truncate(300))
    });
}

#[test]
fn tar_bad_header_checksum() {
    tar_case("tar_bad_header_checksum", |p| {
        patch_file(p, |b, index| {
            b[index.entries[2].header_offset as usize + 10] ^= 1
        })
    });
}

#[test]
fn tar_checksum_not_octal() {
    tar_case("tar_checksum_not_octal", |p| {
        patch_file(p, |b, _| b[148] = b'x')
    });
}

#[test]
fn tar_truncated_in_a_member() {
    tar_case("tar_truncated_in_a_member", |p| {
        patch_file(p, |b, _| b.truncate(b.len() - 4096))
    });
}

#[test]
fn tar_without_end_blocks() {
    tar_case("tar_without_end_blocks", |p| {
        patch_file(p, |b, _| b.truncate(b.len() - 1024))
    });
}

#[test]
fn tar_with_one_end_block() {
    tar_case("tar_with_one_end_block", |p| {
        patch_file(p, |b, _| b.truncate(b.len() - 512))
    });
}

#[test]
fn tar_pax_header() {
    tar_case("tar_pax_header", |p| patch_header(p, 1, |h| h[156] = b'x'));
}

#[test]
fn tar_gnu_long_name() {
    tar_case("tar_gnu_long_name", |p| {
        patch_header(p, 3, |h| h[156] = b'L')
    });
}

#[test]
fn tar_symlink() {
    tar_case("tar_symlink", |p| patch_header(p, 2, |h| h[156] = b'2'));
}

#[test]
fn tar_v7_header() {
    tar_case("tar_v7_header", |p| {
        patch_header(p, 0, |h| h[257..265].fill(0))
    });
}

#[test]
fn tar_gnu_header_for_a_small_member() {
    tar_case("tar_gnu_header_for_a_small_member", |p| {
        patch_header(p, 2, |h| h[257..265].copy_from_slice(b"ustar  \0"))
    });
}

#[test]
fn tar_base256_size_in_a_ustar_header() {
    tar_case("tar_base256_size_in_a_ustar_header", |p| {
        let size = fixture().members[3].1.len() as u64;
        patch_header(p, 3, |h| {
            h[124..136].fill(0);
            h[124] = 0x80;
            h[128..136].copy_from_slice(&size.to_be_bytes());
        })
    });
}

#[test]
fn tar_member_in_a_directory() {
    tar_case("tar_member_in_a_directory", |p| {
        patch_header(p, 3, |h| h[345..350].copy_from_slice(b"disks"))
    });
}

#[test]
fn tar_member_twice() {
    let disk = fixture().members[3].1.clone();
    check("tar_member_twice", &Ova::good().with(RET, &disk));
}

#[test]
fn tar_without_members() {
    tar_case("tar_without_members", |p| {
        std::fs::write(p, [0u8; 1024]).unwrap()
    });
}

// ---------------------------------------------------------------------------------------------
// Member order

#[test]
fn order_manifest_first() {
    check(
        "order_manifest_first",
        &Ova::good().order(&[MF, OVF, OS, RET]),
    );
}

#[test]
fn order_disk_first() {
    check("order_disk_first", &Ova::good().order(&[OS, OVF, MF, RET]));
}

#[test]
fn order_disks_swapped() {
    check(
        "order_disks_swapped",
        &Ova::good().order(&[OVF, MF, RET, OS]),
    );
}

#[test]
fn order_manifest_between_the_disks() {
    let ova = Ova::good().order(&[OVF, OS, MF, RET]);
    check("order_manifest_between_the_disks", &ova);
}

#[test]
fn order_manifest_last() {
    check(
        "order_manifest_last",
        &Ova::good().order(&[OVF, OS, RET, MF]),
    );
}

#[test]
fn order_second_descriptor() {
    let ovf = fixture().members[0].1.clone();
    let ova = Ova::good().with("second.ovf", &ovf).remanifest();
    check("order_second_descriptor", &ova);
}

#[test]
fn order_second_manifest() {
    let mf = fixture().members[1].1.clone();
    check("order_second_manifest", &Ova::good().with("second.mf", &mf));
}

#[test]
fn order_no_descriptor() {
    check(
        "order_no_descriptor",
        &Ova::good().without(OVF).remanifest(),
    );
}

#[test]
fn member_not_referenced() {
    let ova = Ova::good().with("README.txt", b"hello\n").remanifest();
    check("member_not_referenced", &ova);
}

#[test]
fn member_neither_referenced_nor_listed() {
    let ova = Ova::good().with("notes.txt", b"hello\n");
    check("member_neither_referenced_nor_listed", &ova);
}

// ---------------------------------------------------------------------------------------------
// The manifest

#[test]
fn manifest_digest_mismatch() {
    let ova = Ova::good().mf(|t| {
        let line = t.lines().nth(1).unwrap();
        let flipped = if line.ends_with('0') { '1' } else { '0' };
        edit(t, line, &format!("{}{flipped}", &line[..line.len() - 1]))
    });
    check("manifest_digest_mismatch", &ova);
}

#[test]
fn manifest_bad_syntax() {
    let ova = Ova::good().mf(|t| {
        edit(
            t,
            "SHA256(mt-appliance.ovf)=",
            "SHA256 (mt-appliance.ovf) =",
        )
    });
    check("manifest_bad_syntax", &ova);
}

#[test]
fn manifest_not_a_manifest() {
    check(
        "manifest_not_a_manifest",
        &Ova::good().mf(|_| "hello\n".into()),
    );
}

#[test]
fn manifest_missing() {
    check("manifest_missing", &Ova::good().without(MF));
}

#[test]
fn manifest_lists_an_absent_file() {
    let ova = Ova::good().mf(|t| format!("{t}SHA256(ghost.vmdk)= {}\n", "0".repeat(64)));
    check("manifest_lists_an_absent_file", &ova);
}

#[test]
fn manifest_leaves_files_out() {
    let ova = Ova::good().mf(|t| t.lines().nth(1).unwrap().to_string() + "\n");
    check("manifest_leaves_files_out", &ova);
}

#[test]
fn manifest_sha1() {
    check(
        "manifest_sha1",
        &Ova::good().remanifest_with(DigestAlgorithm::Sha1),
    );
}

#[test]
fn manifest_sha512() {
    check(
        "manifest_sha512",
        &Ova::good().remanifest_with(DigestAlgorithm::Sha512),
    );
}

// ---------------------------------------------------------------------------------------------
// The OVF descriptor

#[test]
fn ovf_not_well_formed() {
    ovf_case("ovf_not_well_formed", |t| t[..t.len() / 2].to_string());
}

#[test]
fn ovf_not_utf8() {
    let ova = Ova::good().disk(OVF, |b| b.insert(300, 0xff)).remanifest();
    check("ovf_not_utf8", &ova);
}

#[test]
fn ovf_not_an_envelope() {
    ovf_case("ovf_not_an_envelope", |t| {
        edit(
            t,
            "<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\"",
            "<Envelope xmlns=\"urn:other\"",
        )
    });
}

#[test]
fn ovf_disk_without_id() {
    ovf_case("ovf_disk_without_id", |t| {
        edit(t, " ovf:diskId=\"vmdisk2\"", "")
    });
}

#[test]
fn ovf_without_cpu() {
    ovf_case("ovf_without_cpu", |t| {
        edit(
            t,
            "<rasd:ResourceType>3</rasd:ResourceType>",
            "<rasd:ResourceType>99</rasd:ResourceType>",
        )
    });
}

#[test]
fn ovf_file_missing() {
    ovf_case("ovf_file_missing", |t| {
        edit(
            t,
            "ovf:href=\"mt-appliance-disk2.vmdk\"",
            "ovf:href=\"absent-disk2.vmdk\"",
        )
    });
}

#[test]
fn ovf_wrong_size() {
    let size = fixture().members[2].1.len();
    ovf_case("ovf_wrong_size", |t| {
        edit_after(
            t,
            "ovf:href=\"mt-appliance-disk1.vmdk\"",
            &format!("ovf:size=\"{size}\""),
            &format!("ovf:size=\"{}\"", size + 512),
        )
    });
}

#[test]
fn ovf_no_size_and_compression() {
    let size = fixture().members[2].1.len();
    ovf_case("ovf_no_size_and_compression", |t| {
        edit_after(
            t,
            "ovf:href=\"mt-appliance-disk1.vmdk\"",
            &format!("ovf:size=\"{size}\""),
            "ovf:compression=\"gzip\"",
        )
    });
}

#[test]
fn ovf_guest_id_not_in_the_table() {
    ovf_case("ovf_guest_id_not_in_the_table", |t| {
        edit(
            t,
            "vmw:osType=\"debian10_64Guest\"",
            "vmw:osType=\"fooLinux64Guest\"",
        )
    });
}

#[test]
fn ovf_guest_id_of_a_vmx_file() {
    ovf_case("ovf_guest_id_of_a_vmx_file", |t| {
        edit(
            t,
            "vmw:osType=\"debian10_64Guest\"",
            "vmw:osType=\"debian9-64\"",
        )
    });
}

#[test]
fn ovf_guest_id_too_new() {
    ovf_case("ovf_guest_id_too_new", |t| {
        edit(
            t,
            "vmw:osType=\"debian10_64Guest\"",
            "vmw:osType=\"debian12_64Guest\"",
        )
    });
}

#[test]
fn ovf_no_guest_id() {
    ovf_case("ovf_no_guest_id", |t| {
        edit(t, " vmw:osType=\"debian10_64Guest\"", "")
    });
}

const DISK2_ITEM: &str = "<rasd:ElementName>Hard Disk 2 (retention)";

#[test]
fn ovf_scsi_unit_7() {
    ovf_case("ovf_scsi_unit_7", |t| {
        edit_before(
            t,
            DISK2_ITEM,
            "<rasd:AddressOnParent>1<",
            "<rasd:AddressOnParent>7<",
        )
    });
}

#[test]
fn ovf_unit_used_twice() {
    ovf_case("ovf_unit_used_twice", |t| {
        edit_before(
            t,
            DISK2_ITEM,
            "<rasd:AddressOnParent>1<",
            "<rasd:AddressOnParent>0<",
        )
    });
}

#[test]
fn ovf_no_unit() {
    ovf_case("ovf_no_unit", |t| {
        edit_before(
            t,
            DISK2_ITEM,
            "<rasd:AddressOnParent>1</rasd:AddressOnParent>",
            "",
        )
    });
}

#[test]
fn ovf_parent_not_a_controller() {
    ovf_case("ovf_parent_not_a_controller", |t| {
        edit_after(t, DISK2_ITEM, "<rasd:Parent>3<", "<rasd:Parent>9<")
    });
}

#[test]
fn ovf_controller_misspelt() {
    ovf_case("ovf_controller_misspelt", |t| {
        edit(
            t,
            "<rasd:ResourceSubType>VirtualSCSI<",
            "<rasd:ResourceSubType>virtualscsi<",
        )
    });
}

#[test]
fn ovf_controller_unknown() {
    ovf_case("ovf_controller_unknown", |t| {
        edit(
            t,
            "<rasd:ResourceSubType>VirtualSCSI<",
            "<rasd:ResourceSubType>pvscsi<",
        )
    });
}

#[test]
fn ovf_controller_without_subtype() {
    ovf_case("ovf_controller_without_subtype", |t| {
        edit(
            t,
            "<rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>",
            "",
        )
    });
}

#[test]
fn ovf_nic_problems() {
    ovf_case("ovf_nic_problems", |t| {
        let t = edit(
            t,
            "<rasd:ResourceSubType>VmxNet3<",
            "<rasd:ResourceSubType>Rtl8139<",
        );
        edit(&t, "<rasd:Connection>VM Network<", "<rasd:Connection>Lab<")
    });
}

#[test]
fn ovf_disk_problems() {
    ovf_case("ovf_disk_problems", |t| {
        let t = edit(t, "vmdk.html#streamOptimized", "vmdk.html#sparse");
        edit(&t, "ovf:fileRef=\"file2\"", "ovf:fileRef=\"file9\"")
    });
}

#[test]
fn ovf_disk_capacity_not_sectors() {
    ovf_case("ovf_disk_capacity_not_sectors", |t| {
        edit(t, "ovf:capacity=\"1048576\"", "ovf:capacity=\"1000\"")
    });
}

#[test]
fn ovf_disk_detached() {
    ovf_case("ovf_disk_detached", |t| {
        let a = t.find(DISK2_ITEM).unwrap();
        let start = t[..a].rfind("<Item>").unwrap();
        let end = a + t[a..].find("</Item>").unwrap() + "</Item>".len();
        format!("{}{}", &t[..start], &t[end..])
    });
}

#[test]
fn ovf_hardware_family_unknown() {
    ovf_case("ovf_hardware_family_unknown", |t| {
        edit(t, ">vmx-14<", ">virtualbox-2.2<")
    });
}

#[test]
fn ovf_no_hardware_family() {
    ovf_case("ovf_no_hardware_family", |t| {
        edit(
            t,
            "<vssd:VirtualSystemType>vmx-14</vssd:VirtualSystemType>",
            "",
        )
    });
}

#[test]
fn ovf_extra_config_problems() {
    ovf_case("ovf_extra_config_problems", |t| {
        let t = edit(t, "vmw:value=\"TRUE\"", "vmw:value=\"FALSE\"");
        edit(
            &t,
            "</VirtualHardwareSection>",
            "<vmw:ExtraConfig ovf:required=\"false\" vmw:key=\"bad key\" vmw:value=\"1\"/></VirtualHardwareSection>",
        )
    });
}

/// The `vmw:Config`/`vmw:ExtraConfig` lines of the descriptor.
fn config_lines(t: &str) -> Vec<&str> {
    t.lines()
        .filter(|l| l.contains("<vmw:Config") || l.contains("<vmw:ExtraConfig"))
        .collect()
}

#[test]
fn ovf_no_config() {
    ovf_case("ovf_no_config", |t| {
        let mut t = t.to_string();
        for l in config_lines(&t.clone()) {
            t = edit(&t, &format!("{l}\n"), "");
        }
        t
    });
}

#[test]
fn ovf_config_before_the_items() {
    ovf_case("ovf_config_before_the_items", |t| {
        let firmware = config_lines(t)[0].to_string();
        let t = edit(t, &format!("{firmware}\n"), "");
        edit(&t, "<Item>", &format!("{}<Item>", firmware.trim()))
    });
}

#[test]
fn ovf_password_default_without_transport() {
    ovf_case("ovf_password_default_without_transport", |t| {
        let t = edit_after(
            t,
            "ovf:key=\"agent_passphrase\"",
            "ovf:value=\"\"",
            "ovf:value=\"hunter22\"",
        );
        edit(&t, " ovf:transport=\"com.vmware.guestInfo iso\"", "")
    });
}

#[test]
fn ovf_iso_transport_without_a_cdrom_drive() {
    ovf_case("ovf_iso_transport_without_a_cdrom_drive", |t| {
        let at = t
            .find("<rasd:ResourceType>15</rasd:ResourceType>")
            .expect("the OVF declares a CD-ROM drive");
        let start = t[..at].rfind("<Item>").unwrap();
        let end = at + t[at..].find("</Item>").unwrap() + "</Item>".len();
        edit(t, &t[start..end], "")
    });
}

#[test]
fn ovf_boot_order_and_virtualbox_sections() {
    ovf_case("ovf_boot_order_and_virtualbox_sections", |t| {
        edit(
            t,
            "</VirtualSystem>",
            "<BootOrderSection><Info>Boot</Info></BootOrderSection><vbox:Machine xmlns:vbox=\"http://www.virtualbox.org/ovf/machine\"/></VirtualSystem>",
        )
    });
}

// ---------------------------------------------------------------------------------------------
// The VMDKs

#[test]
fn vmdk_bad_magic() {
    vmdk_case("vmdk_bad_magic", OS, |b| b[0..4].copy_from_slice(b"XXXX"));
}

#[test]
fn vmdk_unfinished_magic() {
    vmdk_case("vmdk_unfinished_magic", OS, |b| {
        b[0..4].copy_from_slice(b"vmdk")
    });
}

#[test]
fn vmdk_descriptor_file() {
    vmdk_case("vmdk_descriptor_file", RET, |b| {
        *b = b"# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n".to_vec();
        b.resize(3 * SECTOR, 0);
    });
}

#[test]
fn vmdk_old_version() {
    vmdk_case("vmdk_old_version", OS, |b| put_u32(b, 4, 1));
}

#[test]
fn vmdk_not_a_version() {
    vmdk_case("vmdk_not_a_version", RET, |b| put_u32(b, 4, 7));
}

#[test]
fn vmdk_flags_without_compression() {
    vmdk_case("vmdk_flags_without_compression", OS, |b| {
        let flags = u32::from_le_bytes(b[8..12].try_into().unwrap());
        put_u32(b, 8, flags & !(1 << 16));
    });
}

#[test]
fn vmdk_unknown_compression() {
    vmdk_case("vmdk_unknown_compression", OS, |b| b[77] = 2);
}

#[test]
fn vmdk_capacity_not_the_ovf_capacity() {
    ovf_case("vmdk_capacity_not_the_ovf_capacity", |t| {
        edit(t, "ovf:capacity=\"2097152\"", "ovf:capacity=\"4194304\"")
    });
}

#[test]
fn vmdk_create_type() {
    vmdk_case("vmdk_create_type", OS, |b| {
        let desc = &mut b[SECTOR..21 * SECTOR];
        let text = String::from_utf8(desc.to_vec()).unwrap();
        let mut new = edit(
            &text,
            "createType=\"streamOptimized\"",
            "createType=\"monolithicSparse\"",
        )
        .into_bytes();
        new.truncate(desc.len());
        desc.copy_from_slice(&new);
    });
}

#[test]
fn vmdk_overhead_zero() {
    vmdk_case("vmdk_overhead_zero", OS, |b| put_u64(b, 64, 0));
}

#[test]
fn vmdk_overhead_past_the_end() {
    vmdk_case("vmdk_overhead_past_the_end", OS, |b| {
        put_u64(b, 64, 100_000)
    });
}

#[test]
fn vmdk_not_whole_sectors() {
    vmdk_case("vmdk_not_whole_sectors", OS, |b| b.truncate(b.len() - 100));
}

#[test]
fn vmdk_shorter_than_three_sectors() {
    vmdk_case("vmdk_shorter_than_three_sectors", RET, |b| b.truncate(1000));
}

#[test]
fn vmdk_shorter_than_a_header() {
    vmdk_case("vmdk_shorter_than_a_header", RET, |b| b.truncate(100));
}

#[test]
fn vmdk_grain_lba_outside_the_disk() {
    vmdk_case("vmdk_grain_lba_outside_the_disk", OS, |b| {
        let at = grain_marker(b, 0);
        put_u64(b, at, 1 << 40);
    });
}

#[test]
fn vmdk_grain_lba_not_a_grain_start() {
    vmdk_case("vmdk_grain_lba_not_a_grain_start", OS, |b| {
        let at = grain_marker(b, 0);
        put_u64(b, at, 3);
    });
}

#[test]
fn vmdk_grain_size_too_large() {
    vmdk_case("vmdk_grain_size_too_large", OS, |b| {
        let at = grain_marker(b, 0);
        put_u32(b, at + 8, 0x00ff_ffff);
    });
}

#[test]
fn vmdk_grains_out_of_order() {
    vmdk_case("vmdk_grains_out_of_order", OS, |b| {
        let at = grain_marker(b, 1);
        put_u64(b, at, 0);
    });
}

#[test]
fn vmdk_truncated_in_a_grain() {
    vmdk_case("vmdk_truncated_in_a_grain", OS, |b| {
        let at = grain_marker(b, 2);
        b.truncate(at + 2 * SECTOR);
    });
}

#[test]
fn vmdk_corrupt_grain() {
    vmdk_case("vmdk_corrupt_grain", OS, |b| {
        let at = grain_marker(b, 2) + 12 + 20;
        for x in &mut b[at..at + 16] {
            *x ^= 0x5a;
        }
    });
}

#[test]
fn vmdk_unknown_marker() {
    vmdk_case("vmdk_unknown_marker", OS, |b| {
        let at = metadata_marker(b, |m| matches!(m, Marker::GrainTable { .. }));
        put_u32(b, at + 12, 9);
    });
}

#[test]
fn vmdk_marker_larger_than_the_file() {
    vmdk_case("vmdk_marker_larger_than_the_file", OS, |b| {
        let at = metadata_marker(b, |m| matches!(m, Marker::GrainTable { .. }));
        put_u64(b, at, 1 << 40);
    });
}

#[test]
fn vmdk_grain_table_entry_outside_the_file() {
    vmdk_case("vmdk_grain_table_entry_outside_the_file", OS, |b| {
        let at = metadata_marker(b, |m| matches!(m, Marker::GrainTable { .. })) + SECTOR;
        put_u32(b, at, 0x00ff_ffff);
    });
}

#[test]
fn vmdk_footer_differs_from_the_header() {
    vmdk_case("vmdk_footer_differs_from_the_header", OS, |b| {
        let at = b.len() - 2 * SECTOR;
        put_u64(b, at + 12, 8192);
    });
}

#[test]
fn vmdk_without_end_of_stream() {
    vmdk_case("vmdk_without_end_of_stream", OS, |b| {
        b.truncate(b.len() - SECTOR)
    });
}

#[test]
fn vmdk_zeros_after_end_of_stream() {
    vmdk_case("vmdk_zeros_after_end_of_stream", OS, |b| {
        b.resize(b.len() + SECTOR, 0)
    });
}

#[test]
fn vmdk_data_after_end_of_stream() {
    vmdk_case("vmdk_data_after_end_of_stream", RET, |b| {
        b.resize(b.len() + SECTOR, 0xab)
    });
}
