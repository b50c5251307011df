//! The one restart of every boot test, as a deployed copy restarts: through a kernel panic
//! whose dump kdump must save (the plain test, with kdump in the image) or a clean reboot
//! (`--ovf-env`). After it the retention volume must be adopted, not formatted again, and the
//! agent, SSH, the capture kernel and the OVF settings must still be there.

use super::guest::{retention_guest_lines, CRASH_GUEST_LINES};
use super::judge::{judge_crash_kernel, report_line, RetentionView, RETENTION_MARKER};
use super::ovf_env::OvfEnvTest;
use super::session::{
    agent_port_check, login, run_guest_script, ssh_port_check, HostPorts, Outcome, READY_PREFIX,
};
use super::BootTestOptions;
use crate::qemu::Machine;
use anyhow::{Context, Result};
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
    /// The plain boot test restarts through a kernel crash when the image has kdump (the
    /// strongest proof that dumps work: one is saved); `--ovf-env` reboots cleanly, so that
    /// its checks see an ordinary reboot.
    pub(super) fn for_test(def: &Definition, ovf: bool) -> Restart {
        if !ovf && crash_kernel(def).is_some() {
            Restart::KernelCrash
        } else {
            Restart::Clean
        }
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
/// plain test restarts through a kernel crash (see `Restart`): the dump must be in
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
    let restart = Restart::for_test(def, ovf.is_some());
    let when = restart.when();
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
    let mut out = vec![agent_port_check(ports.agent, def.agent.port, when)];
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
{CRASH_GUEST_LINES}\
{crash_lines}\
{ovf_lines}\
echo MTCHK-''END\n",
        retention = retention_guest_lines(def),
        mount = def.retention_disk.mount,
    )
}
