//! Client commands for delivery policy: a user's settings, allow/block and
//! trusted lists, and support's `chaff why`.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use super::client::{connect, status};
use super::values;
use super::{JsonArg, ServerArg};
use chaff::policy::{Action, Entry, HandlingMode, ListKind, RuleKind, lists};
use chaff::proto;
use chaff::service::status::{
    action_from_wire, list_kind_to_wire, mode_from_wire, mode_to_wire, rule_from_wire,
};

#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The mailbox id.
    #[arg(long, short)]
    user: String,
    /// Set the handling mode.
    #[arg(long, value_parser = values::handling_mode())]
    mode: Option<HandlingMode>,
    /// Set the spam threshold (0.5..=1; default 0.80).
    #[arg(long)]
    spam_threshold: Option<f64>,
    /// Set the reject threshold (spam threshold..=1; default 0.999).
    #[arg(long)]
    reject_threshold: Option<f64>,
    /// Consent to (on) or withdraw from (off) training the shared model.
    /// Off removes every click of the user's from it.
    #[arg(long, value_enum)]
    share_training: Option<OnOff>,
    /// Delete the user: model, ledger, settings, lists, logged decisions
    /// and their part of the shared model.
    /// Asks for confirmation on a terminal; see --yes.
    #[arg(long, conflicts_with_all = ["mode", "spam_threshold", "reject_threshold", "share_training"])]
    delete: bool,
    /// With --delete: do not ask (for scripts; without a terminal, --delete
    /// is refused unless --yes is given).
    #[arg(long, short = 'y', requires = "delete")]
    yes: bool,
    #[command(flatten)]
    json: JsonArg,
    #[command(subcommand)]
    action: Option<UserAction>,
}

/// Moving a user's data in and out of a server.
#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// Write everything the server keeps for the user (model, learned
    /// messages, settings, lists, logged decisions) to FILE, in chaff's
    /// versioned export format (docs/OPERATIONS.md "Export format"): a
    /// data-subject access request, or the first half of a move.
    Export {
        /// The file to write (`-`: standard output).
        file: PathBuf,
    },
    /// Write an export (from `chaff user export`) to the server as the
    /// user it is of. Refused if the user has data there, unless --replace.
    Import {
        /// The export file (`-`: standard input).
        file: PathBuf,
        /// Delete what the server has for the user first.
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Args, Debug)]
#[group(id = "owner", required = true, multiple = false)]
pub struct Owner {
    /// The mailbox whose list this is.
    #[arg(long, short, group = "owner")]
    user: Option<String>,
    /// The operator-wide list, applied to every user.
    #[arg(long, group = "owner")]
    operator: bool,
}

#[derive(Subcommand, Debug)]
pub enum ListCommand {
    /// Add entries: alice@example.com, example.com, *.example.com,
    /// 192.0.2.7, 2001:db8::7, 192.0.2.0/24, 2001:db8::/32. International
    /// domains (bücher.example) are stored as punycode. Every entry is
    /// checked before any is stored: all are added or none.
    #[command(
        override_usage = "chaff list add [OPTIONS] --kind <KIND> <--user <USER>|--operator> <ENTRIES>..."
    )]
    Add(ListAdd),
    /// Remove entries.
    #[command(
        override_usage = "chaff list remove [OPTIONS] --kind <KIND> <--user <USER>|--operator> <ENTRIES>..."
    )]
    Remove(ListChange),
    /// Print a list's entries, one per line.
    #[command(
        override_usage = "chaff list show [OPTIONS] --kind <KIND> <--user <USER>|--operator>"
    )]
    Show(ListShow),
}

#[derive(Args, Debug)]
pub struct ListChange {
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    owner: Owner,
    /// Which list.
    #[arg(long, value_parser = values::list_kind())]
    kind: ListKind,
    #[command(flatten)]
    json: JsonArg,
    /// The entries.
    #[arg(required = true)]
    entries: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ListAdd {
    #[command(flatten)]
    change: ListChange,
    /// Accept a range that covers every address (0.0.0.0/0, ::/0): it
    /// matches all mail.
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
pub struct ListShow {
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    owner: Owner,
    /// Which list.
    #[arg(long, value_parser = values::list_kind())]
    kind: ListKind,
    #[command(flatten)]
    json: JsonArg,
}

/// Why were a user's messages delivered, filed as spam or rejected?
#[derive(Args, Debug)]
pub struct WhyArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The recipient's mailbox id.
    #[arg(long, short)]
    user: String,
    /// Only mail from this address, or this domain and its subdomains.
    #[arg(long)]
    sender: Option<String>,
    /// Start of the window: RFC 3339 (2026-11-23T09:30:00Z), a date
    /// (2026-11-23, UTC) or an age (90m, 2h, 3d). Default: 7 days ago, or
    /// the whole log with --message-id.
    #[arg(long)]
    since: Option<String>,
    /// End of the window, same forms. Default: now.
    #[arg(long)]
    until: Option<String>,
    /// Only messages with exactly this Subject.
    #[arg(long)]
    subject: Option<String>,
    /// Only this message: its Message-ID (with or without the angle
    /// brackets) or the id the pipeline passed to Score.
    #[arg(long)]
    message_id: Option<String>,
    /// At most this many decisions, newest first (max 1000).
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Print JSON, one decision per line.
    #[arg(long)]
    json: bool,
}

/// What the CLI prints for a handling mode, rule or action a server
/// answered with: the library's own names (`as_str`), so the CLI and the
/// decision log spell them alike; `?` for a value this build does not know.
fn mode_name(m: i32) -> &'static str {
    mode_from_wire(m)
        .ok()
        .flatten()
        .map_or("?", HandlingMode::as_str)
}

pub fn action_name(a: i32) -> &'static str {
    action_from_wire(a).map_or("?", Action::as_str)
}

pub fn rule_name(r: i32) -> &'static str {
    rule_from_wire(r).map_or("?", RuleKind::as_str)
}

/// `chaff user -u U export|import FILE`.
async fn user_action(a: &UserArgs, action: &UserAction) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use tokio_stream::StreamExt;
    let mut client = connect(&a.server.server).await?;
    match action {
        UserAction::Export { file } => {
            let mut stream = client
                .export_user(proto::ExportUserRequest {
                    user_id: a.user.clone(),
                })
                .await
                .map_err(status)?
                .into_inner();
            let mut bytes = Vec::new();
            while let Some(chunk) = stream.next().await {
                bytes.extend_from_slice(&chunk.map_err(status)?.data);
            }
            if file.as_os_str() == "-" {
                std::io::stdout().write_all(&bytes)?;
            } else {
                std::fs::write(file, &bytes)
                    .with_context(|| format!("cannot write {}", file.display()))?;
                if a.json.json {
                    println!(
                        "{}",
                        json!({"user": a.user, "file": file, "bytes": bytes.len()})
                    );
                } else {
                    eprintln!(
                        "exported {} ({} bytes) to {}",
                        a.user,
                        bytes.len(),
                        file.display()
                    );
                }
            }
            Ok(())
        }
        UserAction::Import { file, replace } => {
            let mut bytes = Vec::new();
            if file.as_os_str() == "-" {
                std::io::stdin().read_to_end(&mut bytes)?;
            } else {
                bytes = std::fs::read(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
            }
            let mut messages: Vec<proto::ImportUserRequest> = bytes
                .chunks(1 << 20)
                .map(|c| proto::ImportUserRequest {
                    data: c.to_vec(),
                    ..Default::default()
                })
                .collect();
            if messages.is_empty() {
                messages.push(proto::ImportUserRequest::default());
            }
            messages[0].user_id = a.user.clone();
            messages[0].replace = *replace;
            let r = client
                .import_user(tokio_stream::iter(messages))
                .await
                .map_err(status)?
                .into_inner();
            if a.json.json {
                println!(
                    "{}",
                    json!({"user": a.user, "messages": r.messages, "decisions": r.decisions,
                           "list_entries": r.list_entries, "replaced": r.replaced})
                );
            } else {
                println!(
                    "imported {}: {} learned messages, {} decisions, {} list entries{}",
                    a.user,
                    r.messages,
                    r.decisions,
                    r.list_entries,
                    if r.replaced {
                        " (replaced what was there)"
                    } else {
                        ""
                    }
                );
            }
            Ok(())
        }
    }
}

pub async fn user(a: UserArgs) -> anyhow::Result<()> {
    if let Some(action) = &a.action {
        return user_action(&a, action).await;
    }
    if a.delete && !a.yes {
        confirm_delete(&a.user)?;
    }
    let mut client = connect(&a.server.server).await?;
    if a.delete {
        let r = client
            .delete_user(proto::DeleteUserRequest {
                user_id: a.user.clone(),
            })
            .await
            .map_err(status)?
            .into_inner();
        if a.json.json {
            println!("{}", json!({"user": a.user, "deleted": r.existed}));
            return Ok(());
        }
        match r.existed {
            true => println!("deleted {} and their part of the shared model", a.user),
            false => println!("nothing was stored for {}", a.user),
        }
        return Ok(());
    }
    let changing = a.mode.is_some()
        || a.spam_threshold.is_some()
        || a.reject_threshold.is_some()
        || a.share_training.is_some();
    let r = if changing {
        let mode = a
            .mode
            .map_or(proto::HandlingMode::Unspecified, mode_to_wire);
        client
            .update_user(proto::UpdateUserRequest {
                user_id: a.user.clone(),
                handling_mode: mode.into(),
                spam_threshold: a.spam_threshold,
                reject_threshold: a.reject_threshold,
                share_training: a.share_training.map(|s| s == OnOff::On),
            })
            .await
    } else {
        client
            .get_user(proto::GetUserRequest {
                user_id: a.user.clone(),
            })
            .await
    }
    .map_err(status)?
    .into_inner();
    if a.json.json {
        let s = r.settings.unwrap_or_default();
        println!(
            "{}",
            json!({
                "user": r.user_id,
                "spam_learned": r.spam_learned,
                "ham_learned": r.ham_learned,
                "tokens": r.tokens,
                "tokenizer_version": r.tokenizer_version,
                "handling_mode": mode_name(s.handling_mode),
                "spam_threshold": s.spam_threshold,
                "reject_threshold": s.reject_threshold,
                "share_training": s.share_training,
            })
        );
        return Ok(());
    }
    if changing {
        println!("settings updated");
    }
    println!("user:              {}", r.user_id);
    println!("spam learned:      {}", r.spam_learned);
    println!(
        "ham learned:       {} (clicks, and mail learned from its delivery)",
        r.ham_learned
    );
    println!("distinct tokens:   {}", r.tokens);
    println!("tokenizer version: {}", r.tokenizer_version);
    if let Some(s) = r.settings {
        println!("handling mode:     {}", mode_name(s.handling_mode));
        println!("spam threshold:    {}", s.spam_threshold);
        println!("reject threshold:  {}", s.reject_threshold);
        println!(
            "share training:    {}",
            if s.share_training { "on" } else { "off" }
        );
    }
    if r.spam_learned + r.ham_learned == 0 && r.tokens == 0 {
        println!(
            "(nothing learned for this user yet; user ids are case-sensitive: is it spelled as \
             the pipeline and the webmail send it?)"
        );
    }
    Ok(())
}

/// Asks on the terminal before deleting a user; without a terminal (a
/// script) refuses and points at --yes.
fn confirm_delete(user: &str) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!(
            "--delete removes everything stored for {user} and cannot be undone; \
             add --yes to confirm (no terminal to ask on)"
        );
    }
    eprint!(
        "Delete {user}: model, learned messages, settings, lists, logged decisions and \
         their part of the shared model? This cannot be undone. Type the user id to confirm: "
    );
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if answer.trim() != user {
        bail!("not confirmed; nothing was deleted");
    }
    Ok(())
}

pub async fn list(cmd: ListCommand) -> anyhow::Result<()> {
    match cmd {
        ListCommand::Add(a) => change(a.change, true, a.force).await,
        ListCommand::Remove(c) => change(c, false, false).await,
        ListCommand::Show(s) => {
            let mut client = connect(&s.server.server).await?;
            let r = client
                .list_entries(proto::ListEntriesRequest {
                    user_id: s.owner.user.clone().unwrap_or_default(),
                    operator_wide: s.owner.operator,
                    kind: list_kind_to_wire(s.kind).into(),
                })
                .await
                .map_err(status)?
                .into_inner();
            if r.entries.is_empty() && !s.json.json {
                // On standard error: a script reading the entries gets none.
                eprintln!("(the {} list is empty)", s.kind.as_str());
            }
            for e in r.entries {
                if s.json.json {
                    println!("{}", json!({"entry": e}));
                } else {
                    println!("{e}");
                }
            }
            Ok(())
        }
    }
}

/// Adds or removes entries, all or nothing: every entry is checked (by the
/// library's own parser, as the server checks it) before the first is sent,
/// and if the server refuses one part-way (a full list, storage trouble)
/// or Ctrl-C stops it, the ones this command already changed are changed
/// back.
async fn change(c: ListChange, add: bool, force: bool) -> anyhow::Result<()> {
    let mut bad = Vec::new();
    for raw in &c.entries {
        // A removal takes an entry as the server reads stored ones back
        // (`Entry::stored`): one an older build accepted stays removable.
        let parsed = match add {
            true => raw.parse::<Entry>(),
            false => raw
                .parse::<Entry>()
                .or_else(|e| Entry::stored(raw).map_err(|_| e)),
        };
        let checked = parsed.and_then(|e| {
            if add {
                lists::check_reach(&e, force)
            } else {
                Ok(())
            }
        });
        if let Err(e) = checked {
            bad.push(e.to_string());
        }
    }
    if !bad.is_empty() {
        bail!("nothing was changed: {}", bad.join("; "));
    }
    let mut client = connect(&c.server.server).await?;
    // A rollback re-adds what this command removed: with force, since it
    // was there before.
    let request = |entry: &str, force: bool| proto::ListEntryRequest {
        user_id: c.owner.user.clone().unwrap_or_default(),
        operator_wide: c.owner.operator,
        kind: list_kind_to_wire(c.kind).into(),
        entry: entry.to_string(),
        force,
    };
    let mut done: Vec<(String, proto::ListEntryResponse)> = Vec::new();
    // Ctrl-C part-way is a refusal too: what was changed is changed back.
    // It is looked at between calls, so a call in flight ends (and is
    // changed back) rather than being cut off with its change unknown.
    let interrupted = Arc::new(AtomicBool::new(false));
    let watch = {
        let interrupted = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, Ordering::SeqCst);
                // A second Ctrl-C leaves at once (a server that hangs while
                // the changes are undone must not hold the terminal).
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!(
                        "interrupted again: exiting without changing back the rest (chaff list \
                         show lists what is stored)"
                    );
                    std::process::exit(130);
                }
            }
        })
    };
    let interrupt = || anyhow::anyhow!("interrupted (Ctrl-C)");
    let mut failed = None;
    for entry in &c.entries {
        let req = request(entry, force);
        let r = if interrupted.load(Ordering::SeqCst) {
            Err(interrupt())
        } else if add {
            client.add_list_entry(req).await.map_err(status)
        } else {
            client.remove_list_entry(req).await.map_err(status)
        };
        match r {
            Ok(r) => done.push((entry.clone(), r.into_inner())),
            Err(e) => {
                let what = format!("{} {entry:?}", if add { "adding" } else { "removing" });
                failed = Some((what, e));
                break;
            }
        }
    }
    // Ctrl-C during the last call: that call ended, and is undone too.
    if failed.is_none() && interrupted.load(Ordering::SeqCst) {
        failed = Some(("the command".to_string(), interrupt()));
    }
    if let Some((what, e)) = failed {
        let mut undone = 0;
        for (_, r) in done.iter().filter(|(_, r)| r.changed) {
            let back = request(&r.entry, true);
            let ok = if add {
                client.remove_list_entry(back).await.is_ok()
            } else {
                client.add_list_entry(back).await.is_ok()
            };
            undone += usize::from(ok);
        }
        watch.abort();
        return Err(e).with_context(|| {
            format!("{what} failed; the {undone} entries it had changed were changed back")
        });
    }
    watch.abort();
    for (_, r) in done {
        let what = match (add, r.changed) {
            (true, true) => "added",
            (true, false) => "already present",
            (false, true) => "removed",
            (false, false) => "was not present",
        };
        if c.json.json {
            println!("{}", json!({"entry": r.entry, "result": what}));
        } else {
            println!("{what}: {}", r.entry);
        }
    }
    Ok(())
}

/// RFC 3339, a bare date (UTC midnight), or an age before now.
fn parse_time(s: &str) -> anyhow::Result<SystemTime> {
    let s = s.trim();
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(&format!("{s} 00:00:00")) {
        return Ok(t);
    }
    if let Ok(age) = humantime::parse_duration(s) {
        return Ok(SystemTime::now() - age);
    }
    bail!("cannot read time {s:?}: use 2026-11-23T09:30:00Z, 2026-11-23 or an age like 2h or 3d")
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub async fn why(a: WhyArgs) -> anyhow::Result<()> {
    let since = match (&a.since, &a.message_id) {
        (Some(since), _) => parse_time(since).context("--since")?,
        // One message: wherever it is in the log (retention bounds it).
        (None, Some(_)) => UNIX_EPOCH,
        (None, None) => parse_time("7d")?,
    };
    let until = a
        .until
        .as_deref()
        .map(parse_time)
        .transpose()
        .context("--until")?;
    if let Some(until) = until
        && until < since
    {
        bail!(
            "--until ({}) is before --since ({}): the window is empty; swap them",
            humantime::format_rfc3339_seconds(until),
            humantime::format_rfc3339_seconds(since)
        );
    }
    let mut client = connect(&a.server.server).await?;
    let r = client
        .find_decisions(proto::FindDecisionsRequest {
            user_id: a.user.clone(),
            sender: a.sender.clone().unwrap_or_default(),
            since_unix_ms: unix_ms(since),
            until_unix_ms: until.map_or(0, unix_ms),
            subject: a.subject.clone().unwrap_or_default(),
            limit: a.limit,
            message_id: a.message_id.clone().unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner();
    if r.decisions.is_empty() && !a.json {
        let window = match (&a.since, &a.message_id) {
            (None, None) => "in the last 7 days (--since reaches further back)",
            _ => "in that window",
        };
        println!(
            "no decisions for {} {window}{}{} (decisions are kept for a limited time, 30 days \
             by default: `chaff serve --help`, --decision-retention)",
            a.user,
            a.sender
                .as_deref()
                .map(|s| format!(" from {s}"))
                .unwrap_or_default(),
            a.message_id
                .as_deref()
                .map(|m| format!(" about {m}"))
                .unwrap_or_default()
        );
    }
    for d in &r.decisions {
        let when = UNIX_EPOCH + Duration::from_millis(d.time_unix_ms.max(0) as u64);
        let x = d.explanation.clone().unwrap_or_default();
        if a.json {
            println!("{}", decision_json(d, &x, when));
            continue;
        }
        println!(
            "{}  {}  from {}  ip {}  message {}",
            humantime::format_rfc3339_seconds(when),
            action_name(d.action).to_uppercase(),
            or_dash(&d.sender),
            or_dash(&d.client_ip),
            d.message_id
        );
        println!("  rule:    {} — {}", rule_name(x.rule), x.reason);
        for n in &x.notes {
            println!("  note:    {n}");
        }
        if !d.smtp_reply.is_empty() {
            println!("  reply:   {}", d.smtp_reply);
        }
        println!(
            "  model:   p(spam) {:.4}; user has learned {} spam, {} ham",
            d.spam_probability, x.spam_learned, x.ham_learned
        );
        let show = |label: &str, fs: &[proto::Feature]| {
            if !fs.is_empty() {
                let list: Vec<String> = fs
                    .iter()
                    .map(|f| format!("{} ({:+.1})", f.name, f.contribution))
                    .collect();
                println!("  {label} {}", list.join(", "));
            }
        };
        show("spammy:", &x.spam_features);
        show("hammy: ", &x.ham_features);
    }
    Ok(())
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn decision_json(d: &proto::Decision, x: &proto::Explanation, when: SystemTime) -> String {
    let features = |fs: &[proto::Feature]| {
        fs.iter()
            .map(|f| {
                serde_json::json!({
                    "name": f.name, "spam_probability": f.spam_probability,
                    "contribution": f.contribution
                })
            })
            .collect::<Vec<_>>()
    };
    serde_json::json!({
        "time": humantime::format_rfc3339_millis(when).to_string(),
        "message_id": d.message_id,
        "sender": d.sender,
        "client_ip": d.client_ip,
        "subject_digest": d.subject_digest,
        "spam_probability": d.spam_probability,
        "action": action_name(d.action),
        "smtp_reply": d.smtp_reply,
        "rule": rule_name(x.rule),
        "reason": x.reason,
        "notes": x.notes,
        "spam_learned": x.spam_learned,
        "ham_learned": x.ham_learned,
        "spam_features": features(&x.spam_features),
        "ham_features": features(&x.ham_features),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chaff::service::status::{action_to_wire, rule_to_wire};

    #[test]
    fn cli_spells_rules_and_actions_as_the_decision_log_does() {
        for kind in [
            RuleKind::Model,
            RuleKind::BlockList,
            RuleKind::AllowList,
            RuleKind::Authentication,
        ] {
            assert_eq!(rule_name(rule_to_wire(kind) as i32), kind.as_str());
        }
        assert_eq!(rule_name(proto::Rule::BlockList as i32), "block-list");
        for action in [Action::Deliver, Action::SpamFolder, Action::Reject] {
            assert_eq!(action_name(action_to_wire(action) as i32), action.as_str());
        }
        assert_eq!(rule_name(99), "?");
        assert_eq!(mode_name(proto::HandlingMode::Reject as i32), "reject");
    }
}
