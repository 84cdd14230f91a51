//! Client commands: read message files, call a running server, print one
//! readable line per message.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::json;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use chaff::proto::{self, chaff_client::ChaffClient};
use chaff::service::status::label_to_wire;
use chaff::tokenize::Tokenizer;
use chaff::types::Label;

/// A client that sends the --token with every call.
pub(crate) type Client = ChaffClient<InterceptedService<Channel, super::trust::Auth>>;

pub(crate) async fn connect(server: &str) -> anyhow::Result<Client> {
    let channel = super::trust::channel(server).await?;
    let client = ChaffClient::with_interceptor(channel, super::trust::Auth::from_flags()?);
    // Messages up to the server's own limit must not be refused client-side.
    Ok(client
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(64 << 20))
}

fn read_message(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read standard input")?;
    } else {
        bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    }
    Ok(bytes)
}

/// A server error as "CODE: message", which is what a person needs; a
/// lost connection says so, with the transport's own reason.
pub(crate) fn status(e: tonic::Status) -> anyhow::Error {
    if connection_lost(&e) {
        let mut why = String::new();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why = s.to_string();
            source = s.source();
        }
        return anyhow::anyhow!(
            "{:?}: {}{}: the connection to the chaff server failed or it stopped answering; is `chaff serve` running there?",
            e.code(),
            e.message(),
            if why.is_empty() || why == e.message() {
                String::new()
            } else {
                format!(" ({why})")
            }
        );
    }
    anyhow::anyhow!("{:?}: {}", e.code(), e.message())
}

/// Whether a call failed because the connection did (the server went away
/// or stopped answering), not because the server refused it: tonic gives a
/// transport failure the transport's error as its source (UNAVAILABLE for
/// a refused connection or a ping timeout, UNKNOWN for a connection reset
/// mid-call), while every status the server sends (its own UNAVAILABLE
/// for storage too) arrives over the wire without one. Commands that work
/// through many files stop at the first, instead of failing every file
/// after it the same way.
pub(crate) fn connection_lost(e: &tonic::Status) -> bool {
    std::error::Error::source(e).is_some()
}

/// What a per-file loop does with one file's outcome.
enum Next<T> {
    /// The server's reply.
    Reply(T),
    /// The file failed (reported, counted): go on with the next.
    Skip,
    /// The connection is lost (reported, counted): the rest are not tried.
    Stop,
}

/// A per-file command's failure on one file: that file's own (the rest go
/// on), or the connection's (the rest cannot).
enum FileFailure {
    File(anyhow::Error),
    Connection(anyhow::Error),
}

impl FileFailure {
    /// From the failed call `verb`-ing `file` ("cannot train FILE: …").
    fn call<'a>(verb: &'a str, file: &'a Path) -> impl FnOnce(tonic::Status) -> FileFailure + 'a {
        move |e| {
            let lost = connection_lost(&e);
            let e = status(e).context(format!("cannot {verb} {}", file.display()));
            if lost {
                FileFailure::Connection(e)
            } else {
                FileFailure::File(e)
            }
        }
    }

    /// One file's outcome in a per-file loop: its reply, or its failure
    /// reported (standard error, and a JSON line with `--json`) and
    /// counted.
    fn settle<T>(
        r: Result<tonic::Response<T>, FileFailure>,
        file: &Path,
        as_json: bool,
        failed: &mut usize,
    ) -> Next<T> {
        let (e, next) = match r {
            Ok(r) => return Next::Reply(r.into_inner()),
            Err(FileFailure::File(e)) => (e, Next::Skip),
            Err(FileFailure::Connection(e)) => (e, Next::Stop),
        };
        *failed += 1;
        eprintln!("error: {}", super::error_line(&e));
        if as_json {
            println!(
                "{}",
                json!({"file": file.display().to_string(), "error": super::error_line(&e)})
            );
        }
        next
    }
}

/// The closing line of a per-file command: how many were done, failed and
/// (after a lost connection) not tried; an error (non-zero exit) unless
/// every file was done.
fn per_file_summary(verb: &str, done: usize, failed: usize, total: usize) -> anyhow::Result<()> {
    let untried = total - done - failed;
    if total > 1 || failed > 0 {
        if untried > 0 {
            eprintln!(
                "{verb} {done} of {total}, {failed} failed, {untried} not tried (the connection was lost)"
            );
        } else {
            eprintln!("{verb} {done} of {total}, {failed} failed");
        }
    }
    if failed > 0 {
        bail!(
            "{} of {total} files were not {verb} (see above)",
            failed + untried
        );
    }
    Ok(())
}

/// A verdict a server answered with, spelled as the library spells it.
fn verdict_name(v: i32) -> String {
    chaff::service::status::verdict_from_wire(v).map_or_else(|| "?".into(), |v| v.to_string())
}

/// How `chaff score` asks: as the pipeline would (the client IP), whether
/// to change nothing (`--dry-run`), and how to print.
#[derive(Clone, Copy, Debug)]
pub struct ScoreHow<'a> {
    pub client_ip: Option<&'a str>,
    pub dry_run: bool,
    pub as_json: bool,
}

/// Scores each file; like `train`, a file that cannot be read or scored is
/// reported on standard error (naming it) and the rest go on, unless the
/// connection itself is lost. Ends with "scored N of M, K failed" for
/// several files, and an error (non-zero exit) if any failed.
pub async fn score(
    server: &str,
    user: &str,
    how: &ScoreHow<'_>,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    let ScoreHow {
        client_ip,
        dry_run,
        as_json,
    } = *how;
    let mut client = connect(server).await?;
    let (mut scored, mut failed) = (0usize, 0usize);
    for file in files {
        let r = match read_message(file) {
            Ok(message) => client
                .score(proto::ScoreRequest {
                    user_id: user.to_string(),
                    message,
                    client_ip: client_ip.unwrap_or_default().to_string(),
                    message_id: String::new(),
                    dry_run,
                })
                .await
                .map_err(FileFailure::call("score", file)),
            Err(e) => Err(FileFailure::File(e)),
        };
        let r = match FileFailure::settle(r, file, as_json, &mut failed) {
            Next::Reply(r) => r,
            Next::Skip => continue,
            Next::Stop => break,
        };
        scored += 1;
        if as_json {
            let x = r.explanation.clone().unwrap_or_default();
            println!(
                "{}",
                json!({
                    "file": file.display().to_string(),
                    "verdict": verdict_name(r.verdict),
                    "spam_probability": r.spam_probability,
                    "action": super::policy::action_name(r.action),
                    "rule": super::policy::rule_name(x.rule),
                    "reason": x.reason,
                    "notes": x.notes,
                    "sender": x.sender,
                    "client_ip": x.client_ip,
                    "smtp_reply": r.smtp_reply,
                    "tokens_known": r.tokens_known,
                    "tokens_used": r.tokens_used,
                    "limits_hit": r.limits_hit,
                })
            );
            continue;
        }
        let limits = if r.limits_hit.is_empty() {
            String::new()
        } else {
            format!("; capped: {}", r.limits_hit.join(", "))
        };
        println!(
            "{:<6} {:.4}  {:<11} {}  ({} tokens known, {} used as evidence{limits})",
            verdict_name(r.verdict),
            r.spam_probability,
            super::policy::action_name(r.action),
            file.display(),
            r.tokens_known,
            r.tokens_used
        );
        if let Some(x) = &r.explanation {
            println!("       {}: {}", super::policy::rule_name(x.rule), x.reason);
            for note in &x.notes {
                println!("       note: {note}");
            }
            let or_none = |s: &str| {
                if s.is_empty() {
                    "(none)".to_string()
                } else {
                    s.to_string()
                }
            };
            println!(
                "       sender {}, sending IP {}",
                or_none(&x.sender),
                or_none(&x.client_ip)
            );
        }
        if !r.smtp_reply.is_empty() {
            println!("       SMTP reply: {}", r.smtp_reply);
        }
    }
    per_file_summary("scored", scored, failed, files.len())
}

/// Learns each file; a file that cannot be read or learned is reported on
/// standard error and the rest go on, unless the connection itself is lost
/// (then the rest are counted as not tried). Ends with "learned N of M, K
/// failed" and an error (non-zero exit) if any failed.
pub async fn train(
    server: &str,
    user: &str,
    label: Label,
    message_id: Option<String>,
    files: &[PathBuf],
    as_json: bool,
) -> anyhow::Result<()> {
    if message_id.is_some() && files.len() > 1 {
        bail!("--message-id names one message; pass a single file");
    }
    let mut client = connect(server).await?;
    let (mut learned, mut failed) = (0usize, 0usize);
    for file in files {
        let r = match read_message(file) {
            Ok(message) => client
                .train(proto::TrainRequest {
                    user_id: user.to_string(),
                    message,
                    label: label_to_wire(label).into(),
                    message_id: message_id.clone().unwrap_or_default(),
                })
                .await
                .map_err(FileFailure::call("train", file)),
            Err(e) => Err(FileFailure::File(e)),
        };
        let r = match FileFailure::settle(r, file, as_json, &mut failed) {
            Next::Reply(r) => r,
            Next::Skip => continue,
            Next::Stop => break,
        };
        learned += 1;
        let outcome = match proto::TrainOutcome::try_from(r.outcome) {
            Ok(proto::TrainOutcome::Learned) => "learned",
            Ok(proto::TrainOutcome::AlreadyLearned) => "already learned (unchanged)",
            Ok(proto::TrainOutcome::Relearned) => "relearned (moved from the other class)",
            _ => "?",
        };
        if as_json {
            println!(
                "{}",
                json!({
                    "file": file.display().to_string(),
                    "outcome": outcome.split(' ').next().unwrap_or(outcome),
                    "label": label.as_str(),
                    "message_id": r.message_id,
                    "spam_learned": r.spam_learned,
                    "ham_learned": r.ham_learned,
                    "low_effect": r.low_effect,
                    "unsubscribe": r.unsubscribe,
                    "unsubscribe_one_click": r.unsubscribe_one_click,
                })
            );
            continue;
        }
        println!(
            "{outcome} as {}: {}  id {}  (user now {} spam, {} ham)",
            label.as_str(),
            file.display(),
            r.message_id,
            r.spam_learned,
            r.ham_learned
        );
        if r.low_effect {
            println!(
                "  low effect: the sender is trusted; the click counts an eighth. {}",
                if r.unsubscribe.is_empty() {
                    "The message has no List-Unsubscribe target.".to_string()
                } else {
                    format!(
                        "Offer unsubscribe: {}{}",
                        r.unsubscribe,
                        if r.unsubscribe_one_click {
                            " (one-click)"
                        } else {
                            ""
                        }
                    )
                }
            );
        }
    }
    per_file_summary("learned", learned, failed, files.len())
}

/// `chaff stats`: the server's model cache and group commit counters.
pub async fn stats(server: &str, as_json: bool) -> anyhow::Result<()> {
    let r = connect(server)
        .await?
        .get_stats(proto::GetStatsRequest {})
        .await
        .map_err(status)?
        .into_inner();
    if as_json {
        println!(
            "{}",
            json!({
                "resident_users": r.resident_users,
                "resident_bytes": r.resident_bytes,
                "model_memory_bytes": r.model_memory_bytes,
                "model_hits": r.model_hits,
                "model_misses": r.model_misses,
                "model_absent": r.model_absent,
                "model_evictions": r.model_evictions,
                "durable_waits": r.durable_waits,
                "flushes": r.flushes,
                "shared_model_bytes": r.shared_model_bytes,
                "delivered_queued": r.delivered_queued,
                "delivered_learned": r.delivered_learned,
                "delivered_dropped": r.delivered_dropped,
            })
        );
        return Ok(());
    }
    let lookups = r.model_hits + r.model_misses;
    println!(
        "models in memory: {}, {} MiB of {} MiB (--model-memory)",
        super::plural(r.resident_users, "user", "users"),
        r.resident_bytes >> 20,
        r.model_memory_bytes >> 20
    );
    println!(
        "shared model in memory: {:.1} MiB (never evicted; counted against --model-memory)",
        r.shared_model_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "  lookups: {} hits, {} misses (hit rate {:.3}), {} for users with nothing stored; {} evictions",
        r.model_hits,
        r.model_misses,
        r.model_hits as f64 / lookups.max(1) as f64,
        r.model_absent,
        r.model_evictions
    );
    println!(
        "durable replies: {} over {} storage flushes ({:.1} per flush)",
        r.durable_waits,
        r.flushes,
        r.durable_waits as f64 / r.flushes.max(1) as f64
    );
    println!(
        "delivered mail: {} learned as ham, {} queued now, {} dropped (queue full or at shutdown)",
        r.delivered_learned, r.delivered_queued, r.delivered_dropped
    );
    Ok(())
}

/// `chaff users`: every page of ListUsers, one line (or JSON object) per
/// user, then a count on standard error.
pub async fn users(
    server: &str,
    prefix: String,
    page_size: u32,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut client = connect(server).await?;
    let mut page_token = String::new();
    let mut listed = 0u64;
    let mut header = !as_json;
    loop {
        let page = client
            .list_users(proto::ListUsersRequest {
                prefix: prefix.clone(),
                page_size,
                page_token,
            })
            .await
            .map_err(status)?
            .into_inner();
        // After the first answer: a refused listing prints no table head.
        if std::mem::take(&mut header) {
            println!(
                "{:<32}  {:>8}  {:>8}  {:>9}  last scored (UTC)",
                "user", "spam", "ham", "tokens"
            );
        }
        for u in &page.users {
            listed += 1;
            let last = (u.last_scored_unix_ms > 0).then(|| {
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_millis(u.last_scored_unix_ms as u64),
                )
                .to_string()
            });
            if as_json {
                println!(
                    "{}",
                    json!({
                        "user": u.user_id,
                        "spam_learned": u.spam_learned,
                        "ham_learned": u.ham_learned,
                        "tokens": u.tokens,
                        "last_scored_unix_ms": (u.last_scored_unix_ms > 0).then_some(u.last_scored_unix_ms),
                    })
                );
            } else {
                println!(
                    "{:<32}  {:>8}  {:>8}  {:>9}  {}",
                    u.user_id,
                    u.spam_learned,
                    u.ham_learned,
                    u.tokens,
                    last.as_deref().unwrap_or("-")
                );
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if !as_json {
        eprintln!("{}", super::plural(listed, "user", "users"));
    }
    Ok(())
}

/// `chaff backup DIR`: the server copies its store into DIR.
pub async fn backup(server: &str, dir: &Path, as_json: bool) -> anyhow::Result<()> {
    let dir = std::path::absolute(dir)
        .with_context(|| format!("cannot make {} an absolute path", dir.display()))?;
    let started = std::time::Instant::now();
    let r = connect(server)
        .await?
        .backup(proto::BackupRequest {
            directory: dir.display().to_string(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let seconds = started.elapsed().as_secs_f64();
    if as_json {
        println!(
            "{}",
            json!({"directory": dir, "users": r.users, "records": r.records, "seconds": seconds})
        );
    } else {
        println!(
            "backed up {} ({} records, and the keys file if the server has one) to {} in {seconds:.1} s; restore: chaff serve --data {}",
            super::plural(r.users, "user", "users"),
            r.records,
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

pub async fn forget(
    server: &str,
    user: &str,
    message_id: &str,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut client = connect(server).await?;
    let r = client
        .forget(proto::ForgetRequest {
            user_id: user.to_string(),
            message_id: message_id.to_string(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let label = if r.forgotten_label == proto::Label::Spam as i32 {
        "spam"
    } else {
        "ham"
    };
    if as_json {
        println!(
            "{}",
            json!({
                "message_id": message_id,
                "forgotten_label": label,
                "spam_learned": r.spam_learned,
                "ham_learned": r.ham_learned,
            })
        );
        return Ok(());
    }
    println!(
        "forgot {message_id} (was {label})  (user now {} spam, {} ham)",
        r.spam_learned, r.ham_learned
    );
    Ok(())
}

pub fn tokens(file: &Path, as_json: bool) -> anyhow::Result<()> {
    let message = read_message(file)?;
    let (features, limits) = Tokenizer::default().explain(&message);
    if as_json {
        let features: Vec<String> = features.iter().map(|f| f.to_string()).collect();
        let limits: Vec<&str> = limits.iter().map(|l| l.as_str()).collect();
        println!("{}", json!({"features": features, "limits_hit": limits}));
        return Ok(());
    }
    for f in &features {
        println!("{f}");
    }
    for l in limits {
        eprintln!("capped: {}", l.as_str());
    }
    Ok(())
}
