//! The `mt-agent` command line: the clap definitions and, per verb, a `run` that converts the
//! arguments, calls the library and prints. One module per verb family: `journal` (group, points,
//! recover, status, apply, prune, verify), `net` (serve, enrol, send), `senders` (allow, list,
//! revoke, open, close), `guest` (show-config,
//! setup, firstboot, disks, check-retention), `ovfenv`. No logic lives here: what a verb does is
//! in `mt_agent`; this tree decides only how it is asked for and how its result is shown.

mod guest;
mod journal;
mod net;
mod ovfenv;
mod senders;

use clap::{Parser, Subcommand};
use mt_agent::replication::journal::JournalError;

/// The master target's replication agent.
#[derive(Parser)]
#[command(name = "mt-agent", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// The order of the variants is the order `mt-agent --help` lists the verbs in. A verb's help text
// is the doc comment of its arguments' type; a family of subcommands has its own here.
#[derive(Subcommand)]
enum Command {
    ShowConfig(guest::ShowConfigArgs),
    Serve(net::ServeArgs),
    Enrol(net::EnrolArgs),
    Send(net::SendArgs),
    #[command(subcommand)]
    Senders(senders::SendersCommand),
    Setup(guest::SetupArgs),
    Firstboot(guest::FirstbootArgs),
    Disks(guest::DisksArgs),
    CheckRetention(guest::CheckRetentionArgs),
    /// Define replication groups.
    #[command(subcommand)]
    Group(journal::GroupCommand),
    /// Deploy-time configuration from the OVF environment (vSphere's deploy wizard values).
    #[command(subcommand)]
    Ovfenv(ovfenv::OvfenvCommand),
    Points(journal::PointsArgs),
    Recover(journal::RecoverArgs),
    Status(journal::StatusArgs),
    Apply(journal::ApplyArgs),
    Prune(journal::PruneArgs),
    Verify(journal::VerifyArgs),
}

impl Cli {
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::ShowConfig(a) => a.run(),
            Command::Serve(a) => a.run(),
            Command::Enrol(a) => a.run(),
            Command::Send(a) => a.run(),
            Command::Senders(c) => c.run(),
            Command::Setup(a) => a.run(),
            Command::Firstboot(a) => a.run(),
            Command::Disks(a) => a.run(),
            Command::CheckRetention(a) => a.run(),
            Command::Group(c) => c.run(),
            Command::Ovfenv(c) => c.run(),
            Command::Points(a) => a.run(),
            Command::Recover(a) => a.run(),
            Command::Status(a) => a.run(),
            Command::Apply(a) => a.run(),
            Command::Prune(a) => a.run(),
            Command::Verify(a) => a.run(),
        }
    }
}

/// Exit status when acknowledgements stopped because the retention volume is full (EX_TEMPFAIL:
/// retry after freeing space).
const EXIT_RETENTION_FULL: i32 = 75;

/// The process's exit status for an error a verb returned.
pub fn exit_status(e: &anyhow::Error) -> i32 {
    let full = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<JournalError>(),
            Some(JournalError::RetentionFull(_))
        )
    });
    if full {
        EXIT_RETENTION_FULL
    } else {
        1
    }
}

/// A size flag (`--size 40GiB`, `--batch 4M`): the one grammar of sizes, the contract's `ByteSize`.
fn parse_bytes(s: &str) -> Result<u64, String> {
    s.parse::<mt_contract::units::ByteSize>()
        .map(|b| b.bytes())
        .map_err(|e| e.to_string())
}

/// Splits a `--disk NAME=PATH` value; `expected` says what PATH may be.
fn named_disk<'a>(value: &'a str, expected: &str) -> anyhow::Result<(&'a str, &'a str)> {
    value
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("--disk {value:?}: expected {expected}"))
}
