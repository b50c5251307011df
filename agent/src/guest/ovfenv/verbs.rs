//! `mt-agent ovfenv show|apply` and the `status` line: reading the values (a file or the
//! transports), reporting what they say and where they came from (the passphrase masked) and
//! applying them.

use super::{
    activate, apply, read_environment, Content, Distro, IpConfig, Record, Runner, Transport,
    GUESTINFO_PREFIX, PRODUCT_CLASS,
};
use anyhow::{Context, Result};
use camino::Utf8Path;

/// The document from `--from FILE`, or what the transports deliver.
pub fn load(from: Option<&Utf8Path>, runner: &dyn Runner) -> Result<Option<(Transport, Content)>> {
    match from {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the OVF environment {path}"))?;
            Ok(Some((
                Transport::File {
                    path: path.to_string(),
                },
                Content::Document(text),
            )))
        }
        None => read_environment(runner),
    }
}

/// What none of the three transports carries, for the messages that say so.
fn nothing_found() -> String {
    format!(
        "no OVF environment and no guest variable: no guestinfo.ovfEnv, no CD-ROM with ovf-env.xml, no {GUESTINFO_PREFIX}{PRODUCT_CLASS}.* variable"
    )
}

/// How messages name what a transport delivered: an OVF environment from its transport, or
/// the guest variables (whose transport's name says what they are).
fn delivered(transport: &Transport) -> String {
    if transport.carries_document() {
        format!("OVF environment from {transport}")
    } else {
        transport.to_string()
    }
}

/// `mt-agent ovfenv show`: the validated configuration and its source, the passphrase masked.
pub fn show(from: Option<&Utf8Path>, runner: &dyn Runner) -> Result<String> {
    let Some((transport, content)) = load(from, runner)? else {
        return Ok(format!("{}\n", nothing_found()));
    };
    let env = content
        .parse()
        .with_context(|| format!("from {transport}"))?;
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
    let Some((transport, content)) = load(from, runner)? else {
        return Ok(format!(
            "{}: keeping the current configuration\n",
            nothing_found()
        ));
    };
    let env = content.parse().with_context(|| {
        let what = if transport.carries_document() {
            format!("the OVF environment from {transport} was")
        } else {
            format!("the {transport} were")
        };
        format!("{what} not applied; the previous configuration stays in force")
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
            "{}: unchanged, nothing written\n",
            delivered(&transport)
        ));
    } else {
        out.push_str(&format!("{} applied:\n", delivered(&transport)));
        for p in &changes.written {
            out.push_str(&format!("  wrote {p}\n"));
        }
    }
    Ok(out)
}

/// Where the running configuration came from, for `mt-agent status`: the OVF environment and
/// its transport, the guest variables, or the build-time defaults.
pub fn describe_source(record: &Utf8Path) -> String {
    match std::fs::read_to_string(record) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "configuration: build-time defaults (no OVF environment applied)".to_string()
        }
        Err(e) => format!("configuration: unknown (cannot read {record}: {e})"),
        Ok(text) => match serde_json::from_str::<Record>(&text) {
            Ok(r) => format!(
                "configuration: {} (blake3 {})",
                if r.transport.carries_document() {
                    format!("OVF environment via {}", r.transport)
                } else {
                    r.transport.to_string()
                },
                &r.blake3[..r.blake3.len().min(16)]
            ),
            Err(e) => format!("configuration: unknown ({record} is damaged: {e})"),
        },
    }
}
