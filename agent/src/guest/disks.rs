//! SCSI disk discovery from sysfs: every `sd*` disk with its H:C:T:L address, size, stable ID
//! (VPD page 0x83 as `scsi_id --whitelisted` prints it, else the kernel's `device/wwid`) and
//! its role on the master target (OS, retention, a replication target, free). The roles of
//! the appliance's own disks come from the definition's rule (the OS disk is SCSI unit 0, the
//! retention disk the configured unit, on the appliance's controller, the lowest-numbered
//! SCSI host); first boot records their IDs so `serve` can notice a changed identity.
//!
//! Every path (sysfs, /dev, the target root) is injectable, so tests use a fake tree. This
//! module only reads.

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

/// Where the system's trees are (`/sys`, `/dev`, `/`); tests point them at a scratch tree.
#[derive(Debug, Clone)]
pub struct SystemPaths {
    pub sys: Utf8PathBuf,
    pub dev: Utf8PathBuf,
    pub root: Utf8PathBuf,
}

impl Default for SystemPaths {
    fn default() -> Self {
        SystemPaths {
            sys: "/sys".into(),
            dev: "/dev".into(),
            root: "/".into(),
        }
    }
}

impl SystemPaths {
    /// A path of the target root (`/etc/fstab` -> `<root>/etc/fstab`).
    pub fn in_root(&self, p: &str) -> Utf8PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }
}

/// What VMware needs for a disk to have a stable ID.
pub const ENABLE_UUID_HINT: &str = "no stable ID: set disk.EnableUUID=TRUE in the VM's configuration parameters (VM Options > Advanced > Configuration Parameters) and power-cycle the VM";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Os,
    Retention,
    Target,
    Free,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScsiAddress {
    pub host: u32,
    pub channel: u32,
    pub target: u32,
    pub lun: u32,
}

impl std::fmt::Display for ScsiAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.host, self.channel, self.target, self.lun
        )
    }
}

impl std::str::FromStr for ScsiAddress {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        let v: Vec<u32> = s
            .split(':')
            .map(|p| p.parse().map_err(|_| ()))
            .collect::<std::result::Result<_, _>>()?;
        match v[..] {
            [host, channel, target, lun] => Ok(ScsiAddress {
                host,
                channel,
                target,
                lun,
            }),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disk {
    /// Kernel name (`sdb`).
    pub name: String,
    pub device: Utf8PathBuf,
    pub address: ScsiAddress,
    pub size_bytes: u64,
    /// `3` + NAA hex for VMware disks with disk.EnableUUID (`36000c29…`), as scsi_id prints it.
    pub stable_id: Option<String>,
    pub role: Role,
    /// Why the disk needs attention (no stable ID), if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The SCSI unit numbers of the appliance's own disks.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub os_unit: u32,
    pub retention_unit: u32,
}

/// Every SCSI disk, sorted by address; `targets` are the devices replication groups write to.
pub fn discover(paths: &SystemPaths, rule: Rule, targets: &[Utf8PathBuf]) -> Result<Vec<Disk>> {
    let block = paths.sys.join("block");
    let mut disks = Vec::new();
    let entries = block
        .read_dir_utf8()
        .with_context(|| format!("cannot list {block}"))?;
    for e in entries.flatten() {
        let name = e.file_name().to_owned();
        if !name.starts_with("sd") {
            continue;
        }
        let dir = block.join(&name);
        let Some(address) = std::fs::read_link(dir.join("device"))
            .ok()
            .and_then(|t| t.file_name()?.to_str()?.parse().ok())
        else {
            continue;
        };
        let sectors: u64 = std::fs::read_to_string(dir.join("size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let stable_id = stable_id(&dir.join("device"));
        disks.push(Disk {
            device: paths.dev.join(&name),
            name,
            address,
            size_bytes: sectors * 512,
            problem: stable_id.is_none().then(|| ENABLE_UUID_HINT.to_owned()),
            stable_id,
            role: Role::Free,
        });
    }
    disks.sort_by_key(|d| {
        (
            d.address.host,
            d.address.channel,
            d.address.target,
            d.address.lun,
        )
    });
    let controller = disks.iter().map(|d| d.address.host).min();
    let resolved: Vec<Utf8PathBuf> = targets
        .iter()
        .map(|t| {
            std::fs::canonicalize(t)
                .ok()
                .and_then(|p| Utf8PathBuf::from_path_buf(p).ok())
                .unwrap_or_else(|| t.clone())
        })
        .collect();
    for d in &mut disks {
        let own = Some(d.address.host) == controller && d.address.lun == 0;
        d.role = if own && d.address.target == rule.os_unit {
            Role::Os
        } else if own && d.address.target == rule.retention_unit {
            Role::Retention
        } else if resolved.contains(&d.device)
            || d.stable_id
                .as_ref()
                .is_some_and(|id| targets.iter().any(|t| t.as_str().contains(id.as_str())))
        {
            Role::Target
        } else {
            Role::Free
        };
    }
    Ok(disks)
}

/// The ID scsi_id would print: the best LUN-associated designator of VPD page 0x83, else the
/// kernel's `wwid` attribute (`naa.…` -> `3…`).
pub fn stable_id(device_dir: &Utf8Path) -> Option<String> {
    if let Ok(page) = std::fs::read(device_dir.join("vpd_pg83")) {
        if let Some(id) = id_from_vpd83(&page) {
            return Some(id);
        }
    }
    let wwid = std::fs::read_to_string(device_dir.join("wwid")).ok()?;
    let wwid = wwid.trim();
    let (kind, rest) = wwid.split_once('.')?;
    let prefix = match kind {
        "naa" => "3",
        "eui" => "2",
        "t10" => "1",
        _ => "8",
    };
    (!rest.trim().is_empty()).then(|| format!("{prefix}{}", rest.trim().to_ascii_lowercase()))
}

/// Parses the Device Identification VPD page (SPC-4 7.8.6): prefers NAA, then EUI-64, then
/// SCSI name string, then T10 vendor ID, each associated with the LUN (not the port).
pub fn id_from_vpd83(page: &[u8]) -> Option<String> {
    if page.len() < 4 || page[1] != 0x83 {
        return None;
    }
    let len = (u16::from_be_bytes([page[2], page[3]]) as usize + 4).min(page.len());
    let mut best: Option<(u8, String)> = None;
    let mut at = 4;
    while at + 4 <= len {
        let code_set = page[at] & 0x0f;
        let association = (page[at + 1] >> 4) & 0x03;
        let kind = page[at + 1] & 0x0f;
        let dlen = page[at + 3] as usize;
        let Some(id) = page.get(at + 4..at + 4 + dlen) else {
            break;
        };
        at += 4 + dlen;
        if association != 0 || id.is_empty() {
            continue;
        }
        let hex = || id.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let text = || {
            String::from_utf8_lossy(id)
                .trim_end_matches('\0')
                .trim()
                .replace(' ', "_")
        };
        let (rank, s) = match kind {
            3 => (4, format!("3{}", hex())),
            2 => (3, format!("2{}", hex())),
            8 if code_set == 3 => (2, format!("8{}", text())),
            1 => (
                1,
                format!("1{}", if code_set == 1 { hex() } else { text() }),
            ),
            _ => continue,
        };
        if best.as_ref().is_none_or(|(r, _)| rank > *r) {
            best = Some((rank, s));
        }
    }
    best.map(|(_, s)| s)
}

/// The IDs of the appliance's own disks, recorded at first boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub os_disk: Option<String>,
    pub retention_disk: Option<String>,
}

pub const IDENTITY_FILE: &str = "/var/lib/mt-agent/disk-identity.toml";

impl Identity {
    pub fn of(disks: &[Disk]) -> Identity {
        let id = |r| {
            disks
                .iter()
                .find(|d| d.role == r)
                .and_then(|d| d.stable_id.clone())
        };
        Identity {
            os_disk: id(Role::Os),
            retention_disk: id(Role::Retention),
        }
    }

    pub fn load(paths: &SystemPaths) -> Result<Option<Identity>> {
        let p = paths.in_root(IDENTITY_FILE);
        match std::fs::read_to_string(&p) {
            Ok(t) => Ok(Some(
                toml::from_str(&t).with_context(|| format!("{p} is damaged"))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {p}")),
        }
    }

    /// Why the disks seen now are not the ones first boot recorded, if they are not.
    pub fn changed(&self, now: &Identity) -> Option<String> {
        let mut why = Vec::new();
        for (what, then, now) in [
            ("OS disk", &self.os_disk, &now.os_disk),
            ("retention disk", &self.retention_disk, &now.retention_disk),
        ] {
            if then.is_some() && then != now {
                why.push(format!(
                    "the {what} was {} at first boot and is {} now",
                    then.as_deref().unwrap_or("-"),
                    now.as_deref().unwrap_or("missing or without a stable ID")
                ));
            }
        }
        (!why.is_empty()).then(|| {
            format!(
                "the master target's own disks changed identity ({}), as after a storage migration or a disk swap; the recovery points may not belong to this retention disk. Check the VM's disks; if the change is intended, remove {IDENTITY_FILE} and run `mt-agent firstboot` to record the new ones",
                why.join("; ")
            )
        })
    }
}

/// The rule of the definition as the agent configuration carries it.
pub fn rule_of(cfg: &crate::config::AgentConfig) -> Option<Rule> {
    cfg.retention_disk.as_ref().map(|r| Rule {
        os_unit: 0,
        retention_unit: r.scsi_unit,
    })
}

/// For `serve`: refuses when the own disks are not the ones first boot recorded. Without a
/// record (first boot has not run, or not on an appliance) there is nothing to compare.
pub fn verify_identity(paths: &SystemPaths, cfg: &crate::config::AgentConfig) -> Result<()> {
    let (Some(then), Some(rule)) = (Identity::load(paths)?, rule_of(cfg)) else {
        return Ok(());
    };
    let now = Identity::of(&discover(paths, rule, &[])?);
    match then.changed(&now) {
        Some(why) => anyhow::bail!("{why}"),
        None => Ok(()),
    }
}

/// `mt-agent disks`: a table, or JSON with `--json`.
pub fn render(disks: &[Disk]) -> String {
    let mut s = format!(
        "{:<6} {:<9} {:>10}  {:<10} STABLE ID\n",
        "DISK", "H:C:T:L", "SIZE", "ROLE"
    );
    for d in disks {
        let role = serde_json::to_value(d.role).unwrap_or_default();
        s.push_str(&format!(
            "{:<6} {:<9} {:>10}  {:<10} {}\n",
            d.name,
            d.address.to_string(),
            human(d.size_bytes),
            role.as_str().unwrap_or("?"),
            d.stable_id.as_deref().unwrap_or("-")
        ));
    }
    for d in disks.iter().filter(|d| d.problem.is_some()) {
        s.push_str(&format!(
            "{}: {}\n",
            d.name,
            d.problem.as_deref().unwrap_or_default()
        ));
    }
    s
}

fn human(b: u64) -> String {
    mt_contract::units::ByteSize(b).approx().to_string()
}

#[cfg(test)]
pub mod fake {
    //! A fake sysfs/dev tree shaped like the kernel's: `/sys/block/sdX` with `size` and a
    //! `device` link whose last component is H:C:T:L, VPD page 0x83 bytes, `/dev/sdX` files.
    use super::*;

    pub struct FakeSystem {
        pub paths: SystemPaths,
        pub base: Utf8PathBuf,
    }

    /// A VMware-style page 0x83: a T10 vendor ID and an NAA-6 ID for the LUN.
    pub fn vpd83(naa: &[u8; 16]) -> Vec<u8> {
        let t10 = b"VMware  Virtual disk    ";
        let mut body = vec![0x02, 0x01, 0x00, t10.len() as u8];
        body.extend_from_slice(t10);
        body.extend_from_slice(&[0x01, 0x03, 0x00, 16]);
        body.extend_from_slice(naa);
        let mut page = vec![0x00, 0x83];
        page.extend_from_slice(&(body.len() as u16).to_be_bytes());
        page.extend(body);
        page
    }

    impl FakeSystem {
        pub fn new(name: &str) -> FakeSystem {
            let base = testkit::scratch(&format!("fakesys-{name}"));
            let paths = SystemPaths {
                sys: base.join("sys"),
                dev: base.join("dev"),
                root: base.join("root"),
            };
            for d in [&paths.sys, &paths.dev, &paths.root] {
                std::fs::create_dir_all(d.join("block")).unwrap();
            }
            std::fs::create_dir_all(paths.root.join("etc")).unwrap();
            FakeSystem { paths, base }
        }

        /// A disk of `bytes` at `addr`; `naa` makes a stable ID. The device node is a sparse
        /// file of that size.
        pub fn disk(&self, name: &str, addr: &str, bytes: u64, naa: Option<[u8; 16]>) {
            let devdir = self.base.join("devices").join(addr);
            std::fs::create_dir_all(&devdir).unwrap();
            if let Some(n) = naa {
                std::fs::write(devdir.join("vpd_pg83"), vpd83(&n)).unwrap();
            }
            let dir = self.paths.sys.join("block").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::symlink(&devdir, dir.join("device")).unwrap();
            std::fs::write(dir.join("size"), format!("{}\n", bytes / 512)).unwrap();
            let dev = std::fs::File::create(self.paths.dev.join(name)).unwrap();
            dev.set_len(bytes).unwrap();
        }
    }

    impl Drop for FakeSystem {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                let _ = std::fs::remove_dir_all(&self.base);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;

    const RULE: Rule = Rule {
        os_unit: 0,
        retention_unit: 1,
    };

    fn naa(last: u8) -> [u8; 16] {
        let mut n = [
            0x60, 0x00, 0xc2, 0x9f, 0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x60, 0x71, 0x82, 0x93,
            0xa4, 0x00,
        ];
        n[15] = last;
        n
    }

    #[test]
    fn disks_get_ids_sizes_and_roles_by_the_rule() {
        let f = FakeSystem::new("roles");
        f.disk("sda", "2:0:0:0", 16 << 30, Some(naa(1)));
        f.disk("sdb", "2:0:1:0", 64 << 30, Some(naa(2)));
        f.disk("sdc", "3:0:0:0", 8 << 30, Some(naa(3)));
        f.disk("sdd", "3:0:1:0", 8 << 30, None);
        let targets = vec![f.paths.dev.join("sdc")];
        let disks = discover(&f.paths, RULE, &targets).unwrap();
        let roles: Vec<(&str, Role)> = disks.iter().map(|d| (d.name.as_str(), d.role)).collect();
        assert_eq!(
            roles,
            [
                ("sda", Role::Os),
                ("sdb", Role::Retention),
                ("sdc", Role::Target),
                ("sdd", Role::Free)
            ]
        );
        assert_eq!(
            disks[0].stable_id.as_deref(),
            Some("36000c29f0a1b2c3d4e5f60718293a401")
        );
        assert_eq!(disks[1].size_bytes, 64 << 30);
        assert_eq!(disks[3].problem.as_deref(), Some(ENABLE_UUID_HINT));
        let table = render(&disks);
        assert!(
            table.contains("sdd: no stable ID: set disk.EnableUUID=TRUE"),
            "{table}"
        );
        assert!(
            table.contains("sdb    2:0:1:0     64.0 GiB  retention  36000c29f"),
            "{table}"
        );
    }

    #[test]
    fn vpd_page_and_wwid_fallback() {
        assert_eq!(
            id_from_vpd83(&vpd83(&naa(9))).as_deref(),
            Some("36000c29f0a1b2c3d4e5f60718293a409")
        );
        assert_eq!(id_from_vpd83(&[0, 0x80, 0, 0]), None);
        // Only a T10 vendor ID (QEMU without a wwn): scsi_id prints it with '_' for spaces.
        let mut page = vec![0, 0x83, 0, 12, 0x02, 0x01, 0, 8];
        page.extend_from_slice(b"QEMU  hd");
        assert_eq!(id_from_vpd83(&page).as_deref(), Some("1QEMU__hd"));
        let d = testkit::scratch("wwid");
        std::fs::write(d.join("wwid"), "naa.6000C29F0A1B2C3D\n").unwrap();
        assert_eq!(stable_id(&d).as_deref(), Some("36000c29f0a1b2c3d"));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_changed_identity_is_explained() {
        let then = Identity {
            os_disk: Some("3a".into()),
            retention_disk: Some("3b".into()),
        };
        assert_eq!(then.changed(&then.clone()), None);
        let now = Identity {
            os_disk: Some("3a".into()),
            retention_disk: Some("3c".into()),
        };
        let why = then.changed(&now).unwrap();
        assert!(
            why.contains("the retention disk was 3b at first boot and is 3c now"),
            "{why}"
        );
    }
}
