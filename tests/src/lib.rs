//! The end-to-end tests live in `tests/`; what they share comes from `testkit` (workspace
//! paths, scratch directories, running `cargo xtask`) and from the appliance's test support
//! they include. Nothing lives here: the library only gives the package a target.
