//! `chaff seed` and `chaff shared`: the operator seeds the shared model
//! from a labelled corpus, clears the seed, and looks at the model's size.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use clap::Args;

use super::client::{connect, status};
use super::{JsonArg, ServerArg};
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
    #[command(flatten)]
    json: JsonArg,
}

pub async fn run(a: SeedArgs) -> anyhow::Result<()> {
    let mut client = connect(&a.server.server).await?;
    let Some(index) = a.index else {
        let r = client
            .clear_seed(proto::ClearSeedRequest {})
            .await
            .map_err(status)?
            .into_inner();
        if a.json.json {
            println!(
                "{}",
                serde_json::json!({"spam_removed": r.spam_removed, "ham_removed": r.ham_removed})
            );
        } else {
            println!(
                "seed cleared: {} spam and {} ham messages removed from the shared model",
                r.spam_removed, r.ham_removed
            );
        }
        return show(&a.server.server, a.json.json).await;
    };
    if a.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let corpus = Arc::new(eval::read_index(&index)?);
    let bar = super::progress_bar(corpus.len(), "messages seeded");
    eprintln!(
        "seeding {} messages from {} with {} calls in flight",
        corpus.len(),
        index.display(),
        a.concurrency
    );
    // Without a terminal the bar is hidden: a line every few seconds instead,
    // so a long seed in a script or a log still shows it is moving.
    let ticker = (!std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let (bar, total) = (bar.clone(), corpus.len());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!("seeded {}/{total} messages", bar.position());
            }
        })
    });
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
    let mut failure = None;
    while let Some(done) = workers.join_next().await {
        if let Err(e) = done.context("seed worker panicked")? {
            workers.abort_all();
            failure = Some(e);
            break;
        }
    }
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(e) = failure {
        bar.abandon();
        return Err(e);
    }
    bar.finish_and_clear();
    let learned = learned.load(Ordering::Relaxed);
    if a.json.json {
        println!(
            "{}",
            serde_json::json!({
                "seeded": corpus.len(),
                "index": index.display().to_string(),
                "new_or_moved": learned,
                "already_seeded": corpus.len() - learned,
            })
        );
    } else {
        println!(
            "seeded {} messages from {} ({learned} new or moved, {} already seeded)",
            corpus.len(),
            index.display(),
            corpus.len() - learned
        );
    }
    show(&a.server.server, a.json.json).await
}

/// `chaff shared`: the shared model's size.
pub async fn show(server: &str, as_json: bool) -> anyhow::Result<()> {
    let r = connect(server)
        .await?
        .get_shared(proto::GetSharedRequest {})
        .await
        .map_err(status)?
        .into_inner();
    if as_json {
        println!(
            "{}",
            serde_json::json!({
                "spam_learned": r.spam_learned,
                "ham_learned": r.ham_learned,
                "tokens": r.tokens,
                "contributing_users": r.contributing_users,
                "seed_spam": r.seed_spam,
                "seed_ham": r.seed_ham,
            })
        );
        return Ok(());
    }
    println!(
        "shared model: {} spam, {} ham messages, {} distinct tokens",
        r.spam_learned, r.ham_learned, r.tokens
    );
    println!(
        "  from {} and the seed ({} spam, {} ham)",
        super::plural(r.contributing_users, "consenting user", "consenting users"),
        r.seed_spam,
        r.seed_ham
    );
    Ok(())
}
