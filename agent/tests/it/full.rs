//! Retention volume full: acknowledgements stop with a clear error, status says why ("stalled",
//! "retention degraded"), nothing acknowledged is lost, and once space is freed the resent stream
//! resumes with nothing lost and nothing applied twice. Tried with a retention budget and with a
//! file system that runs out of space.

use crate::common;

use common::*;
use mt_agent::replication::frame::{Frame, TagKind};
use mt_agent::replication::journal::clock::{Clock, FakeClock};
use mt_agent::replication::journal::policy::{find, volume_status};
use mt_agent::replication::journal::sim::SimFs;
use mt_agent::replication::journal::{FrameOutcome, JournalError};
use std::sync::Arc;
use testkit::Rng;

fn stream(seed: u64, budget: Option<u64>, capacity: Option<u64>) {
    let mut rng = Rng::new(seed);
    let fs = SimFs::new();
    let clock = Arc::new(FakeClock::new(T0));
    let mut vol = sim_volume(&fs, &clock, 8 * 4096);
    let mut model = make_group(&fs, &vol, &mut rng, 2, 64);
    vol.budget = budget;
    fs.set_capacity(capacity);
    let mut j = vol.open_group("g").unwrap();
    // A recorded stream: writes with a tag every 10, over a few hours of source time.
    let mut frames = Vec::new();
    let mut full_at = None;
    for i in 0..400 {
        let f = if i % 10 == 0 {
            Frame::Tag {
                lsn: j.next_lsn(),
                source_time: clock.now(),
                kind: if i % 30 == 0 {
                    TagKind::App
                } else {
                    TagKind::Crash
                },
                name: format!("t{i}"),
            }
        } else {
            random_write(&j, &mut model, &mut rng, clock.now())
        };
        frames.push(f.clone());
        clock.advance_secs(20);
        match j.apply_frame(f) {
            Ok(_) => {}
            Err(JournalError::RetentionFull(why)) => {
                assert!(why.contains("acknowledged up to LSN"), "{why}");
                full_at = Some(i);
                break;
            }
            Err(e) => panic!("seed {seed}: unexpected error {e}"),
        }
    }
    let full_at = full_at.unwrap_or_else(|| panic!("seed {seed}: the volume never filled"));
    let acked = j.acked();
    assert!(acked.0 > 0 && (acked.0 as usize) < frames.len());
    // Still refusing: nothing more is acknowledged while full.
    assert!(matches!(j.commit(), Err(JournalError::RetentionFull(_))));
    assert_eq!(j.acked(), acked);
    let st = volume_status(&vol);
    let g = find(&st, "g").unwrap();
    assert_eq!(g.state, "stalled", "{g:?}");
    assert!(
        g.degraded_reasons
            .iter()
            .any(|r| r.contains("retention degraded") && r.contains("acknowledged up to LSN")),
        "{g:?}"
    );
    model.truncate(acked);
    check_targets(&fs, &j, &model, "while full");
    drop(j);

    // Space is freed: resend the whole stream (as a source resuming would, from before `acked`).
    vol.budget = budget.map(|b| b * 64);
    fs.set_capacity(capacity.map(|c| c * 64));
    let mut j = vol.open_group("g").unwrap();
    let mut model2 = model.clone();
    model2.log.clear();
    // Rebuild the model from the frames: the first `acked` from before, the rest resent now.
    let mut dups = 0;
    for f in &frames {
        if let Frame::Write {
            lsn,
            disk,
            offset,
            data,
            ..
        } = f
        {
            model2.log.push((*lsn, *disk, *offset, data.clone()));
        }
        if j.apply_frame(f.clone()).unwrap() == FrameOutcome::Duplicate {
            dups += 1;
        }
    }
    // And the rest of the stream goes on.
    while frames.len() < 400 {
        let f = random_write(&j, &mut model2, &mut rng, clock.now());
        frames.push(f.clone());
        j.apply_frame(f).unwrap();
    }
    j.commit().unwrap();
    assert_eq!(
        dups as u64, acked.0,
        "resent frames up to the acknowledged LSN are skipped"
    );
    assert_eq!(j.acked().0 as usize, frames.len());
    let st = volume_status(&vol);
    assert_eq!(find(&st, "g").unwrap().state, "ok");
    check_targets(&fs, &j, &model2, "resumed");
    for p in j.points().to_vec() {
        check_point(&fs, &mut j, &model2, &p, "resumed");
    }
    eprintln!(
        "seed {seed}: full at frame {full_at}, acknowledged {acked}, resumed to {}",
        j.acked()
    );
}

#[test]
fn a_full_retention_budget_stops_acknowledgements_and_resumes_losing_nothing() {
    stream(1, Some(1 << 20), None);
}

#[test]
fn a_full_file_system_stops_acknowledgements_and_resumes_losing_nothing() {
    // Targets (2 x 256 KiB) live on the same simulated disk as the journal.
    stream(2, None, Some(512 * 1024 + (1 << 20)));
}
