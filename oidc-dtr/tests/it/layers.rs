//! The library's layers, checked from its source: the protocol core
//! (`proto/`, `jose/`) does no IO and never names the client, the engine or
//! any type of theirs, and no top-level module imports one above it, so
//! there is no import cycle between them.
//!
//! The checks read the code, not the comments: comments are dropped (a doc
//! link to a higher layer explains, it does not depend) and string literals
//! are blanked. Unit-test modules (`#[cfg(test)] mod …`, inline or in their
//! own file) may use anything and are skipped. Paths are resolved, so
//! `crate::{engine::X}`, `super::super::engine` and `self::…` count as much
//! as `crate::engine::X`, while `base64::engine` does not.

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
    // The public facade modules: re-exports of the layers below.
    ("assurance", 8),
    ("ietf", 8),
    ("poll", 8),
    ("tokens", 8),
    // Documentation only (no items): its pages may link to every layer.
    ("guide", 9),
];

/// The top-level modules that make up the pure protocol core.
const CORE: &[&str] = &["jose", "proto"];

/// What the pure layers must never contain, as text (outside their unit
/// tests): reading the clock is IO too.
const FORBIDDEN_TEXT_IN_CORE: &[&str] = &["SystemTime::now", "Instant::now", "Clock", ".now()"];

/// Paths the pure layers must never start one with: IO, the HTTP transport
/// and the async runtime.
const FORBIDDEN_EXTERNAL_IN_CORE: &[&[&str]] = &[
    &["tokio"],
    &["reqwest"],
    &["hyper"],
    &["std", "fs"],
    &["std", "io"],
    &["std", "net"],
];

/// Types of the layers above the core (and of the transport's errors) that
/// the core must not name by any path. The test adds every type, trait and
/// alias declared in a higher module to this list by itself.
const FORBIDDEN_TYPES_IN_CORE: &[&str] = &[
    "HttpError",
    "TransportErrorKind",
    "DtrClient",
    "DtrClientBuilder",
    "AuthHandle",
    "PingReceiver",
    "FileStore",
    "MemoryStore",
    "PostgresStore",
    "HttpEdge",
    "JwksCache",
    "DriverHandle",
    "ClientInner",
];

/// Names a higher layer declares a type of its own with, that the core
/// uses for something else: the `base64::Engine` trait, the
/// `serde_json::map::Entry` enum, the `End` variant of the poll machine's
/// steps, and the `serde_json::de::Read` trait (the file store has a
/// private `Read` alias). They are not forbidden.
const HOMONYMS: &[&str] = &["Engine", "Entry", "End", "Read"];

/// Names from [`FORBIDDEN_TYPES_IN_CORE`] one core file may use, and why.
const ALLOWED_IN_CORE: &[(&str, &str)] = &[
    // `PollFailure::Transport { kind }` is public API: the machine is told
    // which kind of transport failure happened so it can decide to retry.
    // `TransportErrorKind` is a plain `Copy` data enum in `error.rs` (no IO,
    // no transport type inside it); the core only carries it.
    ("proto/poll/outcome.rs", "TransportErrorKind"),
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

/// Rust source with its comments dropped and the contents of its string
/// and character literals blanked (braces and names inside them are not
/// code).
fn strip_comments_and_literals(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let at = |k: usize| c.get(i + k).copied().unwrap_or('\0');
        if at(0) == '/' && at(1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if at(0) == '/' && at(1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if ident(at(0)) {
            let start = i;
            while i < c.len() && ident(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let raw = (word == "r" || word == "br" || word == "cr")
                && matches!(c.get(i), Some('"' | '#'));
            if raw {
                let mut hashes = 0;
                while c.get(i) == Some(&'#') {
                    hashes += 1;
                    i += 1;
                }
                if c.get(i) != Some(&'"') {
                    // `r#ident`: a raw identifier.
                    out.push_str(&word);
                    out.extend(std::iter::repeat_n('#', hashes));
                    continue;
                }
                i += 1;
                loop {
                    if i >= c.len() {
                        break;
                    }
                    if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                        i += 1 + hashes;
                        break;
                    }
                    i += 1;
                }
                out.push_str("\"\"");
            } else {
                out.push_str(&word);
            }
        } else if at(0) == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if at(0) == '\'' && (at(1) == '\\' || (at(1) != '\0' && at(2) == '\'')) {
            // A character literal (a lifetime has no closing quote).
            i += if at(1) == '\\' { 3 } else { 2 };
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// A token of stripped code: a name, `::`, or one punctuation character.
fn tokens(code: &str) -> Vec<String> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if c[i].is_alphanumeric() || c[i] == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(c[start..i].iter().collect());
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            out.push("::".to_owned());
            i += 2;
        } else if c[i].is_whitespace() {
            i += 1;
        } else {
            out.push(c[i].to_string());
            i += 1;
        }
    }
    out
}

/// The code of a source file, split into tokens, with its unit-test modules
/// cut out; and the names of the child modules that are unit tests kept in
/// their own files (`#[cfg(test)] mod tests;`).
fn production_code(text: &str) -> (Vec<String>, Vec<String>) {
    let toks = tokens(&strip_comments_and_literals(text));
    let cfg_test = ["#", "[", "cfg", "(", "test", ")", "]"];
    let mut out = Vec::new();
    let mut test_children = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let is_cfg_test = toks[i..].starts_with(&cfg_test.map(String::from));
        let m = i + cfg_test.len();
        if is_cfg_test && toks.get(m).is_some_and(|t| t == "mod") {
            let name = toks[m + 1].clone();
            if toks[m + 2] == ";" {
                test_children.push(name);
                i = m + 3;
            } else {
                assert_eq!(toks[m + 2], "{", "odd test module `{name}`");
                let mut depth = 0;
                let mut j = m + 2;
                loop {
                    match toks[j].as_str() {
                        "{" => depth += 1,
                        "}" => depth -= 1,
                        _ => {}
                    }
                    j += 1;
                    if depth == 0 {
                        break;
                    }
                }
                i = j;
            }
            continue;
        }
        out.push(toks[i].clone());
        i += 1;
    }
    (out, test_children)
}

fn is_name(t: &str) -> bool {
    t.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// Every path in the code, `use` trees expanded: `use crate::{a::B, c}`
/// gives `crate::a::B` and `crate::c`.
fn paths(toks: &[String]) -> Vec<Vec<String>> {
    /// Parses a use tree at `toks[*i]` under `prefix`.
    fn use_tree(toks: &[String], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut path = prefix;
        if toks.get(*i).is_some_and(|t| t == "::") {
            *i += 1;
        }
        loop {
            match toks.get(*i).map(String::as_str) {
                Some("{") => {
                    *i += 1;
                    while toks.get(*i).is_some_and(|t| t != "}") {
                        use_tree(toks, i, path.clone(), out);
                        if toks.get(*i).is_some_and(|t| t == ",") {
                            *i += 1;
                        }
                    }
                    *i += 1;
                    return;
                }
                Some("*") => {
                    *i += 1;
                    path.push("*".to_owned());
                    out.push(path);
                    return;
                }
                Some(t) if is_name(t) => {
                    path.push(t.to_owned());
                    *i += 1;
                    match toks.get(*i).map(String::as_str) {
                        Some("::") => *i += 1,
                        Some("as") => {
                            *i += 2;
                            out.push(path);
                            return;
                        }
                        _ => {
                            out.push(path);
                            return;
                        }
                    }
                }
                _ => {
                    out.push(path);
                    return;
                }
            }
        }
    }

    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if toks[i] == "use" {
            i += 1;
            use_tree(toks, &mut i, Vec::new(), &mut out);
            continue;
        }
        if is_name(&toks[i]) || toks[i] == "::" {
            let mut path = Vec::new();
            if toks[i] == "::" {
                i += 1;
            }
            while i < toks.len() && is_name(&toks[i]) {
                path.push(toks[i].clone());
                if toks.get(i + 1).is_some_and(|t| t == "::")
                    && toks.get(i + 2).is_some_and(|t| is_name(t))
                {
                    i += 2;
                } else {
                    i += 1;
                    break;
                }
            }
            if !path.is_empty() {
                out.push(path);
            }
            continue;
        }
        i += 1;
    }
    out
}

/// The module path of a file (`proto/poll/mod.rs` is `proto::poll`).
fn module_of(path: &Path) -> Vec<String> {
    let rel = path.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_str().unwrap().to_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.strip_suffix(".rs").unwrap();
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

/// A path resolved from the crate root, if it starts at `crate`, `self` or
/// `super`; `None` for paths into other crates (and into child modules).
fn resolve(path: &[String], module: &[String]) -> Option<Vec<String>> {
    let mut abs = match path.first()?.as_str() {
        "crate" => Vec::new(),
        "self" | "super" => module.to_vec(),
        _ => return None,
    };
    let skip = usize::from(path[0] == "crate" || path[0] == "self");
    for seg in &path[skip..] {
        match seg.as_str() {
            "super" => {
                abs.pop()?;
            }
            "self" => {}
            _ => abs.push(seg.clone()),
        }
    }
    Some(abs)
}

/// A source file of the crate, with what the checks need of it.
struct Source {
    rel: String,
    module: Vec<String>,
    tokens: Vec<String>,
}

/// Every production source file of the crate (unit-test files left out).
fn sources() -> Vec<Source> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let mut all = Vec::new();
    let mut test_modules = Vec::new();
    for f in &files {
        let module = module_of(f);
        let (tokens, test_children) = production_code(&std::fs::read_to_string(f).unwrap());
        for child in test_children {
            test_modules.push([module.clone(), vec![child]].concat());
        }
        let rel = f.strip_prefix(src()).unwrap();
        let rel = rel.to_str().unwrap().replace('\\', "/");
        all.push(Source {
            rel,
            module,
            tokens,
        });
    }
    all.retain(|s| !test_modules.iter().any(|t| s.module.starts_with(t)));
    all
}

fn top(module: &[String]) -> Option<&str> {
    module.first().map(String::as_str)
}

/// The names of the types, traits and aliases a source declares; with
/// `public_only`, of its public (or crate-visible) ones only (associated
/// types and private helpers left out).
fn declared_types(s: &Source, public_only: bool) -> impl Iterator<Item = &str> {
    let t = &s.tokens;
    (1..t.len().saturating_sub(1)).filter_map(move |i| {
        let kind = matches!(
            t[i].as_str(),
            "struct" | "enum" | "trait" | "type" | "union"
        );
        let public = t[i - 1] == "pub"
            || (t[i - 1] == ")" && t[..i].iter().rev().nth(3).is_some_and(|p| p == "pub"));
        (kind && (public || !public_only)).then_some(t[i + 1].as_str())
    })
}

/// The problems of one core source; `forbidden` holds the type names.
fn core_findings(s: &Source, forbidden: &BTreeSet<String>) -> Vec<String> {
    let ranks: BTreeMap<&str, u8> = RANKS.iter().copied().collect();
    let own = ranks[top(&s.module).unwrap()];
    let mut found = BTreeSet::new();
    let text = s.tokens.concat();
    for bad in FORBIDDEN_TEXT_IN_CORE {
        if text.contains(&bad.replace(' ', "")) {
            found.insert(format!("{} names `{bad}`", s.rel));
        }
    }
    for t in &s.tokens {
        let allowed = ALLOWED_IN_CORE.contains(&(s.rel.as_str(), t.as_str()));
        if forbidden.contains(t) && !allowed {
            found.insert(format!("{} names the type `{t}`", s.rel));
        }
    }
    for p in paths(&s.tokens) {
        for bad in FORBIDDEN_EXTERNAL_IN_CORE {
            if p.len() >= bad.len() && p.iter().zip(bad.iter()).all(|(a, b)| a == b) {
                found.insert(format!("{} names `{}`", s.rel, p.join("::")));
            }
        }
        if let Some(abs) = resolve(&p, &s.module)
            && let Some(to) = top(&abs)
            && ranks.get(to).is_some_and(|&r| r > own)
        {
            found.insert(format!("{} names `crate::{}`", s.rel, abs.join("::")));
        }
    }
    found.into_iter().collect()
}

/// The types the core must not name: the fixed list, and every type
/// declared in a module above the core that no lower module declares too.
fn forbidden_types(all: &[Source]) -> BTreeSet<String> {
    let ranks: BTreeMap<&str, u8> = RANKS.iter().copied().collect();
    let core_rank = CORE.iter().map(|c| ranks[c]).max().unwrap();
    let rank_of = |s: &Source| top(&s.module).map(|t| ranks[t]);
    let mut names: BTreeSet<String> = all
        .iter()
        .filter(|s| rank_of(s).is_some_and(|r| r > core_rank))
        .flat_map(|s| declared_types(s, true))
        .map(str::to_owned)
        .collect();
    for s in all
        .iter()
        .filter(|s| rank_of(s).is_none_or(|r| r <= core_rank))
    {
        for n in declared_types(s, false) {
            names.remove(n);
        }
    }
    for n in HOMONYMS {
        names.remove(*n);
    }
    names.extend(FORBIDDEN_TYPES_IN_CORE.iter().map(|s| (*s).to_owned()));
    names
}

#[test]
fn the_protocol_core_does_no_io_and_never_names_the_client() {
    let all = sources();
    let forbidden = forbidden_types(&all);
    // The list is alive: types declared above the core are in it.
    for name in ["PingSink", "PingVerdict", "DriverConfig", "DtrClient"] {
        assert!(forbidden.contains(name), "`{name}` is not forbidden");
    }
    let core: Vec<&Source> = all
        .iter()
        .filter(|s| top(&s.module).is_some_and(|t| CORE.contains(&t)))
        .collect();
    assert!(core.len() > 10, "the core's files were not found");
    let found: Vec<String> = core
        .iter()
        .flat_map(|s| core_findings(s, &forbidden))
        .collect();
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn the_core_check_sees_every_way_to_name_a_higher_layer() {
    let all = sources();
    let forbidden = forbidden_types(&all);
    let probe = |rel: &str, code: &str| {
        let module = module_of(&src().join(rel));
        let (tokens, _) = production_code(code);
        let s = Source {
            rel: rel.to_owned(),
            module,
            tokens,
        };
        core_findings(&s, &forbidden)
    };
    for (file, code) in [
        ("proto/token.rs", "use crate::DtrClient;"),
        ("proto/token.rs", "use crate::{secret::State, DtrClient};"),
        ("proto/token.rs", "fn f(c: &crate::DtrClient) {}"),
        ("proto/token.rs", "use crate::{engine::transport};"),
        ("proto/poll/mod.rs", "use super::super::engine::driver;"),
        ("proto/token.rs", "use super::super::engine;"),
        (
            "proto/poll/machine.rs",
            "use self::super::super::super::client;",
        ),
        ("jose/jws.rs", "fn f() { crate::ping::x(); }"),
        ("proto/token.rs", "use crate::poll::PollMachine;"),
        ("proto/token.rs", "use crate::tokens::TokenSet;"),
        ("proto/token.rs", "use crate::store::{self};"),
        ("proto/token.rs", "use crate::error::HttpError;"),
        (
            "proto/token.rs",
            "use crate::error::{self, HttpError as H};",
        ),
        ("proto/token.rs", "use std::{io::Read, fmt};"),
        ("proto/token.rs", "use ::tokio::spawn;"),
        ("proto/token.rs", "fn f() -> reqwest::Client { todo!() }"),
        ("proto/token.rs", "let h: Option<HttpEdge> = None;"),
        ("proto/token.rs", "let s: &dyn PingSink;"),
        ("proto/token.rs", "let t = SystemTime::now();"),
        (
            "proto/token.rs",
            "#[cfg(test)] fn f() {} use crate::client::DtrClientBuilder;",
        ),
    ] {
        assert!(!probe(file, code).is_empty(), "not caught: {code}");
    }
    for code in [
        "// use crate::DtrClient; TransportErrorKind",
        "let x = 1; // crate::engine",
        "/// See [`crate::DtrClient`].",
        "/* crate::engine */ const A: &str = \"crate::engine DtrClient\";",
        "use base64::engine::general_purpose::STANDARD;",
        "use crate::proto::poll::PollFailure;",
        "use super::outcome::PollFailure;",
        "use crate::error::{Error, SharedError};",
        "use std::fmt;",
        "#[cfg(test)] mod tests { use crate::DtrClient; }",
        "fn f<'a>(c: char) -> bool { c == '{' || c == '\\'' }",
        "const P: &str = r#\"crate::DtrClient \\\"\"#;",
    ] {
        let found = probe("proto/poll/machine.rs", code);
        assert!(found.is_empty(), "wrongly caught: {code}: {found:?}");
    }
    // The allowance is for one file only.
    assert!(probe("proto/poll/outcome.rs", "kind: TransportErrorKind").is_empty());
    assert!(!probe("proto/token.rs", "kind: TransportErrorKind").is_empty());
}

#[test]
fn no_module_imports_a_higher_layer() {
    let ranks: BTreeMap<&str, u8> = RANKS.iter().copied().collect();
    // Where each name exported at the crate root comes from, so that
    // `crate::DtrClient` counts as naming `client`.
    let lib = sources().into_iter().find(|s| s.module.is_empty()).unwrap();
    let mut root_names: BTreeMap<String, String> = BTreeMap::new();
    for p in paths(&lib.tokens) {
        if p.len() > 1
            && ranks.contains_key(p[0].as_str())
            && let Some(last) = p.last()
        {
            root_names.insert(last.clone(), p[0].clone());
        }
    }
    assert_eq!(
        root_names.get("DtrClient").map(String::as_str),
        Some("client")
    );
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sources() {
        let Some(from) = top(&s.module) else { continue };
        assert!(
            ranks.contains_key(from),
            "top-level module `{from}` has no rank in RANKS: add it"
        );
        for p in paths(&s.tokens) {
            let Some(abs) = resolve(&p, &s.module) else {
                continue;
            };
            let to = match abs.first() {
                Some(m) if ranks.contains_key(m.as_str()) => m.clone(),
                Some(name) => match root_names.get(name) {
                    Some(m) => m.clone(),
                    None => continue,
                },
                None => continue,
            };
            if to != from {
                edges.entry(from.to_owned()).or_default().insert(to);
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
