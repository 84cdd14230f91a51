//! The library's one error type. Each variant says what a caller can do about
//! it; `service::status` maps variants to gRPC codes in one place.

use std::path::PathBuf;

use crate::store::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is malformed (empty ids, unknown label...).
    #[error("{0}")]
    InvalidArgument(String),

    /// The message is larger than the configured limit.
    #[error("message is {size} bytes; the limit is {limit} bytes ({}); raise it with --max-message-bytes", human_bytes(*limit))]
    MessageTooLarge { size: usize, limit: usize },

    /// A per-user or operator quota is full (list entries...).
    #[error("{0}")]
    LimitExceeded(String),

    /// Forget of a message that was never learned (or already forgotten).
    #[error("user {user} has no learned message with id {message_id:?}")]
    NotLearned { user: String, message_id: String },

    /// Forget (or a relearn as the other class) of a click older than the
    /// undo window: its ledger entry no longer lists its tokens (or soon
    /// will not), so it cannot be undone exactly; its counts stay.
    #[error(
        "message {message_id:?} was learned as {label} more than {} ago, beyond the undo window (--undo-window {}); its counts stay and it can no longer be forgotten or moved to the other class",
        human_duration(*window), human_duration(*window)
    )]
    BeyondUndoWindow {
        message_id: String,
        label: crate::types::Label,
        window: std::time::Duration,
    },
    /// The request would overwrite something the caller did not say to
    /// replace (an import onto a user with data).
    #[error("{0}")]
    AlreadyExists(String),

    /// The storage engine failed; the request may not have been applied
    /// (a write whose flush failed is kept if storage later writes it).
    #[error("storage failure: {0}")]
    Storage(#[from] StorageError),

    /// The data directory's disk (or the user's quota on it) is full; the
    /// request may not have been applied. Storage errors are classified in one place,
    /// `store::error` (`From<sled::Error>`), so people read this instead of an OS code.
    #[error("the data directory's disk is full")]
    DiskFull,

    /// Storage failed and is being opened again now that it has room; a
    /// moment later the request will succeed.
    #[error("storage is being reopened after a failure; retry in a moment")]
    Reopening,

    /// Another process holds the data directory (sled allows one process
    /// per database).
    #[error("another chaff process is using the data directory {}; stop it, or give this one its own --data", path.display())]
    Locked { path: PathBuf },

    /// Stored bytes that do not decode: the data directory is damaged or was
    /// written by an incompatible version.
    #[error("corrupt record in the data directory ({what}); restore from backup or rebuild")]
    Corrupt { what: String },

    /// A file of the data directory is damaged or cut short (found at
    /// open, or when sled fails a checksum of its own files): not one
    /// record but the directory, so the remedy is the directory's backup
    /// (`store::generation` says how each case is found).
    #[error("the data directory {} is damaged: {what}; {}", path.display(), crate::store::RESTORE)]
    Damaged { path: PathBuf, what: String },

    /// The request needs an aggregate (settings, lists, the decision log,
    /// the shared model, ...) that the configured store does not hold yet:
    /// `chaff serve --store redis://…` holds everything but what Backup
    /// copies (docs/SCALING.md says which RPCs work there). Never served
    /// from another store instead.
    #[error(
        "{what} is not on the {store} store yet (issue #18); run chaff serve with --data (sled) for it"
    )]
    NotOnStore {
        store: &'static str,
        what: &'static str,
    },

    /// The data directory cannot be opened (missing permissions, locked by
    /// another chaff process...).
    #[error("cannot open data directory {}: {source}", path.display())]
    Open { path: PathBuf, source: StorageError },
}

impl Error {
    /// Storage trouble of the server's (not the request's): the service
    /// reports NOT_SERVING while it lasts.
    pub fn is_storage(&self) -> bool {
        matches!(self, Error::Storage(_) | Error::DiskFull)
    }
}

/// "10 MiB"-style rendering for limits in error messages people read.
pub fn human_bytes(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

/// A duration as the flags take it: `90d`, `12h`, `30m`, `45s`, `500ms`.
pub fn human_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    for (unit, per) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= per && ms.is_multiple_of(per) {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_large_names_the_limit() {
        let e = Error::MessageTooLarge {
            size: 10_485_761,
            limit: 10 * 1024 * 1024,
        };
        let s = e.to_string();
        assert!(s.contains("10485761"), "{s}");
        assert!(s.contains("10 MiB"), "{s}");
    }
}
