//! `cargo xtask boot-test FILE.ova`: boots the OVA the way vSphere would run it and checks the
//! appliance from inside. The OVA is only read: its descriptor and disks are extracted into a
//! work directory and the VM writes to throw-away qcow2 overlays. The hardware comes from the
//! OVF (see `qemu.rs` for the mapping); KVM is used when a short test boot shows it works,
//! TCG otherwise.
//!
//! The channel into the guest is the image's own serial console: the test waits for the
//! agent's readiness line there, connects to the agent's port through a loopback forward, logs
//! in as root with the password given on the command line, runs read-only checks, and powers
//! the VM off. The whole console is kept in `console.log`; a failure prints its last lines.

use crate::build_ova::host::{self, tool};
use crate::qemu::{self, Accel, Forward, Machine, VmDisk, VmHardware};
use crate::util;
use anyhow::{bail, Context, Result};
use appliance::definition::DEPLOY_PRODUCT_CLASS;
use appliance::definition::{
    FileSystem, LogicalPackage, NicKind, ScsiController, OS_DISK_SCSI_UNIT,
};
use appliance::ovf::OvfDescriptor;
use appliance::Definition;
use camino::{Utf8Path, Utf8PathBuf};
use mt_agent::guest::ovfenv::{DeployConfig, IpConfig};
use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};
use xshell::cmd;
use xshell::Shell;

/// Boot an OVA in QEMU and check the appliance inside it.
#[derive(clap::Args)]
pub struct BootTest {
    /// The OVA to boot (never modified).
    pub(crate) ova: Option<Utf8PathBuf>,
    /// The definition the OVA was built from: what the checks expect (mounts, tools, port).
    #[arg(long)]
    pub(crate) definition: Option<Utf8PathBuf>,
    /// The root password (the default definition's hash is of "mt-changeme").
    #[arg(long, default_value = "mt-changeme")]
    pub(crate) password: String,
    /// Debugging: boot raw disk images instead of an OVA (OS disk first, then the retention
    /// disk), with the hardware the definition declares.
    #[arg(long, conflicts_with = "ova")]
    pub(crate) raw: Vec<Utf8PathBuf>,
    /// kvm, tcg or auto (KVM when a test boot shows it works).
    #[arg(long, default_value = "auto")]
    pub(crate) accel: String,
    /// Seconds to wait for the agent's readiness line.
    #[arg(long, default_value_t = 900)]
    pub(crate) timeout: u64,
    /// Work directory (default: build/boot-test-<name>/); console.log stays there.
    #[arg(long)]
    pub(crate) work: Option<Utf8PathBuf>,
    /// Attach this ovf-env.xml on a CD-ROM (the OVF iso transport) and check that the guest
    /// applied it: host name, static address, route, resolver, the agent's passphrase.
    #[arg(long, value_name = "FILE.xml")]
    pub(crate) ovf_env: Option<Utf8PathBuf>,
    /// Like --ovf-env with a document built from test values that fit QEMU's user network
    /// (10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3) and a passphrase with XML specials.
    #[arg(long, conflicts_with = "ovf_env")]
    pub(crate) ovf_env_test: bool,
}

/// What booting needs on the host.
pub const TOOLS: [host::Tool; 2] = [
    tool("qemu-system-x86_64", "qemu-system-x86"),
    tool("qemu-img", "qemu-utils"),
];

/// How long a working KVM guest takes at most to print its first kernel line.
const KVM_PROBE: Duration = Duration::from_secs(60);
const READY_PREFIX: &str = mt_agent::serve::READY_PREFIX;

/// The command whose presence proves a runbook package is installed.
pub fn probe_command(p: LogicalPackage) -> &'static str {
    match p {
        LogicalPackage::Xfsprogs => "xfs_repair",
        LogicalPackage::Perl => "perl",
        LogicalPackage::Lsscsi => "lsscsi",
        LogicalPackage::Rsync => "rsync",
        LogicalPackage::Wget => "wget",
        LogicalPackage::KexecTools => "kexec",
        LogicalPackage::Multipath => "multipath",
        LogicalPackage::Reiserfs => "reiserfsck",
    }
}

impl BootTest {
    pub fn run(self, sh: &Shell) -> Result<()> {
        host::ensure(sh, "boot-test", &TOOLS)?;
        let (_, def) = util::load_definition(self.definition.as_deref())?;
        let name = def.appliance.name.clone();
        let work = match &self.work {
            Some(w) => crate::build_ova::absolute(w),
            None => util::workspace_root()
                .join("build")
                .join(format!("boot-test-{name}")),
        };
        if work.exists() {
            std::fs::remove_dir_all(&work).with_context(|| format!("cannot clear {work}"))?;
        }
        std::fs::create_dir_all(&work)?;
        let mut hw = match &self.ova {
            Some(ova) => ova_hardware(&crate::build_ova::absolute(ova), &work)?,
            None if self.raw.len() == 2 => raw_hardware(&def, &self.raw)?,
            None => {
                bail!("give the OVA to boot (or, for debugging, --raw OS.raw --raw RETENTION.raw)")
            }
        };
        let ovf = match (&self.ovf_env, self.ovf_env_test) {
            (Some(f), _) => {
                let f = crate::build_ova::absolute(f);
                let xml = std::fs::read_to_string(&f)
                    .with_context(|| format!("cannot read the OVF environment {f}"))?;
                Some(OvfEnvTest::prepare(sh, &xml, f.as_ref(), &work)?)
            }
            (None, true) => Some(OvfEnvTest::prepare(
                sh,
                &test_environment(),
                "the test values",
                &work,
            )?),
            (None, false) => None,
        };
        if let Some(o) = &ovf {
            hw.cdrom = Some(o.iso.clone());
        }
        let result = boot_and_check(sh, &self, &def, &hw, &work, ovf.as_ref());
        // Overlays and extracted disks are large and worthless afterwards; the console log stays.
        for entry in std::fs::read_dir(&work)?.flatten() {
            let n = entry.file_name().to_string_lossy().into_owned();
            if n.ends_with(".qcow2") || n.ends_with(".vmdk") || n.ends_with(".sock") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        result
    }
}

/// Reads the OVA (never writing it): extracts the descriptor and the disks into `work`, and maps
/// the hardware the OVF declares to QEMU's models.
fn ova_hardware(ova: &Utf8Path, work: &Utf8Path) -> Result<VmHardware> {
    let file = std::fs::File::open(ova).with_context(|| format!("cannot open {ova}"))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut ovf_text = None;
    let mut extracted = Vec::new();
    for entry in archive
        .entries()
        .with_context(|| format!("{ova} is not a tar archive"))?
    {
        let mut entry = entry.with_context(|| format!("cannot read a member of {ova}"))?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if name.contains('/') || name.starts_with('.') {
            bail!("{ova}: member {name:?} is not a plain file name");
        }
        if name.ends_with(".ovf") {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .with_context(|| format!("{ova}: cannot read {name}"))?;
            ovf_text = Some((name, text));
        } else if name.ends_with(".vmdk") {
            let dest = work.join(&name);
            let mut out =
                std::fs::File::create(&dest).with_context(|| format!("cannot create {dest}"))?;
            std::io::copy(&mut entry, &mut out)
                .with_context(|| format!("{ova}: cannot extract {name}"))?;
            extracted.push(name);
        }
    }
    let (ovf_name, text) = ovf_text.with_context(|| format!("{ova} has no .ovf descriptor"))?;
    let ovf = OvfDescriptor::parse(&text).with_context(|| format!("{ova}: {ovf_name}"))?;
    hardware_from_ovf(&ovf, work, &extracted).with_context(|| format!("{ova}: {ovf_name}"))
}

fn hardware_from_ovf(
    ovf: &OvfDescriptor,
    work: &Utf8Path,
    extracted: &[String],
) -> Result<VmHardware> {
    let controller = ovf
        .scsi_controllers()
        .next()
        .context("declares no SCSI controller")?;
    let subtype = controller.subtype.as_deref().unwrap_or("");
    let scsi = [ScsiController::Paravirtual, ScsiController::Lsilogic, ScsiController::LsilogicSas]
        .into_iter()
        .find(|c| c.ovf_subtype().eq_ignore_ascii_case(subtype))
        .with_context(|| format!("SCSI controller subtype {subtype:?} has no QEMU model here (VirtualSCSI, lsilogic, lsilogicsas)"))?;
    let nic_subtype = ovf
        .nics
        .first()
        .and_then(|n| n.subtype.as_deref())
        .context("declares no network adapter")?;
    let nic = [NicKind::Vmxnet3, NicKind::E1000]
        .into_iter()
        .find(|n| n.ovf_subtype().eq_ignore_ascii_case(nic_subtype))
        .with_context(|| {
            format!(
                "network adapter subtype {nic_subtype:?} has no QEMU model here (VmxNet3, E1000)"
            )
        })?;
    let mut disks = Vec::new();
    for d in &ovf.disks {
        let href = d
            .href
            .as_deref()
            .with_context(|| format!("disk {} references no file", d.disk_id))?;
        if !extracted.iter().any(|e| e == href) {
            bail!(
                "disk {} references {href}, which the OVA does not contain",
                d.disk_id
            );
        }
        let attachment = d
            .attachment
            .as_ref()
            .with_context(|| format!("disk {} is attached to no controller", d.disk_id))?;
        if attachment.controller_instance != controller.instance_id {
            bail!(
                "disk {} is attached to controller {}, not the SCSI controller {}",
                d.disk_id,
                attachment.controller_instance,
                controller.instance_id
            );
        }
        let unit = attachment
            .unit
            .with_context(|| format!("disk {} has no AddressOnParent (SCSI unit)", d.disk_id))?;
        disks.push(VmDisk {
            image: work.join(href),
            format: "vmdk",
            unit,
        });
    }
    if disks.is_empty() {
        bail!("declares no disks");
    }
    disks.sort_by_key(|d| d.unit);
    Ok(VmHardware {
        cpus: ovf.cpus,
        memory_mib: ovf.memory_bytes / (1024 * 1024),
        scsi,
        nic,
        disks,
        cdrom: None,
    })
}

fn raw_hardware(def: &Definition, raw: &[Utf8PathBuf]) -> Result<VmHardware> {
    let units = [OS_DISK_SCSI_UNIT, def.retention_disk.scsi_unit];
    Ok(VmHardware {
        cpus: def.hardware.vcpus,
        memory_mib: def.hardware.memory.mib(),
        scsi: def.hardware.scsi_controller,
        nic: def.hardware.nic,
        disks: raw
            .iter()
            .zip(units)
            .map(|(p, unit)| VmDisk {
                image: crate::build_ova::absolute(p),
                format: "raw",
                unit,
            })
            .collect(),
        cdrom: None,
    })
}

fn boot_and_check(
    sh: &Shell,
    args: &BootTest,
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
    eprintln!(
        "boot-test: {} vCPU, {} MiB, {} + {}, {} disk(s); console log {work}/console.log",
        hw.cpus,
        hw.memory_mib,
        qemu::scsi_device(hw.scsi),
        qemu::nic_device(hw.nic),
        hw.disks.len()
    );
    let mut vm = start_vm(sh, args, hw, seed, work, &forwards)?;
    let result = checks(args, def, hw, &mut vm, ports, ovf);
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

fn start_vm(
    sh: &Shell,
    args: &BootTest,
    hw: &VmHardware,
    seed: &str,
    work: &Utf8Path,
    fwd: &[Forward],
) -> Result<Machine> {
    let try_kvm = match args.accel.as_str() {
        "kvm" => true,
        "tcg" => false,
        "auto" => qemu::kvm_device_usable(),
        other => bail!("--accel {other:?}: use kvm, tcg or auto"),
    };
    if try_kvm {
        let probe = Machine::start(sh, hw, seed, work, fwd, Accel::Kvm).and_then(|mut vm| {
            vm.wait_for("Linux version", 0, KVM_PROBE)?;
            Ok(vm)
        });
        match probe {
            Ok(vm) => {
                eprintln!(
                    "boot-test: KVM works, the kernel started in {:.0}s",
                    vm.uptime().as_secs_f64()
                );
                return Ok(vm);
            }
            Err(e) if args.accel == "auto" => {
                let first = format!("{e:#}");
                let first = first.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                eprintln!("boot-test: KVM did not boot a kernel ({first}); falling back to TCG (slower, emulated CPU)");
            }
            Err(e) => return Err(e.context("--accel kvm")),
        }
    }
    eprintln!("boot-test: booting under TCG");
    Machine::start(sh, hw, seed, work, fwd, Accel::Tcg)
}

/// One check's outcome, printed as a table at the end.
struct Outcome {
    what: String,
    ok: bool,
    detail: String,
}

/// The host's ends of the forwarded guest ports (QEMU user networking, as a client on the
/// guest's network would reach it: through the guest's firewall).
#[derive(Clone, Copy)]
struct HostPorts {
    agent: u16,
    ssh: u16,
}

const SSH_PORT: u16 = mt_agent::guest::setup::firewall::SSH_PORT;

fn checks(
    args: &BootTest,
    def: &Definition,
    hw: &VmHardware,
    vm: &mut Machine,
    ports: HostPorts,
    ovf: Option<&OvfEnvTest>,
) -> Result<()> {
    let timeout = Duration::from_secs(args.timeout);
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
    login(vm, &args.password, 0, at)?;
    let report = run_guest_script(vm, &guest_script(def, ovf.is_some()))?;
    outcomes.extend(judge_report(def, hw, &report, ovf));
    // The script waited for the boot to finish, so sshd is up: it must answer through the
    // firewall as the agent did.
    outcomes.push(ssh_port_check(ports.ssh, ""));
    let first = RetentionView::parse(&report);
    outcomes.extend(reboot_checks(args, def, vm, ports, &first, ovf)?);
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
fn agent_port_check(host_port: u16, guest_port: u16, when: &str) -> Outcome {
    banner_check(
        format!("{when}agent answers on port {guest_port}"),
        host_port,
        "mt-agent ",
    )
}

/// sshd answers on port 22 through the loopback forward (its version banner).
fn ssh_port_check(host_port: u16, when: &str) -> Outcome {
    banner_check(
        format!("{when}SSH answers on port {SSH_PORT}"),
        host_port,
        "SSH-2.0-",
    )
}

/// Connects to `host_port` and reads the first line the guest's service sends.
fn banner_check(what: String, host_port: u16, prefix: &str) -> Outcome {
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

const PROMPT: &str = "MTPROMPT# ";

/// Logs in on the console of the boot that began at `boot` (0, or where a reboot was asked).
fn login(vm: &mut Machine, password: &str, boot: usize, from: usize) -> Result<()> {
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

/// Read-only commands run in the guest; each result line starts with `MTCHK `.
/// The services the definition's packages bring (the package manifest's `services`).
fn package_services(def: &Definition) -> Vec<String> {
    appliance::packages::PackageManifest::shipped(def.appliance.base).services_for(def)
}

fn guest_script(def: &Definition, ovf: bool) -> String {
    let tools: Vec<&str> = def.packages.iter().map(|p| probe_command(*p)).collect();
    let services = package_services(def).join(" ");
    format!(
        "echo \"MTCHK system $(timeout 900 systemctl is-system-running --wait)\"; \
echo MTCHK-''BEGIN; \
findmnt -rn -o TARGET,FSTYPE,LABEL | sed 's/^/MTCHK mount /'; \
for d in $(swapon --noheadings --raw --show=NAME); do echo \"MTCHK swap $(blkid -o value -s LABEL $d)\"; done; \
for t in {tools}; do p=$(command -v $t) && echo \"MTCHK tool $t $p\" || echo \"MTCHK tool $t MISSING\"; done; \
ls /dev/disk/by-id/ | sed 's/^/MTCHK byid /'; \
echo \"MTCHK agent $(systemctl is-active mt-agent.service)\"; \
for s in {services}; do echo \"MTCHK service $s $(systemctl is-active $s)\"; done; \
echo \"MTCHK hostkeys $(ls /etc/ssh/ssh_host_*_key 2>/dev/null | wc -l)\"; \
echo \"MTCHK machineid $(cat /etc/machine-id)\"; \
echo \"MTCHK hostname $(hostname) $(hostname -f 2>/dev/null)\"; \
echo \"MTCHK addr $(ip -4 -o addr show dev {device} | awk '{{print $4}}')\"; \
{firewall}\
{crash}\
{retention}\
{ovf_lines}\
echo \"MTCHK failed-units $(systemctl list-units --state=failed --no-legend --plain | awk '{{print $1}}' | tr '\\n' ' ')\"; \
echo \"MTCHK ordering-cycles $(journalctl -b -o cat | grep -c 'Found ordering cycle')\"; \
echo MTCHK-''END\n",
        tools = tools.join(" "),
        device = def.network.device,
        firewall = firewall_guest_lines(),
        crash = CRASH_GUEST_LINES,
        retention = retention_guest_lines(def),
        ovf_lines = if ovf { ovf_guest_lines(&def.network.device) } else { String::new() },
    )
}

/// The firewall as the kernel has it (not the file): nftables.service and the input chain.
fn firewall_guest_lines() -> String {
    format!(
        "echo \"MTCHK nft-service $(systemctl is-active {service})\"; \
nft list chain inet filter input 2>&1 | sed 's/^/MTCHK nft /'; ",
        service = mt_agent::guest::setup::firewall::DEBIAN_SERVICE
    )
}

/// The kernel command line, and whether kdump-tools loaded the capture kernel into the
/// reserved memory (and how much is reserved).
const CRASH_GUEST_LINES: &str = "echo \"MTCHK cmdline $(cat /proc/cmdline)\"; \
echo \"MTCHK kexec-crash $(cat /sys/kernel/kexec_crash_loaded) $(cat /sys/kernel/kexec_crash_size)\"; ";

/// The retention volume: the UUID of the file system on the retention disk (by its WWN link),
/// what is mounted at the mount point, its fstab line, and what first boot logged this boot.
fn retention_guest_lines(def: &Definition) -> String {
    let (_, wwn) = qemu::disk_identity(&def.appliance.name, def.retention_disk.scsi_unit);
    format!(
        "echo \"MTCHK ret-disk $(blkid -p -o value -s UUID /dev/disk/by-id/scsi-3{wwn:016x})\"; \
echo \"MTCHK ret-mount $(findmnt -n -o UUID,SOURCE {mount})\"; \
echo \"MTCHK ret-fstab $(awk '$2 == \"{mount}\" && $1 !~ /^#/ {{print $1}}' /etc/fstab)\"; \
echo \"MTCHK ret-formatted $(journalctl -b -o cat -u {unit} | grep 'formatted the retention disk' | grep -o 'UUID=[0-9a-f-]*' | tr '\\n' ' ')\"; \
echo \"MTCHK ret-adopted $(journalctl -b -o cat -u {unit} | grep 'adopted, not formatted' | grep -o 'UUID=[0-9a-f-]*' | tr '\\n' ' ')\"; ",
        mount = def.retention_disk.mount,
        unit = mt_agent::guest::setup::FIRSTBOOT_SERVICE,
    )
}

/// The guest's view of what the OVF environment sets; the passphrase only as its SHA-256.
fn ovf_guest_lines(device: &str) -> String {
    format!(
        "echo \"MTCHK ovf-addr $(ip -4 -o addr show dev {device} | sed 's/^[0-9]*: //')\"; \
echo \"MTCHK ovf-iface $(grep '^iface {device} ' /etc/network/interfaces)\"; \
echo \"MTCHK ovf-route $(ip -4 route show default | head -n 1)\"; \
echo \"MTCHK ovf-resolv $(grep -E '^(nameserver|search) ' /etc/resolv.conf | tr '\\n' ' ')\"; \
echo \"MTCHK ovf-passmode $(stat -c '%a %U' {pass})\"; \
echo \"MTCHK ovf-passhash $(sha256sum < {pass} | cut -d' ' -f1)\"; \
echo \"MTCHK ovf-source $(mt-agent status 2>&1 | grep '^configuration:')\"; \
echo \"MTCHK ovf-unit $(systemctl is-active mt-agent-ovfenv.service)\"; \
",
        pass = mt_agent::replication::net::auth::PASSPHRASE_PATH,
    )
}

/// Sends `script` (ending with the END marker) and returns its `MTCHK ` lines, prefix removed.
fn run_guest_script(vm: &mut Machine, script: &str) -> Result<Vec<String>> {
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

fn judge_report(
    def: &Definition,
    hw: &VmHardware,
    report: &[String],
    ovf: Option<&OvfEnvTest>,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    let field = |kind: &str| -> Vec<Vec<String>> {
        report
            .iter()
            .filter_map(|l| l.strip_prefix(kind).and_then(|r| r.strip_prefix(' ')))
            .map(|r| r.split_whitespace().map(str::to_owned).collect())
            .collect()
    };
    let mounts = field("mount");
    let mut expected: Vec<(String, FileSystem, String)> = def
        .os_disk
        .partitions
        .iter()
        .filter(|p| !p.is_swap())
        .map(|p| (p.mount.clone(), p.fs, p.label.clone()))
        .collect();
    let r = &def.retention_disk;
    expected.push((r.mount.clone(), r.fs, r.label.clone()));
    for (mount, fs, label) in expected {
        let found = mounts.iter().find(|m| m.first() == Some(&mount));
        let (ok, detail) = match found {
            Some(m) => (
                m.get(1).map(String::as_str) == Some(fs.as_str()) && m.get(2) == Some(&label),
                m.join(" "),
            ),
            None => (false, "not mounted".to_string()),
        };
        out.push(Outcome {
            what: format!("{mount} mounted ({} LABEL={label})", fs.as_str()),
            ok,
            detail,
        });
    }
    for p in def.os_disk.partitions.iter().filter(|p| p.is_swap()) {
        let active = field("swap").iter().any(|s| s.first() == Some(&p.label));
        out.push(Outcome {
            what: format!("swap LABEL={} active", p.label),
            ok: active,
            detail: format!("{:?}", field("swap")),
        });
    }
    let tools = field("tool");
    for p in &def.packages {
        let name = probe_command(*p);
        let found = tools
            .iter()
            .find(|t| t.first().map(String::as_str) == Some(name));
        let path = found
            .and_then(|t| t.get(1))
            .cloned()
            .unwrap_or_else(|| "not reported".into());
        out.push(Outcome {
            what: format!("tool {name} ({})", p.as_str()),
            ok: found.is_some() && path != "MISSING",
            detail: path,
        });
    }
    let byid: Vec<String> = field("byid")
        .into_iter()
        .filter_map(|v| v.into_iter().next())
        .collect();
    for d in &hw.disks {
        let (_, wwn) = qemu::disk_identity(&def.appliance.name, d.unit);
        let link = format!("scsi-3{wwn:016x}");
        out.push(Outcome {
            what: format!("/dev/disk/by-id/{link}"),
            ok: byid.contains(&link),
            detail: format!("SCSI unit {}", d.unit),
        });
    }
    let agent = field("agent")
        .first()
        .and_then(|v| v.first().cloned())
        .unwrap_or_default();
    out.push(Outcome {
        what: "mt-agent.service active".into(),
        ok: agent == "active",
        detail: agent,
    });
    let services = field("service");
    for name in package_services(def) {
        let state = services
            .iter()
            .find(|s| s.first() == Some(&name))
            .and_then(|s| s.get(1).cloned())
            .unwrap_or_else(|| "not reported".into());
        out.push(Outcome {
            what: format!("{name} service active"),
            ok: state == "active",
            detail: state,
        });
    }
    let keys = field("hostkeys")
        .first()
        .and_then(|v| v.first().cloned())
        .unwrap_or_default();
    out.push(Outcome {
        what: "SSH host keys created at first boot".into(),
        ok: keys.parse::<u32>().is_ok_and(|n| n > 0),
        detail: format!("{keys} keys"),
    });
    let id = field("machineid")
        .first()
        .and_then(|v| v.first().cloned())
        .unwrap_or_default();
    out.push(Outcome {
        what: "machine-id generated at first boot".into(),
        ok: id.len() == 32,
        detail: id,
    });
    let (short, fqdn) = {
        let h = ovf
            .and_then(|o| o.config.hostname.as_ref())
            .unwrap_or(&def.network.hostname);
        (h.split('.').next().unwrap_or(h).to_string(), h.clone())
    };
    let names = field("hostname").into_iter().next().unwrap_or_default();
    out.push(Outcome {
        what: format!("host name {fqdn}"),
        ok: names.first() == Some(&short) && names.get(1) == Some(&fqdn),
        detail: names.join(" "),
    });
    let addr = field("addr").into_iter().next().unwrap_or_default();
    let ovf_static = ovf.and_then(|o| match &o.config.ip {
        Some(IpConfig::Static {
            address, prefix, ..
        }) => Some(format!("{address}/{prefix}")),
        _ => None,
    });
    let (what, ok) = match def.network.static_ip() {
        _ if ovf_static.is_some() => {
            let want = ovf_static.clone().unwrap_or_default();
            (
                format!("{} has the static address {want}", def.network.device),
                addr.first() == Some(&want),
            )
        }
        Some(ip) => {
            let want = format!("{}/{}", ip.address, ip.prefix);
            (
                format!("{} has the static address {want}", def.network.device),
                addr.first() == Some(&want),
            )
        }
        None => (
            format!("{} has a DHCP address", def.network.device),
            !addr.is_empty(),
        ),
    };
    out.push(Outcome {
        what,
        ok,
        detail: addr.join(" "),
    });
    let state = field("system")
        .first()
        .and_then(|v| v.first().cloned())
        .unwrap_or_default();
    out.push(Outcome {
        what: "boot finished (systemctl is-system-running)".into(),
        ok: state == "running",
        detail: state,
    });
    let failed_units = field("failed-units").into_iter().next().unwrap_or_default();
    out.push(Outcome {
        what: "no failed systemd units".into(),
        ok: failed_units.is_empty(),
        detail: failed_units.join(" "),
    });
    // systemd breaks a cycle by dropping a job, which then silently never runs.
    let cycles = report_line(report, "ordering-cycles");
    out.push(Outcome {
        what: "no ordering cycle between units".into(),
        ok: cycles == "0",
        detail: format!("{cycles} 'Found ordering cycle' line(s) in this boot's journal"),
    });
    out.extend(judge_firewall(def, report));
    out.extend(judge_crash_kernel(def, report, ""));
    out.extend(RetentionView::parse(report).judge_first_boot(def));
    if let Some(o) = ovf {
        out.extend(o.judge(&def.network.device, report));
    }
    out
}

/// The rest of the first report line of `kind` (empty when there is none).
fn report_line(report: &[String], kind: &str) -> String {
    report
        .iter()
        .find_map(|l| l.strip_prefix(kind).and_then(|r| r.strip_prefix(' ')))
        .map(|r| r.trim().to_string())
        .unwrap_or_default()
}

/// nftables.service loaded a ruleset whose input chain drops by default and accepts SSH and
/// the agent's port (the host's connections through the forwards show the rest).
fn judge_firewall(def: &Definition, report: &[String]) -> Vec<Outcome> {
    let rules: Vec<String> = report
        .iter()
        .filter_map(|l| l.strip_prefix("nft "))
        .map(|r| r.trim().to_string())
        .collect();
    let service = report_line(report, "nft-service");
    let policy = rules
        .iter()
        .find(|r| r.starts_with("type filter hook input"))
        .cloned()
        .unwrap_or_else(|| "no input chain".into());
    let ports = [SSH_PORT, def.agent.port].map(|p| p.to_string());
    let open = rules.iter().find(|r| {
        let words: Vec<&str> = r
            .split(|c: char| c.is_whitespace() || "{},".contains(c))
            .filter(|w| !w.is_empty())
            .collect();
        words.starts_with(&["tcp", "dport"])
            && words.last() == Some(&"accept")
            && ports.iter().all(|p| words.contains(&p.as_str()))
    });
    vec![
        Outcome {
            what: format!(
                "{} active",
                mt_agent::guest::setup::firewall::DEBIAN_SERVICE
            ),
            ok: service == "active",
            detail: service,
        },
        Outcome {
            what: "firewall input policy drop".into(),
            ok: policy.ends_with("policy drop;"),
            detail: policy,
        },
        Outcome {
            what: format!("firewall accepts TCP {}", ports.join(" and ")),
            ok: open.is_some(),
            detail: open
                .cloned()
                .unwrap_or_else(|| format!("{} rule(s), none of them", rules.len())),
        },
    ]
}

/// With kdump (the definition's kexec-tools), the kernel reserved crash kernel memory and
/// kdump-tools loaded the capture kernel into it.
fn judge_crash_kernel(def: &Definition, report: &[String], when: &str) -> Vec<Outcome> {
    let Some(param) = crate::build_ova::bootloader::crash_kernel(def) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if when.is_empty() {
        let cmdline = report_line(report, "cmdline");
        out.push(Outcome {
            what: format!("/proc/cmdline has {param}"),
            ok: cmdline.split_whitespace().any(|w| w == param),
            detail: cmdline,
        });
    }
    let loaded = report_line(report, "kexec-crash");
    let mut it = loaded.split_whitespace();
    let (flag, size) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
    out.push(Outcome {
        what: format!("{when}capture kernel loaded (kexec_crash_loaded = 1)"),
        ok: flag == "1" && size.parse::<u64>().is_ok_and(|b| b > 0),
        detail: format!("loaded {flag:?}, {size} bytes reserved"),
    });
    out
}

/// The retention volume as one boot's report shows it (`ret-*` lines).
#[derive(Debug, Default)]
struct RetentionView {
    /// The UUID of the file system on the retention disk (found by its WWN link).
    disk_uuid: String,
    /// What is mounted at the mount point: UUID and source device.
    mounted_uuid: String,
    source: String,
    /// The device field of the mount point's fstab line.
    fstab: String,
    /// The `UUID=` of every "formatted" and "adopted" line first boot logged this boot.
    formatted: Vec<String>,
    adopted: Vec<String>,
    /// The contents of the file written before the reboot (after it only).
    marker: String,
}

/// Written onto the retention volume before the reboot; its survival shows the volume was
/// not formatted again.
const RETENTION_MARKER: &str = "mt-boot-test-marker";

impl RetentionView {
    fn parse(report: &[String]) -> RetentionView {
        let words = |kind: &str| -> Vec<String> {
            report_line(report, kind)
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        let mount = words("ret-mount");
        RetentionView {
            disk_uuid: report_line(report, "ret-disk"),
            mounted_uuid: mount.first().cloned().unwrap_or_default(),
            source: mount.get(1).cloned().unwrap_or_default(),
            fstab: report_line(report, "ret-fstab"),
            formatted: words("ret-formatted"),
            adopted: words("ret-adopted"),
            marker: report_line(report, "ret-marker"),
        }
    }

    /// The first boot of a copy found the disk blank, formatted it once and mounted it by UUID.
    fn judge_first_boot(&self, def: &Definition) -> Vec<Outcome> {
        let mount = &def.retention_disk.mount;
        let uuid = &self.disk_uuid;
        let spec = format!("UUID={uuid}");
        vec![
            Outcome {
                what: "first boot formatted the retention disk once".into(),
                ok: uuid.len() == 36 && self.formatted == [spec.clone()] && self.adopted.is_empty(),
                detail: format!(
                    "disk {uuid}; formatted [{}] adopted [{}]",
                    self.formatted.join(" "),
                    self.adopted.join(" ")
                ),
            },
            Outcome {
                what: format!("{mount} is that file system, by UUID in fstab"),
                ok: uuid.len() == 36 && self.mounted_uuid == *uuid && self.fstab == spec,
                detail: format!(
                    "mounted {} from {}; fstab {}",
                    self.mounted_uuid, self.source, self.fstab
                ),
            },
        ]
    }

    /// After the restart: the same file system, adopted (not formatted), with its contents.
    fn judge_after_reboot(
        &self,
        def: &Definition,
        first: &RetentionView,
        marker: &str,
        when: &str,
    ) -> Vec<Outcome> {
        let uuid = &first.disk_uuid;
        vec![
            Outcome {
                what: format!(
                    "{when}{} still mounted from UUID {uuid}",
                    def.retention_disk.mount
                ),
                ok: !uuid.is_empty()
                    && self.disk_uuid == *uuid
                    && self.mounted_uuid == *uuid
                    && self.fstab == first.fstab,
                detail: format!(
                    "disk {}, mounted {} from {}",
                    self.disk_uuid, self.mounted_uuid, self.source
                ),
            },
            Outcome {
                what: format!("{when}first boot adopted it, formatted nothing"),
                ok: self.formatted.is_empty() && self.adopted == [format!("UUID={uuid}")],
                detail: format!(
                    "formatted [{}] adopted [{}]",
                    self.formatted.join(" "),
                    self.adopted.join(" ")
                ),
            },
            Outcome {
                what: format!("{when}{RETENTION_MARKER} written before it is there"),
                ok: self.marker == marker,
                detail: self.marker.clone(),
            },
        ]
    }
}

/// How the boot test restarts the VM once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
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
    fn for_test(def: &Definition, ovf: bool) -> Restart {
        if !ovf && crate::build_ova::bootloader::crash_kernel(def).is_some() {
            Restart::KernelCrash
        } else {
            Restart::Clean
        }
    }

    fn command(self) -> &'static str {
        match self {
            Restart::Clean => "systemctl reboot",
            Restart::KernelCrash => "echo c > /proc/sysrq-trigger",
        }
    }

    /// How the checks after the restart are named.
    fn when(self) -> &'static str {
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
fn reboot_checks(
    args: &BootTest,
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
        .wait_for(READY_PREFIX, boot, Duration::from_secs(args.timeout))
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
    login(vm, &args.password, boot, at)?;
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
const PANIC_MESSAGE: &str = "sysrq triggered crash";

/// kdump-tools saved exactly one dump, of this panic, in `/var/crash/<stamp>/`.
fn judge_crash_dump(report: &[String]) -> Outcome {
    let saved = report_line(report, "crash-saved");
    let counts: Vec<&str> = saved.split_whitespace().collect();
    Outcome {
        what: format!(
            "the capture kernel saved the dump in {}",
            mt_agent::guest::setup::kdump::CRASH_DIR
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
fn reboot_script(def: &Definition, restart: Restart, ovf: bool) -> String {
    let device = &def.network.device;
    let ovf_lines = if ovf {
        format!(
            "echo \"MTCHK ovf-addr $(ip -4 -o addr show dev {device} | sed 's/^[0-9]*: //')\"; \
echo \"MTCHK ovf-unchanged $(journalctl -b -o cat -u {unit} | grep -c 'unchanged, nothing written')\"; ",
            unit = mt_agent::guest::setup::OVFENV_SERVICE
        )
    } else {
        String::new()
    };
    let crash_lines = if restart == Restart::KernelCrash {
        format!(
            "echo \"MTCHK crash-saved $(ls {dir}/*/dump.* 2>/dev/null | wc -l) $(grep -l '{PANIC_MESSAGE}' {dir}/*/dmesg.* 2>/dev/null | wc -l)\"; ",
            dir = mt_agent::guest::setup::kdump::CRASH_DIR
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

/// The `--ovf-env` mode: the document, the CD carrying it and what it should set.
pub(crate) struct OvfEnvTest {
    iso: Utf8PathBuf,
    config: DeployConfig,
    /// Passphrase files for the host-side enrolment (mode 600): the right one and a wrong one.
    right: Option<Utf8PathBuf>,
    wrong: Utf8PathBuf,
    /// The workspace's own `mt-agent`, the sender side.
    sender: Utf8PathBuf,
    state: Utf8PathBuf,
}

/// An environment with QEMU user-network values, so the forwarded agent port keeps working,
/// and a passphrase with characters XML must escape.
pub fn test_environment() -> String {
    let props = [
        ("hostname", "mt-ovf.drill.test"),
        ("ip_mode", "static"),
        ("ip_address", "10.0.2.15"),
        ("ip_prefix", "24"),
        ("gateway", "10.0.2.2"),
        ("dns_servers", "10.0.2.3"),
        ("dns_search", "drill.test"),
        ("agent_passphrase", "fail&back <drill> \"7\""),
    ];
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Environment xmlns=\"http://schemas.dmtf.org/ovf/environment/1\" xmlns:oe=\"http://schemas.dmtf.org/ovf/environment/1\" oe:id=\"\">\n  <PlatformSection>\n    <Kind>QEMU boot-test</Kind>\n  </PlatformSection>\n  <PropertySection>\n",
    );
    for (k, v) in props {
        let v = v
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;");
        x.push_str(&format!(
            "    <Property oe:key=\"{DEPLOY_PRODUCT_CLASS}.{k}\" oe:value=\"{v}\"/>\n"
        ));
    }
    x.push_str("  </PropertySection>\n</Environment>\n");
    x
}

fn write_private(path: &Utf8Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).with_context(|| format!("cannot write {path}"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod {path}"))
}

/// `xorriso -as mkisofs`: an ISO 9660 image with Rock Ridge and Joliet names.
fn make_iso(sh: &Shell, dir: &Utf8Path, iso: &Utf8Path) -> Result<()> {
    cmd!(
        sh,
        "xorriso -as mkisofs -quiet -R -J -V OVF_ENV -o {iso} {dir}"
    )
    .run()
    .with_context(|| format!("cannot build {iso} (Debian package: xorriso)"))
}

/// Builds the workspace's `mt-agent` for the host: the sender that enrols.
fn build_sender(sh: &Shell) -> Result<Utf8PathBuf> {
    cmd!(sh, "cargo build -q -p mt-agent")
        .run()
        .context("cannot build the host's mt-agent (the sender side of the enrolment check)")?;
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(Utf8PathBuf::from)
        .unwrap_or_else(|_| util::workspace_root().join("target"));
    Ok(target.join("debug/mt-agent"))
}

impl OvfEnvTest {
    fn prepare(sh: &Shell, xml: &str, origin: &str, work: &Utf8Path) -> Result<OvfEnvTest> {
        let env = mt_agent::guest::ovfenv::parse(xml)
            .with_context(|| format!("the OVF environment from {origin} is not valid"))?;
        let dir = work.join("ovf-env");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("ovf-env.xml"), xml)?;
        let iso = work.join("ovf-env.iso");
        make_iso(sh, &dir, &iso)?;
        let right = match &env.config.agent_passphrase {
            Some(p) => {
                let f = work.join("passphrase-right");
                write_private(&f, &format!("{p}\n"))?;
                Some(f)
            }
            None => None,
        };
        let wrong = work.join("passphrase-wrong");
        write_private(&wrong, "not-the-deploy-time-passphrase\n")?;
        Ok(OvfEnvTest {
            iso,
            config: env.config,
            right,
            wrong,
            sender: build_sender(sh)?,
            state: work.join("sender-state"),
        })
    }

    fn enrol(&self, host_port: u16, passphrase: &Utf8Path) -> (bool, String) {
        let out = std::process::Command::new(&self.sender)
            .args(["enrol", "--to", &format!("127.0.0.1:{host_port}")])
            .arg("--passphrase-file")
            .arg(passphrase)
            .arg("--state")
            .arg(&self.state)
            .output();
        match out {
            Ok(o) => {
                let text = String::from_utf8_lossy(if o.status.success() {
                    &o.stdout
                } else {
                    &o.stderr
                });
                let line = text.lines().last().unwrap_or("").trim().to_string();
                (o.status.success(), line)
            }
            Err(e) => (false, format!("cannot run {}: {e}", self.sender)),
        }
    }

    /// From the host through the forwarded port: a wrong passphrase is refused, then the
    /// deploy-time one enrols.
    fn enrol_checks(&self, host_port: u16) -> Vec<Outcome> {
        let Some(right) = &self.right else {
            return Vec::new();
        };
        let (wrong_ok, wrong_detail) = self.enrol(host_port, &self.wrong);
        let (right_ok, right_detail) = self.enrol(host_port, right);
        vec![
            Outcome {
                what: "enrolment with a wrong passphrase refused".into(),
                ok: !wrong_ok,
                detail: wrong_detail,
            },
            Outcome {
                what: "enrolment with the OVF passphrase accepted".into(),
                ok: right_ok,
                detail: right_detail,
            },
        ]
    }

    fn judge(&self, device: &str, report: &[String]) -> Vec<Outcome> {
        let line = |kind: &str| -> String {
            report
                .iter()
                .find_map(|l| l.strip_prefix(kind).map(|r| r.trim().to_string()))
                .unwrap_or_default()
        };
        let mut out = Vec::new();
        let c = &self.config;
        if let Some(IpConfig::Static {
            address,
            prefix,
            gateway,
        }) = &c.ip
        {
            let addr = line("ovf-addr");
            out.push(Outcome {
                what: format!("{device} {address}/{prefix} configured statically"),
                ok: addr.contains(&format!(" {address}/{prefix} "))
                    && !addr.contains("dynamic")
                    && line("ovf-iface") == format!("iface {device} inet static"),
                detail: format!("{addr} | {}", line("ovf-iface")),
            });
            let route = line("ovf-route");
            out.push(Outcome {
                what: format!("default route via {gateway}"),
                ok: route.starts_with(&format!("default via {gateway} dev {device}")),
                detail: route,
            });
            let resolv = line("ovf-resolv");
            let mut want: Vec<String> = Vec::new();
            if let Some(s) = c.dns_search.as_deref().filter(|s| !s.is_empty()) {
                want.push(format!("search {s}"));
            }
            want.extend(c.dns_servers.iter().map(|d| format!("nameserver {d}")));
            let want = want.join(" ");
            out.push(Outcome {
                what: "/etc/resolv.conf from the environment".into(),
                ok: resolv == want,
                detail: resolv,
            });
        }
        if let Some(p) = &c.agent_passphrase {
            use sha2::{Digest, Sha256};
            let want: String = Sha256::digest(format!("{p}\n").as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let mode = line("ovf-passmode");
            let hash = line("ovf-passhash");
            out.push(Outcome {
                what: format!(
                    "{} mode 600 holds the passphrase",
                    mt_agent::replication::net::auth::PASSPHRASE_PATH
                ),
                ok: mode == "600 root" && hash == want,
                detail: format!("mode {mode}, sha256 {}", &hash[..hash.len().min(16)]),
            });
        }
        let source = line("ovf-source");
        out.push(Outcome {
            what: "mt-agent status: from the OVF environment via iso".into(),
            ok: source.starts_with("configuration: OVF environment via iso"),
            detail: source,
        });
        let unit = line("ovf-unit");
        out.push(Outcome {
            what: "mt-agent-ovfenv.service ran".into(),
            ok: unit == "active",
            detail: unit,
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> Definition {
        Definition::load(&util::workspace_root().join(appliance::definition::DEFAULT_DEFINITION))
            .unwrap()
    }

    fn hw() -> VmHardware {
        raw_hardware(&def(), &["os.raw".into(), "r.raw".into()]).unwrap()
    }

    fn good_report() -> Vec<String> {
        let d = def();
        let mut r = vec![
            "mount / ext4 root".to_string(),
            "mount /var/crash ext4 crash".into(),
            "mount /home ext4 home".into(),
            "mount /mnt/retention ext4 retention".into(),
            "swap swap".into(),
            "agent active".into(),
            "system running".into(),
            "hostname mt-appliance mt-appliance.localdomain".into(),
            "addr 10.0.2.15/24".into(),
            "service multipathd active".into(),
            "hostkeys 3".into(),
            format!("machineid {}", "a".repeat(32)),
            "failed-units".into(),
            "ordering-cycles 0".into(),
        ];
        for p in &d.packages {
            r.push(format!("tool {0} /usr/bin/{0}", probe_command(*p)));
        }
        for unit in [0, 1] {
            let (_, wwn) = qemu::disk_identity(&d.appliance.name, unit);
            r.push(format!("byid scsi-3{wwn:016x}"));
        }
        r.extend(
            [
                "service kdump-tools active",
                "nft-service active",
                "nft table inet filter {",
                "nft chain input {",
                "nft type filter hook input priority filter; policy drop;",
                "nft ct state established,related accept",
                "nft udp sport 67 udp dport 68 accept",
                "nft tcp dport { 22, 9443 } accept",
                "nft }",
                "nft }",
                "cmdline BOOT_IMAGE=/boot/vmlinuz root=LABEL=root ro console=ttyS0,115200n8 crashkernel=384M-2G:128M,2G-:256M",
                "kexec-crash 1 268435456",
            ]
            .map(String::from),
        );
        r.extend(first_boot_retention(UUID));
        r
    }

    const UUID: &str = "0b7f3c1e-5d2a-4c8e-9f10-2a3b4c5d6e7f";

    fn first_boot_retention(uuid: &str) -> Vec<String> {
        vec![
            format!("ret-disk {uuid}"),
            format!("ret-mount {uuid} /dev/sdb"),
            format!("ret-fstab UUID={uuid}"),
            format!("ret-formatted UUID={uuid} "),
            "ret-adopted".into(),
        ]
    }

    fn after_reboot(uuid: &str) -> Vec<String> {
        vec![
            format!("ret-disk {uuid}"),
            format!("ret-mount {uuid} /dev/sdb"),
            format!("ret-fstab UUID={uuid}"),
            "ret-formatted".into(),
            format!("ret-adopted UUID={uuid} "),
            format!("ret-marker boot-test {uuid}"),
            "kexec-crash 1 268435456".into(),
        ]
    }

    fn failures(outcomes: Vec<Outcome>) -> Vec<String> {
        outcomes
            .into_iter()
            .filter(|o| !o.ok)
            .map(|o| o.what)
            .collect()
    }

    #[test]
    fn a_firewall_that_accepts_by_default_or_closes_a_port_fails() {
        let d = def();
        let judge = |edit: &dyn Fn(&str) -> String| {
            let r: Vec<String> = good_report().iter().map(|l| edit(l)).collect();
            failures(judge_firewall(&d, &r))
        };
        assert_eq!(judge(&|l| l.to_string()), Vec::<String>::new());
        assert_eq!(
            judge(&|l| l.replace("policy drop", "policy accept")),
            ["firewall input policy drop"]
        );
        assert_eq!(
            judge(&|l| l.replace("{ 22, 9443 }", "9443")),
            ["firewall accepts TCP 22 and 9443"]
        );
        assert_eq!(
            judge(&|l| l.replace("{ 22, 9443 } accept", "{ 22, 9443 } drop")),
            ["firewall accepts TCP 22 and 9443"]
        );
        assert_eq!(
            judge(&|l| l.replace("nft-service active", "nft-service failed")),
            ["nftables.service active"]
        );
    }

    #[test]
    fn crash_kernel_checks_need_the_parameter_and_a_loaded_capture_kernel() {
        let d = def();
        let good = good_report();
        assert_eq!(
            failures(judge_crash_kernel(&d, &good, "")),
            Vec::<String>::new()
        );
        let edited = |from: &str, to: &str| -> Vec<String> {
            good.iter().map(|l| l.replace(from, to)).collect()
        };
        assert_eq!(
            failures(judge_crash_kernel(
                &d,
                &edited(" crashkernel=384M-2G:128M,2G-:256M", ""),
                ""
            )),
            ["/proc/cmdline has crashkernel=384M-2G:128M,2G-:256M"]
        );
        assert_eq!(
            failures(judge_crash_kernel(
                &d,
                &edited("kexec-crash 1 ", "kexec-crash 0 "),
                ""
            )),
            ["capture kernel loaded (kexec_crash_loaded = 1)"]
        );
        assert_eq!(
            failures(judge_crash_kernel(
                &d,
                &edited("kexec-crash 1 268435456", "kexec-crash 1 0"),
                ""
            )),
            ["capture kernel loaded (kexec_crash_loaded = 1)"]
        );
        // Without kdump in the definition nothing is reserved, so nothing is expected.
        let mut no_kdump = def();
        no_kdump
            .packages
            .retain(|p| *p != LogicalPackage::KexecTools);
        assert!(judge_crash_kernel(&no_kdump, &[], "").is_empty());
    }

    #[test]
    fn the_retention_volume_must_be_formatted_once_and_adopted_after_the_reboot() {
        let d = def();
        let first = RetentionView::parse(&first_boot_retention(UUID));
        assert_eq!(failures(first.judge_first_boot(&d)), Vec::<String>::new());
        let marker = format!("boot-test {UUID}");
        let again = RetentionView::parse(&after_reboot(UUID));
        assert_eq!(
            failures(again.judge_after_reboot(&d, &first, &marker, "after a reboot: ")),
            Vec::<String>::new()
        );

        // The build's label line instead of first boot's UUID line.
        let mut r = first_boot_retention(UUID);
        r[2] = "ret-fstab LABEL=retention".into();
        assert_eq!(
            failures(RetentionView::parse(&r).judge_first_boot(&d)),
            ["/mnt/retention is that file system, by UUID in fstab"]
        );
        // First boot adopted a volume the image brought instead of formatting a blank disk.
        let mut r = first_boot_retention(UUID);
        r[3] = "ret-formatted".into();
        r[4] = format!("ret-adopted UUID={UUID}");
        assert_eq!(
            failures(RetentionView::parse(&r).judge_first_boot(&d)),
            ["first boot formatted the retention disk once"]
        );
        // Formatted again at the second boot: a new UUID, the marker gone.
        let other = "11111111-2222-4333-8444-555555555555";
        let mut r = after_reboot(other);
        r[3] = format!("ret-formatted UUID={other}");
        r[4] = "ret-adopted".into();
        r[5] =
            "ret-marker cat: /mnt/retention/mt-boot-test-marker: No such file or directory".into();
        assert_eq!(
            failures(RetentionView::parse(&r).judge_after_reboot(&d, &first, &marker, "after a reboot: ")),
            [
                "after a reboot: /mnt/retention still mounted from UUID 0b7f3c1e-5d2a-4c8e-9f10-2a3b4c5d6e7f",
                "after a reboot: first boot adopted it, formatted nothing",
                "after a reboot: mt-boot-test-marker written before it is there",
            ]
        );
        // Nothing mounted at all is not a pass either.
        let empty = RetentionView::parse(&[]);
        assert_eq!(failures(empty.judge_first_boot(&d)).len(), 2);
    }

    #[test]
    fn the_plain_test_restarts_through_a_kernel_crash_and_finds_the_dump() {
        let d = def();
        assert_eq!(Restart::for_test(&d, false), Restart::KernelCrash);
        assert_eq!(Restart::for_test(&d, true), Restart::Clean);
        let mut no_kdump = def();
        no_kdump
            .packages
            .retain(|p| *p != LogicalPackage::KexecTools);
        assert_eq!(Restart::for_test(&no_kdump, false), Restart::Clean);
        assert!(reboot_script(&d, Restart::KernelCrash, false)
            .contains("grep -l 'sysrq triggered crash' /var/crash/*/dmesg.*"));
        assert!(!reboot_script(&d, Restart::Clean, false).contains("crash-saved"));
        let judged = |line: &str| judge_crash_dump(&[line.to_string()]).ok;
        assert!(judged("crash-saved 1 1"));
        assert!(!judged("crash-saved 0 0"), "no dump");
        assert!(!judged("crash-saved 1 0"), "a dump of another panic");
        assert!(!judged("crash-saved 2 2"), "a dump the image brought");
        assert!(!judge_crash_dump(&[]).ok);
    }

    #[test]
    fn the_guest_scripts_ask_the_retention_disk_by_its_wwn_and_the_firstboot_journal() {
        let d = def();
        let (_, wwn) = qemu::disk_identity(&d.appliance.name, d.retention_disk.scsi_unit);
        let script = guest_script(&d, false);
        assert!(script.contains(&format!(
            "blkid -p -o value -s UUID /dev/disk/by-id/scsi-3{wwn:016x}"
        )));
        assert!(script.contains("journalctl -b -o cat -u mt-agent-firstboot.service | grep 'formatted the retention disk'"));
        assert!(script.contains("nft list chain inet filter input"));
        assert!(script.contains("cat /sys/kernel/kexec_crash_loaded"));
        assert!(script.ends_with("echo MTCHK-''END\n"));
    }

    /// The scripts are typed into the guest's bash as one line each: bash must parse them.
    #[test]
    fn the_guest_scripts_are_valid_shell() {
        let d = def();
        for (name, script) in [
            ("first boot", guest_script(&d, false)),
            ("first boot, ovf", guest_script(&d, true)),
            ("after the reboot", reboot_script(&d, Restart::Clean, false)),
            (
                "after the crash",
                reboot_script(&d, Restart::KernelCrash, false),
            ),
            (
                "after the reboot, ovf",
                reboot_script(&d, Restart::Clean, true),
            ),
        ] {
            assert_eq!(script.lines().count(), 1, "{name}");
            let out = std::process::Command::new("bash")
                .args(["-n", "-c", &script])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name}: {}\n{script}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn the_ovf_of_a_definition_maps_to_its_qemu_hardware() {
        use appliance::ovf::{render, BuildInfo, DiskFile, DiskRole};
        let mut d = def();
        d.hardware.scsi_controller = ScsiController::LsilogicSas;
        d.hardware.nic = NicKind::E1000;
        let files: Vec<DiskFile> = DiskRole::ALL
            .iter()
            .map(|&role| DiskFile {
                role,
                file_size: 1 << 20,
                capacity: role.capacity(&d),
                populated_size: 1 << 20,
            })
            .collect();
        let xml = render(
            &d,
            &files,
            &BuildInfo {
                build_id: "test".into(),
            },
        )
        .unwrap();
        let ovf = OvfDescriptor::parse(&xml).unwrap();
        let names: Vec<String> = DiskRole::ALL.iter().map(|r| r.file_name(&d)).collect();
        let work = Utf8Path::new("/nonexistent");
        let hw = hardware_from_ovf(&ovf, work, &names).unwrap();
        assert_eq!(qemu::scsi_device(hw.scsi), "mptsas1068");
        assert_eq!(qemu::nic_device(hw.nic), "e1000");
        assert_eq!(
            (hw.cpus, hw.memory_mib),
            (d.hardware.vcpus, d.hardware.memory.mib())
        );
        let units: Vec<u32> = hw.disks.iter().map(|x| x.unit).collect();
        assert_eq!(units, vec![OS_DISK_SCSI_UNIT, d.retention_disk.scsi_unit]);
        assert_eq!(hw.disks[0].image, work.join(&names[0]));
        let err = hardware_from_ovf(&ovf, work, &names[..1])
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not contain"), "{err}");
    }

    #[test]
    fn a_complete_report_passes_every_check() {
        let outcomes = judge_report(&def(), &hw(), &good_report(), None);
        let failed: Vec<_> = outcomes.iter().filter(|o| !o.ok).map(|o| &o.what).collect();
        assert!(failed.is_empty(), "{failed:?}");
    }

    #[test]
    fn a_missing_mount_tool_link_or_inactive_agent_fails() {
        for (drop, expect) in [
            ("service kdump-tools", "kdump-tools service active"),
            ("ordering-cycles", "no ordering cycle"),
            ("kexec-crash", "capture kernel loaded"),
            ("ret-fstab", "by UUID in fstab"),
            ("mount /home", "/home mounted"),
            ("tool reiserfsck", "tool reiserfsck"),
            ("byid", "/dev/disk/by-id/"),
            ("agent", "mt-agent.service active"),
            ("swap", "swap LABEL=swap active"),
        ] {
            let report: Vec<String> = good_report()
                .into_iter()
                .filter(|l| !l.starts_with(drop))
                .collect();
            let failed: Vec<String> = judge_report(&def(), &hw(), &report, None)
                .into_iter()
                .filter(|o| !o.ok)
                .map(|o| o.what)
                .collect();
            assert!(
                failed.iter().any(|f| f.contains(expect)),
                "dropping {drop:?}: {failed:?}"
            );
        }
    }

    fn ovf_test() -> OvfEnvTest {
        let env = mt_agent::guest::ovfenv::parse(&test_environment()).unwrap();
        OvfEnvTest {
            iso: "ovf-env.iso".into(),
            config: env.config,
            right: Some("right".into()),
            wrong: "wrong".into(),
            sender: "mt-agent".into(),
            state: "state".into(),
        }
    }

    fn ovf_report(passphrase: &str) -> Vec<String> {
        use sha2::{Digest, Sha256};
        let hash: String = Sha256::digest(format!("{passphrase}\n").as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        vec![
            "ovf-addr eth0    inet 10.0.2.15/24 brd 10.0.2.255 scope global eth0\\       valid_lft forever preferred_lft forever".into(),
            "ovf-iface iface eth0 inet static".into(),
            "ovf-route default via 10.0.2.2 dev eth0 onlink".into(),
            "ovf-resolv search drill.test nameserver 10.0.2.3 ".into(),
            "ovf-passmode 600 root".into(),
            format!("ovf-passhash {hash}"),
            "ovf-source configuration: OVF environment via iso (CD-ROM /dev/sr0) (blake3 0123456789abcdef)".into(),
            "ovf-unit active".into(),
        ]
    }

    #[test]
    fn the_test_environment_is_valid_and_escapes_its_passphrase() {
        let xml = test_environment();
        assert!(
            xml.contains("fail&amp;back &lt;drill&gt; &quot;7&quot;"),
            "{xml}"
        );
        let o = ovf_test();
        assert_eq!(
            o.config.agent_passphrase.as_deref(),
            Some("fail&back <drill> \"7\"")
        );
        assert_eq!(o.config.hostname.as_deref(), Some("mt-ovf.drill.test"));
    }

    #[test]
    fn the_ovf_checks_pass_only_when_the_environment_took_effect() {
        let o = ovf_test();
        let pass = o.config.agent_passphrase.clone().unwrap();
        let failed = |r: &[String]| -> Vec<String> {
            o.judge("eth0", r)
                .into_iter()
                .filter(|x| !x.ok)
                .map(|x| x.what)
                .collect()
        };
        assert_eq!(failed(&ovf_report(&pass)), Vec::<String>::new());
        // A DHCP lease gives QEMU's user network the same address: the flag tells them apart.
        let mut dhcp = ovf_report(&pass);
        dhcp[0] = dhcp[0].replace("scope global eth0", "scope global dynamic eth0");
        dhcp[1] = "ovf-iface iface eth0 inet dhcp".into();
        assert!(failed(&dhcp)[0].contains("configured statically"));
        assert!(failed(&ovf_report("changeme"))[0].contains("holds the passphrase"));
        let mut defaults = ovf_report(&pass);
        defaults[6] =
            "ovf-source configuration: build-time defaults (no OVF environment applied)".into();
        assert!(failed(&defaults)[0].contains("mt-agent status"));
    }

    #[test]
    fn the_transport_cd_carries_ovf_env_xml() {
        let dir = util::workspace_root().join("target/tmp-ovf-iso-test");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root")).unwrap();
        std::fs::write(dir.join("root/ovf-env.xml"), test_environment()).unwrap();
        let sh = Shell::new().unwrap();
        make_iso(&sh, &dir.join("root"), &dir.join("e.iso")).unwrap();
        let iso = std::fs::read(dir.join("e.iso")).unwrap();
        // The primary volume descriptor at sector 16: type 1, "CD001", the volume label.
        assert_eq!(&iso[0x8000..0x8006], b"\x01CD001");
        assert!(iso[0x8028..0x8048].starts_with(b"OVF_ENV"));
        let listing = cmd!(sh, "xorriso -indev {dir}/e.iso -find / -name ovf-env.xml")
            .quiet()
            .ignore_stderr()
            .read()
            .unwrap();
        assert!(listing.contains("ovf-env.xml"), "{listing}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
