//! The agent's configuration file (`/etc/mt-agent/agent.toml`), written at image build time from
//! the appliance definition: listen port, failback policy and paths.

use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/mt-agent/agent.toml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub port: u16,
    pub retention_mount: Utf8PathBuf,
    pub rpo_threshold_minutes: u32,
    pub retention_hours: u32,
    pub app_consistent_frequency_minutes: u32,
    /// How first boot finds and formats the retention disk (from the definition's
    /// `retention_disk`); absent in configurations written before first boot existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_disk: Option<RetentionDiskConfig>,
}

/// The definition's rule for the retention disk, as first boot needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionDiskConfig {
    /// SCSI unit number (the L of H:C:T:L) on the appliance's controller; the OS disk is 0.
    pub scsi_unit: u32,
    /// File system first boot creates on a blank disk (`ext4` or `xfs`).
    pub fs: String,
    /// File system label first boot gives it.
    pub label: String,
}

impl AgentConfig {
    pub fn load(path: &camino::Utf8Path) -> anyhow::Result<AgentConfig> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the agent configuration {path}"))?;
        toml::from_str(&text).with_context(|| format!("the agent configuration {path} is invalid"))
    }
}
