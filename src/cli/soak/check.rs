//! The soak's checks after each kill (steps 1–3 of the module docs of
//! `soak`): the killed directory's keys against the record, the replay
//! directory written from the accepted ledger, and the restarted server
//! against a server on that replay.

use super::*;

pub(super) struct Checked {
    pub(super) keys: u64,
    pub(super) applied: u64,
    pub(super) checkpoints: u64,
}

/// Step 1 and 2 of the module docs: reads a copy of the killed directory,
/// settles the calls in doubt, checks every key against the record, and
/// writes the replay directory.
pub(super) fn check(soak: &Soak, dir: &Path, data: &Path) -> anyhow::Result<Checked> {
    let copy = dir.join("checked");
    let replay_dir = dir.join("replay");
    let _ = fs::remove_dir_all(&copy);
    let _ = fs::remove_dir_all(&replay_dir);
    copy_dir(data, &copy)?;
    let store = Store::open(&copy, 32 << 20)
        .with_context(|| format!("opening the killed directory's copy {}", copy.display()))?;
    let replay = Store::open(&replay_dir, 32 << 20)?;
    let mut out = Checked {
        keys: 0,
        applied: 0,
        checkpoints: 0,
    };
    for user in &soak.users {
        let uid = UserId::new(user.id.clone())?;
        let mut rec = user.rec.lock();
        let in_doubt = std::mem::take(&mut rec.in_doubt);
        rec.frozen = false;

        // Settings and consent.
        let (settings, consent) = store.settings(&uid)?.unwrap_or_default();
        let seen = settings_to_wire(&settings);
        out.keys += 1;
        let doubt_settings = in_doubt.iter().find_map(|d| match d {
            InDoubt::Settings { post } => Some(*post),
            _ => None,
        });
        if seen != rec.settings {
            match doubt_settings {
                Some(post) if post == seen => {
                    apply_settings(&mut rec, post);
                    out.applied += 1;
                }
                _ => soak.wrong(format!(
                    "{}: settings {seen:?} on disk, the record has {:?}{}",
                    user.id,
                    rec.settings,
                    doubt_settings.map_or(String::new(), |p| format!(" (or {p:?} in doubt)"))
                )),
            }
        }
        if settings.share_training != (consent != 0) {
            soak.wrong(format!(
                "{}: share_training {} but consent id {consent}",
                user.id, settings.share_training
            ));
        }

        // Ledger.
        for n in 0..rec.messages.len() {
            out.keys += 1;
            let mid = MessageId::new(format!("m{n}"))?;
            let entry = store.ledger_get(&uid, &mid)?;
            let seen = entry.as_ref().map(|e| Learned {
                label: e.label,
                shared: e.shared != 0 && e.shared == consent,
            });
            let doubt = in_doubt.iter().find_map(|d| match d {
                InDoubt::Message { n: m, post } if *m == n => Some(*post),
                _ => None,
            });
            if seen != rec.messages[n] {
                match doubt {
                    Some(post) if post == seen => {
                        rec.messages[n] = post;
                        out.applied += 1;
                    }
                    _ => soak.wrong(format!(
                        "{} m{n}: ledger has {seen:?}, the record {:?}{}",
                        user.id,
                        rec.messages[n],
                        doubt.map_or(String::new(), |p| format!(" (or {p:?} in doubt)"))
                    )),
                }
            } else if doubt.is_some_and(|post| post == seen && post != rec.messages[n]) {
                out.applied += 1;
            }
            // Replay what the record accepts, weight and tokens from the
            // ledger (the client cannot know the weight), as one click.
            if let (Some(mut e), Some(l)) = (entry, rec.messages[n]) {
                let learn = Op::Learn(e.label, e.weight, e.tokens.clone());
                let shared_ops = if l.shared {
                    vec![learn.clone()]
                } else {
                    vec![]
                };
                if !l.shared {
                    e.shared = 0;
                }
                replay.record_click(
                    &Owner::User(uid.clone()),
                    &mid,
                    Some(&e),
                    &[learn],
                    &shared_ops,
                )?;
            }
        }
        replay.put_settings(&uid, &settings, consent, false)?;

        // Block list.
        let entries: Vec<String> = store
            .list_entries(&Owner::User(uid.clone()), ListKind::Block)?
            .iter()
            .map(ToString::to_string)
            .collect();
        for n in 0..rec.blocks.len() {
            out.keys += 1;
            let seen = entries.contains(&block_entry(n));
            let doubt = in_doubt.iter().find_map(|d| match d {
                InDoubt::Block { n: m, post } if *m == n => Some(*post),
                _ => None,
            });
            if seen != rec.blocks[n] {
                match doubt {
                    Some(post) if post == seen => {
                        rec.blocks[n] = post;
                        out.applied += 1;
                    }
                    _ => soak.wrong(format!(
                        "{}: block entry {} is {} on disk, the record has it {}",
                        user.id,
                        block_entry(n),
                        if seen { "present" } else { "absent" },
                        if rec.blocks[n] { "present" } else { "absent" },
                    )),
                }
            }
        }
        if entries.len() != rec.blocks.iter().filter(|b| **b).count() {
            soak.wrong(format!("{}: unexpected block entries {entries:?}", user.id));
        }

        // Checkpoints the engine took since the last check.
        let snap = store.snapshot_seq(&uid)?;
        if snap != rec.snapshot_seq {
            out.checkpoints += 1;
            rec.snapshot_seq = snap;
        }
    }
    replay.flush()?;
    drop(replay);
    drop(store);
    fs::remove_dir_all(&copy)?;
    Ok(out)
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Step 3 of the module docs: the restarted server against the record and
/// the replay. Returns how many scores were compared.
pub(super) async fn compare(
    soak: &Soak,
    server: &Server,
    replay: &Server,
    cycle: u32,
) -> anyhow::Result<u64> {
    let mut a = server.client().await?;
    let mut b = replay.client().await?;
    let mut scored = 0;
    let mut shared_spam = 0;
    let mut shared_ham = 0;
    for (u, user) in soak.users.iter().enumerate() {
        let (spam, ham) = {
            let rec = user.rec.lock();
            let count = |label| {
                rec.messages
                    .iter()
                    .flatten()
                    .filter(|l| l.label == label)
                    .count() as u64
            };
            let shared = |label| {
                rec.messages
                    .iter()
                    .flatten()
                    .filter(|l| l.shared && l.label == label)
                    .count() as u64
            };
            shared_spam += shared(Label::Spam);
            shared_ham += shared(Label::Ham);
            (count(Label::Spam), count(Label::Ham))
        };
        let get = |id: &str| proto::GetUserRequest {
            user_id: id.to_string(),
        };
        let ia = call(a.get_user(get(&user.id))).await?;
        let ib = call(b.get_user(get(&user.id))).await?;
        if (ia.spam_learned, ia.ham_learned) != (spam, ham) {
            soak.wrong(format!(
                "cycle {cycle}: {} counts {}/{} (spam/ham) after restart, the record has {spam}/{ham}",
                user.id, ia.spam_learned, ia.ham_learned
            ));
        }
        if ia != ib {
            soak.wrong(format!(
                "cycle {cycle}: {} GetUser {ia:?} after restart, the replay {ib:?}",
                user.id
            ));
        }
        for k in 0..3 {
            let req = proto::ScoreRequest {
                user_id: user.id.clone(),
                message: if k < 2 {
                    message(u, k, soak.words[u])
                } else {
                    probe(u, 0, soak.words[u])
                },
                message_id: format!("probe{k}"),
                ..Default::default()
            };
            let sa = call(a.score(req.clone())).await?;
            let sb = call(b.score(req)).await?;
            scored += 1;
            if score_key(&sa) != score_key(&sb) {
                soak.wrong(format!(
                    "cycle {cycle}: {} probe {k} scores {:?} after restart, the replay {:?}",
                    user.id,
                    score_key(&sa),
                    score_key(&sb)
                ));
            }
        }
    }
    let ga = call(a.get_shared(proto::GetSharedRequest {})).await?;
    let gb = call(b.get_shared(proto::GetSharedRequest {})).await?;
    if (ga.spam_learned, ga.ham_learned) != (shared_spam, shared_ham) {
        soak.wrong(format!(
            "cycle {cycle}: shared model has {}/{} (spam/ham) messages, the record {shared_spam}/{shared_ham}",
            ga.spam_learned, ga.ham_learned
        ));
    }
    if ga != gb {
        soak.wrong(format!(
            "cycle {cycle}: GetShared {ga:?} after restart, the replay {gb:?}"
        ));
    }
    Ok(scored)
}

/// What must be identical between the restarted server's and the replay's
/// Score: the probability and log-odds bit for bit, and what follows.
fn score_key(s: &proto::ScoreResponse) -> impl PartialEq + std::fmt::Debug {
    let e = s.explanation.clone().unwrap_or_default();
    (
        s.spam_probability.to_bits(),
        s.spam_log_odds.to_bits(),
        s.tokens_known,
        s.tokens_used,
        s.verdict,
        s.action,
        e.user_share.to_bits(),
        e.shared_share.to_bits(),
        (e.spam_learned, e.ham_learned),
        BTreeMap::from_iter(
            e.spam_features
                .iter()
                .chain(&e.ham_features)
                .map(|f| (f.name.clone(), f.spam_probability.to_bits())),
        ),
    )
}
