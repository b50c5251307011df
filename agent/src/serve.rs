//! `mt-agent serve`: loads the configuration, refuses to start unless the retention volume
//! passes its checks and its own disks are the ones first boot recorded, holds the volume's lock,
//! listens on the configured port and announces readiness on one line that tools (the boot test,
//! an operator watching the console) wait for, then accepts replication sessions and enrolments
//! ([`crate::replication::net`]), one thread per connection so a misbehaving peer only ends its own session.

use crate::config::AgentConfig;
use crate::replication::net::auth::{hex, Accepted, ServerAuth};
use crate::replication::net::sessions::Sessions;
use anyhow::{Context, Result};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;

/// The prefix of the readiness line (a guest fact the boot test waits for).
pub use mt_contract::guest::READY_PREFIX;

pub fn readiness_line(cfg: &AgentConfig) -> String {
    mt_contract::guest::readiness_line(cfg.port, cfg.retention_mount.as_str())
}

/// Where and how `serve` runs; the defaults are the appliance's.
pub struct ServeOptions {
    pub config: camino::Utf8PathBuf,
    /// Listen here instead of every address on the configured port.
    pub listen: Option<SocketAddr>,
    /// The journals' directory [default: the configuration's retention mount, which is checked].
    pub retention: Option<camino::Utf8PathBuf>,
    pub retention_budget: Option<u64>,
    /// Group-commit size of every session's journal (bytes made durable per flush).
    pub batch_bytes: u64,
    /// Keys and authorised senders.
    pub state: camino::Utf8PathBuf,
    pub passphrase_file: camino::Utf8PathBuf,
    /// A session that hears nothing for this long ends and releases its group.
    pub idle_timeout: std::time::Duration,
}

fn log(line: &str) {
    eprintln!("mt-agent: {line}");
}

/// Runs until the process is stopped.
pub fn run(opts: &ServeOptions) -> Result<()> {
    let mut cfg = crate::config::load(&opts.config)?;
    crate::guest::disks::verify_identity(&crate::guest::disks::SystemPaths::default(), &cfg)
        .context("mt-agent refuses to start")?;
    let volume = crate::guest::retention::check(&cfg.retention_mount)
        .context("mt-agent refuses to start")?;
    // Held while serving: check-retention and a second agent see the volume as taken.
    let _lock = crate::guest::retention::lock(&volume.path)
        .map_err(anyhow::Error::msg)
        .context("mt-agent refuses to start")?;
    let addr = opts
        .listen
        .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, cfg.port)));
    let listener = TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} (agent.toml: port, or --listen)"))?;
    cfg.port = listener.local_addr()?.port();
    let auth = Arc::new(ServerAuth::load(&opts.state, &opts.passphrase_file)?);
    let sessions = Arc::new(Sessions::new(opts.idle_timeout));
    let root = opts
        .retention
        .clone()
        .unwrap_or_else(|| cfg.retention_mount.clone());
    let vol = crate::replication::local::retention_volume(
        &cfg,
        root,
        opts.retention_budget,
        opts.batch_bytes,
    );
    eprintln!(
        "mt-agent: retention volume {} ({} GiB, {} GiB free)",
        volume.path,
        volume.capacity_bytes >> 30,
        volume.free_bytes >> 30
    );
    log(&format!("master target key {}", hex(&auth.public_key())));
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", readiness_line(&cfg))?;
    out.flush()?;
    drop(out);
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log(&format!("accept failed: {e}"));
                continue;
            }
        };
        let (auth, vol, sessions) = (auth.clone(), vol.clone(), sessions.clone());
        std::thread::spawn(move || serve_connection(stream, &auth, &vol, &sessions));
    }
    Ok(())
}

fn serve_connection(
    stream: std::net::TcpStream,
    auth: &ServerAuth,
    vol: &crate::replication::journal::RetentionVolume,
    sessions: &Sessions,
) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    match auth.accept(stream) {
        Err(e) => log(&format!("{peer}: refused: {e:#}")),
        Ok(Accepted::Enrolled(key)) => log(&format!("{peer}: enrolled sender key {}", hex(&key))),
        Ok(Accepted::Session(ch)) => {
            let key = hex(&ch.remote_key[..4]);
            let plog = |l: &str| log(&format!("{peer}: {l}"));
            match crate::replication::net::receiver::run_session(*ch, vol, sessions, &peer, &plog) {
                Ok(s) => log(&format!(
                    "{peer} (sender {key}…): session for group {} ended; {} messages, acknowledged through LSN {}{}",
                    s.group, s.frames, s.acked, s.resync
                )),
                Err(e) => log(&format!("{peer} (sender {key}…): session ended with an error: {e:#}")),
            }
        }
    }
}
