//! The end-to-end tests, one binary (one link step): every file below is a module whose tests
//! keep their names under the module's. `centos_double` (test-double installer ISOs, also
//! included by `xtask`) and the appliance's test support are shared.

#[path = "../centos_double/mod.rs"]
mod centos_double;
#[path = "../../../appliance/tests/common/mod.rs"]
mod common;
#[path = "../../../appliance/tests/support/mod.rs"]
mod support;

mod build_and_boot;
mod centos_build_cli;
mod deploy_spec_cli;
mod fetch_packages_cli;
mod kickstart_cli;
mod tidy;
mod vcsim_import;
mod verify_ova_cli;
