//! A small unified line diff for `mt-agent setup --dry-run` (the files setup writes are a few
//! hundred lines at most, so a quadratic longest-common-subsequence table is cheap and keeps a
//! dependency out of the static agent). Binary contents are named, never printed.

/// Lines of context around each change, as `diff -u` uses.
const CONTEXT: usize = 3;
/// Above this many table cells the diff shows the whole file replaced instead.
const MAX_CELLS: usize = 4_000_000;

enum Op {
    Same,
    Del,
    Add,
}

/// `--- a/path` / `+++ b/path` and hunks; `None` on a side means the file is absent.
pub fn unified(path: &str, old: Option<&[u8]>, new: Option<&[u8]>) -> String {
    let rel = path.trim_start_matches('/');
    let a = if old.is_some() {
        format!("a/{rel}")
    } else {
        "/dev/null".into()
    };
    let b = if new.is_some() {
        format!("b/{rel}")
    } else {
        "/dev/null".into()
    };
    let (Ok(o), Ok(n)) = (text(old), text(new)) else {
        return format!("Binary files {a} and {b} differ\n");
    };
    if o.is_some_and(|s| s.contains('\0')) || n.is_some_and(|s| s.contains('\0')) {
        return format!("Binary files {a} and {b} differ\n");
    }
    let ol: Vec<&str> = o
        .map(|s| s.split_inclusive('\n').collect())
        .unwrap_or_default();
    let nl: Vec<&str> = n
        .map(|s| s.split_inclusive('\n').collect())
        .unwrap_or_default();
    let ops = script(&ol, &nl);
    let mut out = format!("--- {a}\n+++ {b}\n");
    // Positions in the edit script of changes; hunks merge changes closer than 2*CONTEXT.
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| !matches!(op, Op::Same))
        .map(|(i, _)| i)
        .collect();
    let mut i = 0;
    while i < changed.len() {
        let start = changed[i].saturating_sub(CONTEXT);
        let mut j = i;
        while j + 1 < changed.len() && changed[j + 1] - changed[j] <= 2 * CONTEXT {
            j += 1;
        }
        let end = (changed[j] + CONTEXT + 1).min(ops.len());
        // Line numbers where the hunk starts on each side.
        let (mut oi, mut ni) = (0, 0);
        for op in &ops[..start] {
            match op {
                Op::Same => (oi, ni) = (oi + 1, ni + 1),
                Op::Del => oi += 1,
                Op::Add => ni += 1,
            }
        }
        let mut body = String::new();
        let (mut oc, mut nc) = (0, 0);
        for op in &ops[start..end] {
            let (sign, line) = match op {
                Op::Same => {
                    let l = ol[oi + oc];
                    oc += 1;
                    nc += 1;
                    (' ', l)
                }
                Op::Del => {
                    let l = ol[oi + oc];
                    oc += 1;
                    ('-', l)
                }
                Op::Add => {
                    let l = nl[ni + nc];
                    nc += 1;
                    ('+', l)
                }
            };
            body.push(sign);
            body.push_str(line);
            if !line.ends_with('\n') {
                body.push_str("\n\\ No newline at end of file\n");
            }
        }
        let range = |first: usize, count: usize| {
            let first = if count == 0 { first } else { first + 1 };
            if count == 1 {
                format!("{first}")
            } else {
                format!("{first},{count}")
            }
        };
        out.push_str(&format!(
            "@@ -{} +{} @@\n{body}",
            range(oi, oc),
            range(ni, nc)
        ));
        i = j + 1;
    }
    out
}

fn text(d: Option<&[u8]>) -> Result<Option<&str>, std::str::Utf8Error> {
    d.map(std::str::from_utf8).transpose()
}

/// The shortest edit script turning `a` into `b` (deletions before additions at each step).
fn script(a: &[&str], b: &[&str]) -> Vec<Op> {
    let (n, m) = (a.len(), b.len());
    if n * m > MAX_CELLS {
        let mut ops: Vec<Op> = a.iter().map(|_| Op::Del).collect();
        ops.extend(b.iter().map(|_| Op::Add));
        return ops;
    }
    // lcs[i][j]: length of the longest common subsequence of a[i..] and b[j..].
    let w = m + 1;
    let mut lcs = vec![0u32; (n + 1) * w];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i * w + j] = if a[i] == b[j] {
                lcs[(i + 1) * w + j + 1] + 1
            } else {
                lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut ops = Vec::with_capacity(n + m);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push(Op::Same);
            i += 1;
            j += 1;
        } else if j == m || (i < n && lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) {
            ops.push(Op::Del);
            i += 1;
        } else {
            ops.push(Op::Add);
            j += 1;
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_line_is_one_hunk_with_context() {
        let old = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let new = "1\n2\n3\n4\nfive\n6\n7\n8\n9\n";
        assert_eq!(
            unified("/etc/x", Some(old.as_bytes()), Some(new.as_bytes())),
            "--- a/etc/x\n+++ b/etc/x\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n"
        );
    }

    #[test]
    fn new_and_removed_files_and_binaries() {
        assert_eq!(
            unified("/etc/n", None, Some(b"a\nb\n")),
            "--- /dev/null\n+++ b/etc/n\n@@ -0,0 +1,2 @@\n+a\n+b\n"
        );
        assert_eq!(
            unified("/etc/n", Some(b"a\n"), None),
            "--- a/etc/n\n+++ /dev/null\n@@ -1 +0,0 @@\n-a\n"
        );
        assert_eq!(
            unified("/usr/sbin/x", Some(b"\x7fELF\0"), Some(b"\x7fELF\x01\0")),
            "Binary files a/usr/sbin/x and b/usr/sbin/x differ\n"
        );
    }

    #[test]
    fn the_output_is_accepted_by_patch() {
        testkit::require_tool("patch");
        let dir = testkit::scratch("diff-patch");
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        let old = "keep\nHWADDR=00:11\nUUID=abc\nONBOOT=yes\nx\ny\nz\nw\nq\nlast";
        let new = "keep\nONBOOT=yes\nx\ny\nz\nw\nq\nlast\nmore\n";
        std::fs::write(dir.join("etc/f"), old).unwrap();
        let d = unified("/etc/f", Some(old.as_bytes()), Some(new.as_bytes()));
        let mut child = std::process::Command::new("patch")
            .args(["-p1", "--quiet"])
            .current_dir(&dir)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("patch(1) runs");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(d.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "patch refused:\n{d}");
        assert_eq!(std::fs::read_to_string(dir.join("etc/f")).unwrap(), new);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
