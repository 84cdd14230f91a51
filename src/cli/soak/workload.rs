//! The soak's load: concurrent workers making clicks, Forgets, settings
//! and block-list changes and Scores against the server, each call
//! updating the soak's record only when its reply came, and marking its
//! key in doubt when it did not (the module docs of `soak` say why).

use super::*;

enum Kind {
    Train,
    Forget,
    Settings,
    Block,
    Score,
}

pub(super) async fn worker(soak: Arc<Soak>, mut client: Client, mut rng: Rng) {
    while !soak.killed.load(Ordering::SeqCst) {
        let u = if soak.hot > 0 && rng.below(2) == 0 {
            rng.below(soak.hot)
        } else {
            rng.below(soak.users.len())
        };
        let kind = match rng.below(100) {
            0..=54 => Kind::Train,
            55..=71 => Kind::Forget,
            72..=79 => Kind::Settings,
            80..=91 => Kind::Block,
            _ => Kind::Score,
        };
        match kind {
            Kind::Train | Kind::Forget => message_op(&soak, &mut client, &mut rng, u, kind).await,
            Kind::Settings => settings_op(&soak, &mut client, &mut rng, u).await,
            Kind::Block => block_op(&soak, &mut client, &mut rng, u).await,
            Kind::Score => {
                let user = &soak.users[u];
                if user.rec.lock().frozen {
                    continue;
                }
                let r = call(client.score(proto::ScoreRequest {
                    user_id: user.id.clone(),
                    message: probe(u, rng.below(3), soak.words[u]),
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
    let r = if add {
        call(client.add_list_entry(req)).await
    } else {
        call(client.remove_list_entry(req)).await
    };
    let mut rec = user.rec.lock();
    rec.busy_blocks[n] = false;
    match r {
        Ok(reply) => {
            if reply.changed != (add != prior) {
                soak.wrong(format!(
                    "{} block entry {} for {}: changed = {}, the record had it {}",
                    if add { "adding" } else { "removing" },
                    block_entry(n),
                    user.id,
                    reply.changed,
                    if prior { "present" } else { "absent" }
                ));
            }
            rec.blocks[n] = add;
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
