//! The appliance definition: `appliance/appliance.toml` parsed into typed Rust and validated once.
//!
//! Every later stage (kickstart, Debian build, OVF, boot test, agent configuration) reads a
//! validated `Definition`; none of them re-reads the TOML or repeats a number that lives here.
//! This module holds the types and loading; `validate` the rules, `vsphere` the compatibility
//! table, `error` the field errors, `guest` what the definition hands to the guest (agent.toml,
//! deploy-time defaults, the network description). What the build and the guest must agree on
//! (value rules, deploy-time properties, sizes) lives in `mt_contract` and is re-exported here.

mod error;
mod guest;
mod validate;
mod vsphere;

pub use error::{DefinitionError, FieldError};
pub use mt_contract::deploy::{DeployProperty, DeployType, DEPLOY_PRODUCT_CLASS};
pub use mt_contract::guest::RETENTION_MOUNT_POINT;
pub use mt_contract::network::NetworkMode;
pub use mt_contract::rules::{prefix_to_mask, valid_hostname};
pub use validate::check_sha512_crypt;
pub use vsphere::{guest_id_introduced, DigestAlgorithm, ManifestRisk, VsphereCompat};

use crate::units::ByteSize;
use camino::Utf8Path;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;

/// The failback policy of the product. It is fixed (the definition states it so that the agent's
/// configuration has one source, but a different value is refused).
pub const FIXED_RPO_THRESHOLD_MINUTES: u32 = 15;
pub const FIXED_RETENTION_HOURS: u32 = 24;
pub const FIXED_APP_CONSISTENT_FREQUENCY_MINUTES: u32 = 60;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub appliance: ApplianceInfo,
    pub hardware: Hardware,
    pub os_disk: OsDisk,
    pub retention_disk: RetentionDisk,
    pub network: Network,
    pub system: System,
    pub packages: Vec<LogicalPackage>,
    pub policy: Policy,
    pub agent: Agent,
    /// Deploy-time properties (OVF ProductSection); optional, every field has a default.
    #[serde(default)]
    pub deploy: Deploy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceInfo {
    /// Short name: used for file names (`<name>.ova`, `<name>-disk1.vmdk`) and the OVF id.
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub base: Base,
    /// The oldest vSphere (ESXi/vCenter) release the template must import into.
    #[serde(default)]
    pub vsphere_compat: VsphereCompat,
    /// Manifest digest; the compatibility target chooses one when absent.
    #[serde(default)]
    pub manifest_algorithm: Option<DigestAlgorithm>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Base {
    #[default]
    Debian12,
    Centos6,
}

impl Base {
    pub fn as_str(self) -> &'static str {
        match self {
            Base::Debian12 => "debian12",
            Base::Centos6 => "centos6",
        }
    }
}

impl fmt::Display for Base {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hardware {
    pub vcpus: u32,
    pub memory: ByteSize,
    pub scsi_controller: ScsiController,
    pub nic: NicKind,
    /// `vmx-NN`; defaults to the newest the compatibility target supports.
    #[serde(default)]
    pub version: Option<u32>,
    #[serde(default)]
    pub firmware: Firmware,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScsiController {
    /// VMware Paravirtual SCSI (PVSCSI).
    Paravirtual,
    /// LSI Logic Parallel.
    Lsilogic,
    /// LSI Logic SAS.
    LsilogicSas,
}

impl ScsiController {
    /// OVF `rasd:ResourceSubType`.
    pub fn ovf_subtype(self) -> &'static str {
        match self {
            ScsiController::Paravirtual => "VirtualSCSI",
            ScsiController::Lsilogic => "lsilogic",
            ScsiController::LsilogicSas => "lsilogicsas",
        }
    }
    /// The Linux driver the guest needs for this controller.
    pub fn linux_driver(self) -> &'static str {
        match self {
            ScsiController::Paravirtual => "vmw_pvscsi",
            ScsiController::Lsilogic => "mptspi",
            ScsiController::LsilogicSas => "mptsas",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NicKind {
    Vmxnet3,
    E1000,
}

impl NicKind {
    /// OVF `rasd:ResourceSubType`.
    pub fn ovf_subtype(self) -> &'static str {
        match self {
            NicKind::Vmxnet3 => "VmxNet3",
            NicKind::E1000 => "E1000",
        }
    }
    pub fn linux_driver(self) -> &'static str {
        match self {
            NicKind::Vmxnet3 => "vmxnet3",
            NicKind::E1000 => "e1000",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    #[default]
    Bios,
}

impl Firmware {
    /// The value of the OVF `vmw:Config firmware` key.
    pub fn as_str(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsDisk {
    pub size: ByteSize,
    pub partitions: Vec<Partition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// A mount point (`/`, `/var/crash`, `/home`) or `swap`.
    pub mount: String,
    pub fs: FileSystem,
    /// Size; with `grow = true` it is the minimum and the partition takes the rest of the disk.
    pub size: ByteSize,
    #[serde(default)]
    pub grow: bool,
    /// File system label (also used in fstab); ext4 allows 16 bytes.
    pub label: String,
}

impl Partition {
    pub fn is_swap(&self) -> bool {
        self.fs == FileSystem::Swap
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileSystem {
    Ext4,
    Swap,
    Xfs,
    Vfat,
    Fat32,
}

impl FileSystem {
    pub fn as_str(self) -> &'static str {
        match self {
            FileSystem::Ext4 => "ext4",
            FileSystem::Swap => "swap",
            FileSystem::Xfs => "xfs",
            FileSystem::Vfat => "vfat",
            FileSystem::Fat32 => "fat32",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionDisk {
    pub size: ByteSize,
    #[serde(default = "default_retention_fs")]
    pub fs: FileSystem,
    #[serde(default = "default_retention_mount")]
    pub mount: String,
    /// SCSI unit number on the controller (the OS disk is unit 0).
    #[serde(default = "default_retention_unit")]
    pub scsi_unit: u32,
    #[serde(default = "default_retention_label")]
    pub label: String,
}

fn default_retention_fs() -> FileSystem {
    FileSystem::Ext4
}
fn default_retention_mount() -> String {
    RETENTION_MOUNT_POINT.to_string()
}
fn default_retention_unit() -> u32 {
    1
}
fn default_retention_label() -> String {
    "retention".to_string()
}

/// The OS disk is always unit 0 of the one SCSI controller.
pub const OS_DISK_SCSI_UNIT: u32 = 0;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub hostname: String,
    /// Guest interface name as the installer sees it (el6: `eth0`).
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default = "default_true")]
    pub onboot: bool,
    pub mode: NetworkMode,
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
    #[serde(default)]
    pub prefix: Option<u8>,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
}

fn default_device() -> String {
    "eth0".to_string()
}
fn default_true() -> bool {
    true
}
/// A validated static IPv4 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticIp {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
}

impl StaticIp {
    pub fn netmask(&self) -> Ipv4Addr {
        prefix_to_mask(self.prefix)
    }
}

impl Network {
    /// The static configuration, if the mode is static (validation guarantees it is complete).
    pub fn static_ip(&self) -> Option<StaticIp> {
        match self.mode {
            NetworkMode::Dhcp => None,
            NetworkMode::Static => Some(StaticIp {
                address: self.address?,
                prefix: self.prefix?,
                gateway: self.gateway?,
                dns: self.dns.clone(),
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    pub language: String,
    pub keyboard: String,
    pub timezone: String,
    /// SHA-512 crypt hash (`$6$salt$…`, e.g. from `openssl passwd -6`); never plain text.
    pub root_password_hash: String,
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
}

/// The runbook's packages, by logical name; `packages/<base>.toml` maps them to real packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogicalPackage {
    Xfsprogs,
    Perl,
    Lsscsi,
    Rsync,
    Wget,
    KexecTools,
    Multipath,
    Reiserfs,
}

impl LogicalPackage {
    pub const ALL: [LogicalPackage; 8] = [
        LogicalPackage::Xfsprogs,
        LogicalPackage::Perl,
        LogicalPackage::Lsscsi,
        LogicalPackage::Rsync,
        LogicalPackage::Wget,
        LogicalPackage::KexecTools,
        LogicalPackage::Multipath,
        LogicalPackage::Reiserfs,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            LogicalPackage::Xfsprogs => "xfsprogs",
            LogicalPackage::Perl => "perl",
            LogicalPackage::Lsscsi => "lsscsi",
            LogicalPackage::Rsync => "rsync",
            LogicalPackage::Wget => "wget",
            LogicalPackage::KexecTools => "kexec-tools",
            LogicalPackage::Multipath => "multipath",
            LogicalPackage::Reiserfs => "reiserfs",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub rpo_threshold_minutes: u32,
    pub retention_hours: u32,
    pub app_consistent_frequency_minutes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// TCP port `mt-agent serve` listens on.
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// Whether the OVF offers the deploy-time properties (and declares the environment transports).
    #[serde(default = "default_true")]
    pub properties: bool,
    /// Default of the `ntp_server` property; the other defaults come from `[network]` and
    /// `[system]`. Empty: the deploy wizard starts empty and the guest keeps its NTP settings.
    #[serde(default = "default_ntp_server")]
    pub ntp_server: String,
    /// Default of the `dns_search` property; absent: the domain part of `network.hostname`.
    #[serde(default)]
    pub dns_search: Option<String>,
}

impl Default for Deploy {
    fn default() -> Self {
        Deploy {
            properties: true,
            ntp_server: default_ntp_server(),
            dns_search: None,
        }
    }
}

fn default_ntp_server() -> String {
    "pool.ntp.org".to_string()
}
/// The default definition shipped with the project, relative to the workspace root.
pub const DEFAULT_DEFINITION: &str = "appliance/appliance.toml";

impl Definition {
    /// Reads, parses and validates a definition file.
    pub fn load(path: &Utf8Path) -> Result<Definition, DefinitionError> {
        let text = std::fs::read_to_string(path).map_err(|source| DefinitionError::Read {
            path: path.to_owned(),
            source,
        })?;
        Definition::from_toml(&text, path)
    }

    /// Parses and validates definition text; `path` is only used in messages.
    pub fn from_toml(text: &str, path: &Utf8Path) -> Result<Definition, DefinitionError> {
        let def: Definition = toml::from_str(text).map_err(|e| DefinitionError::Parse {
            path: path.to_owned(),
            message: match e.span().and_then(|span| error::field_at(text, span.start)) {
                Some(field) => format!("{field}: {e}"),
                None => e.to_string(),
            },
        })?;
        let errors = def.validate();
        if errors.is_empty() {
            Ok(def)
        } else {
            Err(DefinitionError::Invalid {
                path: path.to_owned(),
                errors,
            })
        }
    }

    /// The hardware version the OVF declares.
    pub fn hardware_version(&self) -> u32 {
        self.hardware
            .version
            .unwrap_or_else(|| self.appliance.vsphere_compat.max_hardware_version())
    }

    pub fn manifest_algorithm(&self) -> DigestAlgorithm {
        self.appliance
            .manifest_algorithm
            .unwrap_or_else(|| self.appliance.vsphere_compat.manifest_algorithm())
    }

    /// The partition mounted at `/`.
    pub fn root_partition(&self) -> &Partition {
        self.os_disk
            .partitions
            .iter()
            .find(|p| p.mount == "/")
            .expect("validated definition has a / partition")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_definition_is_valid() {
        let path = Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("appliance.toml");
        let def = Definition::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(def.appliance.base, Base::Debian12);
        assert_eq!(def.retention_disk.mount, RETENTION_MOUNT_POINT);
        assert_eq!(def.packages.len(), LogicalPackage::ALL.len());
    }

    #[test]
    fn deploy_defaults_come_from_the_build_time_values_and_never_carry_a_passphrase() {
        let path = Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("appliance.toml");
        let mut def = Definition::load(&path).unwrap();
        def.network.mode = NetworkMode::Static;
        def.network.hostname = "mt7.dr.example.com".into();
        def.network.address = Some(Ipv4Addr::new(10, 1, 2, 3));
        def.network.prefix = Some(23);
        def.network.gateway = Some(Ipv4Addr::new(10, 1, 2, 1));
        def.network.dns = vec![Ipv4Addr::new(10, 1, 2, 53), Ipv4Addr::new(10, 1, 2, 54)];
        assert!(def.validate().is_empty());
        let got = |p: DeployProperty| p.default_value(&def);
        assert_eq!(got(DeployProperty::Hostname), "mt7.dr.example.com");
        assert_eq!(got(DeployProperty::IpMode), "static");
        assert_eq!(got(DeployProperty::IpAddress), "10.1.2.3");
        assert_eq!(got(DeployProperty::IpPrefix), "23");
        assert_eq!(got(DeployProperty::Gateway), "10.1.2.1");
        assert_eq!(got(DeployProperty::DnsServers), "10.1.2.53,10.1.2.54");
        assert_eq!(got(DeployProperty::DnsSearch), "dr.example.com");
        assert_eq!(got(DeployProperty::AgentPassphrase), "");
        def.deploy.dns_search = Some("Bad_Domain".into());
        def.deploy.ntp_server = "ntp server".into();
        let fields: Vec<String> = def.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["deploy.ntp_server", "deploy.dns_search"]);
    }
}
