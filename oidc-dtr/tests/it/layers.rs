//! The library's layers, checked from its source: the protocol core
//! (`proto/`, `jose/`) does no IO and never names the client, and no
//! top-level module imports one above it, so there is no import cycle
//! between them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules, lowest first. A module may name only modules of
/// a lower rank (and itself).
const RANKS: &[(&str, u8)] = &[
    ("time", 0),
    ("random", 0),
    ("secret", 0),
    ("error", 1),
    ("json", 2),
    ("jose", 3),
    ("proto", 4),
    ("ping", 5),
    ("store", 5),
    ("engine", 6),
    ("client", 7),
    // Documentation only (no items): its pages may link to every layer.
    ("guide", 8),
];

/// What the pure layers must never contain (outside their unit tests).
const FORBIDDEN_IN_CORE: &[&str] = &[
    "tokio",
    "reqwest",
    "hyper",
    "crate::client",
    "crate::engine",
    "crate::store",
    "crate::ping",
    "ClientInner",
    "SystemTime::now",
    "Instant::now",
    "Clock",
    ".now()",
    "std::fs",
    "std::net::Tcp",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file: comments dropped, and the unit tests at its end cut
/// off (they may use anything).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level module a file belongs to.
fn top_module(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_owned())
}

#[test]
fn the_protocol_core_does_no_io_and_never_names_the_client() {
    let mut files = Vec::new();
    rust_files(&src().join("proto"), &mut files);
    rust_files(&src().join("jose"), &mut files);
    assert!(files.len() > 10, "the core's files were not found");
    let mut found = Vec::new();
    for f in &files {
        let code = code(f);
        for bad in FORBIDDEN_IN_CORE {
            if code.contains(bad) {
                found.push(format!("{} names `{bad}`", f.display()));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn no_module_imports_a_higher_layer() {
    let ranks: BTreeMap<&str, u8> = RANKS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(from) = top_module(f) else { continue };
        assert!(
            ranks.contains_key(from.as_str()),
            "top-level module `{from}` has no rank in RANKS: add it"
        );
        let code = code(f);
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if ranks.contains_key(name.as_str()) && name != from {
                edges.entry(from.clone()).or_default().insert(name);
            }
        }
    }
    let mut violations = Vec::new();
    for (from, tos) in &edges {
        for to in tos {
            if ranks[to.as_str()] >= ranks[from.as_str()] {
                violations.push(format!("`{from}` imports `{to}`"));
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
    // The check is alive: the client does name the layers below it.
    assert!(edges["client"].contains("engine") && edges["engine"].contains("proto"));
}
