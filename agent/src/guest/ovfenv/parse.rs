//! Parsing and validating an OVF environment document or a set of guest variables: every problem
//! is reported at once, each naming the property as it was set (`mt.ip_address` in a document,
//! `guestinfo.mt.ip_address` as a guest variable) or the line and column. Both go through one
//! validator ([`environment`]), so a value means the same whichever way it arrived. The rules are
//! the contract's (`mt_contract::rules`), the same the build applies to the definition; the
//! wording is the guest's, naming the properties.

use super::{DeployConfig, Environment, IpConfig, GUESTINFO_PREFIX, NS_OE, PRODUCT_CLASS};
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
    environment(
        Origin::Document,
        &values,
        errors,
        warnings,
        blake3::hash(xml.as_bytes()).to_hex().to_string(),
    )
}

/// Validates the guest variables that are set (by property key, without class and prefix) as
/// an OVF environment carrying the same properties would be. Every problem is reported at once,
/// each naming the guest variable (`guestinfo.mt.ip_address`).
pub fn from_guest_variables(values: &BTreeMap<&str, String>) -> Result<Environment> {
    let mut known = BTreeMap::new();
    let mut warnings = Vec::new();
    for (key, value) in values {
        match DeployProperty::from_key(key) {
            Some(p) => {
                known.insert(p.key(), value.clone());
            }
            None => warnings.push(format!(
                "ignoring unknown guest variable {}",
                Origin::GuestVariables.name(key)
            )),
        }
    }
    let hash = variables_hash(&known);
    environment(Origin::GuestVariables, &known, Vec::new(), warnings, hash)
}

/// BLAKE3 of the variables sorted by name, each name and value length-prefixed so no two sets
/// encode alike: the same set gives the same record, and an unchanged set writes nothing.
fn variables_hash(values: &BTreeMap<&str, String>) -> String {
    let mut h = blake3::Hasher::new();
    for (key, value) in values {
        for part in [
            Origin::GuestVariables.name(key).as_bytes(),
            value.as_bytes(),
        ] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
    }
    h.finalize().to_hex().to_string()
}

/// How the values arrived, which decides how a problem names its property.
#[derive(Clone, Copy)]
enum Origin {
    /// An OVF environment: `oe:key="mt.hostname"`.
    Document,
    /// Guest variables: `guestinfo.mt.hostname`.
    GuestVariables,
}

impl Origin {
    fn name(self, key: &str) -> String {
        match self {
            Origin::Document => format!("{PRODUCT_CLASS}.{key}"),
            Origin::GuestVariables => format!("{GUESTINFO_PREFIX}{PRODUCT_CLASS}.{key}"),
        }
    }

    fn invalid(self) -> &'static str {
        match self {
            Origin::Document => "the OVF environment is invalid",
            Origin::GuestVariables => "the guest variables are invalid",
        }
    }
}

/// The one path from property values (by key, without class) to an [`Environment`]: all or
/// nothing, so the caller never sees a configuration with a problem in it. `errors` are the
/// problems found before (in the document's structure).
fn environment(
    origin: Origin,
    values: &BTreeMap<&str, String>,
    mut errors: Vec<String>,
    warnings: Vec<String>,
    hash: String,
) -> Result<Environment> {
    let config = validate(origin, values, &mut errors);
    if !errors.is_empty() {
        bail!("{}:\n  - {}", origin.invalid(), errors.join("\n  - "));
    }
    Ok(Environment {
        config,
        warnings,
        hash,
    })
}

fn validate(origin: Origin, v: &BTreeMap<&str, String>, errors: &mut Vec<String>) -> DeployConfig {
    let mut err = |key: &str, msg: String| errors.push(format!("{}: {msg}", origin.name(key)));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&'static str, &str)]) -> BTreeMap<&'static str, String> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn guest_variables_and_a_document_with_the_same_values_give_the_same_configuration() {
        let pairs = [
            ("hostname", "mt01.example.com"),
            ("ip_mode", "static"),
            ("ip_address", "10.1.2.3"),
            ("ip_prefix", "24"),
            ("gateway", "10.1.2.1"),
            ("dns_servers", "10.1.2.2"),
        ];
        let mut xml =
            format!("<Environment xmlns=\"{NS_OE}\" xmlns:oe=\"{NS_OE}\"><PropertySection>");
        for (k, v) in pairs {
            xml.push_str(&format!(
                "<Property oe:key=\"{PRODUCT_CLASS}.{k}\" oe:value=\"{v}\"/>"
            ));
        }
        xml.push_str("</PropertySection></Environment>");
        let document = parse(&xml).unwrap();
        let variables = from_guest_variables(&vars(&pairs)).unwrap();
        assert_eq!(variables.config, document.config);
        assert_ne!(variables.hash, document.hash);
    }

    #[test]
    fn every_invalid_guest_variable_is_named_as_it_was_set() {
        let err = from_guest_variables(&vars(&[
            ("hostname", "Bad_Host"),
            ("ip_mode", "static"),
            ("ip_address", "10.1.2.300"),
            ("ip_prefix", "24"),
            ("gateway", "10.1.2.1"),
            ("dns_servers", "10.1.2.2"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("the guest variables are invalid:"), "{err}");
        let host = format!("{GUESTINFO_PREFIX}{PRODUCT_CLASS}.hostname: \"Bad_Host\"");
        let ip = format!("{GUESTINFO_PREFIX}{PRODUCT_CLASS}.ip_address: \"10.1.2.300\" is not");
        assert!(err.contains(&host) && err.contains(&ip), "{err}");
    }

    #[test]
    fn the_hash_of_guest_variables_changes_with_any_value_and_only_then() {
        let hash =
            |pairs: &[(&'static str, &str)]| from_guest_variables(&vars(pairs)).unwrap().hash;
        let base = hash(&[("hostname", "mt01"), ("ntp_server", "ntp1")]);
        assert_eq!(base, hash(&[("hostname", "mt01"), ("ntp_server", "ntp1")]));
        assert_ne!(base, hash(&[("hostname", "mt02"), ("ntp_server", "ntp1")]));
        // An empty value (root_ssh_key="" removes the key) is not the same as an unset one.
        assert_ne!(
            base,
            hash(&[
                ("hostname", "mt01"),
                ("ntp_server", "ntp1"),
                ("root_ssh_key", "")
            ])
        );
    }

    #[test]
    fn an_unknown_guest_variable_is_a_warning() {
        let env = from_guest_variables(&vars(&[("hostname", "mt01"), ("colour", "blue")])).unwrap();
        assert_eq!(
            env.warnings,
            [format!(
                "ignoring unknown guest variable {GUESTINFO_PREFIX}{PRODUCT_CLASS}.colour"
            )]
        );
        assert_eq!(env.config.hostname.as_deref(), Some("mt01"));
    }
}
