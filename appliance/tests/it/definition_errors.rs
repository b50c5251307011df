//! Each validation error of the appliance definition, reached by editing the shipped definition
//! text the way a user would, fails with a message that names the file and the field.

use crate::common;

use common::*;

/// Loads the edited text and returns the error message; panics if it was accepted.
fn refused(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("the edited definition was accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn assert_names(msg: &str, needles: &[&str]) {
    assert!(
        msg.contains("edited/appliance.toml"),
        "no file name in: {msg}"
    );
    for n in needles {
        assert!(msg.contains(n), "expected {n:?} in: {msg}");
    }
}

#[test]
fn the_unedited_texts_are_accepted() {
    for t in [shipped_text(), static_text(), centos6_text()] {
        parse(&t).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn partitions_larger_than_the_disk() {
    let msg = refused(&edit(
        &shipped_text(),
        "size = \"16GiB\"",
        "size = \"8GiB\"",
    ));
    assert_names(&msg, &["os_disk.partitions", "os_disk.size"]);
}

#[test]
fn a_missing_root_partition() {
    let msg = refused(&edit(
        &shipped_text(),
        "mount = \"/\"\n",
        "mount = \"/srv\"\n",
    ));
    assert_names(&msg, &["os_disk.partitions", "mount = \"/\""]);
}

#[test]
fn a_missing_swap_partition() {
    let msg = refused(&edit(
        &shipped_text(),
        "mount = \"swap\"\nfs = \"swap\"",
        "mount = \"/data\"\nfs = \"ext4\"",
    ));
    assert_names(&msg, &["os_disk.partitions", "swap"]);
}

#[test]
fn duplicate_mount_points() {
    let msg = refused(&edit(
        &shipped_text(),
        "mount = \"/home\"",
        "mount = \"/var/crash\"",
    ));
    assert_names(&msg, &["os_disk.partitions[2].mount", "defined twice"]);
}

#[test]
fn a_fat_retention_disk() {
    for fat in ["vfat", "fat32"] {
        let msg = refused(&edit(
            &shipped_text(),
            "size = \"64GiB\"\nfs = \"ext4\"",
            &format!("size = \"64GiB\"\nfs = \"{fat}\""),
        ));
        assert_names(&msg, &["retention_disk.fs", "FAT"]);
    }
}

#[test]
fn a_zero_size_retention_disk() {
    let msg = refused(&edit(
        &shipped_text(),
        "size = \"64GiB\"",
        "size = \"0GiB\"",
    ));
    assert_names(&msg, &["retention_disk.size", "non-zero"]);
}

#[test]
fn a_retention_disk_sharing_the_os_disk() {
    let msg = refused(&edit(&shipped_text(), "scsi_unit = 1", "scsi_unit = 0"));
    assert_names(&msg, &["retention_disk.scsi_unit", "OS disk"]);
}

#[test]
fn a_malformed_ip_address() {
    let msg = refused(&edit(
        &static_text(),
        "address = \"192.168.10.20\"",
        "address = \"192.168.10.300\"",
    ));
    assert_names(&msg, &["network.address: ", "192.168.10.300"]);
}

#[test]
fn a_bad_prefix() {
    let msg = refused(&edit(&static_text(), "prefix = 24", "prefix = 33"));
    assert_names(&msg, &["network.prefix", "/33"]);
}

#[test]
fn a_gateway_outside_the_subnet() {
    let msg = refused(&edit(
        &static_text(),
        "gateway = \"192.168.10.1\"",
        "gateway = \"192.168.11.1\"",
    ));
    assert_names(&msg, &["network.gateway", "outside the subnet"]);
}

#[test]
fn a_plain_text_password() {
    let shipped = shipped_text();
    let line = shipped
        .lines()
        .find(|l| l.starts_with("root_password_hash = "))
        .unwrap()
        .to_string();
    let msg = refused(&edit(
        &shipped,
        &line,
        "root_password_hash = \"mt-changeme\"",
    ));
    assert_names(&msg, &["system.root_password_hash", "plain-text"]);
}

#[test]
fn an_unknown_package_name() {
    let msg = refused(&edit(
        &shipped_text(),
        "\"reiserfs\"]",
        "\"reiserfs\", \"reiser4\"]",
    ));
    assert_names(&msg, &["packages: ", "reiser4"]);
}
