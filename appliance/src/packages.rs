//! Package manifests (`packages/<base>.toml`): each logical package of the definition mapped to the
//! real package names of one base, the base's own always-installed packages, and the files that
//! come from outside the base's repositories with their SHA-256 pins.
//!
//! The kickstart (centos6) and the Debian build (debian12) read their package sets only from here.
//! This module parses and checks; it never downloads (the fetcher belongs to `xtask`) and it never
//! trusts a file whose digest is not pinned.

use crate::definition::{Base, Definition, LogicalPackage};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The manifests as shipped, relative to the workspace root.
pub const EL6_MANIFEST: &str = "packages/el6.toml";
pub const DEBIAN12_MANIFEST: &str = "packages/debian12.toml";

/// The shipped manifests, embedded so that the library needs no runtime path.
const EL6_TEXT: &str = include_str!("../../packages/el6.toml");
const DEBIAN12_TEXT: &str = include_str!("../../packages/debian12.toml");

/// Where a logical package's real packages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The base's own repositories (el6: the install media, missing ones from the extras CD;
    /// Debian: the archive).
    Base,
    /// Only from the manifest's `[[external]]` files.
    External,
}

/// A SHA-256 pin of an external file: a known digest, or explicitly none yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// 64 lower-case hex digits.
    Sha256(String),
    /// Nobody has verified a copy yet: the file must not be used until it is pinned.
    Unknown,
}

impl Pin {
    fn parse(text: &str) -> Result<Pin, String> {
        if text == "unknown" {
            return Ok(Pin::Unknown);
        }
        if text.len() == 64 && text.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
            return Ok(Pin::Sha256(text.to_string()));
        }
        Err(format!(
            "{text:?} is neither 64 lower-case hex digits (a SHA-256) nor \"unknown\""
        ))
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pin::Sha256(h) => f.write_str(h),
            Pin::Unknown => f.write_str("unknown"),
        }
    }
}

/// The real packages of one logical package on one base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageMapping {
    pub names: Vec<String>,
    pub source: Source,
    /// Services (SysV or systemd units) the package brings that the appliance enables.
    pub services: Vec<String>,
}

/// A file fetched from outside the base's repositories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalFile {
    /// The file name (`kmod-reiserfs-0.0-1.el6.elrepo.x86_64.rpm`).
    pub file: String,
    /// The real package the file installs.
    pub package: String,
    /// The logical package it belongs to.
    pub provides: LogicalPackage,
    pub url: String,
    pub sha256: Pin,
}

impl ExternalFile {
    /// Checks the SHA-256 (hex) computed over a fetched copy against the pin. An unknown pin
    /// refuses every copy: a download that cannot be checked is not used.
    pub fn verify_sha256(&self, actual: &str) -> Result<(), String> {
        match &self.sha256 {
            Pin::Unknown => Err(format!(
                "{} is not pinned (sha256 = \"unknown\" in the package manifest): check a copy's signature (rpm -K), then write its SHA-256 {actual} into the manifest",
                self.file
            )),
            Pin::Sha256(want) if want.eq_ignore_ascii_case(actual) => Ok(()),
            Pin::Sha256(want) => Err(format!(
                "{} from {} has SHA-256 {actual} but the package manifest pins {want}: it is not the file that was verified",
                self.file, self.url
            )),
        }
    }
}

/// A loaded and checked manifest for one base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageManifest {
    pub path: Utf8PathBuf,
    pub base: Base,
    base_packages: Vec<String>,
    packages: BTreeMap<LogicalPackage, PackageMapping>,
    external: Vec<ExternalFile>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read the package manifest {path}: {source}")]
    Read {
        path: Utf8PathBuf,
        source: std::io::Error,
    },
    #[error("the package manifest {path} is not valid TOML for this schema: {message}")]
    Parse { path: Utf8PathBuf, message: String },
    #[error("the package manifest {path} is invalid:\n{}", .errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: Utf8PathBuf,
        errors: Vec<String>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    base: Base,
    #[serde(default)]
    base_packages: Vec<String>,
    packages: BTreeMap<LogicalPackage, RawMapping>,
    #[serde(default)]
    external: Vec<RawExternal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    names: Vec<String>,
    source: Source,
    #[serde(default)]
    services: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExternal {
    file: String,
    package: String,
    provides: LogicalPackage,
    url: String,
    sha256: String,
}

impl PackageManifest {
    /// Reads and checks a manifest file.
    pub fn load(path: &Utf8Path) -> Result<PackageManifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        PackageManifest::from_toml(&text, path)
    }

    /// The shipped manifest of a base (embedded at build time from `packages/`).
    pub fn shipped(base: Base) -> PackageManifest {
        let (text, path) = match base {
            Base::Centos6 => (EL6_TEXT, EL6_MANIFEST),
            Base::Debian12 => (DEBIAN12_TEXT, DEBIAN12_MANIFEST),
        };
        let manifest = PackageManifest::from_toml(text, Utf8Path::new(path))
            .unwrap_or_else(|e| panic!("the shipped manifest is checked by the unit tests: {e}"));
        assert_eq!(manifest.base, base, "{path} declares the wrong base");
        manifest
    }

    /// Parses and checks manifest text; `path` is only used in messages.
    pub fn from_toml(text: &str, path: &Utf8Path) -> Result<PackageManifest, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut errors = Vec::new();
        for (i, name) in raw.base_packages.iter().enumerate() {
            if let Err(why) = check_package_name(name, raw.base) {
                errors.push(format!("base_packages[{i}]: {why}"));
            }
        }
        for logical in LogicalPackage::ALL {
            if !raw.packages.contains_key(&logical) {
                errors.push(format!(
                    "packages.{}: missing: every logical package needs its real names on {}",
                    logical.as_str(),
                    raw.base
                ));
            }
        }
        for (logical, m) in &raw.packages {
            let key = format!("packages.{}", logical.as_str());
            if m.names.is_empty() {
                errors.push(format!("{key}.names: is empty"));
            }
            for (i, name) in m.names.iter().enumerate() {
                if let Err(why) = check_package_name(name, raw.base) {
                    errors.push(format!("{key}.names[{i}]: {why}"));
                }
            }
            for (i, s) in m.services.iter().enumerate() {
                if !is_plain_name(s) {
                    errors.push(format!(
                        "{key}.services[{i}]: {s:?} is not a service name (A-Z a-z 0-9 . _ - @)"
                    ));
                }
            }
            if m.source == Source::External {
                for name in &m.names {
                    if !raw.external.iter().any(|e| &e.package == name) {
                        errors.push(format!(
                            "{key}: source = \"external\" but no [[external]] file has package = {name:?}"
                        ));
                    }
                }
            }
        }
        let mut files = BTreeSet::new();
        let mut external = Vec::new();
        for (i, e) in raw.external.iter().enumerate() {
            let key = format!("external[{i}]");
            if !files.insert(e.file.as_str()) {
                errors.push(format!("{key}.file: {:?} is listed twice", e.file));
            }
            if !is_plain_name(&e.file) || e.file.starts_with('.') {
                errors.push(format!(
                    "{key}.file: {:?} is not a plain file name (A-Z a-z 0-9 . _ - @)",
                    e.file
                ));
            }
            if raw.base == Base::Centos6 && !e.file.ends_with(".rpm") {
                errors.push(format!("{key}.file: {:?} is not an .rpm", e.file));
            }
            if e.file.contains("x86_65") || e.url.contains("x86_65") {
                errors.push(format!(
                    "{key}: \"x86_65\" is the runbook's typo: the architecture is x86_64"
                ));
            }
            if !(e.url.starts_with("http://") || e.url.starts_with("https://"))
                || e.url.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                errors.push(format!("{key}.url: {:?} is not an http(s) URL", e.url));
            } else if !e.url.ends_with(&format!("/{}", e.file)) {
                errors.push(format!(
                    "{key}.url: {:?} does not end in the file name {:?}",
                    e.url, e.file
                ));
            }
            match raw.packages.get(&e.provides) {
                Some(m) if m.names.contains(&e.package) => {}
                _ => errors.push(format!(
                    "{key}.package: {:?} is not one of the names of packages.{}",
                    e.package,
                    e.provides.as_str()
                )),
            }
            match Pin::parse(&e.sha256) {
                Ok(pin) => external.push(ExternalFile {
                    file: e.file.clone(),
                    package: e.package.clone(),
                    provides: e.provides,
                    url: e.url.clone(),
                    sha256: pin,
                }),
                Err(why) => errors.push(format!("{key}.sha256: {why}")),
            }
        }
        if !errors.is_empty() {
            return Err(ManifestError::Invalid {
                path: path.to_owned(),
                errors,
            });
        }
        Ok(PackageManifest {
            path: path.to_owned(),
            base: raw.base,
            base_packages: raw.base_packages,
            packages: raw
                .packages
                .into_iter()
                .map(|(k, m)| {
                    (
                        k,
                        PackageMapping {
                            names: m.names,
                            source: m.source,
                            services: m.services,
                        },
                    )
                })
                .collect(),
            external,
        })
    }

    /// The real names of every logical package the definition asks for, in definition order:
    /// everything that must be installed on this base besides [`Self::base_packages`].
    pub fn packages_for(&self, def: &Definition) -> Vec<String> {
        self.names_where(def, |_| true)
    }

    /// The real names of the definition's packages that the base's own repositories provide
    /// (el6: what `%packages` lists).
    pub fn base_source_packages_for(&self, def: &Definition) -> Vec<String> {
        self.names_where(def, |m| m.source == Source::Base)
    }

    /// The services the definition's packages bring that the appliance enables.
    pub fn services_for(&self, def: &Definition) -> Vec<String> {
        let mut out = Vec::new();
        for logical in &def.packages {
            for s in &self.mapping(*logical).services {
                if !out.contains(s) {
                    out.push(s.clone());
                }
            }
        }
        out
    }

    /// The external files the definition's packages need.
    pub fn external_files_for(&self, def: &Definition) -> Vec<&ExternalFile> {
        self.external
            .iter()
            .filter(|e| def.packages.contains(&e.provides))
            .collect()
    }

    /// Packages every appliance of this base installs, whatever the definition lists.
    pub fn base_packages(&self) -> &[String] {
        &self.base_packages
    }

    /// Every file fetched from outside the base's repositories.
    pub fn external_files(&self) -> &[ExternalFile] {
        &self.external
    }

    /// The mapping of one logical package (the loader guarantees every one is mapped).
    pub fn mapping(&self, logical: LogicalPackage) -> &PackageMapping {
        &self.packages[&logical]
    }

    fn names_where(&self, def: &Definition, keep: impl Fn(&PackageMapping) -> bool) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for logical in &def.packages {
            let m = self.mapping(*logical);
            if keep(m) {
                for n in &m.names {
                    if !out.contains(n) {
                        out.push(n.clone());
                    }
                }
            }
        }
        out
    }
}

fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+@".contains(c))
}

/// Package names as the base's tools accept them; el6 also allows a comps group (`@core`).
fn check_package_name(name: &str, base: Base) -> Result<(), String> {
    let body = match (base, name.strip_prefix('@')) {
        (Base::Centos6, Some(group)) => group,
        _ => name,
    };
    let ok = !body.is_empty()
        && body.len() <= 128
        && body.starts_with(|c: char| c.is_ascii_alphanumeric())
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
        && (base != Base::Debian12 || body.chars().all(|c| !c.is_ascii_uppercase()));
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a {base} package name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> Utf8PathBuf {
        Utf8Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_owned()
    }

    fn shipped_definition() -> Definition {
        Definition::load(&workspace().join(crate::definition::DEFAULT_DEFINITION)).unwrap()
    }

    #[test]
    fn every_logical_package_is_mapped_in_both_manifests() {
        for (path, base) in [
            (EL6_MANIFEST, Base::Centos6),
            (DEBIAN12_MANIFEST, Base::Debian12),
        ] {
            let m =
                PackageManifest::load(&workspace().join(path)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(m.base, base, "{path}");
            for logical in LogicalPackage::ALL {
                assert!(
                    !m.mapping(logical).names.is_empty(),
                    "{path} maps {} to nothing",
                    logical.as_str()
                );
            }
        }
    }

    #[test]
    fn real_names_differ_where_the_bases_differ() {
        let def = shipped_definition();
        let el6 = PackageManifest::shipped(Base::Centos6);
        let deb = PackageManifest::shipped(Base::Debian12);
        let el6_names = el6.packages_for(&def);
        let deb_names = deb.packages_for(&def);
        assert!(el6_names.contains(&"device-mapper-multipath".to_string()));
        assert!(el6_names.contains(&"kmod-reiserfs".to_string()));
        assert!(deb_names.contains(&"multipath-tools".to_string()));
        assert!(deb_names.contains(&"reiserfsprogs".to_string()));
        // ReiserFS is not in any CentOS repository: %packages must not ask for it.
        let media = el6.base_source_packages_for(&def);
        assert!(!media.iter().any(|n| n.contains("reiserfs")));
        assert!(media.contains(&"xfsprogs".to_string()));
        assert!(deb
            .base_packages()
            .contains(&"linux-image-amd64".to_string()));
        assert!(el6.base_packages().contains(&"@core".to_string()));
    }

    #[test]
    fn a_definition_without_a_package_gets_none_of_its_names_or_files() {
        let mut def = shipped_definition();
        def.packages.retain(|p| *p != LogicalPackage::Reiserfs);
        let el6 = PackageManifest::shipped(Base::Centos6);
        assert!(!el6
            .packages_for(&def)
            .iter()
            .any(|n| n.contains("reiserfs")));
        let files: Vec<_> = el6
            .external_files_for(&def)
            .iter()
            .map(|e| e.file.as_str())
            .collect();
        assert_eq!(
            files,
            [
                "xfsprogs-3.1.1-16.el6.x86_64.rpm",
                "rsync-3.0.6-12.el6.x86_64.rpm",
                "wget-1.12-5.el6_6.1.x86_64.rpm"
            ]
        );
    }

    #[test]
    fn external_files_use_x86_64_and_unknown_digests_are_refused() {
        let el6 = PackageManifest::shipped(Base::Centos6);
        let files = el6.external_files();
        assert_eq!(files.len(), 5);
        for f in files {
            assert!(
                f.url.contains("/x86_64/") && f.url.ends_with(".x86_64.rpm"),
                "{}",
                f.url
            );
            if f.sha256 == Pin::Unknown {
                let err = f.verify_sha256(&"0".repeat(64)).unwrap_err();
                assert!(err.contains("not pinned"), "{err}");
            }
        }
        let mut pinned = files[0].clone();
        pinned.sha256 = Pin::Sha256("ab".repeat(32));
        assert!(pinned.verify_sha256(&"ab".repeat(32)).is_ok());
        let err = pinned.verify_sha256(&"cd".repeat(32)).unwrap_err();
        assert!(err.contains(&pinned.url), "{err}");
    }

    fn broken(edit: impl Fn(&str) -> String) -> String {
        let text = edit(EL6_TEXT);
        assert_ne!(text, EL6_TEXT, "the edit must change the manifest");
        PackageManifest::from_toml(&text, Utf8Path::new("broken/el6.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn manifest_errors_name_the_file_and_the_key() {
        let cases: [(&str, String); 6] = [
            (
                "external[0].sha256",
                broken(|t| t.replacen("sha256 = \"unknown\"", "sha256 = \"abc\"", 1)),
            ),
            (
                "x86_65",
                broken(|t| t.replacen(".x86_64.rpm\"\nsha256", ".x86_65.rpm\"\nsha256", 1)),
            ),
            (
                "packages.wget",
                broken(|t| {
                    t.replace(
                        "[packages.wget]\nnames = [\"wget\"]\nsource = \"base\"\n",
                        "",
                    )
                }),
            ),
            (
                "packages.reiserfs",
                broken(|t| {
                    t.replace(
                        "package = \"kmod-reiserfs\"",
                        "package = \"kmod-reiserfs2\"",
                    )
                }),
            ),
            (
                "base_packages[0]",
                broken(|t| t.replace("\"@core\"", "\"bad name\"")),
            ),
            (
                "unknown variant",
                broken(|t| t.replace("[packages.perl]", "[packages.pearl]")),
            ),
        ];
        for (key, msg) in cases {
            assert!(msg.contains("broken/el6.toml"), "{msg}");
            assert!(msg.contains(key), "expected {key} in: {msg}");
        }
    }
}
