//! The VMDK writer skips the holes of a sparse raw image without reading them. This test is
//! alone in its binary (not a module of `it`) because it counts the bytes the whole process reads (`rchar` in
//! `/proc/self/io`), which other tests running in parallel would inflate.

use appliance::vmdk::{write_stream_optimized, VmdkOptions};
use std::fs::File;
use std::os::unix::fs::FileExt;

const MIB: u64 = 1024 * 1024;

fn bytes_read_by_this_process() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn holes_of_a_sparse_image_are_not_read() {
    let dir = testkit::scratch("vmdk-sparse-io");
    let raw = dir.join("holes.raw");
    let f = File::create(&raw).unwrap();
    f.set_len(4096 * MIB).unwrap();
    let data: Vec<u8> = (0..MIB).map(|i| (i % 253) as u8 + 1).collect();
    for at in [0, 1500 * MIB + 12_345, 4095 * MIB] {
        f.write_all_at(&data, at).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);

    let before = bytes_read_by_this_process();
    let s = write_stream_optimized(&raw, &dir.join("holes.vmdk"), &VmdkOptions::default()).unwrap();
    let read = bytes_read_by_this_process() - before;
    assert_eq!(s.grains_written, 16 + 17 + 16);
    // 3 MiB of data in grains of 64 KiB: at most the grains that hold data (plus /proc reads).
    assert!(
        read <= s.grains_written * 64 * 1024 + MIB,
        "read {read} bytes of a 4 GiB image"
    );
}
