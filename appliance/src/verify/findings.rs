//! A finding of `verify-ova`: the severity, where (member, structure, byte offset in the OVA)
//! and what, and the one line it prints as. No checks live here.

use crate::finding::Severity;
use std::fmt;

/// One problem: where (member, structure, byte offset in the OVA) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub member: Option<String>,
    /// The structure inside the member (`tar header`, `manifest line 2`, `References/File`, …).
    pub structure: String,
    /// Absolute byte offset in the OVA file.
    pub offset: Option<u64>,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.severity)?;
        if let Some(m) = &self.member {
            write!(f, "{m}: ")?;
        }
        write!(f, "{}", self.structure)?;
        if let Some(o) = self.offset {
            write!(f, " at OVA byte {o}")?;
        }
        write!(f, ": {}", self.message)
    }
}
