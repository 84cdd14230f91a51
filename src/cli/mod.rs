//! Command-line interface (binary only). Each subcommand's help says what it
//! does and what its defaults are; environment variables mirror the flags so
//! a deployment can configure chaff without a wrapper script.

mod client;
mod config;
mod eval;
mod loadtest;
mod policy;
mod seed;
mod serve;
mod soak;
mod trust;
mod upgrade;
mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use chaff::types::Label;

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

impl Cli {
    /// Whether this runs the service (`serve`) rather than a command for
    /// people, whose output may be piped into `head` (`main`'s SIGPIPE).
    pub fn runs_the_service(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }
}

/// The usage lines are written out for the commands that talk to a server:
/// clap's generated usage in an error lists every flag the user typed, so
/// `--server <SERVER>` appeared there as if it were required. A unit test
/// below checks each against the generated one.
#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gRPC service (chaff.v1.Chaff, health, reflection).
    Serve(serve::ServeArgs),
    /// Score message files for a user (talks to a running server).
    #[command(override_usage = "chaff score [OPTIONS] --user <USER> <FILES>...")]
    Score(ScoreArgs),
    /// Learn message files as spam or ham for a user (talks to a running server).
    #[command(override_usage = "chaff train [OPTIONS] --user <USER> <--spam|--ham> <FILES>...")]
    Train(TrainArgs),
    /// Undo an earlier train of one message, by its message id.
    #[command(override_usage = "chaff forget [OPTIONS] --user <USER> <MESSAGE_ID>")]
    Forget(ForgetArgs),
    /// Show a user's learn counts, model size and delivery settings; with
    /// --mode or thresholds, change the settings.
    #[command(override_usage = "chaff user [OPTIONS] --user <USER> [COMMAND]")]
    User(policy::UserArgs),
    /// Add, remove or show allow, block and trusted-sender list entries.
    #[command(subcommand)]
    List(policy::ListCommand),
    /// Support: why were a user's messages delivered, filed as spam or
    /// rejected? Reads the server's decision log.
    #[command(override_usage = "chaff why [OPTIONS] --user <USER>")]
    Why(policy::WhyArgs),
    /// Operator: seed the shared model from a labelled corpus (TREC index),
    /// or remove the seed with --clear.
    ///
    /// The shared model counts in users' scores as far as it knows both
    /// classes: in full once it holds 50 messages of spam and 50 of ham
    /// (seed and shared clicks together), nothing while it holds no ham.
    /// Users mostly click only Spam, so a seed with ham of your users'
    /// kind is what lets the shared model protect them (docs/SHARED.md).
    #[command(override_usage = "chaff seed [OPTIONS]")]
    Seed(seed::SeedArgs),
    /// Show the shared model's size: contributing users, messages, tokens, seed.
    #[command(override_usage = "chaff shared [OPTIONS]")]
    Shared(ShowArgs),
    /// Operator: the server's model cache (hits, misses, evictions, memory)
    /// and how many durable replies shared each storage flush.
    #[command(override_usage = "chaff stats [OPTIONS]")]
    Stats(ShowArgs),
    /// Operator: list the users chaff keeps anything for, with learn counts
    /// and when each was last scored.
    #[command(override_usage = "chaff users [OPTIONS]")]
    Users(UsersArgs),
    /// Operator: copy the server's whole store, while it serves, into a new
    /// data directory on the server's machine; `chaff serve --data DIR`
    /// serves the copy (the restore). A server over a Redis Cluster writes
    /// the same kind of (sled) directory, reading every user one after
    /// another; keep the cluster's own AOF/RDB files for a lost cluster.
    #[command(override_usage = "chaff backup [OPTIONS] <DIR>")]
    Backup(BackupArgs),
    /// Replay a labelled corpus (TREC index) and report (1-ROCA)%, lam% and more.
    Eval(eval::EvalArgs),
    /// Keep N calls in flight against a running server for a while and report
    /// calls/s and latency percentiles (a load generator).
    #[command(override_usage = "chaff loadtest [OPTIONS] --corpus <CORPUS>")]
    Loadtest(loadtest::LoadtestArgs),
    /// Compute the same measures from results files (`id score gold judged` lines),
    /// e.g. written by `chaff eval --results` or the peer scripts; with
    /// --compare, whether two replays of one corpus differ beyond noise.
    Metrics(MetricsArgs),
    /// Crash soak: run `chaff serve` on a fresh data directory under
    /// concurrent clicks, settings and list changes, DeleteUsers and the
    /// operator's seeds and lists, SIGKILL it at random moments, and check after each
    /// restart that nothing acknowledged was lost and nothing unacknowledged
    /// half-applied (docs/FAULTS.md).
    Soak(soak::SoakArgs),
    /// Print a message's features (tokens) as the classifier sees them; local, no server.
    Tokens(TokensArgs),
    /// Operator, with the server stopped: rebuild a user's model from their
    /// ledger, after a damaged model snapshot or journal record (the error
    /// the server answered, DATA_LOSS, names the user and says to run
    /// this). Exact unless clicks beyond the undo window were folded: those
    /// are counted and reported, not recounted. A damaged ledger entry, or
    /// a damaged directory (`chaff serve` refuses it at start), cannot be
    /// rebuilt: restore the data directory from a backup.
    #[command(override_usage = "chaff repair [OPTIONS] --user <USER>")]
    Repair(RepairArgs),
    /// Operator, with the server stopped: write the data directory anew
    /// (the same records, verified) and swap it in, so sled's files are as
    /// long as what they hold (a clean shutdown already gives unused space
    /// back to the file system but leaves the file at its high-water mark;
    /// docs/OPERATIONS.md, "Disk space"). Needs room for a second copy
    /// beside it; safe to kill at any point (the next open finishes or
    /// undoes the swap).
    Compact(CompactArgs),
    /// Operator: upgrade a Redis Cluster written by a chaff before the undo
    /// window (ledger entries without a click time): each such entry is
    /// stamped with now, so it stays undoable for one more --undo-window and
    /// is then folded. Servers may keep serving meanwhile; safe to stop and
    /// run again.
    Upgrade(upgrade::UpgradeArgs),
    /// Operator: issue, list and revoke API keys (local: edits the keys file
    /// a running server watches).
    #[command(subcommand)]
    Keys(trust::KeysCommand),
}

#[derive(Args, Debug)]
pub(crate) struct ServerArg {
    /// Address of a running chaff server: HOST:PORT as `chaff serve`
    /// prints it (127.0.0.1:50051; a bare HOST means port 50051), or a URL
    /// (http://host:50051).
    #[arg(
        long,
        env = "CHAFF_SERVER",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:50051",
        value_parser = parse_server
    )]
    pub(crate) server: String,
}

/// `host:port` (what `chaff serve` prints) or a URL, as the URL the gRPC
/// client connects to. A bare host takes chaff's port, 50051 (a URL keeps
/// its scheme's own default); a port must be 1–65535.
pub(crate) fn parse_server(s: &str) -> Result<String, String> {
    let s = s.trim();
    let not_an_address = || {
        format!(
            "{s:?} is not a server address; write HOST:PORT (127.0.0.1:50051) or a URL \
             (http://mail-filter.internal:50051)"
        )
    };
    let url = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let uri = match url.parse::<tonic::codegen::http::Uri>() {
        Ok(uri) if uri.host().is_some() => uri,
        _ => return Err(not_an_address()),
    };
    // A server is a host and port: a path or query is a typo (and a port
    // added after it would not be the port).
    if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
        return Err(not_an_address());
    }
    // The port as written (`Uri::port` hides one that overflows a u16).
    let authority = uri.authority().map_or("", |a| a.as_str());
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let port = match host_port.rsplit_once(':') {
        Some((_, port)) if !port.ends_with(']') => Some(port),
        _ => None,
    };
    match port {
        Some("") => Err(format!("{s:?}: the port is missing after the colon")),
        Some(port) if !matches!(port.parse::<u16>(), Ok(1..)) => {
            Err(format!("{s:?}: {port} is not a port (1–65535)"))
        }
        None if !s.contains("://") => Ok(format!("http://{authority}:50051")),
        _ => Ok(url),
    }
}

/// `--json`, for every command that prints data: one JSON object per line
/// on standard output, for scripts.
#[derive(Args, Debug, Clone, Copy)]
pub(crate) struct JsonArg {
    /// Print JSON (one object per line) instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ShowArgs {
    #[command(flatten)]
    pub(crate) server: ServerArg,
    #[command(flatten)]
    pub(crate) json: JsonArg,
}

/// `500ms`, `10s`, `2m`, `12h`, `30d` (a bare number is seconds): the units a
/// person types, the same for every flag that takes a duration. Values
/// beyond 100 years are refused rather than wrapped.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 10s, 2m, 12h or 30d"))?;
    let ms_per = match unit.trim() {
        "ms" => 1,
        "s" | "" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {s:?}; use ms, s, m, h or d"
            ));
        }
    };
    const MAX_MS: u64 = 100 * 365 * 86_400_000;
    match n.checked_mul(ms_per) {
        Some(ms) if ms <= MAX_MS => Ok(Duration::from_millis(ms)),
        _ => Err(format!("{s:?} is too long; at most 100 years (36500d)")),
    }
}

/// The error and its causes on one line, each said once: many errors (tonic's
/// transport errors, sled's, some of ours) already print their cause in their
/// own text, so `{:#}` would repeat it ("tcp connect error: tcp connect
/// error"). A cause whose text is already in the line is left out.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// "1 user", "2 users".
pub(crate) fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
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
    /// Score and decide as for a delivery but change nothing: no record in
    /// the decision log (`chaff why`) and no learning of delivered mail as
    /// ham. Without it a score is the pipeline's: both happen. For support
    /// looking at a customer's message again.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    json: JsonArg,
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

impl LabelArg {
    fn label(&self) -> Label {
        if self.spam { Label::Spam } else { Label::Ham }
    }
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
    #[command(flatten)]
    json: JsonArg,
    /// RFC 5322 message files; `-` reads standard input. Files that cannot
    /// be read or learned are reported and skipped; the exit status is
    /// non-zero if any failed.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Args, Debug)]
struct ForgetArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The mailbox whose click is undone.
    #[arg(long, short)]
    user: String,
    #[command(flatten)]
    json: JsonArg,
    /// The id `chaff train` printed for the message.
    message_id: String,
}

#[derive(Args, Debug)]
struct UsersArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Only users whose id starts with this, e.g. `acme/` (a tenant-bound
    /// key lists only its own tenant's users anyway).
    #[arg(long, default_value = "")]
    prefix: String,
    /// Users fetched per call (1 to 1000); every page is printed.
    #[arg(long, default_value_t = 500)]
    page_size: u32,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(Args, Debug)]
struct BackupArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    json: JsonArg,
    /// A new directory (or an empty one) on the server's machine; a
    /// relative path is taken from this command's working directory.
    dir: PathBuf,
}

#[derive(Args, Debug)]
struct MetricsArgs {
    /// Results files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print JSON, one object per line.
    #[arg(long)]
    json: bool,
    /// Compare two replays of the same corpus (FILES: BASE NEW): each
    /// measure of both, their difference and its 95 % interval from a
    /// paired bootstrap over the messages; "worse" or "better" when the
    /// interval excludes 0, else "noise" (src/eval/compare.rs).
    #[arg(long)]
    compare: bool,
    /// With --compare: how many times the corpus is resampled (each time
    /// its n messages drawn n times with replacement) [default: 1000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(20..=1_000_000))]
    replicates: Option<u64>,
    /// With --compare: seeds the draws (SplitMix64), so runs repeat
    /// [default: 0].
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Args, Debug)]
struct RepairArgs {
    /// The mailbox whose model is rebuilt.
    #[arg(long, short)]
    user: String,
    /// The server's data directory (the server must be stopped: one chaff
    /// process per directory).
    #[arg(long, env = "CHAFF_DATA", default_value = "./chaff-data")]
    data: PathBuf,
    #[command(flatten)]
    json: JsonArg,
}

/// `chaff repair`: opens the data directory and rebuilds one user's model.
fn repair(a: &RepairArgs) -> anyhow::Result<()> {
    let user = chaff::types::UserId::new(a.user.clone())?;
    // A typo must not create a data directory or a user: both are checked
    // before anything is written.
    existing_data_dir(&a.data)?;
    let store = chaff::store::Store::open(&a.data, 64 << 20)?;
    if !store.user_exists(&user)? {
        anyhow::bail!(
            "user {} has nothing stored in {}: nothing to repair (`chaff users` on the running server lists the ids)",
            a.user,
            a.data.display()
        );
    }
    let r = store.rebuild_model(&user)?;
    store.seal_generation()?;
    if a.json.json {
        println!(
            "{}",
            serde_json::json!({
                "user": a.user, "learned": r.learned, "folded": r.folded,
                "other_tokenizer": r.other_tokenizer, "tokens": r.tokens,
            })
        );
    } else {
        println!(
            "rebuilt the model of {} from {} ledger entries: {} tokens",
            a.user, r.learned, r.tokens
        );
        if r.folded > 0 {
            println!(
                "{} clicks older than the undo window were folded and are not in the rebuilt model",
                r.folded
            );
        }
        if r.other_tokenizer > 0 {
            println!(
                "{} clicks of an older tokenizer are not in it either (as in any current model)",
                r.other_tokenizer
            );
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
struct CompactArgs {
    /// The server's data directory (the server must be stopped: one chaff
    /// process per directory). The copy is written beside it, as
    /// DIR.compact-new (DIR.compact-old during the swap).
    #[arg(long, env = "CHAFF_DATA", default_value = "./chaff-data")]
    data: PathBuf,
    #[command(flatten)]
    json: JsonArg,
}

/// For the operator's offline commands (`repair`, `compact`): `data` must
/// be a chaff data directory (sled's `conf` or `db` in it), or one a
/// killed `compact` left half swapped (`DATA.compact-old`/`-new` beside
/// it, which opening finishes). A typo was otherwise created as a new
/// directory, or read as a damaged one.
fn existing_data_dir(data: &Path) -> anyhow::Result<()> {
    let beside = |suffix: &str| {
        let mut p = data.to_path_buf().into_os_string();
        p.push(suffix);
        PathBuf::from(p).exists()
    };
    if beside(".compact-old") || beside(".compact-new") {
        return Ok(());
    }
    if !data.is_dir() {
        anyhow::bail!("--data {}: no data directory there", data.display());
    }
    if !data.join("conf").exists() && !data.join("db").exists() {
        anyhow::bail!(
            "--data {}: not a chaff data directory (no sled files in it)",
            data.display()
        );
    }
    Ok(())
}

/// `chaff compact`: progress on standard error about once a second, the
/// sizes before and after on standard output.
fn compact(a: &CompactArgs) -> anyhow::Result<()> {
    use chaff::store::RewriteStep;
    existing_data_dir(&a.data)?;
    let started = std::time::Instant::now();
    let done = chaff::store::Store::rewrite_dir(&a.data, 64 << 20, &mut |step| {
        let secs = started.elapsed().as_secs_f64();
        match step {
            RewriteStep::Copied { records, bytes } => eprintln!(
                "compact: {records} records ({:.1} MB) copied ({secs:.1} s)",
                bytes as f64 / 1e6
            ),
            RewriteStep::Verified { records } => eprintln!(
                "compact: the copy reopened and equal to the original, {records} records ({secs:.1} s)"
            ),
            RewriteStep::OriginalAside => eprintln!("compact: swapping"),
            RewriteStep::Swapped => eprintln!("compact: the copy is in place ({secs:.1} s)"),
        }
    })?;
    let secs = started.elapsed().as_secs_f64();
    if a.json.json {
        println!(
            "{}",
            serde_json::json!({
                "records": done.records, "bytes": done.bytes,
                "disk_before": done.disk_before, "disk_after": done.disk_after,
                "seconds": secs,
            })
        );
    } else {
        println!(
            "compacted {}: {} records ({} bytes), {} bytes on disk before, {} after, in {secs:.1} s",
            a.data.display(),
            done.records,
            done.bytes,
            done.disk_before,
            done.disk_after
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
struct TokensArgs {
    #[command(flatten)]
    json: JsonArg,
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

pub use config::parse;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    trust::set_connect_args(cli.connect);
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Score(a) => {
            let ip = a.client_ip.as_deref();
            let how = client::ScoreHow {
                client_ip: ip,
                dry_run: a.dry_run,
                as_json: a.json.json,
            };
            client::score(&a.server.server, &a.user, &how, &a.files).await
        }
        Command::Train(a) => {
            let label = a.label.label();
            let server = &a.server.server;
            client::train(server, &a.user, label, a.message_id, &a.files, a.json.json).await
        }
        Command::Forget(a) => {
            client::forget(&a.server.server, &a.user, &a.message_id, a.json.json).await
        }
        Command::User(a) => policy::user(a).await,
        Command::List(c) => policy::list(c).await,
        Command::Why(a) => policy::why(a).await,
        Command::Seed(a) => seed::run(a).await,
        Command::Shared(a) => seed::show(&a.server.server, a.json.json).await,
        Command::Stats(a) => client::stats(&a.server.server, a.json.json).await,
        Command::Backup(a) => client::backup(&a.server.server, &a.dir, a.json.json).await,
        Command::Users(a) => {
            client::users(&a.server.server, a.prefix, a.page_size, a.json.json).await
        }
        Command::Tokens(a) => client::tokens(&a.file, a.json.json),
        Command::Eval(a) => eval::run(a).await,
        Command::Loadtest(a) => loadtest::run(a).await,
        Command::Metrics(a) if a.compare => eval::compare(
            &a.files,
            a.replicates.unwrap_or(1000) as usize,
            a.seed.unwrap_or(0),
            a.json,
        ),
        Command::Metrics(a) => {
            if a.seed.is_some() || a.replicates.is_some() {
                anyhow::bail!(
                    "--replicates and --seed set up --compare's bootstrap: add --compare"
                );
            }
            eval::metrics(&a.files, a.json)
        }
        Command::Soak(a) => soak::run(a).await,
        Command::Keys(c) => trust::keys(c),
        Command::Repair(a) => repair(&a),
        Command::Compact(a) => compact(&a),
        Command::Upgrade(a) => upgrade::run(a).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args, CommandFactory};

    #[test]
    fn a_server_address_takes_chaffs_port_unless_it_names_one_and_the_port_must_be_one() {
        use super::parse_server;
        assert_eq!(
            parse_server("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(parse_server("localhost").unwrap(), "http://localhost:50051");
        assert_eq!(parse_server("[::1]").unwrap(), "http://[::1]:50051");
        // A URL keeps its scheme's default port, as a URL does anywhere.
        assert_eq!(
            parse_server("https://mail-filter.internal").unwrap(),
            "https://mail-filter.internal"
        );
        for bad in ["127.0.0.1:99999", "127.0.0.1:0", "http://h:65536"] {
            let e = parse_server(bad).unwrap_err();
            assert!(e.contains("is not a port (1–65535)"), "{bad}: {e}");
        }
        // Not a host and port: refused, not a port glued after a path.
        for bad in ["mail-filter/x", "host?x", "http://h:50051/path"] {
            assert!(
                parse_server(bad)
                    .unwrap_err()
                    .contains("not a server address"),
                "{bad}"
            );
        }
        assert_eq!(
            parse_server("mail-filter/").unwrap(),
            "http://mail-filter:50051"
        );
        assert!(
            parse_server("host:")
                .unwrap_err()
                .contains("port is missing")
        );
        assert!(
            parse_server("")
                .unwrap_err()
                .contains("not a server address")
        );
    }

    /// The usage line clap would generate for `name` from its arguments
    /// alone, without the written-out override.
    fn generated<A: Args>(name: &'static str) -> String {
        let mut cmd = A::augment_args(clap::Command::new(name));
        cmd.render_usage().to_string()
    }

    /// The written-out usage lines say what clap's generated ones say, so
    /// they cannot drift from the flags.
    #[test]
    fn written_out_usage_lines_match_the_generated_ones() {
        let cli = super::Cli::command();
        let written = |path: &[&str]| {
            let mut cmd = cli.clone();
            for p in path {
                cmd = cmd.find_subcommand(p).unwrap().clone();
            }
            assert!(
                cmd.get_overridden_usage().is_some(),
                "{path:?} has no written-out usage"
            );
            cmd.render_usage().to_string()
        };
        let cases = [
            (vec!["score"], generated::<super::ScoreArgs>("chaff score")),
            (vec!["train"], generated::<super::TrainArgs>("chaff train")),
            (
                vec!["forget"],
                generated::<super::ForgetArgs>("chaff forget"),
            ),
            (
                vec!["user"],
                generated::<super::policy::UserArgs>("chaff user"),
            ),
            (
                vec!["why"],
                generated::<super::policy::WhyArgs>("chaff why"),
            ),
            (
                vec!["seed"],
                generated::<super::seed::SeedArgs>("chaff seed"),
            ),
            (vec!["shared"], generated::<super::ShowArgs>("chaff shared")),
            (vec!["stats"], generated::<super::ShowArgs>("chaff stats")),
            (vec!["users"], generated::<super::UsersArgs>("chaff users")),
            (
                vec!["backup"],
                generated::<super::BackupArgs>("chaff backup"),
            ),
            (
                vec!["loadtest"],
                generated::<super::loadtest::LoadtestArgs>("chaff loadtest"),
            ),
            (
                vec!["list", "add"],
                generated::<super::policy::ListAdd>("chaff list add"),
            ),
            (
                vec!["list", "remove"],
                generated::<super::policy::ListChange>("chaff list remove"),
            ),
            (
                vec!["list", "show"],
                generated::<super::policy::ListShow>("chaff list show"),
            ),
        ];
        for (path, generated) in cases {
            assert_eq!(written(&path), generated, "{path:?}");
        }
    }
}
