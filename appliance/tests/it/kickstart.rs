//! The rendered kickstart as Anaconda's RHEL 6 parser sees it: pykickstart's `ksvalidator -v RHEL6`
//! accepts it, and the parsed partitions, packages, network and `%post` agree with the definition
//! and the el6 package manifest. Special characters are quoted or refused; over-long lines are
//! refused.

use crate::common;

use appliance::definition::{Base, LogicalPackage, NetworkMode};
use appliance::kickstart::{self, MAX_LINE_BYTES};
use appliance::packages::PackageManifest;
use appliance::Definition;
use camino::Utf8Path;
use common::*;
use serde_json::Value;
use std::process::Command;

fn render(text: &str) -> (Definition, String) {
    let def = parse(text).unwrap_or_else(|e| panic!("{e}"));
    let ks = kickstart::render(&def).unwrap_or_else(|e| panic!("{e:#}"));
    (def, ks)
}

#[test]
fn the_default_definition_renders_a_kickstart_ksvalidator_accepts() {
    let (_, ks) = render(&shipped_text());
    ksvalidator_rhel6(&ks, &scratch("ks-default")).unwrap_or_else(|e| panic!("{e}\n{ks}"));
}

#[test]
fn a_static_network_definition_renders_a_kickstart_ksvalidator_accepts() {
    let (def, ks) = render(&static_text());
    assert_eq!(def.network.mode, NetworkMode::Static);
    ksvalidator_rhel6(&ks, &scratch("ks-static")).unwrap_or_else(|e| panic!("{e}\n{ks}"));
}

#[test]
fn a_centos6_definition_renders_a_kickstart_ksvalidator_accepts() {
    let (def, ks) = render(&centos6_text());
    assert_eq!(def.appliance.base, Base::Centos6);
    ksvalidator_rhel6(&ks, &scratch("ks-centos6")).unwrap_or_else(|e| panic!("{e}\n{ks}"));
}

#[test]
fn ksvalidator_rejects_a_broken_kickstart() {
    // The validator itself must be able to fail: a keyword RHEL6 does not know.
    let (_, ks) = render(&shipped_text());
    let broken = ks.replacen("zerombr\n", "zerombr yes\n", 1);
    assert!(ksvalidator_rhel6(&broken, &scratch("ks-broken")).is_err());
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Every partition line, parsed, matches the definition: mount, size in MiB, file system, grow,
/// disk, label; the retention partition is on the second disk and sized from the retention disk.
fn check_partitions(def: &Definition, parsed: &Value) {
    let parts = parsed["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), def.os_disk.partitions.len() + 1);
    for p in &def.os_disk.partitions {
        let got = parts
            .iter()
            .find(|g| g["mount"] == p.mount.as_str())
            .unwrap_or_else(|| panic!("no part line for {}", p.mount));
        assert_eq!(got["size_mib"], p.size.mib(), "{}", p.mount);
        assert_eq!(got["fstype"], p.fs.as_str(), "{}", p.mount);
        assert_eq!(got["grow"], p.grow, "{}", p.mount);
        assert_eq!(got["disk"], kickstart::OS_DRIVE, "{}", p.mount);
        assert_eq!(got["label"], p.label.as_str(), "{}", p.mount);
        assert_eq!(got["primary"], true, "{}", p.mount);
    }
    let r = &def.retention_disk;
    let got = parts
        .iter()
        .find(|g| g["mount"] == r.mount.as_str())
        .expect("no retention part line");
    assert_eq!(got["fstype"], r.fs.as_str());
    assert_eq!(got["disk"], kickstart::RETENTION_DRIVE);
    assert_eq!(got["label"], r.label.as_str());
    assert_eq!(got["grow"], true);
    let size = got["size_mib"].as_u64().unwrap();
    assert!(
        size < r.size.mib() && size + 2 >= r.size.mib(),
        "retention partition {size} MiB for a {} disk",
        r.size
    );
    assert_eq!(
        strings(&parsed["clearpart"]["drives"]),
        [kickstart::OS_DRIVE, kickstart::RETENTION_DRIVE]
    );
    assert_eq!(
        strings(&parsed["ignoredisk_only_use"]),
        [kickstart::OS_DRIVE, kickstart::RETENTION_DRIVE]
    );
    assert_eq!(parsed["clearpart"]["initlabel"], true);
    assert_eq!(parsed["zerombr"], true);
    assert_eq!(parsed["bootloader"]["location"], "mbr");
    assert_eq!(
        strings(&parsed["bootloader"]["driveorder"]),
        [kickstart::OS_DRIVE]
    );
    assert!(parsed["bootloader"]["append"]
        .as_str()
        .unwrap()
        .contains("console=ttyS0,115200"));
}

fn check_network(def: &Definition, parsed: &Value) {
    let nets = parsed["network"].as_array().unwrap();
    assert_eq!(nets.len(), 1);
    let n = &nets[0];
    let want = &def.network;
    assert_eq!(n["device"], want.device.as_str());
    assert_eq!(n["onboot"], want.onboot);
    assert_eq!(n["hostname"], want.hostname.as_str());
    assert_eq!(n["noipv6"], true);
    let dns: Vec<String> = want.dns.iter().map(|d| d.to_string()).collect();
    assert_eq!(n["nameserver"], dns.join(","));
    match want.static_ip() {
        None => {
            assert_eq!(n["bootproto"], "dhcp");
            assert_eq!(n["ip"], "");
        }
        Some(s) => {
            assert_eq!(n["bootproto"], "static");
            assert_eq!(n["ip"], s.address.to_string());
            assert_eq!(n["netmask"], s.netmask().to_string());
            assert_eq!(n["gateway"], s.gateway.to_string());
        }
    }
}

fn check_packages_and_post(def: &Definition, parsed: &Value) {
    let el6 = PackageManifest::shipped(Base::Centos6);
    let pk = &parsed["packages"];
    assert_eq!(pk["nobase"], true);
    assert_eq!(pk["ignoremissing"], true);
    assert_eq!(strings(&pk["groups"]), ["core"]);
    let names = strings(&pk["names"]);
    for n in el6.base_source_packages_for(def) {
        assert!(names.contains(&n), "%packages lacks {n}: {names:?}");
    }
    for e in el6.external_files_for(def) {
        // Files from outside CentOS are installed in %post, never asked of the install media,
        // unless CentOS has the package too (xfsprogs, missing only from the minimal ISO).
        let from_base = el6.base_source_packages_for(def).contains(&e.package);
        assert_eq!(names.contains(&e.package), from_base, "{}", e.package);
    }
    let post = parsed["post"].as_array().unwrap();
    assert_eq!(post.len(), 2, "a nochroot and a chroot %post");
    assert_eq!(post[0]["chroot"], false);
    assert_eq!(post[1]["chroot"], true);
    for script in post {
        bash_syntax_ok(script["script"].as_str().unwrap());
    }
    let nochroot = post[0]["script"].as_str().unwrap();
    assert!(nochroot.contains(kickstart::EXTRAS_VOLUME_LABEL));
    let chroot = post[1]["script"].as_str().unwrap();
    for e in el6.external_files_for(def) {
        assert!(
            chroot.contains(&e.file),
            "%post does not install {}",
            e.file
        );
    }
    let rpm_q = chroot
        .lines()
        .find(|l| l.starts_with("rpm -q "))
        .expect("%post checks the installed packages");
    for n in el6.packages_for(def) {
        assert!(rpm_q.split_whitespace().any(|w| w == n), "rpm -q lacks {n}");
    }
    let setup = format!(
        "{} setup --root / --distro {}",
        kickstart::AGENT_INSTALL_PATH,
        kickstart::AGENT_DISTRO
    );
    let setup_at = chroot.find(&setup).expect("%post runs mt-agent setup");
    let ok_at = chroot
        .rfind(&format!("say {}", kickstart::POST_OK_MARKER))
        .expect("%post prints the success marker");
    assert!(setup_at < ok_at, "the marker comes after the setup");
    // With kdump, el6's mkdumprd makes the capture initramfs after setup wrote kdump.conf (the
    // service rebuilds one older than its configuration), and its failure never fails %post.
    let kdump = def.packages.contains(&LogicalPackage::KexecTools);
    match chroot.find("mkdumprd -f /boot/initrd-\"$v\"kdump.img \"$v\" || say ") {
        Some(at) => assert!(kdump && setup_at < at && at < ok_at, "{chroot}"),
        None => assert!(!kdump, "%post makes no capture initramfs:\n{chroot}"),
    }
    assert!(chroot.contains(kickstart::POST_OK_FILE));
    let services = strings(&parsed["services_enabled"]);
    for s in el6.services_for(def) {
        assert!(services.contains(&s), "{s} not enabled");
    }
    assert_eq!(
        strings(&parsed["firewall"]["ports"]),
        [format!("{}:tcp", def.agent.port)]
    );
}

/// Anaconda runs `%post` with `/bin/sh`, which is bash on el6.
fn bash_syntax_ok(script: &str) {
    testkit::run::assert_bash_parses("%post", script);
}

fn check_system(def: &Definition, parsed: &Value) {
    assert_eq!(parsed["lang"], def.system.language.as_str());
    assert_eq!(parsed["keyboard"], def.system.keyboard.as_str());
    assert_eq!(parsed["timezone"], def.system.timezone.as_str());
    assert_eq!(parsed["utc"], true);
    assert_eq!(
        parsed["rootpw"]["password"],
        def.system.root_password_hash.as_str()
    );
    assert_eq!(parsed["rootpw"]["iscrypted"], true);
    assert_eq!(parsed["cdrom"], "cdrom");
    assert_eq!(parsed["skipx"], true);
    // pykickstart's KS_SHUTDOWN: the VM powers off, so QEMU exits when the install is done.
    assert_eq!(parsed["shutdown_action"], 2);
}

fn check_all(text: &str, name: &str) {
    let (def, ks) = render(text);
    let parsed = parse_with_pykickstart(&ks, &scratch(name));
    check_system(&def, &parsed);
    check_network(&def, &parsed);
    check_partitions(&def, &parsed);
    check_packages_and_post(&def, &parsed);
}

#[test]
fn the_parsed_default_kickstart_agrees_with_the_definition() {
    check_all(&shipped_text(), "parse-default");
}

#[test]
fn the_parsed_static_kickstart_agrees_with_the_definition() {
    check_all(&static_text(), "parse-static");
}

#[test]
fn changed_sizes_packages_and_options_reach_the_kickstart() {
    // Not the shipped numbers: proves the values come from the definition, not the template.
    let t = edit(&static_text(), "size = \"16GiB\"", "size = \"40GiB\"");
    let t = edit(
        &t,
        "size = \"4GiB\"\nlabel = \"crash\"",
        "size = \"3000MiB\"\nlabel = \"crash\"",
    );
    let t = edit(&t, "size = \"64GiB\"", "size = \"300GiB\"");
    let t = edit(&t, "label = \"retention\"", "label = \"journal\"");
    let t = edit(&t, "onboot = true", "onboot = false");
    let t = edit(
        &t,
        "hostname = \"mt-appliance.localdomain\"",
        "hostname = \"mt01.example.net\"",
    );
    let t = edit(&t, "timezone = \"UTC\"", "timezone = \"Europe/Berlin\"");
    let t = edit(&t, "port = 9443", "port = 7443");
    let t = edit(&t, "\"multipath\", \"reiserfs\"]", "\"multipath\"]");
    check_all(&t, "parse-changed");
    let (_, ks) = render(&t);
    assert!(
        !ks.contains("reiserfs"),
        "reiserfs was dropped from the definition"
    );
    assert!(ks.contains("--size=3000 "));
}

#[test]
fn a_definition_needing_no_external_file_still_renders_valid_post_scripts() {
    let t = edit(
        &shipped_text(),
        "packages = [\"xfsprogs\", \"perl\", \"lsscsi\", \"rsync\", \"wget\", \"kexec-tools\", \"multipath\", \"reiserfs\"]",
        "packages = [\"perl\", \"lsscsi\"]",
    );
    check_all(&t, "parse-no-external");
    let (_, ks) = render(&t);
    assert!(!ks.contains(".rpm;"), "no external file is required");
    assert!(
        !ks.contains("mkdumprd"),
        "no kexec-tools, no capture initramfs"
    );
    ksvalidator_rhel6(&ks, &scratch("ks-no-external")).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn no_rendered_line_is_longer_than_the_limit() {
    for text in [shipped_text(), static_text(), centos6_text()] {
        let (_, ks) = render(&text);
        for line in ks.lines() {
            assert!(line.len() <= MAX_LINE_BYTES, "{line}");
        }
    }
}

#[test]
fn an_over_long_line_is_refused_with_its_line_number() {
    let (mut def, _) = render(&shipped_text());
    let body = "A".repeat(MAX_LINE_BYTES);
    def.system.ssh_authorized_keys = vec![format!("ssh-ed25519 {body} ops@example")];
    let err = format!("{:#}", kickstart::render(&def).unwrap_err());
    assert!(
        err.contains("kickstart line") && err.contains("longer than"),
        "{err}"
    );
}

#[test]
fn a_hash_and_a_space_in_a_value_are_quoted_so_the_parser_reads_them_whole() {
    // Validation would refuse these; the renderer must still never emit a line that means
    // something else (a `#` starts a comment for pykickstart's shlex).
    let (mut def, _) = render(&shipped_text());
    def.system.root_password_hash = "$6$sa#lt$with space".to_string();
    def.system.timezone = "Etc/It's #1".to_string();
    let ks = kickstart::render(&def).unwrap();
    let parsed = parse_with_pykickstart(&ks, &scratch("quote-hash"));
    assert_eq!(parsed["rootpw"]["password"], "$6$sa#lt$with space");
    assert_eq!(parsed["timezone"], "Etc/It's #1");
}

#[test]
fn a_newline_in_a_value_is_refused_naming_the_field() {
    let (mut def, _) = render(&shipped_text());
    def.network.hostname = "mt01\nrootpw --plaintext x".to_string();
    let err = format!("{:#}", kickstart::render(&def).unwrap_err());
    assert!(err.contains("network.hostname"), "{err}");
}

#[test]
fn ssh_keys_with_quotes_reach_authorized_keys_exactly() {
    let (mut def, _) = render(&shipped_text());
    let keys = vec![
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5Zm9ydGhla2lja3N0YXJ0dGVzdA ops@example".to_string(),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNlY29uZGtleWZvcnRoZWtpY2tzdGFydHRlc3Q O'Brien's \"laptop\" #2 $HOME `id`".to_string(),
    ];
    def.system.ssh_authorized_keys = keys.clone();
    let ks = kickstart::render(&def).unwrap();
    let parsed = parse_with_pykickstart(&ks, &scratch("ssh-keys-parse"));
    let chroot = parsed["post"][1]["script"].as_str().unwrap();
    let dir = scratch("ssh-keys");
    let file = dir.join("authorized_keys");
    let lines: Vec<String> = chroot
        .lines()
        .filter(|l| l.contains("/root/.ssh/authorized_keys") && l.starts_with("printf"))
        .map(|l| l.replace("/root/.ssh/authorized_keys", file.as_str()))
        .collect();
    assert_eq!(lines.len(), keys.len());
    testkit::require_tool("sh");
    let out = Command::new("sh")
        .arg("-c")
        .arg(lines.join("\n"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written, format!("{}\n{}\n", keys[0], keys[1]));
}

#[test]
fn the_default_definition_has_no_authorized_keys_section() {
    let (def, ks) = render(&shipped_text());
    assert!(def.system.ssh_authorized_keys.is_empty());
    assert!(!ks.contains("authorized_keys"));
}

/// What pykickstart's RHEL6 parser understood of the kickstart (see `ks_dump.py`).
pub fn parse_with_pykickstart(ks: &str, scratch_dir: &Utf8Path) -> serde_json::Value {
    let path = scratch_dir.join("ks.cfg");
    std::fs::write(&path, ks).unwrap();
    let script = scratch_dir.join("ks_dump.py");
    std::fs::write(&script, include_str!("../common/ks_dump.py")).unwrap();
    let out = Command::new(pykickstart_python())
        .args([script.as_str(), path.as_str()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pykickstart could not parse {path}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
