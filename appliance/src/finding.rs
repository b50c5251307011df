//! How bad a finding is, shared by every checker in the crate (`verify`'s OVA checks and the
//! VMDK stream lint), so that a lint's verdict reaches the report unchanged. Types only.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// For the reader's information (a known caveat of some import path).
    Note,
    /// Imports, but something is off or unverified.
    Warning,
    /// vSphere (or a byte-for-byte check) fails.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}
