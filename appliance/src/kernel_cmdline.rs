//! The Debian image's kernel command line and the memory it reserves for kdump's capture
//! kernel: values of the definition that the build writes into `grub.cfg` and the boot test
//! expects in `/proc/cmdline`. Pure; writing the boot loader is `xtask`'s.

use crate::definition::LogicalPackage;
use crate::Definition;

/// Memory reserved for kdump's capture kernel (the image has no `update-grub`, so kdump-tools'
/// own `/etc/default/grub.d/kdump-tools.cfg`, `crashkernel=384M-:128M`, never reaches GRUB):
/// Debian's 128 MiB below 2 GiB of RAM, and 256 MiB from 2 GiB on, where the capture kernel
/// also has to map the larger memory it dumps. Every definition has at least 512 MiB, so
/// something is always reserved. The el6 kickstart asks for `crashkernel=auto` instead.
pub const CRASH_KERNEL: &str = "crashkernel=384M-2G:128M,2G-:256M";

/// `CRASH_KERNEL` when the image saves kernel crash dumps: the definition's `kexec-tools`
/// package, which brings kdump-tools on Debian (`packages/debian12.toml`).
pub fn crash_kernel(def: &Definition) -> Option<&'static str> {
    def.packages
        .contains(&LogicalPackage::KexecTools)
        .then_some(CRASH_KERNEL)
}

/// The kernel command line. `console=ttyS0` last makes the serial port `/dev/console`, where
/// systemd and the agent's readiness line go; `net.ifnames=0` keeps the first NIC `eth0` on
/// any virtual hardware, so no per-MAC rule is needed.
pub fn kernel_command_line(root_label: &str, crash_kernel: Option<&str>) -> String {
    let mut line = format!(
        "root=LABEL={root_label} ro console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0"
    );
    if let Some(c) = crash_kernel {
        line.push(' ');
        line.push_str(c);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use camino::Utf8Path;

    #[test]
    fn the_command_line_reserves_crash_kernel_memory_only_with_kdump() {
        let workspace = Utf8Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let path = workspace.join(crate::definition::DEFAULT_DEFINITION);
        let mut def = Definition::load(&path).unwrap();
        let line = kernel_command_line("root", crash_kernel(&def));
        assert!(line.starts_with("root=LABEL=root ro "), "{line}");
        assert!(
            line.ends_with(" crashkernel=384M-2G:128M,2G-:256M"),
            "{line}"
        );
        def.packages.retain(|p| *p != LogicalPackage::KexecTools);
        assert!(!kernel_command_line("root", crash_kernel(&def)).contains("crashkernel"));
    }
}
