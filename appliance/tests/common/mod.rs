//! Shared by the kickstart tests (also included by `tests/tests/it` and `xtask`; paths and
//! scratch directories come from `testkit`): the shipped definition text and edits of it, and
//! pykickstart (from PyPI) in a virtual environment under the workspace's `target/`, created
//! once and reused, to validate and parse kickstarts the way Anaconda's RHEL 6 parser does.
#![allow(dead_code)]

use appliance::definition::DefinitionError;
use appliance::Definition;
use camino::{Utf8Path, Utf8PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The last pykickstart known here to carry the RHEL6 handler (verified: 3.78 has `RHEL6`).
pub const PYKICKSTART: &str = "pykickstart==3.78";

// Each test that includes this module uses part of it (as with dead_code above).
#[allow(unused_imports)]
pub use testkit::{scratch, target_dir, workspace_root};

/// The text of the shipped default definition.
pub fn shipped_text() -> String {
    std::fs::read_to_string(workspace_root().join(appliance::definition::DEFAULT_DEFINITION))
        .unwrap()
}

/// Replaces `from` (which must occur) by `to` in definition text.
pub fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the definition no longer contains {from:?}"
    );
    text.replacen(from, to, 1)
}

pub fn parse(text: &str) -> Result<Definition, DefinitionError> {
    Definition::from_toml(text, Utf8Path::new("edited/appliance.toml"))
}

/// The shipped definition switched to a static address.
pub fn static_text() -> String {
    let t = edit(&shipped_text(), "mode = \"dhcp\"", "mode = \"static\"");
    let t = edit(
        &t,
        "# address = \"192.168.10.20\"",
        "address = \"192.168.10.20\"",
    );
    let t = edit(&t, "# prefix = 24", "prefix = 24");
    let t = edit(
        &t,
        "# gateway = \"192.168.10.1\"",
        "gateway = \"192.168.10.1\"",
    );
    edit(
        &t,
        "# dns = [\"192.168.10.2\"]",
        "dns = [\"192.168.10.2\", \"192.168.10.3\"]",
    )
}

/// The shipped definition on the centos6 base.
pub fn centos6_text() -> String {
    edit(&shipped_text(), "base = \"debian12\"", "base = \"centos6\"")
}

/// The virtual environment's python, with pykickstart installed.
pub fn pykickstart_python() -> &'static Utf8Path {
    static PYTHON: OnceLock<Utf8PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| match create_venv() {
        Ok(p) => p,
        Err(why) => panic!("{why}"),
    })
}

fn create_venv() -> Result<Utf8PathBuf, String> {
    let name = PYKICKSTART.replace("==", "-");
    let venv = target_dir().join(&name);
    let python = venv.join("bin/python");
    let ready = venv.join(".installed");
    if ready.exists() {
        return Ok(python);
    }
    // Built under a private name and renamed into place, so that test binaries running at the
    // same time never see half a venv. Scripts' shebangs name the build path, so the tests call
    // the venv's python (a symlink to the system one) and never the `bin/` scripts.
    testkit::require_tools(&["python3", "import ensurepip"]);
    let tmp = target_dir().join(format!("{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(target_dir()).map_err(|e| e.to_string())?;
    let out = Command::new("python3")
        .args(["-m", "venv", tmp.as_str()])
        .output()
        .map_err(|e| format!("cannot run python3 ({e}): install python3 and python3-venv (apt-get install python3 python3-venv)"))?;
    if !out.status.success() {
        return Err(format!(
            "python3 -m venv failed: install python3-venv (apt-get install python3-venv)\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let out = Command::new(tmp.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            PYKICKSTART,
        ])
        .output()
        .map_err(|e| format!("cannot run pip in {tmp}: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(format!(
            "pip install {PYKICKSTART} failed (needs python3-pip/ensurepip and access to PyPI)\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::write(tmp.join(".installed"), PYKICKSTART).map_err(|e| e.to_string())?;
    if std::fs::rename(&tmp, &venv).is_err() {
        // Another test binary won the race; use its venv.
        let _ = std::fs::remove_dir_all(&tmp);
        if !ready.exists() {
            return Err(format!("cannot move {tmp} to {venv}"));
        }
    }
    Ok(python)
}

/// Runs `ksvalidator -v RHEL6` on the kickstart text; Err carries its output.
pub fn ksvalidator_rhel6(ks: &str, scratch_dir: &Utf8Path) -> Result<(), String> {
    let path = scratch_dir.join("ks.cfg");
    std::fs::write(&path, ks).unwrap();
    let python = pykickstart_python();
    let ksvalidator = python.parent().unwrap().join("ksvalidator");
    let out = Command::new(python)
        .args([ksvalidator.as_str(), "-v", "RHEL6", path.as_str()])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ksvalidator -v RHEL6 {path} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
