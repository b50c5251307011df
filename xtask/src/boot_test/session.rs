//! The console session: starts the VM with the forwarded ports, waits for the agent's
//! readiness line, logs in as root on the serial console, runs the guest's scripts, and runs
//! the checks in their order (ports from the host, the in-guest report, the restart, the
//! power-off), printing the table of outcomes. What is asked and how the answers are judged
//! live in `guest`, `judge` and `restart`.

use super::guest::guest_script;
use super::judge::{judge_report, RetentionView};
use super::ovf_env::OvfEnvTest;
use super::restart::reboot_checks;
use super::BootTestOptions;
use crate::qemu::{self, accel, Accel, Forward, Machine};
use anyhow::{bail, Context, Result};
use appliance::vm_hardware::VmHardware;
use appliance::Definition;
use camino::Utf8Path;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};
use xshell::Shell;

pub(super) const READY_PREFIX: &str = mt_contract::guest::READY_PREFIX;

pub(super) fn boot_and_check(
    sh: &Shell,
    opts: &BootTestOptions,
    def: &Definition,
    hw: &VmHardware,
    work: &Utf8Path,
    ovf: Option<&OvfEnvTest>,
) -> Result<()> {
    let seed = def.appliance.name.as_str();
    let agent = qemu::free_local_port()?;
    let ssh = loop {
        let p = qemu::free_local_port()?;
        if p != agent {
            break p;
        }
    };
    let ports = HostPorts { agent, ssh };
    let forwards = [
        Forward {
            host: ports.agent,
            guest: def.agent.port,
        },
        Forward {
            host: ports.ssh,
            guest: SSH_PORT,
        },
    ];
    let cdrom = match &hw.cdrom {
        Some(cd) => format!(
            ", CD-ROM on IDE {}:{} ({})",
            cd.ide_bus,
            cd.unit,
            cd.iso
                .as_deref()
                .map_or("empty", |i| i.file_name().unwrap_or("iso"))
        ),
        None => String::new(),
    };
    eprintln!(
        "boot-test: {} vCPU, {} MiB, {} + {}, {} disk(s){cdrom}; console log {work}/console.log",
        hw.cpus,
        hw.memory_mib,
        qemu::scsi_device(hw.scsi),
        qemu::nic_device(hw.nic),
        hw.disks.len()
    );
    let mut vm = start_vm(sh, opts, hw, seed, work, &forwards)?;
    let result = checks(opts, def, hw, &mut vm, ports, ovf);
    if let Err(e) = &result {
        eprintln!(
            "\nboot-test failed; the last console lines ({}):\n{}\n",
            vm.log,
            vm.console_tail(40)
        );
        return Err(anyhow::anyhow!("{e:#}"));
    }
    result
}

/// Starts the VM under the accelerator asked for; `auto` is what the KVM probe allows (or what
/// was remembered for this host). A probe guest is not the appliance's kernel: under `auto`, a
/// KVM VM whose kernel does not print its banner in time is stopped, the VM starts again under
/// TCG, and TCG is remembered, so that the next boot does not wait for KVM again.
fn start_vm(
    sh: &Shell,
    opts: &BootTestOptions,
    hw: &VmHardware,
    seed: &str,
    work: &Utf8Path,
    fwd: &[Forward],
) -> Result<Machine> {
    let accel = accel::choose(sh, opts.accel, work)?;
    let mut kvm_failed = None;
    if accel == Accel::Kvm {
        eprintln!("boot-test: booting under KVM");
        let vm = Machine::start(sh, hw, seed, work, fwd, Accel::Kvm).and_then(|mut vm| {
            vm.wait_for("Linux version", 0, accel::KVM_KERNEL_START)?;
            Ok(vm)
        });
        match vm {
            Ok(vm) => return Ok(vm),
            Err(e) if opts.accel == Accel::Auto => {
                let first = format!("{e:#}");
                let first = first.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                eprintln!(
                    "boot-test: the kernel did not start under KVM ({first}); falling back to TCG (slower, emulated CPU)"
                );
                kvm_failed = Some(format!(
                    "the appliance's kernel did not start under KVM ({first})"
                ));
            }
            Err(e) => return Err(e.context("--accel kvm")),
        }
    }
    eprintln!("boot-test: booting under TCG");
    let vm = Machine::start(sh, hw, seed, work, fwd, Accel::Tcg)?;
    // Only once TCG started: a VM that starts under neither says nothing about KVM.
    if let Some(reason) = kvm_failed {
        accel::remember(sh, Accel::Tcg, &reason);
    }
    Ok(vm)
}

/// One check's outcome, printed as a table at the end.
pub(super) struct Outcome {
    pub(super) what: String,
    pub(super) ok: bool,
    pub(super) detail: String,
}

/// The host's ends of the forwarded guest ports (QEMU user networking, as a client on the
/// guest's network would reach it: through the guest's firewall).
#[derive(Clone, Copy)]
pub(super) struct HostPorts {
    pub(super) agent: u16,
    pub(super) ssh: u16,
}

pub(super) const SSH_PORT: u16 = mt_contract::guest::SSH_PORT;

pub(super) fn checks(
    opts: &BootTestOptions,
    def: &Definition,
    hw: &VmHardware,
    vm: &mut Machine,
    ports: HostPorts,
    ovf: Option<&OvfEnvTest>,
) -> Result<()> {
    let timeout = opts.timeout;
    let at = vm
        .wait_for(READY_PREFIX, 0, timeout)
        .context("waiting for the agent's readiness line")?;
    let ready_after = vm.uptime();
    eprintln!(
        "boot-test: agent ready {:.0}s after power-on ({})",
        ready_after.as_secs_f64(),
        vm.accel.as_str()
    );
    let mut outcomes = vec![agent_port_check(ports.agent, def.agent.port, "")];
    if let Some(o) = ovf {
        outcomes.extend(o.enrol_checks(ports.agent));
    }

    let start = Instant::now();
    login(vm, &opts.password, 0, at)?;
    let report = run_guest_script(vm, &guest_script(def, ovf.map(|o| &o.config)))?;
    outcomes.extend(judge_report(def, hw, &report, ovf));
    // The script waited for the boot to finish, so sshd is up: it must answer through the
    // firewall as the agent did.
    outcomes.push(ssh_port_check(ports.ssh, ""));
    if let Some(o) = ovf {
        outcomes.extend(o.ssh_login_check(ports.ssh));
    }
    let first = RetentionView::parse(&report);
    outcomes.extend(reboot_checks(opts, def, vm, ports, &first, ovf)?);
    let pos = vm.buffer.len();
    vm.send("systemctl poweroff\n")?;
    let status = vm.wait_exit(Duration::from_secs(300))?;
    let clean = status.success() && vm.buffer.text_from(pos).contains("reboot: Power down");
    outcomes.push(Outcome {
        what: "clean power-off".into(),
        ok: clean,
        detail: format!("qemu {status}"),
    });
    eprintln!(
        "boot-test: checks and power-off took {:.0}s",
        start.elapsed().as_secs_f64()
    );

    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok).collect();
    for o in &outcomes {
        eprintln!(
            "  {} {:<40} {}",
            if o.ok { "ok  " } else { "FAIL" },
            o.what,
            o.detail
        );
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} checks failed: {}",
            failed.len(),
            outcomes.len(),
            failed
                .iter()
                .map(|o| o.what.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    eprintln!(
        "boot-test: passed ({} checks; ready after {:.0}s under {})",
        outcomes.len(),
        ready_after.as_secs_f64(),
        vm.accel.as_str()
    );
    Ok(())
}

/// The agent answers on its port through the loopback forward.
pub(super) fn agent_port_check(host_port: u16, guest_port: u16, when: &str) -> Outcome {
    banner_check(
        format!("{when}agent answers on port {guest_port}"),
        host_port,
        "mt-agent ",
    )
}

/// sshd answers on port 22 through the loopback forward (its version banner).
pub(super) fn ssh_port_check(host_port: u16, when: &str) -> Outcome {
    banner_check(
        format!("{when}SSH answers on port {SSH_PORT}"),
        host_port,
        "SSH-2.0-",
    )
}

/// Connects to `host_port` and reads the first line the guest's service sends.
pub(super) fn banner_check(what: String, host_port: u16, prefix: &str) -> Outcome {
    let result = (|| -> Result<String> {
        let s = std::net::TcpStream::connect(("127.0.0.1", host_port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line.trim().to_string())
    })();
    match result {
        Ok(line) if line.starts_with(prefix) => Outcome {
            what,
            ok: true,
            detail: line,
        },
        Ok(line) => Outcome {
            what,
            ok: false,
            detail: format!("answered {line:?}"),
        },
        Err(e) => Outcome {
            what,
            ok: false,
            detail: format!("{e:#}"),
        },
    }
}

pub(super) const PROMPT: &str = "MTPROMPT# ";

/// Logs in on the console of the boot that began at `boot` (0, or where a reboot was asked).
pub(super) fn login(vm: &mut Machine, password: &str, boot: usize, from: usize) -> Result<()> {
    // The getty may have printed its prompt before or after the agent's line.
    let mut pos = vm
        .wait_for("login: ", boot, Duration::from_secs(300))
        .context("waiting for the serial console's login prompt")?;
    pos = pos.max(from);
    vm.send("root\n")?;
    pos = vm
        .wait_for("Password: ", pos, Duration::from_secs(120))
        .context("waiting for the password prompt")?;
    vm.send(&format!("{password}\n"))?;
    // login discards typed-ahead input, so the next line waits for root's shell prompt.
    let shell = vm.wait_for("# ", pos, Duration::from_secs(120)).map_err(|e| {
        if vm.buffer.text_from(pos).contains("Login incorrect") {
            anyhow::anyhow!("root login on the serial console was refused: --password does not match the definition's system.root_password_hash")
        } else {
            e.context("waiting for a shell after logging in as root")
        }
    })?;
    // The prompt text is split in the command so that its echo does not match.
    vm.send("stty -echo; dmesg -n 1; PS1='MT''PROMPT# '\n")?;
    vm.wait_for(PROMPT, shell, Duration::from_secs(120))
        .context("waiting for the shell to take the test's prompt")?;
    Ok(())
}

/// Sends `script` (ending with the END marker) and returns its `MTCHK ` lines, prefix removed.
pub(super) fn run_guest_script(vm: &mut Machine, script: &str) -> Result<Vec<String>> {
    let pos = vm.buffer.len();
    vm.send(script)?;
    let end = vm
        .wait_for("MTCHK-END", pos, Duration::from_secs(1200))
        .context("waiting for the in-guest checks")?;
    let text = qemu::strip_escapes(&vm.buffer.text_between(pos, end));
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("MTCHK ").map(str::to_owned))
        .collect())
}
