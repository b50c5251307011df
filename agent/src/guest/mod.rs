//! The guest integration: what the agent does to and learns from the appliance's operating system.
//! `setup` (the runbook's changes to an image root, at build time), `firstboot` (the per-VM steps),
//! `ovfenv` (the deploy-time OVF environment), `disks` (SCSI discovery and recorded identities),
//! `retention` (whether a volume may hold the retention journal). Nothing here writes a replication
//! target or the journal; that is the engine's (`crate::replication`).

pub mod disks;
pub mod firstboot;
pub mod ovfenv;
pub mod retention;
pub mod setup;
