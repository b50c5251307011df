//! Corruption: bit flips and truncations in every on-disk structure of the journal (timeline,
//! every undo log, the rollback log) are detected and reported with the file and byte offset.
//! The agent refuses to open a damaged group or to recover from a damaged point; whatever it does
//! recover is byte-identical to the model. A cut at the very end of the timeline is
//! indistinguishable from a torn write and is cut off and reported as such.

use crate::common;

use camino::{Utf8Path, Utf8PathBuf};
use common::*;
use mt_agent::replication::frame::{Frame, TagKind};
use mt_agent::replication::journal::clock::{Clock, FakeClock};
use mt_agent::replication::journal::io::Fs;
use mt_agent::replication::journal::sim::SimFs;
use mt_agent::replication::journal::{JournalError, PointSelector};
use std::sync::Arc;
use testkit::Rng;

/// A group with several epochs, app and crash points, and a used rollback log.
fn damaged_candidate() -> (SimFs, Model, Arc<FakeClock>) {
    let mut rng = Rng::new(42);
    let fs = SimFs::new();
    let clock = Arc::new(FakeClock::new(T0));
    let vol = sim_volume(&fs, &clock, 3 * 4096);
    let mut model = make_group(&fs, &vol, &mut rng, 2, 12);
    let mut j = vol.open_group("g").unwrap();
    for i in 0..40 {
        let f = random_write(&j, &mut model, &mut rng, clock.now());
        j.apply_frame(f).unwrap();
        if i % 9 == 8 {
            let kind = if i % 2 == 0 {
                TagKind::App
            } else {
                TagKind::Crash
            };
            let tag = Frame::Tag {
                lsn: j.next_lsn(),
                source_time: clock.now(),
                kind,
                name: format!("t{i}"),
            };
            j.apply_frame(tag).unwrap();
        }
        clock.advance_secs(20);
    }
    j.commit().unwrap();
    assert!(j.points().len() >= 4);
    (fs.clean_copy(), model, clock)
}

enum Verdict {
    /// Refused with the file and offset of the damage.
    Detected,
    /// Nothing was affected (a stale record), everything recovered identical.
    Harmless,
    /// A torn tail was cut and reported.
    CutTail,
}

/// Opens the damaged copy and recovers every point; panics on wrong data or an unclear error.
fn judge(
    fs: &SimFs,
    clock: &Arc<FakeClock>,
    model: &Model,
    file: &Utf8Path,
    what: &str,
) -> Verdict {
    let vol = sim_volume(fs, clock, 3 * 4096);
    let expect_file = |e: &JournalError| match e {
        JournalError::Damaged {
            path,
            offset,
            what: why,
        } => {
            assert_eq!(path, file, "{what}: damage reported in the wrong file: {e}");
            let len = fs.file_size(file);
            assert!(
                *offset <= len.max(32),
                "{what}: offset {offset} beyond {len}"
            );
            let _ = why;
        }
        other => panic!("{what}: damage surfaced as an unclear error: {other}"),
    };
    let mut j = match vol.open_group("g") {
        Ok(j) => j,
        Err(e) => {
            expect_file(&e);
            return Verdict::Detected;
        }
    };
    let cut = j.notes.iter().any(|n| n.contains("torn tail"));
    let mut detected = false;
    let mut pts = j.points().to_vec();
    pts.push(j.latest());
    for (i, p) in pts.iter().enumerate() {
        let dir = Utf8PathBuf::from(format!("/out/{i}"));
        match j.recover_point(p, Some(&dir)) {
            Ok(r) => {
                let want = model.state_at(p.lsn);
                for (d, img) in r.images.iter().enumerate() {
                    assert!(
                        fs.read_all(img).unwrap() == want[d],
                        "{what}: point {p:?} recovered WRONG data"
                    );
                }
            }
            Err(e) => {
                expect_file(&e);
                detected = true;
            }
        }
    }
    // The targets themselves hold exactly the acknowledged prefix.
    check_targets(fs, &j, model, what);
    // And a damaged point is refused in place too, without touching the targets.
    if detected {
        let before: Vec<_> = j
            .disks()
            .iter()
            .map(|d| fs.read_all(&d.target).unwrap())
            .collect();
        let oldest = j.points()[0].clone();
        if j.recover_point(&oldest, None).is_err() {
            let after: Vec<_> = j
                .disks()
                .iter()
                .map(|d| fs.read_all(&d.target).unwrap())
                .collect();
            assert!(
                before == after,
                "{what}: a refused recovery changed the targets"
            );
        }
    }
    match (detected, cut) {
        (true, _) => Verdict::Detected,
        (false, true) => Verdict::CutTail,
        (false, false) => Verdict::Harmless,
    }
}

fn journal_files(fs: &SimFs) -> Vec<Utf8PathBuf> {
    use mt_agent::replication::journal::io::Fs;
    let dir = Utf8Path::new("/ret/groups/g");
    fs.list(dir)
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .map(|n| dir.join(n))
        .collect()
}

fn campaign(flips_per_file: u64, cuts_per_file: u64) {
    let (base, model, clock) = damaged_candidate();
    let mut rng = Rng::new(4242);
    let files = journal_files(&base);
    assert!(files.len() >= 5, "{files:?}");
    for file in &files {
        let len = base.file_size(file);
        let name = file.file_name().unwrap();
        let (mut detected, mut cut, mut harmless) = (0, 0, 0);
        // Every byte of the header, then random bytes across the file.
        let offsets: Vec<u64> = (0..32)
            .chain((0..flips_per_file).map(|_| 32 + rng.below(len - 32)))
            .collect();
        for off in offsets {
            let fs = base.clean_copy();
            fs.flip_bit(file, off, rng.below(8) as u8);
            match judge(
                &fs,
                &clock,
                &model,
                file,
                &format!("bit flip in {name} at byte {off}"),
            ) {
                Verdict::Detected => detected += 1,
                Verdict::CutTail => cut += 1,
                Verdict::Harmless => harmless += 1,
            }
        }
        for _ in 0..cuts_per_file {
            let at = rng.below(len);
            let fs = base.clean_copy();
            fs.truncate(file, at);
            match judge(
                &fs,
                &clock,
                &model,
                file,
                &format!("{name} cut to {at} bytes"),
            ) {
                Verdict::Detected => detected += 1,
                Verdict::CutTail => cut += 1,
                Verdict::Harmless => harmless += 1,
            }
        }
        eprintln!("{name}: {detected} detected, {cut} torn tails cut, {harmless} harmless");
        if name.starts_with("undo-") {
            // Every byte of a committed undo log matters to some point.
            assert_eq!(harmless + cut, 0, "{name}: damage went unnoticed");
        }
        if name == "timeline.log" {
            assert_eq!(harmless, 0, "{name}: damage went unnoticed");
        }
        assert!(detected > 0, "{name}: nothing detected");
    }
}

#[test]
fn damage_in_every_journal_file_is_detected_with_file_and_offset() {
    campaign(40, 6);
}

#[test]
#[ignore = "slow: 400 flips and 60 cuts per journal file; run by cargo xtask test"]
fn damage_in_every_journal_file_is_detected_full() {
    campaign(400, 60);
}

#[test]
fn recovering_a_damaged_point_in_place_leaves_the_targets_alone() {
    let (fs, model, clock) = damaged_candidate();
    let vol = sim_volume(&fs, &clock, 3 * 4096);
    // The open epoch's undo log (the highest id): every point needs it.
    let open_undo = journal_files(&fs)
        .into_iter()
        .rfind(|f| f.as_str().contains("undo-"))
        .unwrap();
    let len = fs.file_size(&open_undo);
    fs.flip_bit(&open_undo, len - 100, 3);
    let mut j = vol.open_group("g").unwrap();
    let oldest = j.points()[0].clone();
    let err = j.recover_point(&oldest, None).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(open_undo.as_str()) && msg.contains("damaged at byte"),
        "{msg}"
    );
    check_targets(&fs, &j, &model, "refused in place");
    // The newest points do not need the damaged epoch and still recover.
    let r = j
        .recover(&PointSelector::Latest, Some(Utf8Path::new("/out/latest")))
        .unwrap();
    assert_eq!(r.point.lsn, j.acked());
}
