//! The deploy-time properties: the OVF ProductSection the build writes (`appliance::ovf`) and the
//! OVF environment the guest reads back (`mt-agent ovfenv`). Keys, types, qualifiers, labels and
//! how each default follows from the build-time values are declared here once.

use crate::network::NetworkMode;
use std::net::Ipv4Addr;

/// The OVF `ProductSection ovf:class` of the deploy-time properties. vSphere names each
/// property in the OVF environment `<class>.<key>`, so the guest reads `mt.hostname` etc.
pub const DEPLOY_PRODUCT_CLASS: &str = "mt";

/// The namespace of the OVF environment document (`oe:`, DSP0243 section 11) that carries the
/// properties' values to the guest.
pub const OVF_ENV_NAMESPACE: &str = "http://schemas.dmtf.org/ovf/environment/1";

/// The value type of a deploy-time property, as the OVF declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployType {
    /// `ovf:type="string"`.
    String,
    /// `ovf:type="string"` with `vmw:qualifiers="Ip"`: vSphere offers an IPv4 field.
    Ipv4,
    /// `ovf:type="uint8"`.
    Uint8,
}

/// One deploy-time property the OVF offers and `mt-agent ovfenv` applies in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeployProperty {
    Hostname,
    IpMode,
    IpAddress,
    IpPrefix,
    Gateway,
    DnsServers,
    DnsSearch,
    NtpServer,
    AgentPassphrase,
    RootSshKey,
}

/// Every property's key, in the ProductSection's order.
pub const DEPLOY_KEYS: [&str; DeployProperty::ALL.len()] = {
    let mut keys = [""; DeployProperty::ALL.len()];
    let mut i = 0;
    while i < keys.len() {
        keys[i] = DeployProperty::ALL[i].key();
        i += 1;
    }
    keys
};

/// The build-time values the defaults are derived from (the definition's `[network]`,
/// `[system]` and `[deploy]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployDefaults {
    pub hostname: String,
    pub mode: NetworkMode,
    pub address: Option<Ipv4Addr>,
    pub prefix: Option<u8>,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// Absent: the domain part of `hostname`.
    pub dns_search: Option<String>,
    pub ntp_server: String,
    /// The first build-time key, offered as the default of `root_ssh_key`.
    pub root_ssh_key: Option<String>,
}

/// What the build-time values of a property come from (the appliance definition).
pub trait DeploySource {
    fn deploy_defaults(&self) -> DeployDefaults;
}

impl DeploySource for DeployDefaults {
    fn deploy_defaults(&self) -> DeployDefaults {
        self.clone()
    }
}

impl DeployProperty {
    pub const ALL: [DeployProperty; 10] = [
        DeployProperty::Hostname,
        DeployProperty::IpMode,
        DeployProperty::IpAddress,
        DeployProperty::IpPrefix,
        DeployProperty::Gateway,
        DeployProperty::DnsServers,
        DeployProperty::DnsSearch,
        DeployProperty::NtpServer,
        DeployProperty::AgentPassphrase,
        DeployProperty::RootSshKey,
    ];

    /// `ovf:key`; the environment carries `<DEPLOY_PRODUCT_CLASS>.<key>`.
    pub const fn key(self) -> &'static str {
        match self {
            DeployProperty::Hostname => "hostname",
            DeployProperty::IpMode => "ip_mode",
            DeployProperty::IpAddress => "ip_address",
            DeployProperty::IpPrefix => "ip_prefix",
            DeployProperty::Gateway => "gateway",
            DeployProperty::DnsServers => "dns_servers",
            DeployProperty::DnsSearch => "dns_search",
            DeployProperty::NtpServer => "ntp_server",
            DeployProperty::AgentPassphrase => "agent_passphrase",
            DeployProperty::RootSshKey => "root_ssh_key",
        }
    }

    /// The property a key names (without the class).
    pub fn from_key(key: &str) -> Option<DeployProperty> {
        DeployProperty::ALL.into_iter().find(|p| p.key() == key)
    }

    pub fn value_type(self) -> DeployType {
        match self {
            DeployProperty::IpAddress | DeployProperty::Gateway => DeployType::Ipv4,
            DeployProperty::IpPrefix => DeployType::Uint8,
            _ => DeployType::String,
        }
    }

    /// DSP0243 `ovf:qualifiers`: CIM qualifiers, comma-separated as DSP8023 documents the
    /// attribute (vSphere turns them into field checks in the deploy wizard). The numbers are
    /// the guest's rules (`crate::rules`); a test holds them together.
    pub fn qualifiers(self) -> Option<&'static str> {
        match self {
            DeployProperty::Hostname => Some("MinLen(1),MaxLen(253)"),
            DeployProperty::IpMode => Some("ValueMap{\"dhcp\",\"static\"}"),
            DeployProperty::IpPrefix => Some("MinValue(8),MaxValue(30)"),
            DeployProperty::DnsServers => Some("MaxLen(47)"),
            DeployProperty::DnsSearch | DeployProperty::NtpServer => Some("MaxLen(253)"),
            DeployProperty::AgentPassphrase => Some("MinLen(8),MaxLen(1024)"),
            DeployProperty::RootSshKey => Some("MaxLen(8192)"),
            DeployProperty::IpAddress | DeployProperty::Gateway => None,
        }
    }

    /// Marked `ovf:password="true"`: vSphere masks it and asks twice.
    pub fn is_password(self) -> bool {
        self == DeployProperty::AgentPassphrase
    }

    pub fn label(self) -> &'static str {
        match self {
            DeployProperty::Hostname => "Host name",
            DeployProperty::IpMode => "IP address assignment",
            DeployProperty::IpAddress => "IPv4 address",
            DeployProperty::IpPrefix => "Network prefix length",
            DeployProperty::Gateway => "Default gateway",
            DeployProperty::DnsServers => "DNS servers",
            DeployProperty::DnsSearch => "DNS search domain",
            DeployProperty::NtpServer => "NTP server",
            DeployProperty::AgentPassphrase => "Agent enrolment passphrase",
            DeployProperty::RootSshKey => "SSH public key for root",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            DeployProperty::Hostname => "Fully qualified host name of the master target (lower-case letters, digits, - and .).",
            DeployProperty::IpMode => "dhcp, or static to use the address, prefix, gateway and DNS servers below.",
            DeployProperty::IpAddress => "The static IPv4 address (ignored with dhcp).",
            DeployProperty::IpPrefix => "The static network's prefix length, 8-30 (24 is 255.255.255.0).",
            DeployProperty::Gateway => "The default gateway, inside the static network (ignored with dhcp).",
            DeployProperty::DnsServers => "Up to 3 DNS server IPv4 addresses separated by commas (needed with static).",
            DeployProperty::DnsSearch => "The DNS search domain, e.g. example.com; empty for none.",
            DeployProperty::NtpServer => "Host name or IPv4 address of the NTP server; empty keeps the image's setting.",
            DeployProperty::AgentPassphrase => "The passphrase a sender must present to replicate to this master target (at least 8 characters). Stored readable only by root.",
            DeployProperty::RootSshKey => "An OpenSSH public key (ssh-ed25519 AAAA... comment) allowed to log in as root; empty for none.",
        }
    }

    /// The value the deploy wizard starts with, derived from the build-time values.
    /// The passphrase never has one: no secret is baked into the image.
    pub fn default_value<S: DeploySource + ?Sized>(self, source: &S) -> String {
        let d = source.deploy_defaults();
        let opt = |a: Option<Ipv4Addr>| a.map(|a| a.to_string()).unwrap_or_default();
        match self {
            DeployProperty::Hostname => d.hostname,
            DeployProperty::IpMode => d.mode.as_str().into(),
            DeployProperty::IpAddress => opt(d.address),
            DeployProperty::IpPrefix => d.prefix.unwrap_or(24).to_string(),
            DeployProperty::Gateway => opt(d.gateway),
            DeployProperty::DnsServers => d
                .dns
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(","),
            DeployProperty::DnsSearch => d.dns_search.unwrap_or_else(|| {
                d.hostname
                    .split_once('.')
                    .map(|(_, domain)| domain.to_string())
                    .unwrap_or_default()
            }),
            DeployProperty::NtpServer => d.ntp_server,
            DeployProperty::AgentPassphrase => String::new(),
            DeployProperty::RootSshKey => d.root_ssh_key.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules;

    #[test]
    fn keys_are_listed_once_in_order() {
        assert_eq!(DEPLOY_KEYS[0], "hostname");
        assert_eq!(DEPLOY_KEYS[9], "root_ssh_key");
        for p in DeployProperty::ALL {
            assert_eq!(DeployProperty::from_key(p.key()), Some(p));
        }
        assert_eq!(DeployProperty::from_key("colour"), None);
    }

    #[test]
    fn the_wizard_checks_match_the_guest_rules() {
        let (lo, hi) = (rules::PREFIX_RANGE.start(), rules::PREFIX_RANGE.end());
        assert_eq!(
            DeployProperty::IpPrefix.qualifiers(),
            Some(format!("MinValue({lo}),MaxValue({hi})").as_str())
        );
        assert_eq!(
            DeployProperty::AgentPassphrase.qualifiers(),
            Some(
                format!(
                    "MinLen({}),MaxLen({})",
                    rules::PASSPHRASE_MIN_CHARS,
                    rules::PASSPHRASE_MAX_BYTES
                )
                .as_str()
            )
        );
        // Three dotted quads and two commas.
        let most = rules::MAX_DNS_SERVERS * 15 + (rules::MAX_DNS_SERVERS - 1);
        assert_eq!(
            DeployProperty::DnsServers.qualifiers(),
            Some(format!("MaxLen({most})").as_str())
        );
    }

    #[test]
    fn defaults_follow_the_build_time_values() {
        let d = DeployDefaults {
            hostname: "mt7.dr.example.com".into(),
            mode: NetworkMode::Dhcp,
            address: None,
            prefix: None,
            gateway: None,
            dns: vec![],
            dns_search: None,
            ntp_server: "pool.ntp.org".into(),
            root_ssh_key: None,
        };
        assert_eq!(DeployProperty::IpMode.default_value(&d), "dhcp");
        assert_eq!(DeployProperty::IpPrefix.default_value(&d), "24");
        assert_eq!(
            DeployProperty::DnsSearch.default_value(&d),
            "dr.example.com"
        );
        assert_eq!(DeployProperty::RootSshKey.default_value(&d), "");
        assert_eq!(DeployProperty::AgentPassphrase.default_value(&d), "");
    }
}
