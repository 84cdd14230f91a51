//! Pruning a user's model to its quota (`--max-user-tokens`) on the
//! cluster: the engine decides what goes (`engine/quota.rs`, the same rule
//! as on sled, in the background), and the store replaces the model with
//! the pruned one at a new version.
//!
//! # Why a new version
//!
//! The model every replica holds is the snapshot plus the journal records
//! past it; a prune removes tokens, which no journal record (a click's
//! ledger values) can say. So the pruned model is written as the snapshot
//! of a new version (`checkpoint.lua`'s prune mode): the current version +
//! 1, the journal emptied. Every replica's next read finds its version
//! older than the snapshot's and reloads it (`read.lua`), so all of them
//! score with the pruned model; the counts (messages learned) stay. The
//! script refuses when the model has moved past the version the engine
//! pruned (a click through another replica came first): nothing is
//! written, and the next refresh queues the prune again. A Forget of a
//! click whose tokens were pruned unlearns what is left (counts saturate
//! at zero, `classify::Model::unlearn_weighted`).

use super::{CHECKPOINT, Keys, RedisStore};
use crate::classify::Model;
use crate::error::Error;
use crate::store::codec;
use crate::types::UserId;

impl RedisStore {
    /// Replaces the user's model with `model`, the model at exactly
    /// `version` (the current one) pruned, at version `version + 1`.
    /// `None` when the model is no longer at `version`.
    pub async fn prune(
        &self,
        user: &UserId,
        model: &Model,
        version: u64,
    ) -> Result<Option<u64>, Error> {
        let keys = Keys::of(user);
        let next = version + 1;
        let bytes = codec::encode_snapshot(model, next);
        let written: i64 = self
            .bounded("a prune", async {
                let mut call = self.scripts.checkpoint.prepare_invoke();
                call.key(&keys.meta)
                    .key(&keys.snapshot)
                    .key(&keys.journal)
                    .arg(bytes)
                    .arg(version)
                    .arg("1");
                self.invoke(CHECKPOINT, &call).await
            })
            .await?;
        Ok((written == 1).then_some(next))
    }
}
