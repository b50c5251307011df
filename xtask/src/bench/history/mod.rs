//! The benchmarks' memory, `docs/benchmarks.md`: the one owner of its format. A Markdown file
//! for a person to read: a short header, then one section per benchmark (`## agent`), each with
//! one table whose columns the benchmark fixes ([`Schema`]): the workload, its figures, the
//! parameters of the run, the commit and the time. A run appends one row per workload to its
//! table (the file is rewritten whole, atomically) and reports, for each compared figure, the
//! change against the latest earlier row of the same benchmark, workload and parameters.
//!
//! Reading is forgiving: the file is also edited by hand (trial rows deleted, notes added), so a
//! line this module cannot read is kept as it is and skipped with a warning, never an error.

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use mt_agent::replication::journal::clock::{Clock, SystemClock};

/// The history, relative to the workspace root.
pub const FILE: &str = "docs/benchmarks.md";

/// What a new history file starts with, before the benchmarks' sections.
const HEADER: &str = "\
# Benchmark history

What `cargo xtask bench agent`, `bench resync`, `bench wan`, `bench vmdk` and `bench boot` measured:
one row per workload and run, in the order of the runs. At its end, a run appends its rows to its benchmark's
table below (the tool rewrites this file whole, atomically) with the commit it measured (`+dirty`:
the working tree had uncommitted changes) and the time (UTC), and prints, for the compared figures
of each workload, the change against the latest earlier row with the same workload and the same
parameters (rows with other parameters are never compared), so that a regression shows in the
output of the run that causes it. Ratios (`x`) are against the baseline the benchmark names; see
`cargo xtask bench <name> --help` for each figure. Rows may be deleted or notes added by hand; a
line the benchmarks cannot read is kept and skipped with a warning.
";

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One column of figures.
pub struct Figure {
    /// The column's heading, also the figure's name in the change lines.
    pub name: &'static str,
    /// Digits after the decimal point in the table.
    pub decimals: usize,
    /// Written after the number: "x" for a ratio, else empty.
    pub suffix: &'static str,
    /// Whether a run reports the change of this figure, and which way is better; `None`: kept
    /// for the reader, not compared (absolute times and sizes vary with the machine's load).
    pub compare: Option<Better>,
}

impl Figure {
    /// A figure kept for the reader and never compared (an absolute time or size).
    pub const fn shown(name: &'static str, decimals: usize) -> Figure {
        Figure {
            name,
            decimals,
            suffix: "",
            compare: None,
        }
    }
}

/// A benchmark's section: its heading and its fixed columns of figures (between the workload
/// and the parameters, commit and date that every table has).
pub struct Schema {
    /// The section's heading, `## {bench}`.
    pub bench: &'static str,
    /// One sentence under the heading of a new section: what the rows are.
    pub about: &'static str,
    pub figures: &'static [Figure],
}

/// The columns every table has around the figures.
const WORKLOAD: &str = "workload";
const TRAILING: [&str; 3] = ["parameters", "commit", "date (UTC)"];

/// One workload's figures from one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub workload: String,
    /// One per figure of the schema, as the table shows it (rounded); `None` is "-": not
    /// measured in that run (e.g. fio was not installed).
    pub values: Vec<Option<f64>>,
    /// The run's parameters that change the figures (sizes, rounds), as `name=value` words.
    pub params: String,
    pub commit: String,
    pub date: String,
}

/// What one run measured of one workload, before it is stamped.
pub struct Entry {
    pub workload: String,
    pub values: Vec<Option<f64>>,
    pub params: String,
}

/// The commit and time a run's rows carry.
pub struct Stamp {
    pub commit: String,
    pub date: String,
}

/// The change of one compared figure against the previous row of its workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub workload: String,
    pub figure: &'static str,
    pub old: f64,
    pub new: f64,
    pub better: Better,
    /// The previous row's commit and date.
    pub since: (String, String),
}

/// What appending did, for the run to print.
#[derive(Debug, Default)]
pub struct Report {
    pub changes: Vec<Change>,
    /// Workloads that had no earlier row with the same parameters.
    pub first: Vec<String>,
    pub warnings: Vec<String>,
}

impl Schema {
    fn columns(&self) -> Vec<&'static str> {
        let mut c = vec![WORKLOAD];
        c.extend(self.figures.iter().map(|f| f.name));
        c.extend(TRAILING);
        c
    }

    fn header(&self) -> String {
        table_line(&self.columns())
    }

    fn separator(&self) -> String {
        table_line(&vec!["---"; self.columns().len()])
    }

    fn format(&self, row: &Row) -> Result<String> {
        let mut cells = vec![row.workload.clone()];
        for (f, v) in self.figures.iter().zip(&row.values) {
            cells.push(match v {
                Some(v) => format!("{:.*}{}", f.decimals, v, f.suffix),
                None => "-".into(),
            });
        }
        cells.extend([row.params.clone(), row.commit.clone(), row.date.clone()]);
        for c in &cells {
            if c.is_empty() || c.contains(['|', '\n']) || c.trim() != c {
                bail!(
                    "a {} row cannot hold the cell {c:?} (empty, or a '|', a line break or spaces around it)",
                    self.bench
                );
            }
        }
        Ok(table_line(&cells))
    }

    /// The row a table line holds, or why it holds none.
    fn parse_row(&self, line: &str) -> std::result::Result<Row, String> {
        let cells = cells(line);
        let want = self.columns().len();
        if cells.len() != want {
            return Err(format!(
                "{} cells, not the {want} of the {} table",
                cells.len(),
                self.bench
            ));
        }
        let n = self.figures.len();
        let mut values = Vec::with_capacity(n);
        for (f, c) in self.figures.iter().zip(&cells[1..=n]) {
            values.push(if *c == "-" {
                None
            } else {
                let number = c.strip_suffix(f.suffix).unwrap_or(c);
                match number.parse::<f64>() {
                    Ok(v) if v.is_finite() => Some(v),
                    _ => return Err(format!("{:?} is {c:?}, not a number", f.name)),
                }
            });
        }
        let text = |i: usize, name: &str| -> std::result::Result<String, String> {
            match cells[i] {
                "" => Err(format!("no {name}")),
                c => Ok(c.to_string()),
            }
        };
        Ok(Row {
            workload: text(0, WORKLOAD)?,
            values,
            params: text(n + 1, TRAILING[0])?,
            commit: text(n + 2, TRAILING[1])?,
            date: text(n + 3, TRAILING[2])?,
        })
    }

    /// `values` rounded as the table writes them, so a new row compares with an old one as the
    /// reader sees both.
    fn rounded(&self, values: &[Option<f64>]) -> Result<Vec<Option<f64>>> {
        if values.len() != self.figures.len() {
            bail!(
                "{} values for the {} figures of the {} table",
                values.len(),
                self.figures.len(),
                self.bench
            );
        }
        Ok(self
            .figures
            .iter()
            .zip(values)
            .map(|(f, v)| v.map(|v| format!("{:.*}", f.decimals, v).parse().unwrap_or(v)))
            .collect())
    }
}

fn table_line<S: AsRef<str>>(cells: &[S]) -> String {
    let mut s = String::from("|");
    for c in cells {
        s.push(' ');
        s.push_str(c.as_ref());
        s.push_str(" |");
    }
    s
}

fn is_table_line(line: &str) -> bool {
    line.trim_start().starts_with('|')
}

fn cells(line: &str) -> Vec<&str> {
    let t = line.trim();
    let t = t.strip_prefix('|').unwrap_or(t);
    let t = t.strip_suffix('|').unwrap_or(t);
    t.split('|').map(str::trim).collect()
}

fn is_separator(line: &str) -> bool {
    is_table_line(line)
        && cells(line)
            .iter()
            .all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':')))
}

/// A second-level heading's text.
fn heading(line: &str) -> Option<&str> {
    line.strip_prefix("## ").map(str::trim)
}

/// One benchmark's table as read from the file.
struct Parsed {
    rows: Vec<Row>,
    warnings: Vec<String>,
    /// The section's heading line and the line after its last (the next heading or the end).
    section: Option<(usize, usize)>,
    /// Where new rows go: the line after the table's last row.
    insert_at: Option<usize>,
}

/// Reads the table of `schema` from `lines` (the file `name`, for the warnings).
fn parse(name: &str, lines: &[&str], schema: &Schema) -> Parsed {
    enum State {
        /// In the section, no table yet.
        Seeking,
        /// The expected header was the last line.
        Header,
        /// In the table's rows.
        Rows,
        /// In a table with other columns.
        Foreign,
        /// After the table.
        Done,
    }
    let mut p = Parsed {
        rows: Vec::new(),
        warnings: Vec::new(),
        section: None,
        insert_at: None,
    };
    let header = cells(&schema.header())
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>();
    let mut state: Option<State> = None;
    for (i, line) in lines.iter().enumerate() {
        let at = format!("{name} line {}", i + 1);
        if let Some(h) = heading(line) {
            if state.take().is_some() {
                if let Some((start, _)) = p.section {
                    p.section = Some((start, i));
                }
            }
            if h == schema.bench {
                if p.section.is_some() {
                    p.warnings.push(format!(
                        "{at}: a second \"## {h}\" section, skipped (its rows are not read)"
                    ));
                } else {
                    p.section = Some((i, lines.len()));
                    state = Some(State::Seeking);
                }
            }
            continue;
        }
        let Some(s) = state.as_mut() else {
            continue;
        };
        let table = is_table_line(line);
        *s = match s {
            State::Seeking if table && cells(line) == header => State::Header,
            State::Seeking if table => {
                p.warnings.push(format!(
                    "{at}: a table whose columns are not the {} table's ({}), skipped",
                    schema.bench,
                    schema.header()
                ));
                State::Foreign
            }
            State::Seeking => State::Seeking,
            State::Header if is_separator(line) => {
                p.insert_at = Some(i + 1);
                State::Rows
            }
            State::Header => {
                p.warnings.push(format!(
                    "{at}: no separator row (| --- |) under the {} table's header, the table skipped",
                    schema.bench
                ));
                if table {
                    State::Foreign
                } else {
                    State::Seeking
                }
            }
            State::Rows if table => {
                match schema.parse_row(line) {
                    Ok(row) => p.rows.push(row),
                    Err(why) => p.warnings.push(format!("{at}: {why}; row skipped")),
                }
                p.insert_at = Some(i + 1);
                State::Rows
            }
            State::Rows => State::Done,
            State::Foreign if table => State::Foreign,
            State::Foreign => State::Seeking,
            State::Done if table => {
                p.warnings.push(format!(
                    "{at}: a table line after the {} table (rows belong in the one table), skipped",
                    schema.bench
                ));
                State::Done
            }
            State::Done => State::Done,
        };
    }
    p
}

/// A new history file: the header and an empty table for each of `schemas`.
pub fn fresh(schemas: &[&Schema]) -> String {
    let mut s = String::from(HEADER);
    for schema in schemas {
        s.push_str(&format!(
            "\n## {}\n\n{}\n\n{}\n{}\n",
            schema.bench,
            schema.about,
            schema.header(),
            schema.separator()
        ));
    }
    s
}

/// The rows of `schema` in the history `text` (the file `name`, for the warnings), and the
/// warnings about lines that were skipped.
#[cfg(test)]
pub fn read(name: &str, text: &str, schema: &Schema) -> (Vec<Row>, Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let p = parse(name, &lines, schema);
    (p.rows, p.warnings)
}

/// `text` (or, for `None`, a fresh file for `all`) with `entries` appended to the table of
/// `schema`, stamped with `stamp`; and what changed against the previous rows.
pub fn append(
    name: &str,
    text: Option<&str>,
    all: &[&Schema],
    schema: &Schema,
    entries: &[Entry],
    stamp: &Stamp,
) -> Result<(String, Report)> {
    let fresh_text;
    let text = match text {
        Some(t) => t,
        None => {
            fresh_text = fresh(all);
            &fresh_text
        }
    };
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let p = {
        let borrowed: Vec<&str> = lines.iter().map(String::as_str).collect();
        parse(name, &borrowed, schema)
    };
    let mut report = Report {
        warnings: p.warnings,
        ..Report::default()
    };
    let mut new_lines = Vec::new();
    for e in entries {
        let row = Row {
            workload: e.workload.clone(),
            values: schema.rounded(&e.values)?,
            params: e.params.clone(),
            commit: stamp.commit.clone(),
            date: stamp.date.clone(),
        };
        new_lines.push(schema.format(&row)?);
        let previous = p
            .rows
            .iter()
            .rev()
            .find(|r| r.workload == row.workload && r.params == row.params);
        let Some(prev) = previous else {
            report.first.push(row.workload.clone());
            continue;
        };
        for (i, f) in schema.figures.iter().enumerate() {
            if let (Some(better), Some(old), Some(new)) = (f.compare, prev.values[i], row.values[i])
            {
                report.changes.push(Change {
                    workload: row.workload.clone(),
                    figure: f.name,
                    old,
                    new,
                    better,
                    since: (prev.commit.clone(), prev.date.clone()),
                });
            }
        }
    }
    match (p.insert_at, p.section) {
        (Some(at), _) => {
            lines.splice(at..at, new_lines);
        }
        (None, Some((start, end))) => {
            // The section has no table with the expected columns: a new one at its end.
            let mut at = end;
            while at > start + 1 && lines[at - 1].trim().is_empty() {
                at -= 1;
            }
            report.warnings.push(format!(
                "{name}: the \"## {}\" section has no table with the columns {}; a new table starts at line {}",
                schema.bench,
                schema.header(),
                at + 2
            ));
            let mut block = vec![String::new(), schema.header(), schema.separator()];
            block.extend(new_lines);
            if lines.get(at).is_some_and(|l| !l.trim().is_empty()) {
                block.push(String::new());
            }
            lines.splice(at..at, block);
        }
        (None, None) => {
            while lines.last().is_some_and(|l| l.trim().is_empty()) {
                lines.pop();
            }
            lines.extend([
                String::new(),
                format!("## {}", schema.bench),
                String::new(),
                schema.about.to_string(),
                String::new(),
                schema.header(),
                schema.separator(),
            ]);
            lines.extend(new_lines);
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Ok((out, report))
}

/// Appends `entries` to the table of `schema` in the history file at `path` (created for `all`
/// if missing), rewriting it atomically.
pub fn append_file(
    path: &Utf8Path,
    all: &[&Schema],
    schema: &Schema,
    entries: &[Entry],
    stamp: &Stamp,
) -> Result<Report> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {path}")),
    };
    let (out, report) = append(path.as_str(), text.as_deref(), all, schema, entries, stamp)?;
    crate::util::write_atomic(path, out.as_bytes())?;
    Ok(report)
}

impl Change {
    /// "random 4 KiB agent/raw 0.24x -> 0.85x (+254%, better) since 8c4bf7d 2026-11-30T10:00:00Z"
    pub fn line(&self, schema: &Schema) -> String {
        let f = schema
            .figures
            .iter()
            .find(|f| f.name == self.figure)
            .expect("a change names a figure of its schema");
        let show = |v: f64| format!("{:.*}{}", f.decimals, v, f.suffix);
        let how = if self.new == self.old {
            "unchanged".to_string()
        } else {
            let better = match self.better {
                Better::Higher => self.new > self.old,
                Better::Lower => self.new < self.old,
            };
            let word = if better { "better" } else { "worse" };
            if self.old == 0.0 {
                format!("was 0, {word}")
            } else {
                let pct = (self.new / self.old - 1.0) * 100.0;
                // Small changes to a tenth of a percent: "+0%" would read as no change.
                let digits = if pct.abs() < 10.0 { 1 } else { 0 };
                format!("{pct:+.digits$}%, {word}")
            }
        };
        format!(
            "{} {} {} -> {} ({how}) since {} {}",
            self.workload,
            self.figure,
            show(self.old),
            show(self.new),
            self.since.0,
            self.since.1
        )
    }
}

/// The commit the working tree is at (short hash, "+dirty" with uncommitted changes other than
/// the history file itself, which every run changes) and the time now.
pub fn stamp(sh: &xshell::Shell) -> Result<Stamp> {
    let commit = xshell::cmd!(sh, "git rev-parse --short HEAD")
        .quiet()
        .read()
        .context("cannot name the commit the benchmark measured (git rev-parse --short HEAD)")?;
    let exclude = format!(":(exclude){FILE}");
    let status = xshell::cmd!(sh, "git status --porcelain -- . {exclude}")
        .quiet()
        .read()
        .context("cannot tell whether the working tree is clean (git status)")?;
    let dirty = if status.trim().is_empty() {
        ""
    } else {
        "+dirty"
    };
    Ok(Stamp {
        commit: format!("{}{dirty}", commit.trim()),
        date: SystemClock.now().to_string(),
    })
}

/// The history file of this workspace.
pub fn path() -> Utf8PathBuf {
    crate::util::workspace_root().join(FILE)
}

/// The end of a run: appends `entries` to the benchmark's table in `docs/benchmarks.md` and
/// prints what changed against the previous rows (warnings about unreadable lines to stderr).
pub fn record(sh: &xshell::Shell, schema: &Schema, entries: &[Entry]) -> Result<()> {
    let stamp = stamp(sh)?;
    let path = path();
    let report = append_file(&path, super::SCHEMAS, schema, entries, &stamp)?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    println!();
    println!(
        "{} added to {FILE} ({}, {}); against the previous row of the same workload and parameters:",
        match entries.len() {
            1 => "1 row".to_string(),
            n => format!("{n} rows"),
        },
        stamp.commit,
        stamp.date
    );
    for c in &report.changes {
        println!("  {}", c.line(schema));
    }
    for w in &report.first {
        println!("  {w}: no earlier row with these parameters");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
