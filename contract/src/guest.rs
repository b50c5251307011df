//! Facts of the guest image that the build, the boot test and the agent all name: where files
//! live, what the units are called, which ports are open, how the agent says it is ready.
//! Only values live here; what is written at those paths belongs to the agent's modules.

/// The agent's configuration file (see [`crate::config::AgentConfig`]).
pub const AGENT_CONFIG_PATH: &str = "/etc/mt-agent/agent.toml";
/// The master target's enrolment passphrase (one line; readable only by root), written by
/// `mt-agent ovfenv` from the deploy-time property.
pub const PASSPHRASE_PATH: &str = "/etc/mt-agent/passphrase";
/// What `mt-agent ovfenv` last applied (transport and document hash); `mt-agent status` reads it.
pub const OVF_ENV_RECORD_PATH: &str = "/var/lib/mt-agent/ovf-env.json";
/// The agent's own state (keys, authorised senders, recorded disk identities): never a retention
/// volume, and sealed out of the template.
pub const AGENT_STATE_DIR: &str = "/var/lib/mt-agent";
/// Where kdump saves a crash dump: the OS disk's crash partition.
pub const CRASH_DIR: &str = "/var/crash";
/// Where Debian's kdump-tools keeps the capture kernel's initramfs (`initrd.img-<kernel>`) and
/// the copy of its sysctls (`latest_sysctls-<kernel>`); the build fills it for the image's
/// kernel and `kdump-config load` rebuilds what is missing for the running one.
pub const KDUMP_TOOLS_DIR: &str = "/var/lib/kdump";
/// The mount point the runbook (and the agent) expect for the retention drive.
pub const RETENTION_MOUNT_POINT: &str = "/mnt/retention";

/// The agent's own service.
pub const AGENT_SERVICE: &str = "mt-agent.service";
/// The per-VM first boot steps (retention disk, host keys, identity).
pub const FIRSTBOOT_SERVICE: &str = "mt-agent-firstboot.service";
/// Applies the OVF environment on every boot, before networking.
pub const OVFENV_SERVICE: &str = "mt-agent-ovfenv.service";
/// Debian's unit that loads the firewall ruleset before the network comes up.
pub const FIREWALL_SERVICE: &str = "nftables.service";

/// sshd's port, the one the firewall opens besides the agent's (which is the definition's
/// `agent.port`, carried in agent.toml).
pub const SSH_PORT: u16 = 22;

/// The prefix of the readiness line `mt-agent serve` prints once it accepts sessions:
/// `mt-agent: ready port=9443 retention=/mnt/retention`.
pub const READY_PREFIX: &str = "mt-agent: ready";

/// The readiness line for a port and retention mount.
pub fn readiness_line(port: u16, retention: &str) -> String {
    format!("{READY_PREFIX} port={port} retention={retention}")
}
