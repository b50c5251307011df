//! Template sealing: what must differ between deployed copies of the appliance is removed
//! here and created on each copy's first boot (SSH host keys, machine IDs, the MAC-bound
//! network rules and the MAC/UUID lines of el6's ifcfg files, DHCP leases).

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
