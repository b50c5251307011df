//! `cargo xtask kickstart` run the way a user runs it: with the default definition it prints a
//! kickstart that `ksvalidator -v RHEL6` accepts, `--out FILE` writes the file, and a bad
//! `--definition` fails with a message naming the file and the field.

use crate::common;

use std::process::Output;

fn xtask(args: &[&str]) -> Output {
    testkit::run::cargo_xtask()
        .args(["kickstart"])
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("cannot run cargo xtask")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_default_definition_prints_a_valid_kickstart() {
    let out = xtask(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ks = text(&out.stdout);
    assert!(ks.starts_with("#version=RHEL6\n"), "{ks}");
    assert!(ks.contains("\n%packages --nobase --ignoremissing\n@core\n"));
    common::ksvalidator_rhel6(&ks, &common::scratch("cli-default"))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn out_writes_the_kickstart_to_the_file() {
    let dir = common::scratch("cli-out");
    let file = dir.join("nested/ks.cfg");
    let out = xtask(&["--out", file.as_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "with --out nothing goes to stdout");
    let written = std::fs::read_to_string(&file).expect("the kickstart file was written");
    let printed = text(&xtask(&[]).stdout);
    assert_eq!(written, printed);
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("nested"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["ks.cfg"], "no temporary file is left behind");
}

#[test]
fn a_bad_definition_fails_naming_the_file_and_the_field() {
    let dir = common::scratch("cli-bad");
    let bad = dir.join("bad.toml");
    let text_in = common::edit(&common::static_text(), "prefix = 24", "prefix = 33");
    std::fs::write(&bad, text_in).unwrap();
    let ks = dir.join("ks.cfg");
    let out = xtask(&["--definition", bad.as_str(), "--out", ks.as_str()]);
    assert!(!out.status.success(), "a bad definition was accepted");
    let err = text(&out.stderr);
    assert!(err.contains(bad.as_str()), "the file is not named: {err}");
    assert!(
        err.contains("network.prefix"),
        "the field is not named: {err}"
    );
    assert!(out.stdout.is_empty());
    assert!(!ks.exists(), "nothing is written on failure");
}

#[test]
fn a_missing_definition_file_is_named() {
    let dir = common::scratch("cli-missing");
    let missing = dir.join("nowhere.toml");
    let out = xtask(&["--definition", missing.as_str()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(missing.as_str()));
}
