//! The soak's checks after each kill (steps 1–3 of the module docs of
//! `soak`): the killed directory's keys against the record, the replay
//! directory written from the accepted ledger, and the restarted server
//! against a server on that replay.

use chaff::store::export::Learned as Exported;

use super::*;

pub(super) struct Checked {
    pub(super) keys: u64,
    pub(super) applied: u64,
    pub(super) checkpoints: u64,
    /// Implicit ledger entries (delivered mail) found for the first time.
    pub(super) implicit: u64,
    /// `--from-format`: users' records still in the old format.
    pub(super) legacy_records: Option<u64>,
}

/// Step 1 and 2 of the module docs: reads a copy of the killed directory,
/// settles the calls in doubt, checks every key against the record, and
/// writes the replay directory.
pub(super) fn check(soak: &Soak, dir: &Path, data: &Path, legacy: bool) -> anyhow::Result<Checked> {
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
        implicit: 0,
        legacy_records: None,
    };
    for user in &soak.users {
        check_user(soak, user, &store, &replay, &mut out)?;
    }
    check_operator(soak, &store, &replay, &mut out)?;
    if legacy {
        out.legacy_records = Some(store.older_format_records()?);
    }
    replay.flush()?;
    drop(replay);
    drop(store);
    fs::remove_dir_all(&copy)?;
    Ok(out)
}

/// One user's keys against the record (settling its calls in doubt), and
/// the ledger the record accepts into the replay.
fn check_user(
    soak: &Soak,
    user: &User,
    store: &Store,
    replay: &Store,
    out: &mut Checked,
) -> anyhow::Result<()> {
    let uid = UserId::new(user.id.clone())?;
    let owner = Owner::User(uid.clone());
    let mut rec = user.rec.lock();
    let in_doubt = std::mem::take(&mut rec.in_doubt);
    rec.frozen = false;

    // What the copy holds for the user.
    let (settings, consent) = store.settings(&uid)?.unwrap_or_default();
    let mut ledger = BTreeMap::new();
    for (id, _, learned) in store.read_user_export(&uid)?.ledger {
        match learned {
            Exported::Live(e) => {
                ledger.insert(id.to_string(), e);
            }
            Exported::Folded(label) => soak.wrong(format!(
                "{} {id}: folded ({label:?}) inside the undo window",
                user.id
            )),
        }
    }
    let blocks: Vec<String> = store
        .list_entries(&owner, ListKind::Block)?
        .iter()
        .map(ToString::to_string)
        .collect();
    let records = store.user_records(&uid)?;

    // A DeleteUser in doubt happened if nothing of the user is left; else
    // every key must be as before it (checked below): never part of it.
    if in_doubt.iter().any(|d| matches!(d, InDoubt::Delete)) && records.is_empty() {
        let had = rec.messages.iter().any(Option::is_some)
            || rec.blocks.iter().any(|b| *b)
            || rec.settings != default_settings()
            || !rec.implicit.is_empty();
        rec.delete();
        if had {
            out.applied += 1;
        }
    }
    // Any other call in doubt may have written (then it was the last
    // write, not the deletion), whether or not its key shows it.
    if in_doubt.iter().any(|d| !matches!(d, InDoubt::Delete)) {
        rec.empty = false;
    }
    if rec.empty && !records.is_empty() {
        soak.wrong(format!(
            "{}: deleted, yet the store holds records of it: {records:?} (family, count)",
            user.id
        ));
    }

    // Settings and consent.
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

    // Ledger: the clicked messages.
    for n in 0..rec.messages.len() {
        out.keys += 1;
        let mid = MessageId::new(format!("m{n}"))?;
        let entry = ledger.remove(mid.as_str());
        if entry.as_ref().is_some_and(|e| e.implicit) {
            soak.wrong(format!(
                "{} m{n}: an implicit entry on a clicked message",
                user.id
            ));
        }
        let seen = entry.as_ref().map(|e| Learned {
            label: e.label,
            shared: e.shared != 0 && e.shared == consent,
        });
        let doubt = in_doubt.iter().find_map(|d| match d {
            InDoubt::Message { n: m, post } if *m == n => Some(*post),
            _ => None,
        });
        if !settle(&mut rec.messages[n], seen, doubt, out) {
            soak.wrong(format!(
                "{} m{n}: ledger has {seen:?}, the record {:?}{}",
                user.id,
                rec.messages[n],
                doubt.map_or(String::new(), |p| format!(" (or {p:?} in doubt)"))
            ));
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
            replay.record_click(&owner, &mid, Some(&e), &[learn], &shared_ops)?;
        }
    }

    // Ledger: the rest can only be what Score learned from delivered
    // probes. Never acknowledged, so accepted as found (and replayed); once
    // found, it must stay.
    let gone: Vec<&String> = rec
        .implicit
        .iter()
        .filter(|id| !ledger.contains_key(*id))
        .collect();
    if !gone.is_empty() {
        soak.wrong(format!(
            "{}: implicit entries found at an earlier check are gone: {gone:?}",
            user.id
        ));
    }
    for (id, e) in ledger {
        if !(e.implicit && e.label == Label::Ham && e.shared == 0) {
            soak.wrong(format!(
                "{} {id}: ledger entry {:?} (implicit {}, shared {}) no call of the soak made",
                user.id, e.label, e.implicit, e.shared
            ));
            continue;
        }
        if rec.implicit.insert(id.clone()) {
            out.implicit += 1;
        }
        // Learned as delivered mail, as the server did (store format 8):
        // the model's split between clicked and delivered ham moves the
        // header's prior (`header_strength_ramp`), so a replay that counted
        // it as a click would score differently.
        let learn = Op::learn_entry(e.clone());
        replay.record_click(&owner, &MessageId::new(id)?, Some(&e), &[learn], &[])?;
    }
    replay.put_settings(&uid, &settings, consent, false)?;

    // Block list.
    for n in 0..rec.blocks.len() {
        out.keys += 1;
        let seen = blocks.contains(&block_entry(n));
        let doubt = in_doubt.iter().find_map(|d| match d {
            InDoubt::Block { n: m, post } if *m == n => Some(*post),
            _ => None,
        });
        if !settle(&mut rec.blocks[n], seen, doubt, out) {
            soak.wrong(format!(
                "{}: block entry {} is {}",
                user.id,
                block_entry(n),
                presence(seen, rec.blocks[n])
            ));
        }
    }
    if blocks.len() != rec.blocks.iter().filter(|b| **b).count() {
        soak.wrong(format!("{}: unexpected block entries {blocks:?}", user.id));
    }

    // Checkpoints the engine took since the last check.
    let snap = store.snapshot_seq(&uid)?;
    if snap != rec.snapshot_seq {
        out.checkpoints += 1;
        rec.snapshot_seq = snap;
    }
    Ok(())
}

/// The operator's seed and lists against the record; the accepted seed
/// into the replay.
fn check_operator(
    soak: &Soak,
    store: &Store,
    replay: &Store,
    out: &mut Checked,
) -> anyhow::Result<()> {
    let mut rec = soak.operator.rec.lock();
    let seed_doubt = std::mem::take(&mut rec.seed_doubt);
    rec.seed_frozen = false;
    // Entries under an older seed id belong to a cleared seed: as if absent.
    let seed_id = store.seed_id()?.unwrap_or(0);
    let mut seen = Vec::with_capacity(SEED_MESSAGES);
    for n in 0..SEED_MESSAGES {
        let mid = MessageId::new(format!("s{n}"))?;
        let entry = store
            .contributor_ledger_get(&Owner::Operator, &mid)?
            .filter(|e| seed_id != 0 && e.shared == seed_id);
        seen.push((mid, entry));
    }
    // A ClearSeed in doubt happened if no seed message is left.
    if seed_doubt.iter().any(|d| matches!(d, SeedDoubt::Clear))
        && seen.iter().all(|(_, e)| e.is_none())
        && rec.seed.iter().any(Option::is_some)
    {
        rec.seed.iter_mut().for_each(|s| *s = None);
        out.applied += 1;
    }
    if seed_id != 0 {
        replay.set_seed_id(seed_id, false)?;
    }
    for (n, (mid, entry)) in seen.into_iter().enumerate() {
        out.keys += 1;
        let label = entry.as_ref().map(|e| e.label);
        let doubt = seed_doubt.iter().find_map(|d| match d {
            SeedDoubt::Message { n: m, post } if *m == n => Some(Some(*post)),
            _ => None,
        });
        if !settle(&mut rec.seed[n], label, doubt, out) {
            soak.wrong(format!(
                "seed {mid}: ledger has {label:?}, the record {:?}{}",
                rec.seed[n],
                doubt.map_or(String::new(), |p| format!(" (or {p:?} in doubt)"))
            ));
        }
        if let (Some(e), Some(_)) = (entry, rec.seed[n]) {
            let learn = Op::Learn(e.label, e.weight, e.tokens.clone());
            replay.record_click(&Owner::Operator, &mid, Some(&e), &[], &[learn])?;
        }
    }

    // Operator-wide lists.
    let list_doubt = std::mem::take(&mut rec.list_doubt);
    rec.lists_frozen = false;
    for (k, kind) in OPERATOR_KINDS.into_iter().enumerate() {
        let entries: Vec<String> = store
            .list_entries(&Owner::Operator, kind)?
            .iter()
            .map(ToString::to_string)
            .collect();
        for i in k * OPERATOR_ENTRIES..(k + 1) * OPERATOR_ENTRIES {
            out.keys += 1;
            let (_, entry) = operator_entry(i);
            let seen = entries.contains(&entry);
            let doubt = list_doubt
                .iter()
                .find(|(j, _)| *j == i)
                .map(|(_, post)| *post);
            if !settle(&mut rec.lists[i], seen, doubt, out) {
                soak.wrong(format!(
                    "operator {} entry {entry} is {}",
                    kind.as_str(),
                    presence(seen, rec.lists[i])
                ));
            }
        }
        let want = rec.lists[k * OPERATOR_ENTRIES..(k + 1) * OPERATOR_ENTRIES]
            .iter()
            .filter(|b| **b)
            .count();
        if entries.len() != want {
            soak.wrong(format!(
                "unexpected operator {} entries {entries:?}",
                kind.as_str()
            ));
        }
    }
    Ok(())
}

/// Settles one key: the record's state `rec` against the state `seen` on
/// disk, `doubt` the new state of a call in doubt on that key. An in-doubt
/// call that happened becomes the record (and is counted); false if
/// `seen` is neither the record nor the call's new state.
fn settle<T: PartialEq + Copy>(rec: &mut T, seen: T, doubt: Option<T>, out: &mut Checked) -> bool {
    if seen == *rec {
        return true;
    }
    match doubt {
        Some(post) if post == seen => {
            *rec = post;
            out.applied += 1;
            true
        }
        _ => false,
    }
}

/// "present on disk, the record has it absent", for list entries.
fn presence(seen: bool, rec: bool) -> String {
    let word = |b| if b { "present" } else { "absent" };
    format!("{} on disk, the record has it {}", word(seen), word(rec))
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
            // What Score learned from delivered mail counts as ham.
            (
                count(Label::Spam),
                count(Label::Ham) + rec.implicit.len() as u64,
            )
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
    let (seed_spam, seed_ham, lists) = {
        let rec = soak.operator.rec.lock();
        let seeded = |l| rec.seed.iter().filter(|s| **s == Some(l)).count() as u64;
        (seeded(Label::Spam), seeded(Label::Ham), rec.lists.clone())
    };
    shared_spam += seed_spam;
    shared_ham += seed_ham;
    let ga = call(a.get_shared(proto::GetSharedRequest {})).await?;
    let gb = call(b.get_shared(proto::GetSharedRequest {})).await?;
    if (ga.seed_spam, ga.seed_ham) != (seed_spam, seed_ham) {
        soak.wrong(format!(
            "cycle {cycle}: the seed has {}/{} (spam/ham) messages after restart, the record {seed_spam}/{seed_ham}",
            ga.seed_spam, ga.seed_ham
        ));
    }
    // The operator-wide lists as the restarted server loaded them.
    for (k, kind) in OPERATOR_KINDS.into_iter().enumerate() {
        let mut got = call(a.list_entries(proto::ListEntriesRequest {
            operator_wide: true,
            kind: list_kind_to_wire(kind).into(),
            ..Default::default()
        }))
        .await?
        .entries;
        got.sort();
        let mut want: Vec<String> = (k * OPERATOR_ENTRIES..(k + 1) * OPERATOR_ENTRIES)
            .filter(|i| lists[*i])
            .map(|i| operator_entry(i).1)
            .collect();
        want.sort();
        if got != want {
            soak.wrong(format!(
                "cycle {cycle}: operator {} list {got:?} after restart, the record {want:?}",
                kind.as_str()
            ));
        }
    }
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
