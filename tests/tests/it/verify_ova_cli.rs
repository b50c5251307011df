//! `cargo xtask ova` then `cargo xtask verify-ova`, run the way a user runs them: raw disks in,
//! an OVA out that verifies (digests, OVF against the DMTF schema, VMDK structure, byte-for-byte
//! disks), the same inputs give the same OVA, and damage is reported with the member and offset.

use crate::support;

use camino::{Utf8Path, Utf8PathBuf};
use std::process::{Command, Output};
use support::*;

fn xtask(args: &[&str]) -> Output {
    testkit::run::cargo_xtask()
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("cannot run cargo xtask")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A small definition file and its raw disks, named after the VMDKs they become (so that
/// `--raw-dir` finds them).
fn inputs(dir: &Utf8Path) -> (Utf8PathBuf, Utf8PathBuf, Utf8PathBuf) {
    let def = small_definition();
    let def_path = dir.join("small.toml");
    write_definition(&def, &def_path);
    let raws = small_raws(dir, &def);
    let mut named = Vec::new();
    for (role, raw) in raws {
        let to = dir.join(role.file_name(&def).replace(".vmdk", ".raw"));
        std::fs::rename(&raw, &to).unwrap();
        named.push(to);
    }
    (def_path, named[0].clone(), named[1].clone())
}

fn pack(def: &Utf8Path, os: &Utf8Path, ret: &Utf8Path, out: &Utf8Path) -> Output {
    xtask(&[
        "ova",
        "--definition",
        def.as_str(),
        "--disk",
        &format!("os={os}"),
        "--disk",
        &format!("retention={ret}"),
        "--out",
        out.as_str(),
        "--build-id",
        "cli-test",
    ])
}

#[test]
fn ova_then_verify_ova_round_trips_and_is_reproducible() {
    let dir = scratch("cli-ova");
    let (def, os, ret) = inputs(&dir);
    let out = dir.join("out/appliance.ova");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let o = pack(&def, &os, &ret, &out);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("mt-appliance-disk1.vmdk"), "{}", text(&o));

    let v = xtask(&["verify-ova", out.as_str(), "--raw-dir", dir.as_str()]);
    let report = text(&v);
    assert!(v.status.success(), "{report}");
    assert!(report.contains("OK for vSphere 6.7"), "{report}");
    assert!(
        report.contains("mt-appliance-disk1.vmdk expands to"),
        "{report}"
    );
    assert!(
        report.contains("mt-appliance-disk2.vmdk expands to"),
        "{report}"
    );
    assert!(!report.contains("error:"), "{report}");

    // The descriptor inside passes the DMTF schema.
    testkit::require_tool("tar");
    let x = Command::new("tar")
        .current_dir(&dir)
        .args(["-xf", out.as_str(), "mt-appliance.ovf"])
        .status()
        .unwrap();
    assert!(x.success());
    assert_schema_valid(&dir.join("mt-appliance.ovf"));

    // Same inputs and SOURCE_DATE_EPOCH: the same bytes.
    let again = dir.join("out/again.ova");
    let o = pack(&def, &os, &ret, &again);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    let left: Vec<String> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left.len(),
        2,
        "no temporary files or work directories left: {left:?}"
    );
}

#[test]
fn verify_ova_fails_on_a_damaged_disk_naming_the_member_and_offset() {
    let dir = scratch("cli-ova-damaged");
    let (def, os, ret) = inputs(&dir);
    let out = dir.join("damaged.ova");
    assert!(pack(&def, &os, &ret, &out).status.success());
    let mut bytes = std::fs::read(&out).unwrap();
    // The OS disk is the third member: its data starts after ovf and mf; damage a byte well
    // inside its grains.
    let len = std::fs::metadata(&out).unwrap().len();
    let index = appliance::ova::read_index(&mut std::fs::File::open(&out).unwrap(), len).unwrap();
    let disk = &index.entries[2];
    let at = (disk.data_offset + 128 * 512 + 700) as usize;
    bytes[at] ^= 0xff;
    std::fs::write(&out, &bytes).unwrap();
    let v = xtask(&["verify-ova", out.as_str()]);
    let report = text(&v);
    assert!(!v.status.success(), "{report}");
    assert!(
        report.contains("error: mt-appliance-disk1.vmdk:") && report.contains("digest"),
        "{report}"
    );
    assert!(
        report.contains(&format!("at OVA byte {}", disk.data_offset)),
        "{report}"
    );
}

#[test]
fn ova_refuses_a_raw_disk_of_the_wrong_size_and_writes_nothing() {
    let dir = scratch("cli-ova-wrong-size");
    let (def, os, _) = inputs(&dir);
    let small = dir.join("short.raw");
    raw_image(&small, 32 << 20, &[]);
    let out = dir.join("never.ova");
    let o = pack(&def, &os, &small, &out);
    let msg = text(&o);
    assert!(!o.status.success(), "{msg}");
    assert!(
        msg.contains("short.raw") && msg.contains("retention_disk.size"),
        "{msg}"
    );
    assert!(!out.exists());
    let o = xtask(&[
        "ova",
        "--definition",
        def.as_str(),
        "--disk",
        &format!("os={os}"),
        "--out",
        out.as_str(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no retention disk given"), "{}", text(&o));
}
