//! Judging the guest's first report against the definition: every `MTCHK` answer becomes an
//! `Outcome` (mounts and labels, swap, tools, by-id links, services, first-boot identity, host
//! name and address, boot state, the firewall, the crash kernel) and `RetentionView` reads the
//! retention volume as one boot shows it. Pure functions of the report: nothing runs here.

use super::guest::{package_services, probe_command};
use super::ovf_env::OvfEnvTest;
use super::session::{Outcome, SSH_PORT};
use crate::qemu;
use appliance::definition::FileSystem;
use appliance::definition::LogicalPackage;
use appliance::kernel_cmdline::crash_kernel;
use appliance::vm_hardware::VmHardware;
use appliance::Definition;
use mt_agent::guest::ovfenv::IpConfig;

pub(super) fn judge_report(
    def: &Definition,
    hw: &VmHardware,
    report: &[String],
    ovf: Option<&OvfEnvTest>,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    let field = |kind: &str| -> Vec<Vec<String>> {
        report
            .iter()
            .filter_map(|l| l.strip_prefix(kind).and_then(|r| r.strip_prefix(' ')))
            .map(|r| r.split_whitespace().map(str::to_owned).collect())
            .collect()
    };
    let mounts = field("mount");
    let mut expected: Vec<(String, FileSystem, String)> = def
        .os_disk
        .partitions
        .iter()
        .filter(|p| !p.is_swap())
        .map(|p| (p.mount.clone(), p.fs, p.label.clone()))
        .collect();
    let r = &def.retention_disk;
    expected.push((r.mount.clone(), r.fs, r.label.clone()));
    for (mount, fs, label) in expected {
        let found = mounts.iter().find(|m| m.first() == Some(&mount));
        let (ok, detail) = match found {
            Some(m) => (
                m.get(1).map(String::as_str) == Some(fs.as_str()) && m.get(2) == Some(&label),
                m.join(" "),
            ),
            None => (false, "not mounted".to_string()),
        };
        out.push(Outcome {
            what: format!("{mount} mounted ({} LABEL={label})", fs.as_str()),
            ok,
            detail,
        });
    }
    for p in def.os_disk.partitions.iter().filter(|p| p.is_swap()) {
        let active = field("swap").iter().any(|s| s.first() == Some(&p.label));
        out.push(Outcome {
            what: format!("swap LABEL={} active", p.label),
            ok: active,
            detail: format!("{:?}", field("swap")),
        });
    }
    let tools = field("tool");
    for p in &def.packages {
        let name = probe_command(*p);
        let found = tools
            .iter()
            .find(|t| t.first().map(String::as_str) == Some(name));
        let path = found
            .and_then(|t| t.get(1))
            .cloned()
            .unwrap_or_else(|| "not reported".into());
        out.push(Outcome {
            what: format!("tool {name} ({})", p.as_str()),
            ok: found.is_some() && path != "MISSING",
            detail: path,
        });
        let used = field("use")
            .into_iter()
            .find(|u| u.first().map(String::as_str) == Some(p.as_str()))
            .map(|u| u[1..].join(" "))
            .unwrap_or_else(|| "not reported".into());
        out.push(Outcome {
            what: format!("{} works", p.as_str()),
            ok: used == "ok",
            detail: format!("{} ({used})", use_what(*p)),
        });
    }
    let byid: Vec<String> = field("byid")
        .into_iter()
        .filter_map(|v| v.into_iter().next())
        .collect();
    for d in &hw.disks {
        let (_, wwn) = qemu::disk_identity(&def.appliance.name, d.unit);
        let link = format!("scsi-3{wwn:016x}");
        out.push(Outcome {
            what: format!("/dev/disk/by-id/{link}"),
            ok: byid.contains(&link),
            detail: format!("SCSI unit {}", d.unit),
        });
    }
    let agent = field("agent")
        .first()
        .and_then(|v| v.first().cloned())
        .unwrap_or_default();
    out.push(Outcome {
        what: "mt-agent.service active".into(),
        ok: agent == "active",
        detail: agent,
    });
    let services = field("service");
    for name in package_services(def) {
        let state = services
            .iter()
            .find(|s| s.first() == Some(&name))
            .and_then(|s| s.get(1).cloned())
            .unwrap_or_else(|| "not reported".into());
        out.push(Outcome {
            what: format!("{name} service active"),
            ok: state == "active",
            detail: state,
        });
    }
    let keys = field("hostkeys")
        .first()
        .and_then(|v| v.first().cloned())
        .unwrap_or_default();
    out.push(Outcome {
        what: "SSH host keys created at first boot".into(),
        ok: keys.parse::<u32>().is_ok_and(|n| n > 0),
        detail: format!("{keys} keys"),
    });
    let id = field("machineid")
        .first()
        .and_then(|v| v.first().cloned())
        .unwrap_or_default();
    out.push(Outcome {
        what: "machine-id generated at first boot".into(),
        ok: id.len() == 32,
        detail: id,
    });
    let (short, fqdn) = {
        let h = ovf
            .and_then(|o| o.config.hostname.as_ref())
            .unwrap_or(&def.network.hostname);
        (h.split('.').next().unwrap_or(h).to_string(), h.clone())
    };
    let names = field("hostname").into_iter().next().unwrap_or_default();
    out.push(Outcome {
        what: format!("host name {fqdn}"),
        ok: names.first() == Some(&short) && names.get(1) == Some(&fqdn),
        detail: names.join(" "),
    });
    let addr = field("addr").into_iter().next().unwrap_or_default();
    let ovf_static = ovf.and_then(|o| match &o.config.ip {
        Some(IpConfig::Static {
            address, prefix, ..
        }) => Some(format!("{address}/{prefix}")),
        _ => None,
    });
    let (what, ok) = match def.network.static_ip() {
        _ if ovf_static.is_some() => {
            let want = ovf_static.clone().unwrap_or_default();
            (
                format!("{} has the static address {want}", def.network.device),
                addr.first() == Some(&want),
            )
        }
        Some(ip) => {
            let want = format!("{}/{}", ip.address, ip.prefix);
            (
                format!("{} has the static address {want}", def.network.device),
                addr.first() == Some(&want),
            )
        }
        None => (
            format!("{} has a DHCP address", def.network.device),
            !addr.is_empty(),
        ),
    };
    out.push(Outcome {
        what,
        ok,
        detail: addr.join(" "),
    });
    let state = field("system")
        .first()
        .and_then(|v| v.first().cloned())
        .unwrap_or_default();
    out.push(Outcome {
        what: "boot finished (systemctl is-system-running)".into(),
        ok: state == "running",
        detail: state,
    });
    let failed_units = field("failed-units").into_iter().next().unwrap_or_default();
    out.push(Outcome {
        what: "no failed systemd units".into(),
        ok: failed_units.is_empty(),
        detail: failed_units.join(" "),
    });
    // systemd breaks a cycle by dropping a job, which then silently never runs.
    let cycles = report_line(report, "ordering-cycles");
    out.push(Outcome {
        what: "no ordering cycle between units".into(),
        ok: cycles == "0",
        detail: format!("{cycles} 'Found ordering cycle' line(s) in this boot's journal"),
    });
    out.extend(judge_firewall(def, report));
    out.extend(judge_crash_kernel(def, report, ""));
    out.extend(RetentionView::parse(report).judge_first_boot(def));
    if let Some(o) = ovf {
        out.extend(o.judge(&def.network.device, report));
    }
    out
}

/// The rest of the first report line of `kind` (empty when there is none).
pub(super) fn report_line(report: &[String], kind: &str) -> String {
    report
        .iter()
        .find_map(|l| l.strip_prefix(kind).and_then(|r| r.strip_prefix(' ')))
        .map(|r| r.trim().to_string())
        .unwrap_or_default()
}

/// nftables.service loaded a ruleset whose input chain drops by default and accepts SSH and
/// the agent's port (the host's connections through the forwards show the rest).
pub(super) fn judge_firewall(def: &Definition, report: &[String]) -> Vec<Outcome> {
    let rules: Vec<String> = report
        .iter()
        .filter_map(|l| l.strip_prefix("nft "))
        .map(|r| r.trim().to_string())
        .collect();
    let service = report_line(report, "nft-service");
    let policy = rules
        .iter()
        .find(|r| r.starts_with("type filter hook input"))
        .cloned()
        .unwrap_or_else(|| "no input chain".into());
    let ports = [SSH_PORT, def.agent.port].map(|p| p.to_string());
    let open = rules.iter().find(|r| {
        let words: Vec<&str> = r
            .split(|c: char| c.is_whitespace() || "{},".contains(c))
            .filter(|w| !w.is_empty())
            .collect();
        words.starts_with(&["tcp", "dport"])
            && words.last() == Some(&"accept")
            && ports.iter().all(|p| words.contains(&p.as_str()))
    });
    vec![
        Outcome {
            what: format!("{} active", mt_contract::guest::FIREWALL_SERVICE),
            ok: service == "active",
            detail: service,
        },
        Outcome {
            what: "firewall input policy drop".into(),
            ok: policy.ends_with("policy drop;"),
            detail: policy,
        },
        Outcome {
            what: format!("firewall accepts TCP {}", ports.join(" and ")),
            ok: open.is_some(),
            detail: open
                .cloned()
                .unwrap_or_else(|| format!("{} rule(s), none of them", rules.len())),
        },
    ]
}

/// With kdump (the definition's kexec-tools), the kernel reserved crash kernel memory and
/// kdump-tools loaded the capture kernel into it, with the initramfs the image brings.
pub(super) fn judge_crash_kernel(def: &Definition, report: &[String], when: &str) -> Vec<Outcome> {
    let Some(param) = crash_kernel(def) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if when.is_empty() {
        let cmdline = report_line(report, "cmdline");
        out.push(Outcome {
            what: format!("/proc/cmdline has {param}"),
            ok: cmdline.split_whitespace().any(|w| w == param),
            detail: cmdline,
        });
    }
    let loaded = report_line(report, "kexec-crash");
    let mut it = loaded.split_whitespace();
    let (flag, size) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
    out.push(Outcome {
        what: format!("{when}capture kernel loaded (kexec_crash_loaded = 1)"),
        ok: flag == "1" && size.parse::<u64>().is_ok_and(|b| b > 0),
        detail: format!("loaded {flag:?}, {size} bytes reserved"),
    });
    let built = report_line(report, "kdump-initrd-built");
    out.push(Outcome {
        what: format!("{when}capture initramfs from the image, not built at boot"),
        ok: built == "0",
        detail: format!("built {built:?} time(s) this boot"),
    });
    out
}

/// The retention volume as one boot's report shows it (`ret-*` lines).
#[derive(Debug, Default)]
pub(super) struct RetentionView {
    /// The UUID of the file system on the retention disk (found by its WWN link).
    pub(super) disk_uuid: String,
    /// What is mounted at the mount point: UUID and source device.
    pub(super) mounted_uuid: String,
    pub(super) source: String,
    /// The device field of the mount point's fstab line.
    pub(super) fstab: String,
    /// The `UUID=` of every "formatted" and "adopted" line first boot logged this boot.
    pub(super) formatted: Vec<String>,
    pub(super) adopted: Vec<String>,
    /// The contents of the file written before the reboot (after it only).
    pub(super) marker: String,
}

/// Written onto the retention volume before the reboot; its survival shows the volume was
/// not formatted again.
pub(super) const RETENTION_MARKER: &str = "mt-boot-test-marker";

impl RetentionView {
    pub(super) fn parse(report: &[String]) -> RetentionView {
        let words = |kind: &str| -> Vec<String> {
            report_line(report, kind)
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        let mount = words("ret-mount");
        RetentionView {
            disk_uuid: report_line(report, "ret-disk"),
            mounted_uuid: mount.first().cloned().unwrap_or_default(),
            source: mount.get(1).cloned().unwrap_or_default(),
            fstab: report_line(report, "ret-fstab"),
            formatted: words("ret-formatted"),
            adopted: words("ret-adopted"),
            marker: report_line(report, "ret-marker"),
        }
    }

    /// The first boot of a copy found the disk blank, formatted it once and mounted it by UUID.
    pub(super) fn judge_first_boot(&self, def: &Definition) -> Vec<Outcome> {
        let mount = &def.retention_disk.mount;
        let uuid = &self.disk_uuid;
        let spec = format!("UUID={uuid}");
        vec![
            Outcome {
                what: "first boot formatted the retention disk once".into(),
                ok: uuid.len() == 36 && self.formatted == [spec.clone()] && self.adopted.is_empty(),
                detail: format!(
                    "disk {uuid}; formatted [{}] adopted [{}]",
                    self.formatted.join(" "),
                    self.adopted.join(" ")
                ),
            },
            Outcome {
                what: format!("{mount} is that file system, by UUID in fstab"),
                ok: uuid.len() == 36 && self.mounted_uuid == *uuid && self.fstab == spec,
                detail: format!(
                    "mounted {} from {}; fstab {}",
                    self.mounted_uuid, self.source, self.fstab
                ),
            },
        ]
    }

    /// After the restart: the same file system, adopted (not formatted), with its contents.
    pub(super) fn judge_after_reboot(
        &self,
        def: &Definition,
        first: &RetentionView,
        marker: &str,
        when: &str,
    ) -> Vec<Outcome> {
        let uuid = &first.disk_uuid;
        vec![
            Outcome {
                what: format!(
                    "{when}{} still mounted from UUID {uuid}",
                    def.retention_disk.mount
                ),
                ok: !uuid.is_empty()
                    && self.disk_uuid == *uuid
                    && self.mounted_uuid == *uuid
                    && self.fstab == first.fstab,
                detail: format!(
                    "disk {}, mounted {} from {}",
                    self.disk_uuid, self.mounted_uuid, self.source
                ),
            },
            Outcome {
                what: format!("{when}first boot adopted it, formatted nothing"),
                ok: self.formatted.is_empty() && self.adopted == [format!("UUID={uuid}")],
                detail: format!(
                    "formatted [{}] adopted [{}]",
                    self.formatted.join(" "),
                    self.adopted.join(" ")
                ),
            },
            Outcome {
                what: format!("{when}{RETENTION_MARKER} written before it is there"),
                ok: self.marker == marker,
                detail: self.marker.clone(),
            },
        ]
    }
}

/// What `guest::use_command` does with a package, as the check's detail says it.
fn use_what(p: LogicalPackage) -> &'static str {
    match p {
        LogicalPackage::Xfsprogs => "mkfs.xfs, loop mount",
        LogicalPackage::Reiserfs => "mkreiserfs, loop mount",
        LogicalPackage::Perl => "a one-liner",
        LogicalPackage::Lsscsi => "lists the disks",
        LogicalPackage::Rsync => "a copy",
        LogicalPackage::Wget => "runs",
        LogicalPackage::KexecTools => "runs",
        LogicalPackage::Multipath => "dm_multipath loads, multipath -ll",
    }
}
