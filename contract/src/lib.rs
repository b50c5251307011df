//! `mt-contract`: what the appliance build (`appliance`, `xtask`) and the guest agent (`mt-agent`)
//! must agree on, written once.
//!
//! - [`rules`]: the value rules (host name, usable unicast address, static subnet and gateway, SSH
//!   public key, passphrase limits) that the definition and the OVF environment both apply.
//! - [`deploy`]: the deploy-time properties (keys, types, qualifiers, defaults) the OVF offers and
//!   the guest reads back from the OVF environment.
//! - [`config`]: the agent's configuration file (`agent.toml`), the build's output and the agent's
//!   input.
//! - [`units`]: `ByteSize` and its one grammar.
//! - [`guest`]: paths, unit names, ports and the readiness line of the guest image.
//! - [`network`]: the one renderer of the guest's network files (`/etc/hosts`, ifupdown, ifcfg,
//!   resolv.conf).
//!
//! Architecture invariant: this crate is pure. It does no I/O, runs no process and depends on
//! nothing but serde (and camino for the one path type); both sides convert at their edges (the agent reads
//! `agent.toml` in `mt_agent::config::load`).

pub mod config;
pub mod deploy;
pub mod guest;
pub mod network;
pub mod rules;
pub mod units;
