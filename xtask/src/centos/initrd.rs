//! Puts the rendered `ks.cfg` into a copy of the installer's initrd: the original bytes, zero
//! padding to a 4-byte boundary, then a gzip-compressed newc archive holding `/ks.cfg`. The
//! kernel unpacks every archive in turn, so the loader finds the file at `ks=file:/ks.cfg`
//! without the original being unpacked or changed.

use anyhow::{bail, Context, Result};
use appliance::cpio::{self, CpioEntry};
use camino::Utf8Path;

/// The kickstart's path inside the initrd and the kernel argument that points the loader at it.
pub const KS_FILE: &str = "ks.cfg";

pub fn ks_kernel_arg() -> String {
    format!("ks=file:/{KS_FILE}")
}

/// Writes `original` + the overlay to `out` (atomically) and reads the overlay back to check it.
pub fn inject(original: &Utf8Path, ks: &str, out: &Utf8Path) -> Result<()> {
    let mut bytes =
        std::fs::read(original).with_context(|| format!("cannot read the initrd {original}"))?;
    if bytes.is_empty() {
        bail!("the initrd {original} is empty");
    }
    let original_len = bytes.len();
    bytes.resize(
        original_len + cpio::padding_before_append(original_len as u64),
        0,
    );
    let overlay_at = bytes.len();
    bytes.extend(cpio::initrd_overlay(&[CpioEntry::file(
        KS_FILE,
        0o644,
        ks.as_bytes().to_vec(),
    )]));
    let back = cpio::read_initramfs(&bytes[overlay_at..])
        .map_err(|e| anyhow::anyhow!("the appended archive does not read back: {e}"))?;
    match back.as_slice() {
        [a] if a.entries.len() == 1 && a.entries[0].data == ks.as_bytes() => {}
        _ => bail!("the appended archive does not hold exactly {KS_FILE}"),
    }
    crate::util::write_atomic(out, &bytes)?;
    eprintln!("{out}: {original} ({original_len} bytes) + {KS_FILE} appended at byte {overlay_at}");
    Ok(())
}
