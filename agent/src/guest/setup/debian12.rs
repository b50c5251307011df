//! The Debian 12 part of setup: systemd units for the agent and its first boot (enabled by
//! their `.wants` links), the host-key unit, an empty machine-id, kdump-tools (dumps to
//! `/var/crash`, service enabled) and nftables (the ruleset, service enabled) when their
//! packages are in the root (a note saying so when they are not: the image build installs
//! both, other roots may not).

use super::{
    firewall, kdump, mount_unit, Change, Plan, Root, AGENT_BINARY, AGENT_NOFILE, FIRSTBOOT_SERVICE,
    HOST_KEYS_SERVICE, OVFENV_SERVICE, SERVICE,
};
use crate::config::{AgentConfig, DEFAULT_CONFIG_PATH};

const UNIT_DIR: &str = "/etc/systemd/system";
/// Where Debian's packages install their units (the links `systemctl enable` makes point here).
const SYSTEMD_UNITS: &str = "/lib/systemd/system";

fn agent_unit(cfg: &AgentConfig) -> String {
    let mount = mount_unit(cfg.retention_mount.as_str());
    format!(
        "[Unit]
Description=mt-agent, the master target's replication agent
Documentation=man:mt-agent(8)
# Wanted, not required: without the disk the agent starts, refuses and says why on the console
# instead of being skipped silently; and each automatic restart asks for the mount again, so a
# disk that appeared late (slow device probing) is mounted and used.
Wants=network-online.target {mount}
After=network-online.target local-fs.target {mount} {FIRSTBOOT_SERVICE}

[Service]
ExecStart={AGENT_BINARY} serve --config {DEFAULT_CONFIG_PATH}
Restart=on-failure
RestartSec=10
# Core dumps of the agent are kept (kernel.core_pattern points at /var/crash).
LimitCORE=infinity
# One descriptor per connection: the default 1024 is what a flood of idle connections used up
# (serve also caps unauthenticated handshakes).
LimitNOFILE={AGENT_NOFILE}
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
"
    )
}

/// First boot: before the network is configured and sshd reads its host keys. The host-key unit
/// runs beside it (first boot makes no key on Debian: `firstboot::host_key_kinds`), so the
/// agent never waits for key generation. On Debian multipathd starts
/// before the local file systems (which first boot needs), so it is told to re-read the
/// blacklist afterwards instead of being ordered after first boot (that would be a cycle).
/// Once first boot has entered the retention volume in fstab, its `nofail` mount is not
/// ordered before local-fs.target: first boot waits for it explicitly, so that it never runs
/// `mount` while systemd is mounting the same volume. (On the first boot there is no such
/// mount unit yet, and the ordering is void.)
fn firstboot_unit(cfg: &AgentConfig) -> String {
    let mount = mount_unit(cfg.retention_mount.as_str());
    format!(
        "[Unit]
Description=mt-agent first boot: OS disk blacklist, retention disk, disk identities
DefaultDependencies=no
After=local-fs.target {mount}
Before=network-pre.target ssh.service {SERVICE} shutdown.target
Wants=network-pre.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={AGENT_BINARY} firstboot --config {DEFAULT_CONFIG_PATH}
# The OS disk's blacklist entry takes effect now (the '-': multipathd may not be running).
ExecStartPost=-/usr/sbin/multipathd reconfigure
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
"
    )
}

/// The OVF environment, applied at every boot (a changed property takes effect at the next
/// reboot) before ifupdown reads `/etc/network/interfaces`. It must never hold up the boot:
/// no environment is a success, and an invalid one is logged on the console while the
/// previous configuration stays (the `-`: the unit does not fail the boot either way).
fn ovfenv_unit() -> String {
    format!(
        "[Unit]
Description=mt-agent: apply the OVF environment (host name, network, passphrase)
DefaultDependencies=no
After=local-fs.target {FIRSTBOOT_SERVICE}
Before=network-pre.target networking.service ssh.service {SERVICE} shutdown.target
Wants=network-pre.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
# The iso transport's CD-ROM may still be probing when local-fs.target is reached.
ExecStartPre=-/bin/udevadm settle --timeout=30
ExecStart=-{AGENT_BINARY} ovfenv apply --root / --distro debian12
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
"
    )
}

/// Only local file systems: first boot runs after this unit and before the network, so with
/// the default dependencies (after basic.target, which kdump-tools' own unit orders after
/// networking; setup replaces that unit, but an image whose kdump-tools is not configured keeps
/// it) the two would form an ordering cycle, and systemd would drop first boot's job to break it.
const HOST_KEYS_UNIT: &str = "[Unit]
Description=Create this copy's SSH host keys (the template ships none)
DefaultDependencies=no
After=local-fs.target
Before=ssh.service shutdown.target
Conflicts=shutdown.target
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
";

pub fn plan(root: &Root, cfg: &AgentConfig, p: &mut Plan) {
    let unit = |name: &str, text: String| Change::File {
        path: format!("{UNIT_DIR}/{name}"),
        contents: text.into_bytes(),
        mode: 0o644,
    };
    let wants = |target: &str, name: &str, dir: &str| Change::Symlink {
        path: format!("{UNIT_DIR}/{target}.wants/{name}"),
        target: format!("{dir}/{name}"),
    };
    p.changes.extend([
        unit(SERVICE, agent_unit(cfg)),
        wants("multi-user.target", SERVICE, UNIT_DIR),
        unit(FIRSTBOOT_SERVICE, firstboot_unit(cfg)),
        wants("multi-user.target", FIRSTBOOT_SERVICE, UNIT_DIR),
        unit(OVFENV_SERVICE, ovfenv_unit()),
        wants("multi-user.target", OVFENV_SERVICE, UNIT_DIR),
        unit(HOST_KEYS_SERVICE, HOST_KEYS_UNIT.into()),
        wants("ssh.service", HOST_KEYS_SERVICE, UNIT_DIR),
        // systemd creates a machine ID on the first boot that finds this file empty.
        Change::File {
            path: "/etc/machine-id".into(),
            contents: Vec::new(),
            mode: 0o444,
        },
    ]);
    match root.read_text(kdump::DEBIAN_DEFAULTS) {
        Some(cur) => {
            p.changes.push(Change::File {
                path: kdump::DEBIAN_DEFAULTS.into(),
                contents: kdump::debian_defaults(&cur).into_bytes(),
                mode: 0o644,
            });
            // Loads the capture kernel at every boot (and saves a dump when booted as one),
            // ordered so that nothing waits for it or for the network because of it.
            p.changes.push(unit(kdump::DEBIAN_SERVICE, kdump::debian_load_unit()));
            p.changes.push(unit(kdump::DEBIAN_DUMP_SERVICE, kdump::debian_dump_unit()));
            p.changes.push(wants("basic.target", kdump::DEBIAN_SERVICE, UNIT_DIR));
        }
        None => p.notes.push(format!(
            "{} is not in the root (kdump-tools is not installed): kernel crash dumps are not configured",
            kdump::DEBIAN_DEFAULTS
        )),
    }
    if root.exists("/usr/sbin/nft") {
        p.changes.push(Change::File {
            path: firewall::DEBIAN_RULESET.into(),
            contents: firewall::nftables(cfg.port).into_bytes(),
            mode: 0o755,
        });
        p.changes.push(Change::Symlink {
            path: format!(
                "{UNIT_DIR}/sysinit.target.wants/{}",
                firewall::DEBIAN_SERVICE
            ),
            target: format!("{SYSTEMD_UNITS}/{}", firewall::DEBIAN_SERVICE),
        });
    } else {
        p.notes.push(format!(
            "nft is not in the root (the nftables package is not installed): no firewall rules written; only ports {} and {} should be reachable",
            firewall::SSH_PORT,
            cfg.port
        ));
    }
}
