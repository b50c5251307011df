//! The el6 compatibility floor: CentOS 6.6 runs Linux 2.6.32, older than the 3.2 that Rust's
//! Linux targets officially support. The static musl `mt-agent` is run through its local smoke
//! scenario (setup on an el6-shaped root, twice; group create; apply a recorded stream;
//! points; recover to a tagged point) and through replication over loopback (`serve`, `enrol`,
//! `send --full`, `--delta` and `--stream`) under a seccomp filter that answers ENOSYS to every
//! system call added after 2.6.32, as that kernel would, and must still do all of it right.
//!
//! On x86_64 the system call table only ever grows at its end: 2.6.32's
//! `arch/x86/include/asm/unistd_64.h` ends with `__NR_perf_event_open 298` (2.6.31), and every
//! later call has a higher number (`arch/x86/entry/syscalls/syscall_64.tbl` today; versions
//! from syscalls(2)): recvmmsg 299 (2.6.33), fanotify_init/mark 300/301 (2.6.37), prlimit64
//! 302 (2.6.36), name_to_handle_at/open_by_handle_at/clock_adjtime/syncfs 303-306 (2.6.39),
//! sendmmsg 307 and setns 308 (3.0), getcpu 309 (3.1), process_vm_readv/writev 310/311 (3.2),
//! getrandom 318 and memfd_create 319 (3.17), copy_file_range 326 (4.5), preadv2 327 (4.6),
//! pkey_* 329-331 (4.9), statx 332 (4.11), io_uring_* 425-427 (5.1), pidfd_open 434 (5.3),
//! clone3 435 (5.3), close_range 436 (5.9), openat2 437 (5.6), pidfd_getfd 438 (5.6),
//! faccessat2 439 (5.8), epoll_pwait2 441 (5.11) and on. So the filter is one comparison:
//! number >= 299 -> ENOSYS (which also covers the x32 range, bit 30). The numbers are checked
//! against the `libc` crate's `SYS_*` constants below, not typed from memory.
//!
//! The filter is installed in the child between fork and exec (`pre_exec`) with
//! `prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)` and a thirteen-instruction BPF program assembled
//! here: small enough that a crate (seccompiler) would add more than it saves. Every exec after
//! it inherits it, so `unshare … sh -c 'mount …; exec mt-agent serve'` runs serve on the floor.
//! It catches calls by number, and one option inside an old call: `setsockopt(fd, IPPROTO_TCP,
//! TCP_USER_TIMEOUT, …)` (2.6.37) gets ENOPROTOOPT, what 2.6.32's `do_tcp_setsockopt` answers
//! an option it does not know, because the liveness code asks for it on every connection.
//! Other flags and options that 2.6.32 did not know inside old calls are not covered.

use crate::common;
use crate::net_common::{change_blocks, json, random_file, Rig};

use camino::{Utf8Path, Utf8PathBuf};
use common::Model;
use mt_agent::replication::frame::{encode, Frame, FrameWriter, TagKind, BLOCK_SIZE};
use mt_agent::replication::journal::clock::{Clock, SystemClock, Timestamp};
use mt_agent::replication::journal::Lsn;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use testkit::Rng;

/// The first x86_64 system call number Linux 2.6.32 does not have.
const FIRST_AFTER_2_6_32: u32 = 299;
const MUSL: &str = "x86_64-unknown-linux-musl";

#[test]
fn the_syscall_numbers_the_floor_rests_on() {
    // The last call of 2.6.32 is allowed, the calls named in the module comment are not.
    assert_eq!(libc::SYS_perf_event_open, 298);
    let after = [
        (libc::SYS_recvmmsg, "recvmmsg"),
        (libc::SYS_prlimit64, "prlimit64"),
        (libc::SYS_fanotify_init, "fanotify_init"),
        (libc::SYS_name_to_handle_at, "name_to_handle_at"),
        (libc::SYS_syncfs, "syncfs"),
        (libc::SYS_sendmmsg, "sendmmsg"),
        (libc::SYS_setns, "setns"),
        (libc::SYS_process_vm_readv, "process_vm_readv"),
        (libc::SYS_getrandom, "getrandom"),
        (libc::SYS_memfd_create, "memfd_create"),
        (libc::SYS_copy_file_range, "copy_file_range"),
        (libc::SYS_preadv2, "preadv2"),
        (libc::SYS_pkey_alloc, "pkey_alloc"),
        (libc::SYS_statx, "statx"),
        (libc::SYS_io_uring_setup, "io_uring_setup"),
        (libc::SYS_clone3, "clone3"),
        (libc::SYS_openat2, "openat2"),
        (libc::SYS_pidfd_open, "pidfd_open"),
        (libc::SYS_close_range, "close_range"),
        (libc::SYS_faccessat2, "faccessat2"),
        (libc::SYS_epoll_pwait2, "epoll_pwait2"),
    ];
    for (nr, name) in after {
        assert!(nr >= FIRST_AFTER_2_6_32 as i64, "{name} is {nr}");
    }
    // And calls 2.6.32 had (the agent's usual ones) are below the line.
    for nr in [
        libc::SYS_openat,
        libc::SYS_pread64,
        libc::SYS_fdatasync,
        libc::SYS_fallocate,
        libc::SYS_accept4,
        libc::SYS_pipe2,
        libc::SYS_epoll_create1,
    ] {
        assert!(nr < FIRST_AFTER_2_6_32 as i64);
    }
    // The one option the filter refuses inside an old call, as the module comment names it.
    assert_eq!(libc::SYS_setsockopt, 54);
    assert_eq!(libc::IPPROTO_TCP, 6);
    assert_eq!(libc::TCP_USER_TIMEOUT, 18);
    assert_eq!(libc::ENOPROTOOPT, 92);
}

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
/// BPF_LD (0x00) | BPF_W (0x00) | BPF_ABS (0x20).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_RET_K: u16 = 0x06;

fn ins(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// `seccomp_data`: nr at offset 0, arch at 4, args[i] at 16 + 8 i, a u64 of which a 32-bit
/// load at that offset reads the low half (little-endian): an `int` argument whole.
const NR: u32 = 0;
const ARCH: u32 = 4;
const fn arg(i: u32) -> u32 {
    16 + 8 * i
}

/// Jump offsets count the instructions skipped after the jump.
fn floor_filter() -> Vec<libc::sock_filter> {
    let errno = |e: i32| SECCOMP_RET_ERRNO | e as u32;
    vec![
        ins(BPF_LD_W_ABS, 0, 0, ARCH),
        ins(BPF_JMP_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        ins(BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
        ins(BPF_LD_W_ABS, 0, 0, NR),
        ins(BPF_JMP_JGE_K, 0, 1, FIRST_AFTER_2_6_32),
        ins(BPF_RET_K, 0, 0, errno(libc::ENOSYS)),
        // setsockopt(_, IPPROTO_TCP, TCP_USER_TIMEOUT, ...): ENOPROTOOPT; else to ALLOW.
        ins(BPF_JMP_JEQ_K, 0, 5, libc::SYS_setsockopt as u32),
        ins(BPF_LD_W_ABS, 0, 0, arg(1)),
        ins(BPF_JMP_JEQ_K, 0, 3, libc::IPPROTO_TCP as u32),
        ins(BPF_LD_W_ABS, 0, 0, arg(2)),
        ins(BPF_JMP_JEQ_K, 0, 1, libc::TCP_USER_TIMEOUT as u32),
        ins(BPF_RET_K, 0, 0, errno(libc::ENOPROTOOPT)),
        ins(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
}

/// Runs `cmd` as if on Linux 2.6.32.
fn on_the_floor(mut cmd: Command) -> Command {
    let prog = floor_filter();
    // SAFETY: between fork and exec only prctl is called, on memory owned by the closure.
    unsafe {
        cmd.pre_exec(move || {
            let fprog = libc::sock_fprog {
                len: prog.len() as u16,
                filter: prog.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &fprog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// The filter is in force: memfd_create (3.17) gets ENOSYS and setsockopt(TCP_USER_TIMEOUT)
/// (2.6.37) ENOPROTOOPT, while without it both work; older calls and options work either way.
#[test]
fn the_filter_refuses_only_what_2_6_32_would() {
    let py = format!(
        "import os, errno, socket
def probe(what, f):
    try:
        f(); print(what, 'ok')
    except OSError as e:
        print(what, errno.errorcode[e.errno])
probe('memfd', lambda: os.close(os.memfd_create('x')))
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
probe('user_timeout', lambda: s.setsockopt({tcp}, {user_timeout}, 30000))
probe('keepalive', lambda: s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
probe('nodelay', lambda: s.setsockopt({tcp}, socket.TCP_NODELAY, 1))
print(len(os.listdir('/')) > 0)
",
        tcp = libc::IPPROTO_TCP,
        user_timeout = libc::TCP_USER_TIMEOUT,
    );
    let py = py.as_str();
    let run = |cmd: Command| {
        let mut cmd = cmd;
        let o = cmd.output().expect("python3 runs");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    testkit::require_tool("python3");
    let mut plain = Command::new("python3");
    plain.args(["-c", py]);
    assert_eq!(
        run(plain),
        "memfd ok\nuser_timeout ok\nkeepalive ok\nnodelay ok\nTrue\n"
    );
    let mut floored = Command::new("python3");
    floored.args(["-c", py]);
    assert_eq!(
        run(on_the_floor(floored)),
        "memfd ENOSYS\nuser_timeout ENOPROTOOPT\nkeepalive ok\nnodelay ok\nTrue\n"
    );
}

/// Builds the static agent the appliance ships and returns its path.
fn static_agent() -> Utf8PathBuf {
    testkit::require_tools(&["gcc", "musl-gcc"]);
    let ws = testkit::workspace_root();
    let st = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            MUSL,
            "-p",
            "mt-agent",
        ])
        .current_dir(&ws)
        .status()
        .expect("cargo runs");
    assert!(
        st.success(),
        "cargo build --release --target {MUSL} -p mt-agent failed"
    );
    let bin = testkit::target_dir().join(MUSL).join("release/mt-agent");
    // Static: no program interpreter (PT_INTERP) to look for on the old system.
    let elf = std::fs::read(&bin).unwrap();
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let p_type = u32::from_le_bytes(elf[phoff + i * phentsize..][..4].try_into().unwrap());
        assert_ne!(p_type, 3, "{bin} has a PT_INTERP: it is not static");
    }
    bin
}

struct Floor {
    dir: Utf8PathBuf,
    agent: Utf8PathBuf,
}

impl Floor {
    fn run(&self, args: &[&str]) -> Output {
        let mut c = Command::new(&self.agent);
        c.args(args)
            .env("MT_AGENT_CONFIG", self.dir.join("agent.toml"))
            .env("MT_AGENT_RETENTION", self.dir.join("retention"))
            .env_remove("MT_AGENT_RETENTION_BUDGET");
        on_the_floor(c).output().unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "mt-agent {args:?} failed on the 2.6.32 floor: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
}

fn put(root: &Utf8Path, path: &str, text: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
#[ignore = "slow: builds the static musl mt-agent (minutes on 2 cores); run by cargo xtask test"]
fn the_static_agent_runs_its_smoke_scenario_on_the_2_6_32_floor() {
    let agent = static_agent();
    let dir = testkit::scratch("el6-floor");
    std::fs::create_dir_all(dir.join("retention")).unwrap();
    common::write_config(&dir, &common::agent_config());
    let f = Floor {
        dir: dir.clone(),
        agent,
    };

    // setup on an el6-shaped root, twice.
    let root = dir.join("root");
    put(&root, "/etc/centos-release", "CentOS release 6.6 (Final)\n");
    put(&root, "/etc/ssh/ssh_host_rsa_key", "secret");
    put(
        &root,
        "/etc/sysconfig/network-scripts/ifcfg-eth0",
        "DEVICE=eth0\nHWADDR=52:54:00:12:34:56\nONBOOT=yes\n",
    );
    put(
        &root,
        "/etc/rc.d/init.d/kdump",
        "#!/bin/sh\n# chkconfig: 2345 20 80\n",
    );
    let cfg = dir.join("agent.toml");
    let setup = [
        "setup",
        "--root",
        root.as_str(),
        "--distro",
        "el6",
        "--config",
        cfg.as_str(),
    ];
    let first = f.ok(&setup);
    assert!(first.contains("wrote /etc/rc.d/init.d/mt-agent"), "{first}");
    assert!(!root.join("etc/ssh/ssh_host_rsa_key").exists());
    assert!(root.join("etc/rc.d/rc3.d/S90mt-agent").is_symlink());
    let second = f.ok(&setup);
    assert!(second.contains("nothing to change"), "{second}");

    // A group, a recorded stream with an app-consistent tag in the middle, and recovery to it.
    let cap = 256 * BLOCK_SIZE;
    let d0 = format!("d0={}", dir.join("d0.img"));
    let d1 = format!("d1={}", dir.join("d1.img"));
    f.ok(&[
        "group",
        "create",
        "g",
        "--disk",
        &d0,
        "--disk",
        &d1,
        "--size",
        &cap.to_string(),
    ]);
    let stream = dir.join("stream.mtf");
    let model = record(&stream, cap);
    let applied = f.ok(&["apply", "g", "--from", stream.as_str()]);
    assert!(applied.contains("acknowledged through LSN 40"), "{applied}");
    let points: serde_json::Value =
        serde_json::from_str(&f.ok(&["points", "g", "--json"])).unwrap();
    let app = points["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "app")
        .expect("the tagged point is listed");
    let lsn = Lsn(app["lsn"].as_u64().unwrap());
    let out = dir.join("recovered");
    f.ok(&[
        "recover",
        "g",
        "--point",
        "latest-app-consistent",
        "--to",
        out.as_str(),
    ]);
    let want = model.state_at(lsn);
    for (i, d) in ["d0", "d1"].iter().enumerate() {
        assert!(
            std::fs::read(out.join(format!("{d}.img"))).unwrap() == want[i],
            "{d} differs at LSN {lsn}"
        );
    }
    // In place: the targets roll back to the same state.
    f.ok(&["recover", "g", "--point", "latest-app-consistent"]);
    for (i, d) in ["d0", "d1"].iter().enumerate() {
        assert!(
            std::fs::read(dir.join(format!("{d}.img"))).unwrap() == want[i],
            "target {d} differs at LSN {lsn}"
        );
    }
    f.ok(&["verify", "g"]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
#[ignore = "slow: builds the static musl mt-agent (minutes on 2 cores); run by cargo xtask test"]
fn the_static_agent_serves_enrols_and_sends_on_the_2_6_32_floor() {
    const D0: u64 = 4 << 20;
    const D1: u64 = 2 << 20;
    let mut rig = Rig::new("el6-floor");
    rig.bin = static_agent().into_std_path_buf();
    rig.wrap = Some(on_the_floor);
    let mut rng = Rng::new(0x2632_5e7d);
    let mut src = vec![
        random_file(&rig.path("src-d0.img"), D0, &mut rng),
        random_file(&rig.path("src-d1.img"), D1, &mut rng),
    ];
    let disks: Vec<String> = ["d0", "d1"]
        .iter()
        .map(|d| format!("{d}={}", rig.path(&format!("src-{d}.img")).display()))
        .collect();
    let same = |rig: &Rig, src: &[Vec<u8>], after: &str| {
        for (name, data) in ["d0", "d1"].iter().zip(src) {
            let t = std::fs::read(rig.target(name)).unwrap();
            assert!(
                t == *data,
                "after {after}, target {name} differs from its source"
            );
        }
    };
    rig.create_group("g", &[("d0", D0), ("d1", D1)]);
    rig.start_server();
    // serve itself, not only the unshare that started it, runs under the filter.
    let pid = rig.server.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.contains("Name:\tmt-agent") && status.contains("Seccomp:\t2"),
        "{status}"
    );
    rig.enrol("sender");
    assert!(rig.log().contains("enrolled sender key"), "{}", rig.log());

    let send = |rig: &Rig, mode: &[&str]| {
        let mut args = vec!["g"];
        args.extend_from_slice(mode);
        let out = rig.send("sender", &args);
        assert!(
            out.status.success(),
            "send {mode:?} failed on the 2.6.32 floor: {}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            rig.log()
        );
        json(&out)
    };
    let (d0, d1) = (disks[0].as_str(), disks[1].as_str());
    let r = send(&rig, &["--full", "--disk", d0, "--disk", d1]);
    assert_eq!(r["changed_bytes"].as_u64().unwrap(), D0 + D1, "{r}");
    same(&rig, &src, "send --full");
    let c0 = change_blocks(&rig.path("src-d0.img"), &mut src[0], 0.05, &mut rng);
    let c1 = change_blocks(&rig.path("src-d1.img"), &mut src[1], 0.05, &mut rng);
    let r = send(&rig, &["--delta", "--disk", d0, "--disk", d1]);
    assert_eq!(r["changed_bytes"].as_u64().unwrap(), c0 + c1, "{r}");
    same(&rig, &src, "send --delta");

    // A recorded change stream with a tag at its end.
    let now = SystemClock.now().0 / 1_000_000 * 1_000_000;
    let mut frames = vec![Frame::Start {
        group: "g".into(),
        disks: vec![("d0".into(), D0), ("d1".into(), D1)],
    }];
    for lsn in 1..=30u64 {
        let disk = rng.below(2) as usize;
        let cap = [D0, D1][disk];
        let off = rng.below(cap / BLOCK_SIZE) * BLOCK_SIZE;
        let mut data = vec![0u8; BLOCK_SIZE as usize];
        rng.fill(&mut data);
        src[disk][off as usize..(off + BLOCK_SIZE) as usize].copy_from_slice(&data);
        frames.push(Frame::Write {
            lsn: Lsn(lsn),
            source_time: Timestamp(now + lsn as i64 * 100_000),
            disk: disk as u32,
            offset: off,
            data,
            resync: false,
        });
    }
    frames.push(Frame::Tag {
        lsn: Lsn(31),
        source_time: Timestamp(now + 3_100_000),
        kind: TagKind::App,
        name: "floor".into(),
    });
    let stream = rig.path("changes.mtfr");
    std::fs::write(&stream, frames.iter().flat_map(encode).collect::<Vec<u8>>()).unwrap();
    send(&rig, &["--stream", stream.to_str().unwrap()]);
    same(&rig, &src, "send --stream");
    rig.mt_ok(&["verify", "g"]);
    rig.kill_server();
}

/// 40 frames over two disks, an app-consistent tag at frame 20, times in the last minutes.
fn record(path: &Utf8Path, cap: u64) -> Model {
    let mut rng = Rng::new(0x2632);
    let mut model = Model {
        initial: vec![vec![0u8; cap as usize]; 2],
        log: Vec::new(),
    };
    let mut w = FrameWriter::new(std::io::BufWriter::new(
        std::fs::File::create(path).unwrap(),
    ));
    w.write(&Frame::Start {
        group: "g".into(),
        disks: vec![("d0".into(), cap), ("d1".into(), cap)],
    })
    .unwrap();
    let start = Timestamp::from_secs(SystemClock.now().0 / 1_000_000).plus_secs(-600);
    for i in 1..=40u64 {
        let t = start.plus_secs(10 * i as i64);
        if i == 20 {
            w.write(&Frame::Tag {
                lsn: Lsn(i),
                source_time: t,
                kind: TagKind::App,
                name: "app-20".into(),
            })
            .unwrap();
            continue;
        }
        let disk = rng.below(2) as u32;
        let nb = 1 + rng.below(8);
        let b = rng.below(cap / BLOCK_SIZE - nb + 1);
        let mut data = vec![0u8; (nb * BLOCK_SIZE) as usize];
        rng.fill(&mut data);
        model.log.push((Lsn(i), disk, b * BLOCK_SIZE, data.clone()));
        w.write(&Frame::Write {
            lsn: Lsn(i),
            source_time: t,
            disk,
            offset: b * BLOCK_SIZE,
            data,
            resync: false,
        })
        .unwrap();
    }
    use std::io::Write;
    w.into_inner().flush().unwrap();
    model
}
