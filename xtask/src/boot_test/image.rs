//! Reading the OVA to boot, never writing it: `appliance::ova`'s tar index and member reader
//! extract the descriptor and the disks into the work directory, and `appliance::vm_hardware`
//! maps what the OVF declares to the VM's hardware.

use anyhow::{bail, Context, Result};
use appliance::ova::{read_index, MemberReader};
use appliance::ovf::OvfDescriptor;
use appliance::vm_hardware::VmHardware;
use camino::Utf8Path;
use std::io::Read;

/// Extracts the `.ovf` descriptor and the `.vmdk` disks of `ova` into `work` and returns the
/// hardware the descriptor declares, over the extracted disks.
pub(crate) fn ova_hardware(ova: &Utf8Path, work: &Utf8Path) -> Result<VmHardware> {
    let file = std::fs::File::open(ova).with_context(|| format!("cannot open {ova}"))?;
    let len = file
        .metadata()
        .with_context(|| format!("cannot read the size of {ova}"))?
        .len();
    let index =
        read_index(&mut &file, len).with_context(|| format!("{ova} is not a tar archive"))?;
    let mut ovf_text = None;
    let mut extracted = Vec::new();
    for entry in &index.entries {
        let name = &entry.name;
        if name.contains('/') || name.starts_with('.') {
            bail!("{ova}: member {name:?} is not a plain file name");
        }
        if !entry.is_regular() {
            bail!(
                "{ova}: member {name:?} is a {}, not a file",
                entry.type_name()
            );
        }
        let mut member = MemberReader::new(&file, entry);
        if name.ends_with(".ovf") {
            let mut text = String::new();
            member
                .read_to_string(&mut text)
                .with_context(|| format!("{ova}: cannot read {name}"))?;
            ovf_text = Some((name.clone(), text));
        } else if name.ends_with(".vmdk") {
            let dest = work.join(name);
            let mut out =
                std::fs::File::create(&dest).with_context(|| format!("cannot create {dest}"))?;
            std::io::copy(&mut member, &mut out)
                .with_context(|| format!("{ova}: cannot extract {name}"))?;
            extracted.push(name.clone());
        }
    }
    let (ovf_name, text) = ovf_text.with_context(|| format!("{ova} has no .ovf descriptor"))?;
    let ovf = OvfDescriptor::parse(&text).with_context(|| format!("{ova}: {ovf_name}"))?;
    VmHardware::from_ovf(&ovf, work, &extracted).with_context(|| format!("{ova}: {ovf_name}"))
}
