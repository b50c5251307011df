//! The OVF environment as vSphere hands it to the guest: parsed and validated through the
//! library and applied by the `mt-agent ovfenv` binary to a temporary root for Debian and el6;
//! bad documents leave the tree untouched, an unchanged one writes nothing, a changed one
//! writes only what changed; both transports through a stand-in command runner.

use crate::common;

use appliance::definition::{DeployProperty, DEPLOY_PRODUCT_CLASS};
use camino::{Utf8Path, Utf8PathBuf};
use mt_agent::guest::ovfenv::{self, Content, Distro, IpConfig, Runner, Transport};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHg7yGk2XbW1Z0m9v0sR2nq4t2s3F0aQ7wJk5l9cM1xR ops@dr";

/// An ovf-env.xml as vSphere writes it (values already XML-escaped by the caller).
fn env_xml(props: &[(&str, &str)]) -> String {
    let mut x = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Environment
     xmlns="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
     xmlns:oe="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:ve="http://www.vmware.com/schema/ovfenv"
     oe:id=""
     ve:vCenterId="vm-1234">
   <PlatformSection>
      <Kind>VMware ESXi</Kind>
      <Version>6.7.0</Version>
      <Vendor>VMware, Inc.</Vendor>
      <Locale>en</Locale>
   </PlatformSection>
   <PropertySection>
"#,
    );
    for (k, v) in props {
        x.push_str(&format!(
            "         <Property oe:key=\"{k}\" oe:value=\"{v}\"/>\n"
        ));
    }
    x.push_str("   </PropertySection>\n</Environment>\n");
    x
}

fn static_props() -> Vec<(&'static str, &'static str)> {
    vec![
        ("mt.hostname", "mt7.dr.example.com"),
        ("mt.ip_mode", "static"),
        ("mt.ip_address", "192.168.10.20"),
        ("mt.ip_prefix", "24"),
        ("mt.gateway", "192.168.10.1"),
        ("mt.dns_servers", "192.168.10.2, 192.168.10.3"),
        ("mt.dns_search", "dr.example.com"),
        ("mt.ntp_server", "ntp.dr.example.com"),
        ("mt.agent_passphrase", "correct horse battery"),
        ("mt.root_ssh_key", KEY),
    ]
}

fn with(
    props: &[(&'static str, &'static str)],
    key: &str,
    value: &'static str,
) -> Vec<(&'static str, &'static str)> {
    props
        .iter()
        .map(|&(k, v)| if k == key { (k, value) } else { (k, v) })
        .collect()
}

#[test]
fn the_guest_knows_every_key_the_ovf_offers() {
    assert_eq!(ovfenv::PRODUCT_CLASS, DEPLOY_PRODUCT_CLASS);
    let ovf: Vec<&str> = DeployProperty::ALL.iter().map(|p| p.key()).collect();
    assert_eq!(ovfenv::KEYS.to_vec(), ovf);
}

#[test]
fn a_valid_environment_gives_the_typed_configuration() {
    let env = ovfenv::parse(&env_xml(&static_props())).unwrap();
    assert!(env.warnings.is_empty(), "{:?}", env.warnings);
    let c = env.config;
    assert_eq!(c.hostname.as_deref(), Some("mt7.dr.example.com"));
    assert_eq!(
        c.ip,
        Some(IpConfig::Static {
            address: "192.168.10.20".parse().unwrap(),
            prefix: 24,
            gateway: "192.168.10.1".parse().unwrap(),
        })
    );
    assert_eq!(c.dns_servers.len(), 2);
    assert_eq!(c.dns_search.as_deref(), Some("dr.example.com"));
    assert_eq!(c.ntp_server.as_deref(), Some("ntp.dr.example.com"));
    assert_eq!(c.agent_passphrase.as_deref(), Some("correct horse battery"));
    assert_eq!(c.root_ssh_key.as_deref(), Some(KEY));
    assert!(
        !format!("{c:?}").contains("horse"),
        "Debug must not print the passphrase"
    );
}

#[test]
fn a_bad_ip_is_refused_naming_the_property() {
    let err = ovfenv::parse(&env_xml(&with(
        &static_props(),
        "mt.ip_address",
        "192.168.10.300",
    )))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("mt.ip_address") && err.contains("192.168.10.300"),
        "{err}"
    );
    let err = ovfenv::parse(&env_xml(&with(&static_props(), "mt.gateway", "10.0.0.1")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mt.gateway") && err.contains("outside the subnet"),
        "{err}"
    );
    let err = ovfenv::parse(&env_xml(&with(&static_props(), "mt.ip_prefix", "31")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("mt.ip_prefix"), "{err}");
    let err = ovfenv::parse(&env_xml(&with(&static_props(), "mt.hostname", "Bad_Host")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("mt.hostname"), "{err}");
    let err = ovfenv::parse(&env_xml(&with(&static_props(), "mt.agent_passphrase", "")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("mt.agent_passphrase"), "{err}");
}

#[test]
fn a_truncated_document_is_refused_with_its_position() {
    let xml = env_xml(&static_props());
    let cut = &xml[..xml.len() / 2];
    let err = ovfenv::parse(cut).unwrap_err().to_string();
    assert!(
        err.contains("not well-formed") && err.contains("line"),
        "{err}"
    );
    let err = ovfenv::parse("<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\"/>")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an Environment"), "{err}");
}

#[test]
fn unknown_keys_are_ignored_with_a_warning() {
    let mut props = static_props();
    props.push(("mt.colour", "blue"));
    props.push(("vami.ip0.other", "1.2.3.4"));
    let env = ovfenv::parse(&env_xml(&props)).unwrap();
    assert_eq!(env.warnings.len(), 2, "{:?}", env.warnings);
    assert!(env.warnings[0].contains("mt.colour"));
    assert_eq!(env.config.hostname.as_deref(), Some("mt7.dr.example.com"));
}

#[test]
fn xml_special_characters_in_a_value_reach_the_passphrase_file_unescaped() {
    let props = with(
        &static_props(),
        "mt.agent_passphrase",
        "p&amp;ss&lt;w&gt;rd &quot;x&apos;",
    );
    let env = ovfenv::parse(&env_xml(&props)).unwrap();
    assert_eq!(
        env.config.agent_passphrase.as_deref(),
        Some("p&ss<w>rd \"x'")
    );
    let root = scratch("special");
    ovfenv::apply(&root, Distro::Debian12, &env, &Transport::GuestInfo).unwrap();
    let path = root.join(mt_agent::replication::net::auth::PASSPHRASE_PATH.trim_start_matches('/'));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "p&ss<w>rd \"x'\n");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(
        mt_agent::replication::net::auth::read_passphrase(&path).unwrap(),
        "p&ss<w>rd \"x'",
        "the receiver reads back exactly what the deploy wizard was given"
    );
}

// ---------------------------------------------------------------------------------------------
// The binary on a temporary root

fn scratch(name: &str) -> Utf8PathBuf {
    testkit::scratch(&format!("ovfenv-{name}"))
}

fn mode(p: &Utf8Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Every file under `root` with its mode and contents.
fn snapshot(root: &Utf8Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in dir.read_dir_utf8().unwrap() {
            let e = e.unwrap();
            let p = e.path().to_owned();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string();
                out.insert(rel, (mode(&p), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn mt_agent(args: &[&str]) -> Output {
    Command::new(common::MT_AGENT).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = mt_agent(args);
    assert!(
        o.status.success(),
        "mt-agent {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn read(root: &Utf8Path, p: &str) -> String {
    std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// Applies through the binary: the static configuration, again (nothing changes), a changed host
/// name (only its files change), and an invalid document (nothing changes).
fn apply_cycle(distro: &str) -> Utf8PathBuf {
    let dir = scratch(&format!("bin-{distro}"));
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("root/.ssh")).unwrap();
    let build_key = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 build@image";
    std::fs::write(
        root.join("root/.ssh/authorized_keys"),
        format!("{build_key}\n"),
    )
    .unwrap();
    let env = dir.join("ovf-env.xml");
    std::fs::write(&env, env_xml(&static_props())).unwrap();
    let args = [
        "ovfenv",
        "apply",
        "--root",
        root.as_str(),
        "--distro",
        distro,
        "--from",
        env.as_str(),
    ];

    let out = ok(&args);
    assert!(
        out.contains("applied") && out.contains("/etc/mt-agent/passphrase"),
        "{out}"
    );
    assert_eq!(mode(&root.join("etc/mt-agent/passphrase")), 0o600);
    assert_eq!(
        read(&root, "etc/mt-agent/passphrase"),
        "correct horse battery\n"
    );
    let keys = read(&root, "root/.ssh/authorized_keys");
    assert!(keys.starts_with(build_key) && keys.contains(KEY), "{keys}");
    assert_eq!(
        read(&root, "etc/resolv.conf"),
        "search dr.example.com\nnameserver 192.168.10.2\nnameserver 192.168.10.3\n"
    );

    let before = snapshot(&root);
    let out = ok(&args);
    assert!(out.contains("unchanged, nothing written"), "{out}");
    assert_eq!(
        snapshot(&root),
        before,
        "a second apply must leave the tree byte-identical"
    );

    std::fs::write(
        &env,
        env_xml(&with(&static_props(), "mt.hostname", "mt8.dr.example.com")),
    )
    .unwrap();
    let out = ok(&args);
    let written: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("wrote "))
        .collect();
    let want: &[&str] = match distro {
        "debian12" => &["/etc/hostname", "/etc/hosts", ovfenv::RECORD_PATH],
        _ => &["/etc/hosts", "/etc/sysconfig/network", ovfenv::RECORD_PATH],
    };
    assert_eq!(written, want, "{out}");

    let before = snapshot(&root);
    std::fs::write(
        &env,
        env_xml(&with(&static_props(), "mt.ip_address", "192.168.10.256")),
    )
    .unwrap();
    let o = mt_agent(&args);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("mt.ip_address") && err.contains("previous configuration stays"),
        "{err}"
    );
    assert_eq!(
        snapshot(&root),
        before,
        "an invalid environment must write nothing"
    );

    let truncated = env_xml(&static_props());
    std::fs::write(&env, &truncated[..truncated.len() - 40]).unwrap();
    let o = mt_agent(&args);
    assert!(!o.status.success());
    assert_eq!(snapshot(&root), before);
    root
}

#[test]
fn debian_gets_a_static_ifupdown_stanza_that_survives_reboot() {
    let root = apply_cycle("debian12");
    let interfaces = read(&root, "etc/network/interfaces");
    assert!(
        interfaces.contains("auto eth0\nallow-hotplug eth0\niface eth0 inet static\n    address 192.168.10.20/24\n    gateway 192.168.10.1\n"),
        "{interfaces}"
    );
    assert!(!interfaces.contains("dhcp"), "{interfaces}");
    assert_eq!(read(&root, "etc/hostname"), "mt8\n");
    assert!(read(&root, "etc/hosts").contains("127.0.1.1\tmt8.dr.example.com mt8\n"));
    assert_eq!(
        read(&root, "etc/systemd/timesyncd.conf.d/mt-ovfenv.conf")
            .lines()
            .last(),
        Some("NTP=ntp.dr.example.com")
    );
    let out = status(&root, &root.join("nonexistent"));
    assert!(out.contains("configuration: build-time defaults"), "{out}");
    let out = status(&root, &root.join(record_in(&root)));
    assert!(
        out.contains("configuration: OVF environment via file "),
        "{out}"
    );
}

/// Where `apply` keeps its record under `root`.
fn record_in(root: &Utf8Path) -> Utf8PathBuf {
    root.join(ovfenv::RECORD_PATH.trim_start_matches('/'))
}

/// `mt-agent status` of an agent beside `root` whose applied configuration `record` describes.
fn status(root: &Utf8Path, record: &Utf8Path) -> String {
    let dir = root.parent().unwrap();
    let config = common::write_config(dir, &common::agent_config());
    let retention = dir.join("retention");
    std::fs::create_dir_all(&retention).unwrap();
    let o = Command::new(common::MT_AGENT)
        .args(["status"])
        .env("MT_AGENT_CONFIG", &config)
        .env("MT_AGENT_RETENTION", &retention)
        .env("MT_AGENT_OVFENV_RECORD", record)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn el6_gets_ifcfg_eth0_on_boot_with_a_static_address() {
    let root = apply_cycle("el6");
    let ifcfg = read(&root, "etc/sysconfig/network-scripts/ifcfg-eth0");
    for line in [
        "DEVICE=eth0",
        "ONBOOT=yes",
        "BOOTPROTO=none",
        "IPADDR=192.168.10.20",
        "PREFIX=24",
        "NETMASK=255.255.255.0",
        "GATEWAY=192.168.10.1",
        "DNS1=192.168.10.2",
        "DNS2=192.168.10.3",
    ] {
        assert!(
            ifcfg.lines().any(|l| l == line),
            "{line} missing from\n{ifcfg}"
        );
    }
    let network = read(&root, "etc/sysconfig/network");
    assert!(
        network.contains("HOSTNAME=mt8.dr.example.com\n"),
        "{network}"
    );
    assert!(read(&root, "etc/ntp.conf").contains("server ntp.dr.example.com iburst\n"));
}

#[test]
fn the_interface_the_image_was_built_with_keeps_its_device_and_onboot() {
    let env = ovfenv::parse(&env_xml(&static_props())).unwrap();
    let root = scratch("built-debian");
    let built = mt_contract::network::debian_interfaces(
        &mt_contract::network::Interface {
            device: "ens192".into(),
            onboot: false,
        },
        &IpConfig::Dhcp,
    );
    std::fs::create_dir_all(root.join("etc/network")).unwrap();
    std::fs::write(root.join("etc/network/interfaces"), built).unwrap();
    ovfenv::apply(&root, Distro::Debian12, &env, &Transport::GuestInfo).unwrap();
    let interfaces = read(&root, "etc/network/interfaces");
    assert!(
        !interfaces.contains("auto ens192")
            && interfaces.contains("allow-hotplug ens192\niface ens192 inet static\n"),
        "{interfaces}"
    );

    let root = scratch("built-el6");
    let scripts = root.join("etc/sysconfig/network-scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(scripts.join("ifcfg-lo"), "DEVICE=lo\nONBOOT=yes\n").unwrap();
    // An administrator's copy names a device too, and sorts first: it is not the interface.
    std::fs::write(scripts.join("ifcfg-eth0.bak"), "DEVICE=eth0\nONBOOT=yes\n").unwrap();
    std::fs::write(
        scripts.join("ifcfg-eth1"),
        "DEVICE=\"eth1\"\nBOOTPROTO=dhcp\nONBOOT=no\n",
    )
    .unwrap();
    ovfenv::apply(&root, Distro::El6, &env, &Transport::GuestInfo).unwrap();
    let ifcfg = read(&root, "etc/sysconfig/network-scripts/ifcfg-eth1");
    assert!(
        ifcfg.starts_with("DEVICE=eth1\nTYPE=Ethernet\nONBOOT=no\n")
            && ifcfg.contains("IPADDR=192.168.10.20\n"),
        "{ifcfg}"
    );
    assert!(!scripts.join("ifcfg-eth0").exists());
}

#[test]
fn a_root_key_with_shell_characters_is_refused_as_the_definition_refuses_it() {
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHg7yGk2XbW1Z0m9v0sR2nq4t2s3F0aQ7wJk5l9cM1xR $(reboot)";
    let props = with(&static_props(), "mt.root_ssh_key", key);
    let err = ovfenv::parse(&env_xml(&props)).unwrap_err().to_string();
    assert!(
        err.contains("mt.root_ssh_key") && err.contains("backtick or $"),
        "{err}"
    );
}

#[test]
fn dhcp_writes_a_dhcp_configuration_and_leaves_the_resolver_to_the_lease() {
    let root = scratch("dhcp");
    let env = ovfenv::parse(&env_xml(&[
        ("mt.hostname", "mt9"),
        ("mt.ip_mode", "dhcp"),
        ("mt.ip_address", ""),
        ("mt.gateway", ""),
        ("mt.dns_servers", ""),
        ("mt.root_ssh_key", ""),
    ]))
    .unwrap();
    ovfenv::apply(&root, Distro::El6, &env, &Transport::GuestInfo).unwrap();
    let ifcfg = read(&root, "etc/sysconfig/network-scripts/ifcfg-eth0");
    assert!(
        ifcfg.contains("ONBOOT=yes\n") && ifcfg.contains("BOOTPROTO=dhcp\n"),
        "{ifcfg}"
    );
    assert!(!root.join("etc/resolv.conf").exists());
    assert!(
        !root.join("root/.ssh/authorized_keys").exists(),
        "no key, no file"
    );
    assert!(
        !root.join("etc/mt-agent/passphrase").exists(),
        "not given, not written"
    );
}

// ---------------------------------------------------------------------------------------------
// Transports

/// Stands in for the guest's programs: `vmtoolsd` answers `guestinfo.ovfEnv` with `guestinfo`
/// and the guest variables from `variables` (or fails like "No value found"; it is not
/// installed at all with `no_tools`), `blkid` lists `cdroms`, and `mount` of one of them puts
/// `ovf-env.xml` into the mount point as the real CD would show it.
#[derive(Default)]
struct FakeGuest {
    no_tools: bool,
    guestinfo: Option<String>,
    /// The guest variables set, by property key (`guestinfo.mt.<key>`).
    variables: Vec<(&'static str, &'static str)>,
    cdroms: Vec<(&'static str, Option<String>)>,
    calls: std::cell::RefCell<Vec<String>>,
}

impl FakeGuest {
    /// The guest variables it was asked for.
    fn variables_asked(&self) -> usize {
        let prefix = format!("vmtoolsd --cmd info-get guestinfo.{DEPLOY_PRODUCT_CLASS}.");
        let calls = self.calls.borrow();
        calls.iter().filter(|c| c.starts_with(&prefix)).count()
    }
}

impl Runner for FakeGuest {
    fn run(&self, program: &str, args: &[&str]) -> std::io::Result<(bool, String)> {
        self.calls
            .borrow_mut()
            .push(format!("{program} {}", args.join(" ")));
        match program {
            "vmtoolsd" if !self.no_tools => {
                assert_eq!(args.len(), 2, "{args:?}");
                assert_eq!(args[0], "--cmd");
                let name = args[1].strip_prefix("info-get ").unwrap();
                if name == "guestinfo.ovfEnv" {
                    return Ok(match &self.guestinfo {
                        Some(x) => (true, x.clone()),
                        None => (false, String::new()),
                    });
                }
                let key = name
                    .strip_prefix(&format!("guestinfo.{DEPLOY_PRODUCT_CLASS}."))
                    .unwrap_or_else(|| panic!("asked for {name}"));
                assert!(ovfenv::KEYS.contains(&key), "asked for {name}");
                Ok(match self.variables.iter().find(|(k, _)| *k == key) {
                    Some((_, v)) => (true, format!("{v}\n")),
                    None => (false, String::new()),
                })
            }
            "blkid" => Ok((
                true,
                self.cdroms.iter().map(|(d, _)| format!("{d}\n")).collect(),
            )),
            "mount" => {
                assert_eq!(&args[..4], ["-o", "ro", "-t", "iso9660"]);
                let (_, content) = self.cdroms.iter().find(|(d, _)| *d == args[4]).unwrap();
                if let Some(c) = content {
                    std::fs::write(Utf8Path::new(args[5]).join("ovf-env.xml"), c)?;
                }
                Ok((true, String::new()))
            }
            "hostname" => Ok((true, String::new())),
            "umount" => {
                let f = Utf8Path::new(args[0]).join("ovf-env.xml");
                let _ = std::fs::remove_file(f);
                Ok((true, String::new()))
            }
            other => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                other.to_string(),
            )),
        }
    }
}

#[test]
fn vmware_tools_is_asked_first() {
    let xml = env_xml(&static_props());
    let guest = FakeGuest {
        guestinfo: Some(xml.clone()),
        cdroms: vec![("/dev/sr0", Some("<not-this/>".into()))],
        ..FakeGuest::default()
    };
    let (t, content) = ovfenv::read_environment(&guest).unwrap().unwrap();
    assert_eq!(t, Transport::GuestInfo);
    assert_eq!(content, Content::Document(xml));
    // Whether the hypervisor is VMware's (unknown here: no vmware-checkvm), then the tools;
    // the CD is never looked at.
    assert_eq!(
        *guest.calls.borrow(),
        [
            "vmware-checkvm ",
            "vmtoolsd --cmd info-get guestinfo.ovfEnv"
        ]
    );
}

#[test]
fn without_vmware_tools_the_cdrom_carrying_ovf_env_xml_is_read_and_unmounted() {
    let xml = env_xml(&static_props());
    let guest = FakeGuest {
        cdroms: vec![("/dev/sr0", None), ("/dev/sr1", Some(xml.clone()))],
        ..FakeGuest::default()
    };
    let (t, content) = ovfenv::read_environment(&guest).unwrap().unwrap();
    assert_eq!(
        t,
        Transport::Iso {
            device: "/dev/sr1".into()
        }
    );
    assert_eq!(content, Content::Document(xml));
    let calls = guest.calls.borrow();
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("umount")).count(),
        2,
        "{calls:?}"
    );
    let none = FakeGuest::default();
    assert_eq!(ovfenv::read_environment(&none).unwrap(), None);
}

#[test]
fn a_new_host_name_is_made_the_running_one_and_an_unchanged_one_is_not() {
    let root = scratch("activate");
    let env = ovfenv::parse(&env_xml(&static_props())).unwrap();
    let guest = FakeGuest::default();
    let changes = ovfenv::apply(&root, Distro::Debian12, &env, &Transport::GuestInfo).unwrap();
    ovfenv::activate(&guest, &changes, &env.config).unwrap();
    let again = ovfenv::apply(&root, Distro::Debian12, &env, &Transport::GuestInfo).unwrap();
    assert!(again.is_empty(), "{again:?}");
    ovfenv::activate(&guest, &again, &env.config).unwrap();
    assert_eq!(*guest.calls.borrow(), ["hostname mt7"]);
}

#[test]
fn show_prints_the_configuration_with_the_passphrase_masked() {
    let dir = scratch("show");
    let env = dir.join("ovf-env.xml");
    std::fs::write(&env, env_xml(&static_props())).unwrap();
    let out = ok(&["ovfenv", "show", "--from", env.as_str()]);
    assert!(
        out.contains("network: static 192.168.10.20/24 gateway 192.168.10.1"),
        "{out}"
    );
    assert!(
        out.contains("agent passphrase: (set)") && !out.contains("horse"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// Guest variables: a standalone ESXi host delivers no OVF environment

/// The static configuration as guest variables, by property key.
fn static_variables() -> Vec<(&'static str, &'static str)> {
    static_props()
        .into_iter()
        .map(|(k, v)| {
            let key = k
                .strip_prefix(DEPLOY_PRODUCT_CLASS)
                .and_then(|k| k.strip_prefix('.'))
                .unwrap();
            (key, v)
        })
        .collect()
}

fn guest_with(variables: Vec<(&'static str, &'static str)>) -> FakeGuest {
    FakeGuest {
        variables,
        ..FakeGuest::default()
    }
}

#[test]
fn guest_variables_are_applied_when_no_environment_is_delivered() {
    let guest = guest_with(static_variables());
    let (t, content) = ovfenv::read_environment(&guest).unwrap().unwrap();
    assert_eq!(t, Transport::GuestVariables);
    assert_eq!(guest.variables_asked(), ovfenv::KEYS.len());
    assert!(
        !format!("{content:?}").contains("horse"),
        "Debug must not print the passphrase: {content:?}"
    );
    let from_document = ovfenv::parse(&env_xml(&static_props())).unwrap();
    assert_eq!(
        content.parse().unwrap().config,
        from_document.config,
        "the same values mean the same configuration, whichever way they arrived"
    );

    let root = scratch("guestvars").join("root");
    let out = ovfenv::run_apply(&root, Distro::Debian12, None, &guest).unwrap();
    let source = format!("guest variables (guestinfo.{DEPLOY_PRODUCT_CLASS}.*, VMware tools)");
    assert!(
        out.contains(&format!("{source} applied:")) && out.contains("wrote /etc/hostname"),
        "{out}"
    );
    assert_eq!(read(&root, "etc/hostname"), "mt7\n");
    assert_eq!(
        read(&root, "etc/mt-agent/passphrase"),
        "correct horse battery\n"
    );
    assert!(
        read(&root, "etc/network/interfaces").contains("address 192.168.10.20/24\n"),
        "{}",
        read(&root, "etc/network/interfaces")
    );

    let before = snapshot(&root);
    let out = ovfenv::run_apply(&root, Distro::Debian12, None, &guest).unwrap();
    assert!(
        out.contains(&format!("{source}: unchanged, nothing written")),
        "{out}"
    );
    assert_eq!(snapshot(&root), before, "an unchanged set writes nothing");

    let shown = ovfenv::show(None, &guest).unwrap();
    assert!(
        shown.contains(&format!("source: {source} (blake3 ")),
        "{shown}"
    );
    assert!(
        shown.contains("agent passphrase: (set)") && !shown.contains("horse"),
        "{shown}"
    );
    let line = ovfenv::describe_source(&record_in(&root));
    assert!(
        line.starts_with(&format!("configuration: {source} (blake3 ")),
        "{line}"
    );
    let out = status(&root, &record_in(&root));
    assert!(out.contains(&line), "status must name the source:\n{out}");
}

#[test]
fn an_ovf_environment_wins_over_guest_variables() {
    let xml = env_xml(&with(&static_props(), "mt.hostname", "from-env"));
    let by_tools = FakeGuest {
        guestinfo: Some(xml.clone()),
        ..guest_with(static_variables())
    };
    let (t, content) = ovfenv::read_environment(&by_tools).unwrap().unwrap();
    assert_eq!(
        (t, content),
        (Transport::GuestInfo, Content::Document(xml.clone()))
    );
    assert_eq!(by_tools.variables_asked(), 0);

    let by_cd = FakeGuest {
        cdroms: vec![("/dev/sr0", Some(xml.clone()))],
        ..guest_with(static_variables())
    };
    let (t, content) = ovfenv::read_environment(&by_cd).unwrap().unwrap();
    assert_eq!(
        (t, content),
        (
            Transport::Iso {
                device: "/dev/sr0".into()
            },
            Content::Document(xml)
        )
    );
    assert_eq!(by_cd.variables_asked(), 0);
}

#[test]
fn an_invalid_guest_variable_writes_nothing_and_names_the_variable() {
    let root = scratch("guestvars-invalid").join("root");
    ovfenv::run_apply(&root, Distro::El6, None, &guest_with(static_variables())).unwrap();
    let before = snapshot(&root);
    let bad = guest_with(
        static_variables()
            .into_iter()
            .map(|(k, v)| match k {
                "ip_address" => (k, "192.168.10.256"),
                "hostname" => (k, "mt8.dr.example.com"),
                _ => (k, v),
            })
            .collect(),
    );
    let err = format!(
        "{:#}",
        ovfenv::run_apply(&root, Distro::El6, None, &bad).unwrap_err()
    );
    let variable = format!(
        "guestinfo.{DEPLOY_PRODUCT_CLASS}.ip_address: \"192.168.10.256\" is not an IPv4 address"
    );
    assert!(
        err.contains(&variable) && err.contains("previous configuration stays in force"),
        "{err}"
    );
    assert_eq!(
        snapshot(&root),
        before,
        "the valid host name must not be written beside the invalid address"
    );
}

#[test]
fn without_vmtoolsd_guest_variables_are_not_this_transport() {
    let el6 = FakeGuest {
        no_tools: true,
        ..guest_with(static_variables())
    };
    assert_eq!(ovfenv::read_environment(&el6).unwrap(), None);
    let vmtoolsd: Vec<String> = el6
        .calls
        .borrow()
        .iter()
        .filter(|c| c.starts_with("vmtoolsd"))
        .cloned()
        .collect();
    assert_eq!(
        vmtoolsd.len(),
        1,
        "one failed spawn, not one per key: {vmtoolsd:?}"
    );
    let root = scratch("guestvars-absent").join("root");
    let out = ovfenv::run_apply(&root, Distro::El6, None, &el6).unwrap();
    assert!(
        out.contains("no guestinfo.ovfEnv, no CD-ROM with ovf-env.xml, no guestinfo.")
            && out.contains("keeping the current configuration"),
        "{out}"
    );
    assert!(!root.exists(), "nothing written");

    // VMware tools present but no variable set: the same as no environment.
    let unset = FakeGuest::default();
    assert_eq!(ovfenv::read_environment(&unset).unwrap(), None);
    assert_eq!(unset.variables_asked(), ovfenv::KEYS.len());
}

/// Writes an executable script and runs it once before use: a file this process has just
/// written can be "busy" for a moment while a child forked concurrently by another test still
/// holds it open for writing, until that child execs.
fn install_script(path: &Utf8Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    for _ in 0..200 {
        match Command::new(path).output() {
            Ok(_) => return,
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => panic!("cannot run {path}: {e}"),
        }
    }
    panic!("{path} stayed busy");
}

/// A directory to be the whole PATH, with a `vmtoolsd` answering `info-get` of the guest
/// variables in `variables` (by property key) and "No value found" (exit 1) for anything else,
/// as VMware tools does. Nothing else is on it: no `blkid`, so no CD-ROM of the host is read.
fn fake_tools(dir: &Utf8Path, variables: &[(&str, &str)]) -> Utf8PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let mut script = String::from("#!/bin/sh\n[ \"$1\" = --cmd ] || exit 2\ncase \"$2\" in\n");
    for (key, value) in variables {
        assert!(!value.contains('\''), "{value}");
        let name = ovfenv::guest_variable(key);
        script.push_str(&format!("\"info-get {name}\") echo '{value}' ;;\n"));
    }
    script.push_str("*) echo 'No value found' >&2; exit 1 ;;\nesac\n");
    install_script(&bin.join("vmtoolsd"), &script);
    bin
}

fn apply_with_path(root: &Utf8Path, path: &Utf8Path) -> Output {
    Command::new(common::MT_AGENT)
        .args(["ovfenv", "apply", "--root", root.as_str()])
        .args(["--distro", "debian12"])
        .env("PATH", path)
        .output()
        .unwrap()
}

#[test]
fn the_binary_applies_guest_variables_from_vmware_tools() {
    let dir = scratch("bin-guestvars");
    let root = dir.join("root");
    let source = format!("guest variables (guestinfo.{DEPLOY_PRODUCT_CLASS}.*, VMware tools)");

    let valid = fake_tools(&dir.join("valid"), &static_variables());
    let o = apply_with_path(&root, &valid);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains(&format!("{source} applied:")), "{out}");
    assert_eq!(read(&root, "etc/hostname"), "mt7\n");
    assert_eq!(
        read(&root, "etc/mt-agent/passphrase"),
        "correct horse battery\n",
        "the value as set, without the line end vmtoolsd prints"
    );
    assert!(read(&root, "root/.ssh/authorized_keys").contains(KEY));
    let out = status(&root, &record_in(&root));
    assert!(
        out.contains(&format!("configuration: {source} (blake3 ")),
        "{out}"
    );

    let before = snapshot(&root);
    let o = apply_with_path(&root, &valid);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("unchanged, nothing written"), "{out}");
    assert_eq!(snapshot(&root), before);

    let mut bad = static_variables();
    bad.retain(|(k, _)| *k != "gateway");
    bad.push(("gateway", "10.0.0.1"));
    let o = apply_with_path(&root, &fake_tools(&dir.join("invalid"), &bad));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains(&format!(
            "guestinfo.{DEPLOY_PRODUCT_CLASS}.gateway: 10.0.0.1 is outside the subnet"
        )) && err.contains("previous configuration stays in force"),
        "{err}"
    );
    assert_eq!(snapshot(&root), before);

    // No VMware tools at all (el6): nothing to read, nothing written.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = apply_with_path(&root, &empty);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.starts_with("no OVF environment and no guest variable"),
        "{out}"
    );
    assert_eq!(snapshot(&root), before);
}

/// el6 has no VMware tools: the OVF environment reaches it only on the CD-ROM drive the OVF
/// declares for the iso transport, and applying it from there writes el6's own files.
#[test]
fn an_el6_guest_without_vmware_tools_applies_the_environment_from_the_cdrom() {
    let root = scratch("el6-iso");
    let guest = FakeGuest {
        no_tools: true,
        cdroms: vec![("/dev/sr0", Some(env_xml(&static_props())))],
        ..FakeGuest::default()
    };
    ovfenv::run_apply(&root, Distro::El6, None, &guest).unwrap();
    let ifcfg = read(&root, "etc/sysconfig/network-scripts/ifcfg-eth0");
    assert!(ifcfg.contains("BOOTPROTO=none"), "{ifcfg}");
    assert!(ifcfg.contains("ONBOOT=yes"), "{ifcfg}");
    let record = std::fs::read_to_string(record_in(&root)).unwrap();
    assert!(record.contains("/dev/sr0"), "{record}");
    assert_eq!(
        mode(&root.join(mt_contract::guest::PASSPHRASE_PATH.trim_start_matches('/'))),
        0o600
    );
}
