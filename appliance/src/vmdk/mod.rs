//! Stream-optimized VMDK: the disk format of an OVA. `write_stream_optimized` turns a raw disk
//! image into a `.vmdk` (compressed grains, grain directory at the end, footer, end-of-stream);
//! `VmdkReader` checks any sparse VMDK's structure and reads it back, and `expand_to_raw` turns
//! one back into a sparse raw image; `lint` reports every problem of a stream file to a sink.
//!
//! The layout is documented in `docs/vmdk-format.md`. Pure library: no processes are run here.

pub mod header;
pub mod lint;
mod reader;
mod writer;

pub use header::{Descriptor, Marker, SparseExtentHeader};
pub use reader::{Layout, VmdkReader, VmdkReport};
pub use writer::write_stream_optimized;

use crate::definition::Definition;
use crate::units::SECTOR;
use camino::{Utf8Path, Utf8PathBuf};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Sectors per grain we write (64 KiB grains, the only size ESXi's stream importer is known to take).
pub const GRAIN_SECTORS: u64 = 128;
pub const GRAIN_BYTES: u64 = GRAIN_SECTORS * SECTOR;

/// `ddb.adapterType` of the descriptor. The OVF's controller decides the virtual hardware;
/// this only records which BIOS geometry family the disk was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterType {
    Ide,
    Buslogic,
    Lsilogic,
    LegacyEsx,
}

impl AdapterType {
    pub fn as_str(self) -> &'static str {
        match self {
            AdapterType::Ide => "ide",
            AdapterType::Buslogic => "buslogic",
            AdapterType::Lsilogic => "lsilogic",
            AdapterType::LegacyEsx => "legacyESX",
        }
    }
}

/// How to write a stream-optimized VMDK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmdkOptions {
    pub adapter_type: AdapterType,
    /// `ddb.virtualHWVersion`: obsolete since ESX 3.x; VMware's and QEMU's writers put 4.
    pub hw_version: u32,
    /// Compression threads; 0 = one per core.
    pub threads: usize,
}

impl Default for VmdkOptions {
    fn default() -> Self {
        VmdkOptions {
            adapter_type: AdapterType::Lsilogic,
            hw_version: 4,
            threads: 0,
        }
    }
}

impl VmdkOptions {
    /// The options for the appliance's disks. Every SCSI controller kind (PVSCSI, LSI Logic
    /// parallel and SAS) gets `lsilogic`, as VMware's own writer does: the descriptor has no
    /// value for the others, and the OVF names the real controller.
    pub fn for_definition(def: &Definition) -> Self {
        // The match is exhaustive on purpose: a new controller kind must decide here.
        let adapter_type = match def.hardware.scsi_controller {
            crate::definition::ScsiController::Paravirtual
            | crate::definition::ScsiController::Lsilogic
            | crate::definition::ScsiController::LsilogicSas => AdapterType::Lsilogic,
        };
        VmdkOptions {
            adapter_type,
            ..VmdkOptions::default()
        }
    }

    pub(crate) fn thread_count(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// What `write_stream_optimized` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmdkSummary {
    /// Virtual disk size in bytes: the raw image's size rounded up to whole grains.
    pub capacity: u64,
    /// Bytes of the `.vmdk` file (the OVF's `ovf:size`).
    pub file_size: u64,
    /// Grains written × 64 KiB (the OVF's `ovf:populatedSize`).
    pub populated_size: u64,
    pub grains_written: u64,
}

/// Why a VMDK could not be written or read. Structure errors name the structure and its byte
/// offset in the `.vmdk`, so that a hex dump of the file shows the problem.
#[derive(Debug, thiserror::Error)]
pub enum VmdkError {
    #[error("cannot {action} {path}: {source}")]
    File {
        action: &'static str,
        path: Utf8PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{structure} at byte {offset}: {problem}")]
    Corrupt {
        structure: &'static str,
        offset: u64,
        problem: String,
    },
    #[error("{structure} at byte {offset}: cannot read it: {source}")]
    Read {
        structure: &'static str,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the expanded disk: {0}")]
    Sink(#[source] io::Error),
    #[error("raw image {path}: {problem}")]
    Input { path: Utf8PathBuf, problem: String },
    #[error("{path}: {problem}")]
    Output { path: Utf8PathBuf, problem: String },
}

impl VmdkError {
    pub(crate) fn corrupt(structure: &'static str, offset: u64, problem: String) -> Self {
        VmdkError::Corrupt {
            structure,
            offset,
            problem,
        }
    }
    pub(crate) fn file(action: &'static str, path: &Utf8Path, source: io::Error) -> Self {
        VmdkError::File {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// A temporary file next to `dest`, renamed over it by `commit` and removed if dropped first,
/// so that nobody ever sees a half-written artifact.
pub(crate) struct TempOutput {
    pub path: Utf8PathBuf,
    dest: Utf8PathBuf,
    committed: bool,
}

impl TempOutput {
    pub fn new(dest: &Utf8Path) -> Result<(TempOutput, File), VmdkError> {
        let name = dest.file_name().ok_or_else(|| VmdkError::Output {
            path: dest.to_owned(),
            problem: "is not a file name".to_string(),
        })?;
        let dir = match dest.parent() {
            Some(d) if !d.as_str().is_empty() => d,
            _ => Utf8Path::new("."),
        };
        let path = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let file = File::create(&path).map_err(|e| VmdkError::file("create", &path, e))?;
        Ok((
            TempOutput {
                path,
                dest: dest.to_owned(),
                committed: false,
            },
            file,
        ))
    }

    pub fn commit(mut self, file: File) -> Result<(), VmdkError> {
        file.sync_all()
            .map_err(|e| VmdkError::file("flush", &self.path, e))?;
        drop(file);
        std::fs::rename(&self.path, &self.dest)
            .map_err(|e| VmdkError::file("rename the finished file to", &self.dest, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Expands a VMDK into a raw image of its full capacity. Grains that are unallocated or read as
/// zeros are seeked over, so the output is sparse; written atomically.
pub fn expand_to_raw(vmdk: &Utf8Path, raw_out: &Utf8Path) -> Result<(), VmdkError> {
    let input = File::open(vmdk).map_err(|e| VmdkError::file("open", vmdk, e))?;
    let len = input
        .metadata()
        .map_err(|e| VmdkError::file("stat", vmdk, e))?
        .len();
    let mut reader = VmdkReader::open(input, len)?;
    let (tmp, out) = TempOutput::new(raw_out)?;
    let capacity = reader.capacity();
    let mut grain = Vec::new();
    for index in 0..reader.grain_count() {
        if !reader.read_grain(index, &mut grain)? {
            continue;
        }
        if grain.iter().all(|&b| b == 0) {
            continue;
        }
        let offset = index * reader.grain_bytes();
        let take = (capacity - offset).min(grain.len() as u64) as usize;
        out.write_all_at(&grain[..take], offset)
            .map_err(|e| VmdkError::file("write", &tmp.path, e))?;
    }
    out.set_len(capacity)
        .map_err(|e| VmdkError::file("extend", &tmp.path, e))?;
    tmp.commit(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scsi_controller_of_the_definition_gets_lsilogic_and_hw_version_4() {
        let path =
            camino::Utf8PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/appliance.toml"));
        let mut def = Definition::load(&path).unwrap();
        for controller in [
            crate::definition::ScsiController::Paravirtual,
            crate::definition::ScsiController::Lsilogic,
            crate::definition::ScsiController::LsilogicSas,
        ] {
            def.hardware.scsi_controller = controller;
            let o = VmdkOptions::for_definition(&def);
            assert_eq!(o.adapter_type.as_str(), "lsilogic");
            assert_eq!(o.hw_version, 4);
            assert_eq!(o.threads, 0);
        }
    }
}
