//! The manifest, the OVA tar and `verify-ova`: exact manifest syntax, member order and header
//! format, byte-identical repeat builds, and corrupt or foreign OVAs reported with the member,
//! structure and byte offset.

use crate::support;

use appliance::definition::{DigestAlgorithm, VsphereCompat};
use appliance::manifest::{digest_bytes, Manifest};
use appliance::ova::{member_header, read_index, HeaderFormat, USTAR_MAX_SIZE};
use appliance::verify::{verify_ova, Finding, Severity, VerifyOptions, VerifyReport};
use camino::{Utf8Path, Utf8PathBuf};
use std::process::Command;
use support::*;

fn verify(path: &Utf8Path, compat: VsphereCompat) -> VerifyReport {
    verify_ova(
        path,
        &VerifyOptions {
            compat,
            raw_dir: None,
        },
    )
    .unwrap()
}

fn show(r: &VerifyReport) -> String {
    r.findings
        .iter()
        .map(Finding::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The report has an error whose text contains every needle; returns it.
fn error_with<'r>(r: &'r VerifyReport, needles: &[&str]) -> &'r Finding {
    r.errors()
        .find(|f| {
            let t = f.to_string();
            needles.iter().all(|n| t.contains(n))
        })
        .unwrap_or_else(|| panic!("no error mentioning {needles:?}; findings:\n{}", show(r)))
}

fn good_ova(name: &str) -> (Utf8PathBuf, Parts) {
    let dir = scratch(name);
    let def = small_definition();
    let parts = qemu_parts(&dir, &def);
    let out = dir.join("good.ova");
    pack_parts(&out, &parts, &parts.order());
    (out, parts)
}

#[test]
fn manifest_lines_are_byte_exact() {
    for (alg, name) in [
        (DigestAlgorithm::Sha1, "SHA1"),
        (DigestAlgorithm::Sha256, "SHA256"),
        (DigestAlgorithm::Sha512, "SHA512"),
    ] {
        let mut m = Manifest::new(alg);
        m.push("a.ovf", digest_bytes(alg, b"ovf"));
        m.push("a-disk1.vmdk", digest_bytes(alg, b"disk"));
        let text = m.render();
        let expected = format!(
            "{name}(a.ovf)= {}\n{name}(a-disk1.vmdk)= {}\n",
            digest_bytes(alg, b"ovf"),
            digest_bytes(alg, b"disk")
        );
        assert_eq!(text, expected);
        let back = Manifest::parse(text.as_bytes()).unwrap();
        assert_eq!(back.algorithm, alg);
        assert_eq!(back.entries[1].file, "a-disk1.vmdk");
        assert_eq!(back.entries[1].offset, text.find('\n').unwrap() + 1);
    }
    assert_eq!(
        digest_bytes(DigestAlgorithm::Sha256, b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn manifest_syntax_that_vsphere_rejects_is_refused_with_the_line() {
    let h = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let ok = format!("SHA256(a.ovf)= {h}\n");
    for (text, line, needle) in [
        (
            format!("{ok}SHA256 (b.vmdk) = {h}\n"),
            2,
            "space before '('",
        ),
        (format!("SHA2-256(a.ovf)= {h}\n"), 1, "SHA2-256"),
        (format!("SHA256(a.ovf) = {h}\n"), 1, ")= "),
        (format!("SHA256(a.ovf)= {h}\r\n"), 1, "CR LF"),
        (
            format!("SHA256(a.ovf)= {}\n", h.to_uppercase()),
            1,
            "lowercase hex",
        ),
        (
            format!("SHA256(a.ovf)= {}\n", &h[..60]),
            1,
            "64 lowercase hex",
        ),
        (format!("SHA256(a.ovf)= {h}"), 1, "newline"),
        (format!("{ok}\n"), 2, "blank"),
        (format!("{ok}{ok}"), 2, "second time"),
        (
            format!("{ok}SHA1(b)= {}\n", &h[..40]),
            2,
            "one algorithm per manifest",
        ),
    ] {
        let err = Manifest::parse(text.as_bytes()).expect_err(&text);
        assert_eq!(err.line, line, "{text:?}: {err}");
        assert!(err.message.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn members_up_to_8_gib_get_ustar_headers_and_larger_ones_gnu_base256() {
    let h = member_header("x-disk1.vmdk", USTAR_MAX_SIZE, 1234).unwrap();
    let b = h.as_bytes();
    assert_eq!(&b[257..265], b"ustar\x0000");
    assert_eq!(&b[124..136], b"77777777777\0");
    assert_eq!(&b[100..108], b"0000644\0");
    assert_eq!(&b[108..116], b"0000000\0");
    assert_eq!(b[156], b'0');

    let nine_gib = 9u64 << 30;
    let h = member_header("x-disk1.vmdk", nine_gib, 1234).unwrap();
    let b = h.as_bytes();
    assert_eq!(&b[257..265], b"ustar  \0", "GNU magic");
    assert_eq!(b[124], 0x80, "base-256 marker");
    assert_eq!(
        u64::from_be_bytes(b[128..136].try_into().unwrap()),
        nine_gib
    );

    for bad in ["", "dir/x.vmdk", &"n".repeat(101), "tab\tname"] {
        assert!(member_header(bad, 1, 0).is_err(), "{bad:?}");
    }
}

#[test]
fn a_sparse_9_gib_member_is_indexed_and_gnu_tar_lists_it() {
    let dir = scratch("ova-big-member");
    let path = dir.join("big.ova");
    let size = 9u64 << 30;
    let h = member_header("big-disk1.vmdk", size, 0).unwrap();
    std::fs::write(&path, h.as_bytes()).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(512 + size + 1024).unwrap();
    drop(f);
    let mut file = std::fs::File::open(&path).unwrap();
    let index = read_index(&mut file, 512 + size + 1024).unwrap();
    assert_eq!(index.entries.len(), 1);
    let e = &index.entries[0];
    assert_eq!(
        (e.size, e.size_base256, e.format),
        (size, true, HeaderFormat::Gnu)
    );
    assert_eq!(index.end_blocks, 2);
    testkit::require_tool("tar");
    let out = Command::new("tar").arg("-tvf").arg(&path).output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        listing.contains(&size.to_string()) && listing.contains("big-disk1.vmdk"),
        "{listing}"
    );
}

#[test]
fn the_ova_holds_descriptor_manifest_then_disks_in_ustar_with_fixed_metadata() {
    let (ova, parts) = good_ova("ova-layout");
    let len = std::fs::metadata(&ova).unwrap().len();
    let index = read_index(&mut std::fs::File::open(&ova).unwrap(), len).unwrap();
    let names: Vec<&str> = index.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, parts.order());
    for e in &index.entries {
        assert_eq!(e.format, HeaderFormat::Ustar, "{}", e.name);
        assert_eq!(
            (e.uid, e.gid, e.mode, e.mtime),
            (0, 0, 0o644, 1_700_000_000)
        );
        assert!(e.is_regular());
    }
    let bytes = std::fs::read(&ova).unwrap();
    assert_eq!(&bytes[257..265], b"ustar\x0000");
    assert_eq!(bytes.len() % 512, 0);
    // GNU tar agrees on the order and the content.
    testkit::require_tool("tar");
    let out = Command::new("tar").arg("-tf").arg(&ova).output().unwrap();
    let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(listed, parts.order());
    let ovf = Command::new("tar")
        .arg("-xOf")
        .arg(&ova)
        .arg(&parts.ovf_name)
        .output()
        .unwrap();
    assert_eq!(ovf.stdout, parts.ovf);
}

#[test]
fn writing_the_same_members_twice_gives_the_same_bytes() {
    let (ova, parts) = good_ova("ova-determinism");
    let again = ova.with_file_name("again.ova");
    pack_parts(&again, &parts, &parts.order());
    let a = digest_bytes(DigestAlgorithm::Sha256, &std::fs::read(&ova).unwrap());
    let b = digest_bytes(DigestAlgorithm::Sha256, &std::fs::read(&again).unwrap());
    assert_eq!(a, b);
    let leftovers: Vec<_> = std::fs::read_dir(ova.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn verify_accepts_a_well_formed_ova_with_disks_from_qemu_img() {
    let (ova, parts) = good_ova("ova-verify-good");
    let r = verify(&ova, VsphereCompat::V6_7);
    assert!(r.is_ok(), "{}", show(&r));
    assert_eq!(r.members.len(), 4);
    let d = r.descriptor.as_ref().expect("the descriptor was parsed");
    assert_eq!(d.disks.len(), 2);
    assert_eq!(r.manifest.as_ref().unwrap().entries.len(), 3);
    assert!(
        !r.findings.iter().any(|f| f.severity == Severity::Warning),
        "{}",
        show(&r)
    );
    drop(parts);
}

#[test]
fn verify_reports_a_truncated_ova_with_the_member_and_offset() {
    let (ova, parts) = good_ova("ova-truncated");
    let len = std::fs::metadata(&ova).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&ova).unwrap();
    f.set_len(len - 4096).unwrap();
    let r = verify(&ova, VsphereCompat::V6_7);
    let last = &parts.disks[1].0;
    let e = error_with(&r, &[last, "truncated", "tar header"]);
    assert!(e.offset.is_some());
    // Cut inside the first header: nothing to index.
    f.set_len(300).unwrap();
    let r = verify(&ova, VsphereCompat::V6_7);
    error_with(&r, &["shorter than one tar header"]);
}

#[test]
fn verify_reports_a_wrong_digest_naming_the_member() {
    let dir = scratch("ova-wrong-digest");
    let def = small_definition();
    let mut parts = qemu_parts(&dir, &def);
    let text = String::from_utf8(parts.mf.clone()).unwrap();
    let line = text.lines().nth(1).unwrap();
    let flipped_digit = if line.ends_with('0') { '1' } else { '0' };
    let bad_line = format!("{}{flipped_digit}", &line[..line.len() - 1]);
    parts.mf = text.replace(line, &bad_line).into_bytes();
    let out = dir.join("bad.ova");
    pack_parts(&out, &parts, &parts.order());
    let r = verify(&out, VsphereCompat::V6_7);
    let disk = &parts.disks[0].0;
    let e = error_with(&r, &[disk, "digest", "manifest line 2"]);
    let index = read_index(
        &mut std::fs::File::open(&out).unwrap(),
        std::fs::metadata(&out).unwrap().len(),
    )
    .unwrap();
    assert_eq!(e.offset, Some(index.entries[2].data_offset));
}

#[test]
fn verify_reports_members_out_of_order() {
    let (_, parts) = good_ova("ova-order");
    let dir = scratch("ova-order-bad");
    let mut order = parts.order();
    order.swap(0, 1);
    let out = dir.join("mf-first.ova");
    pack_parts(&out, &parts, &order);
    let r = verify(&out, VsphereCompat::V6_7);
    error_with(&r, &[&parts.mf_name, "member order", "must come first"]);

    let mut order = parts.order();
    order.swap(2, 3);
    let out = dir.join("disks-swapped.ova");
    pack_parts(&out, &parts, &order);
    let r = verify(&out, VsphereCompat::V6_7);
    error_with(&r, &[&parts.disks[0].0, "References order"]);
}

#[test]
fn verify_reports_an_ovf_size_that_is_not_the_file_size() {
    let dir = scratch("ova-ovf-size");
    let def = small_definition();
    let mut parts = qemu_parts(&dir, &def);
    let size = std::fs::metadata(&parts.disks[0].1).unwrap().len();
    let ovf = String::from_utf8(parts.ovf.clone()).unwrap();
    let wrong = ovf.replacen(
        &format!("ovf:size=\"{size}\""),
        &format!("ovf:size=\"{}\"", size + 512),
        1,
    );
    assert_ne!(wrong, ovf);
    parts.ovf = wrong.clone().into_bytes();
    let alg = def.manifest_algorithm();
    let mut mf = Manifest::parse(&parts.mf).unwrap();
    mf.entries[0].digest = digest_bytes(alg, &parts.ovf);
    parts.mf = mf.render().into_bytes();
    let out = dir.join("bad.ova");
    pack_parts(&out, &parts, &parts.order());
    let r = verify(&out, VsphereCompat::V6_7);
    let e = error_with(
        &r,
        &[&parts.ovf_name, "References/File", "ovf:size", "aborts"],
    );
    let pos = wrong.find(&parts.disks[0].0).unwrap();
    let file_elem = wrong[..pos].rfind("<File").unwrap() as u64;
    assert_eq!(
        e.offset,
        Some(512 + file_elem),
        "offset of the File element in the OVA"
    );
}

#[test]
fn verify_reports_a_baked_in_passphrase_and_properties_without_a_transport() {
    let dir = scratch("ova-ovf-passphrase");
    let def = small_definition();
    let mut parts = qemu_parts(&dir, &def);
    let ovf = String::from_utf8(parts.ovf.clone()).unwrap();
    let r = verify(&good_ova("ova-ovf-passphrase-good").0, VsphereCompat::V6_7);
    assert!(
        !show(&r).contains("ProductSection/Property") && !show(&r).contains("ovf:transport"),
        "{}",
        show(&r)
    );
    let needle = "ovf:key=\"agent_passphrase\"";
    let at = ovf
        .find(needle)
        .expect("the OVF offers the passphrase property");
    let value = at + ovf[at..].find("ovf:value=\"\"").unwrap();
    let bad = format!(
        "{}ovf:value=\"hunter22\"{}",
        &ovf[..value],
        &ovf[value + "ovf:value=\"\"".len()..]
    )
    .replace(" ovf:transport=\"com.vmware.guestInfo iso\"", "");
    parts.ovf = bad.into_bytes();
    remanifest(&mut parts, def.manifest_algorithm());
    let out = dir.join("bad.ova");
    pack_parts(&out, &parts, &parts.order());
    let r = verify(&out, VsphereCompat::V6_7);
    error_with(
        &r,
        &["ProductSection/Property", "agent_passphrase", "baked"],
    );
    assert!(
        r.findings
            .iter()
            .any(|f| f.severity == Severity::Warning && f.message.contains("no ovf:transport")),
        "{}",
        show(&r)
    );
}

#[test]
fn verify_reports_a_truncated_vmdk() {
    let dir = scratch("ova-truncated-vmdk");
    let def = small_definition();
    let parts0 = qemu_parts(&dir, &def);
    // Cut the OS disk inside its last grain and rebuild descriptor and manifest around it, as a
    // producer that lost the tail would.
    let vmdk = &parts0.disks[0].1;
    let len = std::fs::metadata(vmdk).unwrap().len();
    let cut = strip_trailing_zero_sectors(vmdk) - 1024;
    std::fs::OpenOptions::new()
        .write(true)
        .open(vmdk)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let ovf = String::from_utf8(parts0.ovf.clone()).unwrap().replacen(
        &format!("ovf:size=\"{len}\""),
        &format!("ovf:size=\"{cut}\""),
        1,
    );
    let alg = def.manifest_algorithm();
    let mut mf = Manifest::new(alg);
    mf.push(&parts0.ovf_name, digest_bytes(alg, ovf.as_bytes()));
    for (n, p) in &parts0.disks {
        mf.push(n, digest_bytes(alg, &std::fs::read(p).unwrap()));
    }
    let parts = Parts {
        ovf: ovf.into_bytes(),
        mf: mf.render().into_bytes(),
        ..parts0
    };
    let out = dir.join("bad.ova");
    pack_parts(&out, &parts, &parts.order());
    let r = verify(&out, VsphereCompat::V6_7);
    error_with(&r, &[&parts.disks[0].0, "end of the file"]);
    assert!(
        r.errors()
            .all(|f| f.member.as_deref() == Some(parts.disks[0].0.as_str())),
        "only the disk is wrong:\n{}",
        show(&r)
    );
}

#[test]
fn verify_lints_against_the_vsphere_target() {
    let (ova, parts) = good_ova("ova-lint-target");
    // The default definition targets 6.7: vmx-14, debian10_64Guest, SHA256.
    let r = verify(&ova, VsphereCompat::V6_0);
    error_with(
        &r,
        &[
            &parts.ovf_name,
            "VirtualHardwareSection/System",
            "vmx-14",
            "too new for vSphere 6.0",
        ],
    );
    // An id the release does not know imports as "Other (32-bit)": a warning, not an error.
    let guest = r
        .findings
        .iter()
        .find(|f| {
            f.to_string()
                .contains("debian10_64Guest is unknown to vSphere 6.0")
        })
        .unwrap_or_else(|| panic!("no finding on the guest id; findings:\n{}", show(&r)));
    assert_eq!(guest.severity, appliance::verify::Severity::Warning);
    assert!(guest.to_string().contains("Other (32-bit)"), "{guest}");
    error_with(&r, &[&parts.mf_name, "manifest line 1", "SHA1"]);
    assert!(verify(&ova, VsphereCompat::V8_0).is_ok());
}

/// A descriptor as another producer might write it: MiB units, vmx-11, no vmw:Config, one disk.
fn hand_written_ovf(vmdk: &str, size: u64, capacity_mib: u64) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References><File ovf:href="{vmdk}" ovf:id="file1" ovf:size="{size}"/></References>
  <DiskSection><Info>Disks</Info>
    <Disk ovf:capacity="{capacity_mib}" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection><Info>Networks</Info><Network ovf:name="VM Network"><Description>net</Description></Network></NetworkSection>
  <VirtualSystem ovf:id="foreign">
    <Info>A VM</Info>
    <OperatingSystemSection ovf:id="101" vmw:osType="otherLinux64Guest"><Info>OS</Info></OperatingSystemSection>
    <VirtualHardwareSection><Info>HW</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemType>vmx-11</vssd:VirtualSystemType></System>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:ElementName>1 CPU</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>mem</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>512</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>SCSI</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>disk</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation><rasd:Connection>VM Network</rasd:Connection><rasd:ElementName>nic</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// Drops qemu-img's trailing zero sectors, as a producer without an end-of-stream marker
/// leaves the file: ending in the last grain. Returns the new length.
fn strip_trailing_zero_sectors(vmdk: &Utf8Path) -> u64 {
    let bytes = std::fs::read(vmdk).unwrap();
    let mut end = bytes.len();
    while end >= 512 && bytes[end - 512..end].iter().all(|&b| b == 0) {
        end -= 512;
    }
    std::fs::write(vmdk, &bytes[..end]).unwrap();
    end as u64
}

/// Builds an OVA with GNU tar from a qemu-img disk and a hand-written descriptor.
fn foreign_ova(dir: &Utf8Path, append_eos: bool, format: &str) -> Utf8PathBuf {
    let raw = dir.join("foreign.raw");
    let mut data = noise(3, 2 << 20);
    data.extend(b"hello".repeat(1000));
    raw_image(&raw, 16 << 20, &data);
    let vmdk = dir.join("foreign-disk1.vmdk");
    qemu_stream_vmdk(&raw, &vmdk);
    if !append_eos {
        strip_trailing_zero_sectors(&vmdk);
    }
    let size = std::fs::metadata(&vmdk).unwrap().len();
    let ovf = hand_written_ovf("foreign-disk1.vmdk", size, 16);
    std::fs::write(dir.join("foreign.ovf"), &ovf).unwrap();
    let alg = DigestAlgorithm::Sha256;
    let mf = format!(
        "SHA256(foreign.ovf)= {}\nSHA256(foreign-disk1.vmdk)= {}\n",
        digest_bytes(alg, ovf.as_bytes()),
        digest_bytes(alg, &std::fs::read(&vmdk).unwrap())
    );
    std::fs::write(dir.join("foreign.mf"), mf).unwrap();
    let out = dir.join("foreign.ova");
    testkit::require_tool("tar");
    let st = Command::new("tar")
        .current_dir(dir)
        .arg(format!("--format={format}"))
        .args([
            "-cf",
            "foreign.ova",
            "foreign.ovf",
            "foreign.mf",
            "foreign-disk1.vmdk",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    out
}

#[test]
fn verify_works_on_an_ova_made_by_other_tools() {
    let dir = scratch("ova-foreign");
    let out = foreign_ova(&dir, true, "ustar");
    let r = verify(&out, VsphereCompat::V6_5);
    assert!(r.is_ok(), "{}", show(&r));
    let d = r.descriptor.as_ref().unwrap();
    assert_eq!(d.disks[0].capacity_bytes, 16 << 20);
    // It still warns about what this producer left out.
    let warnings = show(&r);
    assert!(
        warnings.contains("disk.EnableUUID") && warnings.contains("firmware"),
        "{warnings}"
    );

    // qemu-img alone writes no end-of-stream marker: reported at the disk's last sector.
    let dir = scratch("ova-foreign-no-eos");
    let out = foreign_ova(&dir, false, "ustar");
    let r = verify(&out, VsphereCompat::V6_5);
    let e = error_with(&r, &["foreign-disk1.vmdk", "end-of-stream marker"]);
    let index = read_index(
        &mut std::fs::File::open(&out).unwrap(),
        std::fs::metadata(&out).unwrap().len(),
    )
    .unwrap();
    let disk = &index.entries[2];
    assert_eq!(
        e.offset,
        Some(disk.data_offset + disk.size),
        "where the marker should be"
    );
}

#[test]
fn verify_rejects_a_pax_archive() {
    let dir = scratch("ova-pax");
    let out = foreign_ova(&dir, true, "pax");
    let r = verify(&out, VsphereCompat::V6_7);
    error_with(&r, &["PAX", "tar header"]);
}

/// Recomputes the manifest over the parts as they are now (a producer that corrupted a disk
/// before hashing it).
fn remanifest(parts: &mut Parts, alg: DigestAlgorithm) {
    let mut mf = Manifest::new(alg);
    mf.push(&parts.ovf_name, digest_bytes(alg, &parts.ovf));
    for (n, p) in &parts.disks {
        mf.push(n, digest_bytes(alg, &std::fs::read(p).unwrap()));
    }
    parts.mf = mf.render().into_bytes();
}

#[test]
fn verify_reports_a_bad_grain_marker_at_its_offset() {
    let dir = scratch("ova-bad-marker");
    let def = small_definition();
    let mut parts = qemu_parts(&dir, &def);
    let vmdk = parts.disks[0].1.clone();
    let mut bytes = std::fs::read(&vmdk).unwrap();
    let over_head = u64::from_le_bytes(bytes[64..72].try_into().unwrap()) as usize;
    let marker = over_head * 512;
    bytes[marker..marker + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&vmdk, &bytes).unwrap();
    remanifest(&mut parts, def.manifest_algorithm());
    let out = dir.join("bad.ova");
    pack_parts(&out, &parts, &parts.order());
    let r = verify(&out, VsphereCompat::V6_7);
    let e = error_with(&r, &[&parts.disks[0].0, "grain marker", "bad marker"]);
    let index = read_index(
        &mut std::fs::File::open(&out).unwrap(),
        std::fs::metadata(&out).unwrap().len(),
    )
    .unwrap();
    assert_eq!(e.offset, Some(index.entries[2].data_offset + marker as u64));
}

mod packing {
    //! `ova::pack`: raw disks in, a complete OVA out, through the streamOptimized VMDK writer.

    use super::*;
    use appliance::ova::{pack, PackError, PackOptions};
    use appliance::ovf::DiskRole;

    fn opts(epoch: u64) -> PackOptions {
        PackOptions {
            source_date_epoch: Some(epoch),
            build_id: "pack-test".into(),
        }
    }

    fn raw_refs(raws: &[(DiskRole, Utf8PathBuf)]) -> Vec<(DiskRole, &Utf8Path)> {
        raws.iter().map(|(r, p)| (*r, p.as_path())).collect()
    }

    #[test]
    fn packing_twice_with_the_same_inputs_gives_the_same_sha256() {
        let dir = scratch("pack-determinism");
        let def = small_definition();
        let raws = small_raws(&dir, &def);
        let a = pack(
            &def,
            &raw_refs(&raws),
            &dir.join("a.ova"),
            &opts(1_700_000_000),
        )
        .unwrap();
        let b = pack(
            &def,
            &raw_refs(&raws),
            &dir.join("b.ova"),
            &opts(1_700_000_000),
        )
        .unwrap();
        assert_eq!(a.sha256, b.sha256);
        assert_eq!(
            std::fs::read(&a.path).unwrap(),
            std::fs::read(&b.path).unwrap()
        );
        assert_eq!(
            a.sha256,
            digest_bytes(DigestAlgorithm::Sha256, &std::fs::read(&a.path).unwrap())
        );
        let c = pack(
            &def,
            &raw_refs(&raws),
            &dir.join("c.ova"),
            &opts(1_700_000_001),
        )
        .unwrap();
        assert_ne!(a.sha256, c.sha256, "SOURCE_DATE_EPOCH is the member mtime");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(names.is_empty(), "work files left behind: {names:?}");
    }

    #[test]
    fn a_packed_ova_verifies_and_expands_to_its_raw_disks() {
        let dir = scratch("pack-verify");
        let def = small_definition();
        let raws = small_raws(&dir, &def);
        let out = dir.join("appliance.ova");
        let summary = pack(&def, &raw_refs(&raws), &out, &opts(0)).unwrap();
        assert_eq!(summary.members[0].0, "mt-appliance.ovf");
        assert_eq!(
            summary.disks[1].1.grains_written, 0,
            "the retention disk is all zero"
        );
        // The raw images under the names of the disks they became.
        let raw_dir = dir.join("raw");
        std::fs::create_dir_all(&raw_dir).unwrap();
        for (role, raw) in &raws {
            let name = role.file_name(&def).replace(".vmdk", ".img");
            std::fs::rename(raw, raw_dir.join(name)).unwrap();
        }
        let r = verify_ova(
            &out,
            &VerifyOptions {
                compat: def.appliance.vsphere_compat,
                raw_dir: Some(raw_dir.clone()),
            },
        )
        .unwrap();
        assert!(r.is_ok(), "{}", show(&r));
        assert!(
            !r.findings.iter().any(|f| f.severity == Severity::Warning),
            "{}",
            show(&r)
        );
        assert_eq!(r.disks_checked.len(), 2);
        assert_eq!(r.disks_compared.len(), 2);
        let d = r.descriptor.unwrap();
        assert_eq!(
            d.disks[0].populated_size,
            Some(summary.disks[0].1.populated_size)
        );

        // One byte changed in a hole of the raw OS image: named at its disk offset.
        let os_raw = raw_dir.join("mt-appliance-disk1.img");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&os_raw)
            .unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"X", (5 << 20) + 3).unwrap();
        let r = verify_ova(
            &out,
            &VerifyOptions {
                compat: def.appliance.vsphere_compat,
                raw_dir: Some(raw_dir.clone()),
            },
        )
        .unwrap();
        error_with(
            &r,
            &[
                "mt-appliance-disk1.vmdk",
                "virtual disk content",
                &format!("disk byte {}", (5 << 20) + 3),
            ],
        );

        // The raw OS image replaced by an empty (all-hole) one: the first data byte is named.
        std::fs::remove_file(&os_raw).unwrap();
        raw_image(&os_raw, DiskRole::Os.capacity(&def), &[]);
        let first = noise(7, 1 << 20).iter().position(|&b| b != 0).unwrap();
        let r = verify_ova(
            &out,
            &VerifyOptions {
                compat: def.appliance.vsphere_compat,
                raw_dir: Some(raw_dir),
            },
        )
        .unwrap();
        error_with(
            &r,
            &["mt-appliance-disk1.vmdk", &format!("disk byte {first} ")],
        );
    }

    #[test]
    fn a_pack_that_fails_leaves_nothing_behind() {
        let dir = scratch("pack-fails");
        let def = small_definition();
        let raws = small_raws(&dir, &def);
        let out = dir.join("never.ova");
        let only_os = [(DiskRole::Os, raws[0].1.as_path())];
        let err = pack(&def, &only_os, &out, &opts(0)).unwrap_err();
        assert!(
            matches!(err, PackError::MissingDisk(DiskRole::Retention)),
            "{err}"
        );
        let twice = [
            (DiskRole::Os, raws[0].1.as_path()),
            (DiskRole::Os, raws[0].1.as_path()),
        ];
        let err = pack(&def, &twice, &out, &opts(0)).unwrap_err();
        assert!(
            matches!(err, PackError::DuplicateDisk(DiskRole::Os)),
            "{err}"
        );
        let swapped = [
            (DiskRole::Os, raws[1].1.as_path()),
            (DiskRole::Retention, raws[0].1.as_path()),
        ];
        let err = pack(&def, &swapped, &out, &opts(0)).unwrap_err();
        assert!(err.to_string().contains("os_disk.size"), "{err}");
        let left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".raw"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn verify_reports_a_corrupt_grain_of_our_vmdk_through_the_reader() {
        let dir = scratch("pack-bad-grain");
        let def = small_definition();
        let raws = small_raws(&dir, &def);
        let out = dir.join("appliance.ova");
        pack(&def, &raw_refs(&raws), &out, &opts(0)).unwrap();
        // Damage the zlib stream of the first grain, then fix the manifest so only the VMDK
        // structure check can notice.
        let len = std::fs::metadata(&out).unwrap().len();
        let index = read_index(&mut std::fs::File::open(&out).unwrap(), len).unwrap();
        let disk = index.entries[2].clone();
        let mut bytes = std::fs::read(&out).unwrap();
        let grain = (disk.data_offset + 128 * 512 + 12 + 20) as usize;
        for b in &mut bytes[grain..grain + 16] {
            *b ^= 0x5a;
        }
        let alg = def.manifest_algorithm();
        let vmdk = &bytes[disk.data_offset as usize..(disk.data_offset + disk.size) as usize];
        let new_digest = digest_bytes(alg, vmdk);
        let mf = &index.entries[1];
        let mf_text = String::from_utf8(
            bytes[mf.data_offset as usize..(mf.data_offset + mf.size) as usize].to_vec(),
        )
        .unwrap();
        let mut manifest = Manifest::parse(mf_text.as_bytes()).unwrap();
        manifest.entries[1].digest = new_digest;
        let dir2 = dir.join("repacked");
        std::fs::create_dir_all(&dir2).unwrap();
        let vmdk_path = dir2.join(&disk.name);
        std::fs::write(&vmdk_path, vmdk).unwrap();
        let other = &index.entries[3];
        let other_path = dir2.join(&other.name);
        std::fs::write(
            &other_path,
            &bytes[other.data_offset as usize..(other.data_offset + other.size) as usize],
        )
        .unwrap();
        let ovf = &index.entries[0];
        let parts = Parts {
            ovf_name: ovf.name.clone(),
            ovf: bytes[ovf.data_offset as usize..(ovf.data_offset + ovf.size) as usize].to_vec(),
            mf_name: mf.name.clone(),
            mf: manifest.render().into_bytes(),
            disks: vec![
                (disk.name.clone(), vmdk_path),
                (other.name.clone(), other_path),
            ],
            raws: vec![],
        };
        let bad = dir2.join("bad.ova");
        pack_parts(&bad, &parts, &parts.order());
        let r = verify(&bad, def.appliance.vsphere_compat);
        let e = error_with(&r, &[&disk.name]);
        assert!(e.offset.is_some(), "{e}");
        assert!(
            r.errors()
                .all(|f| f.member.as_deref() == Some(disk.name.as_str())),
            "{}",
            show(&r)
        );
    }
}

#[test]
fn verify_reports_a_sparse_header_version_esxi_calls_too_old() {
    let dir = scratch("ova-vmdk-version");
    let def = small_definition();
    let mut parts = qemu_parts(&dir, &def);
    let vmdk = parts.disks[1].1.clone();
    let mut bytes = std::fs::read(&vmdk).unwrap();
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&vmdk, &bytes).unwrap();
    remanifest(&mut parts, def.manifest_algorithm());
    let out = dir.join("bad.ova");
    pack_parts(&out, &parts, &parts.order());
    let r = verify(&out, VsphereCompat::V6_7);
    let e = error_with(
        &r,
        &[&parts.disks[1].0, "sparse extent header version", "too old"],
    );
    let len = std::fs::metadata(&out).unwrap().len();
    let index = read_index(&mut std::fs::File::open(&out).unwrap(), len).unwrap();
    assert_eq!(e.offset, Some(index.entries[3].data_offset + 4));
}
