//! Why a definition was refused: each problem names its field as a dotted path
//! (`os_disk.partitions[1].size`), including the values serde itself rejects.

use camino::Utf8PathBuf;
use std::fmt;

/// One thing wrong with a definition: the field (a dotted path) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A definition that could not be read, parsed or validated.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("cannot read the appliance definition {path}: {source}")]
    Read {
        path: Utf8PathBuf,
        source: std::io::Error,
    },
    #[error("the appliance definition {path} is not valid TOML for this schema: {message}")]
    Parse { path: Utf8PathBuf, message: String },
    #[error("the appliance definition {path} is invalid:\n{}", list(.errors))]
    Invalid {
        path: Utf8PathBuf,
        errors: Vec<FieldError>,
    },
}

fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl DefinitionError {
    /// The field errors, when the definition parsed but failed validation.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            DefinitionError::Invalid { errors, .. } => errors,
            _ => &[],
        }
    }
}

/// The dotted name (`network.address`, `os_disk.partitions[1].size`) of the key whose line holds
/// byte `offset`, so that a value serde rejects (a malformed address, an unknown package) is
/// reported by field like every validation error. `None` where the line has no `key =`.
pub(super) fn field_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?.trim_start();
    let key = line.split_once('=')?.0.trim();
    if key.is_empty() || key.starts_with(['[', '#']) {
        return None;
    }
    let mut table = String::new();
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for l in text[..line_start].lines().map(str::trim) {
        if let Some(name) = l.strip_prefix("[[").and_then(|r| r.split_once("]]")) {
            let name = name.0.trim().to_string();
            let n = counts.entry(name.clone()).or_insert(0);
            table = format!("{name}[{n}]");
            *n += 1;
        } else if let Some(name) = l.strip_prefix('[').and_then(|r| r.split_once(']')) {
            table = name.0.trim().to_string();
        }
    }
    Some(if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    })
}
