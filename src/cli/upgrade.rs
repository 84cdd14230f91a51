//! `chaff upgrade --store redis://…`: stamps the ledger entries a cluster
//! holds from before the undo window (18-byte headers, no click time) with
//! the upgrade's time, so the window folds them (docs/SCALING.md,
//! "Upgrading a cluster written before the undo window").

use anyhow::Context;
use clap::Args;

use super::JsonArg;

#[derive(Args, Debug)]
pub(crate) struct UpgradeArgs {
    /// The Redis Cluster to upgrade: `redis://HOST:PORT,HOST:PORT,…` (list
    /// every seed node, as for `chaff serve --store`). Servers may keep
    /// serving it meanwhile: they read both layouts.
    #[arg(long, env = "CHAFF_STORE", value_parser = super::serve::Unechoed(nodes), value_name = "redis://HOST:PORT,…")]
    store: Nodes,
    /// Replicas that must confirm each user's rewritten ledger (WAIT), as
    /// `chaff serve --redis-replicas`.
    #[arg(
        long,
        env = "CHAFF_REDIS_REPLICAS",
        default_value_t = 1,
        value_name = "N"
    )]
    redis_replicas: u32,
    #[command(flatten)]
    json: JsonArg,
}

/// The cluster's seed nodes as `redis://host:port`.
#[derive(Clone, Debug)]
pub(crate) struct Nodes(Vec<String>);

fn nodes(s: &str) -> Result<Nodes, String> {
    super::serve::redis_nodes(s).map(Nodes)
}

/// Walks the cluster, reporting progress on standard error after every
/// step of 1,000 keys a primary; the totals on standard output.
#[cfg(feature = "redis")]
pub(crate) async fn run(a: UpgradeArgs) -> anyhow::Result<()> {
    use chaff::store::redis_cluster::{RedisConfig, RedisStore};
    let nodes = a.store.0.clone();
    let mut config = RedisConfig::new(nodes.iter().cloned());
    config.replicas = a.redis_replicas;
    let store = RedisStore::connect(config).await.with_context(|| {
        format!(
            "cannot connect to the Redis Cluster at {}",
            super::serve::redacted(&nodes.join(","))
        )
    })?;
    let started = std::time::Instant::now();
    let done = store
        .upgrade_ledgers(|p| {
            eprintln!(
                "upgrade: {}/{} primaries walked, {} ledgers, {} entries read, {} stamped ({:.1} s)",
                p.primaries_done,
                p.primaries,
                p.ledgers,
                p.entries,
                p.stamped,
                started.elapsed().as_secs_f64()
            );
        })
        .await
        .context("the upgrade stopped (run it again: it goes on where it stopped, skipping what is done)")?;
    if a.json.json {
        println!(
            "{}",
            serde_json::json!({
                "primaries": done.primaries, "ledgers": done.ledgers,
                "entries": done.entries, "stamped": done.stamped,
            })
        );
    } else {
        println!(
            "upgraded: {} ledgers, {} entries read, {} entries of the 18-byte layout stamped with now (undoable for one more --undo-window, then folded)",
            done.ledgers, done.entries, done.stamped
        );
    }
    Ok(())
}

#[cfg(not(feature = "redis"))]
pub(crate) async fn run(_: UpgradeArgs) -> anyhow::Result<()> {
    anyhow::bail!("this chaff was built without the `redis` feature")
}
