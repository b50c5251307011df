//! The second CD the kickstart reads in `%post`: an ISO 9660 image labelled
//! [`EXTRAS_VOLUME_LABEL`] holding `rpms/` (the manifest's external files, checked again against
//! their pins here, so an unverified file never reaches an appliance) and the static `mt-agent`.

use super::run_tool;
use crate::fetch_packages::sha256_file;
use anyhow::{bail, Context, Result};
use appliance::kickstart::{EXTRAS_AGENT_FILE, EXTRAS_RPM_DIR, EXTRAS_VOLUME_LABEL};
use appliance::packages::PackageManifest;
use appliance::Definition;
use camino::{Utf8Path, Utf8PathBuf};
use xshell::{cmd, Shell};

/// The Rust target of the agent on CentOS 6: static musl, because el6's glibc 2.12 is older than
/// any glibc a current toolchain links against.
pub const AGENT_TARGET: &str = "x86_64-unknown-linux-musl";

/// The agent binary to put on the CD: the given file, or a fresh static release build.
pub fn agent_binary(sh: &Shell, given: Option<&Utf8Path>) -> Result<Utf8PathBuf> {
    if let Some(p) = given {
        if !p.is_file() {
            bail!("--agent {p}: no such file");
        }
        return Ok(p.to_owned());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    eprintln!("building the static mt-agent for {AGENT_TARGET}");
    cmd!(
        sh,
        "{cargo} build --quiet --release --package mt-agent --bin mt-agent --target {AGENT_TARGET}"
    )
    .run()
    .with_context(|| {
        format!("building mt-agent for {AGENT_TARGET} failed (needs `rustup target add {AGENT_TARGET}` and musl-tools)")
    })?;
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(Utf8PathBuf::from)
        .unwrap_or_else(|_| crate::util::workspace_root().join("target"));
    let bin = target_dir.join(AGENT_TARGET).join("release/mt-agent");
    if !bin.is_file() {
        bail!("cargo built mt-agent but {bin} is missing");
    }
    Ok(bin)
}

/// Writes the extras CD to `out`, staging its tree in `staging` (emptied first).
pub fn build_cd(
    sh: &Shell,
    def: &Definition,
    manifest: &PackageManifest,
    rpm_dir: &Utf8Path,
    agent: &Utf8Path,
    staging: &Utf8Path,
    out: &Utf8Path,
) -> Result<()> {
    if staging.exists() {
        std::fs::remove_dir_all(staging).with_context(|| format!("cannot empty {staging}"))?;
    }
    let rpms = staging.join(EXTRAS_RPM_DIR);
    std::fs::create_dir_all(&rpms).with_context(|| format!("cannot create {rpms}"))?;
    let mut refused = Vec::new();
    for file in manifest.external_files_for(def) {
        let src = rpm_dir.join(&file.file);
        if !src.is_file() {
            refused.push(format!("{}: missing from {rpm_dir}", file.file));
            continue;
        }
        let digest = sha256_file(&src)?;
        if let Err(why) = file.verify_sha256(&digest) {
            refused.push(why);
            continue;
        }
        std::fs::copy(&src, rpms.join(&file.file))
            .with_context(|| format!("cannot copy {src} into {rpms}"))?;
    }
    if !refused.is_empty() {
        bail!(
            "the extras CD needs every external file of {} verified in {rpm_dir}; run `cargo xtask fetch-packages --base centos6` (with --dest {rpm_dir} if that is not the default):\n  - {}",
            manifest.path,
            refused.join("\n  - ")
        );
    }
    std::fs::copy(agent, staging.join(EXTRAS_AGENT_FILE))
        .with_context(|| format!("cannot copy {agent} into {staging}"))?;
    // setup in %post installs the agent configuration from the definition, never a default.
    let config = staging.join(appliance::kickstart::EXTRAS_AGENT_CONFIG_FILE);
    std::fs::write(&config, crate::build_ova::agent_config_toml(def)?)
        .with_context(|| format!("cannot write {config}"))?;
    if out.exists() {
        std::fs::remove_file(out).with_context(|| format!("cannot remove the old {out}"))?;
    }
    // -r: Rock Ridge with sane modes (readable by all, execute bits kept); -J for good measure.
    run_tool(
        cmd!(
            sh,
            "xorriso -as mkisofs -quiet -r -J -V {EXTRAS_VOLUME_LABEL} -o {out} {staging}"
        ),
        &format!("writing the extras CD {out}"),
    )?;
    eprintln!(
        "{out}: {} RPM(s) and {EXTRAS_AGENT_FILE}, volume label {EXTRAS_VOLUME_LABEL}",
        manifest.external_files_for(def).len()
    );
    Ok(())
}
