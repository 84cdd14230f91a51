//! The storage engines' failures as the rest of the library sees them: an
//! opaque [`StorageError`] that says what failed without naming the engine,
//! so that only `store` names sled and Redis.

use std::fmt;
#[cfg(feature = "redis")]
use std::time::Duration;

use crate::error::Error;

/// A failure of the storage engine (I/O, a damaged log, an unreachable
/// Redis Cluster, ...). Opaque: callers only learn that storage failed
/// (`Error::Storage`, answered UNAVAILABLE), never which engine's type.
#[derive(Debug)]
pub struct StorageError(Kind);

/// What failed, by engine. Private so that no caller matches on an
/// engine's error type.
#[derive(Debug)]
enum Kind {
    /// The embedded sled database.
    Sled(sled::Error),
    #[cfg(feature = "redis")]
    /// A Redis Cluster command failed (connection refused, cluster down,
    /// a node timed out, a script error, ...).
    Redis(redis::RedisError),
    /// A Redis Cluster operation did not finish within its time bound
    /// (the client library's own reconnect loops can otherwise stall).
    #[cfg(feature = "redis")]
    RedisTimeout { what: &'static str, after: Duration },
    /// The user's keys were moving between nodes (a reshard) for longer
    /// than the operation's bound: every answer was TRYAGAIN, ASK or MOVED,
    /// so the script never ran and a retry is safe.
    #[cfg(feature = "redis")]
    SlotMoving {
        after: Duration,
        last: redis::RedisError,
    },
    /// A click was applied on the user's primary but fewer replicas than
    /// required confirmed it within the wait: it is not acknowledged, and
    /// a retry is safe (the ledger answers ALREADY_LEARNED and waits again).
    #[cfg(feature = "redis")]
    NotReplicated {
        wanted: u32,
        acked: i64,
        waited: Duration,
    },
    /// A backup read the same records again and again and a click landed
    /// each time: no consistent copy of them was had (a retry may).
    #[cfg(feature = "redis")]
    KeptChanging { what: String, reads: u32 },
    /// A primary answered but reports the cluster down (`cluster_state`
    /// not `ok`): a slot range has no primary it can reach, and with
    /// Redis's default full coverage every node refuses every key until a
    /// replica takes over or the operator mends it.
    #[cfg(feature = "redis")]
    ClusterDown { node: String, state: String },
    /// A failure of the decision log's own cluster (`--decision-store`),
    /// told apart so the caller learns that only the log is down: Scores
    /// and clicks go on.
    #[cfg(feature = "redis")]
    DecisionStore(Box<StorageError>),
}

impl StorageError {
    /// A click that reached a Redis primary but too few replicas confirmed
    /// in time: not acknowledged, possibly applied, safe to retry (the
    /// service says so in its own words).
    pub fn is_not_replicated(&self) -> bool {
        #[cfg(feature = "redis")]
        if matches!(self.0, Kind::NotReplicated { .. }) {
            return true;
        }
        false
    }

    /// A failure of the decision log's own cluster (`--decision-store`),
    /// not of the store that holds clicks and models.
    pub fn is_decision_store(&self) -> bool {
        #[cfg(feature = "redis")]
        if matches!(self.0, Kind::DecisionStore(_)) {
            return true;
        }
        false
    }
}

#[cfg(feature = "redis")]
impl StorageError {
    pub(super) fn redis_timeout(what: &'static str, after: Duration) -> Self {
        Self(Kind::RedisTimeout { what, after })
    }

    /// This failure, as one of the decision log's own cluster.
    pub(super) fn in_decision_store(self) -> Self {
        match self.0 {
            Kind::DecisionStore(_) => self,
            _ => Self(Kind::DecisionStore(Box::new(self))),
        }
    }

    pub(super) fn slot_moving(last: redis::RedisError, after: Duration) -> Self {
        Self(Kind::SlotMoving { after, last })
    }

    pub(super) fn kept_changing(what: String, reads: u32) -> Self {
        Self(Kind::KeptChanging { what, reads })
    }

    pub(super) fn cluster_down(node: String, state: String) -> Self {
        Self(Kind::ClusterDown { node, state })
    }

    pub(super) fn not_replicated(wanted: u32, acked: i64, waited: Duration) -> Self {
        Self(Kind::NotReplicated {
            wanted,
            acked,
            waited,
        })
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Sled(e) => e.fmt(f),
            #[cfg(feature = "redis")]
            Kind::Redis(e) => write!(f, "redis cluster: {e}"),
            #[cfg(feature = "redis")]
            Kind::RedisTimeout { what, after } => {
                write!(f, "redis cluster: {what} did not finish within {after:?}")
            }
            #[cfg(feature = "redis")]
            Kind::SlotMoving { after, last } => write!(
                f,
                "redis cluster: the user's keys were moving between nodes for longer than \
                 {after:?} (last answer: {last}); nothing was changed, try again"
            ),
            #[cfg(feature = "redis")]
            Kind::NotReplicated {
                wanted,
                acked,
                waited,
            } => write!(
                f,
                "redis cluster: the click reached its primary but {acked} of {wanted} replicas \
                 confirmed it within {waited:?}"
            ),
            #[cfg(feature = "redis")]
            Kind::KeptChanging { what, reads } => write!(
                f,
                "redis cluster: {what} changed during each of {reads} reads; back up again"
            ),
            #[cfg(feature = "redis")]
            Kind::ClusterDown { node, state } => write!(
                f,
                "redis cluster: {node} reports cluster_state:{state} (a slot range has no \
                 reachable primary: the cluster refuses keys until a replica takes over or \
                 the operator mends it; CLUSTER NODES shows which)"
            ),
            #[cfg(feature = "redis")]
            Kind::DecisionStore(e) => write!(f, "the decision store (--decision-store): {e}"),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            Kind::Sled(e) => Some(e),
            #[cfg(feature = "redis")]
            Kind::Redis(e) => Some(e),
            #[cfg(feature = "redis")]
            Kind::SlotMoving { last, .. } => Some(last),
            #[cfg(feature = "redis")]
            Kind::RedisTimeout { .. }
            | Kind::NotReplicated { .. }
            | Kind::KeptChanging { .. }
            | Kind::ClusterDown { .. } => None,
            #[cfg(feature = "redis")]
            Kind::DecisionStore(e) => Some(&**e),
        }
    }
}

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        Self(Kind::Sled(e))
    }
}

#[cfg(feature = "redis")]
impl From<redis::RedisError> for StorageError {
    fn from(e: redis::RedisError) -> Self {
        Self(Kind::Redis(e))
    }
}

#[cfg(feature = "redis")]
/// Every Redis failure is the server's storage trouble (UNAVAILABLE,
/// "retry later"), never the request's.
impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Storage(e.into())
    }
}

/// The conversion at the boundary: store code uses `?` on sled's results.
/// A full disk is told apart here, the one place storage errors are
/// classified, so people read "the data directory's disk is full".
///
/// sled's checksum failures, and a blob file its log points to that is not
/// there, are damage to the data directory, not a failure a retry or a
/// reopen mends: [`Error::Corrupt`] (DATA_LOSS), naming sled's file
/// (`generation::describe_sled_damage`), never UNAVAILABLE.
impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Corruption { at, .. } => Error::Corrupt {
                what: super::generation::describe_sled_damage(at),
            },
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound => Error::Corrupt {
                // The patched recovery names the blob file itself
                // (vendor/sled/PATCHES.md); a read names none.
                what: match io.get_ref() {
                    Some(named) => named.to_string(),
                    None => format!("a file of sled's that its log points to is missing ({io})"),
                },
            },
            e if is_disk_full(&e) => Error::DiskFull,
            e => Error::Storage(StorageError(Kind::Sled(e))),
        }
    }
}

/// ENOSPC (and EDQUOT): sled passes I/O errors on as they are, or, once
/// it has stored one as its global error, as a copy that keeps the kind.
pub(crate) fn is_disk_full(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::StorageFull
                || io.kind() == std::io::ErrorKind::QuotaExceeded
                || matches!(io.raw_os_error(), Some(28 | 122))
        }
        _ => false,
    }
}
