//! The file's layout and the reading of it: table definitions, the `meta`
//! checks made at open (kind, schema version, seal check, owner, and the
//! move of the pre-group-commit `due` index into `pending`), the mapping
//! of redb's errors, and the encoding and versioned decoding of records.

use std::path::Path;

use redb::{
    DatabaseError, ReadableTable, ReadableTableMetadata, Table, TableDefinition, TableHandle,
};

use crate::store::records::{open_machine, open_record, seal_record};
use crate::store::{Record, SCHEMA_VERSION, StoreError};

use super::Inner;

pub(super) type Key = [u8; 32];
pub(super) type IndexKey = (u64, [u8; 32]);

pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(super) const RECORDS: TableDefinition<Key, &[u8]> = TableDefinition::new("records");
/// Every unfinished record at its due time; the value is its latest poll
/// state (sealed like the record), or empty while the record's own is
/// current. Keyed by due time, so that a state update, which moves a record
/// from one due time to a later one, writes pages near its neighbours in
/// time rather than one random page per record.
pub(super) const PENDING: TableDefinition<IndexKey, &[u8]> = TableDefinition::new("pending");
pub(super) const FINISHED: TableDefinition<IndexKey, ()> = TableDefinition::new("finished");
/// Records set aside because they could not be read (see
/// [`Store::quarantined`]): the reason, the record's bytes and its latest
/// poll state, as found (see [`QuarantineEntry`]).
pub(super) const QUARANTINE: TableDefinition<Key, &[u8]> = TableDefinition::new("quarantine");
/// The index of unfinished records in files written before group commit
/// (moved to `pending` at open).
pub(super) const LEGACY_DUE: TableDefinition<IndexKey, ()> = TableDefinition::new("due");

/// `meta["kind"]`: marks a file as ours.
pub(super) const KIND: &[u8] = b"oidc-dtr store";
/// The plaintext of `meta["seal_check"]`, which tells a wrong key at open.
pub(super) const SEAL_CHECK: &[u8] = b"oidc-dtr store seal check v1";
pub(super) const SEAL_CHECK_AAD: &[u8] = b"oidc-dtr/meta/seal_check";

/// Maps an error from opening the database.
pub(super) fn open_error(e: DatabaseError, path: &Path) -> StoreError {
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::Locked {
                path: path.to_path_buf(),
            }
        }
        DatabaseError::UpgradeRequired(v) => StoreError::Other(format!(
            "the store file uses redb file format {v}, which this release cannot read"
        )),
        other => db_error(other),
    }
}

/// Maps any redb error. redb's messages name no keys or values, so they
/// carry no secret.
pub(super) fn db_error(e: impl Into<redb::Error>) -> StoreError {
    use std::io::ErrorKind;
    match e.into() {
        redb::Error::Corrupted(detail) => StoreError::corrupt(None, detail),
        redb::Error::Io(e)
            if matches!(e.kind(), ErrorKind::InvalidData | ErrorKind::UnexpectedEof) =>
        {
            StoreError::corrupt(None, format!("not a readable store file: {e}"))
        }
        redb::Error::Io(e) => StoreError::from(e),
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            StoreError::Other("the store file is locked".into())
        }
        e @ (redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. }) => {
            StoreError::corrupt(None, format!("not an oidc-dtr store file: {e}"))
        }
        other => StoreError::Other(other.to_string()),
    }
}

pub(super) fn utf8(bytes: &[u8], what: &str) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| StoreError::corrupt(None, format!("the store's {what} is not UTF-8")))
}

impl Inner {
    /// Checks (or, for a new file, writes) the `meta` table.
    pub(super) fn init(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut meta = txn.open_table(META).map_err(db_error)?;
            let kind = meta
                .get("kind")
                .map_err(db_error)?
                .map(|g| g.value().to_vec());
            match kind {
                Some(k) if k == KIND => {}
                Some(_) => {
                    return Err(StoreError::corrupt(None, "not an oidc-dtr store file"));
                }
                None => {
                    // A new file, or somebody else's redb database.
                    let foreign = txn
                        .list_tables()
                        .map_err(db_error)?
                        .any(|t| t.name() != META.name())
                        || !meta.is_empty().map_err(db_error)?;
                    if foreign {
                        return Err(StoreError::corrupt(None, "not an oidc-dtr store file"));
                    }
                    meta.insert("kind", KIND).map_err(db_error)?;
                    meta.insert("schema", SCHEMA_VERSION.to_be_bytes().as_slice())
                        .map_err(db_error)?;
                }
            }
            let schema = meta
                .get("schema")
                .map_err(db_error)?
                .map(|g| g.value().to_vec())
                .ok_or_else(|| StoreError::corrupt(None, "the store has no schema version"))?;
            let schema: [u8; 4] = schema.try_into().map_err(|_| {
                StoreError::corrupt(None, "the store's schema version is malformed")
            })?;
            let schema = u32::from_be_bytes(schema);
            if schema != SCHEMA_VERSION {
                return Err(StoreError::UnsupportedSchema {
                    found: schema,
                    supported: SCHEMA_VERSION,
                    record: None,
                });
            }

            *self.owner.lock().unwrap_or_else(|e| e.into_inner()) = Self::owner(&meta)?;
            let records = txn.open_table(RECORDS).map_err(db_error)?;
            let mut pending = txn.open_table(PENDING).map_err(db_error)?;
            txn.open_table(FINISHED).map_err(db_error)?;
            // Added after the first release: created in older files.
            txn.open_table(QUARANTINE).map_err(db_error)?;
            // Files written before group commit index unfinished records in
            // `due` (same keys, no value): move them to `pending` with an
            // empty value ("the record's own poll state is current"), so no
            // pending authentication of such a file goes unseen.
            if txn
                .list_tables()
                .map_err(db_error)?
                .any(|t| t.name() == LEGACY_DUE.name())
            {
                {
                    let due = txn.open_table(LEGACY_DUE).map_err(db_error)?;
                    for entry in due.iter().map_err(db_error)? {
                        let (k, _) = entry.map_err(db_error)?;
                        pending.insert(k.value(), [].as_slice()).map_err(db_error)?;
                    }
                }
                txn.delete_table(LEGACY_DUE).map_err(db_error)?;
            }
            drop(pending);

            let check = meta
                .get("seal_check")
                .map_err(db_error)?
                .map(|g| g.value().to_vec());
            match (&self.sealer, check) {
                (Some(s), Some(check)) => {
                    let opened = s.open(&check, SEAL_CHECK_AAD).map_err(|_| {
                        StoreError::Sealing(
                            "the key does not open this store (a different key?)".into(),
                        )
                    })?;
                    if opened != SEAL_CHECK {
                        return Err(StoreError::Sealing(
                            "the key does not open this store (a different key?)".into(),
                        ));
                    }
                }
                (Some(s), None) => {
                    if !records.is_empty().map_err(db_error)? {
                        return Err(StoreError::Sealing(
                            "this store holds unencrypted records and cannot be opened \
                             with a sealer"
                                .into(),
                        ));
                    }
                    let sealed = s.seal(SEAL_CHECK, SEAL_CHECK_AAD)?;
                    meta.insert("seal_check", sealed.as_slice())
                        .map_err(db_error)?;
                }
                (None, Some(_)) => {
                    return Err(StoreError::Sealing(
                        "this store is encrypted: open it with its sealer".into(),
                    ));
                }
                (None, None) => {}
            }
        }
        self.commit(txn, true)
    }

    pub(super) fn encode(&self, key: &Key, record: &Record) -> Result<Vec<u8>, StoreError> {
        seal_record(self.sealer.as_deref(), key, record)
    }

    pub(super) fn decode(&self, key: &Key, bytes: &[u8]) -> Result<Record, StoreError> {
        let owner = self.owner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        open_record(
            self.sealer.as_deref(),
            key,
            bytes,
            owner.as_ref().map(|(i, c)| (i.as_str(), c.as_str())),
        )
    }

    /// A record as read, with its latest poll state (`state`: the value of
    /// its `PENDING` entry, empty while the record's own is current).
    pub(super) fn decode_with_state(
        &self,
        key: &Key,
        bytes: &[u8],
        state: Option<&[u8]>,
    ) -> Result<Record, StoreError> {
        let mut record = self.decode(key, bytes)?;
        if let Some(state) = state.filter(|s| !s.is_empty())
            && !record.is_finished()
        {
            record.machine = open_machine(self.sealer.as_deref(), key, state)?;
        }
        Ok(record)
    }

    pub(super) fn owner(meta: &Table<&str, &[u8]>) -> Result<Option<(String, String)>, StoreError> {
        let issuer = meta.get("issuer").map_err(db_error)?;
        let client = meta.get("client_id").map_err(db_error)?;
        match (issuer, client) {
            (Some(i), Some(c)) => Ok(Some((
                utf8(i.value(), "issuer")?,
                utf8(c.value(), "client id")?,
            ))),
            (None, None) => Ok(None),
            _ => Err(StoreError::corrupt(
                None,
                "the store's owner is half recorded",
            )),
        }
    }
}
