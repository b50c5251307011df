//! The replication engine: `frame` (the wire and stream record of a write or tag), `journal` (the
//! retention journal: timeline, undo epochs, recovery points, recovery) and `net` (authenticated,
//! encrypted sessions that carry frames from a sender to the journal). Nothing here knows the guest
//! operating system: no distribution, no systemd, no sysfs.

pub mod frame;
pub mod journal;
pub mod net;
