//! `cargo xtask fetch-packages --base centos6`: gathers the files the CentOS kickstart installs
//! from outside the install ISO (the el6 manifest's `[[external]]` files the definition needs),
//! from their URLs or from a directory the user supplies, and lets none through whose SHA-256
//! differs from its pin in `packages/el6.toml`.
//!
//! `--pin` is trust on first use: it records the digest of a user-supplied file whose pin is
//! still "unknown", editing the manifest in place with `toml_edit` so that its comments and layout
//! survive. It never replaces an existing pin. Downloads go through `curl` (one small function).

use crate::util;
use anyhow::{bail, Context, Result};
use appliance::definition::Base;
use appliance::packages::{ExternalFile, PackageManifest, Pin};
use camino::{Utf8Path, Utf8PathBuf};
use sha2::{Digest, Sha256};
use std::io::Read;
use xshell::{cmd, Shell};

/// Where the verified RPMs go by default, relative to the workspace root; the centos6 build
/// reads them from here unless told otherwise.
pub const DEFAULT_RPM_DIR: &str = "target/centos6/rpms";

/// Fetch and verify the extra RPMs the CentOS 6.6 kickstart installs.
#[derive(clap::Args)]
pub struct FetchPackages {
    /// The base whose external files to fetch: only centos6 has any (debian12 installs
    /// everything from Debian's archive).
    #[arg(long)]
    base: String,
    /// Take the files from this directory instead of downloading them.
    #[arg(long)]
    from: Option<Utf8PathBuf>,
    /// Trust on first use: record the SHA-256 of files from --from whose pin is "unknown".
    #[arg(long, requires = "from")]
    pin: bool,
    /// Where to put the verified files (default: target/centos6/rpms in the workspace, where the
    /// centos6 build looks for them).
    #[arg(long)]
    dest: Option<Utf8PathBuf>,
    /// The package manifest (default: packages/el6.toml).
    #[arg(long)]
    manifest: Option<Utf8PathBuf>,
    /// The appliance definition whose packages decide which files are needed.
    #[arg(long)]
    definition: Option<Utf8PathBuf>,
}

impl FetchPackages {
    pub fn run(self, sh: &Shell) -> Result<()> {
        if self.base != Base::Centos6.as_str() {
            bail!(
                "--base {}: only centos6 has packages from outside its base's repositories (debian12 installs everything from Debian's archive)",
                self.base
            );
        }
        let manifest_path = self
            .manifest
            .clone()
            .unwrap_or_else(|| util::workspace_root().join(appliance::packages::EL6_MANIFEST));
        if let Some(dir) = &self.from {
            if !dir.is_dir() {
                bail!("--from {dir}: no such directory");
            }
        }
        let (_, def) = util::load_definition(self.definition.as_deref())?;
        let manifest = PackageManifest::load(&manifest_path)?;
        if manifest.base != Base::Centos6 {
            bail!(
                "{manifest_path} is a {} manifest, not an el6 one",
                manifest.base
            );
        }
        let wanted: Vec<ExternalFile> = manifest
            .external_files_for(&def)
            .into_iter()
            .cloned()
            .collect();
        let dest = self
            .dest
            .clone()
            .unwrap_or_else(|| util::workspace_root().join(DEFAULT_RPM_DIR));
        std::fs::create_dir_all(&dest).with_context(|| format!("cannot create {dest}"))?;
        let mut failures = Vec::new();
        let mut new_pins = Vec::new();
        for file in &wanted {
            match self.gather(sh, file, &dest) {
                Ok(Some(digest)) => new_pins.push((file.file.clone(), digest)),
                Ok(None) => {}
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        if !new_pins.is_empty() {
            record_pins(&manifest_path, &new_pins)?;
        }
        if !failures.is_empty() {
            bail!(
                "{} of {} files were refused (nothing unverified was written to {dest}):\n  - {}",
                failures.len(),
                wanted.len(),
                failures.join("\n  - ")
            );
        }
        eprintln!("{} verified files in {dest}", wanted.len());
        Ok(())
    }

    /// Puts one verified file into `dest`; returns the digest when it was pinned on first use.
    fn gather(&self, sh: &Shell, file: &ExternalFile, dest: &Utf8Path) -> Result<Option<String>> {
        let target = dest.join(&file.file);
        if self.from.is_none() && target.exists() {
            let digest = sha256_file(&target)?;
            if file.verify_sha256(&digest).is_ok() {
                eprintln!("{}: already in {dest}, SHA-256 matches the pin", file.file);
                return Ok(None);
            }
        }
        let part = dest.join(format!(".{}.part-{}", file.file, std::process::id()));
        let result = (|| {
            match &self.from {
                Some(dir) => {
                    let src = dir.join(&file.file);
                    if !src.is_file() {
                        bail!(
                            "{}: not found in {dir} (expected {src}; it is published at {})",
                            file.file,
                            file.url
                        );
                    }
                    std::fs::copy(&src, &part)
                        .with_context(|| format!("cannot copy {src} to {part}"))?;
                }
                None => download(sh, &file.url, &part)?,
            }
            let digest = sha256_file(&part)?;
            let pinned_now = match (&file.sha256, self.pin) {
                (Pin::Unknown, true) => {
                    eprintln!(
                        "TRUST ON FIRST USE: pinning {} to SHA-256 {digest} because you supplied it with --from and --pin.\n\
                         Nobody has verified this file: check its signature (rpm -K {}) before you build an appliance you deploy.",
                        file.file, file.file
                    );
                    Some(digest)
                }
                (Pin::Sha256(_), _) => {
                    file.verify_sha256(&digest).map_err(|why| {
                        anyhow::anyhow!(
                            "{why} (expected {}, actual {digest}){}",
                            file.sha256,
                            if self.pin {
                                "; --pin never replaces a pin: if this copy is the right one, edit the manifest by hand"
                            } else {
                                ""
                            }
                        )
                    })?;
                    None
                }
                (Pin::Unknown, false) => {
                    let why = file.verify_sha256(&digest).unwrap_err();
                    bail!("{why} (expected a pinned SHA-256, actual {digest}; supply it with --from DIR --pin to trust it on first use)")
                }
            };
            std::fs::rename(&part, &target)
                .with_context(|| format!("cannot rename {part} to {target}"))?;
            Ok(pinned_now)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&part);
        } else {
            eprintln!("{}: verified", file.file);
        }
        result
    }
}

/// Plain HTTP(S) GET through curl: present on every build machine, follows redirects and honours
/// the usual proxy variables, and keeps a TLS stack out of the build tool.
fn download(sh: &Shell, url: &str, to: &Utf8Path) -> Result<()> {
    let out = cmd!(
        sh,
        "curl --fail --silent --show-error --location --retry 2 --connect-timeout 20 --output {to} {url}"
    )
    .quiet()
    .ignore_status()
    .output()
    .context("cannot run curl (apt-get install curl)")?;
    if !out.status.success() {
        bail!(
            "downloading {url} failed ({}): if this machine cannot reach it, download the file elsewhere and pass --from DIR",
            // curl repeats its message on every retry: the last one is enough.
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("no message")
                .trim()
        );
    }
    Ok(())
}

/// SHA-256 of a file, lower-case hex.
pub fn sha256_file(path: &Utf8Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {path}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Writes the new pins into the manifest, keeping every comment and the layout, and checks the
/// result loads before replacing the file.
fn record_pins(path: &Utf8Path, pins: &[(String, String)]) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("{path} is not valid TOML"))?;
    let externals = doc
        .get_mut("external")
        .and_then(|e| e.as_array_of_tables_mut())
        .with_context(|| format!("{path} has no [[external]] tables"))?;
    for (file, digest) in pins {
        let table = externals
            .iter_mut()
            .find(|t| t.get("file").and_then(|f| f.as_str()) == Some(file.as_str()))
            .with_context(|| format!("{path}: no [[external]] has file = {file:?}"))?;
        table["sha256"] = toml_edit::value(digest.as_str());
    }
    let new_text = doc.to_string();
    PackageManifest::from_toml(&new_text, path)
        .with_context(|| format!("the pinned manifest would not load; {path} is unchanged"))?;
    util::write_atomic(path, new_text.as_bytes())?;
    eprintln!("recorded {} pin(s) in {path}", pins.len());
    Ok(())
}
