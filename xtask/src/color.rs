//! ANSI colors, only where a person reads them: the text goes to a terminal and `NO_COLOR`
//! (<https://no-color.org>) is unset or empty. Every escape code xtask prints goes through
//! here.

use std::{ffi::OsStr, io::IsTerminal as _};

/// The colors that tell the services' log lines apart, in start order (cyan, magenta, yellow,
/// green, blue, red).
pub(crate) const SERVICES: [&str; 6] = ["\x1b[36m", "\x1b[35m", "\x1b[33m", "\x1b[32m", "\x1b[34m", "\x1b[31m"];

/// Back to the terminal's own color.
const RESET: &str = "\x1b[0m";

/// `text` in `color` when it is for standard error and that is a terminal a person can read
/// colors on; otherwise `text` as it is (also when `color` is empty).
pub(crate) fn on_stderr(color: &str, text: &str) -> String {
    paint(for_stderr(), color, text)
}

/// Whether what goes to standard error may carry colors. The services' own log lines go
/// there through `up` too, so it passes them `NO_COLOR` when this says no.
pub(crate) fn for_stderr() -> bool {
    wanted(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref())
}

/// Whether to print colors: only to a terminal, and never when `NO_COLOR` holds a value.
fn wanted(is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// `text` between `color` and [`RESET`] when `wanted`.
fn paint(wanted: bool, color: &str, text: &str) -> String {
    if wanted && !color.is_empty() { format!("{color}{text}{RESET}") } else { text.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colors_only_a_terminal_without_no_color() {
        let cases = [
            (true, None, true, "a terminal, NO_COLOR unset"),
            (true, Some(""), true, "a terminal, NO_COLOR empty"),
            (true, Some("1"), false, "a terminal, NO_COLOR set"),
            (false, None, false, "not a terminal"),
            (false, Some("1"), false, "not a terminal, NO_COLOR set"),
        ];
        for (is_terminal, no_color, expected, case) in cases {
            assert_eq!(wanted(is_terminal, no_color.map(OsStr::new)), expected, "{case}");
        }
    }

    #[test]
    fn plain_text_has_no_escape_codes() {
        assert_eq!(paint(false, SERVICES[0], "user |"), "user |");
        assert_eq!(paint(true, "", "user |"), "user |");
        assert_eq!(paint(true, SERVICES[0], "user |"), "\x1b[36muser |\x1b[0m");
    }
}
