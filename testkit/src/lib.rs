//! What every test in the workspace shares, in one place: where the workspace and its `target/`
//! are, fresh scratch directories that never collide, one seeded random generator, the host
//! tools the tests run (with the Debian package of each), running programs with failure
//! output that names the command, and a fault-injecting TCP link (`link`) that plays a WAN.
//!
//! It depends on no crate of the workspace (the appliance's and the agent's own test support
//! builds on it, never the other way round) and holds no test logic.

pub mod host;
pub mod link;
pub mod rng;
pub mod run;

pub use host::{require_root, require_tool, require_tools};
pub use link::{idle_connections, FaultyLink};
pub use rng::Rng;

use camino::{Utf8Path, Utf8PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

/// The workspace root (the directory of the top-level `Cargo.toml`).
pub fn workspace_root() -> Utf8PathBuf {
    Utf8Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ lives one level under the workspace root")
        .to_owned()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when the run sets it, else the workspace's
/// `target/`.
pub fn target_dir() -> Utf8PathBuf {
    match std::env::var("CARGO_TARGET_DIR") {
        Ok(dir) if !dir.is_empty() => {
            let dir = Utf8PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// Where every scratch directory lives: one directory per test process.
fn scratch_root() -> Utf8PathBuf {
    target_dir().join("test-scratch")
}

/// The names of the entries of `dir`, sorted: what a test expects a directory to hold (and
/// nothing half-written beside it).
pub fn names_in(dir: &camino::Utf8Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A fresh, empty directory for one test: `target/test-scratch/<pid>/<name>-<n>`.
///
/// On the file system that holds `target/` (never a tmpfs such as /dev/shm), so that fsync,
/// fdatasync and O_DIRECT behave as they do on a real disk. The process id keeps two runs on
/// one machine apart, the counter two calls in one process (tests of one binary run on threads
/// at the same time). The directory stays after the test, for inspection; the first call in a
/// process removes what processes that ended more than an hour ago left behind.
pub fn scratch(name: &str) -> Utf8PathBuf {
    static SWEEP: Once = Once::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    SWEEP.call_once(sweep_dead_processes);
    assert!(
        !name.is_empty() && !name.contains('/'),
        "a scratch name is one path component, not {name:?}"
    );
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = scratch_root()
        .join(std::process::id().to_string())
        .join(format!("{name}-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {dir}: {e}"));
    dir
}

/// How long the scratch directories of an ended process are kept: long enough to look at a
/// failure after the rest of the run (each test binary is a process of its own), short enough
/// that repeated runs do not fill the disk.
const KEEP_ENDED: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes the scratch directories of processes that have ended (numbered directories whose
/// `/proc/<pid>` is gone) and were last written to more than `KEEP_ENDED` ago; a running test's
/// directory is never touched.
fn sweep_dead_processes() {
    let Ok(entries) = std::fs::read_dir(scratch_root()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let ended = pid != std::process::id() && !Utf8Path::new(&format!("/proc/{pid}")).exists();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > KEEP_ENDED);
        if ended && old {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Held for the whole of a test that boots QEMU: each of the workspace's test binaries runs its
/// tests on parallel threads, and under TCG one VM wants both cores, so two at once only make
/// each slower and push its console and boot deadlines.
pub fn qemu_exclusive() -> std::sync::MutexGuard<'static, ()> {
    static QEMU: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed while holding it leaves nothing that the next one must not touch.
    QEMU.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_directories_are_fresh_distinct_and_under_target() {
        let a = scratch("same");
        let b = scratch("same");
        assert_ne!(a, b);
        assert!(a.starts_with(target_dir()), "{a}");
        std::fs::write(a.join("f"), "x").unwrap();
        assert!(b.read_dir_utf8().unwrap().next().is_none());
    }

    #[test]
    fn the_workspace_root_holds_the_workspace_manifest() {
        let text = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(text.contains("[workspace]"));
    }
}
