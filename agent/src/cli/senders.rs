//! `mt-agent senders`: the master target operator's say over who may write what (allow, list,
//! revoke) and when senders may enrol (open, close). Each verb changes the files in serve's
//! state directory through `mt_agent::replication::net::senders` and `enrol_window` and prints
//! what it changed; a running serve reads them again by itself.

use super::net::{parse_retry_for, RetryFor, DEFAULT_ENROL_FOR};
use anyhow::{bail, Result};
use camino::Utf8PathBuf;
use clap::{Args, Subcommand};
use mt_agent::replication::journal::clock::{Clock, SystemClock};
use mt_agent::replication::journal::valid_group_name;
use mt_agent::replication::net::auth::{self, hex};
use mt_agent::replication::net::enrol_window::EnrolmentWindow;
use mt_agent::replication::net::senders;

/// Which sender keys may write which groups on this master target, and when senders may enrol.
///
/// 1. Enrolment is open for `serve --enrol-for` (1 hour) after serve starts; `senders open
///    [--for 1h]` opens it again, `senders close` ends it.
///
/// 2. On the process server, `mt-agent enrol --to HOST:PORT --passphrase-file F --group G`
///    proves the passphrase and asks for G: the master target grants a group no other key is
///    allowed for; any other request is the operator's decision.
///
/// 3. Here, `senders list` shows every key, its groups and where it enrolled from; `senders
///    allow KEY --group G` lets a key write a group (a second process server for a group, or a
///    request that was not granted).
///
/// 4. `senders revoke KEY --group G` takes a group away, `senders revoke KEY` removes the key (it
///    must enrol again). A running serve sees every change within about a second and ends the
///    sessions of a key that lost its group.
///
/// KEY is the 64 hex digits or a unique prefix of at least 8.
#[derive(Subcommand)]
pub enum SendersCommand {
    Allow(AllowArgs),
    List(ListArgs),
    Revoke(RevokeArgs),
    Open(OpenArgs),
    Close(CloseArgs),
}

impl SendersCommand {
    pub fn run(self) -> Result<()> {
        match self {
            SendersCommand::Allow(a) => a.run(),
            SendersCommand::List(a) => a.run(),
            SendersCommand::Revoke(a) => a.run(),
            SendersCommand::Open(a) => a.run(),
            SendersCommand::Close(a) => a.run(),
        }
    }
}

/// The state directory of `serve`, where the authorised senders and the window live.
#[derive(Args)]
pub struct StateArg {
    /// The master target's state directory (serve's --state).
    #[arg(long, value_name = "DIR", default_value = auth::DEFAULT_SERVER_STATE)]
    state: Utf8PathBuf,
}

fn groups_of(v: &[String]) -> Result<Vec<String>> {
    for g in v {
        valid_group_name(g).map_err(anyhow::Error::msg)?;
    }
    Ok(v.to_vec())
}

fn list(groups: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let v: Vec<String> = groups.into_iter().map(|g| g.as_ref().to_owned()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Let a sender key write groups (whether or not it asked for them at its enrolment).
#[derive(Args)]
pub struct AllowArgs {
    /// The sender's key: 64 hex digits, or a unique prefix of at least 8 of an enrolled key. A
    /// key given in full that is not enrolled yet is added (its sender still enrols, to pin this
    /// master target's key).
    key: String,
    /// A group it may write (repeat for more).
    #[arg(long = "group", value_name = "GROUP", required = true)]
    groups: Vec<String>,
    #[command(flatten)]
    state: StateArg,
}

impl AllowArgs {
    fn run(self) -> Result<()> {
        let groups = groups_of(&self.groups)?;
        let (key, known, added, now) = senders::update(&self.state.state, |s| {
            let key = s.resolve(&self.key)?;
            let known = s.is_enrolled(&key);
            let added = s.allow(key, &groups);
            let now = s.get(&key).map(|e| e.groups.clone()).unwrap_or_default();
            Ok((key, known, added, now))
        })?;
        let k = hex(&key);
        if added.is_empty() {
            println!(
                "sender key {k} may already write {}; nothing changed",
                list(&groups)
            );
        } else {
            let note = if known {
                ""
            } else {
                " (a key not enrolled yet: added)"
            };
            println!(
                "sender key {k}{note} may now write {} (added: {})",
                list(&now),
                list(&added)
            );
        }
        Ok(())
    }
}

/// Show every enrolled sender key, the groups it may write, where it enrolled from, and the
/// enrolment window.
#[derive(Args)]
pub struct ListArgs {
    /// Print JSON: {"enrolment": {"open", "until"}, "senders": [{"key", "groups", "enrolled_from"}]}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    state: StateArg,
}

impl ListArgs {
    fn run(self) -> Result<()> {
        let store = senders::load(&self.state.state)?;
        let window = EnrolmentWindow::load(&self.state.state)?;
        let open = window.is_open(SystemClock.now());
        if self.json {
            let until = match window {
                EnrolmentWindow::OpenUntil(t) if open => Some(t.to_string()),
                _ => None,
            };
            let senders: Vec<serde_json::Value> = store
                .iter()
                .map(|(k, e)| {
                    serde_json::json!({
                        "key": hex(k),
                        "groups": e.groups,
                        "enrolled_from": e.from,
                    })
                })
                .collect();
            let out = serde_json::json!({
                "enrolment": { "open": open, "until": until },
                "senders": senders,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        match window {
            _ if !open => println!("enrolment: closed (mt-agent senders open [--for 1h] opens it)"),
            w => println!("enrolment: {w} (mt-agent senders close ends it)"),
        }
        if store.iter().next().is_none() {
            println!("no sender key is enrolled");
            return Ok(());
        }
        println!("{:<64}  {:<24}  ENROLLED FROM", "KEY", "GROUPS");
        for (k, e) in store.iter() {
            println!(
                "{}  {:<24}  {}",
                hex(k),
                list(&e.groups),
                e.from.as_deref().unwrap_or("-")
            );
        }
        Ok(())
    }
}

/// Take groups away from a sender key, or without --group remove the key (it must enrol
/// again). A running serve ends the key's sessions on those groups within about a second.
#[derive(Args)]
pub struct RevokeArgs {
    /// The sender's key: 64 hex digits, or a unique prefix of at least 8.
    key: String,
    /// A group it may no longer write (repeat for more); without it the key is removed.
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
    #[command(flatten)]
    state: StateArg,
}

impl RevokeArgs {
    fn run(self) -> Result<()> {
        let groups = groups_of(&self.groups)?;
        let whole = groups.is_empty();
        let (key, removed, left, was) = senders::update(&self.state.state, |s| {
            let key = s.resolve(&self.key)?;
            if !s.is_enrolled(&key) {
                bail!("sender key {} is not enrolled; nothing changed", hex(&key));
            }
            if whole {
                let was = s.remove(&key).unwrap_or_default();
                return Ok((key, Vec::new(), Default::default(), was.groups));
            }
            let removed = s.revoke_groups(&key, &groups);
            let left = s.get(&key).map(|e| e.groups.clone()).unwrap_or_default();
            Ok((key, removed, left, Default::default()))
        })?;
        let k = hex(&key);
        if whole {
            println!(
                "removed sender key {k} (it could write {}): its sessions end and it must enrol again",
                list(&was)
            );
        } else if removed.is_empty() {
            println!(
                "sender key {k} could not write {}; nothing changed",
                list(&groups)
            );
        } else {
            println!(
                "sender key {k} may no longer write {} (its sessions on them end); it may still write {}",
                list(&removed),
                list(&left)
            );
        }
        Ok(())
    }
}

/// Open the enrolment window: senders that know the passphrase may enrol until it closes.
#[derive(Args)]
pub struct OpenArgs {
    /// How long ("90s", "30m", "1h", seconds, or "forever").
    #[arg(long = "for", value_name = "TIME", default_value = DEFAULT_ENROL_FOR, value_parser = parse_retry_for)]
    open_for: RetryFor,
    #[command(flatten)]
    state: StateArg,
}

impl OpenArgs {
    fn run(self) -> Result<()> {
        if self.open_for.0.is_some_and(|d| d.is_zero()) {
            bail!(
                "--for 0 would open nothing: mt-agent senders close closes the window (the default is --for {DEFAULT_ENROL_FOR})"
            );
        }
        let w = EnrolmentWindow::opened_for(self.open_for.0, SystemClock.now());
        w.store(&self.state.state)?;
        println!("enrolment {w} (mt-agent senders close ends it)");
        Ok(())
    }
}

/// Close the enrolment window: enrolments are refused until it is opened again.
#[derive(Args)]
pub struct CloseArgs {
    #[command(flatten)]
    state: StateArg,
}

impl CloseArgs {
    fn run(self) -> Result<()> {
        let before = EnrolmentWindow::load(&self.state.state).ok();
        EnrolmentWindow::Closed.store(&self.state.state)?;
        match before {
            Some(w) if w.is_open(SystemClock.now()) => {
                println!("enrolment closed (it was {w})")
            }
            _ => println!("enrolment closed (it was closed already)"),
        }
        Ok(())
    }
}
