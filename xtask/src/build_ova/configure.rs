//! Applies the definition to the extracted root tree by writing files, as Debian's own tools
//! would: fstab by label (the OS disk; first boot adds the retention disk by UUID), host name,
//! time zone, locale and keyboard, the root password hash, SSH keys and the network (ifupdown,
//! DHCP or static; the network files come from the contract's renderer, which `mt-agent ovfenv`
//! uses too). Nothing is executed inside the tree; the agent's own changes (service,
//! configuration, sealing) are `mt-agent setup`'s job.

use anyhow::{bail, Context, Result};
use appliance::definition::FileSystem;
use appliance::Definition;
use camino::Utf8Path;
use mt_contract::network;
use std::os::unix::fs::PermissionsExt;

pub fn apply(tree: &Utf8Path, def: &Definition) -> Result<()> {
    write(tree, "etc/fstab", &fstab(def), 0o644)?;
    let host = &def.network.hostname;
    write(tree, "etc/hostname", &network::debian_hostname(host), 0o644)?;
    write(tree, "etc/hosts", &network::debian_hosts(host), 0o644)?;
    time_zone(tree, &def.system.timezone)?;
    write(
        tree,
        "etc/default/locale",
        &format!("LANG={}\n", def.system.language),
        0o644,
    )?;
    write(
        tree,
        "etc/default/keyboard",
        &format!("XKBMODEL=\"pc105\"\nXKBLAYOUT=\"{}\"\nXKBVARIANT=\"\"\nXKBOPTIONS=\"\"\nBACKSPACE=\"guess\"\n", def.system.keyboard),
        0o644,
    )?;
    root_password(tree, &def.system.root_password_hash)?;
    authorized_keys(tree, &def.system.ssh_authorized_keys)?;
    write(tree, "etc/network/interfaces", &interfaces(def), 0o644)?;
    if let Some(ip) = def.network.static_ip() {
        // The build has no search domain of its own: the resolver searches the host's domain.
        let text = network::resolv_conf(None, &ip.dns);
        // A static configuration has no DHCP client to write it, and resolv.conf may be a
        // dangling link to a resolver the image does not have.
        let path = tree.join("etc/resolv.conf");
        if path.symlink_metadata().is_ok() {
            std::fs::remove_file(&path).with_context(|| format!("cannot replace {path}"))?;
        }
        write(tree, "etc/resolv.conf", &text, 0o644)?;
    }
    for p in &def.os_disk.partitions {
        if !p.is_swap() {
            mkdir(tree, &p.mount)?;
        }
    }
    mkdir(tree, &def.retention_disk.mount)?;
    Ok(())
}

/// Mounts the OS disk's partitions by file system label: labels are set by the build
/// (`mke2fs -L`), survive cloning and do not depend on the order the SCSI disks are found in.
/// The retention disk has no line here: it ships blank, and each VM's first boot formats it
/// and adds it by UUID (`mt-agent firstboot`, with `nofail`: the system must boot without it,
/// and then the agent refuses to start and says why).
pub fn fstab(def: &Definition) -> String {
    let mut t = String::from("# <file system> <mount point> <type> <options> <dump> <pass>\n");
    for p in &def.os_disk.partitions {
        let line = match p.fs {
            FileSystem::Swap => format!("LABEL={} none swap sw 0 0", p.label),
            fs => {
                let (opts, pass) = if p.mount == "/" {
                    ("errors=remount-ro", 1)
                } else {
                    ("defaults", 2)
                };
                format!(
                    "LABEL={} {} {} {opts} 0 {pass}",
                    p.label,
                    p.mount,
                    fs.as_str()
                )
            }
        };
        t.push_str(&line);
        t.push('\n');
    }
    t
}

/// ifupdown's configuration; the interface name is stable because the kernel command line
/// turns predictable names off (`net.ifnames=0`), so the first NIC is `eth0` on any hardware.
pub fn interfaces(def: &Definition) -> String {
    network::debian_interfaces(&def.interface(), &def.addressing())
}

fn time_zone(tree: &Utf8Path, tz: &str) -> Result<()> {
    let zone = format!("/usr/share/zoneinfo/{tz}");
    if !tree.join(zone.trim_start_matches('/')).is_file() {
        bail!("system.timezone {tz:?}: the image has no {zone} (tzdata): use a zone name from the tz database");
    }
    let link = tree.join("etc/localtime");
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(&link).with_context(|| format!("cannot replace {link}"))?;
    }
    std::os::unix::fs::symlink(&zone, &link).with_context(|| format!("cannot link {link}"))?;
    write(tree, "etc/timezone", &format!("{tz}\n"), 0o644)
}

/// Replaces root's hash in /etc/shadow (field 2), leaving every other line and field intact.
fn root_password(tree: &Utf8Path, hash: &str) -> Result<()> {
    let path = tree.join("etc/shadow");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let (text, found) = set_shadow_hash(&text, "root", hash);
    if !found {
        bail!("{path} has no root entry: the root file system is incomplete");
    }
    write(tree, "etc/shadow", &text, 0o640)
}

pub fn set_shadow_hash(shadow: &str, user: &str, hash: &str) -> (String, bool) {
    let mut found = false;
    let mut out = String::with_capacity(shadow.len() + hash.len());
    for line in shadow.lines() {
        let mut fields: Vec<&str> = line.split(':').collect();
        if fields.first() == Some(&user) && fields.len() >= 2 {
            fields[1] = hash;
            found = true;
            out.push_str(&fields.join(":"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    (out, found)
}

fn authorized_keys(tree: &Utf8Path, keys: &[String]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let dir = tree.join("root/.ssh");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir}"))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let mut text = keys.join("\n");
    text.push('\n');
    write(tree, "root/.ssh/authorized_keys", &text, 0o600)
}

fn mkdir(tree: &Utf8Path, mount: &str) -> Result<()> {
    let dir = tree.join(mount.trim_start_matches('/'));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create the mount point {dir}"))
}

fn write(tree: &Utf8Path, rel: &str, text: &str, mode: u32) -> Result<()> {
    let path = tree.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {parent}"))?;
    }
    std::fs::write(&path, text).with_context(|| format!("cannot write {path}"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use appliance::definition::NetworkMode;

    fn def() -> Definition {
        let path = crate::util::workspace_root().join(appliance::definition::DEFAULT_DEFINITION);
        Definition::load(&path).unwrap()
    }

    #[test]
    fn fstab_mounts_every_os_partition_by_label_and_leaves_retention_to_first_boot() {
        let t = fstab(&def());
        assert_eq!(
            t,
            "# <file system> <mount point> <type> <options> <dump> <pass>\n\
             LABEL=root / ext4 errors=remount-ro 0 1\n\
             LABEL=crash /var/crash ext4 defaults 0 2\n\
             LABEL=home /home ext4 defaults 0 2\n\
             LABEL=swap none swap sw 0 0\n"
        );
    }

    #[test]
    fn a_static_network_becomes_an_ifupdown_stanza() {
        let mut d = def();
        d.network.mode = NetworkMode::Static;
        d.network.address = Some("192.168.10.20".parse().unwrap());
        d.network.prefix = Some(24);
        d.network.gateway = Some("192.168.10.1".parse().unwrap());
        d.network.dns = vec!["192.168.10.2".parse().unwrap()];
        let t = interfaces(&d);
        assert!(t.contains("auto eth0\n"));
        assert!(t.contains(
            "iface eth0 inet static\n    address 192.168.10.20/24\n    gateway 192.168.10.1\n"
        ));
        assert!(interfaces(&def()).contains("iface eth0 inet dhcp\n"));
    }

    #[test]
    fn only_roots_shadow_hash_changes() {
        let shadow = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n";
        let (out, found) = set_shadow_hash(shadow, "root", "$6$s$h");
        assert!(found);
        assert_eq!(
            out,
            "root:$6$s$h:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
        );
        assert!(!set_shadow_hash("daemon:*:1::::::\n", "root", "x").1);
    }

    /// The files as the build wrote them before the contract's renderer took over (compared
    /// byte for byte with the old renderer when it was replaced).
    #[test]
    fn the_default_definition_gets_the_network_files_it_always_had() {
        let d = def();
        let host = &d.network.hostname;
        assert_eq!(network::debian_hostname(host), "mt-appliance\n");
        assert_eq!(
            network::debian_hosts(host),
            "127.0.0.1\tlocalhost\n127.0.1.1\tmt-appliance.localdomain mt-appliance\n\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
        );
        assert_eq!(
            interfaces(&d),
            "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\nauto eth0\nallow-hotplug eth0\niface eth0 inet dhcp\n"
        );
    }
}
