//! Deploy-time configuration: the values of the ProductSection properties (class `mt`), from the
//! OVF environment (`ovf-env.xml`, DSP0243 section 11) vSphere's deploy wizard fills in, or,
//! on a standalone ESXi host that ignores the properties, from guest variables of the same keys.
//!
//! Reading finds the values on whichever transport is present, in this order: VMware tools'
//! `guestinfo.ovfEnv`, a CD-ROM carrying `ovf-env.xml`, then the guest variables
//! `guestinfo.mt.<key>` (VM advanced settings), all through an injectable command runner
//! (`transport`). An OVF environment comes first because it is what vCenter delivers, complete
//! (every property, defaults included); the guest variables are the fallback of a host that
//! delivers none. Parsing and validation (`parse`, one validator for both) happen completely
//! before anything is written, so a malformed or invalid set leaves the previous configuration in
//! place. `apply` writes only files whose contents differ (each atomically), so an unchanged set
//! changes nothing; `verbs` are `mt-agent ovfenv show|apply` and the `status` line.
//! The property keys and value rules are the contract's (`mt_contract::deploy`, `::rules`), the
//! network files its renderer's (`mt_contract::network`), shared with the image build.
//! This module must not restart services or bring interfaces up: first boot orders itself
//! before networking, so the files it writes are what the network scripts read.

mod apply;
mod parse;
mod transport;
mod verbs;

pub use apply::{activate, apply, Changes, Record};
pub use parse::{from_guest_variables, parse};
pub use transport::{guest_variable, read_environment, Runner, SystemRunner};
pub use verbs::{describe_source, load, run_apply, show};

use mt_contract::deploy::DeployProperty;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// The ProductSection class of the appliance's properties: the environment calls them `mt.<key>`.
pub use mt_contract::deploy::DEPLOY_PRODUCT_CLASS as PRODUCT_CLASS;
/// The OVF environment namespace (`oe:`).
pub use mt_contract::deploy::OVF_ENV_NAMESPACE as NS_OE;
/// What was last applied (transport and document hash): `mt-agent status` reads it.
pub use mt_contract::guest::OVF_ENV_RECORD_PATH as RECORD_PATH;
/// The name of the document on the `iso` transport's CD-ROM.
pub const ISO_FILE_NAME: &str = "ovf-env.xml";
/// The property keys, as the ProductSection declares them.
pub use mt_contract::deploy::DEPLOY_KEYS as KEYS;

/// The guest distribution whose configuration files `apply` writes (the one `setup` knows).
pub use crate::guest::setup::Distro;

/// The interface's addressing from `mt.ip_mode` and the static properties.
pub use mt_contract::network::Addressing as IpConfig;

/// The prefix VMware tools gives a guest variable (a VM advanced setting the guest may read).
pub const GUESTINFO_PREFIX: &str = "guestinfo.";

/// How the values reached the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// VMware tools: `vmtoolsd --cmd "info-get guestinfo.ovfEnv"`.
    GuestInfo,
    /// A CD-ROM with `ovf-env.xml` (the OVF `iso` transport), by device.
    Iso { device: String },
    /// A file given on the command line.
    File { path: String },
    /// No OVF environment: one guest variable per property, `guestinfo.mt.<key>`, read through
    /// VMware tools (a standalone ESXi host ignores the properties and delivers no environment).
    GuestVariables,
}

impl Transport {
    /// Whether this transport carries an OVF environment document (the guest variables do not).
    pub fn carries_document(&self) -> bool {
        !matches!(self, Transport::GuestVariables)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::GuestInfo => f.write_str("com.vmware.guestInfo (VMware tools)"),
            Transport::Iso { device } => write!(f, "iso (CD-ROM {device})"),
            Transport::File { path } => write!(f, "file {path}"),
            Transport::GuestVariables => write!(
                f,
                "guest variables ({GUESTINFO_PREFIX}{PRODUCT_CLASS}.*, VMware tools)"
            ),
        }
    }
}

/// What a transport delivered, before validation.
#[derive(Clone, PartialEq, Eq)]
pub enum Content {
    /// An OVF environment document.
    Document(String),
    /// The guest variables that are set, by property key (without class and prefix).
    GuestVariables(BTreeMap<&'static str, String>),
}

impl Content {
    /// Parses and validates what was delivered, by the one validator of both kinds.
    pub fn parse(&self) -> anyhow::Result<Environment> {
        match self {
            Content::Document(xml) => parse(xml),
            Content::GuestVariables(values) => from_guest_variables(values),
        }
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The document may hold the passphrase: its size says enough in a log.
            Content::Document(xml) => write!(f, "Document({} bytes)", xml.len()),
            Content::GuestVariables(values) => f
                .debug_map()
                .entries(values.iter().map(|(k, v)| {
                    let shown = if *k == DeployProperty::AgentPassphrase.key() {
                        "(set)"
                    } else {
                        v.as_str()
                    };
                    (k, shown)
                }))
                .finish(),
        }
    }
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

/// A parsed environment (or set of guest variables): the configuration, and warnings (unknown
/// keys) for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub config: DeployConfig,
    pub warnings: Vec<String>,
    /// BLAKE3 of the document (of the sorted guest variables and their values), recorded so
    /// `status` can tell which configuration is in force and an unchanged one writes nothing.
    pub hash: String,
}
