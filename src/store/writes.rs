//! Where a [`Store`]'s writes go and how its reads see them: the type
//! parameter `W` of `Store<W>`.
//!
//! Why a type parameter: the service's store must write every click
//! through to sled and wait for the disk before a click is acknowledged;
//! a corpus replay (`chaff eval`) wants the same records, the same reads
//! and none of the waiting (`replay.rs` says why). Both run the same store
//! code — the key layout, the format-6 dictionary numbering of a click
//! under the user's dictionary lock, the ledger reads of `record_click` —
//! so the difference is a parameter of that code, not a copy of it, and a
//! parameter of the *type*: [`Store`] (= `Store<Direct>`) is the only
//! store the server, the backup and every serving CLI command can open,
//! and it has no write-behind to switch on. The replay's store is a
//! different type ([`ReplayStore`](super::ReplayStore) =
//! `Store<WriteBehind>`), opened by `chaff eval` alone.
//!
//! The trait is public (it bounds a public type) but lives in a private
//! module: nothing outside `store` can name or implement it.

use sled::Tree;

use super::Store;
use crate::error::Error;

/// One click's records, built by `record_click` under the user's
/// dictionary lock: the message's new ledger state (`None` removes it)
/// and the other records of its batch (dictionary numbers, journal,
/// contribution journal), in order.
pub struct Click {
    pub(super) ledger: (Vec<u8>, Option<Vec<u8>>),
    pub(super) writes: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Where writes go and how reads see them (see the module docs).
pub trait Writes: Clone + Default + Send + Sync + 'static {
    /// Whether [`Store::flush`] waits for the disk and sled fsyncs in the
    /// background. False only for a throwaway directory, which sled also
    /// removes when it is closed.
    const DURABLE: bool;

    /// Makes the tree hold every write taken so far, before anything reads
    /// or writes the tree itself (`Store::tree`).
    fn settle(&self, tree: &Tree) -> Result<(), Error>;

    /// A ledger record written but not yet in the tree: `None` if the tree
    /// has the latest state of `key`, `Some(None)` if a held click removed
    /// it.
    fn held_ledger(&self, key: &[u8]) -> Option<Option<Vec<u8>>>;

    /// Takes one click's records to write later (`Ok(None)`; they are
    /// read back through [`Writes::held_ledger`] and [`Writes::settle`]),
    /// or gives them back for the caller to write now as one atomic batch.
    /// An error means the records were kept and will be written by a later
    /// call: the click's dictionary numbers stay.
    fn hold(&self, tree: &Tree, click: Click) -> Result<Option<Click>, Error>;

    /// The store as the service's own type, if it is one: what a backup
    /// copies into and what is reopened after a full disk.
    fn as_durable(store: &Store<Self>) -> Option<&Store>;
}

/// The service's store: every write goes straight to sled, and
/// [`Store::flush`] waits for the disk (group commit, `commit.rs`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Direct;

impl Writes for Direct {
    const DURABLE: bool = true;

    #[inline]
    fn settle(&self, _tree: &Tree) -> Result<(), Error> {
        Ok(())
    }

    #[inline]
    fn held_ledger(&self, _key: &[u8]) -> Option<Option<Vec<u8>>> {
        None
    }

    #[inline]
    fn hold(&self, _tree: &Tree, click: Click) -> Result<Option<Click>, Error> {
        Ok(Some(click))
    }

    fn as_durable(store: &Store<Self>) -> Option<&Store> {
        Some(store)
    }
}
