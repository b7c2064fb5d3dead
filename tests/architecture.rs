//! The layers of `src/lib.rs`'s module map, enforced: every `crate::` path in the daemon's
//! sources must lead to a module of a lower layer. A module that imports one of its own layer
//! or one above it, or two modules that import each other, fail this test with the file and
//! the import. Rust's module system allows both; the map is the only thing that says no.
//!
//! Test code is left out: files under a `tests/` folder of `src/`, and everything after a
//! file's first `#[cfg(test)]` line (tests may reach anywhere to build what they check).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Module -> layer number, read from the `//! N. [`module`]: ...` lines of `lib.rs` (further
/// modules of the same layer continue on indented `//!    [`module`]: ...` lines).
fn layers(lib: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    let mut layer = None;
    for line in lib.lines() {
        let Some(doc) = line.strip_prefix("//!") else { continue };
        let doc = doc.trim_start();
        if let Some((n, rest)) = doc.split_once(". ") {
            if let Ok(n) = n.parse::<u32>() {
                layer = Some(n);
                add_names(rest, n, &mut out);
                continue;
            }
        }
        match layer {
            Some(n) if doc.starts_with("[`") => add_names(doc, n, &mut out),
            _ if doc.is_empty() => layer = None,
            _ => {}
        }
    }
    out
}

/// The module an entry names: the link it starts with.
fn add_names(entry: &str, layer: u32, out: &mut BTreeMap<String, u32>) {
    if let Some(name) = entry.strip_prefix("[`").and_then(|e| e.split_once("`]")).map(|(n, _)| n) {
        out.insert(name.to_owned(), layer);
    }
}

/// The top-level module a source file belongs to (`src/workers/cell.rs` -> `workers`).
fn room(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_owned())
}

/// Every module named by a `crate::` path in the non-test part of `text`, with its line.
fn imports(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                // `use crate::{a, b::c};`: the first segment of each item.
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let name: String =
                        item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if !name.is_empty() {
                        out.push((n + 1, name));
                    }
                }
            } else {
                let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.push((n + 1, name));
                }
            }
            rest = after;
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "tests") {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The layer violations of the sources under `src`, as messages naming file, line and import.
fn violations(src: &Path, files: &[(PathBuf, String)], layers: &BTreeMap<String, u32>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut edges: BTreeMap<(String, String), String> = BTreeMap::new();
    for (file, text) in files {
        let Some(from) = room(src, file) else { continue };
        if from == "lib" || from == "main" {
            continue;
        }
        let shown = file.strip_prefix(src.parent().unwrap()).unwrap_or(file).display().to_string();
        let Some(&own) = layers.get(&from) else {
            problems.push(format!("{shown}: module `{from}` is not in the layer map of src/lib.rs"));
            continue;
        };
        for (line, to) in imports(text) {
            if to == from {
                continue;
            }
            let Some(&theirs) = layers.get(&to) else {
                problems
                    .push(format!("{shown}:{line}: imports `crate::{to}`, which is not in the layer map"));
                continue;
            };
            edges.entry((from.clone(), to.clone())).or_insert_with(|| format!("{shown}:{line}"));
            if theirs <= own {
                let how = if theirs == own { "of its own layer" } else { "above it" };
                problems.push(format!(
                    "{shown}:{line}: `{from}` (layer {own}) imports `crate::{to}` (layer {theirs}), a module {how}"
                ));
            }
        }
    }
    for ((a, b), at) in &edges {
        if a < b {
            if let Some(back) = edges.get(&(b.clone(), a.clone())) {
                problems.push(format!("`{a}` and `{b}` import each other: {at} and {back}"));
            }
        }
    }
    problems
}

#[test]
fn every_module_imports_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let layers = layers(&lib);
    assert!(layers.len() >= 10, "the layer map of src/lib.rs was not read: {layers:?}");
    let declared: Vec<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ").and_then(|l| l.strip_suffix(';')))
        .map(str::to_owned)
        .collect();
    let unmapped: Vec<&String> = declared.iter().filter(|m| !layers.contains_key(*m)).collect();
    assert!(unmapped.is_empty(), "modules missing from the layer map of src/lib.rs: {unmapped:?}");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    let files: Vec<(PathBuf, String)> =
        paths.into_iter().map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap())).collect();
    let problems = violations(&src, &files, &layers);
    assert!(problems.is_empty(), "imports against the layers of src/lib.rs:\n{}", problems.join("\n"));
}

#[test]
fn an_upward_import_and_a_circle_are_caught() {
    let lib = "//! 1. [`daemon`]: wiring.\n//! 2. [`workers`]: the pool.\n//!    [`status`]: the page.\n//! 3. [`matrix`]: cells.\n";
    let layers = layers(lib);
    assert_eq!(layers.get("status"), Some(&2), "a continuation line belongs to its layer: {layers:?}");
    let src = Path::new("/x/src");
    let files = vec![
        (src.join("daemon.rs"), "use crate::workers::WorkerPool;\n".to_owned()),
        (src.join("workers/mod.rs"), "use crate::{matrix::Cell, status};\n".to_owned()),
        (src.join("status.rs"), "use crate::workers::Seen;\n".to_owned()),
        (
            src.join("matrix.rs"),
            "fn f() { crate::daemon::run(); }\n#[cfg(test)]\nuse crate::workers;\n".to_owned(),
        ),
    ];
    let problems = violations(src, &files, &layers);
    let want = [
        "src/workers/mod.rs:1: `workers` (layer 2) imports `crate::status` (layer 2), a module of its own layer",
        "src/status.rs:1: `status` (layer 2) imports `crate::workers` (layer 2), a module of its own layer",
        "src/matrix.rs:1: `matrix` (layer 3) imports `crate::daemon` (layer 1), a module above it",
        "`status` and `workers` import each other: src/status.rs:1 and src/workers/mod.rs:1",
    ];
    assert_eq!(problems, want);
}
