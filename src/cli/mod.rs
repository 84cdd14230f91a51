//! Command-line interface (binary only). Each subcommand's help says what it
//! does and what its defaults are; environment variables mirror the flags so
//! a deployment can configure chaff without a wrapper script.

mod client;
mod eval;
mod loadtest;
mod policy;
mod seed;
mod serve;
mod trust;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Per-user Bayesian spam training and scoring service.
///
/// Start the service with `chaff serve`; score and train messages against it
/// with `chaff score` and `chaff train`.
#[derive(Parser, Debug)]
#[command(name = "chaff", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    connect: trust::ConnectArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gRPC service (chaff.v1.Chaff, health, reflection).
    Serve(serve::ServeArgs),
    /// Score message files for a user (talks to a running server).
    Score(ScoreArgs),
    /// Learn message files as spam or ham for a user (talks to a running server).
    Train(TrainArgs),
    /// Undo an earlier train of one message, by its message id.
    Forget(ForgetArgs),
    /// Show a user's learn counts, model size and delivery settings; with
    /// --mode or thresholds, change the settings.
    User(policy::UserArgs),
    /// Add, remove or show allow, block and trusted-sender list entries.
    #[command(subcommand)]
    List(policy::ListCommand),
    /// Support: why were a user's messages delivered, filed as spam or
    /// rejected? Reads the server's decision log.
    Why(policy::WhyArgs),
    /// Operator: seed the shared model from a labelled corpus (TREC index),
    /// or remove the seed with --clear.
    Seed(seed::SeedArgs),
    /// Show the shared model's size: contributing users, messages, tokens, seed.
    Shared(ServerArg),
    /// Operator: the server's model cache (hits, misses, evictions, memory)
    /// and how many durable replies shared each storage flush.
    Stats(ServerArg),
    /// Replay a labelled corpus (TREC index) and report (1-ROCA)%, lam% and more.
    Eval(eval::EvalArgs),
    /// Keep N calls in flight against a running server for a while and report
    /// calls/s and latency percentiles (a load generator).
    Loadtest(loadtest::LoadtestArgs),
    /// Compute the same measures from results files (`id score gold judged` lines),
    /// e.g. written by `chaff eval --results` or the peer scripts.
    Metrics(MetricsArgs),
    /// Print a message's features (tokens) as the classifier sees them; local, no server.
    Tokens(TokensArgs),
    /// Operator: issue, list and revoke API keys (local: edits the keys file
    /// a running server watches).
    #[command(subcommand)]
    Keys(trust::KeysCommand),
}

#[derive(Args, Debug)]
pub(crate) struct ServerArg {
    /// Address of a running chaff server.
    #[arg(long, env = "CHAFF_SERVER", default_value = "http://127.0.0.1:50051")]
    pub(crate) server: String,
}

#[derive(Args, Debug)]
struct ScoreArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The recipient's mailbox id.
    #[arg(long, short)]
    user: String,
    /// The connecting client's IP, as the pipeline would pass it (default:
    /// the server reads the topmost Received-SPF header).
    #[arg(long)]
    client_ip: Option<String>,
    /// RFC 5322 message files; `-` reads standard input.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Args, Debug)]
#[group(id = "label", required = true, multiple = false)]
struct LabelArg {
    /// Learn the messages as spam (the user clicked "Spam").
    #[arg(long, group = "label")]
    spam: bool,
    /// Learn the messages as ham (the user clicked "Not spam").
    #[arg(long, group = "label")]
    ham: bool,
}

#[derive(Args, Debug)]
struct TrainArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The mailbox whose model learns.
    #[arg(long, short)]
    user: String,
    #[command(flatten)]
    label: LabelArg,
    /// Record the click under this id (default: the Message-ID header, else a
    /// digest of the message). Only with a single file.
    #[arg(long)]
    message_id: Option<String>,
    /// RFC 5322 message files; `-` reads standard input.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Args, Debug)]
struct ForgetArgs {
    #[command(flatten)]
    server: ServerArg,
    #[arg(long, short)]
    user: String,
    /// The id `chaff train` printed for the message.
    message_id: String,
}

#[derive(Args, Debug)]
struct MetricsArgs {
    /// Results files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print JSON, one object per line.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct TokensArgs {
    /// An RFC 5322 message file; `-` reads standard input.
    file: PathBuf,
}

/// A progress bar on standard error for `len` messages (hidden when it is
/// not a terminal), its counter line described by `what`.
pub(crate) fn progress_bar(len: usize, what: &str) -> indicatif::ProgressBar {
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new(len as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what}, {{per_sec}}, eta {{eta}}"
        ))
        .expect("valid template"),
    );
    bar
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    trust::set_connect_args(cli.connect);
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Score(a) => {
            client::score(&a.server.server, &a.user, a.client_ip.as_deref(), &a.files).await
        }
        Command::Train(a) => {
            let spam = a.label.spam;
            client::train(&a.server.server, &a.user, spam, a.message_id, &a.files).await
        }
        Command::Forget(a) => client::forget(&a.server.server, &a.user, &a.message_id).await,
        Command::User(a) => policy::user(a).await,
        Command::List(c) => policy::list(c).await,
        Command::Why(a) => policy::why(a).await,
        Command::Seed(a) => seed::run(a).await,
        Command::Shared(a) => seed::show(&a.server).await,
        Command::Stats(a) => client::stats(&a.server).await,
        Command::Tokens(a) => client::tokens(&a.file),
        Command::Eval(a) => eval::run(a).await,
        Command::Loadtest(a) => loadtest::run(a).await,
        Command::Metrics(a) => eval::metrics(&a.files, a.json),
        Command::Keys(c) => trust::keys(c),
    }
}
