//! Validation of a parsed definition: every rule of every field, all problems reported at once.
//! The rules the guest applies too (host name, addresses, the static subnet, SSH keys) come from
//! `mt_contract::rules`; the wording of the messages, naming the definition's fields, is here.

use super::*;
use crate::units::MIB;
use mt_contract::rules::{self, StaticProblem};
use std::collections::BTreeSet;

impl Definition {
    /// Every check; an empty list means the definition is valid.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut v = Validator::default();
        self.validate_appliance(&mut v);
        self.validate_hardware(&mut v);
        self.validate_os_disk(&mut v);
        self.validate_retention(&mut v);
        self.validate_network(&mut v);
        self.validate_system(&mut v);
        self.validate_packages(&mut v);
        self.validate_policy(&mut v);
        if self.agent.port == 0 {
            v.err("agent.port", "must be a TCP port between 1 and 65535");
        }
        self.validate_deploy(&mut v);
        v.errors
    }

    fn validate_appliance(&self, v: &mut Validator) {
        let name = &self.appliance.name;
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            || name.starts_with(['.', '-'])
        {
            v.err(
                "appliance.name",
                format!("{name:?} must be 1-64 characters of A-Z a-z 0-9 . _ - (it names files in the OVA), not starting with . or -"),
            );
        }
        let ver = &self.appliance.version;
        if ver.is_empty()
            || ver.len() > 64
            || ver.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            v.err(
                "appliance.version",
                format!("{ver:?} must be 1-64 characters without spaces"),
            );
        }
    }

    fn validate_hardware(&self, v: &mut Validator) {
        let h = &self.hardware;
        if !(1..=128).contains(&h.vcpus) {
            v.err(
                "hardware.vcpus",
                format!("{} must be between 1 and 128", h.vcpus),
            );
        }
        if h.memory.bytes() < 512 * MIB || !h.memory.is_multiple_of(4 * MIB) {
            v.err(
                "hardware.memory",
                format!(
                    "{} must be at least 512MiB and a multiple of 4MiB",
                    h.memory
                ),
            );
        }
        if let Some(ver) = h.version {
            let compat = self.appliance.vsphere_compat;
            if ver < 7 {
                v.err(
                    "hardware.version",
                    format!("vmx-{ver} is older than any supported ESXi (7 is the minimum)"),
                );
            } else if ver > compat.max_hardware_version() {
                v.err(
                    "hardware.version",
                    format!(
                        "vmx-{ver} is too new for appliance.vsphere_compat = \"{}\" (that release runs up to vmx-{}); lower it or raise vsphere_compat",
                        compat.as_str(),
                        compat.max_hardware_version()
                    ),
                );
            }
        }
    }

    fn validate_os_disk(&self, v: &mut Validator) {
        let d = &self.os_disk;
        if !d.size.is_multiple_of(MIB) || d.size.bytes() < 1024 * MIB {
            v.err(
                "os_disk.size",
                format!("{} must be at least 1GiB and a whole number of MiB", d.size),
            );
        }
        let mut mounts = BTreeSet::new();
        let mut labels = BTreeSet::new();
        let mut growers = 0;
        for (i, p) in d.partitions.iter().enumerate() {
            let f = |name: &str| format!("os_disk.partitions[{i}].{name}");
            if p.is_swap() {
                if p.mount != "swap" {
                    v.err(
                        f("mount"),
                        format!("a swap partition has mount = \"swap\", not {:?}", p.mount),
                    );
                }
            } else {
                if p.fs != FileSystem::Ext4 {
                    v.err(
                        f("fs"),
                        format!(
                            "{} is not supported on the OS disk: use ext4 (or swap)",
                            p.fs.as_str()
                        ),
                    );
                }
                if !valid_mount_point(&p.mount) {
                    v.err(
                        f("mount"),
                        format!(
                            "{:?} is not an absolute mount point of plain path components",
                            p.mount
                        ),
                    );
                }
                if p.mount == RETENTION_MOUNT_POINT {
                    v.err(f("mount"), format!("{RETENTION_MOUNT_POINT} belongs on the retention disk, not the OS disk"));
                }
            }
            if !mounts.insert(p.mount.as_str()) {
                v.err(f("mount"), format!("{:?} is defined twice", p.mount));
            }
            if p.size.bytes() == 0 || !p.size.is_multiple_of(MIB) {
                v.err(
                    f("size"),
                    format!("{} must be a non-zero whole number of MiB", p.size),
                );
            }
            if p.grow {
                growers += 1;
            }
            if !valid_label(&p.label) {
                v.err(
                    f("label"),
                    format!("{:?} must be 1-16 characters of A-Z a-z 0-9 _ -", p.label),
                );
            }
            if !labels.insert(p.label.as_str()) {
                v.err(f("label"), format!("{:?} is used twice", p.label));
            }
        }
        if !mounts.contains("/") {
            v.err(
                "os_disk.partitions",
                "there is no partition with mount = \"/\"",
            );
        }
        if !d.partitions.iter().any(Partition::is_swap) {
            v.err(
                "os_disk.partitions",
                "there is no swap partition (fs = \"swap\")",
            );
        }
        if growers > 1 {
            v.err(
                "os_disk.partitions",
                "only one partition may have grow = true",
            );
        }
        if d.partitions.len() > 4 {
            v.err(
                "os_disk.partitions",
                "an MBR disk holds at most 4 primary partitions",
            );
        }
        if let Err(e) = crate::layout::DiskLayout::for_os_disk(d) {
            v.err("os_disk.partitions", e.to_string());
        }
    }

    fn validate_retention(&self, v: &mut Validator) {
        let r = &self.retention_disk;
        match r.fs {
            FileSystem::Vfat | FileSystem::Fat32 => v.err(
                "retention_disk.fs",
                format!(
                    "{} is not eligible for retention (FAT/FAT32 volumes are refused): use ext4",
                    r.fs.as_str()
                ),
            ),
            FileSystem::Swap => v.err(
                "retention_disk.fs",
                "swap cannot hold the retention journal: use ext4",
            ),
            FileSystem::Ext4 | FileSystem::Xfs => {}
        }
        if r.size.bytes() == 0 {
            v.err(
                "retention_disk.size",
                "the retention disk must have a non-zero capacity",
            );
        } else if r.size.bytes() < 64 * MIB || !r.size.is_multiple_of(MIB) {
            v.err(
                "retention_disk.size",
                format!(
                    "{} must be at least 64MiB and a whole number of MiB",
                    r.size
                ),
            );
        }
        if r.mount != RETENTION_MOUNT_POINT {
            v.err(
                "retention_disk.mount",
                format!("{:?}: the agent and the runbook expect the retention drive at {RETENTION_MOUNT_POINT}", r.mount),
            );
        }
        if r.scsi_unit == OS_DISK_SCSI_UNIT {
            v.err(
                "retention_disk.scsi_unit",
                "the retention drive must be its own disk: unit 0 is the OS disk",
            );
        } else if r.scsi_unit == 7 || r.scsi_unit > 15 {
            v.err(
                "retention_disk.scsi_unit",
                format!(
                    "{} is not a usable SCSI unit (1-6 or 8-15; 7 is the controller)",
                    r.scsi_unit
                ),
            );
        }
        if !valid_label(&r.label) {
            v.err(
                "retention_disk.label",
                format!("{:?} must be 1-16 characters of A-Z a-z 0-9 _ -", r.label),
            );
        }
        if self.os_disk.partitions.iter().any(|p| p.label == r.label) {
            v.err(
                "retention_disk.label",
                format!("{:?} is also an OS disk partition label", r.label),
            );
        }
    }

    fn validate_network(&self, v: &mut Validator) {
        let n = &self.network;
        if !valid_hostname(&n.hostname) {
            v.err(
                "network.hostname",
                format!("{:?} is not a host name: dot-separated labels of a-z 0-9 - (1-63 each, 253 in all), not starting or ending with -", n.hostname),
            );
        }
        if n.device.is_empty()
            || n.device.len() > 15
            || !n.device.chars().all(|c| c.is_ascii_alphanumeric())
        {
            v.err(
                "network.device",
                format!("{:?} is not an interface name", n.device),
            );
        }
        match n.mode {
            NetworkMode::Dhcp => {
                for (field, set) in [
                    ("network.address", n.address.is_some()),
                    ("network.prefix", n.prefix.is_some()),
                    ("network.gateway", n.gateway.is_some()),
                ] {
                    if set {
                        v.err(
                            field,
                            "is only used with mode = \"static\"; remove it or switch the mode",
                        );
                    }
                }
            }
            NetworkMode::Static => {
                let (Some(addr), Some(prefix), Some(gw)) = (n.address, n.prefix, n.gateway) else {
                    for (field, missing) in [
                        ("network.address", n.address.is_none()),
                        ("network.prefix", n.prefix.is_none()),
                        ("network.gateway", n.gateway.is_none()),
                    ] {
                        if missing {
                            v.err(field, "is required with mode = \"static\"");
                        }
                    }
                    return;
                };
                if !rules::PREFIX_RANGE.contains(&prefix) {
                    v.err(
                        "network.prefix",
                        format!("/{prefix} must be between /8 and /30"),
                    );
                    return;
                }
                for problem in rules::check_static(addr, prefix, gw) {
                    match problem {
                        StaticProblem::UnusableAddress(subnet) => v.err(
                            "network.address",
                            format!("{addr} is not a usable host address in {subnet}"),
                        ),
                        StaticProblem::GatewayOutside(subnet) => v.err(
                            "network.gateway",
                            format!("{gw} is outside the subnet {subnet} of network.address"),
                        ),
                        StaticProblem::GatewayReserved => v.err(
                            "network.gateway",
                            format!("{gw} cannot be the network, broadcast or own address"),
                        ),
                    }
                }
                if n.dns.is_empty() {
                    v.err(
                        "network.dns",
                        "a static configuration needs at least one DNS server",
                    );
                }
            }
        }
        if n.dns.len() > rules::MAX_DNS_SERVERS {
            v.err(
                "network.dns",
                "at most 3 DNS servers (the resolver uses no more)",
            );
        }
        for (i, d) in n.dns.iter().enumerate() {
            if !rules::usable_unicast(*d) {
                v.err(
                    format!("network.dns[{i}]"),
                    format!("{d} is not a unicast address"),
                );
            }
        }
    }

    fn validate_deploy(&self, v: &mut Validator) {
        let d = &self.deploy;
        if !d.ntp_server.is_empty() && !rules::valid_host_or_ipv4(&d.ntp_server) {
            v.err(
                "deploy.ntp_server",
                format!(
                    "{:?} is neither an IPv4 address nor a host name; use \"\" for none",
                    d.ntp_server
                ),
            );
        }
        if let Some(search) = &d.dns_search {
            if !search.is_empty() && !valid_hostname(search) {
                v.err(
                    "deploy.dns_search",
                    format!("{search:?} is not a domain name (dot-separated labels of a-z 0-9 -)"),
                );
            }
        }
    }

    fn validate_system(&self, v: &mut Validator) {
        let s = &self.system;
        if s.language != "en_US.UTF-8" {
            v.err(
                "system.language",
                format!("{:?}: the appliance is built with en_US.UTF-8", s.language),
            );
        }
        if s.keyboard != "us" {
            v.err(
                "system.keyboard",
                format!(
                    "{:?}: the appliance is built with the us keyboard",
                    s.keyboard
                ),
            );
        }
        if !valid_timezone(&s.timezone) {
            v.err(
                "system.timezone",
                format!(
                    "{:?} is not an Olson time zone name like \"UTC\" or \"Europe/Berlin\"",
                    s.timezone
                ),
            );
        }
        if let Err(why) = check_sha512_crypt(&s.root_password_hash) {
            v.err("system.root_password_hash", why);
        }
        for (i, key) in s.ssh_authorized_keys.iter().enumerate() {
            if let Err(why) = rules::check_ssh_public_key(key) {
                v.err(format!("system.ssh_authorized_keys[{i}]"), why.to_string());
            }
        }
    }

    fn validate_packages(&self, v: &mut Validator) {
        let mut seen = BTreeSet::new();
        for (i, p) in self.packages.iter().enumerate() {
            if !seen.insert(*p) {
                v.err(
                    format!("packages[{i}]"),
                    format!("{:?} is listed twice", p.as_str()),
                );
            }
        }
    }

    fn validate_policy(&self, v: &mut Validator) {
        let p = &self.policy;
        for (field, got, fixed, unit) in [
            (
                "policy.rpo_threshold_minutes",
                p.rpo_threshold_minutes,
                FIXED_RPO_THRESHOLD_MINUTES,
                "minutes",
            ),
            (
                "policy.retention_hours",
                p.retention_hours,
                FIXED_RETENTION_HOURS,
                "hours",
            ),
            (
                "policy.app_consistent_frequency_minutes",
                p.app_consistent_frequency_minutes,
                FIXED_APP_CONSISTENT_FREQUENCY_MINUTES,
                "minutes",
            ),
        ] {
            if got != fixed {
                v.err(
                    field,
                    format!("{got}: the failback policy is fixed at {fixed} {unit}"),
                );
            }
        }
    }
}

#[derive(Default)]
pub(super) struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    pub(super) fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}
fn valid_mount_point(m: &str) -> bool {
    m == "/"
        || (m.starts_with('/')
            && !m.ends_with('/')
            && m[1..].split('/').all(|c| {
                !c.is_empty()
                    && c != "."
                    && c != ".."
                    && c.chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
            }))
}

fn valid_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 16
        && l.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn valid_timezone(tz: &str) -> bool {
    !tz.is_empty()
        && tz.len() <= 64
        && !tz.starts_with('/')
        && tz.split('/').all(|c| {
            !c.is_empty()
                && c != ".."
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "_+-".contains(ch))
        })
}

const CRYPT_ALPHABET: &str = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Accepts only a SHA-512 crypt string: `$6$[rounds=N$]salt$hash` with an 86-character hash.
pub fn check_sha512_crypt(h: &str) -> Result<(), String> {
    let what = "must be a SHA-512 crypt hash such as `openssl passwd -6` prints ($6$salt$ then 86 characters of ./0-9A-Za-z), never a plain-text password";
    let Some(rest) = h.strip_prefix("$6$") else {
        return Err(format!("does not start with $6$: it {what}"));
    };
    let mut parts: Vec<&str> = rest.split('$').collect();
    if parts.first().is_some_and(|p| p.starts_with("rounds=")) {
        let rounds = parts.remove(0);
        if rounds["rounds=".len()..].parse::<u32>().is_err() {
            return Err(format!("has a malformed rounds= field: it {what}"));
        }
    }
    let [salt, hash] = parts.as_slice() else {
        return Err(format!("is not of the form $6$salt$hash: it {what}"));
    };
    if salt.is_empty() || salt.len() > 16 || !salt.chars().all(|c| CRYPT_ALPHABET.contains(c)) {
        return Err(format!(
            "has a salt that is not 1-16 characters of ./0-9A-Za-z: it {what}"
        ));
    }
    if hash.len() != 86 || !hash.chars().all(|c| CRYPT_ALPHABET.contains(c)) {
        return Err(format!(
            "has a hash part that is not 86 characters of ./0-9A-Za-z: it {what}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypt_hashes_are_accepted_and_plain_text_is_not() {
        let good = format!("$6$abcdefgh${}", "A".repeat(86));
        assert!(check_sha512_crypt(&good).is_ok());
        let rounds = format!("$6$rounds=5000$abc${}", "b/".repeat(43));
        assert!(check_sha512_crypt(&rounds).is_ok());
        for bad in [
            "hunter2",
            "$1$abc$def",
            "$6$abc$short",
            &format!("$6$a#b${}", "A".repeat(86)),
        ] {
            assert!(check_sha512_crypt(bad).is_err(), "{bad}");
        }
    }
}
