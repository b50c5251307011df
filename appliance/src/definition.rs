//! The appliance definition: `appliance/appliance.toml` parsed into typed Rust and validated once.
//!
//! Every later stage (kickstart, Debian build, OVF, boot test, agent configuration) reads a
//! validated `Definition`; none of them re-reads the TOML or repeats a number that lives here.

use crate::units::{ByteSize, MIB};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

/// The failback policy of the product. It is fixed (the definition states it so that the agent's
/// configuration has one source, but a different value is refused).
pub const FIXED_RPO_THRESHOLD_MINUTES: u32 = 15;
pub const FIXED_RETENTION_HOURS: u32 = 24;
pub const FIXED_APP_CONSISTENT_FREQUENCY_MINUTES: u32 = 60;

/// The mount point the runbook (and the agent) expect for the retention drive.
pub const RETENTION_MOUNT_POINT: &str = "/mnt/retention";

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub enum VsphereCompat {
    #[serde(rename = "6.0")]
    V6_0,
    #[serde(rename = "6.5")]
    V6_5,
    #[default]
    #[serde(rename = "6.7")]
    V6_7,
    #[serde(rename = "7.0")]
    V7_0,
    #[serde(rename = "8.0")]
    V8_0,
}

impl VsphereCompat {
    pub fn as_str(self) -> &'static str {
        match self {
            VsphereCompat::V6_0 => "6.0",
            VsphereCompat::V6_5 => "6.5",
            VsphereCompat::V6_7 => "6.7",
            VsphereCompat::V7_0 => "7.0",
            VsphereCompat::V8_0 => "8.0",
        }
    }
    /// The newest virtual hardware version (`vmx-NN`) this release runs (VMware KB 1003746).
    pub fn max_hardware_version(self) -> u32 {
        match self {
            VsphereCompat::V6_0 => 11,
            VsphereCompat::V6_5 => 13,
            VsphereCompat::V6_7 => 14,
            VsphereCompat::V7_0 => 17,
            VsphereCompat::V8_0 => 20,
        }
    }
    /// The manifest digest every product of that era accepts: SHA-1 for the 6.0 era
    /// (C# client, PowerCLI 6.x), SHA-256 from 6.5 on (vSphere 8 rejects SHA-1).
    pub fn manifest_algorithm(self) -> DigestAlgorithm {
        match self {
            VsphereCompat::V6_0 => DigestAlgorithm::Sha1,
            _ => DigestAlgorithm::Sha256,
        }
    }
    /// The vSphere guest OS identifier known to this release for the base, and the CIM
    /// OperatingSystemSection id.
    pub fn guest_os(self, base: Base) -> (&'static str, u32) {
        match base {
            Base::Centos6 => match self {
                VsphereCompat::V6_0 | VsphereCompat::V6_5 => ("centos64Guest", 107),
                _ => ("centos6_64Guest", 107),
            },
            Base::Debian12 => match self {
                VsphereCompat::V6_0 => ("debian8_64Guest", 96),
                VsphereCompat::V6_5 | VsphereCompat::V6_7 => ("debian9_64Guest", 96),
                VsphereCompat::V7_0 => ("debian10_64Guest", 96),
                VsphereCompat::V8_0 => ("debian12_64Guest", 96),
            },
        }
    }
}

impl VsphereCompat {
    pub const ALL: [VsphereCompat; 5] = [
        VsphereCompat::V6_0,
        VsphereCompat::V6_5,
        VsphereCompat::V6_7,
        VsphereCompat::V7_0,
        VsphereCompat::V8_0,
    ];

    /// Parses a release as written in the definition (`"6.7"`).
    pub fn from_name(name: &str) -> Option<VsphereCompat> {
        VsphereCompat::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Whether a manifest digest is accepted by every product of this release's era, and if
    /// not, why: SHA-1 is refused by some 6.5/6.7 builds and by vSphere 8; SHA-256 breaks the
    /// 6.0-era C# client and PowerCLI; SHA-512 is only written by tools for vmx-15 and newer.
    pub fn manifest_algorithm_problem(self, alg: DigestAlgorithm) -> Option<&'static str> {
        match (self, alg) {
            (VsphereCompat::V6_0, DigestAlgorithm::Sha1) => None,
            (VsphereCompat::V6_0, _) => Some(
                "the vSphere 6.0-era C# client and PowerCLI accept only SHA1 manifests",
            ),
            (_, DigestAlgorithm::Sha1) => Some(
                "some vCenter 6.5/6.7 builds and vSphere 8 reject SHA1 manifests (\"Invalid OVF checksum algorithm: SHA1\")",
            ),
            (VsphereCompat::V6_5 | VsphereCompat::V6_7, DigestAlgorithm::Sha512) => Some(
                "SHA512 manifests are only known to import from vSphere 6.7U2 (vmx-15) on; use SHA256",
            ),
            _ => None,
        }
    }

    /// Whether this release knows the vSphere guest OS identifier (`vmw:osType`).
    /// `None` means the identifier is not in this table (it may still be valid).
    pub fn knows_guest_id(self, guest_id: &str) -> Option<bool> {
        guest_id_introduced(guest_id).map(|since| since <= self)
    }
}

/// The oldest release (of the ones a template can target) that lists a Linux guest OS id
/// (vSphere API `VirtualMachineGuestOsIdentifier`, "Since" of each value; ids older than 6.0
/// map to 6.0). Only ids a Linux appliance would plausibly carry are listed.
pub fn guest_id_introduced(guest_id: &str) -> Option<VsphereCompat> {
    use VsphereCompat::*;
    let since = match guest_id {
        "centos64Guest"
        | "centosGuest"
        | "rhel5_64Guest"
        | "rhel6_64Guest"
        | "rhel7_64Guest"
        | "oracleLinux64Guest"
        | "oracleLinux6_64Guest"
        | "oracleLinux7_64Guest"
        | "debian5_64Guest"
        | "debian6_64Guest"
        | "debian7_64Guest"
        | "debian8_64Guest"
        | "ubuntu64Guest"
        | "sles11_64Guest"
        | "sles12_64Guest"
        | "other24xLinux64Guest"
        | "other26xLinux64Guest"
        | "other3xLinux64Guest"
        | "otherLinux64Guest"
        | "otherGuest64" => V6_0,
        "centos6_64Guest"
        | "centos7_64Guest"
        | "debian9_64Guest"
        | "debian10_64Guest"
        | "vmwarePhoton64Guest" => V6_5,
        "centos8_64Guest"
        | "rhel8_64Guest"
        | "other4xLinux64Guest"
        | "sles15_64Guest"
        | "oracleLinux8_64Guest"
        | "asianux8_64Guest" => V6_7,
        "debian11_64Guest" | "other5xLinux64Guest" | "rhel9_64Guest" => V7_0,
        "debian12_64Guest" => V8_0,
        _ => return None,
    };
    Some(since)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl DigestAlgorithm {
    /// The name as it appears in a manifest line (`SHA256(file)= …`).
    pub fn manifest_name(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha1 => "SHA1",
            DigestAlgorithm::Sha256 => "SHA256",
            DigestAlgorithm::Sha512 => "SHA512",
        }
    }
    /// Parses the name used in a manifest line; `None` for anything vSphere does not accept
    /// (`SHA2-256`, `sha256`, `SHA256 `).
    pub fn from_manifest_name(name: &str) -> Option<DigestAlgorithm> {
        match name {
            "SHA1" => Some(DigestAlgorithm::Sha1),
            "SHA256" => Some(DigestAlgorithm::Sha256),
            "SHA512" => Some(DigestAlgorithm::Sha512),
            _ => None,
        }
    }
    /// Length of the hex digest.
    pub fn hex_len(self) -> usize {
        match self {
            DigestAlgorithm::Sha1 => 40,
            DigestAlgorithm::Sha256 => 64,
            DigestAlgorithm::Sha512 => 128,
        }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    Dhcp,
    Static,
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

pub fn prefix_to_mask(prefix: u8) -> Ipv4Addr {
    let bits: u32 = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    Ipv4Addr::from(bits)
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

/// The OVF `ProductSection ovf:class` of the deploy-time properties. vSphere names each
/// property in the OVF environment `<class>.<key>`, so the guest reads `mt.hostname` etc.
pub const DEPLOY_PRODUCT_CLASS: &str = "mt";

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

/// The value type of a deploy-time property, as the OVF declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployType {
    /// `ovf:type="string"`.
    String,
    /// `ovf:type="string"` with `vmw:qualifiers="Ip"`: vSphere offers an IPv4 field.
    Ipv4,
    /// `ovf:type="uint8"`.
    Uint8,
}

/// One deploy-time property the OVF offers and `mt-agent ovfenv` applies in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeployProperty {
    Hostname,
    IpMode,
    IpAddress,
    IpPrefix,
    Gateway,
    DnsServers,
    DnsSearch,
    NtpServer,
    AgentPassphrase,
    RootSshKey,
}

impl DeployProperty {
    pub const ALL: [DeployProperty; 10] = [
        DeployProperty::Hostname,
        DeployProperty::IpMode,
        DeployProperty::IpAddress,
        DeployProperty::IpPrefix,
        DeployProperty::Gateway,
        DeployProperty::DnsServers,
        DeployProperty::DnsSearch,
        DeployProperty::NtpServer,
        DeployProperty::AgentPassphrase,
        DeployProperty::RootSshKey,
    ];

    /// `ovf:key`; the environment carries `<DEPLOY_PRODUCT_CLASS>.<key>`.
    pub fn key(self) -> &'static str {
        match self {
            DeployProperty::Hostname => "hostname",
            DeployProperty::IpMode => "ip_mode",
            DeployProperty::IpAddress => "ip_address",
            DeployProperty::IpPrefix => "ip_prefix",
            DeployProperty::Gateway => "gateway",
            DeployProperty::DnsServers => "dns_servers",
            DeployProperty::DnsSearch => "dns_search",
            DeployProperty::NtpServer => "ntp_server",
            DeployProperty::AgentPassphrase => "agent_passphrase",
            DeployProperty::RootSshKey => "root_ssh_key",
        }
    }

    pub fn value_type(self) -> DeployType {
        match self {
            DeployProperty::IpAddress | DeployProperty::Gateway => DeployType::Ipv4,
            DeployProperty::IpPrefix => DeployType::Uint8,
            _ => DeployType::String,
        }
    }

    /// DSP0243 `ovf:qualifiers`: CIM qualifiers, comma-separated as DSP8023 documents the
    /// attribute (vSphere turns them into field checks in the deploy wizard).
    pub fn qualifiers(self) -> Option<&'static str> {
        match self {
            DeployProperty::Hostname => Some("MinLen(1),MaxLen(253)"),
            DeployProperty::IpMode => Some("ValueMap{\"dhcp\",\"static\"}"),
            DeployProperty::IpPrefix => Some("MinValue(8),MaxValue(30)"),
            DeployProperty::DnsServers => Some("MaxLen(47)"),
            DeployProperty::DnsSearch | DeployProperty::NtpServer => Some("MaxLen(253)"),
            DeployProperty::AgentPassphrase => Some("MinLen(8),MaxLen(1024)"),
            DeployProperty::RootSshKey => Some("MaxLen(8192)"),
            DeployProperty::IpAddress | DeployProperty::Gateway => None,
        }
    }

    /// Marked `ovf:password="true"`: vSphere masks it and asks twice.
    pub fn is_password(self) -> bool {
        self == DeployProperty::AgentPassphrase
    }

    pub fn label(self) -> &'static str {
        match self {
            DeployProperty::Hostname => "Host name",
            DeployProperty::IpMode => "IP address assignment",
            DeployProperty::IpAddress => "IPv4 address",
            DeployProperty::IpPrefix => "Network prefix length",
            DeployProperty::Gateway => "Default gateway",
            DeployProperty::DnsServers => "DNS servers",
            DeployProperty::DnsSearch => "DNS search domain",
            DeployProperty::NtpServer => "NTP server",
            DeployProperty::AgentPassphrase => "Agent enrolment passphrase",
            DeployProperty::RootSshKey => "SSH public key for root",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            DeployProperty::Hostname => "Fully qualified host name of the master target (lower-case letters, digits, - and .).",
            DeployProperty::IpMode => "dhcp, or static to use the address, prefix, gateway and DNS servers below.",
            DeployProperty::IpAddress => "The static IPv4 address (ignored with dhcp).",
            DeployProperty::IpPrefix => "The static network's prefix length, 8-30 (24 is 255.255.255.0).",
            DeployProperty::Gateway => "The default gateway, inside the static network (ignored with dhcp).",
            DeployProperty::DnsServers => "Up to 3 DNS server IPv4 addresses separated by commas (needed with static).",
            DeployProperty::DnsSearch => "The DNS search domain, e.g. example.com; empty for none.",
            DeployProperty::NtpServer => "Host name or IPv4 address of the NTP server; empty keeps the image's setting.",
            DeployProperty::AgentPassphrase => "The passphrase a sender must present to replicate to this master target (at least 8 characters). Stored readable only by root.",
            DeployProperty::RootSshKey => "An OpenSSH public key (ssh-ed25519 AAAA... comment) allowed to log in as root; empty for none.",
        }
    }

    /// The value the deploy wizard starts with, derived from the build-time definition.
    /// The passphrase never has one: no secret is baked into the image.
    pub fn default_value(self, def: &Definition) -> String {
        let n = &def.network;
        let opt = |a: Option<Ipv4Addr>| a.map(|a| a.to_string()).unwrap_or_default();
        match self {
            DeployProperty::Hostname => n.hostname.clone(),
            DeployProperty::IpMode => match n.mode {
                NetworkMode::Dhcp => "dhcp".into(),
                NetworkMode::Static => "static".into(),
            },
            DeployProperty::IpAddress => opt(n.address),
            DeployProperty::IpPrefix => n.prefix.unwrap_or(24).to_string(),
            DeployProperty::Gateway => opt(n.gateway),
            DeployProperty::DnsServers => n
                .dns
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(","),
            DeployProperty::DnsSearch => def.deploy.dns_search.clone().unwrap_or_else(|| {
                n.hostname
                    .split_once('.')
                    .map(|(_, domain)| domain.to_string())
                    .unwrap_or_default()
            }),
            DeployProperty::NtpServer => def.deploy.ntp_server.clone(),
            DeployProperty::AgentPassphrase => String::new(),
            DeployProperty::RootSshKey => def
                .system
                .ssh_authorized_keys
                .first()
                .cloned()
                .unwrap_or_default(),
        }
    }
}

/// One thing wrong with a definition: the field (a dotted path) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A definition that could not be read, parsed or validated.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("cannot read the appliance definition {path}: {source}")]
    Read {
        path: Utf8PathBuf,
        source: std::io::Error,
    },
    #[error("the appliance definition {path} is not valid TOML for this schema: {message}")]
    Parse { path: Utf8PathBuf, message: String },
    #[error("the appliance definition {path} is invalid:\n{}", list(.errors))]
    Invalid {
        path: Utf8PathBuf,
        errors: Vec<FieldError>,
    },
}

fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl DefinitionError {
    /// The field errors, when the definition parsed but failed validation.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            DefinitionError::Invalid { errors, .. } => errors,
            _ => &[],
        }
    }
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
            message: match e.span().and_then(|span| field_at(text, span.start)) {
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
                if !(8..=30).contains(&prefix) {
                    v.err(
                        "network.prefix",
                        format!("/{prefix} must be between /8 and /30"),
                    );
                    return;
                }
                let mask = u32::from(prefix_to_mask(prefix));
                let net = u32::from(addr) & mask;
                let bcast = net | !mask;
                if !usable_unicast(addr) || u32::from(addr) == net || u32::from(addr) == bcast {
                    v.err(
                        "network.address",
                        format!(
                            "{addr} is not a usable host address in {}/{prefix}",
                            Ipv4Addr::from(net)
                        ),
                    );
                }
                if u32::from(gw) & mask != net {
                    v.err(
                        "network.gateway",
                        format!(
                            "{gw} is outside the subnet {}/{prefix} of network.address",
                            Ipv4Addr::from(net)
                        ),
                    );
                } else if u32::from(gw) == net || u32::from(gw) == bcast || gw == addr {
                    v.err(
                        "network.gateway",
                        format!("{gw} cannot be the network, broadcast or own address"),
                    );
                }
                if n.dns.is_empty() {
                    v.err(
                        "network.dns",
                        "a static configuration needs at least one DNS server",
                    );
                }
            }
        }
        if n.dns.len() > 3 {
            v.err(
                "network.dns",
                "at most 3 DNS servers (the resolver uses no more)",
            );
        }
        for (i, d) in n.dns.iter().enumerate() {
            if !usable_unicast(*d) {
                v.err(
                    format!("network.dns[{i}]"),
                    format!("{d} is not a unicast address"),
                );
            }
        }
    }

    fn validate_deploy(&self, v: &mut Validator) {
        let d = &self.deploy;
        if !d.ntp_server.is_empty()
            && d.ntp_server.parse::<Ipv4Addr>().is_err()
            && !valid_hostname(&d.ntp_server)
        {
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
            if let Err(why) = check_ssh_public_key(key) {
                v.err(format!("system.ssh_authorized_keys[{i}]"), why);
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

/// The dotted name (`network.address`, `os_disk.partitions[1].size`) of the key whose line holds
/// byte `offset`, so that a value serde rejects (a malformed address, an unknown package) is
/// reported by field like every validation error. `None` where the line has no `key =`.
fn field_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?.trim_start();
    let key = line.split_once('=')?.0.trim();
    if key.is_empty() || key.starts_with(['[', '#']) {
        return None;
    }
    let mut table = String::new();
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for l in text[..line_start].lines().map(str::trim) {
        if let Some(name) = l.strip_prefix("[[").and_then(|r| r.split_once("]]")) {
            let name = name.0.trim().to_string();
            let n = counts.entry(name.clone()).or_insert(0);
            table = format!("{name}[{n}]");
            *n += 1;
        } else if let Some(name) = l.strip_prefix('[').and_then(|r| r.split_once(']')) {
            table = name.0.trim().to_string();
        }
    }
    Some(if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    })
}

#[derive(Default)]
struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}

fn usable_unicast(a: Ipv4Addr) -> bool {
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || a.is_broadcast()
        || a.octets()[0] >= 240)
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

pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
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

fn check_ssh_public_key(key: &str) -> Result<(), String> {
    let mut words = key.split_ascii_whitespace();
    let kind = words.next().unwrap_or("");
    let known = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    if !known.contains(&kind) {
        return Err(format!(
            "starts with {kind:?}, not a public key type ({})",
            known.join(", ")
        ));
    }
    let body = words.next().unwrap_or("");
    if body.len() < 16
        || !body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
    {
        return Err("the key body is not base64".to_string());
    }
    if key.contains(['\n', '\r', '\'', '"', '\\', '`', '$']) {
        return Err("contains a newline, quote, backslash, backtick or $".to_string());
    }
    Ok(())
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

    #[test]
    fn every_compat_target_knows_the_guest_id_and_digest_it_chooses() {
        for compat in VsphereCompat::ALL {
            for base in [Base::Debian12, Base::Centos6] {
                let (id, _) = compat.guest_os(base);
                assert_eq!(compat.knows_guest_id(id), Some(true), "{id} on {compat:?}");
            }
            assert_eq!(
                compat.manifest_algorithm_problem(compat.manifest_algorithm()),
                None
            );
        }
        assert_eq!(
            VsphereCompat::V6_5.knows_guest_id("debian12_64Guest"),
            Some(false)
        );
        assert_eq!(VsphereCompat::V8_0.knows_guest_id("ubuntu-64"), None);
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

    #[test]
    fn prefixes_become_netmasks() {
        assert_eq!(prefix_to_mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(prefix_to_mask(20), Ipv4Addr::new(255, 255, 240, 0));
        assert_eq!(prefix_to_mask(30), Ipv4Addr::new(255, 255, 255, 252));
    }
}
