//! Shell completions and the man page, generated from the clap definition so they never
//! drift from `--help`: `teardown-trace --completions bash|zsh|fish` and `--man`.

use clap::CommandFactory as _;

use crate::cli::Cli;

pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "teardown-trace", &mut out);
    out
}

/// The man page, in roff (`teardown-trace --man > teardown-trace.1`).
pub fn man() -> Vec<u8> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .expect("writing to memory cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_know_every_option_in_each_shell() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let script = String::from_utf8(completions(shell)).unwrap();
            for option in ["--mermaid", "--perfetto", "--replay", "--color"] {
                let name = option.trim_start_matches('-');
                assert!(script.contains(name), "{shell:?} lacks {option}");
            }
        }
    }

    #[test]
    fn the_man_page_has_the_options_and_examples() {
        let page = String::from_utf8(man()).unwrap();
        assert!(page.contains(".TH teardown-trace"));
        for needle in ["\\-\\-mermaid", "\\-\\-perfetto", "EXAMPLES", "never"] {
            assert!(page.contains(needle), "{needle}");
        }
    }
}
