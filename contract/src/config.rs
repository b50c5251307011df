//! The agent's configuration file (`/etc/mt-agent/agent.toml`): written at image build time from
//! the appliance definition (`appliance::Definition::agent_config`), read by every `mt-agent`
//! verb that needs the port, the failback policy or the retention disk. Loading the file is the
//! agent's job (`mt_agent::config`); this is only its shape.

use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};

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
