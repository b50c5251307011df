//! The accelerator's choice against a host whose answers are given (the verdict file: kept,
//! recalled, missed, replaced, left alone), the stuck-vCPU rules on samples, the /proc parsers,
//! and the probe's watch on stand-in processes. None of it needs QEMU or KVM.

use super::*;
use std::cell::Cell;

#[test]
fn the_probe_is_a_bootable_sector() {
    let s = probe_sector();
    assert_eq!(&s[510..], &[0x55, 0xaa]);
    assert!(s[..10].contains(&PROBE_BYTE));
}

/// A host whose answers are given, counting the probes asked of it.
struct FakeHost {
    usable: bool,
    key: HostKey,
    probe: Probe,
    probes: Cell<u32>,
}

impl FakeHost {
    fn new(probe: Probe) -> FakeHost {
        FakeHost {
            usable: true,
            key: key(),
            probe,
            probes: Cell::new(0),
        }
    }
}

impl Host for FakeHost {
    fn kvm_device_usable(&self) -> bool {
        self.usable
    }
    fn key(&self) -> Result<HostKey> {
        Ok(self.key.clone())
    }
    fn probe(&self) -> Result<Probe> {
        self.probes.set(self.probes.get() + 1);
        Ok(self.probe.clone())
    }
}

fn key() -> HostKey {
    HostKey {
        kernel: "6.1.0-18-amd64".into(),
        qemu: "QEMU emulator version 7.2.9 (Debian 1:7.2+dfsg-7+deb12u5)".into(),
        cpu: "AMD EPYC 7B13".into(),
    }
}

fn exited() -> Probe {
    Probe::Exited("exit status: 134: qemu-system-x86_64: error: failed to set MSR 0x10a".into())
}

#[test]
fn an_asked_accelerator_is_used_without_probing() {
    let sh = Shell::new().unwrap();
    let nowhere = Utf8Path::new("/nonexistent");
    assert_eq!(choose(&sh, Accel::Tcg, nowhere).unwrap(), Accel::Tcg);
    assert_eq!(choose(&sh, Accel::Kvm, nowhere).unwrap(), Accel::Kvm);

    // Neither read nor written: no file appears, a present one (even a verdict for this
    // very host) neither decides nor changes.
    let dir = testkit::scratch("accel-asked");
    let host = FakeHost::new(exited());
    let absent = verdict_file_in(&dir.join("absent"));
    assert_eq!(choose_in(&absent, Accel::Kvm, &host).unwrap(), Accel::Kvm);
    assert!(!absent.exists());
    let present = verdict_file_in(&dir);
    remember_in(&present, &key(), Accel::Tcg, "remembered").unwrap();
    let before = std::fs::read(&present).unwrap();
    assert_eq!(choose_in(&present, Accel::Kvm, &host).unwrap(), Accel::Kvm);
    remember_in(&present, &key(), Accel::Kvm, "remembered").unwrap();
    let before_kvm = std::fs::read(&present).unwrap();
    assert_ne!(before, before_kvm);
    assert_eq!(choose_in(&present, Accel::Tcg, &host).unwrap(), Accel::Tcg);
    assert_eq!(std::fs::read(&present).unwrap(), before_kvm);
    assert_eq!(host.probes.get(), 0);
}

#[test]
fn the_verdict_round_trips_and_spares_the_next_probe() {
    let file = verdict_file_in(&testkit::scratch("accel-round-trip"));
    remember_in(&file, &key(), Accel::Tcg, "QEMU exited\nunder KVM").unwrap();
    match recall(&file, &key()) {
        Recall::Hit(r) => assert_eq!(
            r,
            Remembered {
                verdict: Accel::Tcg,
                reason: "QEMU exited under KVM".into(),
                host: key(),
            }
        ),
        _ => panic!("the verdict just written was not found"),
    }

    let file = verdict_file_in(&testkit::scratch("accel-choose"));
    for (probe, accel) in [
        (Probe::Ran(Duration::from_millis(3)), Accel::Kvm),
        (exited(), Accel::Tcg),
    ] {
        let _ = std::fs::remove_file(&file);
        let host = FakeHost::new(probe);
        assert_eq!(choose_in(&file, Accel::Auto, &host).unwrap(), accel);
        assert_eq!(choose_in(&file, Accel::Auto, &host).unwrap(), accel);
        assert_eq!(host.probes.get(), 1, "the second choice probed again");
    }
}

#[test]
fn another_kernel_qemu_or_cpu_is_a_miss() {
    let file = verdict_file_in(&testkit::scratch("accel-other-host"));
    remember_in(&file, &key(), Accel::Kvm, "ran").unwrap();
    let others = [
        HostKey {
            kernel: "6.1.0-21-amd64".into(),
            ..key()
        },
        HostKey {
            qemu: "QEMU emulator version 8.2.2".into(),
            ..key()
        },
        HostKey {
            cpu: "Intel(R) Xeon(R) Gold 6248".into(),
            ..key()
        },
    ];
    for other in others {
        match recall(&file, &other) {
            Recall::Miss(why) => assert!(why.contains("now"), "{why}"),
            _ => panic!("a verdict for {:?} was used on {other:?}", key()),
        }
        let host = FakeHost {
            key: other.clone(),
            ..FakeHost::new(exited())
        };
        assert_eq!(choose_in(&file, Accel::Auto, &host).unwrap(), Accel::Tcg);
        assert_eq!(host.probes.get(), 1);
        assert!(matches!(recall(&file, &other), Recall::Hit(r) if r.verdict == Accel::Tcg));
        remember_in(&file, &key(), Accel::Kvm, "ran").unwrap();
    }
}

#[test]
fn a_corrupt_file_is_a_miss_and_is_replaced_after_the_probe() {
    let dir = testkit::scratch("accel-corrupt");
    let file = verdict_file_in(&dir);
    for corrupt in [
        "",
        "verdict = \"kvm\"\n",
        "verdict = \"auto\"\nreason = \"x\"\n[host]\nkernel = \"a\"\nqemu = \"b\"\ncpu = \"c\"\n",
        "\u{0}\u{1}binary",
    ] {
        std::fs::write(&file, corrupt).unwrap();
        assert!(
            matches!(recall(&file, &key()), Recall::Miss(_)),
            "{corrupt:?} was used"
        );
        let host = FakeHost::new(Probe::Ran(Duration::from_millis(3)));
        assert_eq!(choose_in(&file, Accel::Auto, &host).unwrap(), Accel::Kvm);
        assert_eq!(host.probes.get(), 1);
        assert!(matches!(recall(&file, &key()), Recall::Hit(r) if r.verdict == Accel::Kvm));
    }
    // Written under a temporary name and renamed: nothing else is left beside it.
    assert_eq!(testkit::names_in(&dir), [VERDICT_FILE]);
}

#[test]
fn an_inconclusive_probe_or_an_unusable_device_is_not_remembered() {
    let file = verdict_file_in(&testkit::scratch("accel-inconclusive"));
    let host = FakeHost::new(Probe::TimedOut);
    assert_eq!(choose_in(&file, Accel::Auto, &host).unwrap(), Accel::Tcg);
    assert!(!file.exists());

    remember_in(&file, &key(), Accel::Kvm, "ran").unwrap();
    let host = FakeHost {
        usable: false,
        ..FakeHost::new(exited())
    };
    assert_eq!(choose_in(&file, Accel::Auto, &host).unwrap(), Accel::Tcg);
    assert_eq!(host.probes.get(), 0);
    assert!(matches!(recall(&file, &key()), Recall::Hit(r) if r.verdict == Accel::Kvm));
}

#[test]
fn a_later_tcg_verdict_overrides_the_probes_kvm() {
    let file = verdict_file_in(&testkit::scratch("accel-later"));
    let host = FakeHost::new(Probe::Ran(Duration::from_millis(3)));
    assert_eq!(choose_in(&file, Accel::Auto, &host).unwrap(), Accel::Kvm);
    remember_in(&file, &key(), Accel::Tcg, "no banner within 60s").unwrap();
    assert_eq!(choose_in(&file, Accel::Auto, &host).unwrap(), Accel::Tcg);
    assert_eq!(host.probes.get(), 1);
    assert!(remember_in(&file, &key(), Accel::Auto, "?").is_err());
}

#[test]
fn the_cpu_model_is_the_first_model_name() {
    let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel\t\t: 1\nmodel name\t: AMD EPYC 7B13\n\nprocessor\t: 1\nmodel name\t: other\n";
    assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
    assert_eq!(cpu_model("processor\t: 0\nmodel\t\t: 1\n"), None);
}

fn sample(runnable: bool, cpu_ms: u64, switches: u64, in_kvm_run: bool) -> VcpuSample {
    VcpuSample {
        runnable,
        cpu: Duration::from_millis(cpu_ms),
        switches,
        in_kvm_run,
    }
}

/// Feeds samples every 100 ms; returns when (in ms) the watch called the vCPU stuck.
fn stuck_after(samples: impl Fn(u64) -> VcpuSample) -> Option<(u64, Stuck)> {
    let mut w = StuckWatch::default();
    (0..100).map(|i| i * 100).find_map(|ms| {
        w.look(Duration::from_millis(ms), samples(ms))
            .map(|s| (ms, s))
    })
}

#[test]
fn a_vcpu_spinning_in_the_kernel_is_stuck_once_it_used_the_cpu_budget() {
    // As seen with nested KVM: runnable, a whole core of system time, never in user space.
    let (at, how) = stuck_after(|ms| sample(true, ms, 40, false)).unwrap();
    assert_eq!(at, 2000);
    assert_eq!(how, Stuck::Spinning(Duration::from_secs(2)));
    // On a busy host it gets half a core: later, by the same CPU time.
    let (at, _) = stuck_after(|ms| sample(true, ms / 2, 40 + ms, false)).unwrap();
    assert_eq!(at, 4000);
}

#[test]
fn a_vcpu_asleep_in_kvm_run_and_never_woken_is_stuck() {
    let (at, how) = stuck_after(|_| sample(false, 10, 7, true)).unwrap();
    assert_eq!(at, 2000);
    assert_eq!(how, Stuck::Asleep(Duration::from_secs(2)));
    // Waking once starts the count again.
    let (at, _) = stuck_after(|ms| sample(false, 10, if ms < 1500 { 7 } else { 8 }, true)).unwrap();
    assert_eq!(at, 3500);
}

#[test]
fn a_vcpu_that_is_woken_or_waits_in_qemu_is_not_stuck() {
    // A BIOS waiting on its timer: asleep in KVM_RUN at every look, woken in between.
    assert_eq!(stuck_after(|ms| sample(false, 10, ms / 55, true)), None);
    // Before the machine starts, the thread waits in QEMU, not in KVM_RUN.
    assert_eq!(stuck_after(|_| sample(false, 0, 3, false)), None);
    // Runnable but never given a CPU: no evidence either way (`PROBE_WAIT` ends it).
    assert_eq!(stuck_after(|_| sample(true, 0, 3, false)), None);
}

#[test]
fn proc_files_are_read_as_the_kernel_writes_them() {
    let stat =
        "5313 (CPU 0/KVM) R 1 5284 32192 0 -1 138412224 232 0 0 0 17 341 0 0 20 0 4 0 1234 0 0";
    assert_eq!(parse_stat(stat), Some(('R', 358)));
    let odd = "7 (a) b) c) S 1 2 3 0 -1 0 0 0 0 0 1 2 0 0";
    assert_eq!(parse_stat(odd), Some(('S', 3)));
    assert_eq!(parse_stat("garbage"), None);
    let status =
        "Name:\tCPU 0/KVM\nvoluntary_ctxt_switches:\t33\nnonvoluntary_ctxt_switches:\t36\n";
    assert_eq!(parse_switches(status), Some(69));
    assert_eq!(parse_switches("Name:\tx\n"), None);
    assert!(in_kvm_run("16 0xc 0xae80 0x0 0x0 0x55bc 0x0 0x0 0x0"));
    assert!(!in_kvm_run("16 0xc 0x5421 0x0"));
    assert!(!in_kvm_run("202 0x55bc1388d7a8 0x0"));
    assert!(!in_kvm_run("running"));
}

/// Runs `script` as the "QEMU" of a probe, with the probe's log and error files.
fn watch_script(name: &str, script: &str, limit: Duration) -> Probe {
    let dir = testkit::scratch(name);
    let (log, err) = (dir.join("probe.log"), dir.join("probe.err"));
    std::fs::write(&log, b"").unwrap();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("LOG", &log)
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let probe = watch(&mut child, &log, &err, limit).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    probe
}

#[test]
fn the_watch_ends_at_the_byte_at_the_exit_or_at_its_limit() {
    let start = Instant::now();
    let p = watch_script(
        "accel-byte",
        "printf K >> \"$LOG\"; exec sleep 30",
        PROBE_WAIT,
    );
    assert!(matches!(p, Probe::Ran(_)), "{p:?}");

    let p = watch_script(
        "accel-exit",
        "echo 'qemu-system-x86_64: warning: host lacks pni' >&2; \
         echo 'qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69' >&2; exit 3",
        PROBE_WAIT,
    );
    match &p {
        Probe::Exited(said) => {
            assert!(said.contains("exit status: 3"), "{said}");
            assert!(
                said.ends_with("error: failed to set MSR 0x10a to 0x69"),
                "{said}"
            );
        }
        _ => panic!("{p:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );

    let p = watch_script("accel-limit", "exec sleep 30", Duration::from_millis(300));
    assert_eq!(p, Probe::TimedOut);
}

#[test]
fn a_tcg_verdict_says_what_kvm_did_not_do_and_why() {
    let cases = [
        (exited(), "failed to set MSR 0x10a"),
        (
            Probe::Stuck(Stuck::Spinning(STUCK_AFTER)),
            "used 2.0s of CPU",
        ),
        (
            Probe::Stuck(Stuck::Asleep(STUCK_AFTER)),
            "slept 2.0s inside KVM_RUN",
        ),
        (Probe::TimedOut, "within 5s"),
    ];
    for (probe, detail) in cases {
        let reason = probe.reason();
        assert_eq!(probe.accel(), Accel::Tcg);
        assert!(
            reason.starts_with("KVM did not run the probe guest: "),
            "{reason}"
        );
        assert!(reason.contains(detail), "{reason}");
    }
    let ran = Probe::Ran(Duration::from_millis(3));
    assert_eq!(ran.accel(), Accel::Kvm);
    assert!(ran.reason().contains("after 3 ms"), "{}", ran.reason());
}
