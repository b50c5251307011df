//! Sizes with units: `ByteSize` and its one grammar live in `mt_contract::units` (the agent's
//! flags parse the same text); re-exported here so the appliance's modules name them locally.

pub use mt_contract::units::{ByteSize, ParseSizeError, GIB, KIB, MIB, SECTOR, TIB};
