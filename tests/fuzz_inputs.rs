//! Fuzz-style properties of the text inputs an operator hands the daemon: configuration TOML,
//! the web configuration file (YAML), `replay` lines and `localize` CSV. Random edits of valid inputs (deleted spans, inserted
//! tokens chosen to hurt: quotes, brackets, control characters, huge numbers, long runs,
//! duplicated and dropped lines) must never panic and must finish within a generous bound.
//!
//! The quick variants run with the normal tests; `cargo test --test fuzz_inputs -- --ignored`
//! runs many more cases.

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crossprobe::config::{CorrelatorSettings, ValidatedConfig, WebConfig};
use crossprobe::offline::localize::{localize, parse_csv};
use crossprobe::offline::replay::{infer_matrix, replay};

/// Far above what any case takes (milliseconds): a case this slow is a hang, not a slow machine.
const BOUND: Duration = Duration::from_secs(30);

/// Tokens inserted by edits.
const TOKENS: &[&str] = &[
    ": ",
    "- ",
    "*a",
    "&a",
    "!!str",
    "|",
    "%YAML 1.2",
    "---",
    "\"",
    "'",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "=",
    ",",
    ".",
    "\n",
    "\r\n",
    "\t",
    "#",
    "\\",
    "\\u001b",
    "\u{1b}[2K",
    "\u{202e}",
    "\0",
    "-",
    "0",
    "-1",
    "1e308",
    "nan",
    "inf",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "4294967296",
    "true",
    "\"\"\"",
    "a.a.a.a.a",
    "[a.a]",
    "[daemon.web.x]",
    "outcome",
    "at_ms",
    "cell",
    "attempts",
    "failures",
    "é",
];

/// One edit: where (a fraction of the text), what, and how much.
#[derive(Debug, Clone)]
enum Edit {
    Delete { at: f64, len: usize },
    Insert { at: f64, token: usize, repeat: usize },
    DuplicateLine { at: f64 },
    DropLine { at: f64 },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0.0..1.0f64, 1usize..40).prop_map(|(at, len)| Edit::Delete { at, len }),
        (0.0..1.0f64, 0..TOKENS.len(), prop_oneof![9 => 1usize..3, 1 => 100usize..3000])
            .prop_map(|(at, token, repeat)| Edit::Insert { at, token, repeat }),
        (0.0..1.0f64).prop_map(|at| Edit::DuplicateLine { at }),
        (0.0..1.0f64).prop_map(|at| Edit::DropLine { at }),
    ]
}

/// The nearest character boundary at or before `at` of `text`.
fn boundary(text: &str, at: f64) -> usize {
    let mut i = ((text.len() as f64) * at) as usize;
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i.min(text.len())
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut text = text.to_owned();
    for e in edits {
        match e {
            Edit::Delete { at, len } => {
                let start = boundary(&text, *at);
                let mut end = (start + len).min(text.len());
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.replace_range(start..end, "");
            }
            Edit::Insert { at, token, repeat } => {
                let i = boundary(&text, *at);
                text.insert_str(i, &TOKENS[*token].repeat(*repeat));
            }
            Edit::DuplicateLine { at } | Edit::DropLine { at } => {
                let mut lines: Vec<&str> = text.split('\n').collect();
                let i = ((lines.len() as f64) * at) as usize % lines.len().max(1);
                if matches!(e, Edit::DropLine { .. }) {
                    lines.remove(i);
                } else {
                    lines.insert(i, lines[i]);
                }
                text = lines.join("\n");
            }
        }
    }
    text
}

fn seed(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// Runs `f`, failing when it took longer than [`BOUND`].
fn bounded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    let started = Instant::now();
    let out = f();
    let took = started.elapsed();
    prop_assert!(took < BOUND, "{what} took {took:?}");
    Ok(out)
}

fn config_case(edits: &[Edit]) -> Result<(), TestCaseError> {
    for file in ["config/examples/local.toml", "config/crossprobe.toml"] {
        let text = apply(&seed(file), edits);
        bounded("config", || {
            if let Err(e) = ValidatedConfig::parse(&text, Path::new("fuzz.toml")) {
                // Rendering is part of the contract: bounded, one line per problem.
                let shown = e.to_string();
                assert!(shown.lines().count() <= crossprobe::config::MAX_LISTED_PROBLEMS + 2, "{shown}");
                assert!(!shown.chars().any(|c| c.is_control() && c != '\n'), "{shown:?}");
            }
        })?;
    }
    Ok(())
}

fn web_config_case(edits: &[Edit]) -> Result<(), TestCaseError> {
    let text = apply(&seed("tests/config/web/web.yml"), edits);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config/web");
    bounded("web config", || {
        if let Err(problems) = WebConfig::parse(&text, &dir) {
            for p in problems {
                let shown = p.render(Path::new("web.yml"));
                assert!(!shown.chars().any(char::is_control), "{shown:?}");
            }
        }
    })
}

fn replay_case(edits: &[Edit]) -> Result<(), TestCaseError> {
    let recording: String =
        seed("tests/replay/zone-b.jsonl").lines().take(300).collect::<Vec<_>>().join("\n");
    let text = apply(&recording, edits);
    bounded("replay", || {
        if let Ok(matrix) = infer_matrix(text.as_bytes()) {
            let _ = replay(text.as_bytes(), &matrix, &CorrelatorSettings::default(), &mut std::io::sink());
        }
    })
}

fn localize_case(edits: &[Edit]) -> Result<(), TestCaseError> {
    let text = apply(&seed("tests/localize/zone-b.csv"), edits);
    bounded("localize", || {
        if let Ok(snapshot) = parse_csv(&text) {
            let _ = localize(&snapshot, &CorrelatorSettings::default());
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn edited_configs_never_panic_or_hang(edits in proptest::collection::vec(edit(), 1..8)) {
        config_case(&edits)?;
    }

    #[test]
    fn edited_web_configs_never_panic_or_hang(edits in proptest::collection::vec(edit(), 1..8)) {
        web_config_case(&edits)?;
    }

    #[test]
    fn edited_replay_lines_never_panic_or_hang(edits in proptest::collection::vec(edit(), 1..8)) {
        replay_case(&edits)?;
    }

    #[test]
    fn edited_snapshots_never_panic_or_hang(edits in proptest::collection::vec(edit(), 1..8)) {
        localize_case(&edits)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    #[ignore = "long: cargo test --test fuzz_inputs -- --ignored"]
    fn many_edited_inputs_never_panic_or_hang(edits in proptest::collection::vec(edit(), 1..24)) {
        config_case(&edits)?;
        web_config_case(&edits)?;
        replay_case(&edits)?;
        localize_case(&edits)?;
    }
}
