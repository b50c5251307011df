//! Stream-optimized VMDK round trips: raw -> our writer -> raw through our reader and through
//! independent readers (qemu-img, libvmdk's vmdkinfo and pyvmdk), the structure the format
//! requires (checked here by a walk written from the specification, not by our reader),
//! determinism, and the reader's errors on corrupt files.

use appliance::vmdk::{
    expand_to_raw, write_stream_optimized, Layout, VmdkError, VmdkOptions, VmdkReader, VmdkSummary,
};
use camino::{Utf8Path, Utf8PathBuf};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::process::Command;
use testkit::Rng;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GRAIN: u64 = 64 * KIB;

fn scratch(name: &str) -> Utf8PathBuf {
    testkit::scratch(&format!("vmdk-{name}"))
}

fn text(n: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut v = Vec::with_capacity(n + 64);
    while v.len() < n {
        v.extend_from_slice(
            format!(
                "line {} of a log: value={} ok\n",
                r.next_u64() % 1000,
                r.next_u64() % 97
            )
            .as_bytes(),
        );
    }
    v.truncate(n);
    v
}

/// A raw image of `len` bytes (sparse), with `parts` written at their offsets.
fn raw_image(path: &Utf8Path, len: u64, parts: &[(u64, Vec<u8>)]) {
    let f = File::create(path).unwrap();
    f.set_len(len).unwrap();
    for (at, bytes) in parts {
        f.write_all_at(bytes, *at).unwrap();
    }
}

fn convert(raw: &Utf8Path, threads: usize) -> (Utf8PathBuf, VmdkSummary) {
    let out = raw.with_extension("vmdk");
    let opts = VmdkOptions {
        threads,
        ..VmdkOptions::default()
    };
    let s = write_stream_optimized(raw, &out, &opts).unwrap();
    assert_eq!(s.file_size, std::fs::metadata(&out).unwrap().len());
    (out, s)
}

use testkit::run::ok as run;

/// Compares two files of possibly different lengths: the longer one's tail must be zeros.
fn assert_same_content(a: &Utf8Path, b: &Utf8Path) {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    let mut at = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        let n = na.min(nb);
        if ba[..n] != bb[..n] {
            let i = (0..n).find(|&i| ba[i] != bb[i]).unwrap();
            panic!("{a} and {b} differ at byte {}", at + i as u64);
        }
        let rest = if na > nb { &ba[n..na] } else { &bb[n..nb] };
        assert!(rest.iter().all(|&x| x == 0), "{a}/{b}: tail is not zeros");
        if na == 0 && nb == 0 {
            return;
        }
        at += n as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The layout the format's specification and vSphere require (checklist V1, V4-V7), checked
/// from the bytes with no help from our reader. Returns the number of grain markers.
fn assert_stream_layout(vmdk: &Utf8Path, capacity: u64) -> u64 {
    let b = std::fs::read(vmdk).unwrap();
    let sectors = b.len() as u64 / 512;
    assert_eq!(b.len() % 512, 0, "whole sectors");
    let h = &b[..512];
    assert_eq!(&h[0..4], b"KDMV");
    assert_eq!(u32_at(h, 4), 3, "version");
    assert_eq!(u32_at(h, 8), 0x0003_0001, "flags");
    assert_eq!(u64_at(h, 12), capacity / 512, "capacity");
    assert_eq!(u64_at(h, 20), 128, "grain size");
    assert_eq!((u64_at(h, 28), u64_at(h, 36)), (1, 20), "descriptor");
    assert_eq!(u32_at(h, 44), 512, "GTEs per GT");
    assert_eq!(u64_at(h, 48), 0, "rgdOffset");
    assert_eq!(u64_at(h, 56), u64::MAX, "gdOffset: at end");
    assert_eq!(u64_at(h, 64), 128, "overHead");
    assert_eq!(&h[72..79], b"\0\n \r\n\x01\0");
    // V5: footer marker, footer (the header but gdOffset), end-of-stream; nothing after.
    let tail = |s: u64| &b[(s * 512) as usize..(s * 512 + 512) as usize];
    let (fm, footer, eos) = (tail(sectors - 3), tail(sectors - 2), tail(sectors - 1));
    assert_eq!((u64_at(fm, 0), u32_at(fm, 8), u32_at(fm, 12)), (1, 0, 3));
    assert!(eos.iter().all(|&x| x == 0), "end-of-stream marker");
    assert_eq!(&footer[..56], &h[..56]);
    assert_eq!(&footer[64..], &h[64..]);
    let gd = u64_at(footer, 56);
    // V7: walk from overHead; every structure lands on a sector; the walk ends exactly at EOS.
    let grains = capacity / GRAIN;
    let gts = grains.div_ceil(512);
    let mut table_of_span = Vec::new();
    let mut grain_markers = Vec::new();
    let mut s = 128;
    loop {
        let m = tail(s);
        let (val, size, kind) = (u64_at(m, 0), u32_at(m, 8), u32_at(m, 12));
        if size > 0 {
            assert_eq!(val % 128, 0, "lba in sectors, grain-aligned");
            assert!(
                grain_markers.last().is_none_or(|&(l, _)| l < val),
                "ascending"
            );
            let data = &b[(s * 512 + 12) as usize..(s * 512 + 12) as usize + size as usize];
            // zlib (RFC 1950) header: level 6, or stored blocks for random-looking grains.
            assert!(
                data[..2] == [0x78, 0x9c] || data[..2] == [0x78, 0x01],
                "zlib header {:02x?} at sector {s}",
                &data[..2]
            );
            grain_markers.push((val, s));
            s += (12 + u64::from(size)).div_ceil(512);
            continue;
        }
        match kind {
            0 => {
                assert_eq!(s, sectors - 1, "EOS is the last sector");
                break;
            }
            1 => {
                assert_eq!(val, 4);
                table_of_span.push(s + 1);
                s += 5;
            }
            2 => {
                assert_eq!(s + 1, gd, "the footer points to the GD");
                assert_eq!(val, (gts * 4).div_ceil(512));
                s += 1 + val;
            }
            3 => {
                assert_eq!(s, sectors - 3);
                s += 2;
            }
            k => panic!("unknown marker type {k} at sector {s}"),
        }
    }
    // A GT for every 32 MiB span; GDEs point at the tables; GTEs point at the grain markers.
    assert_eq!(table_of_span.len() as u64, gts);
    for (t, &gt) in table_of_span.iter().enumerate() {
        assert_eq!(
            u64::from(u32_at(&b, (gd * 512) as usize + t * 4)),
            gt,
            "GDE {t}"
        );
    }
    for &(lba, marker) in &grain_markers {
        let g = lba / 128;
        let gt = table_of_span[(g / 512) as usize];
        let gte = u32_at(&b, (gt * 512 + (g % 512) * 4) as usize);
        assert_eq!(u64::from(gte), marker, "GTE of grain {g}");
    }
    grain_markers.len() as u64
}

/// Everything a user's tools say about a VMDK of ours, and its content against the raw image.
fn assert_round_trip(raw: &Utf8Path, vmdk: &Utf8Path, summary: &VmdkSummary) {
    testkit::require_tools(&["qemu-img", "vmdkinfo"]);
    let raw_len = std::fs::metadata(raw).unwrap().len();
    assert_eq!(summary.capacity, raw_len.next_multiple_of(GRAIN));
    let markers = assert_stream_layout(vmdk, summary.capacity);
    assert_eq!(markers, summary.grains_written);
    assert_eq!(summary.populated_size, summary.grains_written * GRAIN);

    // Our reader: full check, then expansion.
    let f = File::open(vmdk).unwrap();
    let mut r = VmdkReader::open(f, summary.file_size).unwrap();
    let report = r.check().unwrap();
    assert_eq!(report.capacity, summary.capacity);
    assert_eq!(report.grains, summary.grains_written);
    assert_eq!(report.layout, Layout::GdAtEnd);
    assert!(report.markers_walked && report.grains_in_order && report.has_footer_and_eos);
    assert_eq!(report.create_type.as_deref(), Some("streamOptimized"));
    assert_eq!(report.adapter_type.as_deref(), Some("lsilogic"));
    assert_eq!(report.tools_version.as_deref(), Some("2147483647"));
    let back = vmdk.with_extension("back.raw");
    expand_to_raw(vmdk, &back).unwrap();
    assert_eq!(std::fs::metadata(&back).unwrap().len(), summary.capacity);
    assert_same_content(raw, &back);

    // qemu-img: info, check, compare, convert back.
    let info: serde_json::Value = serde_json::from_str(&run(Command::new("qemu-img")
        .args(["info", "--output=json", "-f", "vmdk"])
        .arg(vmdk)))
    .unwrap();
    assert_eq!(info["virtual-size"].as_u64(), Some(summary.capacity));
    assert_eq!(
        info["format-specific"]["data"]["create-type"].as_str(),
        Some("streamOptimized")
    );
    assert_eq!(
        info["format-specific"]["data"]["extents"][0]["compressed"].as_bool(),
        Some(true)
    );
    run(Command::new("qemu-img")
        .args(["check", "-f", "vmdk"])
        .arg(vmdk));
    run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "vmdk"])
        .arg(raw)
        .arg(vmdk));
    let qback = vmdk.with_extension("qemu.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "vmdk", "-O", "raw"])
        .arg(vmdk)
        .arg(&qback));
    assert_same_content(raw, &qback);

    // libvmdk.
    let info = run(Command::new("vmdkinfo").arg(vmdk));
    assert!(info.contains("Stream optimized"), "{info}");
    assert!(
        info.contains(&format!("({} bytes)", summary.capacity)),
        "{info}"
    );
}

/// libvmdk's Python binding reads the whole virtual disk; its SHA-256 must be the raw image's
/// (zero-padded to the capacity).
fn assert_pyvmdk_reads(raw: &Utf8Path, vmdk: &Utf8Path, capacity: u64) {
    testkit::require_tool("import pyvmdk");
    const SCRIPT: &str = r#"
import hashlib, sys, pyvmdk
h = pyvmdk.handle()
h.open(sys.argv[1])
h.open_extent_data_files()
size = h.get_media_size()
d = hashlib.sha256()
off = 0
while off < size:
    n = min(1 << 20, size - off)
    d.update(h.read_buffer_at_offset(n, off))
    off += n
print(size, d.hexdigest())
"#;
    // Debian's python3-libvmdk installs into the system Python.
    let out = run(Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .arg(vmdk));
    let mut content = std::fs::read(raw).unwrap();
    content.resize(capacity as usize, 0);
    use sha2::Digest;
    let want = format!("{} {:x}", capacity, sha2::Sha256::digest(&content));
    assert_eq!(out.trim(), want);
}

#[test]
fn all_zero_disk_has_every_table_a_footer_and_an_end_of_stream_marker() {
    let dir = scratch("zero");
    let raw = dir.join("zero.raw");
    // Written zeros, not a hole: the writer must look at the data.
    raw_image(&raw, 40 * MIB, &[(0, vec![0u8; (40 * MIB) as usize])]);
    let (vmdk, s) = convert(&raw, 2);
    assert_eq!(s.grains_written, 0);
    // Header + descriptor + padding (128), 2 GTs (2 × 5), GD (2), footer (2), EOS (1).
    assert_eq!(s.file_size, (128 + 10 + 2 + 2 + 1) * 512);
    assert_round_trip(&raw, &vmdk, &s);
}

#[test]
fn random_data_round_trips() {
    let dir = scratch("random");
    let raw = dir.join("random.raw");
    raw_image(&raw, 8 * MIB, &[(0, Rng::new(7).bytes((8 * MIB) as usize))]);
    let (vmdk, s) = convert(&raw, 0);
    assert_eq!(s.grains_written, 128);
    assert_round_trip(&raw, &vmdk, &s);
}

#[test]
fn mixed_text_zero_and_random_grains_round_trip_across_grain_tables() {
    let dir = scratch("mixed");
    let raw = dir.join("mixed.raw");
    let mut parts = Vec::new();
    let mut rng = Rng::new(11);
    let mut at = 0;
    // Odd-sized regions so grains mix kinds; 64 MiB spans two grain tables.
    while at < 64 * MIB {
        let len = (rng.next_u64() % (700 * KIB) + 1).min(64 * MIB - at);
        let bytes = match rng.next_u64() % 3 {
            0 => text(len as usize, rng.next_u64()),
            1 => vec![0u8; len as usize],
            _ => rng.bytes(len as usize),
        };
        parts.push((at, bytes));
        at += len;
    }
    raw_image(&raw, 64 * MIB, &parts);
    let (vmdk, s) = convert(&raw, 3);
    assert!(s.grains_written > 0 && s.grains_written < 1024);
    assert_round_trip(&raw, &vmdk, &s);
    assert_pyvmdk_reads(&raw, &vmdk, s.capacity);

    // read_at across a grain boundary and into a zero grain.
    let mut r = VmdkReader::open(File::open(&vmdk).unwrap(), s.file_size).unwrap();
    let want = std::fs::read(&raw).unwrap();
    for (at, len) in [
        (0, 100),
        (GRAIN - 10, 20),
        (5 * MIB + 3, 300 * KIB),
        (64 * MIB - 7, 7),
    ] {
        let mut buf = vec![0xaa; len as usize];
        r.read_at(at, &mut buf).unwrap();
        assert!(
            buf == want[at as usize..(at + len) as usize],
            "read_at({at}, {len})"
        );
    }
    let mut all = Vec::new();
    assert_eq!(r.expand_to(&mut all).unwrap(), 64 * MIB);
    assert!(all == want);
}

#[test]
fn size_not_a_grain_multiple_rounds_the_capacity_up_with_zeros() {
    let dir = scratch("odd");
    let raw = dir.join("odd.raw");
    let len = 5 * MIB + 1234;
    raw_image(&raw, len, &[(0, text(len as usize, 3))]);
    let (vmdk, s) = convert(&raw, 2);
    assert_eq!(s.capacity, 5 * MIB + GRAIN);
    assert_eq!(s.grains_written, 81);
    assert_round_trip(&raw, &vmdk, &s);
    assert_pyvmdk_reads(&raw, &vmdk, s.capacity);
}

#[test]
fn sparse_image_with_large_holes_round_trips_and_keeps_a_table_per_span() {
    let dir = scratch("sparse");
    let raw = dir.join("sparse.raw");
    let len = 2048 * MIB;
    let parts = vec![
        (0, text(MIB as usize, 1)),
        (32 * MIB - 100, Rng::new(3).bytes(200)), // straddles a grain table span
        (1000 * MIB + 4096, text(3 * MIB as usize, 2)),
        (len - 10, vec![1u8; 10]), // the very last grain
    ];
    raw_image(&raw, len, &parts);
    let (vmdk, s) = convert(&raw, 2);
    assert_eq!(s.grains_written, 16 + 2 + 49 + 1);
    assert_round_trip(&raw, &vmdk, &s);
}

#[test]
fn same_input_gives_identical_bytes_whatever_the_thread_count() {
    let dir = scratch("determinism");
    let raw = dir.join("d.raw");
    raw_image(
        &raw,
        24 * MIB,
        &[
            (0, text(9 * MIB as usize, 5)),
            (12 * MIB, Rng::new(9).bytes(3 * MIB as usize)),
        ],
    );
    let one = std::fs::read(convert(&raw, 1).0).unwrap();
    let four = std::fs::read(convert(&raw, 4).0).unwrap();
    assert!(one == four, "thread count changed the output");
    // A different content gives a different CID and longContentID.
    raw_image(&raw, 24 * MIB, &[(0, text(9 * MIB as usize, 6))]);
    let other = std::fs::read(convert(&raw, 2).0).unwrap();
    let cid = |b: &[u8]| {
        let text = String::from_utf8_lossy(&b[512..512 * 21]).into_owned();
        let line = |k: &str| text.lines().find(|l| l.starts_with(k)).unwrap().to_string();
        (line("CID="), line("ddb.longContentID"))
    };
    let (c1, l1) = cid(&one);
    let (c2, l2) = cid(&other);
    assert_ne!(c1, c2);
    assert_ne!(l1, l2);
    // The CID is the low 32 bits of the longContentID, as VMware writes them.
    assert!(
        l1.trim_end_matches('"').ends_with(&c1["CID=".len()..]),
        "{c1} {l1}"
    );
}

#[test]
fn unwritable_output_leaves_no_file_and_names_the_path() {
    let dir = scratch("no-output");
    let raw = dir.join("r.raw");
    raw_image(&raw, MIB, &[(0, text(1000, 1))]);
    let out = dir.join("missing-dir/r.vmdk");
    let e = write_stream_optimized(&raw, &out, &VmdkOptions::default()).unwrap_err();
    assert!(e.to_string().contains("missing-dir"), "{e}");
    let e =
        write_stream_optimized(&dir.join("nope.raw"), &out, &VmdkOptions::default()).unwrap_err();
    assert!(e.to_string().contains("nope.raw"), "{e}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

#[test]
fn reads_qemu_img_stream_optimized_and_monolithic_sparse_files_too() {
    let dir = scratch("foreign");
    let raw = dir.join("f.raw");
    raw_image(
        &raw,
        40 * MIB,
        &[
            (3 * MIB, text(2 * MIB as usize, 4)),
            (35 * MIB, Rng::new(2).bytes(70_000)),
        ],
    );
    // QEMU's stream files preallocate the tables at the front; monolithicSparse is not compressed.
    testkit::require_tool("qemu-img");
    for subformat in ["streamOptimized", "monolithicSparse"] {
        let q = dir.join(format!("{subformat}.vmdk"));
        run(Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "vmdk", "-o"])
            .arg(format!("subformat={subformat}"))
            .arg(&raw)
            .arg(&q));
        let len = std::fs::metadata(&q).unwrap().len();
        let mut r = VmdkReader::open(File::open(&q).unwrap(), len).unwrap();
        let report = r.check().unwrap();
        assert_eq!(report.layout, Layout::GdInHeader);
        assert_eq!(report.create_type.as_deref(), Some(subformat));
        assert!(!report.has_footer_and_eos);
        assert!(report.grains > 0);
        let back = dir.join(format!("{subformat}.back.raw"));
        expand_to_raw(&q, &back).unwrap();
        assert_same_content(&raw, &back);
    }
}

// ---- corrupt files: each error names the structure and its byte offset ----

/// A small VMDK of ours and the byte offset of its first grain marker.
fn small_vmdk(name: &str) -> (Utf8PathBuf, u64) {
    let dir = scratch(name);
    let raw = dir.join("c.raw");
    raw_image(&raw, 8 * MIB, &[(GRAIN, text(3 * GRAIN as usize, 8))]);
    let (vmdk, _) = convert(&raw, 1);
    (vmdk, 128 * 512)
}

fn check_file(vmdk: &Utf8Path) -> Result<(), VmdkError> {
    let len = std::fs::metadata(vmdk).unwrap().len();
    let mut r = VmdkReader::open(File::open(vmdk).unwrap(), len)?;
    r.check().map(|_| ())
}

fn patch(vmdk: &Utf8Path, at: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(vmdk).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn flipped_byte_in_a_grain_is_reported_at_the_grain() {
    let (vmdk, first) = small_vmdk("flip");
    let mut b = [0u8; 1];
    File::open(&vmdk)
        .unwrap()
        .read_exact_at(&mut b, first + 40)
        .unwrap();
    patch(&vmdk, first + 40, &[b[0] ^ 0x10]);
    let e = check_file(&vmdk).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("grain at byte {first}: lba 128")),
        "{e}"
    );
}

#[test]
fn unknown_marker_type_is_reported_at_the_marker() {
    let (vmdk, first) = small_vmdk("marker");
    // size 0 turns the grain marker into a metadata marker; type 7 does not exist.
    let mut m = [0u8; 16];
    m[12] = 7;
    patch(&vmdk, first, &m);
    let e = check_file(&vmdk).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("marker at byte {first}: type 7 is not a stream marker (0 end-of-stream, 1 grain table, 2 grain directory, 3 footer)")
    );
}

#[test]
fn grain_marker_lba_off_the_grain_grid_is_reported() {
    let (vmdk, first) = small_vmdk("lba");
    patch(&vmdk, first, &5u64.to_le_bytes());
    let e = check_file(&vmdk).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "grain marker at byte {first}: lba 5 is not grain-aligned (a grain is 128 sectors)"
        )
    );
}

#[test]
fn truncated_file_is_reported_at_its_end() {
    let (vmdk, _) = small_vmdk("truncated");
    let len = std::fs::metadata(&vmdk).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&vmdk).unwrap();
    f.set_len(len - 700).unwrap();
    let e = check_file(&vmdk).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("end of file at byte {}: ", len - 700)),
        "{e}"
    );
    assert!(e.contains("truncated"), "{e}");
    // Cut on a sector boundary: the last sector is no longer an end-of-stream marker.
    f.set_len(len - 4096).unwrap();
    let e = check_file(&vmdk).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "end-of-stream marker at byte {}: ",
            len - 4096 - 512
        )),
        "{e}"
    );
}

#[test]
fn missing_end_of_stream_marker_is_reported() {
    let (vmdk, _) = small_vmdk("no-eos");
    let len = std::fs::metadata(&vmdk).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&vmdk)
        .unwrap()
        .set_len(len - 512)
        .unwrap();
    let e = check_file(&vmdk).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "end-of-stream marker at byte {}: the last sector must be 512 zero bytes",
            len - 1024
        )),
        "{e}"
    );
}

#[test]
fn grain_table_pointing_nowhere_is_reported_at_the_table() {
    let (vmdk, first) = small_vmdk("gte");
    let b = std::fs::read(&vmdk).unwrap();
    // The first grain table follows the grains: find it through the footer's GD.
    let footer = &b[b.len() - 1024..b.len() - 512];
    let gd = u64_at(footer, 56);
    let gt = u64::from(u32_at(&b, (gd * 512) as usize));
    // Grain 1's entry points to the first marker; move it one sector further.
    let entry = gt * 512 + 4;
    assert_eq!(u64::from(u32_at(&b, entry as usize)), first / 512);
    patch(&vmdk, entry, &(first as u32 / 512 + 1).to_le_bytes());
    let e = check_file(&vmdk).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("grain marker at byte {first}: lba 128 (grain 1) is not where the grain table says: its entry is sector {}", first / 512 + 1)
    );
}
