//! Setup on temporary roots shaped like el6 and Debian 12: everything written, a second run
//! byte-identical, the dry run's diff, wrong roots refused, an upgrade dropping what it no
//! longer manages.

use super::*;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

fn cfg() -> AgentConfig {
    AgentConfig {
        port: 9443,
        retention_mount: "/mnt/retention".into(),
        rpo_threshold_minutes: 15,
        retention_hours: 24,
        app_consistent_frequency_minutes: 60,
        retention_disk: Some(crate::config::RetentionDiskConfig {
            scsi_unit: 1,
            fs: "ext4".into(),
            label: "retention".into(),
        }),
    }
}

pub(crate) fn scratch(name: &str) -> Utf8PathBuf {
    testkit::scratch(&format!("setup-{name}"))
}

fn put(root: &Utf8Path, path: &str, text: &str) {
    let p = inside(root, path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

pub(crate) fn debian_root(name: &str) -> Utf8PathBuf {
    let root = scratch(name);
    put(&root, "/etc/debian_version", "12.8\n");
    put(
        &root,
        "/etc/os-release",
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
    );
    put(&root, "/etc/machine-id", "0123456789abcdef\n");
    put(&root, "/etc/ssh/ssh_host_ed25519_key", "secret");
    put(&root, "/etc/ssh/sshd_config", "keep");
    put(&root, "/var/lib/dhcp/dhclient.eth0.leases", "lease");
    put(&root, "/var/lib/mt-agent/serve/server.key", "secret");
    put(
        &root,
        "/var/lib/mt-agent/disk-identity.toml",
        "os = \"x\"\n",
    );
    put(
        &root,
        "/etc/default/kdump-tools",
        "USE_KDUMP=0\n#KDUMP_COREDIR=\"/var/crash\"\n",
    );
    put(&root, "/usr/sbin/nft", "");
    root
}

/// The files an el6 %post sees (a CentOS 6.6 minimal install with kexec-tools and
/// device-mapper-multipath, init scripts with their real chkconfig headers).
pub(crate) fn el6_root(name: &str) -> Utf8PathBuf {
    let root = scratch(name);
    put(&root, "/etc/centos-release", "CentOS release 6.6 (Final)\n");
    put(&root, "/etc/redhat-release", "CentOS release 6.6 (Final)\n");
    put(&root, "/etc/ssh/ssh_host_rsa_key", "secret");
    put(&root, "/etc/ssh/ssh_host_rsa_key.pub", "public");
    put(
        &root,
        "/etc/udev/rules.d/70-persistent-net.rules",
        "SUBSYSTEM==\"net\", ATTR{address}==\"52:54:00:12:34:56\", NAME=\"eth0\"\n",
    );
    put(&root, "/etc/sysconfig/network-scripts/ifcfg-eth0", "DEVICE=eth0\nHWADDR=52:54:00:12:34:56\nTYPE=Ethernet\nUUID=6a1c6b2e-0f4c-4e0b-9d1e-2b3c4d5e6f70\nONBOOT=yes\nBOOTPROTO=dhcp\n");
    put(
        &root,
        "/etc/sysconfig/network-scripts/ifcfg-lo",
        "DEVICE=lo\nUUID=keep-me\n",
    );
    put(
        &root,
        "/etc/sysconfig/iptables",
        "# Firewall configuration written by system-config-firewall\n*filter\nCOMMIT\n",
    );
    put(&root, "/etc/kdump.conf", "#path /var/crash\n");
    put(
        &root,
        "/etc/rc.d/init.d/kdump",
        "#!/bin/sh\n# chkconfig: 2345 20 80\n",
    );
    put(
        &root,
        "/etc/rc.d/init.d/multipathd",
        "#!/bin/sh\n# chkconfig: - 13 87\n",
    );
    put(
        &root,
        "/etc/rc.d/init.d/iptables",
        "#!/bin/sh\n# chkconfig: 2345 08 92\n",
    );
    put(
        &root,
        "/etc/rc.d/init.d/ip6tables",
        "#!/bin/sh\n# chkconfig: 2345 08 92\n",
    );
    put(&root, "/var/lib/dbus/machine-id", "0123456789abcdef\n");
    put(&root, "/usr/sbin/logrotate", "");
    for l in 0..=6 {
        std::fs::create_dir_all(root.join(format!("etc/rc.d/rc{l}.d"))).unwrap();
    }
    root
}

/// Every entry under `root`: kind, mode and contents (or link target).
pub(crate) fn snapshot(root: &Utf8Path) -> BTreeMap<String, (String, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in d.read_dir_utf8().unwrap() {
            let e = e.unwrap();
            let p = e.path().to_owned();
            let m = p.symlink_metadata().unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string();
            let mode = m.permissions().mode() & 0o7777;
            if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(
                    rel,
                    ("link".into(), 0, t.to_string_lossy().as_bytes().to_vec()),
                );
            } else if m.is_dir() {
                out.insert(rel, ("dir".into(), mode, Vec::new()));
                stack.push(p);
            } else {
                out.insert(rel, ("file".into(), mode, std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn setup(root: &Utf8Path, distro: Distro) -> (Plan, Vec<String>) {
    check_root(root, distro).unwrap();
    let p = plan(root, distro, &cfg(), b"\x7fELF\0agent".to_vec()).unwrap();
    let done = apply(root, &p.changes).unwrap();
    (p, done)
}

fn text(root: &Utf8Path, p: &str) -> String {
    std::fs::read_to_string(inside(root, p)).unwrap()
}

#[test]
fn el6_setup_writes_the_runbook_changes_and_a_second_run_changes_nothing() {
    let root = el6_root("el6");
    let (p, first) = setup(&root, Distro::El6);
    assert!(!first.is_empty());
    assert!(
        !p.notes.iter().any(|n| n.contains("logrotate")),
        "{:?}",
        p.notes
    );
    let script = text(&root, "/etc/rc.d/init.d/mt-agent");
    assert!(script.contains("# chkconfig: 2345 90 10") && script.contains("### BEGIN INIT INFO"));
    assert!(script.contains("ulimit -c unlimited"));
    assert!(script.contains("\n    ulimit -n 65536\n"), "{script}");
    assert!(script.contains("\nlog=/var/log/mt-agent.log\n"), "{script}");
    // The log the script writes is rotated, by copy and truncation (nothing reopens it).
    let rotate = text(&root, "/etc/logrotate.d/mt-agent");
    assert!(rotate.starts_with("/var/log/mt-agent.log {\n"), "{rotate}");
    for line in [
        "size 50M",
        "rotate 4",
        "compress",
        "copytruncate",
        "missingok",
    ] {
        assert!(
            rotate.lines().any(|l| l.trim() == line),
            "{line} in {rotate}"
        );
    }
    let ovfenv = text(&root, "/etc/rc.d/init.d/mt-agent-ovfenv");
    assert!(ovfenv.contains("/usr/sbin/mt-agent ovfenv apply --root / --distro el6"));
    // Before the network (S10), after first boot (same number, earlier name): never failing.
    assert!(ovfenv.contains("# chkconfig: 2345 09 91") && ovfenv.contains("exit 0\n"));
    assert!("S09mt-agent-firstboot" < "S09mt-agent-ovfenv");
    for (link, target) in [
        ("/etc/rc.d/rc3.d/S90mt-agent", "../init.d/mt-agent"),
        ("/etc/rc.d/rc6.d/K10mt-agent", "../init.d/mt-agent"),
        (
            "/etc/rc.d/rc3.d/S09mt-agent-firstboot",
            "../init.d/mt-agent-firstboot",
        ),
        (
            "/etc/rc.d/rc3.d/S09mt-agent-ovfenv",
            "../init.d/mt-agent-ovfenv",
        ),
        (
            "/etc/rc.d/rc6.d/K91mt-agent-ovfenv",
            "../init.d/mt-agent-ovfenv",
        ),
        ("/etc/rc.d/rc3.d/S20kdump", "../init.d/kdump"),
        ("/etc/rc.d/rc3.d/S13multipathd", "../init.d/multipathd"),
        ("/etc/rc.d/rc3.d/S08iptables", "../init.d/iptables"),
    ] {
        assert_eq!(
            std::fs::read_link(inside(&root, link)).unwrap().to_str(),
            Some(target),
            "{link}"
        );
    }
    assert_eq!(
        std::fs::metadata(inside(&root, "/etc/rc.d/init.d/mt-agent"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    let agent_toml: AgentConfig = toml::from_str(&text(&root, "/etc/mt-agent/agent.toml")).unwrap();
    assert_eq!(agent_toml, cfg());
    let mp = text(&root, "/etc/multipath.conf");
    assert!(mp.contains("user_friendly_names no") && mp.contains("find_multipaths no"));
    assert!(
        !mp.contains("wwid \""),
        "the OS disk is blacklisted at first boot, not at build"
    );
    assert_eq!(
        text(&root, "/etc/kdump.conf").lines().nth(1),
        Some("path /var/crash")
    );
    let ipt = text(&root, "/etc/sysconfig/iptables");
    let open: Vec<&str> = ipt.lines().filter(|l| l.contains("--dport")).collect();
    assert_eq!(open.len(), 2, "{ipt}");
    assert!(open[0].contains("--dport 22 ") && open[1].contains("--dport 9443 "));
    assert!(
        text(&root, "/etc/sysctl.d/90-mt-agent.conf").contains("kernel.core_pattern = /var/crash/")
    );
    // Sealed.
    assert!(root.join("etc/ssh").read_dir().unwrap().next().is_none());
    assert!(!root
        .join("etc/udev/rules.d/70-persistent-net.rules")
        .exists());
    assert!(!root.join("var/lib/dbus/machine-id").exists());
    assert_eq!(
        text(&root, "/etc/sysconfig/network-scripts/ifcfg-eth0"),
        "DEVICE=eth0\nTYPE=Ethernet\nONBOOT=yes\nBOOTPROTO=dhcp\n"
    );
    assert_eq!(
        text(&root, "/etc/sysconfig/network-scripts/ifcfg-lo"),
        "DEVICE=lo\nUUID=keep-me\n"
    );
    let marker = text(&root, MARKER);
    assert!(
        marker.contains(&format!("version = {CHANGES_VERSION}"))
            && marker.contains("\"/etc/multipath.conf\"")
    );

    let before = snapshot(&root);
    let (_, second) = setup(&root, Distro::El6);
    assert_eq!(second, Vec::<String>::new());
    assert!(before == snapshot(&root), "the second run changed the tree");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn debian_setup_installs_enables_and_seals_and_a_second_run_changes_nothing() {
    let root = debian_root("deb");
    let (p, first) = setup(&root, Distro::Debian12);
    assert!(p.notes.is_empty(), "{:?}", p.notes);
    assert!(first.iter().any(|l| l.contains("ssh_host_ed25519_key")));
    assert_eq!(std::fs::read(root.join("etc/machine-id")).unwrap(), b"");
    assert!(!root.join("var/lib/dhcp/dhclient.eth0.leases").exists());
    assert!(!root.join("var/lib/mt-agent/serve/server.key").exists());
    assert!(!root.join("var/lib/mt-agent/disk-identity.toml").exists());
    assert!(root.join("etc/ssh/sshd_config").exists());
    for unit in [SERVICE, FIRSTBOOT_SERVICE, OVFENV_SERVICE] {
        let wants = root.join(format!("etc/systemd/system/multi-user.target.wants/{unit}"));
        assert_eq!(
            std::fs::read_link(wants).unwrap().to_str().unwrap(),
            format!("/etc/systemd/system/{unit}")
        );
    }
    let unit = text(&root, "/etc/systemd/system/mt-agent.service");
    assert!(unit.contains("mnt-retention.mount mt-agent-firstboot.service"));
    assert!(unit.contains("LimitCORE=infinity"));
    assert!(unit.lines().any(|l| l == "LimitNOFILE=65536"), "{unit}");
    let fb = text(&root, "/etc/systemd/system/mt-agent-firstboot.service");
    assert!(fb.contains("Before=network-pre.target ssh.service mt-agent.service"));
    // multipathd runs before local-fs.target on Debian: ordering first boot before it would
    // be a cycle (systemd then drops local-fs.target's job); it re-reads the blacklist instead.
    assert!(!fb.contains("multipathd.service"), "{fb}");
    assert!(fb.contains("ExecStartPost=-/usr/sbin/multipathd reconfigure"));
    // Ordered after the retention volume's fstab mount (not wanting it), never racing it.
    assert!(fb
        .lines()
        .any(|l| l == "After=local-fs.target mnt-retention.mount"));
    assert!(!fb.contains("Wants=mnt-retention.mount"), "{fb}");
    // The host-key unit runs beside first boot, which runs before the network; kdump-tools
    // orders basic.target after the network, so default dependencies would make a cycle.
    let keys = text(&root, "/etc/systemd/system/mt-ssh-host-keys.service");
    assert!(
        keys.contains("DefaultDependencies=no\nAfter=local-fs.target\n"),
        "{keys}"
    );
    let ovf = text(&root, "/etc/systemd/system/mt-agent-ovfenv.service");
    for line in [
        "Type=oneshot",
        "Wants=network-pre.target",
        "After=local-fs.target mt-agent-firstboot.service",
        // '-': an invalid environment is logged, the previous configuration kept, boot goes on.
        "ExecStart=-/usr/sbin/mt-agent ovfenv apply --root / --distro debian12",
    ] {
        assert!(ovf.lines().any(|l| l == line), "{line} missing in\n{ovf}");
    }
    assert!(ovf
        .lines()
        .any(|l| l.starts_with("Before=network-pre.target ") && l.contains("networking.service")));
    let kd = text(&root, "/etc/default/kdump-tools");
    assert!(kd.contains("USE_KDUMP=1\n") && kd.contains("KDUMP_COREDIR=\"/var/crash\"\n"));
    // kdump-tools' own units make basic.target (so the agent and sshd) wait for the network
    // and the capture kernel, and the capture kernel wait for the network before a local dump:
    // the appliance's replacements wait for the local file systems only.
    let load = text(&root, "/etc/systemd/system/kdump-tools.service");
    let dump = text(&root, "/etc/systemd/system/kdump-tools-dump.service");
    for unit in [&load, &dump] {
        let ordering = unit.lines().filter(|l| {
            ["After=", "Before=", "Wants=", "Requires="]
                .iter()
                .any(|d| l.starts_with(d))
        });
        for l in ordering {
            assert!(
                !l.contains("network") && !l.contains("basic.target"),
                "{unit}"
            );
        }
        assert!(
            unit.contains("ExecStart=/etc/init.d/kdump-tools start\n"),
            "{unit}"
        );
    }
    assert!(
        load.contains("DefaultDependencies=no\nAfter=local-fs.target\n"),
        "{load}"
    );
    assert!(
        dump.contains("After=local-fs.target kdump-tools.service\n"),
        "{dump}"
    );
    let nft = text(&root, "/etc/nftables.conf");
    let input: Vec<&str> = nft
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("chain input"))
        .take_while(|l| *l != "}")
        .collect();
    assert_eq!(
        input[1..],
        [
            "type filter hook input priority filter; policy drop;",
            "ct state established,related accept",
            "ct state invalid drop",
            "iif \"lo\" accept",
            "meta l4proto { icmp, icmpv6 } accept",
            "udp sport 67 udp dport 68 accept",
            "tcp dport { 22, 9443 } accept",
        ],
        "{nft}"
    );
    for (link, target) in [
        (
            "/etc/systemd/system/basic.target.wants/kdump-tools.service",
            "/etc/systemd/system/kdump-tools.service",
        ),
        (
            "/etc/systemd/system/sysinit.target.wants/nftables.service",
            "/lib/systemd/system/nftables.service",
        ),
    ] {
        assert_eq!(
            std::fs::read_link(inside(&root, link)).unwrap().to_str(),
            Some(target),
            "{link}"
        );
    }
    let marker = text(&root, MARKER);
    for managed in [
        "/etc/default/kdump-tools",
        "/etc/nftables.conf",
        "/etc/systemd/system/basic.target.wants/kdump-tools.service",
        "/etc/systemd/system/sysinit.target.wants/nftables.service",
    ] {
        assert!(marker.contains(&format!("  {managed:?},\n")), "{marker}");
    }

    let before = snapshot(&root);
    let (_, second) = setup(&root, Distro::Debian12);
    assert_eq!(second, Vec::<String>::new());
    assert!(before == snapshot(&root), "the second run changed the tree");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn missing_packages_are_noted_not_invented() {
    let root = debian_root("deb-bare");
    std::fs::remove_file(root.join("etc/default/kdump-tools")).unwrap();
    std::fs::remove_file(root.join("usr/sbin/nft")).unwrap();
    let (p, _) = setup(&root, Distro::Debian12);
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("kdump-tools is not installed")),
        "{:?}",
        p.notes
    );
    assert!(
        p.notes.iter().any(|n| n.contains("nft is not in the root")),
        "{:?}",
        p.notes
    );
    assert!(!root.join("etc/nftables.conf").exists());
    assert!(!root
        .join("etc/systemd/system/basic.target.wants/kdump-tools.service")
        .exists());
    std::fs::remove_dir_all(root).unwrap();
    let root = el6_root("el6-bare");
    std::fs::remove_file(root.join("usr/sbin/logrotate")).unwrap();
    let (p, _) = setup(&root, Distro::El6);
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("logrotate is not in the root")),
        "{:?}",
        p.notes
    );
    std::fs::remove_dir_all(root).unwrap();
}

/// What version 3 of the changes left on a Debian root with kdump-tools and nftables: their
/// files, but kdump-tools.service not enabled, a ruleset naming ICMPv6 as only /etc/protocols
/// knows it and without the DHCP rule, first boot not ordered after the retention mount and
/// the host-key unit after basic.target.
fn as_version_3_left_it(root: &Utf8Path) {
    std::fs::write(
        inside(root, "/etc/systemd/system/mt-ssh-host-keys.service"),
        "[Unit]\nDescription=Create this copy's SSH host keys (the template ships none)\n\
         Before=ssh.service\nConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key\n\n\
         [Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\n\n\
         [Install]\nWantedBy=ssh.service\n",
    )
    .unwrap();
    let nft = text(root, "/etc/nftables.conf").replace("icmpv6", "ipv6-icmp");
    std::fs::write(inside(root, "/etc/nftables.conf"), nft).unwrap();
    let fb = "/etc/systemd/system/mt-agent-firstboot.service";
    let unit = text(root, fb).replace(
        "After=local-fs.target mnt-retention.mount\n",
        "After=local-fs.target\n",
    );
    std::fs::write(inside(root, fb), unit).unwrap();
    let kdump_link = "/etc/systemd/system/basic.target.wants/kdump-tools.service";
    std::fs::remove_file(inside(root, kdump_link)).unwrap();
    let nft: String = text(root, "/etc/nftables.conf")
        .lines()
        .filter(|l| !l.contains("udp sport 67"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(inside(root, "/etc/nftables.conf"), nft).unwrap();
    let marker = text(root, MARKER)
        .replace(&format!("version = {CHANGES_VERSION}"), "version = 3")
        .replace(&format!("  {kdump_link:?},\n"), "");
    std::fs::write(inside(root, MARKER), marker).unwrap();
}

#[test]
fn an_upgrade_of_a_version_3_debian_root_writes_only_what_changed() {
    let root = debian_root("deb-upgrade");
    setup(&root, Distro::Debian12);
    as_version_3_left_it(&root);
    let p = plan(&root, Distro::Debian12, &cfg(), b"\x7fELF\0agent".to_vec()).unwrap();
    let d = dry_run(&root, &p.changes).unwrap();
    assert!(d.contains("+\t\tudp sport 67 udp dport 68 accept\n"), "{d}");
    assert!(
        d.contains(&format!("-version = 3\n+version = {CHANGES_VERSION}\n")),
        "{d}"
    );
    let (_, done) = setup(&root, Distro::Debian12);
    assert_eq!(
        done,
        [
            "wrote /etc/systemd/system/mt-agent-firstboot.service",
            "wrote /etc/systemd/system/mt-ssh-host-keys.service",
            "linked /etc/systemd/system/basic.target.wants/kdump-tools.service -> /etc/systemd/system/kdump-tools.service",
            "wrote /etc/nftables.conf",
            "wrote /etc/mt-agent/setup.applied",
        ]
        .map(String::from)
        .to_vec(),
    );
    let (_, again) = setup(&root, Distro::Debian12);
    assert_eq!(again, Vec::<String>::new());
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn the_dry_run_is_a_diff_and_changes_nothing() {
    let root = el6_root("dry");
    let before = snapshot(&root);
    let p = plan(&root, Distro::El6, &cfg(), b"\x7fELF\0".to_vec()).unwrap();
    let d = dry_run(&root, &p.changes).unwrap();
    assert!(before == snapshot(&root));
    assert!(d.contains("--- a/etc/sysconfig/network-scripts/ifcfg-eth0\n+++ b/etc/sysconfig/network-scripts/ifcfg-eth0\n"), "{d}");
    assert!(d.contains("-HWADDR=52:54:00:12:34:56\n"));
    assert!(d.contains("--- a/etc/ssh/ssh_host_rsa_key\n+++ /dev/null\n"));
    assert!(d.contains("--- /dev/null\n+++ b/etc/multipath.conf\n"));
    assert!(d.contains("symlink /etc/rc.d/rc3.d/S90mt-agent -> ../init.d/mt-agent\n"));
    assert!(d.contains("Binary files /dev/null and b/usr/sbin/mt-agent differ\n"));
    apply(&root, &p.changes).unwrap();
    let p = plan(&root, Distro::El6, &cfg(), b"\x7fELF\0".to_vec()).unwrap();
    assert_eq!(dry_run(&root, &p.changes).unwrap(), "");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn wrong_roots_are_refused() {
    let deb = debian_root("wrong-deb");
    std::fs::write(deb.join("etc/debian_version"), "11.9\n").unwrap();
    let err = check_root(&deb, Distro::Debian12).unwrap_err().to_string();
    assert!(err.contains("not a Debian 12 root"), "{err}");
    let err = check_root(&deb, Distro::El6).unwrap_err().to_string();
    assert!(
        err.contains("neither /etc/centos-release nor /etc/redhat-release"),
        "{err}"
    );
    let el = el6_root("wrong-el");
    let err = check_root(&el, Distro::Debian12).unwrap_err().to_string();
    assert!(err.contains("not a Debian 12 root"), "{err}");
    std::fs::write(
        el.join("etc/centos-release"),
        "CentOS Linux release 7.4.1708 (Core)\n",
    )
    .unwrap();
    let err = check_root(&el, Distro::El6).unwrap_err().to_string();
    assert!(err.contains("not release 6.x"), "{err}");
    std::fs::remove_dir_all(deb).unwrap();
    std::fs::remove_dir_all(el).unwrap();
}

#[test]
fn an_upgrade_keeps_the_first_boot_blacklist_and_drops_what_is_no_longer_managed() {
    let root = el6_root("upgrade");
    setup(&root, Distro::El6);
    // First boot recorded the OS disk; an older version managed a file this one does not.
    std::fs::write(
        root.join("etc/multipath.conf"),
        multipath::render(Some("36000c2900000000000000000000000a1")),
    )
    .unwrap();
    put(
        &root,
        "/etc/profile.d/mt-agent-old.sh",
        "ulimit -c unlimited\n",
    );
    let marker = text(&root, MARKER).replace(
        "managed = [\n",
        "managed = [\n  \"/etc/profile.d/mt-agent-old.sh\",\n",
    );
    std::fs::write(root.join(MARKER.trim_start_matches('/')), marker).unwrap();
    let (_, done) = setup(&root, Distro::El6);
    assert_eq!(
        done,
        vec![
            "removed /etc/profile.d/mt-agent-old.sh",
            "wrote /etc/mt-agent/setup.applied"
        ]
    );
    assert!(
        text(&root, "/etc/multipath.conf").contains("wwid \"36000c2900000000000000000000000a1\"")
    );
    std::fs::remove_dir_all(root).unwrap();
}
