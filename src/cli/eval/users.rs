//! `chaff eval --index A --index B ...`: several mailboxes, one user each,
//! replayed together against per-user models and the shared model
//! (`chaff::eval::multi` has the protocol).

use std::collections::HashSet;
use std::time::Instant;

use anyhow::Context;

use chaff::engine::Engine;
use chaff::eval::multi::{
    self, Arrival, EngineShared, Mailbox, Misfiled, UserOutcome, View, arrival_order, misfiled,
};
use chaff::eval::{self, TrainMode};
use chaff::types::{Label, MessageId};

use super::{EvalArgs, engine_settings, open_store};

/// The prefixes of each mailbox the report covers (`None`: all of it).
const WINDOWS: [Option<usize>; 4] = [Some(50), Some(100), Some(500), None];

pub async fn run(args: EvalArgs) -> anyhow::Result<()> {
    if args.server.is_some() || args.split.is_some() || args.results.is_some() {
        anyhow::bail!(
            "the multi-user mode (more than one --index) runs in-process and online: \
             drop --server, --split and --results"
        );
    }
    let mut mailboxes = Vec::new();
    let mut names = HashSet::new();
    for index in &args.index {
        let messages = eval::read_index(index)?;
        // The mailbox's folder names its user: target/corpus/enron1/index → enron1.
        let base = index
            .parent()
            .and_then(|p| p.file_name())
            .map_or_else(|| "user".to_string(), |n| n.to_string_lossy().into_owned());
        let mut user = base.clone();
        let mut n = 2;
        while !names.insert(user.clone()) {
            user = format!("{base}-{n}");
            n += 1;
        }
        mailboxes.push(Mailbox { user, messages });
    }
    let arrival = args.arrival;
    let train = super::train_mode(&args)?;
    let seed = match &args.seed_index {
        Some(index) => eval::read_index(index)?,
        None => Vec::new(),
    };
    let order = arrival_order(&mailboxes, arrival);
    let messages = order.len();
    // Every message learned: clicks do not depend on the view, so one
    // replay scores all three. Errors only: a user clicks what their view
    // showed, so each view gets its own replay.
    let replays: Vec<View> = match train {
        TrainMode::Every => vec![View::Blended],
        TrainMode::Errors | TrainMode::Clicks(_) => View::ALL.to_vec(),
    };
    let bar = crate::cli::progress_bar(messages * replays.len(), "messages");
    let settings = engine_settings(&args);
    let durable = args.durable;
    let started = Instant::now();
    let runs = {
        let bar = bar.clone();
        let mailboxes = mailboxes.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Vec<Vec<UserOutcome>>>> {
            let mut runs = Vec::new();
            for (r, &follow) in replays.iter().enumerate() {
                let dir = tempfile::Builder::new().prefix("chaff-eval-").tempdir()?;
                let engine =
                    Engine::with_store(open_store(dir.path(), durable)?, settings.clone())?;
                for m in &seed {
                    let bytes = std::fs::read(&m.path)
                        .with_context(|| format!("cannot read {}", m.path.display()))?;
                    engine.seed(&bytes, m.gold, Some(MessageId::new(&m.id)?))?;
                }
                let mut filter = EngineShared::consenting(&engine, &mailboxes)?;
                let offset = r * order.len();
                runs.push(multi::replay_users(
                    &mailboxes,
                    &order,
                    &mut filter,
                    train,
                    follow,
                    |done, _| bar.set_position((offset + done) as u64),
                )?);
            }
            Ok(runs)
        })
        .await??
    };
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    // The outcomes each view is judged by: its own replay in errors mode.
    let per_view: Vec<&Vec<Vec<UserOutcome>>> = (0..View::ALL.len())
        .map(|v| &runs[v.min(runs.len() - 1)])
        .collect();
    report(
        &args,
        train,
        &mailboxes,
        arrival,
        &per_view,
        elapsed,
        messages * runs.len(),
    )
    .context("writing the report")
}

fn report(
    args: &EvalArgs,
    train: TrainMode,
    mailboxes: &[Mailbox],
    arrival: Arrival,
    per_view: &[&Vec<Vec<UserOutcome>>],
    elapsed: f64,
    replayed: usize,
) -> anyhow::Result<()> {
    let window_name = |w: Option<usize>| w.map_or("all".to_string(), |n| format!("first {n}"));
    // rates[view][user][window]
    let rates: Vec<Vec<Vec<Misfiled>>> = View::ALL
        .iter()
        .zip(per_view)
        .map(|(&v, outcomes)| {
            outcomes
                .iter()
                .map(|o| WINDOWS.iter().map(|&w| misfiled(o, v, w)).collect())
                .collect()
        })
        .collect();
    // clicks[view][user]: (spam, ham) taught in the replay that view led.
    let clicks: Vec<Vec<(usize, usize)>> = per_view
        .iter()
        .map(|outcomes| {
            outcomes
                .iter()
                .map(|o| {
                    let n = |gold| o.iter().filter(|x| x.taught && x.gold == gold).count();
                    (n(Label::Spam), n(Label::Ham))
                })
                .collect()
        })
        .collect();
    let mean = |v: usize, w: usize| {
        let users = &rates[v];
        users.iter().map(|u| u[w].pct()).sum::<f64>() / users.len() as f64
    };
    let protocol = format!(
        "{} mailboxes, arrival {}, train {}{}",
        mailboxes.len(),
        arrival.name(),
        train.describe(),
        args.seed_index.as_ref().map_or(String::new(), |p| format!(
            ", shared model seeded from {}",
            p.display()
        ))
    );
    if args.json {
        // {view: {window: value}}
        let by_view_and_window = |value: &dyn Fn(usize, usize) -> serde_json::Value| {
            let views: serde_json::Map<_, _> = View::ALL
                .iter()
                .enumerate()
                .map(|(v, view)| {
                    let windows: serde_json::Map<_, _> = WINDOWS
                        .iter()
                        .enumerate()
                        .map(|(w, &win)| (window_name(win), value(v, w)))
                        .collect();
                    (view.name().to_string(), windows.into())
                })
                .collect();
            serde_json::Value::from(views)
        };
        let users: Vec<_> = mailboxes
            .iter()
            .enumerate()
            .map(|(u, m)| {
                let views = by_view_and_window(&|v, w| {
                    let m = rates[v][u][w];
                    serde_json::json!({
                        "misfiled_pct": m.pct(),
                        "messages": m.messages,
                        "spam_missed": m.spam_missed,
                        "ham_misfiled": m.ham_misfiled,
                    })
                });
                let taught: serde_json::Map<_, _> = View::ALL
                    .iter()
                    .enumerate()
                    .map(|(v, view)| {
                        let (spam, ham) = clicks[v][u];
                        let c = serde_json::json!({"spam": spam, "ham": ham});
                        (view.name().to_string(), c)
                    })
                    .collect();
                serde_json::json!({
                    "user": m.user,
                    "messages": m.messages.len(),
                    "views": views,
                    "clicks": taught,
                })
            })
            .collect();
        let average = by_view_and_window(&|v, w| mean(v, w).into());
        println!(
            "{}",
            serde_json::json!({
                "protocol": protocol,
                "users": users,
                "average_misfiled_pct": average,
                "messages_per_second": replayed as f64 / elapsed,
            })
        );
        return Ok(());
    }
    println!("protocol          {protocol}");
    println!("misfiled %        (spam not judged spam + ham judged spam) / messages");
    let header: Vec<String> = WINDOWS.iter().map(|&w| window_name(w)).collect();
    // One table: a row per view, a column per window.
    let table = |pct: &dyn Fn(usize, usize) -> f64| {
        let row = |name: &str, cells: &[String]| {
            let cells: String = cells.iter().map(|c| format!(" {c:>10}")).collect();
            println!("  {name:<10}{cells}");
        };
        row("", &header);
        for (v, view) in View::ALL.iter().enumerate() {
            let cells: Vec<String> = (0..WINDOWS.len())
                .map(|w| format!("{:.2}", pct(v, w)))
                .collect();
            row(view.name(), &cells);
        }
    };
    for (u, m) in mailboxes.iter().enumerate() {
        println!();
        println!("{} ({} messages)", m.user, m.messages.len());
        table(&|v, w| rates[v][u][w].pct());
        let taught: Vec<String> = View::ALL
            .iter()
            .enumerate()
            .map(|(v, view)| {
                let (spam, ham) = clicks[v][u];
                format!("{} {spam} spam + {ham} ham", view.name())
            })
            .collect();
        println!("  taught (clicks): {}", taught.join(", "));
    }
    println!();
    println!("average over users");
    table(&mean);
    println!();
    println!(
        "speed             {:.0} messages/s ({replayed} scored in {elapsed:.1} s)",
        replayed as f64 / elapsed
    );
    Ok(())
}
