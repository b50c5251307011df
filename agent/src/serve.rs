//! `mt-agent serve`: loads the configuration, refuses to start unless the retention volume
//! passes its checks and its own disks are the ones first boot recorded, holds the volume's lock, listens on the configured port and announces readiness on one line that
//! tools (the boot test, an operator watching the console) wait for. Replication grows here.

use crate::config::AgentConfig;
use anyhow::{Context, Result};
use camino::Utf8Path;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};

/// The prefix of the readiness line: `mt-agent: ready port=9443 retention=/mnt/retention`.
pub const READY_PREFIX: &str = "mt-agent: ready";

pub fn readiness_line(cfg: &AgentConfig) -> String {
    format!(
        "{READY_PREFIX} port={} retention={}",
        cfg.port, cfg.retention_mount
    )
}

/// Runs until the process is stopped.
pub fn run(config_path: &Utf8Path) -> Result<()> {
    let cfg = AgentConfig::load(config_path)?;
    crate::disks::verify_identity(&crate::disks::SystemPaths::default(), &cfg)
        .context("mt-agent refuses to start")?;
    let volume =
        crate::retention::check(&cfg.retention_mount).context("mt-agent refuses to start")?;
    // Held while serving: check-retention and a second agent see the volume as taken.
    let _lock = crate::retention::lock(&volume.path)
        .map_err(anyhow::Error::msg)
        .context("mt-agent refuses to start")?;
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, cfg.port))
        .with_context(|| format!("cannot listen on port {} (agent.toml: port)", cfg.port))?;
    eprintln!(
        "mt-agent: retention volume {} ({} GiB, {} GiB free)",
        volume.path,
        volume.capacity_bytes >> 30,
        volume.free_bytes >> 30
    );
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", readiness_line(&cfg))?;
    out.flush()?;
    drop(out);
    for conn in listener.incoming() {
        match conn {
            Ok(mut stream) => {
                let _ = writeln!(stream, "mt-agent {}", env!("CARGO_PKG_VERSION"));
            }
            Err(e) => eprintln!("mt-agent: accept failed: {e}"),
        }
    }
    Ok(())
}
