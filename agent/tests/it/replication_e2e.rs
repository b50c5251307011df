//! End to end over loopback, as an operator would run it: `mt-agent serve` on the master target,
//! `mt-agent send` on the process server for a two-disk group: enrolment with the passphrase and
//! a full copy, delta resyncs after changing 1% and 10% of the blocks (only those travel), then a
//! recorded change stream with crash and app tags, and `mt-agent recover` at every tag equals
//! the source at that tag.

use crate::net_common;
use mt_agent::replication::frame::TagKind;
use net_common::*;

const D0: u64 = 16 << 20;
const D1: u64 = 8 << 20;

fn assert_targets(rig: &Rig, src: &[Vec<u8>]) {
    for (name, data) in ["d0", "d1"].iter().zip(src) {
        let t = std::fs::read(rig.target(name)).unwrap();
        assert!(t == *data, "target {name} differs from its source");
    }
}

fn check_delta(rig: &Rig, sources: &[String], changed: u64) {
    let mut args = vec!["g", "--delta"];
    for s in sources {
        args.push("--disk");
        args.push(s);
    }
    let r = json(&rig.send("sender", &args));
    assert_eq!(r["changed_bytes"].as_u64().unwrap(), changed, "{r}");
    let hashes = r["hash_bytes_received"].as_u64().unwrap();
    // 32 bytes per 64 KiB block each way at most, plus message framing.
    assert!(hashes <= (D0 + D1) / 65536 * 32 + 4096, "{r}");
    let sent = r["wire_bytes_sent"].as_u64().unwrap();
    assert!(
        sent <= changed + changed / 20 + 16384,
        "{sent} bytes on the wire for {changed} changed bytes: {r}"
    );
}

#[test]
fn full_copy_delta_resyncs_and_a_tagged_stream_recover_equal_the_source_at_every_tag() {
    let mut rig = Rig::new("e2e");
    let mut rng = Rng::new(0x5eed_0006);
    let mut src = vec![
        random_file(&rig.path("src-d0.img"), D0, &mut rng),
        random_file(&rig.path("src-d1.img"), D1, &mut rng),
    ];
    let sources = vec![
        format!("d0={}", rig.path("src-d0.img").display()),
        format!("d1={}", rig.path("src-d1.img").display()),
    ];
    rig.create_group("g", &[("d0", D0), ("d1", D1)]);
    rig.start_server();

    // First contact: enrol with the passphrase, then a full copy.
    let pass = rig.path("passphrase").display().to_string();
    let r = json(&rig.send(
        "sender",
        &[
            "g",
            "--full",
            "--passphrase-file",
            &pass,
            "--disk",
            &sources[0],
            "--disk",
            &sources[1],
        ],
    ));
    assert_eq!(r["changed_bytes"].as_u64().unwrap(), D0 + D1);
    assert_targets(&rig, &src);
    assert!(rig.log().contains("enrolled sender key"), "{}", rig.log());

    // An unchanged disk: nothing but hashes travel.
    check_delta(&rig, &sources, 0);
    for fraction in [0.01, 0.10] {
        let c0 = change_blocks(&rig.path("src-d0.img"), &mut src[0], fraction, &mut rng);
        let c1 = change_blocks(&rig.path("src-d1.img"), &mut src[1], fraction, &mut rng);
        check_delta(&rig, &sources, c0 + c1);
        assert_targets(&rig, &src);
    }

    // A recorded change stream with tags; expected images at each tag.
    let crash_then_app = |t| {
        if t % 2 == 0 {
            TagKind::Crash
        } else {
            TagKind::App
        }
    };
    let (stream, expected) = tagged_stream(&mut src, &mut rng, (6, 20, 16), "tag-", crash_then_app);
    std::fs::write(rig.path("changes.mtfr"), stream).unwrap();
    let stream_path = rig.path("changes.mtfr").display().to_string();
    json(&rig.send("sender", &["g", "--stream", &stream_path]));
    assert_targets(&rig, &src);
    // Sending the same stream again applies nothing twice.
    json(&rig.send("sender", &["g", "--stream", &stream_path]));
    assert_targets(&rig, &src);

    assert_points_recover(&rig, &expected);
}
