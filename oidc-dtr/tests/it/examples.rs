//! The examples: each header's `cargo run` command names that example and
//! only features that exist, and the examples that end on their own run to
//! their end here, against the mock OP (the same `run` their `main` calls).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use oidc_dtr::{Outcome, Profile};

#[allow(dead_code)]
#[path = "../../examples/cli_login.rs"]
mod cli_login;
#[allow(dead_code)]
#[path = "../../examples/device_flow.rs"]
mod device_flow;
#[allow(dead_code)]
#[path = "../../examples/fapi2.rs"]
mod fapi2;
#[allow(dead_code)]
#[path = "../../examples/hyper_ping.rs"]
mod hyper_ping;
#[allow(dead_code)]
#[path = "../../examples/quickstart.rs"]
mod quickstart;

const CRATE: &str = env!("CARGO_MANIFEST_DIR");

/// Every example target: `examples/x.rs` and `examples/x/main.rs`, by name.
fn example_files() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(Path::new(CRATE).join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            out.push((name, path));
        } else if path.join("main.rs").is_file() {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            out.push((name, path.join("main.rs")));
        }
    }
    out.sort();
    out
}

/// The `[features]` of the crate's manifest, and the `required-features`
/// of each `[[example]]`.
fn manifest() -> (BTreeSet<String>, Vec<(String, Vec<String>)>) {
    let text = std::fs::read_to_string(Path::new(CRATE).join("Cargo.toml")).unwrap();
    let mut features = BTreeSet::new();
    let mut required = Vec::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match section.as_str() {
            "[features]" => {
                features.insert(key.to_owned());
            }
            "[[example]]" if key == "name" => {
                required.push((value.trim_matches('"').to_owned(), Vec::new()));
            }
            "[[example]]" if key == "required-features" => {
                let list = value.trim_matches(['[', ']']).split(',');
                required.last_mut().unwrap().1 = list
                    .map(|f| f.trim().trim_matches('"').to_owned())
                    .filter(|f| !f.is_empty())
                    .collect();
            }
            _ => {}
        }
    }
    (features, required)
}

/// The shell commands of a file's leading `//!` header, continuation lines
/// (`\`) joined.
fn header_commands(source: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in source.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            break;
        };
        let doc = doc.trim();
        match doc.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(doc);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    commands
}

/// The features `default` turns on, from the library's Cargo.toml.
fn default_features() -> Vec<String> {
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"),
    )
    .unwrap();
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("default ="))
        .expect("a `default` feature list");
    line.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_example_header_has_a_cargo_run_command_that_works() {
    let (features, required) = manifest();
    assert!(features.contains("postgres"), "{features:?}");
    let examples = example_files();
    assert!(examples.len() >= 8, "{examples:?}");
    for (name, path) in examples {
        let source = std::fs::read_to_string(&path).unwrap();
        let runs: Vec<_> = header_commands(&source)
            .into_iter()
            .filter(|c| c.contains("cargo run"))
            .collect();
        assert!(!runs.is_empty(), "{name}: no `cargo run` in its header");
        let needs = required
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| f.clone())
            .unwrap_or_default();
        for run in runs {
            let args: Vec<&str> = run
                .split_ascii_whitespace()
                .map(|w| w.trim_matches('`'))
                .skip_while(|w| *w != "run")
                .take_while(|w| *w != "--")
                .collect();
            let after = |flag: &str| {
                args.iter()
                    .position(|w| *w == flag)
                    .and_then(|i| args.get(i + 1))
                    .copied()
            };
            assert_eq!(after("--example"), Some(name.as_str()), "{name}: `{run}`");
            if let Some(package) = after("-p") {
                assert_eq!(package, "oidc-dtr", "{name}: `{run}`");
            }
            let mut enabled: BTreeSet<String> = after("--features")
                .map(|f| f.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            if !args.contains(&"--no-default-features") {
                enabled.extend(default_features());
            }
            for f in &enabled {
                assert!(features.contains(f), "{name}: no feature `{f}`: `{run}`");
            }
            for f in &needs {
                assert!(enabled.contains(f), "{name} requires `{f}`: `{run}`");
            }
        }
    }
}

#[test]
fn the_header_parser_sees_a_bad_command() {
    let cmds = header_commands(
        "//! ```sh\n//! X=1 \\\n//!   cargo run --example quickstart --features testkit\n//! ```\nuse x;\n//! cargo run --example later\n",
    );
    assert_eq!(
        cmds.iter()
            .filter(|c| c.contains("cargo run"))
            .collect::<Vec<_>>(),
        ["X=1  cargo run --example quickstart --features testkit"]
    );
    assert!(!manifest().0.contains("testkit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_runs_to_its_end_across_a_restart() {
    quickstart::run(Profile::Oidc, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_runs_to_its_end_on_the_ietf_draft() {
    quickstart::run(Profile::Ietf, false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_ping_runs_to_its_end() {
    hyper_ping::run().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_login_gets_tokens_through_its_loopback_listener() {
    for draft in [Profile::Oidc, Profile::Ietf] {
        let outcome = cli_login::run(draft).await.unwrap();
        let Outcome::Tokens(tokens) = outcome else {
            panic!("{draft}: {}", outcome.kind())
        };
        assert!(!tokens.claims().subject().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_flow_gets_tokens_after_the_deferral() {
    let outcome = device_flow::run().await.unwrap();
    assert!(matches!(outcome, Outcome::Tokens(_)), "{}", outcome.kind());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fapi2_gets_dpop_bound_tokens_with_par_and_a_request_object() {
    let outcome = fapi2::run(false).await.unwrap();
    let Outcome::Tokens(tokens) = outcome else {
        panic!("{}", outcome.kind())
    };
    assert!(tokens.is_dpop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fapi2_mtls_variant_runs_to_its_end_bound_to_the_certificate() {
    let outcome = fapi2::run(true).await.unwrap();
    let Outcome::Tokens(tokens) = outcome else {
        panic!("{}", outcome.kind())
    };
    assert!(!tokens.is_dpop(), "certificate-bound, not DPoP");
}
