//! `mt-agent`: the replication agent baked into the master-target appliance.
//!
//! The library holds the logic; `main.rs` only parses arguments and prints.

pub mod config;
pub mod disks;
pub mod firstboot;
pub mod frame;
pub mod journal;
pub mod net;
pub mod ovfenv;
pub mod retention;
pub mod serve;
pub mod setup;
