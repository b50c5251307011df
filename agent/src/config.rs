//! The agent's configuration file (`/etc/mt-agent/agent.toml`), written at image build time from
//! the appliance definition: listen port, failback policy and paths. The type is the contract's
//! (`mt_contract::config`), shared with the build that writes it; re-exported here, with
//! `AgentConfig::load` (the contract's `load` feature) reading the file.

pub use mt_contract::config::{AgentConfig, LoadError, RetentionDiskConfig};
pub use mt_contract::guest::AGENT_CONFIG_PATH as DEFAULT_CONFIG_PATH;
