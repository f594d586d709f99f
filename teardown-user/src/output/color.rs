//! `--color`: on a terminal, the timeline lines show the role, resets and sockets still
//! closing in colour. The words stay the same, so a line reads the same without colour.

use std::io::IsTerminal as _;

use crate::reconstruct::{Role, Timeline};

/// When to colour, as `--color` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorWhen {
    /// On a terminal, unless NO_COLOR is set (to anything) or TERM is `dumb`
    Auto,
    Always,
    Never,
}

impl ColorWhen {
    /// Whether stdout gets colour. NO_COLOR (https://no-color.org) and `TERM=dumb` turn off
    /// only the automatic choice; `always` is what the user asked for.
    pub fn enabled(self) -> bool {
        match self {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
                    && std::io::stdout().is_terminal()
            }
        }
    }
}

const RESET: &str = "\x1b[0m";
const BOLD_RED: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[33m";

fn role_color(role: Role) -> &'static str {
    match role {
        Role::Active => "\x1b[36m",       // cyan
        Role::Passive => "\x1b[32m",      // green
        Role::Simultaneous => "\x1b[35m", // magenta
        Role::Reset => BOLD_RED,
    }
}

/// Paints the first `needle` in `line` that has `before` right before it and `after` right
/// after it (so that a word is not found inside another).
fn paint(line: &mut String, (before, needle, after): (&str, &str, &str), color: &str) {
    let whole = format!("{before}{needle}{after}");
    if let Some(at) = line.find(&whole).map(|at| at + before.len()) {
        line.replace_range(at..at + needle.len(), &format!("{color}{needle}{RESET}"));
    }
}

/// The text line of `t` (as `text::timeline` renders it), coloured: the role, `[RST ...]`
/// and `still STATE for MS`.
pub fn timeline(mut line: String, t: &Timeline) -> String {
    if let Some(role) = t.role() {
        paint(&mut line, (" ", role.name(), " "), role_color(role));
    }
    if let Some(start) = line.find("[RST") {
        if let Some(len) = line[start..].find(']') {
            let marker = line[start..=start + len].to_string();
            paint(&mut line, ("", &marker, ""), BOLD_RED);
        }
    }
    if t.still().is_some() {
        if let Some(start) = line.find("still ") {
            let end = line[start..].find(" [").map_or(line.len(), |i| start + i);
            let marker = line[start..end].to_string();
            paint(&mut line, ("", &marker, ""), YELLOW);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use teardown_common::{kind, state::*, KernelNames};

    use super::*;
    use crate::{
        clock::Clock,
        output::{tests::timelines_of, text},
        testing::ev,
    };

    fn lines(events: &[teardown_common::Event]) -> Vec<(String, Timeline)> {
        timelines_of(events)
            .into_iter()
            .map(|t| {
                let line = text::timeline(&t, &Clock::default(), &KernelNames::default());
                (line, t)
            })
            .collect()
    }

    fn plain(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                chars.by_ref().find(|&c| c == 'm');
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn roles_resets_and_sockets_still_closing_are_coloured_and_read_the_same() {
        let mut rst = ev(5, 3, 82, 5002, ESTABLISHED, ESTABLISHED);
        rst.kind = kind::RESET_RECEIVED;
        let all = lines(&[
            ev(1, 1, 80, 5000, ESTABLISHED, FIN_WAIT1),
            ev(2, 1, 80, 5000, FIN_WAIT1, FIN_WAIT2),
            ev(3, 1, 80, 5000, FIN_WAIT2, CLOSE),
            ev(4, 2, 81, 5001, ESTABLISHED, CLOSE_WAIT),
            rst,
            ev(6, 3, 82, 5002, ESTABLISHED, CLOSE),
        ]);
        for (line, t) in &all {
            let painted = timeline(line.clone(), t);
            assert_eq!(plain(&painted), *line);
            match t.lport {
                80 => assert!(painted.contains("\x1b[36mactive\x1b[0m"), "{painted:?}"),
                81 => {
                    assert!(painted.contains("\x1b[32mpassive\x1b[0m"), "{painted:?}");
                    assert!(
                        painted.contains("\x1b[33mstill CLOSE_WAIT for 1000.000\x1b[0m"),
                        "{painted:?}"
                    );
                }
                _ => {
                    assert!(painted.contains("\x1b[1;31mreset\x1b[0m"), "{painted:?}");
                    assert!(
                        painted.contains("\x1b[1;31m[RST received]\x1b[0m"),
                        "{painted:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn never_and_always_do_not_look_at_the_terminal() {
        assert!(ColorWhen::Always.enabled());
        assert!(!ColorWhen::Never.enabled());
    }
}
