//! The agent's configuration file (`/etc/mt-agent/agent.toml`), written at image build time from
//! the appliance definition: listen port, failback policy and paths.

use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/mt-agent/agent.toml";
/// The agent's enrolment passphrase (one line, mode 600, owned by root); written at first boot
/// from the OVF property `mt.agent_passphrase`, never at build time.
pub const PASSPHRASE_PATH: &str = "/etc/mt-agent/passphrase";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub port: u16,
    pub retention_mount: Utf8PathBuf,
    pub rpo_threshold_minutes: u32,
    pub retention_hours: u32,
    pub app_consistent_frequency_minutes: u32,
}

impl AgentConfig {
    pub fn load(path: &camino::Utf8Path) -> anyhow::Result<AgentConfig> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the agent configuration {path}"))?;
        toml::from_str(&text).with_context(|| format!("the agent configuration {path} is invalid"))
    }
}
