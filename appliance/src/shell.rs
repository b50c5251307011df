//! POSIX shell words: the one quoting of a value for `sh` (and Python's `shlex`, which reads
//! single quotes the same way), used by the kickstart's `%post` and kickstart lines and by the
//! command lines `deploy-spec` prints. Pure text.

/// The characters `/bin/sh` reads literally anywhere in a word.
pub fn sh_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._,:/=+@%-".contains(c)
}

/// `value` as one word: as it is when every character is `bare` (and it is not empty), else in
/// single quotes, each `'` inside becoming `'"'"'`.
pub fn quote_word(value: &str, bare: impl Fn(char) -> bool) -> String {
    if !value.is_empty() && value.chars().all(bare) {
        return value.to_string();
    }
    format!("'{}'", value.replace('\'', r#"'"'"'"#))
}

/// `value` as one word for `/bin/sh`.
pub fn sh_word(value: &str) -> String {
    quote_word(value, sh_plain)
}
