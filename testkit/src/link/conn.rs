//! One connection of the link: its reader and writer threads per direction, the queue between
//! them, and how it ends. The settings it obeys live in the link (`super::Shared`).

use super::{lock, window, Dir, End, Shared, CONNECT_ATTEMPT, CONNECT_FOR, READ_BYTES};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One accepted connection: the client's socket, the upstream's once connected, a queue per
/// direction and how (and whether) the proxy ended it.
pub(super) struct Conn {
    link: Arc<Shared>,
    client: TcpStream,
    upstream: OnceLock<TcpStream>,
    queues: [Queue; 2],
    ended: Mutex<Option<End>>,
    /// Raised once, when the connection ends; every socket wait also waits for it.
    wake: Wake,
}

#[derive(Default)]
struct Queue {
    state: Mutex<Chunks>,
    changed: Condvar,
}

#[derive(Default)]
struct Chunks {
    chunks: VecDeque<Chunk>,
    /// Read and not yet acknowledged: what is queued, being written, or written less than the
    /// one-way delay ago.
    in_flight: usize,
    /// When each written chunk's acknowledgement is back, and its length.
    acks: VecDeque<(Instant, usize)>,
}

impl Chunks {
    fn take_acks(&mut self, now: Instant) {
        while let Some(&(at, len)) = self.acks.front() {
            if at > now {
                break;
            }
            self.in_flight -= len;
            self.acks.pop_front();
        }
    }
}

struct Chunk {
    read_at: Instant,
    piece: Piece,
}

enum Piece {
    Data(Vec<u8>),
    /// The source shut down its side: forwarded as a shutdown for writing.
    Eof,
    /// The source reset or failed: forwarded as an RST on both sides.
    Reset,
}

impl Conn {
    pub(super) fn new(link: Arc<Shared>, client: TcpStream) -> io::Result<Conn> {
        Ok(Conn {
            link,
            client,
            upstream: OnceLock::new(),
            queues: [Queue::default(), Queue::default()],
            ended: Mutex::new(None),
            wake: Wake::new()?,
        })
    }

    fn is_ended(&self) -> bool {
        lock(&self.ended).is_some()
    }

    /// Ends the connection (the first end counts) and wakes all its threads.
    pub(super) fn end(&self, how: End) {
        {
            let mut ended = lock(&self.ended);
            if ended.is_some() {
                return;
            }
            *ended = Some(how);
            apply_end(&self.client, how);
            if let Some(up) = self.upstream.get() {
                apply_end(up, how);
            }
        }
        self.wake.raise();
        self.nudge();
    }

    pub(super) fn nudge(&self) {
        for q in &self.queues {
            // Taking the lock orders the notification after a waiter's check.
            drop(lock(&q.state));
            q.changed.notify_all();
        }
    }

    fn source(&self, dir: Dir) -> Option<&TcpStream> {
        match dir {
            Dir::Up => Some(&self.client),
            Dir::Down => self.upstream.get(),
        }
    }

    fn sink(&self, dir: Dir) -> Option<&TcpStream> {
        match dir {
            Dir::Up => self.upstream.get(),
            Dir::Down => Some(&self.client),
        }
    }

    /// Waits on `dir`'s queue while `blocked` holds; false once the connection has ended.
    fn wait_while(&self, dir: Dir, mut blocked: impl FnMut(&Self, &Chunks) -> bool) -> bool {
        let q = &self.queues[dir as usize];
        let mut state = lock(&q.state);
        loop {
            if self.is_ended() {
                return false;
            }
            if !blocked(self, &state) {
                return true;
            }
            state = q.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Waits until forwarding is on; false once the connection has ended.
    fn wait_forwarding(&self, dir: Dir) -> bool {
        self.wait_while(dir, |c, _| c.link.black_hole.load(Ordering::SeqCst))
    }

    /// Sleeps for `d` unless the connection ends first; false if it did.
    fn sleep(&self, dir: Dir, d: Duration) -> bool {
        let until = Instant::now() + d;
        let q = &self.queues[dir as usize];
        let mut state = lock(&q.state);
        loop {
            if self.is_ended() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            state = q
                .changed
                .wait_timeout(state, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Queues a piece read from `dir`'s source, waiting for room; false once the connection has
    /// ended.
    fn push(&self, dir: Dir, piece: Piece) -> bool {
        let len = match &piece {
            Piece::Data(d) => d.len(),
            _ => 0,
        };
        let read_at = Instant::now();
        let q = &self.queues[dir as usize];
        let mut state = lock(&q.state);
        loop {
            if self.is_ended() {
                return false;
            }
            let now = Instant::now();
            state.take_acks(now);
            // With nothing in flight any chunk goes, so the bound never stops a connection.
            if state.in_flight == 0 || state.in_flight + len <= window() {
                break;
            }
            state = match state.acks.front() {
                Some(&(at, _)) => {
                    q.changed
                        .wait_timeout(state, at.saturating_duration_since(now))
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => q.changed.wait(state).unwrap_or_else(|p| p.into_inner()),
            };
        }
        state.in_flight += len;
        state.chunks.push_back(Chunk { read_at, piece });
        drop(state);
        q.changed.notify_all();
        true
    }

    /// The next chunk of `dir` once it is due and forwarding is on; `None` once the connection
    /// has ended.
    fn next(&self, dir: Dir) -> Option<Chunk> {
        let q = &self.queues[dir as usize];
        let mut state = lock(&q.state);
        loop {
            if self.is_ended() {
                return None;
            }
            let wait = if self.link.black_hole.load(Ordering::SeqCst) {
                None
            } else if let Some(front) = state.chunks.front() {
                let due = front.read_at + self.link.latency();
                let now = Instant::now();
                if now >= due {
                    return state.chunks.pop_front();
                }
                Some(due - now)
            } else {
                None
            };
            state = match wait {
                Some(d) => {
                    q.changed
                        .wait_timeout(state, d)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => q.changed.wait(state).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }

    /// Counts `len` bytes of `dir` as acknowledged one delay after now, when the far side's
    /// acknowledgement would be back.
    fn written(&self, dir: Dir, len: usize) {
        let q = &self.queues[dir as usize];
        let mut state = lock(&q.state);
        let at = Instant::now() + self.link.latency();
        state.acks.push_back((at, len));
        drop(state);
        q.changed.notify_all();
    }

    /// Connects to the upstream once forwarding is on (a black hole holds back the connection
    /// itself); resets the client if the upstream cannot be reached.
    fn connect_upstream(&self) -> bool {
        if !self.wait_forwarding(Dir::Up) {
            return false;
        }
        let addr = *lock(&self.link.upstream);
        let deadline = Instant::now() + CONNECT_FOR;
        let stream = loop {
            if self.is_ended() {
                return false;
            }
            match TcpStream::connect_timeout(&addr, CONNECT_ATTEMPT) {
                Ok(s) => break s,
                Err(e) if e.kind() == io::ErrorKind::TimedOut && Instant::now() < deadline => {}
                Err(_) => {
                    self.end(End::Reset);
                    return false;
                }
            }
        };
        if stream.set_nonblocking(true).is_err() {
            self.end(End::Reset);
            return false;
        }
        let _ = stream.set_nodelay(true);
        let _ = self.upstream.set(stream);
        // An end that came while connecting did not reach this socket.
        if let Some(how) = *lock(&self.ended) {
            apply_end(self.upstream.get().expect("just set"), how);
            return false;
        }
        self.nudge();
        true
    }

    /// Writes `data` to `dir`'s sink at the link's rate; false when the connection has ended or
    /// the sink failed (which resets the connection).
    fn forward(&self, dir: Dir, sink: &TcpStream, data: &[u8]) -> bool {
        let bucket = &self.link.buckets[dir as usize];
        let mut at = 0;
        while at < data.len() {
            while let Some(d) = bucket.delay() {
                if !self.sleep(dir, d) {
                    return false;
                }
            }
            if !self.wait_forwarding(dir) {
                return false;
            }
            let end = at + bucket.piece(data.len() - at);
            match (&*sink).write(&data[at..end]) {
                Ok(n) => {
                    at += n;
                    bucket.charge(n);
                    self.link.forwarded[dir as usize].fetch_add(n as u64, Ordering::SeqCst);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !wait_ready(sink.as_raw_fd(), libc::POLLOUT, &self.wake, None) {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.end(End::Reset);
                    return false;
                }
            }
        }
        true
    }
}

/// Reads `dir`'s source into its queue until the source ends or the connection does.
pub(super) fn reader(conn: &Conn, dir: Dir) {
    if !conn.wait_while(dir, |c, _| c.source(dir).is_none()) {
        return;
    }
    let source = conn.source(dir).expect("waited for the source");
    let mut buf = vec![0u8; READ_BYTES];
    loop {
        if !conn.wait_forwarding(dir) {
            return;
        }
        match (&*source).read(&mut buf) {
            Ok(0) => {
                conn.push(dir, Piece::Eof);
                return;
            }
            Ok(n) => {
                if !conn.push(dir, Piece::Data(buf[..n].to_vec())) {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !wait_ready(source.as_raw_fd(), libc::POLLIN, &conn.wake, None) {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                conn.push(dir, Piece::Reset);
                return;
            }
        }
    }
}

/// Writes `dir`'s queue to its sink, each chunk no earlier than its read time plus the latency.
pub(super) fn writer(conn: &Conn, dir: Dir) {
    if dir == Dir::Up && !conn.connect_upstream() {
        return;
    }
    if !conn.wait_while(dir, |c, _| c.sink(dir).is_none()) {
        return;
    }
    let sink = conn.sink(dir).expect("waited for the sink");
    while let Some(chunk) = conn.next(dir) {
        match chunk.piece {
            Piece::Data(d) => {
                if !conn.forward(dir, sink, &d) {
                    return;
                }
                conn.written(dir, d.len());
            }
            Piece::Eof => {
                let _ = sink.shutdown(Shutdown::Write);
                return;
            }
            Piece::Reset => {
                conn.end(End::Reset);
                return;
            }
        }
    }
}

fn apply_end(s: &TcpStream, how: End) {
    match how {
        End::Reset => {
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: a valid socket descriptor and a linger struct of the size passed.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
        }
        End::Close => {
            let _ = s.shutdown(Shutdown::Write);
        }
    }
}

/// An eventfd that, once raised, stays readable: a wake-up no waiter can miss.
pub(super) struct Wake(OwnedFd);

impl Wake {
    pub(super) fn new() -> io::Result<Wake> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        Ok(Wake(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(super) fn raise(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a u64 we own to our eventfd.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// Waits until `fd` is ready for `events` (or has failed: the next call on it says how), or
/// `timeout` passes; false if `wake` was raised. A negative `fd` waits for `wake` only.
pub(super) fn wait_ready(
    fd: RawFd,
    events: libc::c_short,
    wake: &Wake,
    timeout: Option<Duration>,
) -> bool {
    let mut fds = [
        libc::pollfd {
            fd,
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
    loop {
        // SAFETY: polls two pollfd structs we own.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return fds[1].revents == 0;
    }
}
