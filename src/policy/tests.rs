use super::*;
use crate::mail::auth::Authentication;

fn entry(s: &str) -> Entry {
    s.parse().unwrap()
}

fn list(entries: &[&str]) -> List {
    List::from_entries(entries.iter().map(|s| entry(s)))
}

struct Case {
    settings: UserSettings,
    user_allow: List,
    user_block: List,
    operator_allow: List,
    operator_block: List,
}

impl Case {
    fn new() -> Self {
        Case {
            settings: UserSettings::default(),
            user_allow: List::default(),
            user_block: List::default(),
            operator_allow: List::default(),
            operator_block: List::default(),
        }
    }

    fn decide(&self, p: f64, sender: &str, ip: &str, auth_headers: &[(&str, &str)]) -> Decision {
        let sender = Address::parse(sender);
        let auth = Authentication::from_headers(auth_headers.iter().copied());
        let facts = Facts {
            sender: sender.as_ref(),
            other_senders: &[],
            single_from: sender.is_some(),
            envelope_sender: None,
            client_ip: ip.parse().ok(),
            auth: Some(&auth),
        };
        let lists = Lists {
            user_allow: &self.user_allow,
            user_block: &self.user_block,
            operator_allow: &self.operator_allow,
            operator_block: &self.operator_block,
        };
        let ham_cutoff = crate::classify::Params::default().ham_cutoff;
        decide(
            p,
            self.settings.cutoffs(ham_cutoff),
            &self.settings,
            lists,
            &facts,
        )
    }
}

const DKIM_PASS: (&str, &str) = ("X-HE-DKIM-Result", "pass header.d=friend.example");

#[test]
fn block_beats_allow_and_model() {
    let mut c = Case::new();
    c.user_allow = list(&["friend.example"]);
    c.user_block = list(&["192.0.2.0/24"]);
    let d = c.decide(0.01, "a@friend.example", "192.0.2.9", &[DKIM_PASS]);
    assert_eq!(d.action, Action::SpamFolder);
    assert!(matches!(
        d.rule,
        Rule::BlockList {
            scope: Scope::User,
            ..
        }
    ));
    assert!(d.reason.contains("192.0.2.0/24"), "{}", d.reason);
    assert_eq!(
        d.notes,
        vec![
            "user allow list entry friend.example also names this sender or IP; a block entry wins"
        ]
    );
}

#[test]
fn allow_by_sender_needs_authentication() {
    let mut c = Case::new();
    c.user_allow = list(&["friend.example"]);
    let forged = c.decide(0.99, "a@friend.example", "203.0.113.5", &[]);
    assert_eq!(forged.rule, Rule::Model);
    assert_eq!(forged.action, Action::SpamFolder);
    assert!(forged.notes[0].contains("ignored"), "{:?}", forged.notes);
    let real = c.decide(0.99, "a@friend.example", "203.0.113.5", &[DKIM_PASS]);
    assert_eq!(real.action, Action::Deliver);
    assert!(matches!(real.rule, Rule::AllowList { .. }));
}

#[test]
fn allow_by_ip_needs_no_authentication() {
    let mut c = Case::new();
    c.operator_allow = list(&["2001:db8::/32"]);
    let d = c.decide(0.99, "x@any.example", "2001:db8::1", &[]);
    assert_eq!(d.action, Action::Deliver);
    assert!(matches!(
        d.rule,
        Rule::AllowList {
            scope: Scope::Operator,
            ..
        }
    ));
}

#[test]
fn modes_map_spam_to_actions() {
    let mut c = Case::new();
    assert_eq!(
        c.decide(0.95, "a@b.example", "", &[]).action,
        Action::SpamFolder
    );
    c.settings.mode = HandlingMode::Passthrough;
    let tagged = c.decide(0.95, "a@b.example", "", &[]);
    assert_eq!(tagged.action, Action::Deliver);
    assert_eq!(tagged.verdict, Verdict::Spam);
    c.settings.mode = HandlingMode::Reject;
    let between = c.decide(0.95, "a@b.example", "", &[]);
    assert_eq!(between.action, Action::SpamFolder);
    let rejected = c.decide(0.9999, "a@b.example", "", &[]);
    assert_eq!(rejected.action, Action::Reject);
    assert_eq!(rejected.smtp_reply.as_deref(), Some(REPLY_SPAM));
    assert_eq!(
        c.decide(0.1, "a@b.example", "", &[]).action,
        Action::Deliver
    );
}

#[test]
fn enforced_dmarc_failure_is_spam_and_rejects_only_for_p_reject() {
    let mut c = Case::new();
    c.settings.mode = HandlingMode::Reject;
    let ar = (
        "Authentication-Results",
        "mx.example; dmarc=fail (p=reject) header.from=bank.example",
    );
    let d = c.decide(0.01, "ceo@bank.example", "", &[ar]);
    assert_eq!(d.action, Action::Reject);
    assert_eq!(d.smtp_reply.as_deref(), Some(REPLY_DMARC));
    // The border's failure is enforced whatever From address leads (a
    // message with several From addresses cannot escape it by putting
    // another domain first), and the reason names the domain that failed.
    let led = c.decide(0.01, "x@attacker.example", "", &[ar]);
    assert_eq!(led.action, Action::Reject);
    assert!(led.reason.contains("bank.example"), "{}", led.reason);
    let q = (
        "Authentication-Results",
        "mx.example; dmarc=fail (p=quarantine) header.from=bank.example",
    );
    assert_eq!(
        c.decide(0.01, "ceo@bank.example", "", &[q]).action,
        Action::SpamFolder
    );
}

#[test]
fn replies_and_headers_never_name_list_entries_or_reasons() {
    let mut c = Case::new();
    c.settings.mode = HandlingMode::Reject;
    c.user_block = list(&["secret-enemy.example"]);
    let d = c.decide(0.0, "x@secret-enemy.example", "", &[]);
    let reply = d.smtp_reply.clone().unwrap();
    assert!(reply.starts_with("554 5.7.1"), "{reply}");
    assert!(!reply.contains("secret"), "{reply}");
    for (_, v) in d.headers(0.0) {
        assert!(!v.contains("secret"), "{v}");
    }
}
