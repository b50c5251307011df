//! What the definition hands to the guest, in the contract's types: the agent's configuration
//! file, the build-time values the deploy-time properties default to, and the network the image
//! is built with. The one place where these are carried over from the definition.

use super::Definition;
use mt_contract::config::{AgentConfig, RetentionDiskConfig};
use mt_contract::deploy::{DeployDefaults, DeploySource};
use mt_contract::network::{Addressing, Interface};

impl Definition {
    /// The agent's configuration (`agent.toml`): port, failback policy, retention mount and the
    /// retention disk's rule for first boot (the build, the benchmarks and tests use it).
    pub fn agent_config(&self) -> AgentConfig {
        AgentConfig {
            port: self.agent.port,
            retention_mount: self.retention_disk.mount.clone().into(),
            rpo_threshold_minutes: self.policy.rpo_threshold_minutes,
            retention_hours: self.policy.retention_hours,
            app_consistent_frequency_minutes: self.policy.app_consistent_frequency_minutes,
            retention_disk: Some(RetentionDiskConfig {
                scsi_unit: self.retention_disk.scsi_unit,
                fs: self.retention_disk.fs.as_str().to_owned(),
                label: self.retention_disk.label.clone(),
            }),
        }
    }

    /// The guest's interface as the image is built with it.
    pub fn interface(&self) -> Interface {
        Interface {
            device: self.network.device.clone(),
            onboot: self.network.onboot,
        }
    }

    /// The interface's addressing (validation guarantees a static one is complete).
    pub fn addressing(&self) -> Addressing {
        match self.network.static_ip() {
            Some(ip) => Addressing::Static {
                address: ip.address,
                prefix: ip.prefix,
                gateway: ip.gateway,
            },
            None => Addressing::Dhcp,
        }
    }
}

impl DeploySource for Definition {
    fn deploy_defaults(&self) -> DeployDefaults {
        let n = &self.network;
        DeployDefaults {
            hostname: n.hostname.clone(),
            mode: n.mode,
            address: n.address,
            prefix: n.prefix,
            gateway: n.gateway,
            dns: n.dns.clone(),
            dns_search: self.deploy.dns_search.clone(),
            ntp_server: self.deploy.ntp_server.clone(),
            root_ssh_key: self.system.ssh_authorized_keys.first().cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::NetworkMode;
    use camino::Utf8Path;

    #[test]
    fn agent_toml_carries_port_policy_and_the_retention_disk_rule() {
        let path = Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("appliance.toml");
        let def = Definition::load(&path).unwrap();
        let cfg = def.agent_config();
        assert_eq!(cfg.port, def.agent.port);
        assert_eq!(cfg.retention_mount, def.retention_disk.mount);
        assert_eq!(
            cfg.rpo_threshold_minutes,
            super::super::FIXED_RPO_THRESHOLD_MINUTES
        );
        let disk = cfg.retention_disk.unwrap();
        assert_eq!((disk.scsi_unit, disk.fs.as_str()), (1, "ext4"));
        assert_eq!(def.interface(), Interface::default());
        assert_eq!(def.addressing(), Addressing::Dhcp);
        assert_eq!(def.network.mode, NetworkMode::Dhcp);
    }
}
