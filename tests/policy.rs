//! Delivery policy through gRPC: handling modes, allow and block lists,
//! authentication, trusted senders, and support's FindDecisions. One test
//! per rule.

use chaff::proto::{self, Action, HandlingMode, Label, ListKind, Rule, Verdict};
use tonic::Code;

use crate::common::*;

/// A newsletter from a bulk sender that signs with DKIM for its own domain
/// and offers RFC 8058 one-click unsubscribe.
const NEWSLETTER: &[u8] = b"Received-SPF: pass (mx.provider.example: domain of bounce@news.shop.example designates 198.51.100.20 as permitted sender) client-ip=198.51.100.20; envelope-from=bounce@news.shop.example;\r\n\
X-HE-DKIM-Result: pass header.d=shop.example\r\n\
From: Shop News <news@shop.example>\r\n\
To: alice@provider.example\r\n\
Subject: This week's deals on garden furniture\r\n\
Message-ID: <weekly-42@shop.example>\r\n\
List-Unsubscribe: <mailto:leave@shop.example>, <https://shop.example/unsubscribe?u=alice>\r\n\
List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\
\r\n\
Garden furniture sale this week: chairs, tables and parasols at low prices.\r\n";

/// The same From, forged: no authentication, sent from elsewhere.
const FORGED_NEWSLETTER: &[u8] = b"Received-SPF: fail (mx.provider.example: domain of shop.example does not designate 203.0.113.66 as permitted sender) client-ip=203.0.113.66; envelope-from=news@shop.example;\r\n\
From: Shop News <news@shop.example>\r\n\
To: alice@provider.example\r\n\
Subject: Your account is locked, verify now\r\n\
\r\n\
Verify your password now at the link or lose your account.\r\n";

fn with_spf_ip(ip: &str, body: &[u8]) -> Vec<u8> {
    let mut m =
        format!("Received-SPF: none (mx.provider.example) client-ip={ip};\r\n").into_bytes();
    m.extend_from_slice(body);
    m
}

async fn set_list(c: &mut Client, user: &str, kind: ListKind, entry: &str) -> String {
    c.add_list_entry(proto::ListEntryRequest {
        user_id: user.into(),
        operator_wide: user.is_empty(),
        kind: kind.into(),
        entry: entry.into(),
        force: false,
    })
    .await
    .unwrap()
    .into_inner()
    .entry
}

async fn set_mode(c: &mut Client, user: &str, mode: HandlingMode) -> proto::UserInfo {
    c.update_user(proto::UpdateUserRequest {
        user_id: user.into(),
        handling_mode: mode.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

async fn score_from(
    c: &mut Client,
    user: &str,
    msg: &[u8],
    client_ip: &str,
) -> proto::ScoreResponse {
    c.score(proto::ScoreRequest {
        user_id: user.into(),
        message: msg.to_vec(),
        client_ip: client_ip.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

fn rule(s: &proto::ScoreResponse) -> Rule {
    Rule::try_from(s.explanation.as_ref().unwrap().rule).unwrap()
}

/// Teaches `user` that SPAM-like mail is spam, firmly.
async fn teach(c: &mut Client, user: &str) {
    for (i, m) in [SPAM, SPAM2].iter().enumerate() {
        train(c, user, m, Label::Spam, &format!("s{i}")).await;
    }
    for (i, m) in [HAM, HAM2].iter().enumerate() {
        train(c, user, m, Label::Ham, &format!("h{i}")).await;
    }
}

on_both_stores!(
    Redis,
    defaults_are_quarantine_and_spam_goes_to_the_spam_folder,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        let info = user(&mut c, server.u("alice")).await;
        let s = info.settings.unwrap();
        assert_eq!(s.handling_mode, HandlingMode::Quarantine as i32);
        assert_eq!((s.spam_threshold, s.reject_threshold), (0.80, 0.999));
        teach(&mut c, server.u("alice")).await;
        let r = score(&mut c, server.u("alice"), SPAM).await;
        assert_eq!(r.action, Action::SpamFolder as i32, "{r:?}");
        assert_eq!(rule(&r), Rule::Model);
        assert!(r.smtp_reply.is_empty());
        let flag = r.headers.iter().find(|h| h.name == "X-Spam-Flag");
        assert_eq!(flag.map(|h| h.value.as_str()), Some("YES"));
        let ham = score(&mut c, server.u("alice"), HAM).await;
        assert_eq!(ham.action, Action::Deliver as i32);
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    reject_mode_gives_a_5xx_reply_that_reveals_nothing,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        teach(&mut c, server.u("alice")).await;
        let info = set_mode(&mut c, server.u("alice"), HandlingMode::Reject).await;
        assert_eq!(
            info.settings.unwrap().handling_mode,
            HandlingMode::Reject as i32
        );
        let r = score(&mut c, server.u("alice"), SPAM).await;
        assert!(r.spam_probability >= 0.999, "{r:?}");
        assert_eq!(r.action, Action::Reject as i32);
        assert_eq!(r.smtp_reply, "554 5.7.1 Message rejected as spam");
        // Passthrough: delivered, but tagged.
        set_mode(&mut c, server.u("alice"), HandlingMode::Passthrough).await;
        let p = score(&mut c, server.u("alice"), SPAM).await;
        assert_eq!(
            (p.action, p.verdict),
            (Action::Deliver as i32, Verdict::Spam as i32)
        );
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    incoherent_thresholds_are_invalid_argument,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        let err = c
            .update_user(proto::UpdateUserRequest {
                user_id: server.u("alice").into(),
                spam_threshold: Some(0.95),
                reject_threshold: Some(0.9),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains("reject threshold"),
            "{}",
            err.message()
        );
        // Nothing changed.
        let s = user(&mut c, server.u("alice")).await.settings.unwrap();
        assert_eq!(s.spam_threshold, 0.80);
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    a_forged_from_cannot_ride_the_allow_list,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        teach(&mut c, server.u("alice")).await;
        train(
            &mut c,
            server.u("alice"),
            FORGED_NEWSLETTER,
            Label::Spam,
            "phish",
        )
        .await;
        set_list(
            &mut c,
            server.u("alice"),
            ListKind::Allow,
            "news@shop.example",
        )
        .await;

        let real = score(&mut c, server.u("alice"), NEWSLETTER).await;
        assert_eq!(rule(&real), Rule::AllowList);
        assert_eq!(real.action, Action::Deliver as i32);

        let forged = score(&mut c, server.u("alice"), FORGED_NEWSLETTER).await;
        assert_eq!(rule(&forged), Rule::Model, "{forged:?}");
        assert_eq!(forged.action, Action::SpamFolder as i32);
        let notes = &forged.explanation.as_ref().unwrap().notes;
        assert!(
            notes
                .iter()
                .any(|n| n.contains("news@shop.example") && n.contains("ignored")),
            "{notes:?}"
        );

        // Passes written below the border's own results by the sender (or a
        // relay) are not read for policy: the border said none.
        let mut lower = b"Authentication-Results: mx.provider.example; spf=fail smtp.mailfrom=shop.example; dkim=none; dmarc=fail (p=none) header.from=shop.example\r\n\
X-HE-DKIM-Result: none\r\n\
Received: from relay.evil.example\r\n\
Authentication-Results: mx.google.com; dkim=pass header.d=shop.example; dmarc=pass header.from=shop.example\r\n\
X-HE-DKIM-Result: pass header.d=shop.example\r\n"
            .to_vec();
        lower.extend_from_slice(FORGED_NEWSLETTER);
        let under = score(&mut c, server.u("alice"), &lower).await;
        assert_eq!(rule(&under), Rule::Model, "{under:?}");
        assert_eq!(under.action, Action::SpamFolder as i32);
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    ipv6_cidr_block_matches_the_pipelines_client_ip,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        let canonical = set_list(
            &mut c,
            server.u("alice"),
            ListKind::Block,
            "2001:DB8:BAD::1/48",
        )
        .await;
        assert_eq!(canonical, "2001:db8:bad::/48");
        let r = score_from(&mut c, server.u("alice"), HAM, "2001:db8:bad:7::25").await;
        assert_eq!(rule(&r), Rule::BlockList);
        assert_eq!(
            (r.action, r.verdict),
            (Action::SpamFolder as i32, Verdict::Spam as i32)
        );
        let reason = &r.explanation.as_ref().unwrap().reason;
        assert!(reason.contains("2001:db8:bad::/48"), "{reason}");
        // Outside the range: the model decides.
        let other = score_from(&mut c, server.u("alice"), HAM, "2001:db8:cafe::25").await;
        assert_eq!(rule(&other), Rule::Model);
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    without_a_client_ip_the_topmost_received_spf_ip_is_used,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        set_list(&mut c, server.u("alice"), ListKind::Block, "192.0.2.0/24").await;
        // Our border's header on top; a forged one below it must not count.
        let mut msg = with_spf_ip(
            "192.0.2.44",
            b"Received-SPF: pass client-ip=198.51.100.1;\r\n",
        );
        msg.extend_from_slice(HAM);
        let r = score(&mut c, server.u("alice"), &msg).await;
        assert_eq!(rule(&r), Rule::BlockList);
        assert_eq!(r.explanation.as_ref().unwrap().client_ip, "192.0.2.44");
        let mut below = b"Received-SPF: pass client-ip=198.51.100.1;\r\n".to_vec();
        below.extend_from_slice(&with_spf_ip("192.0.2.44", HAM));
        assert_eq!(
            rule(&score(&mut c, server.u("alice"), &below).await),
            Rule::Model
        );
        server.stop().await;
    }
);

on_both_stores!(
    RedisAlone,
    block_beats_allow_and_rejects_in_reject_mode,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        set_list(&mut c, server.u("alice"), ListKind::Allow, "shop.example").await;
        set_list(&mut c, "", ListKind::Block, "198.51.100.0/24").await;
        set_mode(&mut c, server.u("alice"), HandlingMode::Reject).await;
        let r = score(&mut c, server.u("alice"), NEWSLETTER).await;
        assert_eq!(rule(&r), Rule::BlockList, "{r:?}");
        assert_eq!(r.action, Action::Reject as i32);
        assert!(r.smtp_reply.starts_with("554 5.7.1"), "{}", r.smtp_reply);
        assert!(!r.smtp_reply.contains("198.51"), "{}", r.smtp_reply);
        assert!(
            r.explanation
                .unwrap()
                .reason
                .contains("operator block list")
        );
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    bad_list_requests_are_invalid_argument_with_what_to_write,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        let err = c
            .add_list_entry(proto::ListEntryRequest {
                user_id: server.u("alice").into(),
                kind: ListKind::Block.into(),
                entry: "not a domain".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("CIDR range"), "{}", err.message());
        let both = c
            .list_entries(proto::ListEntriesRequest {
                user_id: server.u("alice").into(),
                operator_wide: true,
                kind: ListKind::Allow.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(both.code(), Code::InvalidArgument);
        let user_trusted = c
            .add_list_entry(proto::ListEntryRequest {
                user_id: server.u("alice").into(),
                kind: ListKind::Trusted.into(),
                entry: "shop.example".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(user_trusted.code(), Code::InvalidArgument);
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    entries_that_can_never_match_and_catch_all_ranges_are_refused_over_grpc,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        let add = |entry: &str, force: bool| proto::ListEntryRequest {
            user_id: server.u("alice").into(),
            kind: ListKind::Block.into(),
            entry: entry.into(),
            force,
            ..Default::default()
        };
        for bad in ["999.1.1.1", "a@b@c.example", "0.0.0.0/0", "::/0"] {
            let err = c.add_list_entry(add(bad, false)).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        }
        let catch_all = c
            .add_list_entry(add("::/0", true))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(catch_all.entry, "::/0");
        let idn = c
            .add_list_entry(add("Bücher.example", false))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(idn.entry, "xn--bcher-kva.example");
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    list_entries_are_canonical_and_adds_and_removes_say_if_they_changed,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        assert_eq!(
            set_list(
                &mut c,
                server.u("alice"),
                ListKind::Allow,
                "*.Friends.example"
            )
            .await,
            "*.friends.example"
        );
        let again = c
            .add_list_entry(proto::ListEntryRequest {
                user_id: server.u("alice").into(),
                kind: ListKind::Allow.into(),
                entry: "*.friends.example".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!again.changed);
        let list = c
            .list_entries(proto::ListEntriesRequest {
                user_id: server.u("alice").into(),
                kind: ListKind::Allow.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.entries, vec!["*.friends.example"]);
        let removed = c
            .remove_list_entry(proto::ListEntryRequest {
                user_id: server.u("alice").into(),
                kind: ListKind::Allow.into(),
                entry: "*.friends.example".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(removed.changed);
        server.stop().await;
    }
);

on_both_stores!(
    RedisAlone,
    a_trusted_senders_spam_click_is_low_effect_with_the_unsubscribe_target,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        set_list(&mut c, "", ListKind::Trusted, "shop.example").await;
        train(&mut c, server.u("alice"), HAM, Label::Ham, "h0").await;
        let t = c
            .train(proto::TrainRequest {
                user_id: server.u("alice").into(),
                message: NEWSLETTER.to_vec(),
                label: Label::Spam.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(t.low_effect, "{t:?}");
        assert_eq!(t.unsubscribe, "https://shop.example/unsubscribe?u=alice");
        assert!(t.unsubscribe_one_click);
        assert_eq!(t.spam_learned, 1, "the click is recorded");

        // The forged copy is not trusted: a full click, and no unsubscribe offer.
        let forged = c
            .train(proto::TrainRequest {
                user_id: server.u("carol").into(),
                message: FORGED_NEWSLETTER.to_vec(),
                label: Label::Spam.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            !forged.low_effect && forged.unsubscribe.is_empty(),
            "{forged:?}"
        );
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    a_low_effect_click_moves_the_model_less_than_a_full_one,
    async |on| {
        let server = on.start_pure().await;
        let mut c = server.client().await;
        // dave allow-lists the shop (his own trusted sender); erin does not.
        set_list(&mut c, server.u("dave"), ListKind::Allow, "shop.example").await;
        for u in [server.u("dave"), server.u("erin")] {
            train(&mut c, u, HAM, Label::Ham, "h0").await;
            train(&mut c, u, HAM2, Label::Ham, "h1").await;
            train(&mut c, u, NEWSLETTER, Label::Spam, "n").await;
        }
        let dave = score(&mut c, server.u("dave"), NEWSLETTER).await;
        let erin = score(&mut c, server.u("erin"), NEWSLETTER).await;
        assert!(
            dave.spam_probability < erin.spam_probability,
            "low-effect {} vs full {}",
            dave.spam_probability,
            erin.spam_probability
        );
        // Flipping the low-effect click to ham and forgetting it are exact.
        let before = observe(&mut c, server.u("dave")).await;
        c.forget(proto::ForgetRequest {
            user_id: server.u("dave").into(),
            message_id: "n".into(),
        })
        .await
        .unwrap();
        train(&mut c, server.u("dave"), NEWSLETTER, Label::Spam, "n").await;
        assert_eq!(observe(&mut c, server.u("dave")).await, before);
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    find_decisions_answers_why_with_the_reason,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        set_mode(&mut c, server.u("alice"), HandlingMode::Reject).await;
        set_list(&mut c, server.u("alice"), ListKind::Block, "pills.example").await;
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        score(&mut c, server.u("alice"), SPAM).await;
        score(&mut c, server.u("alice"), HAM).await;
        // The log is written off the scoring path, in batches: wait until the
        // writer has both decisions before asking questions of them.
        let window = proto::FindDecisionsRequest {
            user_id: server.u("alice").into(),
            since_unix_ms: start - 1000,
            ..Default::default()
        };
        let mut all = Vec::new();
        for _ in 0..100 {
            all = c
                .find_decisions(window.clone())
                .await
                .unwrap()
                .into_inner()
                .decisions;
            if all.len() >= 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // The ham from bob is there too.
        assert_eq!(all.len(), 2, "{all:?}");
        let found = c
            .find_decisions(proto::FindDecisionsRequest {
                sender: "pills.example".into(),
                ..window.clone()
            })
            .await
            .unwrap()
            .into_inner()
            .decisions;
        assert_eq!(found.len(), 1, "{found:?}");
        let d = &found[0];
        assert_eq!(d.sender, "promo@pills.example");
        assert_eq!(d.action, Action::Reject as i32);
        assert!(d.smtp_reply.starts_with("554 5.7.1"));
        let x = d.explanation.as_ref().unwrap();
        assert_eq!(x.rule, Rule::BlockList as i32);
        assert!(x.reason.contains("pills.example"), "{}", x.reason);
        assert!(d.time_unix_ms >= start);

        // A window in the past finds nothing.
        let past = c
            .find_decisions(proto::FindDecisionsRequest {
                user_id: server.u("alice").into(),
                since_unix_ms: 1,
                until_unix_ms: start - 60_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .decisions;
        assert!(past.is_empty());

        // By the message: its Message-ID, with or without the brackets.
        for id in ["<s1@pills.example>", "s1@pills.example"] {
            let about = c
                .find_decisions(proto::FindDecisionsRequest {
                    message_id: id.into(),
                    ..window.clone()
                })
                .await
                .unwrap()
                .into_inner()
                .decisions;
            assert_eq!(about.len(), 1, "{id}: {about:?}");
            assert_eq!(about[0].message_id, "<s1@pills.example>");
        }
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    explanations_name_the_strongest_features,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        teach(&mut c, server.u("alice")).await;
        let r = score(&mut c, server.u("alice"), SPAM).await;
        let x = r.explanation.unwrap();
        assert_eq!((x.spam_learned, x.ham_learned), (2, 2));
        assert!(!x.spam_features.is_empty(), "{x:?}");
        for f in &x.spam_features {
            assert!(f.contribution > 0.0 && f.spam_probability > 0.5, "{f:?}");
            assert!(
                f.name.contains(':') && !f.name.starts_with("token:"),
                "{f:?}"
            );
        }
        server.stop().await;
    }
);

/// A message with several From addresses (a list in one header, or a
/// second From header) is blocked when any of them is, and no sender
/// allow entry applies to it: before session 24 only the first address of
/// the last From header was read, so adding a friend in front evaded a
/// block, and an allow entry for one address passed the others.
#[tokio::test]
async fn every_from_address_is_checked_against_block_entries_and_several_defeat_an_allow() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let alice = "alice";
    teach(&mut c, alice).await;
    set_list(&mut c, alice, ListKind::Block, "bob@example.com").await;
    let tail = b"To: alice@provider.example\r\nSubject: hello\r\n\r\nLunch on Friday?\r\n";
    let one_header = [
        &b"From: Friend <friend@good.example>, Bob <bob@example.com>\r\n"[..],
        tail,
    ]
    .concat();
    let two_headers = [
        &b"From: Friend <friend@good.example>\r\nFrom: Bob <bob@example.com>\r\n"[..],
        tail,
    ]
    .concat();
    for m in [one_header, two_headers] {
        let r = score(&mut c, alice, &m).await;
        assert_eq!(rule(&r), Rule::BlockList, "{r:?}");
        let reason = &r.explanation.as_ref().unwrap().reason;
        assert!(reason.contains("bob@example.com"), "{reason}");
        // The sender shown is the first address of the first From header.
        assert_eq!(
            r.explanation.as_ref().unwrap().sender,
            "friend@good.example"
        );
    }
    // However many come first (the review's 33 padding addresses, past a
    // cap this once had).
    let padding: Vec<String> = (0..40).map(|i| format!("p{i}@pad.example")).collect();
    let many = [
        format!("From: {}, bob@example.com\r\n", padding.join(", ")).as_bytes(),
        tail,
    ]
    .concat();
    assert_eq!(rule(&score(&mut c, alice, &many).await), Rule::BlockList);
    // An authenticated allow-listed sender with company is not allowed.
    set_list(&mut c, alice, ListKind::Allow, "news@shop.example").await;
    let with_company = [
        &b"Received-SPF: pass client-ip=198.51.100.20; envelope-from=bounce@shop.example;\r\n\
X-HE-DKIM-Result: pass header.d=shop.example\r\n\
From: news@shop.example, someone@elsewhere.example\r\n"[..],
        tail,
    ]
    .concat();
    let r = score(&mut c, alice, &with_company).await;
    assert_eq!(rule(&r), Rule::Model, "{r:?}");
    let notes = &r.explanation.as_ref().unwrap().notes;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("more than one From address")),
        "{notes:?}"
    );
    // Company that does not read as an address counts too.
    let unreadable = String::from_utf8(with_company.clone())
        .unwrap()
        .replace("someone@elsewhere.example", "Boss <boss@localhost>");
    let r = score(&mut c, alice, unreadable.as_bytes()).await;
    assert_eq!(rule(&r), Rule::Model, "{r:?}");
    server.stop().await;
}

/// The support articles: "check whether the sender or return-path address
/// is on the blocklist". The envelope sender our border's SPF check saw
/// blocks like a From address; it never allows.
#[tokio::test]
async fn a_block_entry_matches_the_envelope_sender_too() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let rob = "rob";
    set_list(&mut c, rob, ListKind::Block, "bounce@esp.example").await;
    let m = b"Received-SPF: pass (mx.provider.example) client-ip=198.51.100.7; envelope-from=bounce@esp.example;\r\n\
From: News <news@brand.example>\r\n\
Subject: Our news\r\n\
\r\n\
This month at the brand.\r\n";
    let r = score(&mut c, rob, m).await;
    assert_eq!(rule(&r), Rule::BlockList, "{r:?}");
    let reason = &r.explanation.as_ref().unwrap().reason;
    assert!(
        reason.contains("envelope sender (return path) bounce@esp.example"),
        "{reason}"
    );
    // An allow entry for the envelope sender alone does not allow.
    let carol = "carol";
    teach(&mut c, carol).await;
    set_list(&mut c, carol, ListKind::Allow, "bounce@esp.example").await;
    let r = score(&mut c, carol, m).await;
    assert_eq!(rule(&r), Rule::Model, "{r:?}");
    server.stop().await;
}

/// With the border's authserv-id configured (`--authserv-id`), every
/// Authentication-Results the border wrote is read, one per milter, and
/// none a sender wrote: here OpenDKIM's `dkim=none` sits above OpenDMARC's
/// `dmarc=fail (p=reject)`, and a forged pass sits between them. Reading
/// the topmost alone (the default) would miss the DMARC failure.
#[tokio::test]
async fn with_the_borders_authserv_id_every_border_result_is_read_and_no_forgery() {
    let server = TestServer::start_with(chaff::engine::Settings {
        border: chaff::mail::auth::Border::parse("mx.provider.example").unwrap(),
        ..Default::default()
    })
    .await;
    let mut c = server.client().await;
    set_mode(&mut c, "alice", HandlingMode::Reject).await;
    let m = b"Authentication-Results: mx.provider.example; dkim=none\r\n\
Authentication-Results: relay.evil.example; dmarc=pass header.from=bank.example\r\n\
Authentication-Results: mx.provider.example; dmarc=fail (p=reject) header.from=bank.example\r\n\
From: Bank <alerts@bank.example>\r\n\
Subject: Verify your account\r\n\
\r\n\
Please verify your account.\r\n";
    let r = score(&mut c, "alice", m).await;
    assert_eq!(rule(&r), Rule::Authentication, "{r:?}");
    assert!(r.smtp_reply.starts_with("550 5.7.26"), "{r:?}");
    server.stop().await;
}

/// The red team's a10 (s25 finding 1): the border copied the sender's HELO
/// name, quoted as RFC 8601 asks, into its own result: `smtp.helo="x;dmarc=pass"`.
/// Split at every `;`, that read as a DMARC pass and rode dave's allow
/// entry for paypal.com past the border's `dmarc=fail (p=reject)`. The
/// quoted value is one atom: the failure stands, and is rejected.
const A10_HELO_INJECTION: &[u8] = b"Authentication-Results: mx.border.example;\r\n \
spf=none smtp.helo=\"x;dmarc=pass\";\r\n \
dkim=none;\r\n \
dmarc=fail (p=reject dis=reject) header.from=paypal.com\r\n\
From: PayPal <service@paypal.com>\r\n\
To: dave@example.com\r\n\
Subject: Limited time offer for you\r\n\
\r\n\
Verify your account now at the link below.\r\n";

#[tokio::test]
async fn a_pass_injected_into_the_borders_result_neither_allows_nor_escapes_dmarc() {
    for border in ["", "mx.border.example"] {
        let server = TestServer::start_with(chaff::engine::Settings {
            border: match border {
                "" => Default::default(),
                id => chaff::mail::auth::Border::parse(id).unwrap(),
            },
            ..Default::default()
        })
        .await;
        let mut c = server.client().await;
        set_list(&mut c, "dave", ListKind::Allow, "paypal.com").await;
        set_mode(&mut c, "dave", HandlingMode::Reject).await;
        let r = score(&mut c, "dave", A10_HELO_INJECTION).await;
        assert_eq!(rule(&r), Rule::Authentication, "{border:?}: {r:?}");
        assert_eq!(r.action, Action::Reject as i32, "{border:?}");
        assert_eq!(r.smtp_reply, chaff::policy::REPLY_DMARC, "{border:?}");
        let x = r.explanation.as_ref().unwrap();
        assert!(x.reason.contains("paypal.com"), "{}", x.reason);
        assert!(
            x.notes
                .iter()
                .any(|n| n.contains("paypal.com") && n.contains("ignored")),
            "{:?}",
            x.notes
        );
        server.stop().await;
    }
}

/// The red team's b01 (s25 finding 8): 4,000 filler fields of 70 bytes
/// (~280 KiB, past the 256 KiB header cap) and then a block-listed From.
/// Cut at the cap, the From went unseen and the block entry did nothing.
#[tokio::test]
async fn a_from_after_the_header_cap_still_meets_the_block_list() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    set_list(&mut c, "alice", ListKind::Block, "jane.smith@example.net").await;
    let mut m = Vec::new();
    for i in 0..4000 {
        let field = format!("X-Filler-{i:04}: {}\r\n", "a".repeat(53));
        assert_eq!(field.len(), 70);
        m.extend_from_slice(field.as_bytes());
    }
    assert!(m.len() > chaff::tokenize::Limits::default().max_header_bytes);
    m.extend_from_slice(
        b"From: Jane Smith <jane.smith@example.net>\r\nSubject: lunch\r\n\r\nSee you at noon.\r\n",
    );
    let r = score(&mut c, "alice", &m).await;
    assert_eq!(rule(&r), Rule::BlockList, "{r:?}");
    assert_eq!(r.action, Action::SpamFolder as i32);
    let x = r.explanation.as_ref().unwrap();
    assert_eq!(x.sender, "jane.smith@example.net");
    server.stop().await;
}
