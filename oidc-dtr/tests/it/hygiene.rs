//! Source checks the type system cannot make.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The library code of a file (its `#[cfg(test)] mod tests` cut off).
fn library_code(path: &Path) -> String {
    // Unit tests moved to a file of their own (`mod tests;`) are test code.
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Secrets are compared in constant time: their newtypes' `PartialEq` does
/// it, and raw values are compared with `ct_eq`. A plain `==` or `!=` on a
/// `.secret()` would leak, through timing, how much of a guess is right.
#[test]
fn no_plain_equality_on_secret_values() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 20);
    let mut offenders = Vec::new();
    for f in &files {
        for (n, line) in library_code(f).lines().enumerate() {
            let l = line.replace(' ', "");
            let bad = l.contains(".secret()==")
                || l.contains(".secret()!=")
                || (l.contains("==") && l.contains(".secret()") && !l.contains("ct_eq"))
                || (l.contains("!=") && l.contains(".secret()") && !l.contains("ct_eq"));
            if bad && !l.trim_start().starts_with("//") {
                offenders.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "plain equality on secrets:\n{}",
        offenders.join("\n")
    );
}

/// The library's own dependencies include no web framework: the ping
/// receiver speaks `http` types only (frameworks are dev-dependencies).
#[test]
fn no_web_framework_among_the_dependencies() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap();
    for framework in ["axum", "actix", "warp", "rocket", "poem", "tide", "salvo"] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(framework)),
            "{framework} is a normal dependency"
        );
    }
}

/// What the client, its errors, the ping receiver and the futures it
/// returns promise to the compiler: they can cross threads, so an app can
/// hold them in shared state and `tokio::spawn` the futures.
#[allow(dead_code)]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<oidc_dtr::DtrClient>();
    send_sync::<oidc_dtr::DtrClientBuilder>();
    send_sync::<oidc_dtr::Error>();
    send_sync::<oidc_dtr::error::StoreError>();
    send_sync::<oidc_dtr::ping::PingReceiver>();
    send_sync::<oidc_dtr::Outcome>();
    send_sync::<oidc_dtr::TokenSet>();
    send_sync::<oidc_dtr::DeferredAuthentication>();
    send_sync::<oidc_dtr::store::FileStore>();
    send_sync::<oidc_dtr::store::MemoryStore>();

    async fn futures(c: oidc_dtr::DtrClient, id: oidc_dtr::DeferredId) {
        send(&oidc_dtr::DtrClient::builder().build());
        send(&c.wait(&id));
        send(&c.cancel(&id));
        send(&c.ack(&id));
        send(&c.undelivered());
        send(&c.poll_status(&id));
        send(&c.wake(&id));
        send(&c.shutdown());
        send(&c.is_idle());
    }
    let _ = futures;
}
