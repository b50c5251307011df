//! Deploy-time configuration from the OVF environment (`ovf-env.xml`, DSP0243 section 11): the
//! values vSphere's deploy wizard collected for the ProductSection properties (class `mt`).
//!
//! Reading finds the document on whichever transport is present (VMware tools'
//! `guestinfo.ovfEnv`, or a CD-ROM carrying `ovf-env.xml`) through an injectable command runner;
//! parsing and validation happen completely before anything is written, so a malformed or
//! invalid environment leaves the previous configuration in place. `apply` writes only files
//! whose contents differ (each atomically), so an unchanged environment changes nothing.
//! This module must not restart services or bring interfaces up: first boot orders itself
//! before networking, so the files it writes are what the network scripts read.

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;

/// The OVF environment namespace (`oe:`).
pub const NS_OE: &str = "http://schemas.dmtf.org/ovf/environment/1";
/// The ProductSection class of the appliance's properties: the environment calls them `mt.<key>`.
pub const PRODUCT_CLASS: &str = "mt";
/// What was last applied (transport and document hash): `mt-agent status` reads it.
pub const RECORD_PATH: &str = "/var/lib/mt-agent/ovf-env.json";
/// The interface the appliance configures; the kernel command line (`net.ifnames=0`) and el6
/// both name the first NIC so.
pub const DEVICE: &str = "eth0";
/// The name of the document on the `iso` transport's CD-ROM.
pub const ISO_FILE_NAME: &str = "ovf-env.xml";

/// The property keys, as the ProductSection declares them (`appliance::definition::DeployProperty`).
pub const KEYS: [&str; 10] = [
    "hostname",
    "ip_mode",
    "ip_address",
    "ip_prefix",
    "gateway",
    "dns_servers",
    "dns_search",
    "ntp_server",
    "agent_passphrase",
    "root_ssh_key",
];

/// The guest distribution whose configuration files `apply` writes (the one `setup` knows).
pub use crate::guest::setup::Distro;

/// How the document reached the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// VMware tools: `vmtoolsd --cmd "info-get guestinfo.ovfEnv"`.
    GuestInfo,
    /// A CD-ROM with `ovf-env.xml` (the OVF `iso` transport), by device.
    Iso { device: String },
    /// A file given on the command line.
    File { path: String },
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::GuestInfo => f.write_str("com.vmware.guestInfo (VMware tools)"),
            Transport::Iso { device } => write!(f, "iso (CD-ROM {device})"),
            Transport::File { path } => write!(f, "file {path}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpConfig {
    Dhcp,
    Static {
        address: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
    },
}

/// The validated deploy-time configuration. `None`: the environment did not carry the
/// property, and the guest keeps what it has.
#[derive(Clone, PartialEq, Eq)]
pub struct DeployConfig {
    pub hostname: Option<String>,
    pub ip: Option<IpConfig>,
    pub dns_servers: Vec<Ipv4Addr>,
    pub dns_search: Option<String>,
    pub ntp_server: Option<String>,
    pub agent_passphrase: Option<String>,
    /// `Some("")` removes a key an earlier environment installed.
    pub root_ssh_key: Option<String>,
}

impl fmt::Debug for DeployConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeployConfig")
            .field("hostname", &self.hostname)
            .field("ip", &self.ip)
            .field("dns_servers", &self.dns_servers)
            .field("dns_search", &self.dns_search)
            .field("ntp_server", &self.ntp_server)
            .field(
                "agent_passphrase",
                &self.agent_passphrase.as_ref().map(|_| "(set)"),
            )
            .field("root_ssh_key", &self.root_ssh_key)
            .finish()
    }
}

/// A parsed environment: the configuration, and warnings (unknown keys) for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub config: DeployConfig,
    pub warnings: Vec<String>,
    /// BLAKE3 of the document, recorded so `status` can tell which environment is in force.
    pub hash: String,
}

/// Parses and validates an OVF environment document. Every problem is reported at once, each
/// naming the property (`mt.ip_address`) or the line and column.
pub fn parse(xml: &str) -> Result<Environment> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| {
        anyhow::anyhow!(
            "the OVF environment is not well-formed XML (line {}, column {}): {e}",
            e.pos().row,
            e.pos().col
        )
    })?;
    let root = doc.root_element();
    if root.tag_name().name() != "Environment" || root.tag_name().namespace() != Some(NS_OE) {
        bail!(
            "the OVF environment's root element is {:?}, not an Environment in namespace {NS_OE}",
            root.tag_name().name()
        );
    }
    let mut values: std::collections::BTreeMap<&str, String> = Default::default();
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    let sections = root.children().filter(|c| {
        c.tag_name().name() == "PropertySection" && c.tag_name().namespace() == Some(NS_OE)
    });
    for p in sections
        .flat_map(|s| s.children())
        .filter(|c| c.tag_name().name() == "Property" && c.tag_name().namespace() == Some(NS_OE))
    {
        let (Some(key), Some(value)) = (p.attribute((NS_OE, "key")), p.attribute((NS_OE, "value")))
        else {
            errors.push(format!(
                "a Property at byte {} lacks oe:key or oe:value",
                p.range().start
            ));
            continue;
        };
        let known = key
            .strip_prefix(PRODUCT_CLASS)
            .and_then(|k| k.strip_prefix('.'))
            .and_then(|k| KEYS.iter().find(|&&known| known == k));
        match known {
            Some(k) => {
                if values.insert(k, value.to_string()).is_some() {
                    errors.push(format!("{key}: given twice"));
                }
            }
            None => warnings.push(format!("ignoring unknown OVF property {key:?}")),
        }
    }
    let config = validate(&values, &mut errors);
    if !errors.is_empty() {
        bail!(
            "the OVF environment is invalid:\n  - {}",
            errors.join("\n  - ")
        );
    }
    Ok(Environment {
        config,
        warnings,
        hash: blake3::hash(xml.as_bytes()).to_hex().to_string(),
    })
}

fn validate(
    v: &std::collections::BTreeMap<&str, String>,
    errors: &mut Vec<String>,
) -> DeployConfig {
    let mut err = |key: &str, msg: String| errors.push(format!("{PRODUCT_CLASS}.{key}: {msg}"));
    let get = |k: &str| v.get(k).map(|s| s.trim());

    let hostname = get("hostname").map(str::to_string);
    if let Some(h) = &hostname {
        if !valid_hostname(h) {
            err("hostname", format!("{h:?} is not a host name: dot-separated labels of a-z 0-9 - (1-63 each, 253 in all), not starting or ending with -"));
        }
    }
    let ipv4 = |key: &str, err: &mut dyn FnMut(&str, String)| -> Option<Ipv4Addr> {
        let s = get(key)?;
        match s.parse::<Ipv4Addr>() {
            Ok(a) => Some(a),
            Err(_) => {
                err(
                    key,
                    format!("{s:?} is not an IPv4 address (like 192.168.10.20)"),
                );
                None
            }
        }
    };
    let mut dns_servers = Vec::new();
    if let Some(list) = get("dns_servers") {
        for (i, d) in list
            .split([',', ' ', ';'])
            .filter(|s| !s.is_empty())
            .enumerate()
        {
            match d.parse::<Ipv4Addr>() {
                Ok(a) if usable_unicast(a) => dns_servers.push(a),
                _ => err(
                    "dns_servers",
                    format!("entry {} {d:?} is not a unicast IPv4 address", i + 1),
                ),
            }
        }
        if dns_servers.len() > 3 {
            err(
                "dns_servers",
                "at most 3 servers (the resolver uses no more)".into(),
            );
        }
    }
    let ip = match get("ip_mode") {
        None => None,
        Some("dhcp") => Some(IpConfig::Dhcp),
        Some("static") => {
            let address = ipv4("ip_address", &mut err);
            let gateway = ipv4("gateway", &mut err);
            let prefix = match get("ip_prefix") {
                None | Some("") => {
                    err("ip_prefix", "is required with ip_mode static".into());
                    None
                }
                Some(p) => match p.parse::<u8>() {
                    Ok(n) if (8..=30).contains(&n) => Some(n),
                    _ => {
                        err(
                            "ip_prefix",
                            format!("{p:?} is not a prefix length between 8 and 30"),
                        );
                        None
                    }
                },
            };
            if get("ip_address").is_none() {
                err("ip_address", "is required with ip_mode static".into());
            }
            if get("gateway").is_none() {
                err("gateway", "is required with ip_mode static".into());
            }
            if dns_servers.is_empty() {
                err(
                    "dns_servers",
                    "a static configuration needs at least one DNS server".into(),
                );
            }
            match (address, prefix, gateway) {
                (Some(address), Some(prefix), Some(gateway)) => {
                    let mask = u32::MAX << (32 - u32::from(prefix));
                    let net = u32::from(address) & mask;
                    let bcast = net | !mask;
                    let a = u32::from(address);
                    let g = u32::from(gateway);
                    let subnet = format!("{}/{prefix}", Ipv4Addr::from(net));
                    if !usable_unicast(address) || a == net || a == bcast {
                        err(
                            "ip_address",
                            format!("{address} is not a usable host address in {subnet}"),
                        );
                    }
                    if g & mask != net {
                        err(
                            "gateway",
                            format!("{gateway} is outside the subnet {subnet} of the address"),
                        );
                    } else if g == net || g == bcast || g == a {
                        err(
                            "gateway",
                            format!("{gateway} cannot be the network, broadcast or own address"),
                        );
                    }
                    Some(IpConfig::Static {
                        address,
                        prefix,
                        gateway,
                    })
                }
                _ => None,
            }
        }
        Some(other) => {
            err(
                "ip_mode",
                format!("{other:?} is neither \"dhcp\" nor \"static\""),
            );
            None
        }
    };
    let dns_search = get("dns_search").map(str::to_string);
    if let Some(s) = dns_search.as_deref().filter(|s| !s.is_empty()) {
        if !valid_hostname(s) {
            err(
                "dns_search",
                format!("{s:?} is not a domain name (dot-separated labels of a-z 0-9 -)"),
            );
        }
    }
    let ntp_server = get("ntp_server")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if let Some(n) = &ntp_server {
        if n.parse::<Ipv4Addr>().is_err() && !valid_hostname(n) {
            err(
                "ntp_server",
                format!("{n:?} is neither an IPv4 address nor a host name"),
            );
        }
    }
    // The passphrase is taken as typed (no trimming): spaces may be part of it.
    let agent_passphrase = v.get("agent_passphrase").cloned();
    if let Some(p) = &agent_passphrase {
        if p.chars().count() < 8 {
            err("agent_passphrase", "is shorter than 8 characters; set the property when deploying (no passphrase is built into the image)".into());
        } else if p.len() > 1024 {
            err("agent_passphrase", "is longer than 1024 bytes".into());
        } else if p.contains(['\n', '\r', '\0']) {
            err(
                "agent_passphrase",
                "contains a line break or NUL (the passphrase file holds one line)".into(),
            );
        }
    }
    let root_ssh_key = get("root_ssh_key").map(str::to_string);
    if let Some(k) = root_ssh_key.as_deref().filter(|k| !k.is_empty()) {
        if let Err(why) = check_ssh_public_key(k) {
            err("root_ssh_key", why);
        }
    }
    DeployConfig {
        hostname,
        ip,
        dns_servers,
        dns_search,
        ntp_server,
        agent_passphrase,
        root_ssh_key,
    }
}

fn usable_unicast(a: Ipv4Addr) -> bool {
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || a.is_broadcast()
        || a.octets()[0] >= 240)
}

/// The same rule as the appliance definition's `network.hostname`.
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

fn check_ssh_public_key(key: &str) -> Result<(), String> {
    let mut words = key.split_ascii_whitespace();
    let kind = words.next().unwrap_or("");
    let known = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    if !known.contains(&kind) {
        return Err(format!(
            "starts with {kind:?}, not a public key type ({})",
            known.join(", ")
        ));
    }
    let body = words.next().unwrap_or("");
    if body.len() < 16
        || !body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
    {
        return Err("the key body is not base64".to_string());
    }
    if key.contains(['\n', '\r']) {
        return Err("contains a line break: give one key on one line".to_string());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Transports

/// Runs a program and returns whether it succeeded and its standard output. Injected so tests
/// (and the boot test's fakes) can stand in for `vmtoolsd`, `blkid`, `mount` and `umount`.
pub trait Runner {
    fn run(&self, program: &str, args: &[&str]) -> std::io::Result<(bool, String)>;
}

/// The real runner: the programs on the guest's PATH.
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, program: &str, args: &[&str]) -> std::io::Result<(bool, String)> {
        let out = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    }
}

/// Finds the OVF environment: VMware tools first (vSphere's default), then a CD-ROM with
/// `ovf-env.xml`. `None` when neither carries one (not deployed from the OVF with properties).
pub fn read_environment(runner: &dyn Runner) -> Result<Option<(Transport, String)>> {
    // No vmtoolsd (ENOENT) or "No value found" (exit 1) both mean: not this transport.
    if let Ok((true, out)) = runner.run("vmtoolsd", &["--cmd", "info-get guestinfo.ovfEnv"]) {
        if !out.trim().is_empty() {
            return Ok(Some((Transport::GuestInfo, out)));
        }
    }
    let devices = match runner.run("blkid", &["-t", "TYPE=iso9660", "-o", "device"]) {
        Ok((true, out)) => out,
        _ => return Ok(None),
    };
    for device in devices.lines().map(str::trim).filter(|d| !d.is_empty()) {
        if let Some(text) = read_from_cdrom(runner, device)? {
            return Ok(Some((
                Transport::Iso {
                    device: device.to_string(),
                },
                text,
            )));
        }
    }
    Ok(None)
}

/// Mounts one iso9660 device read-only on a fresh directory and reads `ovf-env.xml` (plain
/// ISO 9660 level 1 names it `OVF-ENV.XML;1`, shown upper-case without Rock Ridge).
fn read_from_cdrom(runner: &dyn Runner, device: &str) -> Result<Option<String>> {
    let dir = std::env::temp_dir().join(format!(
        "mt-ovfenv-{}-{}",
        std::process::id(),
        device.replace('/', "_")
    ));
    let dir = Utf8PathBuf::from_path_buf(dir).map_err(|p| anyhow::anyhow!("{p:?} is not UTF-8"))?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir}"))?;
    let mounted = matches!(
        runner.run(
            "mount",
            &["-o", "ro", "-t", "iso9660", device, dir.as_str()]
        ),
        Ok((true, _))
    );
    let mut found = None;
    if mounted {
        for name in [ISO_FILE_NAME, "OVF-ENV.XML", "OVF-ENV.XML;1"] {
            if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
                found = Some(text);
                break;
            }
        }
        let _ = runner.run("umount", &[dir.as_str()]);
    }
    let _ = std::fs::remove_dir(&dir);
    Ok(found)
}

// ---------------------------------------------------------------------------------------------
// Applying

/// The record of the environment in force, written last by `apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub transport: Transport,
    pub blake3: String,
}

/// The files `apply` wrote (paths inside the root, absolute as on the guest).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub written: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
    }
}

struct Desired {
    path: String,
    contents: Vec<u8>,
    mode: u32,
}

/// Writes the configuration into the tree at `root` for `distro`; only files whose contents
/// or mode differ are written (each through a temporary file and a rename).
pub fn apply(
    root: &Utf8Path,
    distro: Distro,
    env: &Environment,
    transport: &Transport,
) -> Result<Changes> {
    let mut desired = files(root, distro, &env.config)?;
    let record = Record {
        transport: transport.clone(),
        blake3: env.hash.clone(),
    };
    let mut record_text = serde_json::to_string_pretty(&record)?;
    record_text.push('\n');
    desired.push(Desired {
        path: RECORD_PATH.into(),
        contents: record_text.into_bytes(),
        mode: 0o644,
    });
    let mut changes = Changes::default();
    for d in desired {
        let path = root.join(d.path.trim_start_matches('/'));
        let same = std::fs::read(&path).is_ok_and(|c| c == d.contents)
            && std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o7777 == d.mode);
        if same {
            continue;
        }
        write_atomic(&path, &d.contents, d.mode)?;
        changes.written.push(d.path);
    }
    Ok(changes)
}

fn write_atomic(path: &Utf8Path, contents: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().context("a path without a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {dir}"))?;
    let tmp = dir.join(format!(
        ".{}.mt-ovfenv.tmp",
        path.file_name().unwrap_or("file")
    ));
    // Created already restricted, so a secret is never briefly readable by others.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {tmp}"))?;
    f.write_all(contents)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {tmp}"))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {tmp}"))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {path}"))?;
    Ok(())
}

const MANAGED_BEGIN: &str = "# BEGIN mt-agent ovfenv (deploy-time root_ssh_key)";
const MANAGED_END: &str = "# END mt-agent ovfenv";

/// The files the configuration determines for `distro`.
fn files(root: &Utf8Path, distro: Distro, c: &DeployConfig) -> Result<Vec<Desired>> {
    let mut out = Vec::new();
    let mut file = |path: &str, contents: String, mode: u32| {
        out.push(Desired {
            path: path.into(),
            contents: contents.into_bytes(),
            mode,
        })
    };
    if let Some(h) = &c.hostname {
        let short = h.split('.').next().unwrap_or(h);
        let names = if short == h {
            h.clone()
        } else {
            format!("{h} {short}")
        };
        match distro {
            Distro::Debian12 => {
                // Debian keeps the short name in /etc/hostname (as the image build does) and
                // the FQDN in /etc/hosts, so `hostname` is short and `hostname -f` the FQDN.
                file("/etc/hostname", format!("{short}\n"), 0o644);
                file(
                    "/etc/hosts",
                    format!("127.0.0.1\tlocalhost\n127.0.1.1\t{names}\n\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"),
                    0o644,
                );
            }
            Distro::El6 => {
                file(
                    "/etc/hosts",
                    format!("127.0.0.1\tlocalhost localhost.localdomain {names}\n::1\tlocalhost localhost.localdomain\n"),
                    0o644,
                );
            }
        }
    }
    if distro == Distro::El6 && (c.hostname.is_some() || c.ip.is_some()) {
        let mut t = String::from("NETWORKING=yes\nNETWORKING_IPV6=no\n");
        if let Some(h) = &c.hostname {
            t.push_str(&format!("HOSTNAME={h}\n"));
        }
        if let Some(IpConfig::Static { gateway, .. }) = &c.ip {
            t.push_str(&format!("GATEWAY={gateway}\n"));
        }
        file("/etc/sysconfig/network", t, 0o644);
    }
    if let Some(ip) = &c.ip {
        match distro {
            Distro::Debian12 => {
                // The whole file: a second `iface eth0` stanza in interfaces.d would clash with
                // the one the image was built with.
                let mut t = format!("source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\nauto {DEVICE}\nallow-hotplug {DEVICE}\n");
                match ip {
                    IpConfig::Dhcp => t.push_str(&format!("iface {DEVICE} inet dhcp\n")),
                    IpConfig::Static {
                        address,
                        prefix,
                        gateway,
                    } => t.push_str(&format!(
                        "iface {DEVICE} inet static\n    address {address}/{prefix}\n    gateway {gateway}\n"
                    )),
                }
                file("/etc/network/interfaces", t, 0o644);
            }
            Distro::El6 => {
                let mut t =
                    format!("DEVICE={DEVICE}\nTYPE=Ethernet\nONBOOT=yes\nNM_CONTROLLED=no\n");
                match ip {
                    IpConfig::Dhcp => t.push_str("BOOTPROTO=dhcp\n"),
                    IpConfig::Static {
                        address,
                        prefix,
                        gateway,
                    } => {
                        t.push_str(&format!(
                            "BOOTPROTO=none\nIPADDR={address}\nPREFIX={prefix}\nNETMASK={}\nGATEWAY={gateway}\nPEERDNS=no\n",
                            Ipv4Addr::from(u32::MAX << (32 - u32::from(*prefix)))
                        ));
                        for (i, d) in c.dns_servers.iter().enumerate() {
                            t.push_str(&format!("DNS{}={d}\n", i + 1));
                        }
                    }
                }
                file("/etc/sysconfig/network-scripts/ifcfg-eth0", t, 0o644);
            }
        }
    }
    // With DHCP the lease brings the resolver; a static address needs it written.
    if matches!(c.ip, Some(IpConfig::Static { .. })) {
        let mut t = String::new();
        if let Some(s) = c.dns_search.as_deref().filter(|s| !s.is_empty()) {
            t.push_str(&format!("search {s}\n"));
        }
        for d in &c.dns_servers {
            t.push_str(&format!("nameserver {d}\n"));
        }
        file("/etc/resolv.conf", t, 0o644);
    }
    if let Some(ntp) = &c.ntp_server {
        match distro {
            Distro::Debian12 => file(
                "/etc/systemd/timesyncd.conf.d/mt-ovfenv.conf",
                format!("# The deploy-time NTP server (OVF property mt.ntp_server).\n[Time]\nNTP={ntp}\n"),
                0o644,
            ),
            Distro::El6 => file(
                "/etc/ntp.conf",
                format!("# The deploy-time NTP server (OVF property mt.ntp_server).\ndriftfile /var/lib/ntp/drift\nrestrict default kod nomodify notrap nopeer noquery\nrestrict 127.0.0.1\nserver {ntp} iburst\n"),
                0o644,
            ),
        }
    }
    if let Some(p) = &c.agent_passphrase {
        file(
            crate::replication::net::auth::PASSPHRASE_PATH,
            format!("{p}\n"),
            0o600,
        );
    }
    if let Some(key) = &c.root_ssh_key {
        let path = root.join("root/.ssh/authorized_keys");
        let current = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {path}")),
        };
        let t = with_managed_key(&current, key);
        if path.exists() || !t.is_empty() {
            file("/root/.ssh/authorized_keys", t, 0o600);
        }
    }
    Ok(out)
}

/// `authorized_keys` with the deploy-time key in a marked block, leaving the build-time keys
/// (and any an administrator added) alone.
fn with_managed_key(current: &str, key: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in current.lines() {
        if line == MANAGED_BEGIN {
            inside = true;
        } else if line == MANAGED_END {
            inside = false;
        } else if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !key.is_empty() {
        out.push_str(&format!("{MANAGED_BEGIN}\n{key}\n{MANAGED_END}\n"));
    }
    out
}

/// Makes a newly written host name the running one (`hostname NAME`), so the first boot
/// after deployment already carries it; the network files take effect as networking starts.
pub fn activate(runner: &dyn Runner, changes: &Changes, config: &DeployConfig) -> Result<()> {
    let written = |p: &str| changes.written.iter().any(|w| w == p);
    // The name as the distribution keeps it: short on Debian, the FQDN on el6.
    let name = match &config.hostname {
        Some(h) if written("/etc/hostname") => Some(h.split('.').next().unwrap_or(h)),
        Some(h) if written("/etc/sysconfig/network") => Some(h.as_str()),
        _ => None,
    };
    if let Some(h) = name {
        match runner.run("hostname", &[h]) {
            Ok((true, _)) => {}
            Ok((false, _)) => bail!("hostname {h} failed; the name takes effect at the next boot"),
            Err(e) => bail!("cannot run hostname {h}: {e}; the name takes effect at the next boot"),
        }
    }
    Ok(())
}

/// Where the running configuration came from, for `mt-agent status`.
pub fn describe_source(record: &Utf8Path) -> String {
    match std::fs::read_to_string(record) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "configuration: build-time defaults (no OVF environment applied)".to_string()
        }
        Err(e) => format!("configuration: unknown (cannot read {record}: {e})"),
        Ok(text) => match serde_json::from_str::<Record>(&text) {
            Ok(r) => format!(
                "configuration: OVF environment via {} (blake3 {})",
                r.transport,
                &r.blake3[..r.blake3.len().min(16)]
            ),
            Err(e) => format!("configuration: unknown ({record} is damaged: {e})"),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// The `mt-agent ovfenv` verbs

/// The document from `--from FILE`, or from the transports.
pub fn load(from: Option<&Utf8Path>, runner: &dyn Runner) -> Result<Option<(Transport, String)>> {
    match from {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the OVF environment {path}"))?;
            Ok(Some((
                Transport::File {
                    path: path.to_string(),
                },
                text,
            )))
        }
        None => read_environment(runner),
    }
}

/// `mt-agent ovfenv show`: the validated configuration, the passphrase masked.
pub fn show(from: Option<&Utf8Path>, runner: &dyn Runner) -> Result<String> {
    let Some((transport, text)) = load(from, runner)? else {
        return Ok(
            "no OVF environment: neither guestinfo.ovfEnv nor a CD-ROM with ovf-env.xml\n".into(),
        );
    };
    let env = parse(&text).with_context(|| format!("from {transport}"))?;
    let mut out = String::new();
    for w in &env.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out.push_str(&format!(
        "source: {transport} (blake3 {})\n",
        &env.hash[..16]
    ));
    let c = &env.config;
    let or = |v: Option<&str>| {
        v.map(str::to_string)
            .unwrap_or_else(|| "(not given: kept)".into())
    };
    out.push_str(&format!("hostname: {}\n", or(c.hostname.as_deref())));
    let ip = match &c.ip {
        None => "(not given: kept)".to_string(),
        Some(IpConfig::Dhcp) => "dhcp".to_string(),
        Some(IpConfig::Static {
            address,
            prefix,
            gateway,
        }) => format!("static {address}/{prefix} gateway {gateway}"),
    };
    out.push_str(&format!("network: {ip}\n"));
    let dns: Vec<String> = c.dns_servers.iter().map(|d| d.to_string()).collect();
    out.push_str(&format!("dns servers: {}\n", dns.join(", ")));
    out.push_str(&format!("dns search: {}\n", or(c.dns_search.as_deref())));
    out.push_str(&format!("ntp server: {}\n", or(c.ntp_server.as_deref())));
    out.push_str(&format!(
        "agent passphrase: {}\n",
        if c.agent_passphrase.is_some() {
            "(set)"
        } else {
            "(not given: kept)"
        }
    ));
    out.push_str(&format!(
        "root ssh key: {}\n",
        or(c.root_ssh_key.as_deref())
    ));
    Ok(out)
}

/// `mt-agent ovfenv apply`: reads, validates, then writes. Nothing is written unless the whole
/// environment is valid, so the previous configuration stays in force on any error.
pub fn run_apply(
    root: &Utf8Path,
    distro: Distro,
    from: Option<&Utf8Path>,
    runner: &dyn Runner,
) -> Result<String> {
    let Some((transport, text)) = load(from, runner)? else {
        return Ok("no OVF environment (no guestinfo.ovfEnv, no CD-ROM with ovf-env.xml): keeping the current configuration\n".into());
    };
    let env = parse(&text).with_context(|| {
        format!("the OVF environment from {transport} was not applied; the previous configuration stays in force")
    })?;
    let mut out = String::new();
    for w in &env.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    let changes = apply(root, distro, &env, &transport)?;
    if root == "/" {
        // The running system read its host name before first boot got here.
        activate(runner, &changes, &env.config)?;
    }
    if changes.is_empty() {
        out.push_str(&format!(
            "OVF environment from {transport}: unchanged, nothing written\n"
        ));
    } else {
        out.push_str(&format!("OVF environment from {transport} applied:\n"));
        for p in &changes.written {
            out.push_str(&format!("  wrote {p}\n"));
        }
    }
    Ok(out)
}
