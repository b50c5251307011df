//! Kernel settings the agent needs, as a drop-in (`/etc/sysctl.d/` is read at boot by both
//! el6's rc.sysinit and systemd-sysctl), each with the reason next to it in the file.

use super::Change;

pub const PATH: &str = "/etc/sysctl.d/90-mt-agent.conf";

pub const CONTENTS: &str = "\
# Settings the master target's replication agent needs (mt-agent setup).

# An agent crash leaves a core file on the crash partition, where support collects it with
# the kernel's dumps, instead of in the agent's working directory or a helper.
kernel.core_pattern = /var/crash/core.%e.%p.%t

# The agent writes whole disks' worth of replicated data to target disks and syncs each batch
# before acknowledging it; a smaller dirty page cache keeps one fsync from flushing gigabytes
# at once, so acknowledgement latency (and the source's RPO) stays steady.
vm.dirty_background_ratio = 5
vm.dirty_ratio = 10

# A replication connection whose source site vanished is noticed within minutes (not the
# default two hours), so the group is shown as disconnected and the RPO alert fires.
net.ipv4.tcp_keepalive_time = 300
net.ipv4.tcp_keepalive_intvl = 30
net.ipv4.tcp_keepalive_probes = 5
";

pub fn change() -> Change {
    Change::File {
        path: PATH.into(),
        contents: CONTENTS.as_bytes().to_vec(),
        mode: 0o644,
    }
}
