//! Parsing and validating an OVF environment document: every problem is reported at once, each
//! naming the property (`mt.ip_address`) or the line and column. The rules are the contract's
//! (`mt_contract::rules`), the same the build applies to the definition; the wording is the
//! guest's, naming the properties.

use super::{DeployConfig, Environment, IpConfig, NS_OE, PRODUCT_CLASS};
use anyhow::{bail, Result};
use mt_contract::deploy::DeployProperty;
use mt_contract::network::NetworkMode;
use mt_contract::rules::{self, PassphraseProblem, SshKeyProblem, StaticProblem};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

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
    let mut values: BTreeMap<&str, String> = Default::default();
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
            .and_then(DeployProperty::from_key);
        match known {
            Some(p) => {
                if values.insert(p.key(), value.to_string()).is_some() {
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

fn validate(v: &BTreeMap<&str, String>, errors: &mut Vec<String>) -> DeployConfig {
    let mut err = |key: &str, msg: String| errors.push(format!("{PRODUCT_CLASS}.{key}: {msg}"));
    let get = |k: &str| v.get(k).map(|s| s.trim());

    let hostname = get("hostname").map(str::to_string);
    if let Some(h) = &hostname {
        if !rules::valid_hostname(h) {
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
                Ok(a) if rules::usable_unicast(a) => dns_servers.push(a),
                _ => err(
                    "dns_servers",
                    format!("entry {} {d:?} is not a unicast IPv4 address", i + 1),
                ),
            }
        }
        if dns_servers.len() > rules::MAX_DNS_SERVERS {
            err(
                "dns_servers",
                "at most 3 servers (the resolver uses no more)".into(),
            );
        }
    }
    let ip = match get("ip_mode").map(|m| (m, NetworkMode::from_name(m))) {
        None => None,
        Some((_, Some(NetworkMode::Dhcp))) => Some(IpConfig::Dhcp),
        Some((_, Some(NetworkMode::Static))) => {
            let address = ipv4("ip_address", &mut err);
            let gateway = ipv4("gateway", &mut err);
            let prefix = match get("ip_prefix") {
                None | Some("") => {
                    err("ip_prefix", "is required with ip_mode static".into());
                    None
                }
                Some(p) => match p.parse::<u8>() {
                    Ok(n) if rules::PREFIX_RANGE.contains(&n) => Some(n),
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
                    for problem in rules::check_static(address, prefix, gateway) {
                        match problem {
                            StaticProblem::UnusableAddress(subnet) => err(
                                "ip_address",
                                format!("{address} is not a usable host address in {subnet}"),
                            ),
                            StaticProblem::GatewayOutside(subnet) => err(
                                "gateway",
                                format!("{gateway} is outside the subnet {subnet} of the address"),
                            ),
                            StaticProblem::GatewayReserved => err(
                                "gateway",
                                format!(
                                    "{gateway} cannot be the network, broadcast or own address"
                                ),
                            ),
                        }
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
        Some((other, None)) => {
            err(
                "ip_mode",
                format!("{other:?} is neither \"dhcp\" nor \"static\""),
            );
            None
        }
    };
    let dns_search = get("dns_search").map(str::to_string);
    if let Some(s) = dns_search.as_deref().filter(|s| !s.is_empty()) {
        if !rules::valid_hostname(s) {
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
        if !rules::valid_host_or_ipv4(n) {
            err(
                "ntp_server",
                format!("{n:?} is neither an IPv4 address nor a host name"),
            );
        }
    }
    // The passphrase is taken as typed (no trimming): spaces may be part of it.
    let agent_passphrase = v.get("agent_passphrase").cloned();
    if let Some(Err(problem)) = agent_passphrase.as_deref().map(rules::check_passphrase) {
        let msg = match problem {
            PassphraseProblem::TooShort => "is shorter than 8 characters; set the property when deploying (no passphrase is built into the image)",
            PassphraseProblem::TooLong => "is longer than 1024 bytes",
            PassphraseProblem::LineBreak => "contains a line break or NUL (the passphrase file holds one line)",
        };
        err("agent_passphrase", msg.into());
    }
    let root_ssh_key = get("root_ssh_key").map(str::to_string);
    if let Some(k) = root_ssh_key.as_deref().filter(|k| !k.is_empty()) {
        match rules::check_ssh_public_key(k) {
            Ok(()) => {}
            Err(SshKeyProblem::LineBreak) => err(
                "root_ssh_key",
                "contains a line break: give one key on one line".into(),
            ),
            Err(why) => err("root_ssh_key", why.to_string()),
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
