//! Content-addressed stage outputs: each stage of `build-ova` writes into `build/<stage>-<hash>/`,
//! where the hash is the SHA-256 of everything the stage reads (definition sections, package
//! list, agent binary, the stage's own recipe version). A directory that exists is complete: it
//! is built under a temporary name and renamed at the end, so a failure or Ctrl-C never leaves a
//! directory that looks finished. An unchanged stage is reused instead of rebuilt.
//!
//! This module decides only where outputs live and whether they are reusable; it runs no tool.

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// Everything a stage's output depends on, fed to SHA-256 with a tag per item so that
/// `("a", "bc")` and `("ab", "c")` hash differently.
pub struct StageInputs {
    stage: &'static str,
    hasher: Sha256,
}

impl StageInputs {
    /// `recipe` is bumped by hand when the stage's own code changes what it produces.
    pub fn new(stage: &'static str, recipe: u32) -> StageInputs {
        let mut s = StageInputs {
            stage,
            hasher: Sha256::new(),
        };
        s.add("stage", stage.as_bytes());
        s.add("recipe", &recipe.to_le_bytes());
        s
    }

    pub fn add(&mut self, name: &str, value: &[u8]) -> &mut Self {
        for part in [name.as_bytes(), value] {
            self.hasher.update((part.len() as u64).to_le_bytes());
            self.hasher.update(part);
        }
        self
    }

    pub fn add_file(&mut self, name: &str, path: &Utf8Path) -> Result<&mut Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
        Ok(self.add(name, &bytes))
    }

    /// The stage's output directory name: `<stage>-<first 16 hex digits of the hash>`.
    fn dir_name(&self) -> String {
        let digest = self.hasher.clone().finalize();
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("{}-{hex}", self.stage)
    }
}

/// The build directory holding every stage's output.
pub struct Cache {
    root: Utf8PathBuf,
}

/// A finished stage: its directory and whether it was reused.
pub struct StageOutput {
    pub dir: Utf8PathBuf,
    pub reused: bool,
    pub elapsed: Duration,
}

const TMP_MARK: &str = ".partial-";

impl Cache {
    pub fn open(root: &Utf8Path) -> Result<Cache> {
        std::fs::create_dir_all(root).with_context(|| format!("cannot create {root}"))?;
        let cache = Cache {
            root: root.to_owned(),
        };
        cache.remove_abandoned()?;
        Ok(cache)
    }

    /// Returns the stage's directory, building it with `build` (which fills the temporary
    /// directory it is given) unless a complete one exists.
    pub fn stage(
        &self,
        inputs: &StageInputs,
        build: impl FnOnce(&Utf8Path) -> Result<()>,
    ) -> Result<StageOutput> {
        let dir = self.root.join(inputs.dir_name());
        if dir.is_dir() {
            return Ok(StageOutput {
                dir,
                reused: true,
                elapsed: Duration::ZERO,
            });
        }
        let tmp = self.root.join(format!(
            "{TMP_MARK}{}-{}",
            std::process::id(),
            inputs.dir_name()
        ));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove {tmp}"))?;
        }
        std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {tmp}"))?;
        let start = Instant::now();
        let result = build(&tmp);
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &dir).with_context(|| format!("cannot rename {tmp} to {dir}"))?;
        let elapsed = start.elapsed();
        std::fs::write(
            dir.join(".elapsed-seconds"),
            format!("{:.1}\n", elapsed.as_secs_f64()),
        )
        .with_context(|| format!("cannot write into {dir}"))?;
        self.remove_older(inputs.stage, &dir)?;
        Ok(StageOutput {
            dir,
            reused: false,
            elapsed,
        })
    }

    /// How long the last complete build of `stage` took, to estimate the next one.
    pub fn last_duration(&self, stage: &str) -> Option<Duration> {
        let prefix = format!("{stage}-");
        std::fs::read_dir(&self.root)
            .ok()?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .filter_map(|e| std::fs::read_to_string(e.path().join(".elapsed-seconds")).ok())
            .filter_map(|s| s.trim().parse::<f64>().ok())
            .map(Duration::from_secs_f64)
            .next()
    }

    /// Only the newest output of each stage is kept: the OS disk alone is a multi-GiB file.
    fn remove_older(&self, stage: &str, keep: &Utf8Path) -> Result<()> {
        let prefix = format!("{stage}-");
        for entry in
            std::fs::read_dir(&self.root).with_context(|| format!("cannot list {}", self.root))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_hash = name
                .strip_prefix(&prefix)
                .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            if is_hash && self.root.join(&name) != keep {
                std::fs::remove_dir_all(entry.path())
                    .with_context(|| format!("cannot remove the old stage output {name}"))?;
            }
        }
        Ok(())
    }

    /// Temporary directories of builds that were interrupted (Ctrl-C, power loss): their
    /// process is gone, so nobody will finish them.
    fn remove_abandoned(&self) -> Result<()> {
        for entry in
            std::fs::read_dir(&self.root).with_context(|| format!("cannot list {}", self.root))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(TMP_MARK) else {
                continue;
            };
            let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| Utf8Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                eprintln!("removing the leftovers of an interrupted build: {name}");
                std::fs::remove_dir_all(entry.path())
                    .with_context(|| format!("cannot remove {name}"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> Utf8PathBuf {
        testkit::scratch(&format!("xtask-cache-{name}"))
    }

    #[test]
    fn an_unchanged_stage_is_reused_and_a_changed_one_rebuilt() {
        let root = scratch("reuse");
        let cache = Cache::open(&root).unwrap();
        let mut runs = 0;
        let mut inputs = StageInputs::new("rootfs", 1);
        inputs.add("packages", b"a b c");
        for _ in 0..2 {
            let out = cache
                .stage(&inputs, |dir| {
                    runs += 1;
                    std::fs::write(dir.join("out"), "x").map_err(Into::into)
                })
                .unwrap();
            assert_eq!(std::fs::read_to_string(out.dir.join("out")).unwrap(), "x");
        }
        assert_eq!(runs, 1);
        inputs.add("packages", b"d");
        let out = cache.stage(&inputs, |_| Ok(())).unwrap();
        assert!(!out.reused);
        let left: Vec<_> = std::fs::read_dir(&root).unwrap().collect();
        assert_eq!(
            left.len(),
            1,
            "the older output of the same stage is removed"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_failed_stage_leaves_nothing_that_looks_complete() {
        let root = scratch("fail");
        let cache = Cache::open(&root).unwrap();
        let inputs = StageInputs::new("disk", 1);
        let err = cache
            .stage(&inputs, |dir| {
                std::fs::write(dir.join("half"), "x")?;
                anyhow::bail!("mke2fs failed")
            })
            .err()
            .unwrap();
        assert!(err.to_string().contains("mke2fs failed"));
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_order_of_input_bytes_matters() {
        let mut a = StageInputs::new("s", 1);
        a.add("a", b"bc");
        let mut b = StageInputs::new("s", 1);
        b.add("ab", b"c");
        assert_ne!(a.dir_name(), b.dir_name());
    }
}
