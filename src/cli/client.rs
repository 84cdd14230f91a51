//! Client commands: read message files, call a running server, print one
//! readable line per message.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use chaff::proto::{self, chaff_client::ChaffClient};
use chaff::tokenize::Tokenizer;

/// A client that sends the --token with every call.
pub(crate) type Client = ChaffClient<InterceptedService<Channel, super::trust::Auth>>;

pub(crate) async fn connect(server: &str) -> anyhow::Result<Client> {
    let channel = super::trust::endpoint(server)?
        .connect()
        .await
        .with_context(|| {
            format!("cannot reach chaff at {server}; is `chaff serve` running there?")
        })?;
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

/// A server error as "CODE: message", which is what a person needs.
pub(crate) fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", e.code(), e.message())
}

fn verdict_name(v: i32) -> &'static str {
    match proto::Verdict::try_from(v) {
        Ok(proto::Verdict::Ham) => "ham",
        Ok(proto::Verdict::Spam) => "spam",
        Ok(proto::Verdict::Unsure) => "unsure",
        _ => "?",
    }
}

pub async fn score(
    server: &str,
    user: &str,
    client_ip: Option<&str>,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    let mut client = connect(server).await?;
    for file in files {
        let message = read_message(file)?;
        let r = client
            .score(proto::ScoreRequest {
                user_id: user.to_string(),
                message,
                client_ip: client_ip.unwrap_or_default().to_string(),
                message_id: String::new(),
            })
            .await
            .map_err(status)?
            .into_inner();
        let limits = if r.limits_hit.is_empty() {
            String::new()
        } else {
            format!("; capped: {}", r.limits_hit.join(", "))
        };
        println!(
            "{:<6} {:.4}  {:<11} {}  ({} tokens known, {} used{limits})",
            verdict_name(r.verdict),
            r.spam_probability,
            super::policy::action_name(r.action),
            file.display(),
            r.tokens_known,
            r.tokens_used
        );
        if let Some(x) = &r.explanation {
            println!("       {}: {}", super::policy::rule_name(x.rule), x.reason);
        }
        if !r.smtp_reply.is_empty() {
            println!("       SMTP reply: {}", r.smtp_reply);
        }
    }
    Ok(())
}

pub async fn train(
    server: &str,
    user: &str,
    spam: bool,
    message_id: Option<String>,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    if message_id.is_some() && files.len() > 1 {
        bail!("--message-id names one message; pass a single file");
    }
    let label = if spam {
        proto::Label::Spam
    } else {
        proto::Label::Ham
    };
    let mut client = connect(server).await?;
    for file in files {
        let message = read_message(file)?;
        let r = client
            .train(proto::TrainRequest {
                user_id: user.to_string(),
                message,
                label: label.into(),
                message_id: message_id.clone().unwrap_or_default(),
            })
            .await
            .map_err(status)?
            .into_inner();
        let outcome = match proto::TrainOutcome::try_from(r.outcome) {
            Ok(proto::TrainOutcome::Learned) => "learned",
            Ok(proto::TrainOutcome::AlreadyLearned) => "already learned (unchanged)",
            Ok(proto::TrainOutcome::Relearned) => "relearned (moved from the other class)",
            _ => "?",
        };
        println!(
            "{outcome} as {}: {}  id {}  (user now {} spam, {} ham)",
            if spam { "spam" } else { "ham" },
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
    Ok(())
}

/// `chaff stats`: the server's model cache and group commit counters.
pub async fn stats(server: &str) -> anyhow::Result<()> {
    let r = connect(server)
        .await?
        .get_stats(proto::GetStatsRequest {})
        .await
        .map_err(status)?
        .into_inner();
    let lookups = r.model_hits + r.model_misses;
    println!(
        "models in memory: {} users, {} MiB of {} MiB (--model-memory)",
        r.resident_users,
        r.resident_bytes >> 20,
        r.model_memory_bytes >> 20
    );
    println!(
        "  lookups: {} hits, {} misses (hit rate {:.3}), {} of users with nothing stored; {} evictions",
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
    Ok(())
}

pub async fn forget(server: &str, user: &str, message_id: &str) -> anyhow::Result<()> {
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
    println!(
        "forgot {message_id} (was {label})  (user now {} spam, {} ham)",
        r.spam_learned, r.ham_learned
    );
    Ok(())
}

pub fn tokens(file: &Path) -> anyhow::Result<()> {
    let message = read_message(file)?;
    let (features, limits) = Tokenizer::default().explain(&message);
    for f in &features {
        println!("{f}");
    }
    for l in limits {
        eprintln!("capped: {}", l.as_str());
    }
    Ok(())
}
