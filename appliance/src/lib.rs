//! The `appliance` library: the appliance definition (one source of truth for every size, name and
//! setting) and the pure writers that turn it and raw disk images into artifacts.
//!
//! This crate never runs a process: orchestration of external tools lives in `xtask`.

pub mod cpio;
pub mod definition;
pub mod finding;
pub mod kernel_cmdline;
pub mod kickstart;
pub mod layout;
pub mod manifest;
pub mod ova;
pub mod ovf;
pub mod packages;
pub mod shell;
pub mod units;
pub mod verify;
pub mod vm_hardware;
pub mod vmdk;

pub use definition::Definition;
pub mod bootloader;
pub mod swap;
