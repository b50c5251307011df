//! The OVA manifest (`.mf`): one line per file, byte-exact `SHA256(name)= hex` + LF, as vSphere
//! parses it. Also a strict parser that says exactly which line breaks the syntax vSphere expects
//! (`SHA256 (x) = …` from `sha256sum --tag` and OpenSSL 3's `SHA2-256(x)= …` are import failures).
//!
//! Pure: hashing works on readers and byte slices; it never opens files by itself.

use crate::definition::DigestAlgorithm;
use sha1::Sha1;
use sha2::{Digest as _, Sha256, Sha512};
use std::fmt::Write as _;
use std::io::{self, Read};

/// A running digest of one of the manifest algorithms.
pub enum Hasher {
    Sha1(Sha1),
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(alg: DigestAlgorithm) -> Hasher {
        match alg {
            DigestAlgorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            DigestAlgorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            DigestAlgorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }
    /// The digest as lowercase hex, the form a manifest carries.
    pub fn finish_hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        };
        hex(&bytes)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Hashes everything a reader yields; returns the hex digest and the byte count.
pub fn digest_reader(alg: DigestAlgorithm, mut r: impl Read) -> io::Result<(String, u64)> {
    let mut h = Hasher::new(alg);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((h.finish_hex(), total))
}

pub fn digest_bytes(alg: DigestAlgorithm, bytes: &[u8]) -> String {
    let mut h = Hasher::new(alg);
    h.update(bytes);
    h.finish_hex()
}

/// One manifest line: a file name inside the OVA and its digest (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    pub file: String,
    pub digest: String,
    /// Byte offset of the line inside the manifest (0 for entries built in memory).
    pub offset: usize,
}

/// A manifest: one algorithm for every line (vSphere reads the algorithm per line, but a mixed
/// manifest is a sign of hand editing and is refused by the parser).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub algorithm: DigestAlgorithm,
    pub entries: Vec<ManifestEntry>,
}

/// A manifest line that vSphere would not accept: the 1-based line, its byte offset inside the
/// manifest, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest line {line} (byte {offset}): {message}")]
pub struct ManifestError {
    pub line: usize,
    pub offset: usize,
    pub message: String,
}

impl Manifest {
    pub fn new(algorithm: DigestAlgorithm) -> Manifest {
        Manifest {
            algorithm,
            entries: Vec::new(),
        }
    }

    pub fn push(&mut self, file: impl Into<String>, digest: impl Into<String>) {
        self.entries.push(ManifestEntry {
            file: file.into(),
            digest: digest.into(),
            offset: 0,
        });
    }

    /// The manifest text: `ALG(file)= hex\n` per entry, nothing else.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for e in &self.entries {
            let _ = writeln!(
                s,
                "{}({})= {}",
                self.algorithm.manifest_name(),
                e.file,
                e.digest
            );
        }
        s
    }

    pub fn entry(&self, file: &str) -> Option<&ManifestEntry> {
        self.entries.iter().find(|e| e.file == file)
    }

    /// Parses a manifest strictly, in the syntax vSphere accepts. A trailing CR, a missing final
    /// LF, blank lines, a space before `(` or around `=`, an unknown algorithm name, upper-case
    /// or short hex are each refused with the line and byte offset.
    pub fn parse(text: &[u8]) -> Result<Manifest, ManifestError> {
        let text = std::str::from_utf8(text).map_err(|e| ManifestError {
            line: 1 + text[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
            offset: e.valid_up_to(),
            message: "is not UTF-8".into(),
        })?;
        if text.is_empty() {
            return Err(ManifestError {
                line: 1,
                offset: 0,
                message: "the manifest is empty".into(),
            });
        }
        let mut algorithm = None;
        let mut entries: Vec<ManifestEntry> = Vec::new();
        let mut offset = 0usize;
        for (i, raw) in text.split_inclusive('\n').enumerate() {
            let line_no = i + 1;
            let err = |message: String| ManifestError {
                line: line_no,
                offset,
                message,
            };
            let Some(line) = raw.strip_suffix('\n') else {
                return Err(err("the last line does not end with a newline (LF)".into()));
            };
            if line.ends_with('\r') {
                return Err(err(
                    "ends with CR LF: manifest lines end with a bare LF".into()
                ));
            }
            if line.trim().is_empty() {
                return Err(err("is blank".into()));
            }
            let Some(open) = line.find('(') else {
                return Err(err(format!("{line:?} is not of the form ALG(file)= hex")));
            };
            let name = &line[..open];
            if name.ends_with(' ') {
                return Err(err(format!(
                    "has a space before '(' ({line:?}): vSphere answers \"Invalid OVF checksum algorithm\"; write {}(file)= hex",
                    name.trim_end()
                )));
            }
            let alg = DigestAlgorithm::from_manifest_name(name).ok_or_else(|| {
                err(format!(
                    "algorithm {name:?} is not SHA1, SHA256 or SHA512 (OpenSSL 3 prints SHA2-256, which vCenter 8 rejects)"
                ))
            })?;
            let Some(close) = line.rfind(")= ") else {
                return Err(err(format!(
                    "{line:?} lacks \")= \" after the file name (exactly ')', '=', one space)"
                )));
            };
            if close < open {
                return Err(err(format!("{line:?} is not of the form ALG(file)= hex")));
            }
            let file = &line[open + 1..close];
            let digest = &line[close + 3..];
            if file.is_empty() {
                return Err(err("names no file".into()));
            }
            if digest.len() != alg.hex_len()
                || !digest
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(err(format!(
                    "digest {digest:?} is not {} lowercase hex digits for {}",
                    alg.hex_len(),
                    alg.manifest_name()
                )));
            }
            match algorithm {
                None => algorithm = Some(alg),
                Some(a) if a != alg => {
                    return Err(err(format!(
                        "uses {} but earlier lines use {}: one algorithm per manifest",
                        alg.manifest_name(),
                        a.manifest_name()
                    )))
                }
                Some(_) => {}
            }
            if entries.iter().any(|e| e.file == file) {
                return Err(err(format!("lists {file} a second time")));
            }
            entries.push(ManifestEntry {
                file: file.to_string(),
                digest: digest.to_string(),
                offset,
            });
            offset += raw.len();
        }
        Ok(Manifest {
            algorithm: algorithm.expect("a non-empty manifest has a line"),
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_known_vectors() {
        assert_eq!(
            digest_bytes(DigestAlgorithm::Sha256, b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            digest_bytes(DigestAlgorithm::Sha1, b"abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(digest_bytes(DigestAlgorithm::Sha512, b"").len(), 128);
    }
}
