//! The vSphere compatibility table: per release the newest virtual hardware (`vmx-NN`), the guest
//! OS identifiers it knows and the manifest digests every product of its era accepts. Data and
//! lookups only; the definition's validation and the OVF writer consult it.

use super::Base;
use serde::{Deserialize, Serialize};

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
    /// The newest vSphere guest OS identifier this release knows for the base (by
    /// [`guest_id_introduced`]), and the CIM OperatingSystemSection id (107: CentOS 64-bit,
    /// 96: Debian 64-bit).
    pub fn guest_os(self, base: Base) -> (&'static str, u32) {
        match base {
            Base::Centos6 => match self {
                // centos6_64Guest since API 6.5; before it, the CentOS 4/5 id.
                VsphereCompat::V6_0 => ("centos64Guest", 107),
                _ => ("centos6_64Guest", 107),
            },
            Base::Debian12 => match self {
                VsphereCompat::V6_0 => ("debian8_64Guest", 96),
                VsphereCompat::V6_5 | VsphereCompat::V6_7 => ("debian10_64Guest", 96),
                VsphereCompat::V7_0 => ("debian11_64Guest", 96),
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

    /// Whether a manifest digest is a risk for this release's era, and if so, why: SHA-256
    /// breaks the 6.0-era C# client and PowerCLI (the import fails); SHA-1 from 6.5 on is
    /// deprecated but reported to import, vCenter 8 included; SHA-512 is only written by tools
    /// for vmx-15 and newer. [`ManifestRisk`] says which of these fails the import.
    pub fn manifest_algorithm_problem(
        self,
        alg: DigestAlgorithm,
    ) -> Option<(ManifestRisk, &'static str)> {
        match (self, alg) {
            (VsphereCompat::V6_0, DigestAlgorithm::Sha1) => None,
            (VsphereCompat::V6_0, _) => Some((
                ManifestRisk::FailsImport,
                "the vSphere 6.0-era C# client and PowerCLI accept only SHA1 manifests",
            )),
            (_, DigestAlgorithm::Sha1) => Some((
                ManifestRisk::Imports,
                "SHA1 manifests are deprecated from 6.5 on but are reported to import (vCenter 8 included); SHA256 is what every product of this era writes and accepts",
            )),
            (VsphereCompat::V6_5 | VsphereCompat::V6_7, DigestAlgorithm::Sha512) => Some((
                ManifestRisk::Imports,
                "SHA512 manifests are only known to import from vSphere 6.7U2 (vmx-15) on; use SHA256",
            )),
            _ => None,
        }
    }

    /// Whether this release knows the vSphere guest OS identifier (`vmw:osType`).
    /// `None` means the identifier is not in this table (it may still be valid).
    pub fn knows_guest_id(self, guest_id: &str) -> Option<bool> {
        guest_id_introduced(guest_id).map(|since| since <= self)
    }
}

/// The oldest release (of the ones a template can target) that lists a Linux guest OS id.
/// Source: the vSphere Web Services API reference, enum `VirtualMachineGuestOsIdentifier`
/// (as govmomi's `vim25/types/enum.go` carries it), the API version each value appeared in
/// ("Since"); ids older than API 6.0 map to 6.0. An id that appeared in an update release
/// maps to the first target that has it for sure: 7.0 U1 (API 7.0.1.0) to 8.0. Only ids a
/// Linux appliance would plausibly carry are listed.
pub fn guest_id_introduced(guest_id: &str) -> Option<VsphereCompat> {
    use VsphereCompat::*;
    let since = match guest_id {
        "centos64Guest"
        | "centosGuest"
        | "rhel5_64Guest"
        | "rhel6_64Guest"
        | "rhel7_64Guest"
        | "oracleLinux64Guest"
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
        | "oracleLinux6_64Guest"
        | "oracleLinux7_64Guest"
        | "debian9_64Guest"
        | "debian10_64Guest"
        | "vmwarePhoton64Guest" => V6_5,
        "centos8_64Guest"
        | "rhel8_64Guest"
        | "other4xLinux64Guest"
        | "sles15_64Guest"
        | "oracleLinux8_64Guest"
        | "asianux8_64Guest" => V6_7,
        "debian11_64Guest" => V7_0,
        // API 7.0.1.0 (7.0 U1): not in 7.0 GA.
        "other5xLinux64Guest" | "rhel9_64Guest" => V8_0,
        "debian12_64Guest" => V8_0,
        _ => return None,
    };
    Some(since)
}

/// What a manifest digest a release dislikes does to the import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestRisk {
    /// The import is refused.
    FailsImport,
    /// The import goes through, with a warning or on some builds only.
    Imports,
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

#[cfg(test)]
mod tests {
    use super::*;

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
        // The newest id each release knows for the base.
        let ids = |base| VsphereCompat::ALL.map(|c| c.guest_os(base).0);
        assert_eq!(
            ids(Base::Debian12),
            [
                "debian8_64Guest",
                "debian10_64Guest",
                "debian10_64Guest",
                "debian11_64Guest",
                "debian12_64Guest"
            ]
        );
        assert_eq!(ids(Base::Centos6)[0], "centos64Guest");
        assert!(ids(Base::Centos6)[1..]
            .iter()
            .all(|&i| i == "centos6_64Guest"));
        // Ids of update releases count from the first target that has them for sure.
        assert_eq!(
            VsphereCompat::V7_0.knows_guest_id("rhel9_64Guest"),
            Some(false)
        );
        assert_eq!(
            VsphereCompat::V6_0.knows_guest_id("oracleLinux7_64Guest"),
            Some(false)
        );
        // SHA1 on a 6.5-or-later target imports; SHA256 on 6.0 does not.
        assert_eq!(
            VsphereCompat::V8_0
                .manifest_algorithm_problem(DigestAlgorithm::Sha1)
                .map(|p| p.0),
            Some(ManifestRisk::Imports)
        );
        assert_eq!(
            VsphereCompat::V6_0
                .manifest_algorithm_problem(DigestAlgorithm::Sha256)
                .map(|p| p.0),
            Some(ManifestRisk::FailsImport)
        );
    }
}
