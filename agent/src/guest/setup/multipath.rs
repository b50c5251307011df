//! `/etc/multipath.conf` for a master target, as the runbook's custom changes write it: WWID
//! names (`user_friendly_names no`, the retention disk is `/dev/mapper/<wwid>`), every SCSI
//! disk a multipath candidate (`find_multipaths no`), the InMage pseudo-devices blacklisted.
//! The appliance's own OS disk is blacklisted by its WWID, which only exists in the deployed
//! VM: setup writes the file without it, `mt-agent firstboot` adds it, and a later setup run
//! (an upgrade) keeps the WWID first boot recorded.

use super::{Change, Root};

pub const PATH: &str = "/etc/multipath.conf";
/// The line first boot writes; the comment lets setup find it again.
const OS_DISK_COMMENT: &str = "# the appliance's OS disk (mt-agent firstboot)";

pub fn render(os_disk_wwid: Option<&str>) -> String {
    let os = match os_disk_wwid {
        Some(w) => format!("    {OS_DISK_COMMENT}\n    wwid \"{w}\"\n"),
        None => {
            "    # the OS disk's wwid is added by mt-agent firstboot in the deployed VM\n".into()
        }
    };
    format!(
        "# The master target's multipath configuration (mt-agent setup). Disks are named by WWID\n\
         # (/dev/mapper/<wwid>), as the failback runbook expects.\n\
         defaults {{\n    user_friendly_names no\n    find_multipaths no\n}}\n\
         blacklist {{\n{os}    devnode \"^cciss!c[0-9]d[0-9]*\"\n    device {{\n        vendor \"InMage\"\n    }}\n}}\n"
    )
}

/// The OS disk WWID a previous first boot wrote into `text`.
pub fn os_disk_wwid(text: &str) -> Option<String> {
    let mut lines = text.lines();
    lines.find(|l| l.trim() == OS_DISK_COMMENT)?;
    let w = lines.next()?.trim().strip_prefix("wwid")?.trim();
    Some(w.trim_matches('"').to_owned())
}

pub fn change(root: &Root) -> Change {
    let wwid = root.read_text(PATH).and_then(|t| os_disk_wwid(&t));
    Change::File {
        path: PATH.into(),
        contents: render(wwid.as_deref()).into_bytes(),
        mode: 0o644,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_os_disk_wwid_round_trips() {
        assert_eq!(os_disk_wwid(&render(None)), None);
        let t = render(Some("36000c29f0a1b2c3d4e5f60718293a4b5"));
        assert_eq!(
            os_disk_wwid(&t).as_deref(),
            Some("36000c29f0a1b2c3d4e5f60718293a4b5")
        );
        assert!(t.contains("user_friendly_names no") && t.contains("find_multipaths no"));
    }
}
