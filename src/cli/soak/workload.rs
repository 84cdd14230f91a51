//! The soak's load: concurrent workers making clicks, Forgets, settings
//! and block-list changes, DeleteUsers, the operator's seeds, seed clears
//! and operator-wide list changes, and Scores against the server, each
//! call updating the soak's record only when its reply came, and marking
//! its key in doubt when it did not (the module docs of `soak` say why).

use super::*;

enum Kind {
    Train,
    Forget,
    Settings,
    Block,
    Delete,
    Seed,
    ClearSeed,
    OperatorList,
    Score,
}

pub(super) async fn worker(soak: Arc<Soak>, mut client: Client, mut rng: Rng) {
    while !soak.killed.load(Ordering::SeqCst) {
        let u = if soak.hot > 0 && rng.below(2) == 0 {
            rng.below(soak.hot)
        } else {
            rng.below(soak.users.len())
        };
        // Per mille. Deletes pick any user alike (hot users deleted as
        // often as the rest still grow big enough to checkpoint).
        let kind = match rng.below(1000) {
            0..=499 => Kind::Train,
            500..=659 => Kind::Forget,
            660..=729 => Kind::Settings,
            730..=819 => Kind::Block,
            820..=829 => Kind::Delete,
            830..=869 => Kind::Seed,
            870..=871 => Kind::ClearSeed,
            872..=909 => Kind::OperatorList,
            _ => Kind::Score,
        };
        match kind {
            Kind::Train | Kind::Forget => message_op(&soak, &mut client, &mut rng, u, kind).await,
            Kind::Settings => settings_op(&soak, &mut client, &mut rng, u).await,
            Kind::Block => block_op(&soak, &mut client, &mut rng, u).await,
            Kind::Delete => {
                let u = rng.below(soak.users.len());
                delete_op(&soak, &mut client, u).await;
            }
            Kind::Seed => seed_op(&soak, &mut client, &mut rng).await,
            Kind::ClearSeed => clear_seed_op(&soak, &mut client).await,
            Kind::OperatorList => operator_list_op(&soak, &mut client, &mut rng).await,
            Kind::Score => {
                let user = &soak.users[u];
                if user.rec.lock().frozen {
                    continue;
                }
                // A probe: never clicked, so what Score learns from its
                // delivery (an implicit ledger entry) is on a key no
                // acknowledged call touches.
                let r = call(client.score(proto::ScoreRequest {
                    user_id: user.id.clone(),
                    message: probe(u, rng.below(PROBES), soak.words[u]),
                    ..Default::default()
                }))
                .await;
                match r {
                    Ok(_) => {
                        soak.counters.scores.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(s) => unexpected(&soak, &user.id, "Score", &s),
                }
            }
        }
    }
}

/// An error reply: expected only once the server is being killed.
fn unexpected(soak: &Soak, user: &str, what: &str, s: &tonic::Status) {
    if !soak.killed.load(Ordering::SeqCst) {
        soak.wrong(format!(
            "{what} for {user} failed while the server was up: {:?} {}",
            s.code(),
            s.message()
        ));
    }
}

/// Picks a free key among `busy` and marks it, or None if a few tries find
/// none (other callers have them).
fn pick(busy: &mut [bool], rng: &mut Rng) -> Option<usize> {
    for _ in 0..8 {
        let n = rng.below(busy.len());
        if !busy[n] {
            busy[n] = true;
            return Some(n);
        }
    }
    None
}

async fn message_op(soak: &Soak, client: &mut Client, rng: &mut Rng, u: usize, kind: Kind) {
    let user = &soak.users[u];
    let _order = user.order.read().await;
    let (n, prior, consent) = {
        let mut rec = user.rec.lock();
        if rec.frozen {
            return;
        }
        let Some(n) = pick(&mut rec.busy_messages, rng) else {
            return;
        };
        (n, rec.messages[n], rec.settings.share_training)
    };
    let msg_id = format!("m{n}");
    let (result, post) = match kind {
        Kind::Train => {
            // Mostly the label the message leans to, sometimes the other:
            // relearn flips.
            let spammy = n.is_multiple_of(2);
            let spam = if rng.below(5) == 0 { !spammy } else { spammy };
            let label = if spam { Label::Spam } else { Label::Ham };
            let post = match prior {
                Some(p) if p.label == label => Some(p),
                _ => Some(Learned {
                    label,
                    shared: consent,
                }),
            };
            let r = call(client.train(proto::TrainRequest {
                user_id: user.id.clone(),
                message: message(u, n, soak.words[u]),
                label: label_to_wire(label).into(),
                message_id: msg_id.clone(),
            }))
            .await
            .map(|reply| {
                let want = match prior {
                    None => proto::TrainOutcome::Learned,
                    Some(p) if p.label == label => proto::TrainOutcome::AlreadyLearned,
                    Some(_) => proto::TrainOutcome::Relearned,
                };
                if reply.outcome != want as i32 || reply.message_id != msg_id {
                    soak.wrong(format!(
                        "Train {} {msg_id} as {label:?}: outcome {} id {:?}, the record wants {want:?}",
                        user.id, reply.outcome, reply.message_id
                    ));
                }
                soak.counters.trains.fetch_add(1, Ordering::Relaxed);
            });
            (r, post)
        }
        _ => {
            let r = call(client.forget(proto::ForgetRequest {
                user_id: user.id.clone(),
                message_id: msg_id.clone(),
            }))
            .await;
            let r = match (r, prior) {
                (Ok(reply), Some(p)) => {
                    if reply.forgotten_label != label_to_wire(p.label) as i32 {
                        soak.wrong(format!(
                            "Forget {} {msg_id}: label {}, the record has {:?}",
                            user.id, reply.forgotten_label, p.label
                        ));
                    }
                    Ok(())
                }
                (Ok(_), None) => {
                    soak.wrong(format!(
                        "Forget {} {msg_id} succeeded; the record has it not learned",
                        user.id
                    ));
                    Ok(())
                }
                (Err(s), None) if s.code() == Code::NotFound => Ok(()),
                (Err(s), _) => Err(s),
            };
            if r.is_ok() {
                soak.counters.forgets.fetch_add(1, Ordering::Relaxed);
            }
            (r, None)
        }
    };
    let mut rec = user.rec.lock();
    rec.busy_messages[n] = false;
    match result {
        Ok(()) => {
            rec.messages[n] = post;
            rec.empty = false;
            soak.counters.acked.fetch_add(1, Ordering::Relaxed);
        }
        Err(s) => {
            unexpected(soak, &user.id, "a click", &s);
            rec.frozen = true;
            rec.in_doubt.push(InDoubt::Message { n, post });
            soak.counters.in_doubt.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn settings_op(soak: &Soak, client: &mut Client, rng: &mut Rng, u: usize) {
    let user = &soak.users[u];
    let _order = user.order.write().await;
    let prior = {
        let rec = user.rec.lock();
        if rec.frozen {
            return;
        }
        rec.settings
    };
    let mut post = prior;
    let mut req = proto::UpdateUserRequest {
        user_id: user.id.clone(),
        ..Default::default()
    };
    if rng.below(2) == 0 {
        post.share_training = !prior.share_training;
        req.share_training = Some(post.share_training);
    } else {
        // Thresholds in thousandths: 0.5 <= spam <= reject <= 1.
        let spam = 500 + rng.below(450);
        let reject = spam + rng.below(1001 - spam);
        post.spam_threshold = spam as f64 / 1000.0;
        post.reject_threshold = reject as f64 / 1000.0;
        post.handling_mode = 1 + rng.below(3) as i32;
        req.spam_threshold = Some(post.spam_threshold);
        req.reject_threshold = Some(post.reject_threshold);
        req.handling_mode = post.handling_mode;
    }
    let r = call(client.update_user(req)).await;
    let mut rec = user.rec.lock();
    match r {
        Ok(info) => {
            if info.settings != Some(post) {
                soak.wrong(format!(
                    "UpdateUser {}: settings {:?}, the record wants {post:?}",
                    user.id, info.settings
                ));
            }
            apply_settings(&mut rec, post);
            rec.empty = false;
            soak.counters.settings.fetch_add(1, Ordering::Relaxed);
            soak.counters.acked.fetch_add(1, Ordering::Relaxed);
        }
        Err(s) => {
            unexpected(soak, &user.id, "UpdateUser", &s);
            rec.frozen = true;
            rec.in_doubt.push(InDoubt::Settings { post });
            soak.counters.in_doubt.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn block_op(soak: &Soak, client: &mut Client, rng: &mut Rng, u: usize) {
    let user = &soak.users[u];
    let _order = user.order.read().await;
    let (n, prior) = {
        let mut rec = user.rec.lock();
        if rec.frozen {
            return;
        }
        let Some(n) = pick(&mut rec.busy_blocks, rng) else {
            return;
        };
        (n, rec.blocks[n])
    };
    let add = rng.below(2) == 0;
    let req = proto::ListEntryRequest {
        user_id: user.id.clone(),
        kind: proto::ListKind::Block.into(),
        entry: block_entry(n),
        ..Default::default()
    };
    let r = change_list(
        soak,
        client,
        req,
        add,
        prior,
        &format!("{}'s block", user.id),
    )
    .await;
    let mut rec = user.rec.lock();
    rec.busy_blocks[n] = false;
    match r {
        Ok(()) => {
            rec.blocks[n] = add;
            rec.empty = false;
            soak.counters.lists.fetch_add(1, Ordering::Relaxed);
            soak.counters.acked.fetch_add(1, Ordering::Relaxed);
        }
        Err(s) => {
            unexpected(soak, &user.id, "a list change", &s);
            rec.frozen = true;
            rec.in_doubt.push(InDoubt::Block { n, post: add });
            soak.counters.in_doubt.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// DeleteUser: excludes every other call of the user (it changes all its
/// keys), so in doubt it has exactly two outcomes: all gone, or nothing.
async fn delete_op(soak: &Soak, client: &mut Client, u: usize) {
    let user = &soak.users[u];
    let _order = user.order.write().await;
    let stored = {
        let rec = user.rec.lock();
        if rec.frozen {
            return;
        }
        rec.messages.iter().any(Option::is_some)
            || rec.blocks.iter().any(|b| *b)
            || rec.settings != default_settings()
            || !rec.implicit.is_empty()
    };
    let r = call(client.delete_user(proto::DeleteUserRequest {
        user_id: user.id.clone(),
    }))
    .await;
    let mut rec = user.rec.lock();
    match r {
        Ok(reply) => {
            // `existed` may also be true for what the record does not hold
            // (logged decisions, a model emptied by Forgets).
            if stored && !reply.existed {
                soak.wrong(format!(
                    "DeleteUser {}: existed = false, the record holds data for it",
                    user.id
                ));
            }
            rec.delete();
            soak.counters.deletes.fetch_add(1, Ordering::Relaxed);
            soak.counters.acked.fetch_add(1, Ordering::Relaxed);
        }
        Err(s) => {
            unexpected(soak, &user.id, "DeleteUser", &s);
            rec.frozen = true;
            rec.in_doubt.push(InDoubt::Delete);
            soak.counters.in_doubt.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// SeedShared of one seed message: its label as it leans, sometimes the
/// other (a relearn). One call per seed message at a time.
async fn seed_op(soak: &Soak, client: &mut Client, rng: &mut Rng) {
    let op = &soak.operator;
    let _order = op.order.read().await;
    let (n, prior) = {
        let mut rec = op.rec.lock();
        if rec.seed_frozen {
            return;
        }
        let Some(n) = pick(&mut rec.busy_seed, rng) else {
            return;
        };
        (n, rec.seed[n])
    };
    let spammy = n.is_multiple_of(2);
    let spam = if rng.below(5) == 0 { !spammy } else { spammy };
    let label = if spam { Label::Spam } else { Label::Ham };
    let msg_id = format!("s{n}");
    let r = call(client.seed_shared(proto::SeedSharedRequest {
        message: seed_message(n),
        label: label_to_wire(label).into(),
        message_id: msg_id.clone(),
    }))
    .await;
    let mut rec = op.rec.lock();
    rec.busy_seed[n] = false;
    match r {
        Ok(reply) => {
            let want = match prior {
                None => proto::TrainOutcome::Learned,
                Some(p) if p == label => proto::TrainOutcome::AlreadyLearned,
                Some(_) => proto::TrainOutcome::Relearned,
            };
            if reply.outcome != want as i32 || reply.message_id != msg_id {
                soak.wrong(format!(
                    "SeedShared {msg_id} as {label:?}: outcome {} id {:?}, the record wants {want:?}",
                    reply.outcome, reply.message_id
                ));
            }
            rec.seed[n] = Some(label);
            soak.counters.seeds.fetch_add(1, Ordering::Relaxed);
            soak.counters.acked.fetch_add(1, Ordering::Relaxed);
        }
        Err(s) => {
            unexpected(soak, "the operator", "SeedShared", &s);
            rec.seed_frozen = true;
            rec.seed_doubt.push(SeedDoubt::Message { n, post: label });
            soak.counters.in_doubt.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// ClearSeed: excludes every seed call (it changes every seed message).
async fn clear_seed_op(soak: &Soak, client: &mut Client) {
    let op = &soak.operator;
    let _order = op.order.write().await;
    let (spam, ham) = {
        let rec = op.rec.lock();
        if rec.seed_frozen {
            return;
        }
        let count = |l| rec.seed.iter().filter(|s| **s == Some(l)).count() as u64;
        (count(Label::Spam), count(Label::Ham))
    };
    let r = call(client.clear_seed(proto::ClearSeedRequest {})).await;
    let mut rec = op.rec.lock();
    match r {
        Ok(reply) => {
            if (reply.spam_removed, reply.ham_removed) != (spam, ham) {
                soak.wrong(format!(
                    "ClearSeed removed {}/{} (spam/ham), the record has {spam}/{ham}",
                    reply.spam_removed, reply.ham_removed
                ));
            }
            rec.seed.iter_mut().for_each(|s| *s = None);
            soak.counters.clears.fetch_add(1, Ordering::Relaxed);
            soak.counters.acked.fetch_add(1, Ordering::Relaxed);
        }
        Err(s) => {
            unexpected(soak, "the operator", "ClearSeed", &s);
            rec.seed_frozen = true;
            rec.seed_doubt.push(SeedDoubt::Clear);
            soak.counters.in_doubt.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Adds or removes one operator-wide allow, block or trusted entry (none
/// matches the soak's senders, so scores do not depend on them).
async fn operator_list_op(soak: &Soak, client: &mut Client, rng: &mut Rng) {
    let op = &soak.operator;
    let (i, prior) = {
        let mut rec = op.rec.lock();
        if rec.lists_frozen {
            return;
        }
        let Some(i) = pick(&mut rec.busy_lists, rng) else {
            return;
        };
        (i, rec.lists[i])
    };
    let (kind, entry) = operator_entry(i);
    let add = rng.below(2) == 0;
    let req = proto::ListEntryRequest {
        operator_wide: true,
        kind: list_kind_to_wire(kind).into(),
        entry,
        ..Default::default()
    };
    let what = format!("the operator's {}", kind.as_str());
    let r = change_list(soak, client, req, add, prior, &what).await;
    let mut rec = op.rec.lock();
    rec.busy_lists[i] = false;
    match r {
        Ok(()) => {
            rec.lists[i] = add;
            soak.counters.operator_lists.fetch_add(1, Ordering::Relaxed);
            soak.counters.acked.fetch_add(1, Ordering::Relaxed);
        }
        Err(s) => {
            unexpected(soak, "the operator", "an operator list change", &s);
            rec.lists_frozen = true;
            rec.list_doubt.push((i, add));
            soak.counters.in_doubt.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Adds (`add`) or removes a list entry; on a reply, checks that it
/// changed something exactly when the record (`prior`: present) says it
/// must. `what` names the list in a report.
async fn change_list(
    soak: &Soak,
    client: &mut Client,
    req: proto::ListEntryRequest,
    add: bool,
    prior: bool,
    what: &str,
) -> Result<(), tonic::Status> {
    let entry = req.entry.clone();
    let reply = if add {
        call(client.add_list_entry(req)).await
    } else {
        call(client.remove_list_entry(req)).await
    }?;
    if reply.changed != (add != prior) {
        soak.wrong(format!(
            "{} {entry} on {what} list: changed = {}, the record had it {}",
            if add { "adding" } else { "removing" },
            reply.changed,
            if prior { "present" } else { "absent" }
        ));
    }
    Ok(())
}
