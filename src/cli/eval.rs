//! `chaff eval`: replay a TREC-format corpus and report the TREC measures.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tokio::runtime::Handle;

use chaff::classify::grams::GramParams;
use chaff::classify::{Params, Parts};
use chaff::engine::{Engine, Settings};
use chaff::eval::multi::Arrival;
use chaff::eval::{self, Clicks, Filter, Judgement, Plan, Profile, Summary, TrainMode};
use chaff::proto;
use chaff::store::{Backend, ReplayStore, Store};
use chaff::tokenize::{Limits, Tokenizer};
use chaff::types::{Label, UserId, Verdict};

mod users;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The corpus index: lines `spam PATH` / `ham PATH` in arrival order.
    /// Give it more than once for the multi-user mode: each index is one
    /// user's mailbox (named after its folder), replayed together against
    /// per-user models and the shared model (in-process only; see
    /// `src/eval/multi.rs`).
    #[arg(long, required = true)]
    index: Vec<PathBuf>,
    /// Multi-user mode: `together` interleaves the mailboxes by relative
    /// position (everyone starts at once); `one-after-another` lets each
    /// user join once the previous mailbox is done.
    #[arg(long, value_parser = super::values::arrival(), default_value = "together")]
    arrival: Arrival,
    /// Multi-user mode: before the mailboxes, seed the shared model from
    /// this labelled corpus as the operator would (`chaff seed`).
    #[arg(long, value_name = "INDEX")]
    seed_index: Option<PathBuf>,
    /// Which messages are learned after scoring: `every` (TREC immediate
    /// feedback), `errors` (every wrong or unsure verdict, unsure ham
    /// included) or `clicks` (a user's clicks: spam that reached the inbox
    /// — verdict HAM or UNSURE — is clicked Spam with probability
    /// --click-spam, ham in the spam folder Not spam with probability
    /// --click-ham, nothing else; see docs/ACCURACY.md "Click protocols").
    #[arg(long, value_enum, default_value_t = Train::Every)]
    train: Train,
    /// With --train clicks: a named user. `diligent` clicks every misfiled
    /// message (p = q = 1), `typical` p = 0.5, q = 0.2 (the default),
    /// `spam-only` p = 0.5, q = 0 (never looks in the spam folder).
    /// --click-spam and --click-ham override the profile's rates.
    #[arg(long, value_parser = super::values::profile(), help_heading = "Click protocol")]
    profile: Option<Profile>,
    /// With --train clicks: p, the chance that spam delivered to the inbox
    /// is clicked Spam (overrides --profile).
    #[arg(long, value_name = "P", help_heading = "Click protocol")]
    click_spam: Option<f64>,
    /// With --train clicks: q, the chance that ham in the spam folder is
    /// clicked Not spam (overrides --profile).
    #[arg(long, value_name = "Q", help_heading = "Click protocol")]
    click_ham: Option<f64>,
    /// With --train clicks: seeds the click draws (SplitMix64, one draw per
    /// message by its place in the mailbox — each user's own mailbox with
    /// several --index), so runs — and the peers' replay,
    /// scripts/peers/replay.py — click the same messages.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        help_heading = "Click protocol"
    )]
    seed: u64,
    /// In-process: learn mail delivered to the inbox (verdict HAM or
    /// UNSURE) and not clicked as ham (a twentieth of a click's weight,
    /// more while the ham side is lighter than the spam side), as `chaff
    /// serve --learn-delivered` does (`true` or `false`). It
    /// changes nothing under `--train every`, where every message is
    /// clicked.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    learn_delivered: bool,
    /// Instead of the online protocol, learn this fraction of the corpus
    /// (its head) without scoring, then score the rest without learning.
    #[arg(long, value_name = "FRACTION")]
    split: Option<f64>,
    /// Replay through a running chaff server (gRPC) instead of in-process:
    /// HOST:PORT or a URL, with the same --token / CHAFF_TOKEN, --tls-ca
    /// and --client-cert/--client-key as every client command. The replay's
    /// user (`eval-<pid>-<time>`) stays on the server (`chaff users`).
    #[arg(long, value_name = "HOST:PORT", value_parser = super::parse_server)]
    server: Option<String>,
    /// Write one `id score gold judged taught` line per scored message
    /// (`taught`: 1 if the replay then learned its label, a click, else 0),
    /// after a `#` line naming the protocol; read back by `chaff metrics`.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// In-process: wait for the disk after every click, as the service
    /// does. Without it every record is still written through the same
    /// code, but the replay's throwaway data directory is never synced, so
    /// messages/s measures chaff rather than the disk.
    #[arg(long)]
    durable: bool,
    /// In-process: cap every user's model at N tokens as `chaff serve
    /// --max-user-tokens N` does, pruning after the click that passes it
    /// (inline, so the replay is deterministic). Without it: no cap, as in
    /// the tables of docs/ACCURACY.md.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_user_tokens: Option<u64>,
    /// Word-pair window for the in-process tokenizer (1 = no pairs); for
    /// comparing tokenizer settings. Ignored with --server.
    #[arg(long)]
    pair_window: Option<usize>,
    /// Also read Received host names, the Date header's shape and zone
    /// and the list headers' values (new token ids; `Limits::header_extras`,
    /// docs/ACCURACY.md "Header and body evidence"). Ignored with --server.
    #[arg(long)]
    header_extras: bool,
    /// Raw body bytes the in-process tokenizer parses per message (the
    /// scan cap, as `serve --max-scan-bytes`); for measuring what the cap
    /// costs in accuracy. Ignored with --server.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    max_scan_bytes: Option<u64>,
    /// Research, one mailbox in-process only: score with an online
    /// logistic regression over the message's byte 4-grams beside the
    /// model, at this weight (0.5 in docs/ACCURACY.md "Session 34"):
    /// combined log-odds = the model's (softened beyond ±10) + WEIGHT × say
    /// × the regression's; the say grows with clicked ham (none before the
    /// first, full at 10). Not in the service (src/classify/grams.rs).
    #[arg(long, help_heading = "Tuning", value_name = "WEIGHT")]
    grams: Option<f64>,
    /// With --grams: the regression's learning rate (default 0.004).
    #[arg(long, help_heading = "Tuning", value_name = "RATE")]
    grams_rate: Option<f64>,
    /// With --grams: scale the regression's say by the share of messages
    /// taught at the full rate (clicks), so a user who clicks only mistakes
    /// leans on it less (docs/ACCURACY.md, "Why `diligent` lost").
    #[arg(long, help_heading = "Tuning")]
    grams_gate: bool,
    /// With --grams: leave the header's transport fields (Received, Date,
    /// Message-ID, Return-Path, Delivered-To, X-*…) out of the grams.
    #[arg(long, help_heading = "Tuning")]
    grams_skip_transport: bool,
    /// With --grams: how many raw bytes of each message's head the
    /// regression reads (default 3,000).
    #[arg(long, help_heading = "Tuning", value_name = "BYTES", value_parser = clap::value_parser!(u64).range(4..))]
    grams_bytes: Option<u64>,
    /// With --grams: each gram counts 1/√n in a message of n grams (unit
    /// length) instead of 1; give a larger --grams-rate with it.
    #[arg(long, help_heading = "Tuning")]
    grams_normalize: bool,
    /// With --grams: read the combined score against the verdict cutoffs
    /// after subtracting this many log-odds (times the regression's say),
    /// so the wider scores do not file more ham as spam (default 0).
    #[arg(long, help_heading = "Tuning", value_name = "LOG_ODDS")]
    grams_margin: Option<f64>,
    /// With --grams: mail delivered and not clicked teaches the regression
    /// as ham at this share of a click's rate (default 0.05; 0: the
    /// regression learns from clicks only, so scoring never writes it).
    #[arg(long, help_heading = "Tuning", value_name = "SHARE")]
    grams_delivered_share: Option<f64>,
    /// With --grams: teach the regression every message of this TREC
    /// index before the replay (repeat for several, interleaved), as an
    /// operator would seed a shared regression; give corpora other than
    /// --index (docs/ACCURACY.md, "Session 35").
    #[arg(long, help_heading = "Tuning", value_name = "INDEX")]
    grams_seed: Vec<PathBuf>,
    /// With --grams-seed: the regression's say still waits for the user's
    /// own clicked ham (none before the first, full at 10); without it the
    /// seed's ham counts, and the seeded regression has its full say from
    /// the first message.
    #[arg(long, help_heading = "Tuning")]
    grams_user_ramp: bool,
    /// With --grams-seed: the regression learns nothing from the replay —
    /// the operator's seed alone, as a shared table no click changes (the
    /// user's clicks still count towards its say: with --grams-user-ramp
    /// it has none before the user's first clicked ham).
    #[arg(long, help_heading = "Tuning")]
    grams_frozen: bool,
    /// Classifier parameters to try instead of the defaults (in-process only;
    /// see src/classify/robinson.rs): Robinson's s.
    #[arg(long, help_heading = "Tuning")]
    strength: Option<f64>,
    /// How header and body evidence are combined: `fisher` (the default):
    /// one chi-square statistic per part, the two parts' probabilities
    /// combined as two tokens (with --header-veto-at 5, the default, only
    /// where header and body disagree confidently); `pooled` (session
    /// 14's default): all tokens in one statistic; a share such as 0.5: the
    /// two parts' probabilities mixed with this share for the header
    /// (src/classify/robinson.rs, "Header and body"; docs/ACCURACY.md,
    /// "The header's veto: the threshold and the cost").
    #[arg(long, help_heading = "Tuning", value_name = "SHARE|fisher|pooled", value_parser = parse_parts)]
    header_share: Option<Parts>,
    /// With --header-share: significant header tokens for the header's
    /// full say (fewer: proportionally less).
    #[arg(long, help_heading = "Tuning")]
    header_full_at: Option<usize>,
    /// With --header-share: messages' worth of weight the model must hold
    /// of its thinner class (or of what --header-trust-by names) for the
    /// header's full say (fewer: proportionally less; 0: always full).
    #[arg(long, help_heading = "Tuning", value_name = "MESSAGES")]
    header_trust_at: Option<f64>,
    /// What --header-trust-at counts: 0 the thinner class's weight, 1 the
    /// ham weight, 2 learned ham messages whatever their weight.
    #[arg(long, help_heading = "Tuning", hide = true)]
    header_trust_by: Option<u8>,
    /// With --header-share fisher: combine the parts apart only when
    /// header and body disagree, each at least this confidently
    /// (|log-odds|); otherwise the pooled score (5, the default: the
    /// header's veto, docs/ACCURACY.md; 0: every message apart).
    #[arg(long, help_heading = "Tuning", value_name = "LOG_ODDS")]
    header_veto_at: Option<f64>,
    /// With --header-veto-at: only a hammy header vetoes a spammy body.
    #[arg(long, help_heading = "Tuning", hide = true)]
    header_veto_ham_only: bool,
    /// Robinson's s for header tokens (default 0.02; --strength's value,
    /// 0.1, turns it off), pooled or with --header-share.
    #[arg(long, help_heading = "Tuning")]
    header_strength: Option<f64>,
    /// With --header-strength: the header's s reaches it only once the
    /// user has clicked this many messages' worth of ham (mail learned
    /// from its delivery does not count); before, it moves from --strength
    /// towards it in proportion, so a user who never clicks Not spam
    /// scores as without it (docs/ACCURACY.md, "Session 14"). Default 10;
    /// 0: always.
    /// `chaff serve --header-strength-ramp` is the same setting.
    #[arg(long, help_heading = "Tuning", value_name = "MESSAGES")]
    header_strength_ramp: Option<f64>,
    /// γ of the never-seen tokens' estimate while the user's ham side is
    /// thinner in words (token mass M) than their spam and they have
    /// clicked less than --thin-ham-ramp of ham: at most
    /// 1/(1 + (M_s/M_h)^γ) (default 0.5, from Heaps' law; 0: off;
    /// docs/ACCURACY.md, "Session 17" and "Session 18"). `chaff
    /// serve --thin-ham-exponent` is the same setting.
    #[arg(long, help_heading = "Tuning")]
    thin_ham_exponent: Option<f64>,
    /// --thin-ham-exponent stops applying once the user has clicked this
    /// many messages' worth of ham (default 10; 0: whatever they clicked).
    #[arg(long, help_heading = "Tuning", value_name = "MESSAGES")]
    thin_ham_ramp: Option<f64>,
    /// While a user's ham side is delivered mail, each token's ham rate
    /// starts from its pooled rate with this many messages' weight,
    /// A·K/(K + H) for H ham messages learned, in proportion to the share
    /// of the ham weight that was delivered rather than clicked and never
    /// more than the ham side's own weight (default 50; 0: off;
    /// docs/ACCURACY.md, "Session 29"). `chaff serve --thin-ham-pool` is
    /// the same setting.
    #[arg(long, help_heading = "Tuning", value_name = "MESSAGES", value_parser = super::values::not_negative)]
    thin_ham_pool: Option<f64>,
    /// K of --thin-ham-pool: the ham messages learned at which it has
    /// halved (default 10; 0: it never fades).
    #[arg(long, help_heading = "Tuning", value_name = "MESSAGES", value_parser = super::values::not_negative)]
    thin_ham_pool_half: Option<f64>,
    /// Robinson's x: the probability of a token with no history.
    #[arg(long, help_heading = "Tuning")]
    prior: Option<f64>,
    /// Tokens closer than this to 0.5 are ignored.
    #[arg(long, help_heading = "Tuning")]
    min_dev: Option<f64>,
    /// At most this many of the most extreme tokens are combined.
    #[arg(long, help_heading = "Tuning")]
    max_tokens: Option<usize>,
    /// Below this probability the verdict is ham.
    #[arg(long, help_heading = "Tuning")]
    ham_cutoff: Option<f64>,
    /// At or above this probability the verdict is spam.
    #[arg(long, help_heading = "Tuning")]
    spam_cutoff: Option<f64>,
    /// A click on a message already scored at least this log-odds towards
    /// its label is learned at light weight (`inf`: every click weighs fully).
    #[arg(long, help_heading = "Tuning")]
    confident_log_odds: Option<f64>,
    /// The shared model's largest weight in a user's estimate, in messages
    /// (`M` in src/classify/blend.rs).
    #[arg(long, help_heading = "Tuning")]
    shared_strength: Option<f64>,
    /// Messages a user must have learned for the shared model's weight to
    /// halve (`R` in src/classify/blend.rs).
    #[arg(long, help_heading = "Tuning")]
    shared_halflife: Option<f64>,
    /// Messages the shared model must have learned of its thinner class
    /// for its full weight in a user's estimate (0: always full).
    #[arg(long, help_heading = "Tuning")]
    shared_known_at: Option<f64>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Train {
    Every,
    Errors,
    Clicks,
}

/// The training mode the flags ask for.
fn train_mode(args: &EvalArgs) -> anyhow::Result<TrainMode> {
    let click_flags = args.profile.is_some()
        || args.click_spam.is_some()
        || args.click_ham.is_some()
        || args.seed != 0;
    Ok(match args.train {
        Train::Every | Train::Errors if click_flags => anyhow::bail!(
            "--profile, --click-spam, --click-ham and --seed describe a user's clicks: \
             add --train clicks"
        ),
        Train::Every => TrainMode::Every,
        Train::Errors => TrainMode::Errors,
        Train::Clicks => {
            let profile = args.profile.unwrap_or(Profile::Typical);
            let (p, q) = profile.rates();
            let clicks = Clicks::new(
                args.click_spam.unwrap_or(p),
                args.click_ham.unwrap_or(q),
                args.seed,
            )
            .context("--click-spam / --click-ham")?;
            TrainMode::Clicks(clicks)
        }
    })
}

struct GrpcFilter {
    client: super::client::Client,
    user: String,
    handle: Handle,
}

impl Filter for GrpcFilter {
    fn score(&mut self, _id: &str, message: &[u8]) -> Result<Judgement, String> {
        let req = proto::ScoreRequest {
            user_id: self.user.clone(),
            message: message.to_vec(),
            ..Default::default()
        };
        let r = self
            .handle
            .block_on(self.client.score(req))
            .map_err(|s| s.message().to_string())?
            .into_inner();
        // A verdict this build does not know reads as unsure.
        let verdict =
            chaff::service::status::verdict_from_wire(r.verdict).unwrap_or(Verdict::Unsure);
        Ok(Judgement {
            score: r.spam_log_odds,
            verdict,
        })
    }

    fn learn(&mut self, id: &str, message: &[u8], label: Label) -> Result<(), String> {
        let label = chaff::service::status::label_to_wire(label);
        let req = proto::TrainRequest {
            user_id: self.user.clone(),
            message: message.to_vec(),
            label: label.into(),
            message_id: id.to_string(),
        };
        self.handle
            .block_on(self.client.train(req))
            .map_err(|s| s.message().to_string())?;
        Ok(())
    }
}

pub async fn run(args: EvalArgs) -> anyhow::Result<()> {
    if args.index.len() > 1 {
        if args.grams.is_some() {
            anyhow::bail!("--grams replays one mailbox: give one --index");
        }
        return users::run(args).await;
    }
    let index = args.index[0].clone();
    let grams = gram_params(&args)?;
    let corpus = eval::read_index(&index)?;
    let learn_only = match args.split {
        Some(f) if (0.0..1.0).contains(&f) => (corpus.len() as f64 * f).round() as usize,
        Some(f) => anyhow::bail!("--split {f}: give a fraction in [0, 1)"),
        None => 0,
    };
    let train = train_mode(&args)?;
    if args.split.is_some() && !matches!(train, TrainMode::Every) {
        anyhow::bail!(
            "--split learns the head and scores the tail without learning: \
             it takes no --train mode"
        );
    }
    let plan = Plan { train, learn_only };
    // A fresh user per run, so a server's earlier runs never leak in.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let user = format!("eval-{}-{nanos}", std::process::id());

    let bar = super::progress_bar(corpus.len(), "messages");

    let started = Instant::now();
    let (outcomes, model) = match &args.server {
        Some(server) => {
            // The same connection as every client command: --token /
            // CHAFF_TOKEN, --tls-ca, client certificates, host:port.
            let client = super::client::connect(server).await?;
            let mut filter = GrpcFilter {
                client,
                user,
                handle: Handle::current(),
            };
            let bar = bar.clone();
            let outcomes = tokio::task::spawn_blocking(move || {
                eval::replay(&corpus, &mut filter, plan, |done, _| {
                    bar.set_position(done as u64)
                })
            })
            .await??;
            (outcomes, None)
        }
        None => {
            let bar = bar.clone();
            let settings = engine_settings(&args);
            let durable = args.durable;
            let seeds = args
                .grams_seed
                .iter()
                .map(|index| eval::read_index(index))
                .collect::<Result<Vec<_>, _>>()?;
            let after = eval::AfterSeed {
                learns: !args.grams_frozen,
                seed_says: !args.grams_user_ramp,
            };
            tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let dir = tempfile::Builder::new().prefix("chaff-eval-").tempdir()?;
                let engine = Arc::new(Engine::with_store(
                    open_store(dir.path(), durable)?,
                    settings,
                )?);
                let user = UserId::new(user)?;
                let mut filter = eval::EngineFilter::new(engine.clone(), user.clone());
                if let Some(params) = grams {
                    filter = filter.with_grams(params);
                    if !seeds.is_empty() {
                        let n = filter.seed_grams(&seeds, after)?;
                        eprintln!(
                            "grams: seeded with {n} messages of {} corpora: {} weights",
                            seeds.len(),
                            filter.gram_weights().map_or(0, |(_, seed)| seed)
                        );
                    }
                }
                let outcomes = eval::replay(&corpus, &mut filter, plan, |done, _| {
                    bar.set_position(done as u64)
                })?;
                match filter.gram_weights() {
                    Some((own, 0)) => eprintln!("grams: the regression holds {own} weights"),
                    Some((own, seed)) => eprintln!(
                        "grams: the regression holds {own} weights of the mailbox's own, \
                         over the seed's {seed}"
                    ),
                    None => {}
                }
                drop(filter);
                let model = ModelSize {
                    tokens: engine.user_summary(&user)?.tokens,
                    quota: engine.stats().quota,
                };
                Ok((outcomes, Some(model)))
            })
            .await??
        }
    };
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let total = outcomes.len() + learn_only;
    let rate = total as f64 / elapsed;

    let protocol = match args.split {
        Some(f) => format!(
            "learn first {:.0}% ({learn_only} messages), score the rest",
            f * 100.0
        ),
        None => format!("online, train {}", train.describe()),
    };
    if let Some(path) = &args.results {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        );
        let comment = format!(
            "chaff eval {}: {protocol}; id score gold judged taught",
            index.display()
        );
        eval::write_results(&comment, &outcomes, &mut f)?;
        f.flush()?;
    }

    let summary =
        Summary::of(&outcomes).context("the scored messages need at least one spam and one ham")?;
    print_summary(
        &index.display().to_string(),
        &protocol,
        &summary,
        Some((rate, total, elapsed)),
        model,
        args.json,
    );
    Ok(())
}

/// The replayed user's model at the end of an in-process replay, and what
/// `--max-user-tokens` pruned on the way.
#[derive(Clone, Copy, Debug)]
struct ModelSize {
    tokens: u64,
    quota: chaff::engine::QuotaStats,
}

/// The store of an in-process replay, in a throwaway directory: the
/// replay store (writes batched, nothing waits for the disk), or with
/// `--durable` the service's own sled store.
fn open_store(dir: &std::path::Path, durable: bool) -> anyhow::Result<Arc<dyn Backend>> {
    Ok(if durable {
        Arc::new(Store::open(dir, 256 << 20)?)
    } else {
        Arc::new(ReplayStore::open_replay(dir, 256 << 20)?)
    })
}

/// The byte-gram regression's settings, if `--grams` asks for it.
fn gram_params(args: &EvalArgs) -> anyhow::Result<Option<GramParams>> {
    let Some(weight) = args.grams else {
        let tuned = args.grams_rate.is_some()
            || args.grams_gate
            || args.grams_skip_transport
            || args.grams_bytes.is_some()
            || args.grams_normalize
            || args.grams_margin.is_some()
            || args.grams_delivered_share.is_some()
            || !args.grams_seed.is_empty()
            || args.grams_user_ramp
            || args.grams_frozen;
        if tuned {
            anyhow::bail!(
                "--grams-rate, --grams-gate, --grams-skip-transport, --grams-bytes, \
                 --grams-normalize, --grams-margin, --grams-delivered-share, --grams-seed, --grams-user-ramp and \
                 --grams-frozen tune --grams: add --grams WEIGHT"
            );
        }
        return Ok(None);
    };
    let same = |a: &PathBuf, b: &PathBuf| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    if let Some(seed) = args
        .grams_seed
        .iter()
        .find(|s| args.index.iter().any(|i| same(s, i)))
    {
        anyhow::bail!(
            "--grams-seed {} is the corpus replayed: seed with other corpora (a seed that \
             holds the replayed messages measures memory, not the filter)",
            seed.display()
        );
    }
    if args.grams_gate && !args.grams_seed.is_empty() {
        anyhow::bail!(
            "--grams-gate scales the say by the share of the user's messages clicked, which a \
             seed's messages would count as clicks: not measured with --grams-seed, drop one"
        );
    }
    if (args.grams_user_ramp || args.grams_frozen) && args.grams_seed.is_empty() {
        anyhow::bail!(
            "--grams-user-ramp and --grams-frozen tell what a seeded regression does: add \
             --grams-seed INDEX"
        );
    }
    if args.server.is_some() {
        anyhow::bail!(
            "--grams runs in-process only (the service has no byte-gram regression): drop --server"
        );
    }
    if !(weight.is_finite() && weight >= 0.0) {
        anyhow::bail!("--grams {weight}: give a weight of 0 or more (0.5 in docs/ACCURACY.md)");
    }
    let mut params = GramParams {
        weight,
        gate_by_feedback: args.grams_gate,
        skip_transport: args.grams_skip_transport,
        normalize: args.grams_normalize,
        ..GramParams::default()
    };
    if let Some(m) = args.grams_margin {
        if !m.is_finite() {
            anyhow::bail!("--grams-margin {m}: give a number of log-odds");
        }
        params.verdict_margin = m;
    }
    if let Some(share) = args.grams_delivered_share {
        if !(0.0..=1.0).contains(&share) {
            anyhow::bail!(
                "--grams-delivered-share {share}: give a share in [0, 1] (0.05 by default)"
            );
        }
        params.delivered_share = share;
    }
    if let Some(n) = args.grams_bytes {
        params.bytes = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(rate) = args.grams_rate {
        if !(rate.is_finite() && rate > 0.0 && rate <= 1.0) {
            anyhow::bail!("--grams-rate {rate}: give a rate in (0, 1] (0.004 by default)");
        }
        params.rate = rate;
    }
    Ok(Some(params))
}

/// The engine settings of an in-process replay: the defaults with any
/// tuning flags applied.
fn engine_settings(args: &EvalArgs) -> Settings {
    let mut limits = Limits::default();
    if let Some(w) = args.pair_window {
        limits.pair_window = w;
    }
    limits.header_extras = args.header_extras;
    if let Some(n) = args.max_scan_bytes {
        limits.max_scan_bytes = usize::try_from(n).unwrap_or(usize::MAX);
    }
    let mut params = Params::default();
    params.strength = args.strength.unwrap_or(params.strength);
    params.prior = args.prior.unwrap_or(params.prior);
    params.min_dev = args.min_dev.unwrap_or(params.min_dev);
    params.max_tokens = args.max_tokens.unwrap_or(params.max_tokens);
    params.ham_cutoff = args.ham_cutoff.unwrap_or(params.ham_cutoff);
    params.spam_cutoff = args.spam_cutoff.unwrap_or(params.spam_cutoff);
    params.confident_log_odds = args.confident_log_odds.unwrap_or(params.confident_log_odds);
    params.shared_strength = args.shared_strength.unwrap_or(params.shared_strength);
    params.shared_halflife = args.shared_halflife.unwrap_or(params.shared_halflife);
    params.shared_known_at = args.shared_known_at.unwrap_or(params.shared_known_at);
    params.parts = args.header_share.unwrap_or(params.parts);
    params.header_full_at = args.header_full_at.unwrap_or(params.header_full_at);
    params.header_trust_at = args.header_trust_at.unwrap_or(params.header_trust_at);
    params.header_trust_by = args.header_trust_by.unwrap_or(params.header_trust_by);
    params.header_strength = args.header_strength.or(params.header_strength);
    params.header_strength_ramp = args
        .header_strength_ramp
        .unwrap_or(params.header_strength_ramp);
    params.header_veto_at = args.header_veto_at.unwrap_or(params.header_veto_at);
    params.header_veto_ham_only = args.header_veto_ham_only;
    params.thin_ham_exponent = args.thin_ham_exponent.unwrap_or(params.thin_ham_exponent);
    params.thin_ham_ramp = args.thin_ham_ramp.unwrap_or(params.thin_ham_ramp);
    params.thin_ham_pool = args.thin_ham_pool.unwrap_or(params.thin_ham_pool);
    params.thin_ham_pool_half = args.thin_ham_pool_half.unwrap_or(params.thin_ham_pool_half);
    Settings {
        tokenizer: Tokenizer::new(limits),
        params,
        max_user_tokens: args.max_user_tokens.map(|n| n as usize),
        learn_delivered: args.learn_delivered,
        ..Settings::default()
    }
}

/// `chaff metrics FILE...`: the same summary from results files.
pub fn metrics(files: &[PathBuf], json: bool) -> anyhow::Result<()> {
    for (i, file) in files.iter().enumerate() {
        let outcomes = eval::read_results(file)?;
        let summary = Summary::of(&outcomes)
            .with_context(|| format!("{}: need at least one spam and one ham", file.display()))?;
        if i > 0 && !json {
            println!();
        }
        print_summary(
            &file.display().to_string(),
            "from results file",
            &summary,
            None,
            None,
            json,
        );
    }
    Ok(())
}

/// `chaff metrics --compare BASE NEW`: the paired bootstrap of
/// `eval::compare`, one line per measure.
pub fn compare(files: &[PathBuf], replicates: usize, seed: u64, json: bool) -> anyhow::Result<()> {
    let [base, new] = files else {
        anyhow::bail!(
            "--compare takes two results files, BASE then NEW ({} given)",
            files.len()
        );
    };
    let read =
        |f: &PathBuf| eval::read_results(f).with_context(|| format!("reading {}", f.display()));
    let paired = eval::compare::Paired::new(&read(base)?, &read(new)?)
        .with_context(|| format!("{} against {}", new.display(), base.display()))?;
    let diffs = paired.bootstrap(replicates, seed);
    if json {
        for (name, d) in eval::compare::MEASURES.iter().zip(diffs) {
            let v = serde_json::json!({
                "measure": name, "base": d.base, "new": d.new,
                "difference": d.new - d.base, "low": d.low, "high": d.high, "call": d.call(),
            });
            println!("{v}");
        }
        return Ok(());
    }
    println!("base {}\nnew  {}", base.display(), new.display());
    println!(
        "paired bootstrap over the messages: {replicates} resamples of the corpus, seed {seed}; 95 % interval of new − base"
    );
    for (name, d) in eval::compare::MEASURES.iter().zip(diffs) {
        println!(
            "{name:<26} {:>8.3} → {:>8.3}  {:>+8.3}  [{:+.3}, {:+.3}]  {}",
            d.base,
            d.new,
            d.new - d.base,
            d.low,
            d.high,
            d.call()
        );
    }
    Ok(())
}

fn print_summary(
    source: &str,
    protocol: &str,
    summary: &Summary,
    speed: Option<(f64, usize, f64)>,
    model: Option<ModelSize>,
    json: bool,
) {
    if json {
        let v = serde_json::json!({
            "source": source,
            "protocol": protocol,
            "messages": summary.messages,
            "spam": summary.spam,
            "ham": summary.ham,
            "one_minus_roca_pct": summary.one_minus_roca_pct,
            "lam_pct": summary.lam_pct,
            "ham_misclassified_pct": summary.ham_misclassified_pct,
            "spam_misclassified_pct": summary.spam_misclassified_pct,
            "spam_misclassified_at_0_1_ham_pct": summary.spam_misclassified_at_01_ham_pct,
            "misfiled_first_100_pct": summary.misfiled_first_100_pct,
            "misfiled_first_500_pct": summary.misfiled_first_500_pct,
            "clicks": summary.taught.map(|t| t.spam + t.ham),
            "spam_clicks": summary.taught.map(|t| t.spam),
            "ham_clicks": summary.taught.map(|t| t.ham),
            "messages_per_second": speed.map(|s| s.0),
            "model_tokens": model.map(|m| m.tokens),
            "prunes": model.map(|m| m.quota.prunes),
            "pruned_tokens": model.map(|m| m.quota.pruned_tokens),
        });
        println!("{v}");
        return;
    }
    println!("source            {source}");
    println!("protocol          {protocol}");
    println!(
        "scored            {} ({} spam, {} ham)",
        summary.messages, summary.spam, summary.ham
    );
    println!("(1-ROCA)%         {:.3}", summary.one_minus_roca_pct);
    println!(
        "ROC area          {:.5}",
        1.0 - summary.one_minus_roca_pct / 100.0
    );
    println!("lam%              {:.3}", summary.lam_pct);
    println!("ham misclassified {:.3}%", summary.ham_misclassified_pct);
    println!("spam missed       {:.3}%", summary.spam_misclassified_pct);
    println!(
        "spam missed at 0.1% ham misclassified: {:.3}%",
        summary.spam_misclassified_at_01_ham_pct
    );
    println!(
        "misfiled          {:.2}% of the first 100, {:.2}% of the first 500",
        summary.misfiled_first_100_pct, summary.misfiled_first_500_pct
    );
    if let Some(t) = summary.taught {
        println!(
            "taught (clicks)   {} ({} spam, {} ham)",
            t.spam + t.ham,
            t.spam,
            t.ham
        );
    }
    if let Some(m) = model {
        println!(
            "model             {} tokens ({} pruned in {} prunes)",
            m.tokens, m.quota.pruned_tokens, m.quota.prunes
        );
    }
    if let Some((rate, total, elapsed)) = speed {
        println!("speed             {rate:.0} messages/s ({total} in {elapsed:.1} s)");
    }
}

/// `--header-share`: `pooled`, or the header's share of the vote in (0, 1).
fn parse_parts(s: &str) -> Result<Parts, String> {
    if s == "pooled" {
        return Ok(Parts::Pooled);
    }
    if s == "fisher" {
        return Ok(Parts::Fisher);
    }
    match s.parse::<f64>() {
        Ok(w) if w > 0.0 && w < 1.0 => Ok(Parts::Mix { header: w }),
        _ => Err(format!(
            "expected `pooled` or a share between 0 and 1 (exclusive), got {s:?}"
        )),
    }
}
