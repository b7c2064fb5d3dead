//! TOML text to the raw configuration, with a key path and a place for every problem the parser
//! and serde can report.
//!
//! The text is parsed once into a table that keeps every key's span. Deserializing that table
//! into [`RawConfig`] stops at the first mistake; an unknown key is recorded, removed from the
//! table and the rest deserialized again, so every misspelt key is reported in one run (at most
//! [`MAX_UNKNOWN_KEYS`]; any other mistake ends the parse, since what follows from it would be
//! guesswork). Key paths come from the table itself (`targets[1].kafka.fetch_wait`), not from
//! the lines around the error; only a syntax error, which leaves no table, has its path guessed
//! from the headers above it.

use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::{line_col, Problem};
use super::raw::RawConfig;

/// Most unknown keys reported in one run.
pub const MAX_UNKNOWN_KEYS: usize = 50;

/// Dotted keys longer than this many parts are refused by the TOML parser ("recursion limit").
const KEY_DEPTH_LIMIT: usize = 80;

/// Parses `source` into the raw configuration, or every problem found on the way.
pub(super) fn parse(source: &str) -> Result<RawConfig, Vec<Problem>> {
    let mut table = DeTable::parse(source).map_err(|e| vec![syntax_problem(source, &e)])?;
    let mut problems = Vec::new();
    loop {
        let e = match RawConfig::deserialize(toml::de::Deserializer::from(table.clone())) {
            Ok(raw) if problems.is_empty() => return Ok(raw),
            Ok(_) => break,
            Err(e) => e,
        };
        let span = e.span();
        let found = span.as_ref().and_then(|s| find(table.get_ref(), s, ""));
        let location = span.as_ref().map(|s| line_col(source, s.start));
        let path = found.as_ref().map_or(String::new(), |f| f.path.clone());
        problems.push(Problem::new(&path, e.message().trim_end(), location));
        let unknown = e.message().starts_with("unknown field");
        let removed = match (&span, &found) {
            (Some(s), Some(f)) if unknown && f.is_key => remove_key(table.get_mut(), s),
            _ => false,
        };
        if !removed || problems.len() >= MAX_UNKNOWN_KEYS {
            break;
        }
    }
    problems.sort_by_key(|p| p.location.unwrap_or((usize::MAX, 0)));
    Err(problems)
}

/// Where an error's span lies in the table.
struct Found {
    /// `targets[1].kafka.fetch_wait`.
    path: String,
    /// The span is a key's (an unknown key), not a value's.
    is_key: bool,
    /// Length of the matched span: the innermost match wins.
    width: usize,
}

/// The key whose span is `span`, or else the innermost value containing it.
fn find(table: &DeTable<'_>, span: &Range<usize>, prefix: &str) -> Option<Found> {
    let mut best: Option<Found> = None;
    let mut consider = |f: Found| {
        if best.as_ref().is_none_or(|b| f.is_key && !b.is_key || f.is_key == b.is_key && f.width < b.width) {
            best = Some(f);
        }
    };
    for (k, v) in table.iter() {
        let path = join(prefix, k.get_ref());
        if k.span() == *span {
            consider(Found { path, is_key: true, width: 0 });
            continue;
        }
        if let Some(f) = find_in_value(v, span, &path) {
            consider(f);
        }
    }
    best
}

fn find_in_value(v: &Spanned<DeValue<'_>>, span: &Range<usize>, path: &str) -> Option<Found> {
    let inner = match v.get_ref() {
        DeValue::Table(t) => find(t, span, path),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let path = format!("{path}[{i}]");
            find_in_value(item, span, &path)
        }),
        _ => None,
    };
    inner.or_else(|| {
        let s = v.span();
        (s.start <= span.start && span.end <= s.end).then(|| Found {
            path: path.to_owned(),
            is_key: false,
            width: s.end - s.start,
        })
    })
}

/// Removes the key whose span is `span`, wherever it is; whether one was.
fn remove_key(table: &mut DeTable<'_>, span: &Range<usize>) -> bool {
    let key = table.iter().find(|(k, _)| k.span() == *span).map(|(k, _)| k.clone());
    if let Some(key) = key {
        return table.remove(&key).is_some();
    }
    table.iter_mut().any(|(_, v)| remove_in_value(v.get_mut(), span))
}

fn remove_in_value(v: &mut DeValue<'_>, span: &Range<usize>) -> bool {
    match v {
        DeValue::Table(t) => remove_key(t, span),
        DeValue::Array(items) => items.iter_mut().any(|item| remove_in_value(item.get_mut(), span)),
        _ => false,
    }
}

/// `prefix.key`, the key quoted when it is not a bare TOML key.
fn join(prefix: &str, key: &str) -> String {
    let key = super::error::key(key);
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

/// A syntax error: no table exists, so the key path is guessed from the text.
fn syntax_problem(source: &str, e: &toml::de::Error) -> Problem {
    let message = e.message().trim_end();
    let span = e.span().or_else(|| (message == "recursion limit").then(|| deep_key(source)).flatten());
    let message = if message == "recursion limit" {
        format!("a key has more than {KEY_DEPTH_LIMIT} dotted parts (recursion limit)")
    } else {
        message.to_owned()
    };
    Problem::new(
        &span.clone().map(|s| key_path_at(source, s)).unwrap_or_default(),
        &message,
        span.map(|s| line_col(source, s.start)),
    )
}

/// The first key, in a header or before `=`, of more than [`KEY_DEPTH_LIMIT`] dotted parts: the
/// TOML parser reports it without a place.
fn deep_key(source: &str) -> Option<Range<usize>> {
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let start = offset + (line.len() - trimmed.len());
        offset += line.len();
        let key = match trimmed.strip_prefix('[') {
            Some(header) => header.split(']').next().unwrap_or(""),
            None => trimmed.split('=').next().unwrap_or(""),
        };
        let (mut parts, mut quote) = (1, None);
        for c in key.chars() {
            match (c, quote) {
                ('"' | '\'', None) => quote = Some(c),
                (c, Some(q)) if c == q => quote = None,
                ('.', None) => parts += 1,
                _ => {}
            }
        }
        if parts > KEY_DEPTH_LIMIT {
            return Some(start..start + trimmed.len());
        }
    }
    None
}

/// Best-effort key path of the line holding `span`: the last table header up to it (arrays of
/// tables indexed) and the key on the line.
fn key_path_at(source: &str, span: Range<usize>) -> String {
    let (line_no, _) = line_col(source, span.start);
    let lines: Vec<&str> = source.lines().collect();
    let mut arrays: std::collections::HashMap<String, usize> = Default::default();
    let mut table = String::new();
    for line in lines.iter().take(line_no) {
        let l = line.trim();
        if let Some(h) = l.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let h = h.trim().to_owned();
            let n = arrays.entry(h.clone()).and_modify(|n| *n += 1).or_insert(0);
            table = format!("{h}[{n}]");
        } else if let Some(h) = l.strip_prefix('[').and_then(|l| l.split(']').next()) {
            let h = h.trim();
            // A sub-table of the current array element: `[targets.kafka]` after `[[targets]]`.
            table = match h.split_once('.') {
                Some((head, rest)) if arrays.contains_key(head) => {
                    format!("{head}[{}].{rest}", arrays[head])
                }
                _ => h.to_owned(),
            };
        }
    }
    let line = lines.get(line_no.saturating_sub(1)).copied().unwrap_or("");
    let key = line.split_once('=').map(|(k, _)| k.trim()).filter(|k| !k.starts_with('[')).unwrap_or("");
    match (table.is_empty(), key.is_empty()) {
        (_, true) => table,
        (true, false) => key.to_owned(),
        (false, false) => format!("{table}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(source: &str) -> Vec<String> {
        match parse(source) {
            Ok(_) => Vec::new(),
            Err(problems) => problems
                .iter()
                .map(|p| {
                    let (l, c) = p.location.unwrap_or((0, 0));
                    format!("{l}:{c} {}: {}", p.path, p.message.split(',').next().unwrap_or(""))
                })
                .collect(),
        }
    }

    #[test]
    fn every_unknown_key_is_reported_with_its_path() {
        let source = "[daemon]\nlisen = \"x\"\n\n[probe]\nintervall = \"1s\"\n\n[[targets]]\nname = \"k\"\nprotocol = \"kafka\"\naz = \"a\"\nkafka = { fetch_wiat = \"5ms\" }\n\n[[targets]]\nname = \"j\"\nprotocol = \"kafka\"\naz = \"a\"\nbroker_idd = 3\n\n[a.a]\n";
        assert_eq!(
            problems(source),
            [
                "2:1 daemon.lisen: unknown field `lisen`",
                "5:1 probe.intervall: unknown field `intervall`",
                "11:11 targets[0].kafka.fetch_wiat: unknown field `fetch_wiat`",
                "17:1 targets[1].broker_idd: unknown field `broker_idd`",
                "19:2 a: unknown field `a`",
            ]
        );
    }

    #[test]
    fn nested_unknown_tables_and_wrong_types_have_their_paths() {
        assert_eq!(problems("[daemon.web.x]\ny = 1\n"), ["1:13 daemon.web.x: unknown field `x`"]);
        assert_eq!(
            problems("[[targets]]\nname = \"k\"\nprotocol = \"kafka\"\naz = \"a\"\nmessage_size = \"big\"\n"),
            ["5:16 targets[0].message_size: invalid type: string \"big\""]
        );
        assert_eq!(problems("[\"odd key\"]\n"), ["1:2 \"odd key\": unknown field `odd key`"]);
    }

    #[test]
    fn a_too_deep_key_is_located() {
        let deep = vec!["a"; KEY_DEPTH_LIMIT + 5].join(".");
        let got = problems(&format!("[daemon]\nlisten = \"127.0.0.1:1\"\n\n  {deep} = 1\n"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("4:3 daemon.a.a.a"), "{got:?}");
        assert!(got[0].ends_with(": a key has more than 80 dotted parts (recursion limit)"), "{got:?}");
        let got = problems(&format!("[{deep}]\n"));
        assert!(got[0].starts_with("1:1 ") && got[0].contains("recursion limit"), "{got:?}");
    }

    #[test]
    fn syntax_errors_on_a_header_line_name_that_header() {
        let got = problems("[[tenants]]\nname = \"a\"\n\n[tenants.kafka\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("4:") && got[0].contains(" tenants[0].kafka: "), "{got:?}");
    }
}
