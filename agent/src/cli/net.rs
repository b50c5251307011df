//! The network verbs: `serve` (the master target's service), `enrol` and `send` (the process
//! server's side). They convert the arguments into the options of `mt_agent::serve` and
//! `mt_agent::replication::net::sender` and print the reports; the sessions are the library's.

use super::{named_disk, parse_bytes};
use camino::Utf8PathBuf;
use clap::Args;
use mt_agent::replication::journal::DEFAULT_BATCH_BYTES;
use mt_agent::replication::net::auth::{self, SenderAuth};
use mt_agent::replication::net::sender::{self, ResyncMode, SendOptions};
use mt_agent::replication::net::senders::Grant;
use mt_agent::replication::net::transport;
use mt_agent::serve::throttle::Backoff;

/// Check the retention volume, listen on the configured port, announce readiness, then
/// accept enrolments and replication sessions.
#[derive(Args)]
pub struct ServeArgs {
    /// The agent configuration (port, failback policy, retention mount).
    #[arg(long, env = "MT_AGENT_CONFIG", default_value = mt_agent::config::DEFAULT_CONFIG_PATH)]
    config: camino::Utf8PathBuf,
    /// Listen on ADDR (e.g. 127.0.0.1:0) instead of every address on the configured port.
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// The journals' directory [default: the configuration's retention mount].
    #[arg(long, env = "MT_AGENT_RETENTION")]
    retention: Option<Utf8PathBuf>,
    /// Most bytes the journals may take; credit stops before it is reached.
    #[arg(long, env = "MT_AGENT_RETENTION_BUDGET", value_parser = parse_bytes)]
    retention_budget: Option<u64>,
    /// Group-commit size per session: writes are made durable and acknowledged per this
    /// many bytes (memory per session grows with it).
    #[arg(long, value_parser = parse_bytes, default_value_t = DEFAULT_BATCH_BYTES)]
    batch: u64,
    /// The master target's key and the senders it authorised.
    #[arg(long, value_name = "DIR", default_value = auth::DEFAULT_SERVER_STATE)]
    state: Utf8PathBuf,
    /// The enrolment passphrase (one line, mode 600).
    #[arg(long, value_name = "FILE", default_value = auth::PASSPHRASE_PATH)]
    passphrase_file: Utf8PathBuf,
    /// End a session that sends nothing (no frame, heartbeat or acknowledgement) for this long
    /// and release its group: "90s", "2m" or seconds.
    #[arg(long, value_name = "TIME", default_value = "60s", value_parser = parse_idle)]
    idle_timeout: std::time::Duration,
    /// Refuse a frame whose source time is further ahead of this machine's clock than TIME
    /// (the sender's clock is wrong): "10m", "30s" or seconds [default: 5m]. Retention,
    /// automatic points and the RPO use this machine's clock whatever the sender's says.
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    max_clock_skew: Option<std::time::Duration>,
    /// After a failed enrolment, the next from the same address (and, once many fail within a
    /// minute from all addresses, every enrolment) waits this long, doubling with each further
    /// failure up to --enrol-backoff-max: "1s", "250ms". A success resets its address;
    /// sessions of enrolled senders never wait.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    enrol_backoff: std::time::Duration,
    /// The longest wait after failed enrolments.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    enrol_backoff_max: std::time::Duration,
    /// Accept enrolments for this long after the start ("90s", "30m", "1h", seconds, "forever",
    /// or "0" / "closed"); `mt-agent senders open` and `close` change it while serve runs.
    #[arg(long, value_name = "TIME", default_value = DEFAULT_ENROL_FOR, value_parser = parse_enrol_for)]
    enrol_for: RetryFor,
}

/// How long serve (at its start) and `senders open` open the enrolment window by default.
pub(super) const DEFAULT_ENROL_FOR: &str = "1h";

/// `--enrol-for`: the duration grammar of `--retry-for`, and "closed" for zero.
fn parse_enrol_for(s: &str) -> Result<RetryFor, String> {
    match s {
        "closed" => Ok(RetryFor(Some(std::time::Duration::ZERO))),
        s => parse_retry_for(s),
    }
}

/// An idle timeout: a duration of at least [`transport::MIN_IDLE_TIMEOUT`].
fn parse_idle(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    if d < transport::MIN_IDLE_TIMEOUT {
        return Err(format!(
            "{s} is shorter than {} s: the peers send a heartbeat every {} s and a live link must not time out",
            transport::MIN_IDLE_TIMEOUT.as_secs(),
            transport::HEARTBEAT_EVERY.as_secs()
        ));
    }
    Ok(d)
}

/// "90", "90s", "15m", "2h", "250ms": a whole number of seconds, minutes, hours or milliseconds
/// (the one duration grammar of the command line).
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || {
        format!("{s:?} is not a duration: write seconds, or a number followed by ms, s, m or h (e.g. \"90s\", \"1h\", \"250ms\")")
    };
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    };
    ms.map(std::time::Duration::from_millis).ok_or_else(bad)
}

/// `--retry-for`: a duration, or "forever" (`None`).
#[derive(Clone, Copy)]
pub(super) struct RetryFor(pub(super) Option<std::time::Duration>);

pub(super) fn parse_retry_for(s: &str) -> Result<RetryFor, String> {
    if s == "forever" {
        return Ok(RetryFor(None));
    }
    parse_duration(s).map(|d| RetryFor(Some(d)))
}

impl ServeArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let enrol_backoff =
            Backoff::new(self.enrol_backoff, self.enrol_backoff_max).map_err(anyhow::Error::msg)?;
        mt_agent::serve::run(&mt_agent::serve::ServeOptions {
            config: self.config,
            listen: self.listen,
            retention: self.retention,
            retention_budget: self.retention_budget,
            batch_bytes: self.batch,
            state: self.state,
            passphrase_file: self.passphrase_file,
            idle_timeout: self.idle_timeout,
            max_clock_skew: self.max_clock_skew,
            enrol_backoff,
            enrol_for: self.enrol_for.0,
        })
    }
}

/// Enrol this process server with a master target: prove its passphrase, pin its key, and ask
/// to write groups. The master target grants a group no other key is allowed for; any other is
/// its operator's decision (`mt-agent senders allow` there). Enrolment is accepted only while the
/// master target's enrolment window is open (`mt-agent senders open` there).
#[derive(Args)]
pub struct EnrolArgs {
    /// The master target, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    to: String,
    /// A file holding the master target's passphrase (one line, mode 600).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Utf8PathBuf,
    /// This sender's key and pinned master-target keys.
    #[arg(long, value_name = "DIR", default_value = auth::DEFAULT_SENDER_STATE)]
    state: Utf8PathBuf,
    /// Ask to write this group (repeat for more).
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
}

impl EnrolArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let pass = auth::read_passphrase(&self.passphrase_file)?;
        let sender = SenderAuth::load(&self.state)?;
        let (key, grant) = sender.enrol_waiting(&self.to, &pass, &self.groups, &|l| {
            eprintln!("mt-agent: {l}")
        })?;
        let me = auth::hex(&sender.public_key());
        println!(
            "enrolled with {}: its key {} is pinned; this sender's key {me} is enrolled there",
            self.to,
            auth::hex(&key),
        );
        for line in grant_lines(&me, &grant, &self.groups) {
            println!("{line}");
        }
        Ok(())
    }
}

/// What an enrolment's groups came to, and what the master target's operator must still run.
fn grant_lines(me: &str, grant: &Grant, asked: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    if asked.is_empty() {
        out.push(format!(
            "no group asked for: to let it write one, run on the master target: mt-agent senders allow {me} --group GROUP"
        ));
    }
    if !grant.granted.is_empty() {
        out.push(format!("groups granted: {}", grant.granted.join(", ")));
    }
    if !grant.withheld.is_empty() {
        let flags: Vec<String> = grant
            .withheld
            .iter()
            .map(|g| format!("--group {g}"))
            .collect();
        out.push(format!(
            "groups not granted (another key is allowed for them): {}; the master target's operator decides: mt-agent senders allow {me} {}",
            grant.withheld.join(", "),
            flags.join(" ")
        ));
    }
    out
}

/// Replicate a group to a master target: a full copy or delta resync of source disks,
/// and/or a recorded change stream. Resumes from the last acknowledged position.
#[derive(Args)]
pub struct SendArgs {
    /// The replication group (created on the master target beforehand).
    group: String,
    /// The master target, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    to: String,
    /// NAME=SOURCE (a file or block device), once per disk, in the group's order.
    #[arg(long = "disk")]
    disks: Vec<String>,
    /// Copy every block of the sources.
    #[arg(long, conflicts_with = "delta")]
    full: bool,
    /// Send only blocks that differ from the master target's copy.
    #[arg(long)]
    delta: bool,
    /// Then send this recorded change stream (the frame format `apply --from` reads).
    #[arg(long, value_name = "FILE")]
    stream: Option<Utf8PathBuf>,
    /// Send the --stream into GROUP even though it was recorded for another group.
    #[arg(long, requires = "stream")]
    stream_group_override: bool,
    /// Enrol first with this passphrase file if no key is pinned for the master target (asking
    /// to write GROUP).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<Utf8PathBuf>,
    /// This sender's key and pinned master-target keys.
    #[arg(long, value_name = "DIR", default_value = auth::DEFAULT_SENDER_STATE)]
    state: Utf8PathBuf,
    /// After a lost connection, keep reconnecting this long ("90s", "30m", "1h", seconds, or
    /// "forever"); counted from the loss, and afresh after every acknowledgement.
    #[arg(long, value_name = "TIME", default_value = "1h", value_parser = parse_retry_for)]
    retry_for: RetryFor,
    /// End a connection that receives nothing (no credit, acknowledgement or heartbeat) for
    /// this long, and reconnect.
    #[arg(long, value_name = "TIME", default_value = "60s", value_parser = parse_idle)]
    idle_timeout: std::time::Duration,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

impl SendArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let to = self.to;
        let sender_auth = SenderAuth::load(&self.state)?;
        // `--passphrase-file` is the enrol verb folded into the first send.
        if sender_auth.pinned(&to)?.is_none() {
            if let Some(f) = &self.passphrase_file {
                let pass = auth::read_passphrase(f)?;
                let asked = [self.group.clone()];
                let (key, grant) = sender_auth
                    .enrol_waiting(&to, &pass, &asked, &|l| eprintln!("mt-agent: {l}"))?;
                eprintln!(
                    "mt-agent: enrolled with {to}, pinned key {}",
                    auth::hex(&key)
                );
                let me = auth::hex(&sender_auth.public_key());
                for line in grant_lines(&me, &grant, &asked) {
                    eprintln!("mt-agent: {line}");
                }
            }
        }
        let mut sources = Vec::new();
        for d in &self.disks {
            let (name, path) = named_disk(d, "NAME=SOURCE (a file or block device)")?;
            sources.push((name.to_owned(), Utf8PathBuf::from(path)));
        }
        let resync = match (self.full, self.delta) {
            (true, _) => Some(ResyncMode::Full),
            (_, true) => Some(ResyncMode::Delta),
            _ => None,
        };
        let group = self.group;
        let opts = SendOptions {
            target: to,
            group: group.clone(),
            disks: sources,
            resync,
            stream: self.stream,
            stream_group_override: self.stream_group_override,
            state: self.state,
            retry_for: self.retry_for.0,
            idle_timeout: self.idle_timeout,
        };
        let r = sender::send(&opts, &|l| eprintln!("mt-agent: {l}"))?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            println!(
                "group {group}: acknowledged through LSN {}; {} of {} compared blocks changed ({} bytes), {} frames, wire {} bytes sent / {} received ({} of hashes), {} reconnects",
                r.acked, r.blocks_changed, r.blocks_compared, r.changed_bytes, r.frames_sent,
                r.wire_bytes_sent, r.wire_bytes_received, r.hash_bytes_received, r.reconnects
            );
        }
        Ok(())
    }
}
