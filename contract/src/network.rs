//! The one renderer of the guest's network files: the image build writes them from the
//! definition, `mt-agent ovfenv` rewrites them from the deploy-time properties, and both get the
//! same bytes for the same values. Debian (`/etc/hostname`, `/etc/hosts`, ifupdown's
//! `/etc/network/interfaces`), el6 (`/etc/hosts`, `/etc/sysconfig/network`, `ifcfg-<device>`)
//! and `/etc/resolv.conf`. Pure text in, text out; which files to write is the caller's choice.

use crate::rules::prefix_to_mask;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

pub const HOSTNAME_PATH: &str = "/etc/hostname";
pub const HOSTS_PATH: &str = "/etc/hosts";
pub const RESOLV_CONF_PATH: &str = "/etc/resolv.conf";
/// ifupdown's configuration (Debian).
pub const INTERFACES_PATH: &str = "/etc/network/interfaces";
/// el6's host name and default gateway.
pub const EL6_NETWORK_PATH: &str = "/etc/sysconfig/network";
/// el6's per-interface files (`ifcfg-<device>`).
pub const IFCFG_DIR: &str = "/etc/sysconfig/network-scripts";

/// How the interface gets its address, as the definition and the OVF property name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    Dhcp,
    Static,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Dhcp => "dhcp",
            NetworkMode::Static => "static",
        }
    }
    pub fn from_name(name: &str) -> Option<NetworkMode> {
        match name {
            "dhcp" => Some(NetworkMode::Dhcp),
            "static" => Some(NetworkMode::Static),
            _ => None,
        }
    }
}

/// The appliance's one network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The kernel's name (`eth0`: the kernel command line turns predictable names off, and el6
    /// names the first NIC so).
    pub device: String,
    /// Brought up at boot (`auto`, `ONBOOT=yes`); otherwise only when it appears (hotplug).
    pub onboot: bool,
}

impl Default for Interface {
    fn default() -> Self {
        Interface {
            device: "eth0".into(),
            onboot: true,
        }
    }
}

/// The interface's IPv4 addressing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressing {
    Dhcp,
    Static {
        address: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
    },
}

/// The short name of a host name (its first label).
pub fn short_name(host_name: &str) -> &str {
    host_name.split('.').next().unwrap_or(host_name)
}

/// The names a host's own address carries in `/etc/hosts`: the FQDN first, then the short name.
fn host_names(host_name: &str) -> String {
    let short = short_name(host_name);
    if short == host_name {
        host_name.to_string()
    } else {
        format!("{host_name} {short}")
    }
}

/// Debian keeps the short name in `/etc/hostname` and the FQDN in `/etc/hosts`, so `hostname`
/// prints the short name and `hostname -f` the FQDN.
pub fn debian_hostname(host_name: &str) -> String {
    format!("{}\n", short_name(host_name))
}

pub fn debian_hosts(host_name: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{}\n\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
        host_names(host_name)
    )
}

/// ifupdown's whole configuration: a second `iface` stanza for the device in `interfaces.d`
/// would clash with this one.
pub fn debian_interfaces(interface: &Interface, addressing: &Addressing) -> String {
    let dev = &interface.device;
    let mut t =
        String::from("source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n");
    if interface.onboot {
        writeln!(t, "auto {dev}").expect("String");
    }
    writeln!(t, "allow-hotplug {dev}").expect("String");
    match addressing {
        Addressing::Dhcp => writeln!(t, "iface {dev} inet dhcp").expect("String"),
        Addressing::Static {
            address,
            prefix,
            gateway,
        } => {
            writeln!(t, "iface {dev} inet static").expect("String");
            writeln!(t, "    address {address}/{prefix}").expect("String");
            writeln!(t, "    gateway {gateway}").expect("String");
        }
    }
    t
}

/// The interface an ifupdown configuration brings up: the first `iface` that is not loopback,
/// `onboot` when an `auto` line names it. Reads what [`debian_interfaces`] writes.
pub fn debian_interface(interfaces: &str) -> Option<Interface> {
    let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let lines: Vec<Vec<String>> = interfaces.lines().map(words).collect();
    let device = lines.iter().find_map(|w| match w.as_slice() {
        [iface, dev, inet, ..] if iface == "iface" && inet == "inet" && dev != "lo" => {
            Some(dev.clone())
        }
        _ => None,
    })?;
    let onboot = lines
        .iter()
        .any(|w| w.first().is_some_and(|a| a == "auto") && w[1..].contains(&device));
    Some(Interface { device, onboot })
}

pub fn el6_hosts(host_name: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost localhost.localdomain {}\n::1\tlocalhost localhost.localdomain\n",
        host_names(host_name)
    )
}

/// `/etc/sysconfig/network`: el6 keeps the FQDN as the host name and the default gateway here.
pub fn el6_network(host_name: Option<&str>, addressing: Option<&Addressing>) -> String {
    let mut t = String::from("NETWORKING=yes\nNETWORKING_IPV6=no\n");
    if let Some(h) = host_name {
        writeln!(t, "HOSTNAME={h}").expect("String");
    }
    if let Some(Addressing::Static { gateway, .. }) = addressing {
        writeln!(t, "GATEWAY={gateway}").expect("String");
    }
    t
}

/// The path of an interface's ifcfg file.
pub fn el6_ifcfg_path(device: &str) -> String {
    format!("{IFCFG_DIR}/ifcfg-{device}")
}

/// An interface's ifcfg file; a static one carries its DNS servers (`PEERDNS=no`).
pub fn el6_ifcfg(interface: &Interface, addressing: &Addressing, dns: &[Ipv4Addr]) -> String {
    let mut t = format!(
        "DEVICE={}\nTYPE=Ethernet\nONBOOT={}\nNM_CONTROLLED=no\n",
        interface.device,
        if interface.onboot { "yes" } else { "no" }
    );
    match addressing {
        Addressing::Dhcp => t.push_str("BOOTPROTO=dhcp\n"),
        Addressing::Static {
            address,
            prefix,
            gateway,
        } => {
            write!(
                t,
                "BOOTPROTO=none\nIPADDR={address}\nPREFIX={prefix}\nNETMASK={}\nGATEWAY={gateway}\nPEERDNS=no\n",
                prefix_to_mask(*prefix)
            )
            .expect("String");
            for (i, d) in dns.iter().enumerate() {
                writeln!(t, "DNS{}={d}", i + 1).expect("String");
            }
        }
    }
    t
}

/// The interface an ifcfg file describes (`DEVICE=`, `ONBOOT=`; values may be quoted, as
/// anaconda and administrators write them). `None` without a `DEVICE=` line.
pub fn el6_interface(ifcfg: &str) -> Option<Interface> {
    let value = |key: &str| {
        ifcfg.lines().find_map(|l| {
            let v = l.trim().strip_prefix(key)?.strip_prefix('=')?;
            Some(v.trim().trim_matches(['"', '\'']).to_string())
        })
    };
    let device = value("DEVICE").filter(|d| !d.is_empty())?;
    // initscripts bring an interface up unless ONBOOT says no.
    let onboot = value("ONBOOT").is_none_or(|v| !v.eq_ignore_ascii_case("no"));
    Some(Interface { device, onboot })
}

/// `/etc/resolv.conf` for a static address (with DHCP the lease brings the resolver).
pub fn resolv_conf(search: Option<&str>, dns: &[Ipv4Addr]) -> String {
    let mut t = String::new();
    if let Some(s) = search.filter(|s| !s.is_empty()) {
        writeln!(t, "search {s}").expect("String");
    }
    for d in dns {
        writeln!(t, "nameserver {d}").expect("String");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> Addressing {
        Addressing::Static {
            address: Ipv4Addr::new(192, 168, 10, 20),
            prefix: 24,
            gateway: Ipv4Addr::new(192, 168, 10, 1),
        }
    }

    #[test]
    fn hosts_name_the_fqdn_then_the_short_name() {
        assert_eq!(debian_hostname("mt7.dr.example.com"), "mt7\n");
        assert!(debian_hosts("mt7.dr.example.com").contains("127.0.1.1\tmt7.dr.example.com mt7\n"));
        assert!(debian_hosts("mt7").contains("127.0.1.1\tmt7\n"));
        assert_eq!(
            el6_hosts("mt7.dr"),
            "127.0.0.1\tlocalhost localhost.localdomain mt7.dr mt7\n::1\tlocalhost localhost.localdomain\n"
        );
    }

    #[test]
    fn ifupdown_honours_device_and_onboot() {
        let ens = Interface {
            device: "ens192".into(),
            onboot: false,
        };
        let t = debian_interfaces(&ens, &fixed());
        assert!(!t.contains("auto ens192"), "{t}");
        assert!(t.contains(
            "allow-hotplug ens192\niface ens192 inet static\n    address 192.168.10.20/24\n    gateway 192.168.10.1\n"
        ));
        assert_eq!(debian_interface(&t), Some(ens));
        let eth0 = Interface::default();
        let t = debian_interfaces(&eth0, &Addressing::Dhcp);
        assert!(
            t.ends_with("auto eth0\nallow-hotplug eth0\niface eth0 inet dhcp\n"),
            "{t}"
        );
        assert_eq!(debian_interface(&t), Some(eth0));
        assert_eq!(debian_interface("auto lo\niface lo inet loopback\n"), None);
    }

    #[test]
    fn ifcfg_honours_device_and_onboot_and_reads_back() {
        let ens = Interface {
            device: "eth1".into(),
            onboot: false,
        };
        let t = el6_ifcfg(&ens, &fixed(), &[Ipv4Addr::new(192, 168, 10, 2)]);
        assert_eq!(
            t,
            "DEVICE=eth1\nTYPE=Ethernet\nONBOOT=no\nNM_CONTROLLED=no\nBOOTPROTO=none\nIPADDR=192.168.10.20\nPREFIX=24\nNETMASK=255.255.255.0\nGATEWAY=192.168.10.1\nPEERDNS=no\nDNS1=192.168.10.2\n"
        );
        assert_eq!(el6_interface(&t), Some(ens));
        assert_eq!(
            el6_interface("DEVICE=\"eth0\"\nBOOTPROTO=dhcp\n"),
            Some(Interface::default())
        );
        assert_eq!(el6_interface("BOOTPROTO=dhcp\n"), None);
        assert_eq!(
            el6_ifcfg_path("eth0"),
            "/etc/sysconfig/network-scripts/ifcfg-eth0"
        );
    }

    #[test]
    fn resolv_conf_has_the_search_domain_only_when_given() {
        let dns = [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)];
        assert_eq!(
            resolv_conf(None, &dns),
            "nameserver 10.0.0.2\nnameserver 10.0.0.3\n"
        );
        assert_eq!(
            resolv_conf(Some("dr.example.com"), &dns[..1]),
            "search dr.example.com\nnameserver 10.0.0.2\n"
        );
        assert_eq!(
            el6_network(Some("mt7.dr"), Some(&fixed())),
            "NETWORKING=yes\nNETWORKING_IPV6=no\nHOSTNAME=mt7.dr\nGATEWAY=192.168.10.1\n"
        );
    }
}
