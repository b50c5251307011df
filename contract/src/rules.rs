//! The value rules the build-time definition and the deploy-time OVF environment both apply:
//! one rule per kind of value, the stricter one wherever the two used to differ.
//!
//! Each check says *what* is wrong as data (a `bool` or a problem enum); the callers word the
//! message and name the field in their own terms (`network.gateway`, `mt.gateway`).

use std::fmt;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

/// The prefix lengths of a static network: /31 and /32 leave no room for a gateway, anything
/// wider than /8 is a mistake.
pub const PREFIX_RANGE: RangeInclusive<u8> = 8..=30;
/// The resolver uses no more than three name servers.
pub const MAX_DNS_SERVERS: usize = 3;
/// The enrolment passphrase: at least this many characters...
pub const PASSPHRASE_MIN_CHARS: usize = 8;
/// ...and at most this many bytes.
pub const PASSPHRASE_MAX_BYTES: usize = 1024;

/// A DNS host name: dot-separated labels of a-z 0-9 - (1-63 each, 253 in all), none starting or
/// ending with `-`. Upper case is refused so that the name is written one way everywhere.
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

/// An NTP server: an IPv4 address or a host name.
pub fn valid_host_or_ipv4(s: &str) -> bool {
    s.parse::<Ipv4Addr>().is_ok() || valid_hostname(s)
}

/// An address a host may use as its own or a peer's: not unspecified, loopback, multicast,
/// broadcast or reserved (240/4).
pub fn usable_unicast(a: Ipv4Addr) -> bool {
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || a.is_broadcast()
        || a.octets()[0] >= 240)
}

pub fn prefix_to_mask(prefix: u8) -> Ipv4Addr {
    let bits: u32 = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    Ipv4Addr::from(bits)
}

/// An IPv4 network: its network address and prefix length; prints as `10.1.2.0/23`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// The subnet `address` lies in.
    pub fn of(address: Ipv4Addr, prefix: u8) -> Subnet {
        let mask = u32::from(prefix_to_mask(prefix));
        Subnet {
            network: Ipv4Addr::from(u32::from(address) & mask),
            prefix,
        }
    }
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !u32::from(prefix_to_mask(self.prefix)))
    }
    pub fn contains(self, a: Ipv4Addr) -> bool {
        Subnet::of(a, self.prefix).network == self.network
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// What is wrong with a static address and gateway (the prefix is in [`PREFIX_RANGE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaticProblem {
    /// The address is not usable unicast, or is the subnet's network or broadcast address.
    UnusableAddress(Subnet),
    /// The gateway lies outside the address's subnet.
    GatewayOutside(Subnet),
    /// The gateway is the subnet's network or broadcast address, or the address itself.
    GatewayReserved,
}

/// Every problem of a static configuration, address first.
pub fn check_static(address: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Vec<StaticProblem> {
    let subnet = Subnet::of(address, prefix);
    let reserved = |a: Ipv4Addr| a == subnet.network || a == subnet.broadcast();
    let mut problems = Vec::new();
    if !usable_unicast(address) || reserved(address) {
        problems.push(StaticProblem::UnusableAddress(subnet));
    }
    if !subnet.contains(gateway) {
        problems.push(StaticProblem::GatewayOutside(subnet));
    } else if reserved(gateway) || gateway == address {
        problems.push(StaticProblem::GatewayReserved);
    }
    problems
}

/// The public key types OpenSSH accepts in `authorized_keys`.
pub const SSH_KEY_TYPES: [&str; 7] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// What is wrong with an SSH public key line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshKeyProblem {
    /// The first word (given) is not a known key type.
    UnknownType(String),
    BodyNotBase64,
    /// A line break: `authorized_keys` holds one key per line.
    LineBreak,
    /// A quote, backslash, backtick or `$`: the key is written into shell and kickstart text.
    Unquotable,
}

impl fmt::Display for SshKeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SshKeyProblem::UnknownType(kind) => write!(
                f,
                "starts with {kind:?}, not a public key type ({})",
                SSH_KEY_TYPES.join(", ")
            ),
            SshKeyProblem::BodyNotBase64 => f.write_str("the key body is not base64"),
            SshKeyProblem::LineBreak | SshKeyProblem::Unquotable => {
                f.write_str("contains a newline, quote, backslash, backtick or $")
            }
        }
    }
}

/// An OpenSSH public key line: `TYPE BASE64 [comment]`, on one line, without characters that
/// would need quoting in a shell or kickstart (the definition's rule, the stricter of the two).
pub fn check_ssh_public_key(key: &str) -> Result<(), SshKeyProblem> {
    let mut words = key.split_ascii_whitespace();
    let kind = words.next().unwrap_or("");
    if !SSH_KEY_TYPES.contains(&kind) {
        return Err(SshKeyProblem::UnknownType(kind.to_string()));
    }
    let body = words.next().unwrap_or("");
    if body.len() < 16
        || !body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
    {
        return Err(SshKeyProblem::BodyNotBase64);
    }
    if key.contains(['\n', '\r']) {
        return Err(SshKeyProblem::LineBreak);
    }
    if key.contains(['\'', '"', '\\', '`', '$']) {
        return Err(SshKeyProblem::Unquotable);
    }
    Ok(())
}

/// What is wrong with an enrolment passphrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassphraseProblem {
    TooShort,
    TooLong,
    /// A line break or NUL: the passphrase file holds one line.
    LineBreak,
}

/// The passphrase is taken as typed: spaces may be part of it.
pub fn check_passphrase(p: &str) -> Result<(), PassphraseProblem> {
    if p.chars().count() < PASSPHRASE_MIN_CHARS {
        Err(PassphraseProblem::TooShort)
    } else if p.len() > PASSPHRASE_MAX_BYTES {
        Err(PassphraseProblem::TooLong)
    } else if p.contains(['\n', '\r', '\0']) {
        Err(PassphraseProblem::LineBreak)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHg7yGk2XbW1Z0m9v0sR2nq4t2s3F0aQ7wJk5l9cM1xR ops@dr";

    #[test]
    fn host_names_are_lower_case_dns_labels() {
        for good in ["mt", "mt-appliance.localdomain", "a1.b-2.example"] {
            assert!(valid_hostname(good), "{good}");
        }
        let long_label = "a".repeat(64);
        for bad in [
            "",
            "Bad_Host",
            "UPPER",
            "-a",
            "a-",
            "a..b",
            ".a",
            &long_label,
        ] {
            assert!(!valid_hostname(bad), "{bad}");
        }
        assert!(valid_host_or_ipv4("10.0.0.1") && valid_host_or_ipv4("pool.ntp.org"));
        assert!(!valid_host_or_ipv4("ntp server"));
    }

    #[test]
    fn only_unicast_addresses_are_usable() {
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
        ] {
            assert!(!usable_unicast(bad.parse().unwrap()), "{bad}");
        }
        assert!(usable_unicast(Ipv4Addr::new(192, 168, 10, 20)));
    }

    #[test]
    fn prefixes_become_netmasks() {
        assert_eq!(prefix_to_mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(prefix_to_mask(20), Ipv4Addr::new(255, 255, 240, 0));
        assert_eq!(prefix_to_mask(30), Ipv4Addr::new(255, 255, 255, 252));
        assert_eq!(prefix_to_mask(0), Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn a_static_gateway_is_a_host_of_the_address_subnet() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert!(check_static(ip("10.1.2.3"), 23, ip("10.1.3.254")).is_empty());
        let net = Subnet::of(ip("10.1.2.3"), 23);
        assert_eq!(net.to_string(), "10.1.2.0/23");
        assert_eq!(net.broadcast(), ip("10.1.3.255"));
        assert_eq!(
            check_static(ip("10.1.2.0"), 23, ip("10.1.4.1")),
            [
                StaticProblem::UnusableAddress(net),
                StaticProblem::GatewayOutside(net)
            ]
        );
        for gw in ["10.1.2.0", "10.1.3.255", "10.1.2.3"] {
            assert_eq!(
                check_static(ip("10.1.2.3"), 23, ip(gw)),
                [StaticProblem::GatewayReserved],
                "{gw}"
            );
        }
    }

    #[test]
    fn ssh_keys_are_one_line_without_shell_characters() {
        assert_eq!(check_ssh_public_key(KEY), Ok(()));
        assert!(matches!(
            check_ssh_public_key("ssh-dss AAAAB3NzaC1kc3MAAACBAP"),
            Err(SshKeyProblem::UnknownType(_))
        ));
        assert_eq!(
            check_ssh_public_key("ssh-ed25519 short"),
            Err(SshKeyProblem::BodyNotBase64)
        );
        assert_eq!(
            check_ssh_public_key(&format!("{KEY}\nssh-rsa AAAA")),
            Err(SshKeyProblem::LineBreak)
        );
        for c in ["'", "\"", "\\", "`", "$"] {
            assert_eq!(
                check_ssh_public_key(&format!("{KEY}{c}x")),
                Err(SshKeyProblem::Unquotable),
                "{c}"
            );
        }
    }

    #[test]
    fn passphrases_are_one_line_of_8_characters_to_1024_bytes() {
        assert_eq!(check_passphrase("correct horse"), Ok(()));
        assert_eq!(check_passphrase("short"), Err(PassphraseProblem::TooShort));
        assert_eq!(
            check_passphrase(&"x".repeat(1025)),
            Err(PassphraseProblem::TooLong)
        );
        assert_eq!(
            check_passphrase("two\nlines!"),
            Err(PassphraseProblem::LineBreak)
        );
    }
}
