//! Applying a validated environment to a root: the distribution's files it determines (rendered
//! by the contract's network renderer, so they match what the image build writes), each written
//! only where its contents or mode differ, through a temporary file and a rename; the record of
//! what was applied comes last. `activate` makes a new host name the running one.

use super::{DeployConfig, Distro, Environment, IpConfig, Runner, Transport, RECORD_PATH};
use crate::atomic_file::write_atomic;
use anyhow::{bail, Context, Result};
use camino::Utf8Path;
use mt_contract::network::{self, Interface};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;

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

const MANAGED_BEGIN: &str = "# BEGIN mt-agent ovfenv (deploy-time root_ssh_key)";
const MANAGED_END: &str = "# END mt-agent ovfenv";

/// The interface the image was built with, from the network file the build (or an earlier
/// apply) wrote: the deploy-time properties carry no device and no `onboot`, so those stay.
/// Without a readable file: `eth0`, brought up at boot.
fn built_interface(root: &Utf8Path, distro: Distro) -> Interface {
    let read = |p: &str| std::fs::read_to_string(root.join(p.trim_start_matches('/'))).ok();
    let found = match distro {
        Distro::Debian12 => read(network::INTERFACES_PATH)
            .as_deref()
            .and_then(network::debian_interface),
        Distro::El6 => {
            let dir = root.join(network::IFCFG_DIR.trim_start_matches('/'));
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("ifcfg-") && n != "ifcfg-lo")
                .collect();
            names.sort();
            // Only a file named after the device it configures, as initscripts name them: a
            // copy such as `ifcfg-eth0.bak` or `ifcfg-eth0~` says DEVICE=eth0 too.
            names.iter().find_map(|n| {
                let text = std::fs::read_to_string(dir.join(n)).ok()?;
                network::el6_interface(&text).filter(|i| *n == format!("ifcfg-{}", i.device))
            })
        }
    };
    found.unwrap_or_default()
}

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
        match distro {
            Distro::Debian12 => {
                file(network::HOSTNAME_PATH, network::debian_hostname(h), 0o644);
                file(network::HOSTS_PATH, network::debian_hosts(h), 0o644);
            }
            Distro::El6 => file(network::HOSTS_PATH, network::el6_hosts(h), 0o644),
        }
    }
    if distro == Distro::El6 && (c.hostname.is_some() || c.ip.is_some()) {
        file(
            network::EL6_NETWORK_PATH,
            network::el6_network(c.hostname.as_deref(), c.ip.as_ref()),
            0o644,
        );
    }
    if let Some(ip) = &c.ip {
        let interface = built_interface(root, distro);
        match distro {
            Distro::Debian12 => file(
                network::INTERFACES_PATH,
                network::debian_interfaces(&interface, ip),
                0o644,
            ),
            Distro::El6 => file(
                &network::el6_ifcfg_path(&interface.device),
                network::el6_ifcfg(&interface, ip, &c.dns_servers),
                0o644,
            ),
        }
    }
    // With DHCP the lease brings the resolver; a static address needs it written.
    if matches!(c.ip, Some(IpConfig::Static { .. })) {
        file(
            network::RESOLV_CONF_PATH,
            network::resolv_conf(c.dns_search.as_deref(), &c.dns_servers),
            0o644,
        );
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
        file(mt_contract::guest::PASSPHRASE_PATH, format!("{p}\n"), 0o600);
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
        Some(h) if written(network::HOSTNAME_PATH) => Some(network::short_name(h)),
        Some(h) if written(network::EL6_NETWORK_PATH) => Some(h.as_str()),
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
