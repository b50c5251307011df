//! The master target's sessions at one moment: which group each one holds and for which sender
//! key. One session per group: a second sender key is refused while the group is busy, but a
//! new session of the *same* key takes over from the old one (which looks alive but is not: its
//! process server lost power, or a NAT forgot the flow), ending it and waiting until it has
//! released the group. Ends the sessions of keys no longer allowed their group (a revocation).
//! Also what the sessions share: their idle time and the number of credit windows the retention
//! volume must keep room for. Never opens a journal itself.

use super::auth::hex;
use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a new session waits for the one it took over from to release the group (it
/// commits what it has, at most one batch, then closes).
const TAKEOVER_WAIT: Duration = Duration::from_secs(30);

/// Ends a session from another thread: its connection is shut down (blocked reads and writes
/// return) and waits it may be in (room on the retention volume) see the flag.
pub struct Stopper {
    stream: TcpStream,
    stopped: AtomicBool,
    /// Why, when not a takeover.
    why: Mutex<Option<String>>,
}

impl Stopper {
    pub fn new(stream: TcpStream) -> Stopper {
        Stopper {
            stream,
            stopped: AtomicBool::new(false),
            why: Mutex::new(None),
        }
    }

    /// Stops the session for a reason other than a takeover (the session's error says it).
    pub fn stop_because(&self, why: String) {
        *self.why.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        self.stop();
    }

    /// The reason given to [`Stopper::stop_because`], if any.
    pub fn reason(&self) -> Option<String> {
        self.why.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

struct Active {
    id: u64,
    key: [u8; 32],
    peer: String,
    stopper: Arc<Stopper>,
}

/// Every session of one `serve`.
pub struct Sessions {
    idle: Duration,
    active: Mutex<HashMap<String, Active>>,
    released: Condvar,
    next_id: AtomicU64,
}

/// A group held by a session; dropping it releases the group (after the journal is closed:
/// declare the claim before the journal).
pub struct Claim<'a> {
    sessions: &'a Sessions,
    group: String,
    id: u64,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut active = self.sessions.lock();
        if active.get(&self.group).is_some_and(|a| a.id == self.id) {
            active.remove(&self.group);
        }
        drop(active);
        self.sessions.released.notify_all();
    }
}

impl Sessions {
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            idle,
            active: Mutex::new(HashMap::new()),
            released: Condvar::new(),
            next_id: AtomicU64::new(1),
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Active>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sessions holding a group now (each may have a credit window in flight).
    pub fn count(&self) -> u64 {
        self.lock().len() as u64
    }

    /// Holds `group` for a session of sender `key` from `peer`. `Err` is a refusal to retry
    /// later: another sender key holds the group, or the old session did not let go in time.
    pub fn claim(
        &self,
        group: &str,
        key: [u8; 32],
        peer: &str,
        stopper: Arc<Stopper>,
        log: &dyn Fn(&str),
    ) -> Result<Claim<'_>, String> {
        let deadline = Instant::now() + TAKEOVER_WAIT;
        let mut active = self.lock();
        loop {
            match active.get(group) {
                None => break,
                Some(a) if a.key != key => {
                    return Err(format!(
                        "group {group} is in a session of another sender (key {}… from {}); try again when it ends",
                        hex(&a.key[..4]),
                        a.peer
                    ))
                }
                Some(a) => {
                    if !a.stopper.is_stopped() {
                        log(&format!(
                            "group {group}: a new session of the same sender takes over from the one from {}, which looks alive but is not; ending it",
                            a.peer
                        ));
                        a.stopper.stop();
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(format!(
                            "group {group}: the earlier session from {} has not released the group after {} s",
                            a.peer,
                            TAKEOVER_WAIT.as_secs()
                        ));
                    }
                    active = self
                        .released
                        .wait_timeout(active, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        active.insert(
            group.to_owned(),
            Active {
                id,
                key,
                peer: peer.to_owned(),
                stopper,
            },
        );
        Ok(Claim {
            sessions: self,
            group: group.to_owned(),
            id,
        })
    }
}

/// A session that [`Sessions::stop_unless`] ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Ended {
    pub group: String,
    pub key: [u8; 32],
    pub peer: String,
}

impl Sessions {
    /// Ends every session whose key `allowed` no longer lets write its group (`why` says why,
    /// in the session's error), and returns them.
    pub fn stop_unless(
        &self,
        allowed: impl Fn(&[u8; 32], &str) -> bool,
        why: impl Fn(&[u8; 32], &str) -> String,
    ) -> Vec<Ended> {
        let active = self.lock();
        let mut ended = Vec::new();
        for (group, a) in active.iter() {
            if a.stopper.is_stopped() || allowed(&a.key, group) {
                continue;
            }
            a.stopper.stop_because(why(&a.key, group));
            ended.push(Ended {
                group: group.clone(),
                key: a.key,
                peer: a.peer.clone(),
            });
        }
        ended.sort_by(|a, b| a.group.cmp(&b.group));
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn stopper() -> (Arc<Stopper>, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (Arc::new(Stopper::new(s)), c)
    }

    #[test]
    fn the_same_key_takes_over_and_another_key_is_refused() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let (old, mut old_peer) = stopper();
        let first = sessions
            .claim("g", [1; 32], "a:1", old.clone(), &|_| {})
            .unwrap();
        let (other, _p) = stopper();
        let e = sessions
            .claim("g", [2; 32], "b:1", other, &|_| {})
            .err()
            .unwrap();
        assert!(e.contains("another sender"), "{e}");
        assert_eq!(sessions.count(), 1);
        std::thread::scope(|s| {
            // The old session ends when its connection is shut down, then releases the group.
            s.spawn(|| {
                use std::io::Read;
                let mut b = [0u8; 1];
                assert_eq!(old_peer.read(&mut b).unwrap(), 0);
                while !old.is_stopped() {
                    std::thread::yield_now();
                }
                drop(first);
            });
            let (new, _q) = stopper();
            let logged = Mutex::new(Vec::new());
            let log = |l: &str| logged.lock().unwrap().push(l.to_owned());
            let claim = sessions.claim("g", [1; 32], "a:2", new, &log).unwrap();
            assert!(logged.lock().unwrap()[0].contains("takes over"));
            assert_eq!(sessions.count(), 1);
            drop(claim);
        });
        assert_eq!(sessions.count(), 0);
    }

    #[test]
    fn only_the_sessions_of_keys_no_longer_allowed_their_group_are_stopped() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let (a, _pa) = stopper();
        let (b, _pb) = stopper();
        let _ca = sessions
            .claim("a", [1; 32], "p:1", a.clone(), &|_| {})
            .unwrap();
        let _cb = sessions
            .claim("b", [1; 32], "p:2", b.clone(), &|_| {})
            .unwrap();
        let ended = sessions.stop_unless(|_, g| g == "a", |_, g| format!("revoked {g}"));
        assert_eq!(
            ended,
            [Ended {
                group: "b".into(),
                key: [1; 32],
                peer: "p:2".into()
            }]
        );
        assert!(!a.is_stopped() && b.is_stopped());
        assert_eq!(b.reason().as_deref(), Some("revoked b"));
        // Stopped once: a second look ends nothing more.
        assert!(sessions
            .stop_unless(|_, g| g == "a", |_, _| String::new())
            .is_empty());
    }
}
