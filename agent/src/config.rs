//! The agent's configuration file (`/etc/mt-agent/agent.toml`), written at image build time from
//! the appliance definition: listen port, failback policy and paths. The type is the contract's
//! (`mt_contract::config`), shared with the build that writes it; this module reads the file.

use camino::{Utf8Path, Utf8PathBuf};

pub use mt_contract::config::{AgentConfig, RetentionDiskConfig};
pub use mt_contract::guest::AGENT_CONFIG_PATH as DEFAULT_CONFIG_PATH;

/// Why `agent.toml` could not be loaded; the source is the I/O or TOML error.
#[derive(Debug)]
pub enum LoadError {
    Read(Utf8PathBuf, std::io::Error),
    Invalid(Utf8PathBuf, toml::de::Error),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Read(path, _) => write!(f, "cannot read the agent configuration {path}"),
            LoadError::Invalid(path, _) => write!(f, "the agent configuration {path} is invalid"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Read(_, e) => Some(e),
            LoadError::Invalid(_, e) => Some(e),
        }
    }
}

/// Reads and parses `agent.toml` at `path`.
pub fn load(path: &Utf8Path) -> Result<AgentConfig, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Read(path.to_owned(), e))?;
    toml::from_str(&text).map_err(|e| LoadError::Invalid(path.to_owned(), e))
}
