//! Sizes with units. A size is written as a whole number with a binary unit (`"512MiB"`,
//! `"6GiB"`); inside the programs it is a `ByteSize`, never a bare integer. This is the one
//! grammar of sizes: the definition's fields and the agent's command-line flags both parse it.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

pub const SECTOR: u64 = 512;
pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;
pub const TIB: u64 = 1024 * GIB;

/// A number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn bytes(self) -> u64 {
        self.0
    }
    pub const fn from_mib(mib: u64) -> Self {
        ByteSize(mib * MIB)
    }
    /// Whole MiB (truncating).
    pub const fn mib(self) -> u64 {
        self.0 / MIB
    }
    pub const fn sectors(self) -> u64 {
        self.0 / SECTOR
    }
    pub const fn is_multiple_of(self, unit: u64) -> bool {
        self.0.is_multiple_of(unit)
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the size exactly, so that the text parses back to
    /// the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, name) in [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
            if b != 0 && b.is_multiple_of(unit) {
                return write!(f, "{}{}", b / unit, name);
            }
        }
        write!(f, "{b}B")
    }
}

impl ByteSize {
    /// The size for a person to read, in the largest binary unit it reaches, to one decimal
    /// ("1015.0 MiB", "1.5 GiB", "512 B"). Not the grammar: it does not parse back (`Display`
    /// does).
    pub fn approx(self) -> ApproxSize {
        ApproxSize(self.0)
    }
}

/// See [`ByteSize::approx`].
#[derive(Clone, Copy, Debug)]
pub struct ApproxSize(u64);

impl fmt::Display for ApproxSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut unit = 0;
        let mut v = self.0 as f64;
        const NAMES: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        while v >= 1024.0 && unit + 1 < NAMES.len() {
            v /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{v:.1} {}", NAMES[unit])
        }
    }
}

/// Why a size string was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseSizeError(pub String);

impl fmt::Display for ParseSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a size: write a whole number followed by B, KiB, MiB, GiB or TiB (e.g. \"512MiB\"; K, M, G and T are the same binary units, and a bare number is bytes)",
            self.0
        )
    }
}

impl std::error::Error for ParseSizeError {}

/// The multiplier of a unit. A bare number is bytes, and the one-letter forms are the binary
/// units (as in `dd` and `truncate`): command-line flags are typed, so `--batch 4M` works.
/// Decimal units (`GB`) and lower case are refused rather than guessed.
fn unit(name: &str) -> Option<u64> {
    Some(match name {
        "" | "B" => 1,
        "KiB" | "K" => KIB,
        "MiB" | "M" => MIB,
        "GiB" | "G" => GIB,
        "TiB" | "T" => TIB,
        _ => return None,
    })
}

impl std::str::FromStr for ByteSize {
    type Err = ParseSizeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, name) = t.split_at(split);
        let err = || ParseSizeError(s.to_string());
        let n: u64 = num.parse().map_err(|_| err())?;
        let mult = unit(name.trim()).ok_or_else(err)?;
        n.checked_mul(mult).map(ByteSize).ok_or_else(err)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units_and_print_back() {
        for (text, bytes) in [
            ("512MiB", 512 * MIB),
            ("6GiB", 6 * GIB),
            ("1TiB", TIB),
            ("4096B", 4096),
            ("0B", 0),
            (" 64 MiB ", 64 * MIB),
        ] {
            let s: ByteSize = text.parse().unwrap();
            assert_eq!(s.bytes(), bytes, "{text}");
            assert_eq!(s.to_string().parse::<ByteSize>().unwrap(), s);
        }
        assert_eq!(ByteSize(1536 * MIB).to_string(), "1536MiB");
    }

    #[test]
    fn approximate_sizes_use_the_largest_unit_they_reach() {
        assert_eq!(ByteSize(512).approx().to_string(), "512 B");
        assert_eq!(
            ByteSize(1015 * MIB + 4096).approx().to_string(),
            "1015.0 MiB"
        );
        assert_eq!(ByteSize(3 * MIB / 2).approx().to_string(), "1.5 MiB");
        assert_eq!(ByteSize(64 * GIB).approx().to_string(), "64.0 GiB");
        assert_eq!(ByteSize(3 * TIB).approx().to_string(), "3.0 TiB");
    }

    #[test]
    fn bare_numbers_are_bytes_and_one_letter_units_are_binary() {
        for (text, bytes) in [
            ("4096", 4096),
            ("0", 0),
            ("8K", 8 * KIB),
            ("64M", 64 * MIB),
            ("2G", 2 * GIB),
            ("1T", TIB),
        ] {
            assert_eq!(text.parse::<ByteSize>().unwrap().bytes(), bytes, "{text}");
        }
    }

    #[test]
    fn sizes_without_a_known_unit_are_rejected() {
        for bad in [
            "6GB",
            "6 gib",
            "6k",
            "-1MiB",
            "1.5GiB",
            "GiB",
            "",
            "99999999999TiB",
            "18446744073709551616",
        ] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad} should be rejected");
        }
    }
}
