//! `mt-agent`: the replication agent baked into the master-target appliance.
//!
//! The library holds the logic; the binary (`main.rs`, `cli/`) only parses arguments, calls the
//! library and prints. Two halves that never reach into each other's internals:
//! - [`replication`]: the engine (frames, the retention journal, the network sessions). It knows
//!   nothing of the guest operating system: it sees paths, an `io::Fs` and a clock.
//! - [`guest`]: the integration with the appliance's operating system (setup at build time, first
//!   boot, the OVF environment, disk discovery, the retention volume's eligibility).
//!
//! `config` (the agent's configuration file), `atomic_file` (the one writer that replaces a file
//! atomically, used by both halves outside the journal) and `serve` (the service that wires a judged retention
//! volume to the replication listener) sit between them.

pub mod atomic_file;
pub mod config;
pub mod guest;
pub mod replication;
pub mod serve;
