//! The appliance's integration tests, one binary (one link step): every file below is a module
//! whose tests keep their names under the module's (`vmdk_sparse_io` stays a binary of its own:
//! it counts the bytes its whole process reads). Shared support: `common` (definition text,
//! pykickstart) and `support` (definitions, OVA parts, the OVF schema check), which
//! `tests/tests` and `xtask` include as well.

#[path = "../common/mod.rs"]
mod common;
#[path = "../support/mod.rs"]
mod support;

mod cpio_gnu;
mod definition_errors;
mod kickstart;
mod ova;
mod ovf;
mod verify_golden;
mod vmdk_roundtrip;
