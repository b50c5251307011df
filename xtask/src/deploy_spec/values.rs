//! The deploy-time property values of `deploy-spec`: each property's default from the definition
//! (as the OVF declares it), the `--set` overrides, and their checks: the guest's own validator
//! (`mt_agent::guest::ovfenv::parse`) on the OVF environment vSphere will deliver, then the OVF's
//! declaration of each property (type and qualifiers), which vSphere and ovftool check at import
//! even for values the guest ignores (the static address with `ip_mode` dhcp).

use anyhow::{bail, Result};
use appliance::definition::{DeployProperty, DeployType, DEPLOY_PRODUCT_CLASS};
use appliance::Definition;
use mt_agent::guest::ovfenv;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The key of a property in the OVF environment (and govc's PropertyMapping): `<class>.<key>`.
pub(super) fn env_key(p: DeployProperty) -> String {
    format!("{DEPLOY_PRODUCT_CLASS}.{}", p.key())
}

/// The property a `--set` key names: `hostname` or `mt.hostname`; the passphrase is refused.
fn resolve_key(key: &str) -> Result<DeployProperty> {
    let bare = key
        .strip_prefix(DEPLOY_PRODUCT_CLASS)
        .and_then(|k| k.strip_prefix('.'))
        .unwrap_or(key);
    match DeployProperty::from_key(bare) {
        Some(DeployProperty::AgentPassphrase) => bail!(
            "--set {key}: the passphrase is never given on the command line (it would stay in \
             the shell history and show in the process list); use --passphrase-file FILE, or \
             leave both out to be asked for it on the terminal"
        ),
        Some(p) => Ok(p),
        None => {
            let known: Vec<&str> = DeployProperty::ALL
                .into_iter()
                .filter(|p| *p != DeployProperty::AgentPassphrase)
                .map(DeployProperty::key)
                .collect();
            bail!(
                "--set {key}: the OVF offers no such property; the keys are {} (and \
                 agent_passphrase, through --passphrase-file or the prompt)",
                known.join(", ")
            )
        }
    }
}

/// Every property but the passphrase: the definition's default (as the OVF declares it), then
/// the `--set` overrides. A key set twice is refused rather than one of them silently winning.
pub(super) fn property_values(
    def: &Definition,
    sets: &[(String, String)],
) -> Result<BTreeMap<DeployProperty, String>> {
    let mut values: BTreeMap<DeployProperty, String> = DeployProperty::ALL
        .into_iter()
        .filter(|p| *p != DeployProperty::AgentPassphrase)
        .map(|p| (p, p.default_value(def)))
        .collect();
    let mut given = BTreeMap::new();
    for (key, value) in sets {
        let p = resolve_key(key)?;
        if let Some(before) = given.insert(p, key) {
            bail!(
                "--set {key}: {} is set twice ({before} and {key})",
                env_key(p)
            );
        }
        values.insert(p, value.clone());
    }
    Ok(values)
}

/// Checks the values as the appliance checks its OVF environment at first boot (the guest's one
/// validator, on the document vSphere will deliver), and against the OVF's declaration of each
/// property, which vSphere and ovftool check at import even where the guest ignores the value.
pub(super) fn check_values(values: &BTreeMap<DeployProperty, String>) -> Result<()> {
    // XML 1.0 cannot carry these at all, escaped or not.
    let unsendable: Vec<String> = values
        .iter()
        .filter_map(|(p, v)| {
            let c = v
                .chars()
                .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))?;
            Some(format!(
                "  - {}: contains the control character U+{:04X}, which an OVF environment \
                 cannot carry",
                env_key(*p),
                u32::from(c)
            ))
        })
        .collect();
    if !unsendable.is_empty() {
        bail!("the values cannot be delivered:\n{}", unsendable.join("\n"));
    }
    let guest = ovfenv::parse(&environment_document(values))
        .err()
        .map(|e| format!("{e:#}"));
    let guest_text = guest.as_deref().unwrap_or("");
    let declared: Vec<String> = values
        .iter()
        .filter_map(|(p, v)| Some((env_key(*p), declaration_problem(*p, v)?)))
        // A value the guest already refused is reported once, in the guest's words.
        .filter(|(key, _)| !guest_text.contains(&format!("{key}:")))
        .map(|(key, why)| format!("  - {key}: {why}"))
        .collect();
    let mut report: Vec<String> = guest.into_iter().collect();
    if !declared.is_empty() {
        report.push(format!(
            "the values do not fit the OVF's declaration of the properties (vSphere and ovftool \
             check it at import, whatever ip_mode is):\n{}",
            declared.join("\n")
        ));
    }
    if !report.is_empty() {
        bail!("{}", report.join("\n"));
    }
    Ok(())
}

/// The OVF environment (DSP0243 section 11) vSphere builds from these values: what the guest
/// parses at first boot.
fn environment_document(values: &BTreeMap<DeployProperty, String>) -> String {
    let properties: Vec<(String, String)> = values
        .iter()
        .map(|(p, v)| (env_key(*p), v.clone()))
        .collect();
    appliance::ovf::render_environment(None, &properties)
}

/// One CIM qualifier of a property's declaration (`ovf:qualifiers`, DSP0243 9.5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Qualifier {
    MinLen(usize),
    MaxLen(usize),
    MinValue(i64),
    MaxValue(i64),
    ValueMap(Vec<String>),
}

/// Reads the qualifiers the contract declares (`MinLen(1),MaxLen(253)`, `ValueMap{"a","b"}`).
fn parse_qualifiers(text: &str) -> Result<Vec<Qualifier>, String> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("ValueMap{") {
            let (list, after) = r
                .split_once('}')
                .ok_or_else(|| format!("unterminated ValueMap in {text:?}"))?;
            let items = list.split(',').map(|s| s.trim().trim_matches('"').into());
            out.push(Qualifier::ValueMap(items.collect()));
            rest = after;
        } else {
            let bad = || format!("cannot read the qualifiers {text:?}");
            let (name, r) = rest.split_once('(').ok_or_else(bad)?;
            let (n, after) = r.split_once(')').ok_or_else(bad)?;
            let n: i64 = n.trim().parse().map_err(|_| bad())?;
            let len = usize::try_from(n).map_err(|_| bad());
            out.push(match name.trim() {
                "MinLen" => Qualifier::MinLen(len?),
                "MaxLen" => Qualifier::MaxLen(len?),
                "MinValue" => Qualifier::MinValue(n),
                "MaxValue" => Qualifier::MaxValue(n),
                other => return Err(format!("unknown qualifier {other:?} in {text:?}")),
            });
            rest = after;
        }
        rest = rest.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(out)
}

/// What is wrong with `v` for the property's declared type and qualifiers, if anything.
fn declaration_problem(p: DeployProperty, v: &str) -> Option<String> {
    match p.value_type() {
        DeployType::Ipv4 if !v.is_empty() && v.parse::<Ipv4Addr>().is_err() => {
            return Some(format!(
                "{v:?} is not an IPv4 address (like 192.168.10.20): the OVF declares an IP field"
            ));
        }
        DeployType::Uint8 if v.parse::<u8>().is_err() => {
            return Some(format!(
                "{v:?} is not a whole number 0-255: the OVF declares uint8"
            ));
        }
        _ => {}
    }
    let quals = p.qualifiers().map(parse_qualifiers)?;
    let quals = quals.unwrap_or_else(|e| panic!("the contract's qualifiers of {p:?}: {e}"));
    let chars = v.chars().count();
    let number = v.parse::<i64>().ok();
    // A secret is never repeated in a message.
    let shown = if p.is_password() {
        "the value".to_string()
    } else {
        format!("{v:?}")
    };
    quals.into_iter().find_map(|q| match q {
        Qualifier::MinLen(n) if chars < n => Some(format!(
            "{shown} is shorter than {n} characters (MinLen({n}))"
        )),
        Qualifier::MaxLen(n) if chars > n => Some(format!(
            "{shown} is longer than {n} characters (MaxLen({n}))"
        )),
        Qualifier::MinValue(n) if number.is_some_and(|x| x < n) => {
            Some(format!("{v} is below {n} (MinValue({n}))"))
        }
        Qualifier::MaxValue(n) if number.is_some_and(|x| x > n) => {
            Some(format!("{v} is above {n} (MaxValue({n}))"))
        }
        Qualifier::ValueMap(allowed) if !allowed.iter().any(|a| a == v) => Some(format!(
            "{shown} is not one of {}",
            allowed
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Definition {
        crate::util::load_definition(None).unwrap().1
    }

    fn set(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_declared_qualifier_is_read() {
        for p in DeployProperty::ALL {
            if let Some(q) = p.qualifiers() {
                let parsed = parse_qualifiers(q).unwrap();
                assert!(!parsed.is_empty(), "{p:?}");
            }
        }
        assert_eq!(
            parse_qualifiers("ValueMap{\"dhcp\",\"static\"}").unwrap(),
            [Qualifier::ValueMap(vec!["dhcp".into(), "static".into()])]
        );
        assert_eq!(
            parse_qualifiers("MinValue(8),MaxValue(30)").unwrap(),
            [Qualifier::MinValue(8), Qualifier::MaxValue(30)]
        );
        assert!(parse_qualifiers("Colour(3)").is_err());
    }

    #[test]
    fn values_are_the_defaults_then_the_overrides() {
        let def = shipped();
        let v = property_values(&def, &set(&[("mt.hostname", "mt7.dr.example.com")])).unwrap();
        assert_eq!(v[&DeployProperty::Hostname], "mt7.dr.example.com");
        assert_eq!(
            v[&DeployProperty::NtpServer],
            DeployProperty::NtpServer.default_value(&def)
        );
        assert!(!v.contains_key(&DeployProperty::AgentPassphrase));
        assert_eq!(v.len(), DeployProperty::ALL.len() - 1);
        check_values(&v).unwrap();

        let e = property_values(&def, &set(&[("colour", "blue")])).unwrap_err();
        assert!(e.to_string().contains("hostname, ip_mode"), "{e}");
        let e = property_values(&def, &set(&[("agent_passphrase", "x")])).unwrap_err();
        assert!(e.to_string().contains("--passphrase-file"), "{e}");
        let twice = set(&[("hostname", "a"), ("mt.hostname", "b")]);
        assert!(property_values(&def, &twice).is_err());
    }

    #[test]
    fn the_guest_rules_and_the_declaration_apply() {
        let def = shipped();
        let check = |pairs: &[(&str, &str)]| {
            let v = property_values(&def, &set(pairs)).unwrap();
            check_values(&v).map_err(|e| format!("{e:#}"))
        };
        let e = check(&[("hostname", "-bad")]).unwrap_err();
        assert!(
            e.contains("mt.hostname") && e.contains("not a host name"),
            "{e}"
        );
        // With dhcp the guest ignores the address; the OVF's IP field still refuses it.
        let e = check(&[("ip_address", "300.1.1.1")]).unwrap_err();
        assert!(e.contains("mt.ip_address") && e.contains("IP field"), "{e}");
        let e = check(&[("ip_prefix", "31")]).unwrap_err();
        assert!(
            e.contains("mt.ip_prefix") && e.contains("MaxValue(30)"),
            "{e}"
        );
        // With static the guest's own rules apply, reported once.
        let stat = [
            ("ip_mode", "static"),
            ("ip_address", "10.1.2.3"),
            ("ip_prefix", "24"),
            ("gateway", "10.9.9.1"),
            ("dns_servers", "10.1.2.53"),
        ];
        let e = check(&stat).unwrap_err();
        assert!(
            e.contains("mt.gateway") && e.contains("outside the subnet"),
            "{e}"
        );
        let mut ok = stat;
        ok[3].1 = "10.1.2.1";
        check(&ok).unwrap();
        let e = check(&[("ip_mode", "static")]).unwrap_err();
        assert!(
            e.contains("mt.ip_address") && e.contains("mt.gateway"),
            "{e}"
        );
        let e = check(&[("ip_mode", "manual")]).unwrap_err();
        assert_eq!(e.matches("mt.ip_mode").count(), 1, "{e}");
        let e = check(&[("dns_search", "a\u{1}b")]).unwrap_err();
        assert!(e.contains("mt.dns_search") && e.contains("U+0001"), "{e}");
    }

    #[test]
    fn the_document_carries_every_value_exactly() {
        let def = shipped();
        let mut v = property_values(&def, &set(&[("hostname", "mt7.dr.example.com")])).unwrap();
        let pass = "fail&back <drill> \"7\" 'x'\ttab";
        v.insert(DeployProperty::AgentPassphrase, pass.into());
        let env = ovfenv::parse(&environment_document(&v)).unwrap();
        assert_eq!(env.config.agent_passphrase.as_deref(), Some(pass));
        assert_eq!(env.config.hostname.as_deref(), Some("mt7.dr.example.com"));
        assert!(env.warnings.is_empty(), "{:?}", env.warnings);
        // A line break reaches the guest's check as a line break, not a normalised space.
        v.insert(DeployProperty::AgentPassphrase, "two\nlines!".into());
        let e = format!("{:#}", check_values(&v).unwrap_err());
        assert!(
            e.contains("mt.agent_passphrase") && e.contains("line break"),
            "{e}"
        );
    }
}
