//! `FaultyLink`: a TCP proxy on threads of the test process that plays a WAN between a sender
//! and the master target, because the kernels the tests run on have no netem. It adds one-way
//! latency, caps bandwidth, ends connections with a FIN or an RST, black-holes them (stops
//! forwarding without closing: a half-open link) and counts what it forwarded; and
//! `idle_connections` opens connections that send nothing.
//!
//! Each connection has, per direction, a reader thread and a writer thread joined by a queue
//! bounded in bytes, so the proxy never buffers without limit and a slow or stalled far side
//! pushes back on the sender as a real path does. The bound is the path's TCP window: a byte
//! counts from its read until its acknowledgement would be back (its write plus the one-way
//! delay), and the window is what this host's TCP could reach, the smaller of the `tcp_rmem` and
//! `tcp_wmem` maxima. So one connection moves at most window / round trip, as it would across a
//! real path (with Linux's default maxima, 4 MiB over 40 ms: 100 MiB/s), and the proxy itself is never the narrower pipe.
//! Sockets are non-blocking and every wait (socket, queue, delay, bucket) also wakes on
//! the connection's end, so `reset`, `close` and `Drop` take effect at once and return only when
//! the connections they ended are closed.
//!
//! It holds no test logic and asserts nothing about the programs it carries.

mod bucket;
mod conn;
#[cfg(test)]
mod tests;

use bucket::TokenBucket;
use conn::{reader, wait_ready, writer, Conn, Wake};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// The window when the host's TCP maxima cannot be read (Linux's default `tcp_wmem` maximum).
const DEFAULT_WINDOW: usize = 4 << 20;
/// The most one direction of one connection ever holds, whatever the host allows its TCP.
const MAX_WINDOW: usize = 64 << 20;
/// The most one read takes from a socket.
const READ_BYTES: usize = 128 << 10;
/// The proxy's threads need little stack: their buffers are on the heap, and a flood test runs
/// thousands of them.
const STACK_BYTES: usize = 256 << 10;
/// How long a new connection keeps trying to reach the upstream before it is reset; one attempt
/// is short so that an ended connection stops trying soon.
const CONNECT_FOR: Duration = Duration::from_secs(20);
const CONNECT_ATTEMPT: Duration = Duration::from_millis(200);

/// The two directions of a connection; the index of its queue, bucket and counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    /// Client to upstream.
    Up = 0,
    /// Upstream to client.
    Down = 1,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::Up => "up",
            Dir::Down => "down",
        }
    }
}

/// How a connection ends when the proxy ends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// SO_LINGER 0, then close: an RST to both peers.
    Reset,
    /// Shutdown for writing, then close: a FIN to both peers.
    Close,
}

/// A TCP proxy between clients and one upstream address that injects the faults of a WAN.
/// Dropping it stops accepting and closes every connection (a FIN to both sides).
pub struct FaultyLink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<Wake>,
    acceptor: Option<JoinHandle<()>>,
}

/// The link's settings and counters, shared by its acceptor and every connection.
struct Shared {
    upstream: Mutex<SocketAddr>,
    latency_nanos: AtomicU64,
    black_hole: AtomicBool,
    buckets: [TokenBucket; 2],
    forwarded: [AtomicU64; 2],
    accepted: AtomicU64,
    /// Every connection not yet reaped, with its threads.
    connections: Mutex<Vec<Registered>>,
}

struct Registered {
    conn: Weak<Conn>,
    threads: Vec<JoinHandle<()>>,
}

impl FaultyLink {
    /// Starts a link on 127.0.0.1 (an ephemeral port) to `upstream`: no latency, no cap.
    pub fn start(upstream: SocketAddr) -> FaultyLink {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("FaultyLink: cannot listen on 127.0.0.1: {e}"));
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        listener
            .set_nonblocking(true)
            .expect("FaultyLink: cannot make its listener non-blocking");
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            latency_nanos: AtomicU64::new(0),
            black_hole: AtomicBool::new(false),
            buckets: [TokenBucket::default(), TokenBucket::default()],
            forwarded: [AtomicU64::new(0), AtomicU64::new(0)],
            accepted: AtomicU64::new(0),
            connections: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(Wake::new().expect("FaultyLink: cannot create an eventfd"));
        let acceptor = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("link{}-accept", addr.port()))
                .stack_size(STACK_BYTES)
                .spawn(move || accept_loop(&listener, &shared, &stop))
                .expect("FaultyLink: cannot start its accepting thread")
        };
        FaultyLink {
            addr,
            shared,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `addr()` as `127.0.0.1:PORT`, for a `--to` flag.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    /// Where connections accepted from now on are forwarded.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *lock(&self.shared.upstream) = upstream;
    }

    /// The delay added to each direction (the round trip grows by twice this). Applies to what is
    /// still queued, too.
    pub fn set_latency(&self, one_way: Duration) {
        let nanos = u64::try_from(one_way.as_nanos()).unwrap_or(u64::MAX);
        self.shared.latency_nanos.store(nanos, Ordering::SeqCst);
        self.shared.nudge_all();
    }

    /// A cap in bytes per second on each direction, shared by all connections of the link, or
    /// `None` for none. A cap of 0 is refused: `black_hole` stops a link.
    pub fn set_bandwidth(&self, bytes_per_sec: Option<u64>) {
        assert!(
            bytes_per_sec != Some(0),
            "FaultyLink::set_bandwidth(Some(0)): use black_hole(true) to stop forwarding"
        );
        for bucket in &self.shared.buckets {
            bucket.set_rate(bytes_per_sec);
        }
        self.shared.nudge_all();
    }

    /// Resets both sides of every open connection (SO_LINGER 0, then close: each peer gets an
    /// RST); returns when they are closed.
    pub fn reset(&self) {
        self.shared.end_all(End::Reset);
    }

    /// Closes both sides of every open connection (shutdown for writing, then close: each peer
    /// gets a FIN); what was still queued is dropped. Returns when they are closed.
    pub fn close(&self) {
        self.shared.end_all(End::Close);
    }

    /// With `on`, forwards nothing in either direction, and closes nothing: a half-open link
    /// (FINs and RSTs are held back like data). New connections are accepted and forward nothing
    /// either, not even their connection to the upstream. Off resumes forwarding.
    ///
    /// Each peer's TCP talks to this process's kernel, which still acknowledges: TCP keepalive
    /// and `TCP_USER_TIMEOUT` on the peers do not see this black hole (nor one in the middle of
    /// a real path behind a proxy); what the programs notice is silence, as heartbeats and idle
    /// timeouts do.
    pub fn black_hole(&self, on: bool) {
        self.shared.black_hole.store(on, Ordering::SeqCst);
        self.shared.nudge_all();
    }

    /// Client-to-upstream bytes forwarded so far, over all connections.
    pub fn bytes_up(&self) -> u64 {
        self.shared.forwarded[Dir::Up as usize].load(Ordering::SeqCst)
    }

    /// Upstream-to-client bytes forwarded so far, over all connections.
    pub fn bytes_down(&self) -> u64 {
        self.shared.forwarded[Dir::Down as usize].load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Accepted connections the proxy has not closed yet.
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.connections)
            .iter()
            .filter(|r| r.conn.strong_count() > 0)
            .count()
    }
}

impl Drop for FaultyLink {
    fn drop(&mut self) {
        self.stop.raise();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.shared.end_all(End::Close);
    }
}

/// `n` connections to `addr` that send nothing, held open until dropped. Raises this process's
/// soft descriptor limit to its hard limit first when `n` needs it (programs started afterwards
/// inherit that; a test that wants a program at a lower limit sets it on that program). Panics
/// if a connection is not established within 10 s.
pub fn idle_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    raise_descriptor_limit(n as u64 + 256);
    (0..n)
        .map(|i| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("idle connection {} of {n} to {addr}: {e}", i + 1))
        })
        .collect()
}

fn raise_descriptor_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, stop: &Wake) {
    loop {
        if !wait_ready(listener.as_raw_fd(), libc::POLLIN, stop, None) {
            return;
        }
        match listener.accept() {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                if let Err(e) = open(shared, client) {
                    eprintln!("FaultyLink: a connection could not be set up: {e}");
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            // Out of descriptors or memory: spinning would not help, and the test sees the
            // connections it does not get.
            Err(_) => {
                if !wait_ready(-1, 0, stop, Some(Duration::from_millis(50))) {
                    return;
                }
            }
        }
    }
}

/// A connection thread: its name, what it runs, its direction.
type Role = (&'static str, fn(&Conn, Dir), Dir);

/// Registers an accepted connection and starts its four threads.
fn open(shared: &Arc<Shared>, client: TcpStream) -> io::Result<()> {
    client.set_nonblocking(true)?;
    let _ = client.set_nodelay(true);
    let conn = Arc::new(Conn::new(shared.clone(), client)?);
    let id = shared.accepted.load(Ordering::SeqCst);
    let mut registry = lock(&shared.connections);
    // Reap what has closed since the last accept: its threads have ended or are ending.
    registry.retain_mut(|r| {
        if r.conn.strong_count() > 0 {
            return true;
        }
        for t in r.threads.drain(..) {
            let _ = t.join();
        }
        false
    });
    let mut threads = Vec::with_capacity(4);
    let roles: [Role; 4] = [
        ("rd", reader, Dir::Up),
        ("wr", writer, Dir::Up),
        ("rd", reader, Dir::Down),
        ("wr", writer, Dir::Down),
    ];
    let mut failed = None;
    for (role, run, dir) in roles {
        let c = conn.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("link{id}-{}-{role}", dir.name()))
            .stack_size(STACK_BYTES)
            .spawn(move || run(&c, dir));
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    registry.push(Registered {
        conn: Arc::downgrade(&conn),
        threads,
    });
    match failed {
        // The threads that did start see the end and let go of the connection.
        Some(e) => {
            conn.end(End::Reset);
            Err(e)
        }
        None => Ok(()),
    }
}

/// The bytes one direction of one connection may have in flight (see the module comment).
fn window() -> usize {
    static WINDOW: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *WINDOW.get_or_init(|| {
        let max = |sysctl: &str| -> Option<usize> {
            let text = std::fs::read_to_string(format!("/proc/sys/net/ipv4/{sysctl}")).ok()?;
            text.split_whitespace().nth(2)?.parse().ok()
        };
        match (max("tcp_rmem"), max("tcp_wmem")) {
            (Some(r), Some(w)) => r.min(w).clamp(64 << 10, MAX_WINDOW),
            _ => DEFAULT_WINDOW,
        }
    })
}

impl Shared {
    fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_nanos.load(Ordering::SeqCst))
    }

    fn live(&self) -> Vec<Arc<Conn>> {
        lock(&self.connections)
            .iter()
            .filter_map(|r| r.conn.upgrade())
            .collect()
    }

    /// Wakes every waiting thread to look at the settings again.
    fn nudge_all(&self) {
        for c in self.live() {
            c.nudge();
        }
    }

    fn end_all(&self, how: End) {
        let registered = std::mem::take(&mut *lock(&self.connections));
        for r in &registered {
            if let Some(c) = r.conn.upgrade() {
                c.end(how);
            }
        }
        // The sockets close when the last thread of a connection lets go of it.
        for r in registered {
            for t in r.threads {
                let _ = t.join();
            }
        }
    }
}

/// A poisoned lock means a proxy thread panicked; what it guards is still consistent (every
/// update is a single step), and the test sees the panic in its own output.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
