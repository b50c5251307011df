//! The el6 (CentOS 6) part of setup: SysV init scripts for the agent and its first boot,
//! enabled through rc links, the rotation of the agent's log, kdump via `/etc/kdump.conf`, and
//! the iptables service's files.

use super::{firewall, kdump, sysv, Change, Plan, Root, AGENT_BINARY};
use crate::config::{AgentConfig, DEFAULT_CONFIG_PATH};

pub fn plan(root: &Root, cfg: &AgentConfig, p: &mut Plan) {
    for (name, script) in [
        (
            "mt-agent",
            sysv::agent_script(DEFAULT_CONFIG_PATH, AGENT_BINARY),
        ),
        (
            "mt-agent-firstboot",
            sysv::firstboot_script(DEFAULT_CONFIG_PATH, AGENT_BINARY),
        ),
        ("mt-agent-ovfenv", sysv::ovfenv_script(AGENT_BINARY)),
    ] {
        let header = sysv::ChkconfigHeader::parse(&script).expect("our scripts carry a header");
        p.changes.push(Change::File {
            path: format!("{}/{name}", sysv::INIT_DIR),
            contents: script.into_bytes(),
            mode: 0o755,
        });
        p.changes.extend(sysv::enable(name, &header));
    }
    p.changes.push(Change::File {
        path: sysv::LOGROTATE_DROPIN.into(),
        contents: sysv::logrotate().into_bytes(),
        mode: 0o644,
    });
    if !root.exists("/usr/sbin/logrotate") {
        p.notes.push(format!(
            "logrotate is not in the root: {} is written but nothing rotates {} (install the logrotate package)",
            sysv::LOGROTATE_DROPIN,
            sysv::AGENT_LOG
        ));
    }
    p.changes.push(Change::File {
        path: kdump::EL6_CONF.into(),
        contents: kdump::el6_conf().into_bytes(),
        mode: 0o644,
    });
    p.changes.push(Change::File {
        path: "/etc/sysconfig/iptables".into(),
        contents: firewall::iptables(cfg.port).into_bytes(),
        mode: 0o600,
    });
    p.changes.push(Change::File {
        path: "/etc/sysconfig/ip6tables".into(),
        contents: firewall::ip6tables(cfg.port).into_bytes(),
        mode: 0o600,
    });
    for service in ["kdump", "multipathd", "iptables", "ip6tables"] {
        match sysv::enable_installed(root, service) {
            Some(links) => p.changes.extend(links),
            None => p.notes.push(format!(
                "{}/{service} is not in the root: {service} is configured but not enabled (install its package)",
                sysv::INIT_DIR
            )),
        }
    }
}
