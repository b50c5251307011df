//! Deploy-time configuration from the OVF environment (`ovf-env.xml`, DSP0243 section 11): the
//! values vSphere's deploy wizard collected for the ProductSection properties (class `mt`).
//!
//! Reading finds the document on whichever transport is present (VMware tools'
//! `guestinfo.ovfEnv`, or a CD-ROM carrying `ovf-env.xml`) through an injectable command runner
//! (`transport`); parsing and validation (`parse`) happen completely before anything is written,
//! so a malformed or invalid environment leaves the previous configuration in place. `apply`
//! writes only files whose contents differ (each atomically), so an unchanged environment changes
//! nothing; `verbs` are `mt-agent ovfenv show|apply` and the `status` line.
//! The property keys and value rules are the contract's (`mt_contract::deploy`, `::rules`), the
//! network files its renderer's (`mt_contract::network`), shared with the image build.
//! This module must not restart services or bring interfaces up: first boot orders itself
//! before networking, so the files it writes are what the network scripts read.

mod apply;
mod parse;
mod transport;
mod verbs;

pub use apply::{activate, apply, Changes, Record};
pub use parse::parse;
pub use transport::{read_environment, Runner, SystemRunner};
pub use verbs::{describe_source, load, run_apply, show};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;

/// The OVF environment namespace (`oe:`).
pub const NS_OE: &str = "http://schemas.dmtf.org/ovf/environment/1";
/// The ProductSection class of the appliance's properties: the environment calls them `mt.<key>`.
pub use mt_contract::deploy::DEPLOY_PRODUCT_CLASS as PRODUCT_CLASS;
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
