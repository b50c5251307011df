//! The finishing path of both bases: the raw disks are packed into the OVA under a staging
//! name, checked with `verify-ova`'s checks, booted once (when a boot test is asked for), and
//! only then renamed to the final name. A run that fails or is interrupted never leaves a file
//! that looks ready to hand out: a failed check removes the staging file (a failed boot keeps
//! it under a `.failed-boot-test` name for inspection), and the next run removes what an
//! interrupted one left.

use super::progress;
use crate::boot_test::BootTestOptions;
use anyhow::{bail, Context, Result};
use appliance::ovf::DiskRole;
use appliance::Definition;
use camino::{Utf8Path, Utf8PathBuf};
use std::time::{Duration, Instant};
use xshell::Shell;

/// A stage's name, how long it took and whether its cached output was reused.
pub type Timings = Vec<(String, Duration, bool)>;

/// What a finished build is made of.
pub struct Finish<'a> {
    pub def: &'a Definition,
    pub os_disk: &'a Utf8Path,
    pub retention_disk: &'a Utf8Path,
    /// The OVA goes here as `<name>.ova`.
    pub out_dir: &'a Utf8Path,
    /// Names the build in the OVF.
    pub build_id: String,
    /// Boot the staged OVA before it gets its final name; `None` skips the boot test.
    pub boot_test: Option<BootCheck>,
}

/// How the staged OVA is booted: `BootTestOptions::of_built_ova` with these.
pub struct BootCheck {
    /// The definition file the boot test loads (the one the build was given).
    pub definition: Utf8PathBuf,
    pub password: String,
}

const STAGING_MARK: &str = ".unverified-";

/// Packs, verifies and boot-tests the OVA, then gives it its final name, which it returns.
pub fn finish(sh: &Shell, f: &Finish, timings: &mut Timings) -> Result<Utf8PathBuf> {
    let (out_dir, name) = (f.out_dir, &f.def.appliance.name);
    std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {out_dir}"))?;
    let ova = out_dir.join(format!("{name}.ova"));
    remove_abandoned_staging(out_dir, name)?;
    let staging = out_dir.join(format!(".{name}.ova{STAGING_MARK}{}", std::process::id()));
    if let Err(e) = pack_verify_boot(sh, f, &staging, timings) {
        let _ = std::fs::remove_file(&staging);
        return Err(e);
    }
    std::fs::rename(&staging, &ova).with_context(|| format!("cannot rename {staging} to {ova}"))?;
    eprintln!(
        "OVA: {ova} ({})",
        progress::human_bytes(std::fs::metadata(&ova)?.len())
    );
    Ok(ova)
}

fn pack_verify_boot(
    sh: &Shell,
    f: &Finish,
    staging: &Utf8Path,
    timings: &mut Timings,
) -> Result<()> {
    let t = Instant::now();
    let sha256 = pack(f, staging)?;
    verify(f.def, staging, &sha256)?;
    timings.push(("pack + verify".to_string(), t.elapsed(), false));
    let Some(check) = &f.boot_test else {
        return Ok(());
    };
    let t = Instant::now();
    let test = BootTestOptions::of_built_ova(staging, &check.definition, &check.password);
    if let Err(e) = test.run(sh) {
        // Complete and verified, but it did not boot: kept for inspection under a name
        // that cannot be mistaken for a finished OVA.
        let failed = f
            .out_dir
            .join(format!("{}.ova.failed-boot-test", f.def.appliance.name));
        std::fs::rename(staging, &failed).with_context(|| format!("cannot rename {staging}"))?;
        return Err(e.context(format!(
            "the OVA did not pass its boot test; kept as {failed} for inspection"
        )));
    }
    timings.push(("boot test".to_string(), t.elapsed(), false));
    Ok(())
}

/// OVAs of runs that were interrupted before their checks finished.
fn remove_abandoned_staging(out_dir: &Utf8Path, name: &str) -> Result<()> {
    let prefix = format!(".{name}.ova{STAGING_MARK}");
    for entry in std::fs::read_dir(out_dir).with_context(|| format!("cannot list {out_dir}"))? {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file.strip_prefix(&prefix) else {
            continue;
        };
        if !Utf8Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing the unverified OVA of an interrupted build: {out_dir}/{file}");
            std::fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {out_dir}/{file}"))?;
        }
    }
    Ok(())
}

/// Packs the raw disks into `out` with the appliance crate's writers (temporary name, renamed
/// when complete); returns its SHA-256.
fn pack(f: &Finish, out: &Utf8Path) -> Result<String> {
    let opts = appliance::ova::PackOptions {
        source_date_epoch: crate::ova::source_date_epoch()?,
        build_id: f.build_id.clone(),
    };
    let summary = {
        let status = std::sync::Arc::new(std::sync::Mutex::new(format!(
            "streamOptimized VMDKs, OVF, manifest -> {out}"
        )));
        let _ticker = progress::Ticker::start("pack", None, status);
        appliance::ova::pack(
            f.def,
            &[
                (DiskRole::Os, f.os_disk),
                (DiskRole::Retention, f.retention_disk),
            ],
            out,
            &opts,
        )
        .with_context(|| format!("packing {out}"))?
    };
    for (name, size) in &summary.members {
        eprintln!("  {name:<32} {}", progress::human_bytes(*size));
    }
    Ok(summary.sha256)
}

/// Runs `verify-ova`'s checks on `ova`; one that fails them is removed rather than left looking
/// finished.
fn verify(def: &Definition, ova: &Utf8Path, sha256: &str) -> Result<()> {
    let opts = appliance::verify::VerifyOptions {
        compat: def.appliance.vsphere_compat,
        raw_dir: None,
    };
    let report =
        appliance::verify::verify_ova(ova, &opts).with_context(|| format!("verifying {ova}"))?;
    let errors: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.severity == appliance::verify::Severity::Error)
        .map(|f| f.to_string())
        .collect();
    for f in &report.findings {
        eprintln!("verify-ova: {f}");
    }
    if !errors.is_empty() {
        let _ = std::fs::remove_file(ova);
        bail!(
            "the OVA failed verify-ova ({} error(s)); it was removed:\n{}",
            errors.len(),
            errors.join("\n")
        );
    }
    eprintln!(
        "verify-ova: OK for vSphere {} (sha256 {})",
        def.appliance.vsphere_compat.as_str(),
        sha256
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_packed_and_verified_ova_gets_the_final_name() {
        let root = crate::util::workspace_root();
        let (_, def) = crate::util::load_definition(None).unwrap();
        let name = &def.appliance.name;
        let dir = root.join("target/tmp-finish-test");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (os, retention) = (dir.join("os.raw"), dir.join("retention.raw"));
        for (path, size) in [
            (&os, def.os_disk.size.bytes()),
            (&retention, def.retention_disk.size.bytes()),
        ] {
            std::fs::File::create(path).unwrap().set_len(size).unwrap();
        }
        let out = dir.join("out");
        let sh = Shell::new().unwrap();
        let missing = dir.join("missing.raw");
        let mut f = Finish {
            def: &def,
            os_disk: &os,
            retention_disk: &missing,
            out_dir: &out,
            build_id: "test".into(),
            boot_test: None,
        };
        // A pack that fails leaves nothing under either name.
        let err = format!("{:#}", finish(&sh, &f, &mut Vec::new()).unwrap_err());
        assert!(err.contains("missing.raw"), "{err}");
        assert_eq!(testkit::names_in(&out), Vec::<String>::new());

        // What an interrupted run left is removed; the OVA gets its name only at the end.
        let abandoned = format!(".{name}.ova{STAGING_MARK}999999999");
        std::fs::write(out.join(&abandoned), b"half an OVA").unwrap();
        f.retention_disk = &retention;
        let mut timings = Vec::new();
        let ova = finish(&sh, &f, &mut timings).unwrap();
        assert_eq!(ova, out.join(format!("{name}.ova")));
        assert_eq!(testkit::names_in(&out), [format!("{name}.ova")]);
        let stages: Vec<&str> = timings.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(stages, ["pack + verify"]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
