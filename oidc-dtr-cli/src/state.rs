//! The state directory: the sealing key, one store file per verification,
//! and a small index (`index.json`) of what `dtr list` shows.
//!
//! ```text
//! <state dir>/
//!   store.key                 32 random bytes, mode 0600 (AES-256-GCM key)
//!   index.json                short id -> issuer, client, times, status (no secret)
//!   index.lock                serialises index updates between dtr processes
//!   verifications/<name>.redb one sealed FileStore per verification
//! ```
//!
//! One store per verification keeps verifications independent: `dtr wait`
//! on one while `dtr verify` runs another never meets a locked file.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{CliError, io};
use crate::lib_api::{AesGcmSealer, FileStore, RandomSource, StoreError, SystemRandom};

const KEY_FILE: &str = "store.key";
const INDEX_FILE: &str = "index.json";
const LOCK_FILE: &str = "index.lock";
const STORES: &str = "verifications";

/// The state directory.
#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    root: PathBuf,
}

/// How the client authenticated (paths only: never a secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub(crate) enum AuthSpec {
    /// A public client.
    None,
    /// `client_secret_basic`, the secret read from this file.
    SecretFile {
        /// The file.
        path: PathBuf,
    },
    /// `private_key_jwt`, the key read from this file.
    PrivateKeyFile {
        /// The file (PEM or JWK).
        path: PathBuf,
        /// The algorithm (`None`: from the key, see [`KeySpec`]).
        alg: Option<String>,
    },
    /// `tls_client_auth` (RFC 8705): the client certificate of
    /// [`ClientSpec::client_cert`] authenticates.
    TlsClientAuth,
}

/// A signing key file (PEM or JWK) and its algorithm. Without one, the
/// algorithm comes from the key: a JWK's `alg`, else its type; for a PEM
/// key the first of RS256, ES256, ES384, EdDSA it loads with (PS256, ES256,
/// EdDSA under FAPI 2.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeySpec {
    /// The file.
    pub path: PathBuf,
    /// The algorithm, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
}

/// A client certificate for mutual TLS (RFC 8705): paths only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CertSpec {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM), a secret file.
    pub key: PathBuf,
}

/// Everything needed to rebuild the client of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClientSpec {
    /// The issuer.
    pub issuer: String,
    /// The client id.
    pub client_id: String,
    /// Client authentication.
    pub auth: AuthSpec,
    /// Whether DPoP is used.
    pub dpop: bool,
    /// The OP's cancellation endpoint, if known.
    pub cancel_endpoint: Option<String>,
    /// The redirect URI used (the loopback one).
    pub redirect_uri: String,
    /// The Deferred Token Response draft asked for (`--draft`); `None`
    /// lets the OP's metadata decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<crate::lib_api::Profile>,
    /// Push authorization requests (PAR, RFC 9126).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub par: bool,
    /// Sign authorization requests as request objects (JAR, RFC 9101)
    /// with this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_object_key: Option<KeySpec>,
    /// The client certificate presented at the OP (mutual TLS): a
    /// resumed verification polls with the one it started with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<CertSpec>,
    /// Extra trust roots (PEM) for the OP's TLS endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Follow the FAPI 2.0 Security Profile.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fapi2: bool,
}

/// Where a verification stands, as far as this machine knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    /// Waiting for the OP.
    Pending,
    /// Tokens received.
    Tokens,
    /// Denied by the OP.
    Denied,
    /// Expired at the OP.
    Expired,
    /// The deadline passed.
    Deadline,
    /// Cancelled.
    Cancelled,
    /// Ended on an error.
    Rejected,
}

impl Status {
    /// As shown by `dtr list`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Tokens => "tokens",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Deadline => "deadline",
            Status::Cancelled => "cancelled",
            Status::Rejected => "rejected",
        }
    }
}

/// One verification in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The short id: the fingerprint of the `deferred_auth_id`.
    pub id: String,
    /// The store file name under `verifications/`.
    pub store: String,
    /// The profile it was started with, if any.
    pub profile: Option<String>,
    /// How to rebuild the client.
    pub client: ClientSpec,
    /// When it was started (unix seconds).
    pub created_at: u64,
    /// The deadline (unix seconds).
    pub deadline: Option<u64>,
    /// Its status.
    pub status: Status,
    /// When it ended (unix seconds).
    pub finished_at: Option<u64>,
    /// Whether the outcome was acknowledged (and its tokens deleted).
    #[serde(default)]
    pub acknowledged: bool,
}

/// The index file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Index {
    /// Layout version.
    pub version: u32,
    /// Verifications, oldest first.
    pub entries: Vec<Entry>,
}

impl Index {
    /// Finds an entry by short id (or a unique prefix of at least 4).
    pub(crate) fn find(&self, id: &str) -> Result<&Entry, CliError> {
        let id = id.to_ascii_lowercase();
        if let Some(e) = self.entries.iter().find(|e| e.id == id) {
            return Ok(e);
        }
        let matches: Vec<&Entry> = if id.len() >= 4 {
            self.entries
                .iter()
                .filter(|e| e.id.starts_with(&id))
                .collect()
        } else {
            Vec::new()
        };
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(CliError::usage(
                format!("no verification with id `{id}`"),
                "run `dtr list` to see the ids",
            )),
            _ => Err(CliError::usage(
                format!("`{id}` matches several verifications"),
                "give more characters of the id (see `dtr list`)",
            )),
        }
    }

    /// The most recently started entry.
    pub(crate) fn latest(&self) -> Result<&Entry, CliError> {
        self.entries
            .iter()
            .max_by_key(|e| e.created_at)
            .ok_or_else(|| {
                CliError::usage(
                    "there is no verification yet",
                    "start one with `dtr verify`",
                )
            })
    }
}

impl StateDir {
    /// The state directory: `--state-dir` / `DTR_STATE_DIR`, else the
    /// platform's (XDG state dir on Linux, the local data dir elsewhere).
    pub(crate) fn resolve(given: Option<PathBuf>) -> Result<StateDir, CliError> {
        let root = match given {
            Some(p) => p,
            None => {
                let dirs =
                    directories::ProjectDirs::from("org", "oidc-dtr", "dtr").ok_or_else(|| {
                        CliError::usage(
                            "no home directory found for the state directory",
                            "pass --state-dir DIR or set DTR_STATE_DIR",
                        )
                    })?;
                dirs.state_dir()
                    .unwrap_or_else(|| dirs.data_local_dir())
                    .to_path_buf()
            }
        };
        Ok(StateDir { root })
    }

    fn ensure(&self) -> Result<(), CliError> {
        let stores = self.root.join(STORES);
        if !stores.is_dir() {
            create_private_dir(&self.root)?;
            create_private_dir(&stores)?;
        }
        Ok(())
    }

    /// The sealer, from the key file (created on first use, owner-only).
    pub(crate) fn sealer(&self) -> Result<Arc<AesGcmSealer>, CliError> {
        self.ensure()?;
        let path = self.root.join(KEY_FILE);
        let mut key = [0u8; 32];
        match OpenOptions::new().read(true).open(&path) {
            Ok(mut f) => {
                check_private(&f, &path)?;
                let mut buf = Vec::with_capacity(33);
                Read::by_ref(&mut f)
                    .take(33)
                    .read_to_end(&mut buf)
                    .map_err(|e| io(format!("reading {}", path.display()), e))?;
                if buf.len() != 32 {
                    return Err(CliError::runtime(
                        format!("the key file {} is not 32 bytes long", path.display()),
                        "restore it from a backup; without it the stored verifications cannot be read",
                    ));
                }
                key.copy_from_slice(&buf);
                buf.fill(0);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                SystemRandom.fill(&mut key).map_err(|_| {
                    CliError::runtime("the random number generator failed", "retry")
                })?;
                let mut f = create_private_file(&path)?;
                f.write_all(&key)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| io(format!("writing {}", path.display()), e))?;
            }
            Err(e) => return Err(io(format!("opening {}", path.display()), e)),
        }
        AesGcmSealer::new(key).map(Arc::new).map_err(|e| {
            CliError::runtime(format!("loading the store key: {e}"), "check the key file")
        })
    }

    /// A fresh store file name for a new verification.
    pub(crate) fn new_store_name(&self) -> Result<String, CliError> {
        let mut r = [0u8; 6];
        SystemRandom
            .fill(&mut r)
            .map_err(|_| CliError::runtime("the random number generator failed", "retry"))?;
        let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
        Ok(format!("{}-{hex}.redb", crate::display::now_secs()))
    }

    /// The path of a store file.
    pub(crate) fn store_path(&self, name: &str) -> PathBuf {
        self.root.join(STORES).join(name)
    }

    /// Opens (or creates) a verification's sealed store, owner-only (mode
    /// 0600 on Unix, whatever the umask).
    pub(crate) fn open_store(&self, name: &str) -> Result<FileStore, CliError> {
        let sealer = self.sealer()?;
        let path = self.store_path(name);
        let store = FileStore::open_with_sealer(&path, sealer).map_err(|e| match e {
            StoreError::Locked { .. } => CliError::runtime(
                format!("{} is in use by another dtr process", path.display()),
                "wait for that `dtr verify`/`dtr wait` to end, or stop it with Ctrl-C",
            ),
            StoreError::Sealing(_) => CliError::runtime(
                format!(
                    "{} cannot be opened with the key in {KEY_FILE}: {e}",
                    path.display()
                ),
                "use the state directory's own key file (was it replaced?)",
            ),
            other => CliError::runtime(
                format!("opening {}: {other}", path.display()),
                "check the state directory; `dtr purge` removes finished verifications",
            ),
        })?;
        // The file is in a 0700 directory from its creation on; its own
        // mode is narrowed too, for copies and backups of the directory.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                .map_err(|e| io(format!("restricting {}", path.display()), e))?;
        }
        Ok(store)
    }

    /// Deletes a store file (ignoring a missing one).
    pub(crate) fn remove_store(&self, name: &str) -> Result<(), CliError> {
        match fs::remove_file(self.store_path(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(format!("removing {name}"), e)),
        }
    }

    /// Reads the index (empty when there is none yet).
    pub(crate) fn read_index(&self) -> Result<Index, CliError> {
        let path = self.root.join(INDEX_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                CliError::runtime(
                    format!("{} is not a valid index: {e}", path.display()),
                    "move it away; the verifications' store files are kept",
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index {
                version: 1,
                entries: Vec::new(),
            }),
            Err(e) => Err(io(format!("reading {}", path.display()), e)),
        }
    }

    /// Changes the index under an exclusive lock and writes it atomically.
    pub(crate) fn update_index<T>(
        &self,
        f: impl FnOnce(&mut Index) -> Result<T, CliError>,
    ) -> Result<T, CliError> {
        self.ensure()?;
        let lock_path = self.root.join(LOCK_FILE);
        let mut lock_opts = OpenOptions::new();
        lock_opts.create(true).truncate(false).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            lock_opts.mode(0o600);
        }
        let lock = lock_opts
            .open(&lock_path)
            .map_err(|e| io(format!("opening {}", lock_path.display()), e))?;
        lock.lock()
            .map_err(|e| io(format!("locking {}", lock_path.display()), e))?;
        let mut index = self.read_index()?;
        index.version = 1;
        let out = f(&mut index)?;
        let path = self.root.join(INDEX_FILE);
        let tmp = self.root.join(format!("{INDEX_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(&index)
            .map_err(|e| CliError::runtime(format!("encoding the index: {e}"), "retry"))?;
        let mut file = create_private_file_truncate(&tmp)?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| io(format!("writing {}", tmp.display()), e))?;
        fs::rename(&tmp, &path).map_err(|e| io(format!("writing {}", path.display()), e))?;
        drop(lock);
        Ok(out)
    }

    /// Updates one entry (no-op when it is gone).
    pub(crate) fn update_entry(
        &self,
        id: &str,
        f: impl FnOnce(&mut Entry),
    ) -> Result<(), CliError> {
        self.update_index(|idx| {
            if let Some(e) = idx.entries.iter_mut().find(|e| e.id == id) {
                f(e);
            }
            Ok(())
        })
    }
}

fn create_private_dir(path: &Path) -> Result<(), CliError> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(path)
        .map_err(|e| io(format!("creating {}", path.display()), e))
}

fn create_private_file(path: &Path) -> Result<File, CliError> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
        .map_err(|e| io(format!("creating {}", path.display()), e))
}

fn create_private_file_truncate(path: &Path) -> Result<File, CliError> {
    let mut o = OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
        .map_err(|e| io(format!("creating {}", path.display()), e))
}

/// Refuses a key file that others may read.
fn check_private(f: &File, path: &Path) -> Result<(), CliError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = f
            .metadata()
            .map_err(|e| io(format!("reading {}", path.display()), e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(CliError::usage(
                format!(
                    "the key file {} may be read by other users (mode {:o})",
                    path.display(),
                    mode & 0o777
                ),
                format!("run `chmod 600 {}`", path.display()),
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (f, path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, created_at: u64) -> Entry {
        Entry {
            id: id.into(),
            store: format!("{id}.redb"),
            profile: None,
            client: ClientSpec {
                issuer: "https://op.example".into(),
                client_id: "c".into(),
                auth: AuthSpec::None,
                dpop: true,
                cancel_endpoint: None,
                redirect_uri: "http://127.0.0.1:1/callback".into(),
                draft: None,
                par: false,
                request_object_key: None,
                client_cert: None,
                ca: None,
                fapi2: false,
            },
            created_at,
            deadline: None,
            status: Status::Pending,
            finished_at: None,
            acknowledged: false,
        }
    }

    #[test]
    fn ids_by_full_value_or_unique_prefix() {
        let idx = Index {
            version: 1,
            entries: vec![entry("abcd1234", 2), entry("abce5678", 1)],
        };
        assert_eq!(idx.find("ABCD1234").unwrap().id, "abcd1234");
        assert_eq!(idx.find("abce").unwrap().id, "abce5678");
        assert!(idx.find("abc").is_err(), "too short");
        assert!(idx.find("ffff").is_err());
        assert_eq!(idx.latest().unwrap().id, "abcd1234");
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::resolve(Some(dir.path().join("s"))).unwrap();
        state.sealer().unwrap();
        let key = std::fs::read(dir.path().join("s").join(KEY_FILE)).unwrap();
        assert_eq!(key.len(), 32);
        state.sealer().unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("s").join(KEY_FILE)).unwrap(),
            key
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = fs::metadata(dir.path().join("s").join(KEY_FILE)).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o600);
            let m = fs::metadata(dir.path().join("s")).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o700);
        }
    }

    #[test]
    fn entries_written_before_the_high_assurance_options_still_load() {
        let old = r#"{"issuer":"https://op.example","client_id":"c","auth":{"method":"private_key_file","path":"/k.pem","alg":"RS256"},"dpop":true,"cancel_endpoint":null,"redirect_uri":"http://127.0.0.1:1/callback"}"#;
        let spec: ClientSpec = serde_json::from_str(old).unwrap();
        assert_eq!(
            spec.auth,
            AuthSpec::PrivateKeyFile {
                path: "/k.pem".into(),
                alg: Some("RS256".into())
            }
        );
        assert!(!spec.par && !spec.fapi2);
        assert!(spec.client_cert.is_none() && spec.request_object_key.is_none());
        // And the new ones round-trip.
        let mut spec = spec;
        spec.auth = AuthSpec::TlsClientAuth;
        spec.fapi2 = true;
        spec.par = true;
        spec.client_cert = Some(CertSpec {
            cert: "/c.pem".into(),
            key: "/c.key".into(),
        });
        spec.ca = Some("/ca.pem".into());
        spec.request_object_key = Some(KeySpec {
            path: "/ro.jwk".into(),
            alg: None,
        });
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<ClientSpec>(&text).unwrap(), spec);
    }

    #[test]
    fn index_updates_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::resolve(Some(dir.path().to_path_buf())).unwrap();
        state
            .update_index(|i| {
                i.entries.push(entry("11112222", 5));
                Ok(())
            })
            .unwrap();
        state
            .update_entry("11112222", |e| e.status = Status::Denied)
            .unwrap();
        let idx = state.read_index().unwrap();
        assert_eq!(idx.entries.len(), 1);
        assert_eq!(idx.entries[0].status, Status::Denied);
    }
}
