//! Which accepted connections may start a handshake: at most so many unauthenticated
//! handshakes at once, overall and from one address. A slot is held from accept until the
//! handshake ends (its guard is dropped); a connection that finds no slot is refused by the
//! caller before any thread is started for it. This module does no I/O.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub struct HandshakeSlots {
    max_total: usize,
    max_per_addr: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    per_addr: HashMap<IpAddr, usize>,
}

/// One handshake in progress; dropping it frees the slot.
pub struct HandshakeSlot {
    slots: Arc<HandshakeSlots>,
    addr: IpAddr,
}

impl HandshakeSlots {
    pub fn new(max_total: usize, max_per_addr: usize) -> Arc<HandshakeSlots> {
        Arc::new(HandshakeSlots {
            max_total,
            max_per_addr,
            held: Mutex::new(Held::default()),
        })
    }

    /// A slot for a handshake from `addr`, or why there is none (the reason repeats: it
    /// names the cap, not the connection).
    pub fn claim(self: &Arc<Self>, addr: IpAddr) -> Result<HandshakeSlot, String> {
        let mut h = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if h.total >= self.max_total {
            return Err(format!(
                "refused: {} handshakes in progress, the most at once",
                self.max_total
            ));
        }
        if h.per_addr.get(&addr).copied().unwrap_or(0) >= self.max_per_addr {
            return Err(format!(
                "refused: {} handshakes in progress from this address, the most at once",
                self.max_per_addr
            ));
        }
        *h.per_addr.entry(addr).or_insert(0) += 1;
        h.total += 1;
        Ok(HandshakeSlot {
            slots: self.clone(),
            addr,
        })
    }

    /// Handshakes in progress (overall, from `addr`).
    #[cfg(test)]
    fn in_progress(&self, addr: IpAddr) -> (usize, usize) {
        let h = self.held.lock().unwrap_or_else(|e| e.into_inner());
        (h.total, h.per_addr.get(&addr).copied().unwrap_or(0))
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut h = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        h.total -= 1;
        if let Some(n) = h.per_addr.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                // Only addresses with a handshake in progress are kept: the map stays small.
                h.per_addr.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caps_hold_overall_and_per_address_and_a_finished_handshake_frees_its_slot() {
        let slots = HandshakeSlots::new(4, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        let a1 = slots.claim(a).unwrap();
        let _a2 = slots.claim(a).unwrap();
        let err = slots.claim(a).err().unwrap();
        assert!(
            err.contains("2 handshakes in progress from this address"),
            "{err}"
        );
        let _b1 = slots.claim(b).unwrap();
        let _b2 = slots.claim(b).unwrap();
        let err = slots.claim(c).err().unwrap();
        assert!(err.contains("4 handshakes in progress, the most"), "{err}");
        drop(a1);
        assert_eq!(slots.in_progress(a), (3, 1));
        let _c1 = slots.claim(c).unwrap();
        assert_eq!(slots.in_progress(c), (4, 1));
    }
}
