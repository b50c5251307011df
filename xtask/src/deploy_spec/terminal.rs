//! Reading the passphrase on the terminal without echo (libc termios on standard input): the
//! settings are restored when the read ends, and by a signal handler if the user interrupts it.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, Write};

/// Saved terminal settings, for the signal handler that restores them.
static SAVED_TERMINAL: std::sync::OnceLock<libc::termios> = std::sync::OnceLock::new();
const RESTORED_ON: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

extern "C" fn restore_terminal_and_die(sig: libc::c_int) {
    // Only async-signal-safe calls: tcsetattr, signal, raise.
    if let Some(t) = SAVED_TERMINAL.get() {
        // SAFETY: `t` is a termios tcgetattr filled; fd 0 is the terminal it came from.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
    }
    // SAFETY: back to the default action, then die of the same signal.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Echo off on the terminal of standard input (the newline still echoed) until dropped; an
/// interrupt meanwhile restores the terminal before the process ends.
struct EchoOff {
    saved: libc::termios,
    handlers: Vec<(libc::c_int, libc::sighandler_t)>,
}

impl EchoOff {
    fn new() -> Result<EchoOff> {
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            return Err(std::io::Error::last_os_error())
                .context("cannot read the terminal's settings");
        }
        let _ = SAVED_TERMINAL.set(saved);
        let handler = restore_terminal_and_die as extern "C" fn(libc::c_int) as libc::sighandler_t;
        let handlers = RESTORED_ON
            .iter()
            .map(|&sig| {
                // SAFETY: the handler only makes async-signal-safe calls.
                let old = unsafe { libc::signal(sig, handler) };
                if old == libc::SIG_IGN {
                    // Ignored by whoever started us (nohup): stays ignored.
                    // SAFETY: as above.
                    unsafe { libc::signal(sig, libc::SIG_IGN) };
                }
                (sig, old)
            })
            .collect();
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        let echo_off = EchoOff { saved, handlers };
        // SAFETY: `quiet` is a valid termios derived from the terminal's own.
        if unsafe { libc::tcsetattr(0, libc::TCSAFLUSH, &quiet) } != 0 {
            return Err(std::io::Error::last_os_error()).context("cannot turn off echo");
        }
        Ok(echo_off)
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restoring the settings and handlers saved in `new`.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
            for (sig, old) in &self.handlers {
                libc::signal(*sig, *old);
            }
        }
    }
}

/// Reads one line from the terminal on standard input without echoing it.
pub(super) fn read_hidden(prompt: &str) -> Result<String> {
    let echo_off = EchoOff::new()?;
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    drop(echo_off);
    if read.context("cannot read the passphrase from the terminal")? == 0 {
        bail!("no passphrase typed (end of input)");
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
