//! `mt-agent setup --root DIR --distro debian12`: the changes the appliance needs on its root
//! file system, applied at image build time. The changes are data (a list of `Change`s per
//! distribution) and `apply` writes only what differs, so a second run changes nothing:
//! the agent itself, its configuration and service (enabled), and template sealing (no SSH
//! host keys, an empty machine-id, no persistent network rules or DHCP leases), with a unit
//! that creates the host keys on each deployed copy's first boot.

use crate::config::AgentConfig;
use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use std::os::unix::fs::PermissionsExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Distro {
    Debian12,
}

/// Where the agent and its files live inside the image.
pub const AGENT_BINARY: &str = "/usr/sbin/mt-agent";
pub const SERVICE: &str = "mt-agent.service";
pub const HOST_KEYS_SERVICE: &str = "mt-ssh-host-keys.service";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    File {
        path: String,
        contents: Vec<u8>,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// Remove every file in `dir` whose name starts with `prefix` (exact name when the prefix
    /// is the whole name).
    RemoveMatching {
        dir: String,
        prefix: String,
    },
}

/// The systemd mount unit name of a path (`/mnt/retention` -> `mnt-retention.mount`).
pub fn mount_unit(path: &str) -> String {
    let mut out = String::new();
    for (i, part) in path.trim_matches('/').split('/').enumerate() {
        if i > 0 {
            out.push('-');
        }
        for (j, b) in part.bytes().enumerate() {
            if b.is_ascii_alphanumeric() || b == b'_' || (b == b'.' && j > 0) {
                out.push(b as char);
            } else {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    format!("{out}.mount")
}

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
After=network-online.target local-fs.target {mount}

[Service]
ExecStart={AGENT_BINARY} serve --config {config}
Restart=on-failure
RestartSec=10
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
",
        config = crate::config::DEFAULT_CONFIG_PATH
    )
}

const HOST_KEYS_UNIT: &str = "[Unit]
Description=Create this copy's SSH host keys (the template ships none)
Before=ssh.service
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
";

/// Everything setup does for a distribution.
pub fn plan(distro: Distro, cfg: &AgentConfig, agent_binary: Vec<u8>) -> Result<Vec<Change>> {
    let Distro::Debian12 = distro;
    let config = toml::to_string_pretty(cfg)?;
    let unit_dir = "/etc/systemd/system";
    Ok(vec![
        Change::File {
            path: AGENT_BINARY.into(),
            contents: agent_binary,
            mode: 0o755,
        },
        Change::File {
            path: crate::config::DEFAULT_CONFIG_PATH.into(),
            contents: config.into_bytes(),
            mode: 0o644,
        },
        Change::File {
            path: format!("{unit_dir}/{SERVICE}"),
            contents: agent_unit(cfg).into_bytes(),
            mode: 0o644,
        },
        Change::Symlink {
            path: format!("{unit_dir}/multi-user.target.wants/{SERVICE}"),
            target: format!("{unit_dir}/{SERVICE}"),
        },
        Change::File {
            path: format!("{unit_dir}/{HOST_KEYS_SERVICE}"),
            contents: HOST_KEYS_UNIT.as_bytes().to_vec(),
            mode: 0o644,
        },
        Change::Symlink {
            path: format!("{unit_dir}/ssh.service.wants/{HOST_KEYS_SERVICE}"),
            target: format!("{unit_dir}/{HOST_KEYS_SERVICE}"),
        },
        // Sealing: what must differ between deployed copies is created on their first boot.
        Change::RemoveMatching {
            dir: "/etc/ssh".into(),
            prefix: "ssh_host_".into(),
        },
        Change::File {
            path: "/etc/machine-id".into(),
            contents: Vec::new(),
            mode: 0o444,
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
    ])
}

/// Checks that `root` is the distribution setup was asked to change.
pub fn check_root(root: &Utf8Path, distro: Distro) -> Result<()> {
    let Distro::Debian12 = distro;
    let marker = root.join("etc/debian_version");
    let version = std::fs::read_to_string(&marker).unwrap_or_default();
    if !version.trim_start().starts_with("12") {
        bail!("{root} is not a Debian 12 root file system ({marker} says {:?}); pass the right --root or --distro", version.trim());
    }
    Ok(())
}

/// Applies the changes under `root`; returns a line per change actually made.
pub fn apply(root: &Utf8Path, changes: &[Change]) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for change in changes {
        match change {
            Change::File {
                path,
                contents,
                mode,
            } => {
                let p = inside(root, path);
                let same = std::fs::read(&p).ok().as_ref() == Some(contents)
                    && std::fs::symlink_metadata(&p)
                        .map(|m| m.permissions().mode() & 0o7777)
                        .ok()
                        == Some(*mode);
                if !same {
                    create_parent(&p)?;
                    if p.symlink_metadata().is_ok() {
                        std::fs::remove_file(&p).with_context(|| format!("cannot replace {p}"))?;
                    }
                    std::fs::write(&p, contents).with_context(|| format!("cannot write {p}"))?;
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
                        .with_context(|| format!("cannot set the mode of {p}"))?;
                    done.push(format!("wrote {path}"));
                }
            }
            Change::Symlink { path, target } => {
                let p = inside(root, path);
                if std::fs::read_link(&p).ok().as_deref()
                    != Some(Utf8Path::new(target).as_std_path())
                {
                    create_parent(&p)?;
                    if p.symlink_metadata().is_ok() {
                        std::fs::remove_file(&p).with_context(|| format!("cannot replace {p}"))?;
                    }
                    std::os::unix::fs::symlink(target, &p)
                        .with_context(|| format!("cannot link {p}"))?;
                    done.push(format!("linked {path} -> {target}"));
                }
            }
            Change::RemoveMatching { dir, prefix } => {
                let d = inside(root, dir);
                let Ok(entries) = std::fs::read_dir(&d) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(prefix.as_str()))
                    .collect();
                names.sort();
                for n in names {
                    std::fs::remove_file(d.join(&n))
                        .with_context(|| format!("cannot remove {d}/{n}"))?;
                    done.push(format!("removed {dir}/{n}"));
                }
            }
        }
    }
    Ok(done)
}

fn inside(root: &Utf8Path, path: &str) -> Utf8PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn create_parent(p: &Utf8Path) -> Result<()> {
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {parent}"))?;
    }
    Ok(())
}

/// The whole command: check the root, plan, apply, report.
pub fn run(root: &Utf8Path, distro: Distro, config: &Utf8Path) -> Result<()> {
    check_root(root, distro)?;
    let cfg = AgentConfig::load(config)?;
    let exe = std::env::current_exe().context("cannot find the running mt-agent binary")?;
    let binary = std::fs::read(&exe).with_context(|| format!("cannot read {}", exe.display()))?;
    let changes = plan(distro, &cfg, binary)?;
    let done = apply(root, &changes)?;
    if done.is_empty() {
        println!("mt-agent setup: {root} is up to date, nothing to change");
    }
    for line in done {
        println!("mt-agent setup: {line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AgentConfig {
        AgentConfig {
            port: 9443,
            retention_mount: "/mnt/retention".into(),
            rpo_threshold_minutes: 15,
            retention_hours: 24,
            app_consistent_frequency_minutes: 60,
        }
    }

    fn debian_root(name: &str) -> Utf8PathBuf {
        let root = Utf8PathBuf::from_path_buf(std::env::temp_dir())
            .unwrap()
            .join(format!("mt-setup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["etc/ssh", "var/lib/dhcp"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("etc/debian_version"), "12.8\n").unwrap();
        std::fs::write(root.join("etc/machine-id"), "0123456789abcdef\n").unwrap();
        std::fs::write(root.join("etc/ssh/ssh_host_ed25519_key"), "secret").unwrap();
        std::fs::write(root.join("etc/ssh/sshd_config"), "keep").unwrap();
        std::fs::write(root.join("var/lib/dhcp/dhclient.eth0.leases"), "lease").unwrap();
        root
    }

    #[test]
    fn setup_installs_enables_and_seals_and_a_second_run_changes_nothing() {
        let root = debian_root("twice");
        let changes = plan(Distro::Debian12, &cfg(), b"\x7fELF".to_vec()).unwrap();
        let first = apply(&root, &changes).unwrap();
        assert!(first.iter().any(|l| l.contains("ssh_host_ed25519_key")));
        assert_eq!(std::fs::read(root.join("etc/machine-id")).unwrap(), b"");
        assert!(!root.join("var/lib/dhcp/dhclient.eth0.leases").exists());
        assert!(root.join("etc/ssh/sshd_config").exists());
        let wants = root.join("etc/systemd/system/multi-user.target.wants/mt-agent.service");
        assert_eq!(
            std::fs::read_link(wants).unwrap().to_str().unwrap(),
            "/etc/systemd/system/mt-agent.service"
        );
        let unit =
            std::fs::read_to_string(root.join("etc/systemd/system/mt-agent.service")).unwrap();
        assert!(unit.contains("After=network-online.target local-fs.target mnt-retention.mount"));
        assert!(unit.contains("Wants=network-online.target mnt-retention.mount"));
        assert!(unit.contains("StandardOutput=journal+console"));
        let toml = std::fs::read_to_string(root.join("etc/mt-agent/agent.toml")).unwrap();
        assert_eq!(toml::from_str::<AgentConfig>(&toml).unwrap(), cfg());
        assert_eq!(apply(&root, &changes).unwrap(), Vec::<String>::new());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_root_that_is_not_debian_12_is_refused() {
        let root = debian_root("wrong");
        std::fs::write(root.join("etc/debian_version"), "11.9\n").unwrap();
        let err = check_root(&root, Distro::Debian12).unwrap_err().to_string();
        assert!(err.contains("not a Debian 12 root"), "{err}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn mount_unit_names_follow_systemd_escaping() {
        assert_eq!(mount_unit("/mnt/retention"), "mnt-retention.mount");
        assert_eq!(mount_unit("/var/crash"), "var-crash.mount");
        assert_eq!(mount_unit("/mnt/re-tention"), "mnt-re\\x2dtention.mount");
    }
}
