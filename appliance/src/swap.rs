//! The Linux swap area header (what `mkswap` writes), as bytes: the build writes it at a
//! partition's offset inside a disk image, which `mkswap` cannot do without a device node.
//!
//! Layout (the kernel's `union swap_header`, version 1, 4 KiB pages): `version` at byte 1024,
//! `last_page` at 1028, `nr_badpages` at 1032, the UUID at 1036, the label at 1052 and the magic
//! `SWAPSPACE2` in the last 10 bytes of the first page.

/// The page size the header is written for: x86-64's, and the one `swapon` expects there.
pub const PAGE_SIZE: u64 = 4096;
/// The kernel refuses smaller swap areas.
const MIN_PAGES: u64 = 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwapError {
    #[error("a swap area of {0} bytes is too small: it needs at least {MIN_PAGES} pages of {PAGE_SIZE} bytes")]
    TooSmall(u64),
    #[error("the swap label {0:?} is longer than 16 bytes")]
    LabelTooLong(String),
}

/// The first page of a swap area of `size` bytes with the given label and UUID.
pub fn swap_header(size: u64, label: &str, uuid: [u8; 16]) -> Result<Vec<u8>, SwapError> {
    let pages = size / PAGE_SIZE;
    if pages < MIN_PAGES {
        return Err(SwapError::TooSmall(size));
    }
    if label.len() > 16 {
        return Err(SwapError::LabelTooLong(label.to_string()));
    }
    let last_page = u32::try_from(pages - 1).unwrap_or(u32::MAX);
    let mut page = vec![0u8; PAGE_SIZE as usize];
    page[1024..1028].copy_from_slice(&1u32.to_le_bytes());
    page[1028..1032].copy_from_slice(&last_page.to_le_bytes());
    page[1036..1052].copy_from_slice(&uuid);
    page[1052..1052 + label.len()].copy_from_slice(label.as_bytes());
    let magic = b"SWAPSPACE2";
    page[PAGE_SIZE as usize - magic.len()..].copy_from_slice(magic);
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_carries_version_size_uuid_label_and_magic() {
        let uuid = [0x11u8; 16];
        let h = swap_header(2 << 30, "swap", uuid).unwrap();
        assert_eq!(h.len(), 4096);
        assert_eq!(u32::from_le_bytes(h[1024..1028].try_into().unwrap()), 1);
        assert_eq!(
            u32::from_le_bytes(h[1028..1032].try_into().unwrap()),
            (2u32 << 30) / 4096 - 1
        );
        assert_eq!(&h[1036..1052], &uuid);
        assert_eq!(&h[1052..1056], b"swap");
        assert_eq!(h[1056], 0);
        assert_eq!(&h[4086..], b"SWAPSPACE2");
    }

    #[test]
    fn tiny_areas_and_long_labels_are_refused() {
        assert_eq!(
            swap_header(4096 * 9, "s", [0; 16]),
            Err(SwapError::TooSmall(36864))
        );
        assert!(matches!(
            swap_header(1 << 20, "a-label-of-17-chr", [0; 16]),
            Err(SwapError::LabelTooLong(_))
        ));
    }
}
