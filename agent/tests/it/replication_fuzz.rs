//! The fuzz target's property (`mt_agent::replication::net::check_decoders`) run on the stable toolchain:
//! valid frame and message streams mutated at random with a fixed seed (bit flips, overwritten
//! bytes and length fields, cuts, insertions, pure noise). `cargo fuzz` explores further; this
//! keeps the property checked in every `cargo test`.

use mt_agent::replication::frame::{encode, Frame, TagKind};
use mt_agent::replication::journal::clock::Timestamp;
use mt_agent::replication::journal::Lsn;
use mt_agent::replication::net::{check_decoders, Message};

use testkit::Rng;

fn seeds() -> Vec<Vec<u8>> {
    let frames = [
        Frame::Start {
            group: "g".into(),
            disks: vec![("d0".into(), 1 << 20), ("d1".into(), 2 << 20)],
        },
        Frame::Write {
            lsn: Lsn(1),
            source_time: Timestamp(5),
            disk: 1,
            offset: 8192,
            data: vec![0x5a; 8192],
            resync: false,
        },
        Frame::Tag {
            lsn: Lsn(2),
            source_time: Timestamp(6),
            kind: TagKind::App,
            name: "vss".into(),
        },
    ];
    let stream: Vec<u8> = frames.iter().flat_map(encode).collect();
    let messages: Vec<u8> = [
        Message::Frame(encode(&frames[1])),
        Message::Credit { bytes: 1 << 20 },
        Message::Hashes {
            disk: 0,
            first_block: 0,
            hashes: vec![[7; 32]; 3],
        },
        Message::Refused {
            retry: false,
            why: "no".into(),
        },
    ]
    .iter()
    .flat_map(|m| m.encode())
    .collect();
    vec![stream, messages]
}

#[test]
fn decoders_survive_a_fixed_seed_of_mutated_and_random_inputs() {
    let mut rng = Rng::new(0x00f0_2200_6006);
    let seeds = seeds();
    for seed in &seeds {
        check_decoders(seed);
    }
    for _ in 0..20_000 {
        let mut d = seeds[rng.index(seeds.len())].clone();
        for _ in 0..1 + rng.index(4) {
            let i = rng.index(d.len());
            match rng.index(6) {
                0 => d[i] ^= 1 << rng.index(8),
                1 => d[i] = rng.next_u64() as u8,
                2 => d.truncate(i),
                3 => d.insert(i, rng.next_u64() as u8),
                4 if d.len() >= i + 4 => {
                    let v: u32 = [0, 1, u32::MAX, 4 << 20, (4 << 20) + 1][rng.index(5)];
                    d[i..i + 4].copy_from_slice(&v.to_le_bytes());
                }
                _ => {
                    let n = rng.index(64);
                    let noise: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                    d.splice(i..i, noise);
                }
            }
            if d.is_empty() {
                break;
            }
        }
        check_decoders(&d);
    }
    for _ in 0..2_000 {
        let n = rng.index(4096);
        let noise: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
        check_decoders(&noise);
    }
}
