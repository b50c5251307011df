//! What the guest is asked after its first boot: one line of shell typed on the console whose
//! answers are `MTCHK <kind> ...` lines (mounts, swap, tools, disk links, services, host keys,
//! names and address, the firewall as loaded, the crash kernel, the retention volume, and with
//! `--ovf-env` what the environment set). Read-only in the guest but for the runbook tools' uses,
//! which write only in `/run`; `judge` reads the answers.

use crate::qemu;
use appliance::definition::LogicalPackage;
use appliance::Definition;
use mt_agent::guest::ovfenv::DeployConfig;

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

/// A short use of a runbook package that succeeds only if the tool and the kernel support it
/// needs work: a file system made on a loop file in `/run` (memory) and mounted, a copy, a
/// listing of the disks. With the image's kernel modules pruned, this is what proves xfs,
/// reiserfs, loop and device-mapper multipath are still there. Nothing outside `/run` is written.
pub fn use_command(p: LogicalPackage) -> &'static str {
    match p {
        LogicalPackage::Xfsprogs => {
            "f=/run/mt-use.xfs; d=/run/mt-use-xfs; truncate -s 320M $f && mkfs.xfs -q $f && mkdir -p $d && mount -o loop -t xfs $f $d && umount $d; r=$?; rm -rf $f $d; exit $r"
        }
        LogicalPackage::Reiserfs => {
            "f=/run/mt-use.reiserfs; d=/run/mt-use-reiserfs; truncate -s 64M $f && mkreiserfs -q -f $f && mkdir -p $d && mount -o loop -t reiserfs $f $d && umount $d; r=$?; rm -rf $f $d; exit $r"
        }
        LogicalPackage::Perl => "test \"$(perl -e 'print 6*7')\" = 42",
        LogicalPackage::Lsscsi => "lsscsi | grep -q disk",
        LogicalPackage::Rsync => {
            "rsync -a /etc/os-release /run/mt-use.rsync && cmp /etc/os-release /run/mt-use.rsync; r=$?; rm -f /run/mt-use.rsync; exit $r"
        }
        LogicalPackage::Wget => "wget --version",
        LogicalPackage::KexecTools => "kexec --version",
        LogicalPackage::Multipath => "modprobe dm_multipath && multipath -ll",
    }
}

/// The services the definition's packages bring (the package manifest's `services`).
pub(super) fn package_services(def: &Definition) -> Vec<String> {
    appliance::packages::PackageManifest::shipped(def.appliance.base).services_for(def)
}

/// Read-only commands run in the guest; each result line starts with `MTCHK `. With `ovf`, the
/// deploy-time configuration the test's OVF environment carries, also what it set.
pub(super) fn guest_script(def: &Definition, ovf: Option<&DeployConfig>) -> String {
    let tools: Vec<&str> = def.packages.iter().map(|p| probe_command(*p)).collect();
    let services = package_services(def).join(" ");
    format!(
        "echo \"MTCHK system $(timeout 900 systemctl is-system-running --wait)\"; \
echo MTCHK-''BEGIN; \
findmnt -rn -o TARGET,FSTYPE,LABEL | sed 's/^/MTCHK mount /'; \
for d in $(swapon --noheadings --raw --show=NAME); do echo \"MTCHK swap $(blkid -o value -s LABEL $d)\"; done; \
for t in {tools}; do p=$(command -v $t) && echo \"MTCHK tool $t $p\" || echo \"MTCHK tool $t MISSING\"; done; \
{uses}\
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
        uses = use_lines(def),
        device = def.network.device,
        firewall = firewall_guest_lines(),
        crash = crash_guest_lines(),
        retention = retention_guest_lines(def),
        ovf_lines = ovf.map(|c| ovf_guest_lines(&def.network.device, c)).unwrap_or_default(),
    )
}

/// Each package's `use_command` in a subshell: `MTCHK use <package> ok`, or `failed <status>`.
fn use_lines(def: &Definition) -> String {
    def.packages
        .iter()
        .map(|p| {
            format!(
                "(exec > /dev/null 2>&1; {cmd}) && echo \"MTCHK use {name} ok\" || echo \"MTCHK use {name} failed $?\"; ",
                cmd = use_command(*p),
                name = p.as_str()
            )
        })
        .collect()
}

/// The firewall as the kernel has it (not the file): nftables.service and the input chain.
fn firewall_guest_lines() -> String {
    format!(
        "echo \"MTCHK nft-service $(systemctl is-active {service})\"; \
nft list chain inet filter input 2>&1 | sed 's/^/MTCHK nft /'; ",
        service = mt_contract::guest::FIREWALL_SERVICE
    )
}

/// The kernel command line, whether kdump-tools loaded the capture kernel into the reserved
/// memory (and how much is reserved), and how often it had to build the capture kernel's
/// initramfs this boot (the image brings it: never).
pub(super) fn crash_guest_lines() -> String {
    format!(
        "echo \"MTCHK cmdline $(cat /proc/cmdline)\"; \
echo \"MTCHK kexec-crash $(cat /sys/kernel/kexec_crash_loaded) $(cat /sys/kernel/kexec_crash_size)\"; \
echo \"MTCHK kdump-initrd-built $(journalctl -b -o cat -u kdump-tools.service | grep -c 'Generating {dir}/initrd.img')\"; ",
        dir = mt_contract::guest::KDUMP_TOOLS_DIR
    )
}

/// The retention volume: the UUID of the file system on the retention disk (by its WWN link),
/// what is mounted at the mount point, its fstab line, and what first boot logged this boot.
pub(super) fn retention_guest_lines(def: &Definition) -> String {
    let (_, wwn) = qemu::disk_identity(&def.appliance.name, def.retention_disk.scsi_unit);
    format!(
        "echo \"MTCHK ret-disk $(blkid -p -o value -s UUID /dev/disk/by-id/scsi-3{wwn:016x})\"; \
echo \"MTCHK ret-mount $(findmnt -n -o UUID,SOURCE {mount})\"; \
echo \"MTCHK ret-fstab $(awk '$2 == \"{mount}\" && $1 !~ /^#/ {{print $1}}' /etc/fstab)\"; \
echo \"MTCHK ret-formatted $(journalctl -b -o cat -u {unit} | grep 'formatted the retention disk' | grep -o 'UUID=[0-9a-f-]*' | tr '\\n' ' ')\"; \
echo \"MTCHK ret-adopted $(journalctl -b -o cat -u {unit} | grep 'adopted, not formatted' | grep -o 'UUID=[0-9a-f-]*' | tr '\\n' ' ')\"; ",
        mount = def.retention_disk.mount,
        unit = mt_contract::guest::FIRSTBOOT_SERVICE,
    )
}

/// The guest's view of what the OVF environment sets; the passphrase only as its SHA-256, the
/// NTP server as timesyncd's merged configuration has it (the last `NTP=` of the main file and
/// its drop-ins, as systemd reads them; `timedatectl` would need D-Bus, which the image does not
/// carry) and whether timesyncd runs, root's key as the number of `authorized_keys` lines that
/// hold it.
fn ovf_guest_lines(device: &str, c: &DeployConfig) -> String {
    let key = c
        .root_ssh_key
        .as_deref()
        .map(super::ovf_env::key_body)
        .unwrap_or("");
    // A key body is base64 ([A-Za-z0-9+/=]): safe inside single quotes.
    let key_check = if key.is_empty() {
        String::new()
    } else {
        format!("echo \"MTCHK ovf-sshkey $(grep -c -F '{key}' /root/.ssh/authorized_keys)\"; ")
    };
    format!(
        "echo \"MTCHK ovf-addr $(ip -4 -o addr show dev {device} | sed 's/^[0-9]*: //')\"; \
echo \"MTCHK ovf-iface $(grep '^iface {device} ' /etc/network/interfaces)\"; \
echo \"MTCHK ovf-route $(ip -4 route show default | head -n 1)\"; \
echo \"MTCHK ovf-resolv $(grep -E '^(nameserver|search) ' /etc/resolv.conf | tr '\\n' ' ')\"; \
echo \"MTCHK ovf-passmode $(stat -c '%a %U' {pass})\"; \
echo \"MTCHK ovf-passhash $(sha256sum < {pass} | cut -d' ' -f1)\"; \
echo \"MTCHK ovf-source $(mt-agent status 2>&1 | grep '^configuration:')\"; \
echo \"MTCHK ovf-unit $(systemctl is-active mt-agent-ovfenv.service)\"; \
echo \"MTCHK ovf-ntp $(systemctl is-active systemd-timesyncd) $(systemd-analyze cat-config systemd/timesyncd.conf 2>&1 | sed -n 's/^NTP=//p' | tail -n 1)\"; \
{key_check}",
        pass = mt_contract::guest::PASSPHRASE_PATH,
    )
}
