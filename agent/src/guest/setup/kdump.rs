//! Crash dumps to `/var/crash` (the OS disk's crash partition): el6's kexec-tools reads
//! `/etc/kdump.conf`, Debian's kdump-tools `/etc/default/kdump-tools`. The reserved memory
//! (`crashkernel=`) is on the kernel command line, which the bootloader's builder owns.

pub use mt_contract::guest::CRASH_DIR;
pub const EL6_CONF: &str = "/etc/kdump.conf";
pub const DEBIAN_DEFAULTS: &str = "/etc/default/kdump-tools";
/// Debian's unit that loads the capture kernel at boot (`kdump-config load`).
pub const DEBIAN_SERVICE: &str = "kdump-tools.service";
/// Debian's unit the capture kernel boots into (`systemd.unit=` on its command line).
pub const DEBIAN_DUMP_SERVICE: &str = "kdump-tools-dump.service";

/// What both of kdump-tools' units run: load the capture kernel, or when booted as the capture
/// kernel (`/proc/vmcore`) save the dump and reboot.
const DEBIAN_SERVICE_BODY: &str = "[Service]
Type=oneshot
StandardOutput=journal+console
EnvironmentFile=/etc/default/kdump-tools
ExecStart=/etc/init.d/kdump-tools start
ExecStop=/etc/init.d/kdump-tools stop
RemainAfterExit=yes
";

/// kdump-tools.service as the appliance has it (the same name in `/etc/systemd/system`, which
/// takes precedence over the package's). The package's orders itself after
/// `networking.service` and before `basic.target`, so every service with the default
/// dependencies, the agent and sshd among them, waited for the network and for the capture
/// kernel to load. The dump target here is the local crash partition: loading needs the local
/// file systems only, and nothing waits for it (`basic.target` still wants it).
pub fn debian_load_unit() -> String {
    format!(
        "[Unit]
Description=Load the crash capture kernel (mt-agent setup: dumps go to the local {CRASH_DIR}; nothing waits for it)
DefaultDependencies=no
After=local-fs.target
Before=shutdown.target
Conflicts=shutdown.target

{DEBIAN_SERVICE_BODY}
[Install]
WantedBy=basic.target
"
    )
}

/// kdump-tools-dump.service as the appliance has it: the package's waits for
/// `network-online.target` before it saves a dump, which the local crash partition does not
/// need. After kdump-tools.service, which the capture kernel also starts (`basic.target` wants
/// it) and which saves the dump itself: the two never run the same save at once.
pub fn debian_dump_unit() -> String {
    format!(
        "[Unit]
Description=Save the kernel crash dump (mt-agent setup: to the local {CRASH_DIR}, without waiting for the network)
After=local-fs.target {DEBIAN_SERVICE}

{DEBIAN_SERVICE_BODY}"
    )
}

pub fn el6_conf() -> String {
    format!(
        "# kdump (mt-agent setup): vmcores go to the crash partition.\n\
         path {CRASH_DIR}\n\
         core_collector makedumpfile -c --message-level 1 -d 31\n"
    )
}

/// Debian's defaults file with kdump on and the dump directory set; other lines are kept.
pub fn debian_defaults(current: &str) -> String {
    let wanted = [
        ("USE_KDUMP", "1".to_string()),
        ("KDUMP_COREDIR", format!("\"{CRASH_DIR}\"")),
    ];
    let mut out = String::new();
    let mut seen = [false; 2];
    for line in current.lines() {
        let key = line
            .trim_start_matches('#')
            .split('=')
            .next()
            .unwrap_or("")
            .trim();
        match wanted.iter().position(|(k, _)| *k == key) {
            Some(i) if !seen[i] && line.contains('=') => {
                seen[i] = true;
                out.push_str(&format!("{}={}\n", wanted[i].0, wanted[i].1));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (i, (k, v)) in wanted.iter().enumerate() {
        if !seen[i] {
            out.push_str(&format!("{k}={v}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn debian_defaults_are_edited_in_place_and_stable() {
        let cur = "# kdump-tools configuration\nUSE_KDUMP=0\n#KDUMP_COREDIR=\"/var/crash\"\nKDUMP_SYSCTL=\"kernel.panic_on_oops=1\"\n";
        let once = super::debian_defaults(cur);
        assert_eq!(once, "# kdump-tools configuration\nUSE_KDUMP=1\nKDUMP_COREDIR=\"/var/crash\"\nKDUMP_SYSCTL=\"kernel.panic_on_oops=1\"\n");
        assert_eq!(super::debian_defaults(&once), once);
    }
}
