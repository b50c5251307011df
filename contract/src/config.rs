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

/// Why `agent.toml` could not be loaded; the source is the I/O or TOML error.
#[cfg(feature = "load")]
#[derive(Debug)]
pub enum LoadError {
    Read(camino::Utf8PathBuf, std::io::Error),
    Invalid(camino::Utf8PathBuf, toml::de::Error),
}

#[cfg(feature = "load")]
impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Read(path, _) => write!(f, "cannot read the agent configuration {path}"),
            LoadError::Invalid(path, _) => write!(f, "the agent configuration {path} is invalid"),
        }
    }
}

#[cfg(feature = "load")]
impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Read(_, e) => Some(e),
            LoadError::Invalid(_, e) => Some(e),
        }
    }
}

#[cfg(feature = "load")]
impl AgentConfig {
    /// Reads and parses the file (the agent's side only: feature `load`).
    pub fn load(path: &camino::Utf8Path) -> Result<AgentConfig, LoadError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| LoadError::Read(path.to_owned(), e))?;
        toml::from_str(&text).map_err(|e| LoadError::Invalid(path.to_owned(), e))
    }
}
