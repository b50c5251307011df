//! The one restart of every boot test, as a deployed copy restarts: a clean reboot, or with
//! `--crash` a kernel panic whose dump kdump must save (after kdump-tools rebuilt the capture
//! initramfs as it does after a kernel upgrade). After it the retention volume must be adopted,
//! not formatted again, and the agent, SSH, the capture kernel and the OVF settings must still
//! be there.

use super::guest::{crash_guest_lines, retention_guest_lines};
use super::judge::{judge_crash_kernel, report_line, RetentionView, RETENTION_MARKER};
use super::ovf_env::OvfEnvTest;
use super::session::{
    agent_port_check, login, run_guest_script, ssh_port_check, HostPorts, Outcome, READY_PREFIX,
};
use super::BootTestOptions;
use crate::qemu::Machine;
use anyhow::{bail, Context, Result};
use appliance::kernel_cmdline::crash_kernel;
use appliance::Definition;
use mt_agent::guest::ovfenv::IpConfig;

/// How the boot test restarts the VM once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Restart {
    /// `systemctl reboot`.
    Clean,
    /// A kernel panic (`echo c > /proc/sysrq-trigger`): kdump-tools' capture kernel must save
    /// the dump to `/var/crash` and reboot the VM.
    KernelCrash,
}

impl Restart {
    /// A clean reboot unless `--crash` asks for a kernel crash, which only an image with kdump
    /// (the definition's kexec-tools) can survive with a dump: asked of one without, the test
    /// is refused before anything boots.
    pub(super) fn for_test(def: &Definition, opts: &BootTestOptions) -> Result<Restart> {
        if !opts.crash {
            return Ok(Restart::Clean);
        }
        if crash_kernel(def).is_none() {
            bail!(
                "--crash: the definition has no kexec-tools in its packages, so the image has no capture kernel to save a dump; add kexec-tools or boot without --crash"
            );
        }
        Ok(Restart::KernelCrash)
    }

    pub(super) fn command(self) -> &'static str {
        match self {
            Restart::Clean => "systemctl reboot",
            Restart::KernelCrash => "echo c > /proc/sysrq-trigger",
        }
    }

    /// How the checks after the restart are named.
    pub(super) fn when(self) -> &'static str {
        match self {
            Restart::Clean => "after a reboot: ",
            Restart::KernelCrash => "after a kernel crash: ",
        }
    }
}

/// Every boot test restarts the VM once, as a deployed copy does: the retention volume first
/// boot formatted must be adopted as it is (a file written before the restart still there),
/// the capture kernel loaded again and the host still able to reach the agent and SSH. The
/// `--crash` test restarts through a kernel crash (see `Restart`): the dump must be in
/// `/var/crash`. With `--ovf-env` the static address must survive too, and applying the same
/// environment again must find nothing to change.
pub(super) fn reboot_checks(
    opts: &BootTestOptions,
    def: &Definition,
    vm: &mut Machine,
    ports: HostPorts,
    first: &RetentionView,
    ovf: Option<&OvfEnvTest>,
) -> Result<Vec<Outcome>> {
    let restart = Restart::for_test(def, opts)?;
    let when = restart.when();
    let mut out = Vec::new();
    if restart == Restart::KernelCrash {
        // The capture initramfs the crash below uses is then the one kdump-tools built.
        eprintln!("boot-test: kdump-tools rebuilds the capture initramfs, as after a kernel upgrade (about a minute under TCG)");
        out.push(judge_kernel_change(&run_guest_script(
            vm,
            &kernel_change_script(),
        )?));
    }
    let marker = format!("boot-test {}", first.disk_uuid);
    let boot = vm.buffer.len();
    vm.send(&format!(
        "echo '{marker}' > {mount}/{RETENTION_MARKER}; sync; {command}\n",
        mount = def.retention_disk.mount,
        command = restart.command()
    ))?;
    eprintln!("boot-test: restarting the VM ({})", restart.command());
    let at = vm
        .wait_for(READY_PREFIX, boot, opts.timeout)
        .with_context(|| {
            format!(
                "waiting for the agent's readiness line after `{}`",
                restart.command()
            )
        })?;
    eprintln!(
        "boot-test: agent ready again {:.0}s after power-on",
        vm.uptime().as_secs_f64()
    );
    out.push(agent_port_check(ports.agent, def.agent.port, when));
    login(vm, &opts.password, boot, at)?;
    let report = run_guest_script(vm, &reboot_script(def, restart, ovf.is_some()))?;
    out.push(ssh_port_check(ports.ssh, when));
    out.extend(RetentionView::parse(&report).judge_after_reboot(def, first, &marker, when));
    out.extend(judge_crash_kernel(def, &report, when));
    if restart == Restart::KernelCrash {
        out.push(judge_crash_dump(&report));
    }
    let Some(o) = ovf else {
        return Ok(out);
    };
    let device = &def.network.device;
    if let Some(IpConfig::Static {
        address, prefix, ..
    }) = &o.config.ip
    {
        let addr = report_line(&report, "ovf-addr");
        out.push(Outcome {
            what: format!("{when}{device} still {address}/{prefix} (static)"),
            ok: addr.contains(&format!(" {address}/{prefix} ")) && !addr.contains("dynamic"),
            detail: addr,
        });
    }
    let unchanged = report_line(&report, "ovf-unchanged");
    out.push(Outcome {
        what: format!("{when}ovfenv apply wrote nothing"),
        ok: unchanged == "1",
        detail: format!("{unchanged} 'unchanged' line(s) in this boot's journal"),
    });
    Ok(out)
}

/// The path a kernel upgrade takes: Debian's kernel package runs kdump-tools' hook, and the
/// first boot into the new kernel finds no capture initramfs for it in kdump-tools' directory,
/// so `kdump-config load` builds one before it loads the capture kernel. The test makes the
/// running kernel that new kernel by removing its initramfs and the sysctls copy beside it
/// (which kdump-config compares) and loading again, as kdump-tools.service does at boot.
pub(super) fn kernel_change_script() -> String {
    format!(
        "v=$(uname -r); d={dir}; rm -f $d/initrd.img-$v $d/latest_sysctls-$v; \
kdump-config unload > /dev/null 2>&1; \
echo \"MTCHK kchange-built $(kdump-config load 2>&1 | grep -c \"Generating $d/initrd.img-$v\")\"; \
echo \"MTCHK kchange-initrd $(test -s $d/initrd.img-$v && echo present || echo missing)\"; \
echo \"MTCHK kchange-loaded $(cat /sys/kernel/kexec_crash_loaded)\"; \
echo MTCHK-''END\n",
        dir = mt_contract::guest::KDUMP_TOOLS_DIR
    )
}

/// kdump-config built the missing capture initramfs once and loaded the capture kernel with it.
pub(super) fn judge_kernel_change(report: &[String]) -> Outcome {
    let built = report_line(report, "kchange-built");
    let initrd = report_line(report, "kchange-initrd");
    let loaded = report_line(report, "kchange-loaded");
    Outcome {
        what: "a kernel without a capture initramfs gets one built and loaded".into(),
        ok: built == "1" && initrd == "present" && loaded == "1",
        detail: format!(
            "built {built:?} time(s), initramfs {initrd}, kexec_crash_loaded {loaded:?}"
        ),
    }
}

/// The panic's message, which the capture kernel saves with the dump (kdump-tools' `dmesg.*`).
pub(super) const PANIC_MESSAGE: &str = "sysrq triggered crash";

/// kdump-tools saved exactly one dump, of this panic, in `/var/crash/<stamp>/`.
pub(super) fn judge_crash_dump(report: &[String]) -> Outcome {
    let saved = report_line(report, "crash-saved");
    let counts: Vec<&str> = saved.split_whitespace().collect();
    Outcome {
        what: format!(
            "the capture kernel saved the dump in {}",
            mt_contract::guest::CRASH_DIR
        ),
        ok: counts == ["1", "1"],
        detail: format!(
            "{} dump file(s), {} dmesg file(s) with {PANIC_MESSAGE:?}",
            counts.first().unwrap_or(&"?"),
            counts.get(1).unwrap_or(&"?")
        ),
    }
}

/// What the guest reports after the restart: the retention volume (and the file written
/// before it), the capture kernel, after a crash the saved dump, and with `--ovf-env` the
/// address and ovfenv's journal.
pub(super) fn reboot_script(def: &Definition, restart: Restart, ovf: bool) -> String {
    let device = &def.network.device;
    let ovf_lines = if ovf {
        format!(
            "echo \"MTCHK ovf-addr $(ip -4 -o addr show dev {device} | sed 's/^[0-9]*: //')\"; \
echo \"MTCHK ovf-unchanged $(journalctl -b -o cat -u {unit} | grep -c 'unchanged, nothing written')\"; ",
            unit = mt_contract::guest::OVFENV_SERVICE
        )
    } else {
        String::new()
    };
    let crash_lines = if restart == Restart::KernelCrash {
        format!(
            "echo \"MTCHK crash-saved $(ls {dir}/*/dump.* 2>/dev/null | wc -l) $(grep -l '{PANIC_MESSAGE}' {dir}/*/dmesg.* 2>/dev/null | wc -l)\"; ",
            dir = mt_contract::guest::CRASH_DIR
        )
    } else {
        String::new()
    };
    format!(
        "echo \"MTCHK system $(timeout 900 systemctl is-system-running --wait)\"; \
echo MTCHK-''BEGIN; \
{retention}\
echo \"MTCHK ret-marker $(cat {mount}/{RETENTION_MARKER} 2>&1)\"; \
{crash_kernel}\
{crash_lines}\
{ovf_lines}\
echo MTCHK-''END\n",
        retention = retention_guest_lines(def),
        mount = def.retention_disk.mount,
        crash_kernel = crash_guest_lines(),
    )
}
