//! `cargo xtask fetch-packages --base centos6` run the way a user runs it, against a copy of the el6
//! manifest whose URLs point at a local `python3 -m http.server`: a pinned file is accepted, a
//! tampered one and an unpinned one are refused naming the file and both digests, an unreachable
//! URL is reported with the URL, and `--pin` records first-use digests keeping the comments.

use camino::{Utf8Path, Utf8PathBuf};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

/// The external files the shipped definition needs (from the shipped manifest), sorted by name.
const FILES: [&str; 5] = [
    "kmod-reiserfs-0.0-1.el6.elrepo.x86_64.rpm",
    "reiserfs-utils-3.6.21-1.el6.elrepo.x86_64.rpm",
    "rsync-3.0.6-12.el6.x86_64.rpm",
    "wget-1.12-5.el6_6.1.x86_64.rpm",
    "xfsprogs-3.1.1-16.el6.x86_64.rpm",
];

use testkit::scratch;

fn content(file: &str) -> Vec<u8> {
    format!("stand-in RPM {file}\n").into_bytes()
}

fn sha256(bytes: &[u8]) -> String {
    testkit::require_tool("sha256sum");
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Serves `dir` on 127.0.0.1; stopped when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(dir: &Utf8Path) -> Server {
        // The server, and the `curl` that fetch-packages downloads with.
        testkit::require_tools(&["python3", "curl"]);
        let mut child = Command::new("python3")
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs http.server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected http.server line {line:?}"));
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The shipped el6 manifest with every URL on `base` and each file's pin from `pin(file)`.
fn manifest(dir: &Utf8Path, base: &str, pin: impl Fn(&str) -> String) -> Utf8PathBuf {
    let shipped =
        std::fs::read_to_string(testkit::workspace_root().join("packages/el6.toml")).unwrap();
    let mut file = String::new();
    let mut out = String::new();
    for line in shipped.lines() {
        if let Some(f) = line.strip_prefix("file = ") {
            file = f.trim_matches('"').to_string();
            out.push_str(line);
        } else if line.starts_with("url = ") {
            out.push_str(&format!("url = \"{base}/{file}\""));
        } else if line.starts_with("sha256 = ") {
            out.push_str(&format!("sha256 = \"{}\"", pin(&file)));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    let path = dir.join("el6.toml");
    std::fs::write(&path, out).unwrap();
    path
}

fn fetch(manifest: &Utf8Path, dest: &Utf8Path, extra: &[&str]) -> Output {
    testkit::run::cargo_xtask()
        .args(["fetch-packages", "--base", "centos6"])
        .args(["--manifest", manifest.as_str(), "--dest", dest.as_str()])
        .args(extra)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("cannot run cargo xtask")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn served_dir(dir: &Utf8Path) -> Utf8PathBuf {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    for f in FILES {
        std::fs::write(www.join(f), content(f)).unwrap();
    }
    www
}

fn listing(dest: &Utf8Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dest)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn pinned_files_are_downloaded_and_accepted() {
    let dir = scratch("fetch-ok");
    let server = Server::start(&served_dir(&dir));
    let m = manifest(&dir, &format!("http://127.0.0.1:{}", server.port), |f| {
        sha256(&content(f))
    });
    let dest = dir.join("rpms");
    let out = fetch(&m, &dest, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(listing(&dest), FILES);
    for f in FILES {
        assert_eq!(std::fs::read(dest.join(f)).unwrap(), content(f));
    }
}

#[test]
fn a_tampered_file_is_refused_naming_the_file_and_both_digests() {
    let dir = scratch("fetch-tampered");
    let www = served_dir(&dir);
    let tampered = FILES[4];
    let mut evil = content(tampered);
    evil.extend_from_slice(b"one more line\n");
    std::fs::write(www.join(tampered), &evil).unwrap();
    let server = Server::start(&www);
    let m = manifest(&dir, &format!("http://127.0.0.1:{}", server.port), |f| {
        sha256(&content(f))
    });
    let dest = dir.join("rpms");
    let out = fetch(&m, &dest, &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(tampered), "{err}");
    assert!(
        err.contains(&sha256(&content(tampered))),
        "expected digest: {err}"
    );
    assert!(err.contains(&sha256(&evil)), "actual digest: {err}");
    // The good files are kept, the tampered one (and no partial download) is not.
    assert_eq!(listing(&dest), &FILES[..4]);
}

#[test]
fn an_unpinned_file_is_refused_naming_it() {
    let dir = scratch("fetch-unpinned");
    let server = Server::start(&served_dir(&dir));
    let unpinned = FILES[0];
    let m = manifest(&dir, &format!("http://127.0.0.1:{}", server.port), |f| {
        if f == unpinned {
            "unknown".to_string()
        } else {
            sha256(&content(f))
        }
    });
    let dest = dir.join("rpms");
    let out = fetch(&m, &dest, &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("{unpinned} is not pinned")), "{err}");
    assert!(err.contains(&sha256(&content(unpinned))), "{err}");
    assert!(!listing(&dest).contains(&unpinned.to_string()));
}

#[test]
fn an_unreachable_url_is_reported_with_the_url() {
    let dir = scratch("fetch-offline");
    let base = format!("http://127.0.0.1:{}", closed_port());
    let m = manifest(&dir, &base, |f| sha256(&content(f)));
    let dest = dir.join("rpms");
    let out = fetch(&m, &dest, &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    for f in FILES {
        assert!(
            err.contains(&format!("downloading {base}/{f} failed")),
            "{err}"
        );
    }
    assert!(err.contains("--from DIR"), "{err}");
    assert!(listing(&dest).is_empty(), "{:?}", listing(&dest));
}

#[test]
fn pin_records_first_use_digests_keeping_comments_and_never_replaces_a_pin() {
    let dir = scratch("fetch-pin");
    let supplied = served_dir(&dir);
    let m = manifest(&dir, "http://127.0.0.1:9", |_| "unknown".to_string());
    let before = std::fs::read_to_string(&m).unwrap();
    let dest = dir.join("rpms");
    let out = fetch(&m, &dest, &["--from", supplied.as_str(), "--pin"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("TRUST ON FIRST USE"), "{err}");
    let after = std::fs::read_to_string(&m).unwrap();
    let expected = FILES.iter().fold(before.clone(), |text, f| {
        let from = format!("{f}\"\nsha256 = \"unknown\"");
        assert!(text.contains(&from), "{from}");
        text.replacen(
            &from,
            &format!("{f}\"\nsha256 = \"{}\"", sha256(&content(f))),
            1,
        )
    });
    // Only the pins changed: every comment and line of the manifest is as it was.
    assert_eq!(after, expected);
    assert_eq!(listing(&dest), FILES);

    // Pinned now: the same files are accepted without --pin, a changed one is refused even
    // with --pin, and the manifest keeps its pin.
    let out = fetch(&m, &dir.join("rpms2"), &["--from", supplied.as_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(supplied.join(FILES[1]), b"something else").unwrap();
    let out = fetch(
        &m,
        &dir.join("rpms3"),
        &["--from", supplied.as_str(), "--pin"],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("never replaces a pin"), "{err}");
    assert_eq!(std::fs::read_to_string(&m).unwrap(), after);
}

#[test]
fn pin_without_from_and_another_base_are_refused() {
    let dir = scratch("fetch-usage");
    let m = manifest(&dir, "http://127.0.0.1:9", |_| "unknown".to_string());
    let out = fetch(&m, &dir.join("rpms"), &["--pin"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--from"), "{}", stderr(&out));
    let out = testkit::run::cargo_xtask()
        .args(["fetch-packages", "--base", "debian12"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("only centos6"), "{}", stderr(&out));
}
