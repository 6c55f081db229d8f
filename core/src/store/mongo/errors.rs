//! MongoDB driver errors as [`StoreError`]s. Duplicate keys arrive in several shapes (measured on FerretDB
//! 1.24 and per MongoDB's protocol), all mapped to `Duplicate`:
//! - a write error with code 11000 (`insert_one`, `replace_one`, `update_one` on MongoDB; inserts on FerretDB);
//! - an insert-many error whose write-error list holds an 11000;
//! - a command error with code 11000;
//! - a command (or write) error with code 1 whose message carries SQLite's "UNIQUE constraint failed" or
//!   PostgreSQL's SQLSTATE 23505 (FerretDB's updates and replaces: it does not translate them).
//!
//! Connection errors, server selection timeouts and the server's "not primary"/"shutting down" codes are
//! `Unavailable`.

use std::error::Error as _;

use mongodb::error::{Error, ErrorKind, WriteFailure};

use crate::store::{INDEXES, StoreError};

/// What a driver error means to the store.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Classified {
    /// A unique index refused the write; the server's message (may name the index).
    Duplicate(String),
    Other(StoreError),
}

/// The MongoDB codes that mean "the server is (temporarily) not there" rather than "the request is wrong":
/// HostUnreachable, HostNotFound, NetworkTimeout, ShutdownInProgress, PrimarySteppedDown, ExceededTimeLimit,
/// SocketException, NotWritablePrimary, InterruptedAtShutdown, InterruptedDueToReplStateChange,
/// NotPrimaryNoSecondaryOk, NotPrimaryOrSecondary, StaleShardVersion, FailedToSatisfyReadPreference,
/// MaxTimeMSExpired.
const UNAVAILABLE_CODES: &[i32] = &[6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 63, 133, 50];

const DUPLICATE_CODES: &[i32] = &[11000, 11001];

fn is_duplicate(code: i32, message: &str) -> bool {
    DUPLICATE_CODES.contains(&code)
        || (code == 1
            && (message.contains("UNIQUE constraint failed")
                || message.contains("SQLSTATE 23505")
                || message.contains("duplicate key value violates unique constraint")))
}

/// Classifies one error, looking through the errors it wraps.
pub(super) fn classify(e: &Error) -> Classified {
    let mut current: Option<&Error> = Some(e);
    while let Some(err) = current {
        if let Some(message) = duplicate_message(err) {
            return Classified::Duplicate(message);
        }
        if let Some(reason) = unavailable(err) {
            return Classified::Other(StoreError::Unavailable(reason));
        }
        current = err.source().and_then(|s| s.downcast_ref::<Error>());
    }
    Classified::Other(match e.kind.as_ref() {
        ErrorKind::InvalidArgument { message, .. } => StoreError::Invalid(message.clone()),
        ErrorKind::BsonSerialization(err) => StoreError::Invalid(err.to_string()),
        _ => StoreError::Backend(e.to_string()),
    })
}

fn duplicate_message(e: &Error) -> Option<String> {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(we)) if is_duplicate(we.code, &we.message) => {
            Some(we.message.clone())
        }
        ErrorKind::Command(ce) if is_duplicate(ce.code, &ce.message) => Some(ce.message.clone()),
        ErrorKind::InsertMany(im) => {
            im.write_errors.iter().flatten().find(|we| is_duplicate(we.code, &we.message)).map(|we| we.message.clone())
        }
        _ => None,
    }
}

fn unavailable(e: &Error) -> Option<String> {
    match e.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Shutdown => Some(e.kind.to_string()),
        ErrorKind::Command(ce) if UNAVAILABLE_CODES.contains(&ce.code) => Some(ce.message.clone()),
        ErrorKind::Write(WriteFailure::WriteConcernError(wc)) if UNAVAILABLE_CODES.contains(&wc.code) => {
            Some(wc.message.clone())
        }
        _ => None,
    }
}

/// The index a MongoDB duplicate-key message names ("… index: campaigns_key dup key: …"), described by its
/// fields. FerretDB's messages name none.
pub(super) fn index_in_message(message: &str) -> Option<String> {
    let name = message.split("index: ").nth(1)?.split_whitespace().next()?;
    if name == "_id_" {
        return Some("id".into());
    }
    INDEXES.iter().find(|i| i.name == name).map(|i| i.describe())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{self, doc};
    use mongodb::error::{CommandError, InsertManyError, WriteError};

    const MONGO_DUP: &str =
        "E11000 duplicate key error collection: tf.campaigns index: campaigns_key dup key: { key: \"a\" }";

    fn command(code: i32, msg: &str) -> Error {
        let ce: CommandError = bson::from_document(doc! {"code": code, "codeName": "X", "errmsg": msg}).unwrap();
        Error::from(ErrorKind::Command(ce))
    }

    #[test]
    fn write_error_11000() {
        let we: WriteError = bson::from_document(doc! {"code": 11000, "errmsg": MONGO_DUP}).unwrap();
        let e = Error::from(ErrorKind::Write(WriteFailure::WriteError(we)));
        assert_eq!(classify(&e), Classified::Duplicate(MONGO_DUP.into()));
        assert_eq!(index_in_message(MONGO_DUP).as_deref(), Some("key"));
    }

    #[test]
    fn insert_many_error_list() {
        let im: InsertManyError = bson::from_document(doc! {"writeErrors": [
            {"index": 0, "code": 11000, "errmsg": "E11000 duplicate key error collection: tf.conversions"}
        ]})
        .unwrap();
        let e = Error::from(ErrorKind::InsertMany(im));
        assert!(matches!(classify(&e), Classified::Duplicate(_)));
        // FerretDB's message names no index.
        assert_eq!(index_in_message("E11000 duplicate key error collection: tf.conversions"), None);
    }

    #[test]
    fn command_error_11000_and_id_index() {
        let msg = "E11000 duplicate key error collection: tf.users index: _id_ dup key: { _id: \"u\" }";
        assert!(matches!(classify(&command(11000, msg)), Classified::Duplicate(_)));
        assert_eq!(index_in_message(msg).as_deref(), Some("id"));
    }

    #[test]
    fn ferretdb_update_code_1() {
        let pg = "ERROR: duplicate key value violates unique constraint \"campaigns_key_abc\" (SQLSTATE 23505)";
        assert!(matches!(classify(&command(1, pg)), Classified::Duplicate(_)));
        let sqlite = "constraint failed: UNIQUE constraint failed: campaigns.key (2067)";
        assert!(matches!(classify(&command(1, sqlite)), Classified::Duplicate(_)));
        // Code 1 without those words is just an error.
        assert!(matches!(classify(&command(1, "something broke")), Classified::Other(StoreError::Backend(_))));
    }

    #[test]
    fn outages_are_unavailable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::from(ErrorKind::Io(std::sync::Arc::new(io)));
        assert!(matches!(classify(&e), Classified::Other(StoreError::Unavailable(_))));
        let e = command(91, "The server is in quiesce mode and will shut down");
        assert!(matches!(classify(&e), Classified::Other(StoreError::Unavailable(_))));
        let e = command(2, "bad value");
        assert!(matches!(classify(&e), Classified::Other(StoreError::Backend(_))));
    }
}
