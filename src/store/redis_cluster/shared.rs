//! The shared model over the cluster: each contributor's part under the
//! contributor's own tag, and what readers poll to keep a copy.
//!
//! # Why this shape
//!
//! - **A part lives with its contributor.** A user's part (`{u:<user>}:pm`,
//!   `:pj`, `:ps`) is on the user's shard, so the click script changes it
//!   in the same step as the ledger and the model, reading the consent id
//!   there too: a click either lands before a revoke (and the revoke drops
//!   it) or after (and is not shared). On sled the same holds by one batch
//!   under the writer lock (`engine::clicks`).
//! - **A part has the shape of a user model** (meta `v`/`sv`, journal,
//!   snapshot), so `read.lua` and `checkpoint.lua` serve both, and a
//!   revoke is a fold to an empty snapshot at a new version: every reader
//!   holding an older version reloads it, empty, and takes the part out of
//!   its sum.
//! - **The capped sum is computed by each reader** ([`SharedModel`], as on
//!   sled: `classify::shared`), from the parts it holds. Nothing in Redis
//!   holds the sum, so no script has to do per-token arithmetic and
//!   removing a contributor is exact by construction.
//! - **One round trip when nothing changed.** Contributors are spread over
//!   every shard; a reader cannot ask each of them. After a part moves, the
//!   writer notes its version (`note.lua`) in a directory hash and a
//!   capped feed stream on one slot, `{shared}`. A reader holds its feed
//!   position: `shared_read.lua` answers "nothing new", the feed entries
//!   after it, or (first read, or fallen behind the trimmed feed) the whole
//!   directory. Then one round trip per changed part.
//! - **A lost note heals.** The note follows the click's WAIT; if it
//!   fails, the click answers UNAVAILABLE (applied, not acknowledged), and
//!   the retry (ALREADY_LEARNED) notes again. Every click of a sharing user
//!   notes its part's current version, so the next one also carries any
//!   change an earlier, lost note was about. The directory only rises.

use std::collections::HashMap;

use redis::Value;
use tracing::warn;

use super::{
    NOTE, PartKeys, Read, RedisStore, SHARED_READ, array, bytes, corrupt, decode_snapshot, int,
    record_ops,
};
use crate::classify::{Model, SharedModel};
use crate::error::Error;
use crate::store::{Op, PartChange};
use crate::tokenize::TOKENIZER_VERSION;
use crate::types::{Owner, UserId};

/// The `{shared}` slot's directory (contributor → part version).
const DIRECTORY: &str = "{shared}:d";
/// The `{shared}` slot's feed of part versions, newest last.
const FEED: &str = "{shared}:f";

/// What a reader holds of one contributor's part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartHeld {
    /// The part's version (its last journal record) the reader holds.
    pub version: u64,
    /// Journal entries applied since the part's snapshot: what
    /// [`crate::store::checkpoint_due`] weighs before [`RedisStore::checkpoint_part`].
    pub journal_entries: u64,
}

/// A reader's copy of the shared model: the capped sum of the parts it
/// holds, and where it stands ([`SharedHeld`]). Start from
/// `SharedView::default()`; [`RedisStore::refresh_shared`] keeps it fresh.
#[derive(Clone, Debug, Default)]
pub struct SharedView {
    /// The shared model: `total()` is `S`, what scoring reads.
    pub model: SharedModel,
    held: SharedHeld,
}

impl SharedView {
    /// What this view holds of `who`'s part.
    pub fn part(&self, who: &Owner) -> Option<PartHeld> {
        self.held.parts.get(who).copied()
    }
}

/// Where a copy of the shared model stands: each part's version and the
/// feed position, without the model itself (the engine keeps that under
/// its own lock and applies [`RedisStore::shared_changes`]' changes).
#[derive(Clone, Debug, Default)]
pub struct SharedHeld {
    parts: HashMap<Owner, PartHeld>,
    /// The feed id read last ("" before the first read).
    feed: String,
}

impl SharedHeld {
    /// Which of `among` (the parts a poll changed: only a change grows a
    /// part's journal) are due for a fold: `checkpoint_due` of the entries
    /// applied since their snapshot, against `tokens(who)`, the part's
    /// size.
    pub fn due<'a>(
        &self,
        among: impl IntoIterator<Item = &'a Owner>,
        tokens: impl Fn(&Owner) -> usize,
    ) -> Vec<Owner> {
        among
            .into_iter()
            .filter(|who| {
                self.parts.get(*who).is_some_and(|held| {
                    crate::store::checkpoint_due(held.journal_entries, tokens(who))
                })
            })
            .cloned()
            .collect()
    }
}

/// What a [`RedisStore::refresh_shared`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedRefresh {
    /// Nothing changed: one round trip.
    Fresh,
    /// These parts were read again (one round trip each, after the first).
    Changed { parts: usize },
}

/// A contributor as the directory names it: `u:<id>` or `o`.
fn field(who: &Owner) -> String {
    match who {
        Owner::User(u) => format!("u:{u}"),
        Owner::Operator => "o".into(),
    }
}

fn owner_of(field: &[u8]) -> Result<Owner, Error> {
    let text = std::str::from_utf8(field).map_err(|_| corrupt("shared directory field"))?;
    match text {
        "o" => Ok(Owner::Operator),
        _ => text
            .strip_prefix("u:")
            .and_then(|id| UserId::stored(id).ok())
            .map(Owner::User)
            .ok_or_else(|| corrupt("shared directory field")),
    }
}

fn version_of(v: &Value) -> Result<u64, Error> {
    match v {
        Value::Int(_) => int(v, "part version"),
        _ => std::str::from_utf8(bytes(v, "part version")?)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt("part version")),
    }
}

impl RedisStore {
    /// Tells the shared model's readers that `who`'s part is at `version`
    /// (`note.lua` on the `{shared}` slot; changes nothing if they knew).
    pub(super) async fn note_part(&self, who: &Owner, version: u64) -> Result<(), Error> {
        let cap = self.config.shared_feed_len;
        self.bounded("a shared model note", async {
            let mut call = self.scripts.note.prepare_invoke();
            call.key(DIRECTORY)
                .key(FEED)
                .arg(field(who))
                .arg(version)
                .arg(cap);
            let _: i64 = self.invoke(NOTE, &call).await?;
            Ok(())
        })
        .await
    }

    /// Brings a reader's copy of the shared model up to date: one round
    /// trip when nothing changed, else one more per part that changed. A
    /// revoked contributor's part reads back empty at its new version and
    /// leaves the sum exactly (`SharedModel::replace_part`). On an error
    /// the view is left as it was, and the next call starts from there.
    pub async fn refresh_shared(&self, view: &mut SharedView) -> Result<SharedRefresh, Error> {
        let Some(changes) = self.shared_changes(&mut view.held).await? else {
            return Ok(SharedRefresh::Fresh);
        };
        let parts = changes.len();
        for change in changes {
            change.apply_to(&mut view.model);
        }
        Ok(SharedRefresh::Changed { parts })
    }

    /// What changed in the shared model's parts since the position `held`
    /// records, as changes for a copy of the shared model to apply in
    /// order (`None`: nothing, in one round trip). `held` moves past them
    /// only when the whole read succeeded, so a copy that applies what is
    /// returned stays exact; on an error nothing is returned nor moved.
    pub async fn shared_changes(
        &self,
        held: &mut SharedHeld,
    ) -> Result<Option<Vec<PartChange>>, Error> {
        let position = held.feed.clone();
        let reply: Value = self
            .bounded("a shared model read", async {
                let mut call = self.scripts.shared_read.prepare_invoke();
                call.key(DIRECTORY).key(FEED).arg(position);
                self.invoke(SHARED_READ, &call).await
            })
            .await?;
        let parts = array(&reply, "shared read reply")?;
        let top = String::from_utf8(
            bytes(
                parts.first().ok_or_else(|| corrupt("shared read reply"))?,
                "feed id",
            )?
            .to_vec(),
        )
        .map_err(|_| corrupt("feed id"))?;
        let mode = int(
            parts.get(1).ok_or_else(|| corrupt("shared read reply"))?,
            "shared read mode",
        )?;
        let listing = || parts.get(2).ok_or_else(|| corrupt("shared read reply"));
        let mut wanted: Vec<(Owner, u64)> = Vec::new();
        match mode {
            0 => return Ok(None),
            1 => {
                let mut latest: HashMap<Owner, u64> = HashMap::new();
                for entry in array(listing()?, "feed entries")? {
                    let fields = array(
                        array(entry, "feed entry")?
                            .get(1)
                            .ok_or_else(|| corrupt("feed entry"))?,
                        "feed fields",
                    )?;
                    let (mut who, mut version) = (None, None);
                    for pair in fields.chunks(2) {
                        let [name, value] = pair else {
                            return Err(corrupt("feed fields"));
                        };
                        match bytes(name, "feed field")? {
                            b"o" => who = Some(owner_of(bytes(value, "feed owner")?)?),
                            b"v" => version = Some(version_of(value)?),
                            _ => {}
                        }
                    }
                    let (Some(who), Some(version)) = (who, version) else {
                        return Err(corrupt("feed entry"));
                    };
                    let v = latest.entry(who).or_default();
                    *v = (*v).max(version);
                }
                wanted.extend(latest);
            }
            2 => {
                // The whole directory: also drop what a reader holds of a
                // contributor no longer in it.
                let dir = array(listing()?, "shared directory")?;
                let mut listed: HashMap<Owner, u64> = HashMap::new();
                for pair in dir.chunks(2) {
                    let [name, value] = pair else {
                        return Err(corrupt("shared directory"));
                    };
                    listed.insert(
                        owner_of(bytes(name, "directory field")?)?,
                        version_of(value)?,
                    );
                }
                for who in held.parts.keys() {
                    if !listed.contains_key(who) {
                        wanted.push((who.clone(), u64::MAX));
                    }
                }
                wanted.extend(listed);
            }
            _ => return Err(corrupt("shared read mode")),
        }
        let mut changes = Vec::new();
        let mut moved: Vec<(Owner, Option<PartHeld>)> = Vec::new();
        for (who, version) in wanted {
            let was = held.parts.get(&who).copied().unwrap_or_default();
            if version != u64::MAX && version <= was.version {
                continue;
            }
            if version == u64::MAX {
                changes.push(PartChange::Remove { who: who.clone() });
                moved.push((who, None));
                continue;
            }
            if let Some((change, now)) = self.part_change(&who, was).await? {
                changes.push(change);
                moved.push((who, Some(now)));
            }
        }
        for (who, now) in moved {
            match now {
                Some(now) => held.parts.insert(who, now),
                None => held.parts.remove(&who),
            };
        }
        held.feed = top;
        Ok(Some(changes))
    }

    /// Reads one part past the version held: the change to apply, and
    /// what is held after it (`None`: nothing changed).
    async fn part_change(
        &self,
        who: &Owner,
        held: PartHeld,
    ) -> Result<Option<(PartChange, PartHeld)>, Error> {
        let keys = PartKeys::of(who);
        Ok(
            match self
                .read_model(&keys.meta, &keys.snapshot, &keys.journal, held.version)
                .await?
            {
                Read::Fresh => None,
                Read::Records { version, records } => {
                    // Decode every record before changing anything.
                    let mut ops: Vec<Op> = Vec::new();
                    for record in &records {
                        ops.extend(record_ops(record)?);
                    }
                    let entries = ops.iter().map(Op::entries).sum::<u64>();
                    Some((
                        PartChange::Apply {
                            who: who.clone(),
                            ops,
                        },
                        PartHeld {
                            version,
                            journal_entries: held.journal_entries + entries,
                        },
                    ))
                }
                Read::Reload {
                    version,
                    snapshot,
                    records,
                } => {
                    let mut part = decode_snapshot(&snapshot)?;
                    if !snapshot.is_empty() && part.tokenizer_version() != TOKENIZER_VERSION {
                        // As the sled engine does at start (`engine::shared::load`):
                        // other token ids must not be mixed in.
                        warn!(%who, stored = part.tokenizer_version(), "shared part was built by another tokenizer version; ignoring its snapshot");
                        part = Model::default();
                    }
                    let entries = super::apply_records(&mut part, &records)?;
                    Some((
                        PartChange::Replace {
                            who: who.clone(),
                            model: part,
                        },
                        PartHeld {
                            version,
                            journal_entries: entries,
                        },
                    ))
                }
            },
        )
    }

    /// Folds `who`'s part journal into a snapshot of the part as `view`
    /// holds it (as [`RedisStore::checkpoint`] for a user model). False
    /// when the view holds no part of `who`, or a snapshot at that version
    /// or newer is there already.
    pub async fn checkpoint_part(&self, view: &mut SharedView, who: &Owner) -> Result<bool, Error> {
        let part = view.model.contribution(who).cloned().unwrap_or_default();
        self.checkpoint_held_part(&mut view.held, who, &part).await
    }

    /// `who`'s part as stored: its version and the version its snapshot
    /// folds (equal once the journal is folded; 0, 0: no part). For
    /// operators and tests.
    pub async fn part_versions(&self, who: &Owner) -> Result<(u64, u64), Error> {
        let keys = PartKeys::of(who);
        let (v, sv): (Option<u64>, Option<u64>) = self
            .bounded("a part read", async {
                let mut conn = self.conn.clone();
                Ok(redis::cmd("HMGET")
                    .arg(&keys.meta)
                    .arg("v")
                    .arg("sv")
                    .query_async(&mut conn)
                    .await?)
            })
            .await?;
        Ok((v.unwrap_or(0), sv.unwrap_or(0)))
    }

    /// Folds `who`'s part journal into a snapshot of `part`, which must be
    /// the part at exactly the version `held` records (a copy that applied
    /// every change [`RedisStore::shared_changes`] returned). False when
    /// `held` holds no part of `who`, or a snapshot at that version or
    /// newer is there already.
    pub async fn checkpoint_held_part(
        &self,
        held: &mut SharedHeld,
        who: &Owner,
        part: &Model,
    ) -> Result<bool, Error> {
        let Some(at) = held.parts.get(who).copied() else {
            return Ok(false);
        };
        let keys = PartKeys::of(who);
        let written = self
            .fold(&keys.meta, &keys.snapshot, &keys.journal, part, at.version)
            .await?;
        if let Some(p) = held.parts.get_mut(who) {
            // Refused: another replica folded as far or further; this
            // one's count starts again too (it would be refused again).
            p.journal_entries = 0;
        }
        Ok(written)
    }
}
