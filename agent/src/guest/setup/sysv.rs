//! SysV init on el6: the agent's init scripts (chkconfig and LSB headers) and enabling a
//! service the way `chkconfig --add` does, as `rc<N>.d` links computed from the script's
//! `# chkconfig: <levels> <start> <stop>` header. `chkconfig` itself cannot run in a build
//! root that is not the running system, and the links are all it would make.

use super::{Change, Root, AGENT_NOFILE};

pub const INIT_DIR: &str = "/etc/rc.d/init.d";
/// Where the agent's init script sends `serve`'s output (el6 has no journal); rotated by
/// [`logrotate`]'s drop-in.
pub const AGENT_LOG: &str = "/var/log/mt-agent.log";
/// The drop-in that rotates [`AGENT_LOG`].
pub const LOGROTATE_DROPIN: &str = "/etc/logrotate.d/mt-agent";

/// `S<start><name>` in the listed runlevels, `K<stop><name>` in the others (0-6).
pub fn enable(name: &str, header: &ChkconfigHeader) -> Vec<Change> {
    (0..=6u8)
        .map(|level| {
            let on = header.levels.contains(&level);
            let link = if on {
                format!("S{:02}{name}", header.start)
            } else {
                format!("K{:02}{name}", header.stop)
            };
            Change::Symlink {
                path: format!("/etc/rc.d/rc{level}.d/{link}"),
                target: format!("../init.d/{name}"),
            }
        })
        .collect()
}

/// The `# chkconfig:` line of an init script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChkconfigHeader {
    pub levels: Vec<u8>,
    pub start: u8,
    pub stop: u8,
}

impl ChkconfigHeader {
    pub fn parse(script: &str) -> Option<ChkconfigHeader> {
        let line = script
            .lines()
            .find_map(|l| l.trim_start_matches('#').trim().strip_prefix("chkconfig:"))?;
        let mut w = line.split_whitespace();
        let levels = w.next()?;
        let levels = if levels == "-" {
            Vec::new()
        } else {
            levels
                .chars()
                .map(|c| c.to_digit(10).map(|d| d as u8))
                .collect::<Option<Vec<u8>>>()?
        };
        Some(ChkconfigHeader {
            levels,
            start: w.next()?.parse().ok()?,
            stop: w.next()?.parse().ok()?,
        })
    }
}

/// Enables an init script the distribution installed (kdump, multipathd, iptables), with the
/// runlevels from its own header; `None` when the package is not in the root. A header that
/// lists no runlevels (`chkconfig: - 13 87`) means "off by default": it is switched on in
/// 2345, as `chkconfig NAME on` does.
pub fn enable_installed(root: &Root, name: &str) -> Option<Vec<Change>> {
    let script = root.read_text(&format!("{INIT_DIR}/{name}"))?;
    let mut h = ChkconfigHeader::parse(&script)?;
    if h.levels.is_empty() {
        h.levels = vec![2, 3, 4, 5];
    }
    Some(enable(name, &h))
}

/// The agent's service: started after the network and the retention mount (`netfs` mounts
/// nothing we need; local file systems are mounted by rc.sysinit before any of this), with
/// core dumps allowed. It runs `serve` in the background and keeps its pid.
pub fn agent_script(config: &str, binary: &str) -> String {
    let log = AGENT_LOG;
    format!(
        r#"#!/bin/sh
#
# mt-agent	The master target's replication agent.
#
# chkconfig: 2345 90 10
# description: Receives replicated writes, keeps recovery points on the \
#              retention volume (/mnt/retention) and recovers them.
### BEGIN INIT INFO
# Provides: mt-agent
# Required-Start: $local_fs $network $remote_fs mt-agent-firstboot
# Required-Stop: $local_fs $network
# Default-Start: 2 3 4 5
# Default-Stop: 0 1 6
# Short-Description: the master target's replication agent
### END INIT INFO

. /etc/rc.d/init.d/functions

prog=mt-agent
exec={binary}
config={config}
pidfile=/var/run/mt-agent.pid
lockfile=/var/lock/subsys/mt-agent
log={log}

start() {{
    [ -x "$exec" ] || exit 5
    [ -f "$config" ] || exit 6
    echo -n $"Starting $prog: "
    # Core dumps of the agent are kept (kernel.core_pattern points at /var/crash).
    ulimit -c unlimited
    # One descriptor per connection: the default 1024 is what a flood of idle connections
    # used up (serve also caps unauthenticated handshakes).
    ulimit -n {AGENT_NOFILE}
    "$exec" serve --config "$config" </dev/null >>"$log" 2>&1 &
    echo $! >"$pidfile"
    sleep 1
    if kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        touch "$lockfile"; success; echo; return 0
    fi
    # The refusal (retention volume, disk identity) is on the console, not only in the log.
    tail -n 5 "$log" >/dev/console 2>/dev/null
    rm -f "$pidfile"; failure; echo; return 1
}}

stop() {{
    echo -n $"Stopping $prog: "
    killproc -p "$pidfile" "$prog"
    retval=$?
    echo
    [ $retval -eq 0 ] && rm -f "$lockfile"
    return $retval
}}

case "$1" in
    start) status -p "$pidfile" "$prog" >/dev/null 2>&1 && exit 0; start ;;
    stop) stop ;;
    restart) stop; start ;;
    status) status -p "$pidfile" "$prog" ;;
    condrestart|try-restart) [ -f "$lockfile" ] && {{ stop; start; }} ;;
    *) echo $"Usage: $0 {{start|stop|status|restart|condrestart|try-restart}}"; exit 2 ;;
esac
exit $?
"#
    )
}

/// Rotates the agent's log: by size, since what fills it is traffic, not time (logrotate runs
/// daily from cron). `copytruncate` because the init script's shell holds the file open for
/// `serve`'s stdout and stderr and nothing reopens it; `serve` writes it with O_APPEND (`>>`),
/// so writes after the truncation start at the beginning again, and at most the lines written
/// during the copy are lost. Four rotations of 50 MiB, compressed, are a few weeks of sessions.
pub fn logrotate() -> String {
    format!(
        "{AGENT_LOG} {{
    size 50M
    rotate 4
    compress
    copytruncate
    missingok
    notifempty
}}
"
    )
}

/// First boot, before the network (S10), multipathd (S13) and sshd (S55) start, so the
/// multipath blacklist, host keys and network files are in place when they read them.
pub fn firstboot_script(config: &str, binary: &str) -> String {
    format!(
        r#"#!/bin/sh
#
# mt-agent-firstboot	Adapts this copy of the appliance to its VM (disks, host keys).
#
# chkconfig: 2345 09 91
# description: Blacklists the OS disk for multipath, formats (if blank) and mounts the \
#              retention disk, creates SSH host keys. Each step is safe to repeat.
### BEGIN INIT INFO
# Provides: mt-agent-firstboot
# Required-Start: $local_fs
# Required-Stop:
# X-Start-Before: $network multipathd sshd mt-agent
# Default-Start: 2 3 4 5
# Default-Stop: 0 1 6
# Short-Description: first boot of a deployed master target
### END INIT INFO

case "$1" in
    start)
        {binary} firstboot --config {config} 2>&1 | tee -a /var/log/mt-agent-firstboot.log >/dev/console
        exit ${{PIPESTATUS[0]}}
        ;;
    stop|status) exit 0 ;;
    *) echo "Usage: $0 start"; exit 2 ;;
esac
"#
    )
}

/// The OVF environment, applied at every boot before the network (S10) reads `ifcfg-eth0`:
/// S09 like first boot, and after it (rc runs links of one number in name order). It always
/// exits 0: no environment changes nothing, and an invalid one is reported on the console
/// while the previous configuration stays; the boot goes on either way.
pub fn ovfenv_script(binary: &str) -> String {
    format!(
        r#"#!/bin/sh
#
# mt-agent-ovfenv	Applies the OVF environment (deploy-time properties).
#
# chkconfig: 2345 09 91
# description: Reads ovf-env.xml (VMware tools or the iso transport) and writes the host \
#              name, network, resolver, NTP, SSH key and agent passphrase it gives.
### BEGIN INIT INFO
# Provides: mt-agent-ovfenv
# Required-Start: $local_fs mt-agent-firstboot
# Required-Stop:
# X-Start-Before: $network sshd mt-agent
# Default-Start: 2 3 4 5
# Default-Stop: 0 1 6
# Short-Description: apply the OVF environment of a deployed master target
### END INIT INFO

case "$1" in
    start)
        {binary} ovfenv apply --root / --distro el6 2>&1 | tee -a /var/log/mt-agent-ovfenv.log >/dev/console
        exit 0
        ;;
    stop|status) exit 0 ;;
    *) echo "Usage: $0 start"; exit 2 ;;
esac
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_and_enable_like_chkconfig() {
        let h = ChkconfigHeader::parse(&agent_script("/c", "/b")).unwrap();
        assert_eq!(
            h,
            ChkconfigHeader {
                levels: vec![2, 3, 4, 5],
                start: 90,
                stop: 10
            }
        );
        let links = enable("mt-agent", &h);
        assert!(links.contains(&Change::Symlink {
            path: "/etc/rc.d/rc3.d/S90mt-agent".into(),
            target: "../init.d/mt-agent".into()
        }));
        assert!(links.contains(&Change::Symlink {
            path: "/etc/rc.d/rc0.d/K10mt-agent".into(),
            target: "../init.d/mt-agent".into()
        }));
        let off = ChkconfigHeader::parse("#!/bin/sh\n# chkconfig: - 13 87\n").unwrap();
        assert!(off.levels.is_empty() && off.start == 13);
        assert_eq!(ChkconfigHeader::parse("#!/bin/sh\n"), None);
    }

    #[test]
    fn the_init_scripts_parse() {
        testkit::require_tool("bash");
        for script in [
            agent_script("/etc/mt-agent/agent.toml", "/usr/sbin/mt-agent"),
            firstboot_script("/etc/mt-agent/agent.toml", "/usr/sbin/mt-agent"),
            ovfenv_script("/usr/sbin/mt-agent"),
        ] {
            let out = std::process::Command::new("bash")
                .args(["-n", "-c", &script])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}\n{script}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
