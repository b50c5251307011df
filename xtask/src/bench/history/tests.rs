//! The benchmark history's file format on real files: round trip, which earlier row a run is
//! compared with, and lines it cannot read (kept, skipped with a warning).

use super::*;

const TEST: Schema = Schema {
    bench: "demo",
    about: "A benchmark of the tests.",
    figures: &[
        Figure {
            name: "ours/theirs",
            decimals: 2,
            suffix: "x",
            compare: Some(Better::Higher),
        },
        Figure {
            name: "WA",
            decimals: 2,
            suffix: "",
            compare: Some(Better::Lower),
        },
        Figure {
            name: "MiB/s",
            decimals: 0,
            suffix: "",
            compare: None,
        },
    ],
};
const OTHER: Schema = Schema {
    bench: "other",
    about: "Another.",
    figures: &[Figure {
        name: "speedup",
        decimals: 1,
        suffix: "x",
        compare: Some(Better::Higher),
    }],
};
const ALL: &[&Schema] = &[&TEST, &OTHER];

fn entry(workload: &str, values: [Option<f64>; 3], params: &str) -> Entry {
    Entry {
        workload: workload.into(),
        values: values.to_vec(),
        params: params.into(),
    }
}

fn stamp(commit: &str) -> Stamp {
    Stamp {
        commit: commit.into(),
        date: "2026-12-02T10:00:00Z".into(),
    }
}

#[test]
fn a_new_file_round_trips_its_rows_and_reports_no_change() {
    let path = testkit::scratch("history").join("docs/benchmarks.md");
    let entries = [
        entry(
            "random 4 KiB",
            [Some(0.2449), Some(1.9), Some(37.4)],
            "size=8MiB rounds=1",
        ),
        entry(
            "sequential 1 MiB",
            [Some(0.57), None, Some(812.0)],
            "size=32MiB rounds=1",
        ),
    ];
    let report = append_file(&path, ALL, &TEST, &entries, &stamp("abc1234")).unwrap();
    assert!(report.changes.is_empty() && report.warnings.is_empty());
    assert_eq!(report.first, ["random 4 KiB", "sequential 1 MiB"]);

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# Benchmark history\n"), "{text}");
    assert!(
        text.contains("\n## other\n"),
        "every table of a new file: {text}"
    );
    assert!(
        text.contains("| random 4 KiB | 0.24x | 1.90 | 37 | size=8MiB rounds=1 | abc1234 | 2026-12-02T10:00:00Z |"),
        "{text}"
    );
    let (rows, warnings) = read(path.as_str(), &text, &TEST);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        rows,
        [
            Row {
                workload: "random 4 KiB".into(),
                values: vec![Some(0.24), Some(1.9), Some(37.0)],
                params: "size=8MiB rounds=1".into(),
                commit: "abc1234".into(),
                date: "2026-12-02T10:00:00Z".into(),
            },
            Row {
                workload: "sequential 1 MiB".into(),
                values: vec![Some(0.57), None, Some(812.0)],
                params: "size=32MiB rounds=1".into(),
                commit: "abc1234".into(),
                date: "2026-12-02T10:00:00Z".into(),
            },
        ]
    );
    assert_eq!(read(path.as_str(), &text, &OTHER).0, []);
}

#[test]
fn a_run_compares_with_the_latest_row_of_its_workload_and_parameters() {
    let path = testkit::scratch("history").join("benchmarks.md");
    let w = "random 4 KiB";
    for (commit, ratio, params) in [
        ("c1", 0.30, "size=8MiB"),
        ("c2", 0.24, "size=8MiB"),
        // Other parameters, later: never compared with size=8MiB.
        ("c3", 0.99, "size=64MiB"),
    ] {
        append_file(
            &path,
            ALL,
            &TEST,
            &[entry(w, [Some(ratio), Some(2.0), Some(1.0)], params)],
            &stamp(commit),
        )
        .unwrap();
    }
    // Another workload with the same parameters, later still.
    append_file(
        &path,
        ALL,
        &TEST,
        &[entry(
            "sequential",
            [Some(0.01), Some(9.0), None],
            "size=8MiB",
        )],
        &stamp("c4"),
    )
    .unwrap();

    let report = append_file(
        &path,
        ALL,
        &TEST,
        &[entry(w, [Some(0.85), Some(2.0), Some(99.0)], "size=8MiB")],
        &stamp("c5"),
    )
    .unwrap();
    assert!(report.first.is_empty() && report.warnings.is_empty());
    // MiB/s is not compared.
    assert_eq!(report.changes.len(), 2, "{:?}", report.changes);
    let ratio = &report.changes[0];
    assert_eq!(
        (ratio.old, ratio.new, ratio.figure),
        (0.24, 0.85, "ours/theirs")
    );
    assert_eq!(ratio.since.0, "c2");
    assert_eq!(
        ratio.line(&TEST),
        "random 4 KiB ours/theirs 0.24x -> 0.85x (+254%, better) since c2 2026-12-02T10:00:00Z"
    );
    assert_eq!(
        report.changes[1].line(&TEST),
        "random 4 KiB WA 2.00 -> 2.00 (unchanged) since c2 2026-12-02T10:00:00Z"
    );

    // Rows are kept in the order of the runs, after each other in the one table.
    let text = std::fs::read_to_string(&path).unwrap();
    let (rows, _) = read(path.as_str(), &text, &TEST);
    let commits: Vec<&str> = rows.iter().map(|r| r.commit.as_str()).collect();
    assert_eq!(commits, ["c1", "c2", "c3", "c4", "c5"]);
}

#[test]
fn a_figure_that_gets_worse_says_so() {
    let c = Change {
        workload: "full copy".into(),
        figure: "WA",
        old: 1.0,
        new: 1.5,
        better: Better::Lower,
        since: ("c1".into(), "d".into()),
    };
    assert_eq!(
        c.line(&TEST),
        "full copy WA 1.00 -> 1.50 (+50%, worse) since c1 d"
    );
}

#[test]
fn malformed_and_unknown_lines_are_skipped_with_a_warning_and_kept() {
    let path = testkit::scratch("history").join("benchmarks.md");
    append_file(
        &path,
        ALL,
        &TEST,
        &[entry("w", [Some(0.5), Some(1.0), Some(10.0)], "p=1")],
        &stamp("good"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let good = text
        .lines()
        .find(|l| l.contains("| good |"))
        .unwrap()
        .to_string();
    // A row with a word for a number, a row with a cell missing, a row after the table,
    // a note, and another section of the user's.
    let edited = text.replace(
        &good,
        &format!(
            "{good}\n| w | fast | 1.00 | 10 | p=1 | bad1 | d |\n| w | 0.90x | 1.00 | p=1 | bad2 | d |\n\
             A note by hand.\n| w | 0.10x | 1.00 | 10 | p=1 | stray | d |"
        ),
    ) + "\n## notes\n\n| anything | at all |\n";
    std::fs::write(&path, &edited).unwrap();

    let (rows, warnings) = read(path.as_str(), &edited, &TEST);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].commit, "good");
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    assert!(
        warnings[0].contains("\"ours/theirs\" is \"fast\", not a number"),
        "{warnings:?}"
    );
    assert!(warnings[1].contains("6 cells, not the 7"), "{warnings:?}");
    assert!(warnings[2].contains("after the demo table"), "{warnings:?}");
    let line_of = |needle: &str| edited.lines().position(|l| l.contains(needle)).unwrap() + 1;
    assert!(warnings[0].contains(&format!("benchmarks.md line {}:", line_of("bad1"))));

    let report = append_file(
        &path,
        ALL,
        &TEST,
        &[entry("w", [Some(0.6), Some(1.0), Some(10.0)], "p=1")],
        &stamp("next"),
    )
    .unwrap();
    assert_eq!(report.warnings, warnings);
    assert_eq!(report.changes[0].since.0, "good");
    let after = std::fs::read_to_string(&path).unwrap();
    for kept in [
        "bad1",
        "bad2",
        "A note by hand.",
        "stray",
        "| anything | at all |",
    ] {
        assert!(after.contains(kept), "{kept} was dropped: {after}");
    }
    // The new row follows the last line of the table (the malformed ones included).
    let lines: Vec<&str> = after.lines().collect();
    let next = lines.iter().position(|l| l.contains("| next |")).unwrap();
    assert!(lines[next - 1].contains("bad2"), "{after}");
}

#[test]
fn a_missing_section_or_a_table_with_other_columns_gets_a_new_table() {
    let path = testkit::scratch("history").join("benchmarks.md");
    std::fs::write(
        &path,
        "# Mine\n\n## demo\n\n| workload | old figure | commit |\n|---|---|---|\n| w | 1 | c0 |\n\n## later\n\ntext\n",
    )
    .unwrap();
    let report = append_file(
        &path,
        ALL,
        &TEST,
        &[entry("w", [Some(0.5), Some(1.0), Some(10.0)], "p=1")],
        &stamp("c1"),
    )
    .unwrap();
    assert_eq!(report.warnings.len(), 2, "{:?}", report.warnings);
    assert!(report.warnings[0].contains("columns are not the demo table's"));
    assert!(report.warnings[1].contains("a new table starts at line 9"));
    append_file(
        &path,
        ALL,
        &OTHER,
        &[Entry {
            workload: "x".into(),
            values: vec![Some(2.0)],
            params: "p=1".into(),
        }],
        &stamp("c2"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let (rows, warnings) = read(path.as_str(), &text, &TEST);
    assert_eq!((rows.len(), warnings.len()), (1, 1), "{text}");
    assert_eq!(read(path.as_str(), &text, &OTHER).0.len(), 1, "{text}");
    assert!(
        text.contains("text\n\n## other\n\nAnother.\n\n| workload | speedup |"),
        "{text}"
    );
    // The new demo table sits inside its section, before the next one.
    let demo = text.find("| workload | ours/theirs |").unwrap();
    assert!(demo < text.find("## later").unwrap(), "{text}");
}

#[test]
fn a_cell_that_would_break_the_table_is_refused() {
    let err = append(
        "f",
        None,
        ALL,
        &TEST,
        &[entry("a | b", [None, None, None], "p=1")],
        &stamp("c"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("\"a | b\""), "{err}");
}

#[test]
fn the_committed_history_reads_without_warnings() {
    let path = path();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with(HEADER),
        "{path} does not start with the header"
    );
    for schema in super::super::SCHEMAS {
        let p = parse(path.as_str(), &text.lines().collect::<Vec<_>>(), schema);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert!(
            p.insert_at.is_some(),
            "{path} has no {} table",
            schema.bench
        );
    }
}
