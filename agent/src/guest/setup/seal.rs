//! Template sealing: what must differ between deployed copies of the appliance is removed
//! here and created on each copy's first boot (SSH host keys, machine IDs, the MAC-bound
//! network rules and the MAC/UUID lines of el6's ifcfg files, DHCP leases, and the agent's own
//! per-copy identity: its replication keys, authorised senders and recorded disk IDs).

use super::{Change, Root};

pub const IFCFG_DIR: &str = "/etc/sysconfig/network-scripts";

pub fn changes(root: &Root) -> Vec<Change> {
    let mut c = vec![
        Change::RemoveMatching {
            dir: "/etc/ssh".into(),
            prefix: "ssh_host_".into(),
        },
        Change::RemoveMatching {
            dir: "/var/lib/dbus".into(),
            prefix: "machine-id".into(),
        },
        Change::RemoveMatching {
            dir: "/etc/udev/rules.d".into(),
            prefix: "70-persistent-net.rules".into(),
        },
        Change::RemoveMatching {
            dir: "/var/lib/dhcp".into(),
            prefix: "dhclient".into(),
        },
        Change::RemoveMatching {
            dir: "/var/lib/dhclient".into(),
            prefix: "dhclient".into(),
        },
    ];
    // Each deployed copy makes its own key pair and records its own disks: a template that
    // carried them would give every copy the same identity.
    for dir in [
        crate::replication::net::auth::DEFAULT_SERVER_STATE,
        crate::replication::net::auth::DEFAULT_SENDER_STATE,
    ] {
        c.push(Change::RemoveMatching {
            dir: dir.into(),
            prefix: String::new(),
        });
    }
    if let Some((dir, name)) = crate::guest::disks::IDENTITY_FILE.rsplit_once('/') {
        c.push(Change::RemoveMatching {
            dir: dir.into(),
            prefix: name.into(),
        });
    }
    for name in root.list(IFCFG_DIR) {
        if !name.starts_with("ifcfg-") || name == "ifcfg-lo" {
            continue;
        }
        let path = format!("{IFCFG_DIR}/{name}");
        let p = root.path(&path);
        if p.is_symlink() || !p.is_file() {
            continue;
        }
        let Some(text) = root.read_text(&path) else {
            continue;
        };
        let sealed = without_hardware_ids(&text);
        if sealed != text {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0o644);
            c.push(Change::File {
                path,
                contents: sealed.into_bytes(),
                mode,
            });
        }
    }
    c
}

/// An ifcfg file without the lines that tie it to the build VM's NIC (`HWADDR=`, `UUID=`).
pub fn without_hardware_ids(text: &str) -> String {
    text.split_inclusive('\n')
        .filter(|l| {
            let k = l.trim_start();
            !(k.starts_with("HWADDR=") || k.starts_with("UUID="))
        })
        .collect()
}
