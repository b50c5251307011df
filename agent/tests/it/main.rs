//! The agent's integration tests, one binary (one link step): every file below is a module
//! whose tests keep their names under the module's (`crash::crash_campaign`). Shared support:
//! `common` (the binary, agent.toml, the simulated journal, the model) and `net_common` (the
//! replication rig).

#[path = "../common/mod.rs"]
mod common;
#[path = "../net_common/mod.rs"]
mod net_common;

mod check_retention;
mod cli;
mod clock_skew;
mod corruption;
mod crash;
mod el6_floor;
mod enrol_throttle;
mod full;
mod model;
mod ovfenv;
mod readonly_session;
mod replication_authz;
mod replication_bad_peers;
mod replication_e2e;
mod replication_flood;
mod replication_flow;
mod replication_fuzz;
mod replication_kill;
mod replication_room;
mod replication_streams;
mod replication_wan;
mod resync_mode;
mod serve;
mod setup_cli;
