//! `chaff seed` and `chaff shared`: the operator seeds the shared model
//! from a labelled corpus, clears the seed, and looks at the model's size.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use clap::Args;

use super::ServerArg;
use super::client::{connect, status};
use chaff::eval;
use chaff::proto;
use chaff::service::status::label_to_wire;

#[derive(Args, Debug)]
pub struct SeedArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The corpus index: lines `spam PATH` / `ham PATH` (TREC format). Each
    /// message is recorded under its path, so seeding the same corpus twice
    /// changes nothing.
    #[arg(long, required_unless_present = "clear", conflicts_with = "clear")]
    index: Option<PathBuf>,
    /// SeedShared calls in flight (the server tokenizes them in parallel;
    /// each is flushed to disk before its reply).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Remove the whole seed from the shared model instead (users' shared
    /// clicks stay).
    #[arg(long)]
    clear: bool,
}

pub async fn run(a: SeedArgs) -> anyhow::Result<()> {
    let mut client = connect(&a.server.server).await?;
    let Some(index) = a.index else {
        let r = client
            .clear_seed(proto::ClearSeedRequest {})
            .await
            .map_err(status)?
            .into_inner();
        println!(
            "seed cleared: {} spam and {} ham messages removed from the shared model",
            r.spam_removed, r.ham_removed
        );
        return show(&a.server.server).await;
    };
    if a.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let corpus = Arc::new(eval::read_index(&index)?);
    let bar = super::progress_bar(corpus.len(), "messages seeded");
    // Workers take the next message in turn; the first error stops them all.
    let next = Arc::new(AtomicUsize::new(0));
    let learned = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency.min(corpus.len().max(1)) {
        let (mut client, corpus, next, learned, bar) = (
            client.clone(),
            corpus.clone(),
            next.clone(),
            learned.clone(),
            bar.clone(),
        );
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(m) = corpus.get(i) else {
                    return anyhow::Ok(());
                };
                let path = m.path.clone();
                let message = tokio::task::spawn_blocking(move || std::fs::read(path))
                    .await?
                    .with_context(|| format!("cannot read {}", m.path.display()))?;
                let r = client
                    .seed_shared(proto::SeedSharedRequest {
                        message,
                        label: label_to_wire(m.gold).into(),
                        message_id: m.id.clone(),
                    })
                    .await
                    .map_err(status)
                    .with_context(|| format!("seeding {}", m.id))?
                    .into_inner();
                if r.outcome != proto::TrainOutcome::AlreadyLearned as i32 {
                    learned.fetch_add(1, Ordering::Relaxed);
                }
                bar.inc(1);
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        if let Err(e) = done.context("seed worker panicked")? {
            workers.abort_all();
            bar.abandon();
            return Err(e);
        }
    }
    bar.finish_and_clear();
    let learned = learned.load(Ordering::Relaxed);
    println!(
        "seeded {} messages from {} ({learned} new or moved, {} already seeded)",
        corpus.len(),
        index.display(),
        corpus.len() - learned
    );
    show(&a.server.server).await
}

/// `chaff shared`: the shared model's size.
pub async fn show(server: &str) -> anyhow::Result<()> {
    let r = connect(server)
        .await?
        .get_shared(proto::GetSharedRequest {})
        .await
        .map_err(status)?
        .into_inner();
    println!(
        "shared model: {} spam, {} ham messages, {} distinct tokens",
        r.spam_learned, r.ham_learned, r.tokens
    );
    println!(
        "  from {} consenting users and the seed ({} spam, {} ham)",
        r.contributing_users, r.seed_spam, r.seed_ham
    );
    Ok(())
}
