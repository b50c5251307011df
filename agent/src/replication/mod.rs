//! The replication engine: `frame` (the wire and stream record of a write or tag), `journal` (the
//! retention journal: timeline, undo epochs, recovery points, recovery), `net` (authenticated,
//! encrypted sessions that carry frames from a sender to the journal), `apply` (a recorded stream
//! file fed to the journal) and `local` (the journal on this machine's real disks and clock).
//! Nothing here knows the guest operating system: no distribution, no systemd, no sysfs.

pub mod apply;
pub mod frame;
pub mod journal;
pub mod local;
pub mod net;
