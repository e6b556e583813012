//! Writing for a person or a script on stdout: text ([`out`]), JSON
//! ([`print_json`]), and command lines to paste back ([`shell_quote`]).

use crate::fail::{CliError, CliResult};

/// Writes `text` to stdout; a closed pipe (`… | head`) is not an error.
pub fn out(text: &str) -> CliResult<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::other(format!("writing to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// Writes `v` to stdout, pretty-printed.
pub fn print_json(v: &serde_json::Value) -> CliResult<()> {
    let s = serde_json::to_string_pretty(v)
        .map_err(|e| CliError::other(format!("encoding JSON: {e}")))?;
    out(&format!("{s}\n"))
}

/// `s` as one shell word: as is when it is plain, single-quoted otherwise.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
