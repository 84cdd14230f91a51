use super::*;

fn has(tokens: &Tokens, tag: Tag, text: &str) -> bool {
    tokens.ids.binary_search(&TokenId::of(tag, text)).is_ok()
}

const SIMPLE: &[u8] = b"From: \"Cheap Meds\" <Deals@Pharma.example>\r\n\
Reply-To: orders@elsewhere.example\r\n\
Subject: FREE pills today\r\n\
Message-ID: <abc123@bulk.example>\r\n\
X-Mailer: MassMailer 5.0\r\n\
Received: from mx (host [192.0.2.77]) by us\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Buy now at https://Shop.Pharma.example/x?y=1 cheap cheap\r\n";

#[test]
fn headers_become_tagged_tokens() {
    let t = Tokenizer::default().tokenize(SIMPLE);
    assert!(has(&t, Tag::Subject, "free"));
    assert!(has(&t, Tag::FromAddr, "deals@pharma.example"));
    assert!(has(&t, Tag::FromDomain, "pharma.example"));
    assert!(has(&t, Tag::FromName, "cheap"));
    assert!(has(&t, Tag::ReplyToAddr, "orders@elsewhere.example"));
    assert!(has(&t, Tag::MessageIdDomain, "bulk.example"));
    assert!(has(&t, Tag::Mailer, "massmailer"));
    assert!(has(&t, Tag::ReceivedIp, "192.0.2.77"));
    assert!(has(&t, Tag::ReceivedNet, "192.0.2"));
    assert!(has(&t, Tag::HeaderName, "x-mailer"));
    assert!(has(&t, Tag::ContentType, "text/plain"));
}

#[test]
fn body_words_and_url_hosts() {
    let t = Tokenizer::default().tokenize(SIMPLE);
    assert!(has(&t, Tag::Body, "buy"));
    assert!(has(&t, Tag::Body, "cheap"));
    assert!(has(&t, Tag::UrlHost, "shop.pharma.example"));
    // The same word in the subject and the body are different evidence.
    assert!(!has(&t, Tag::Body, "pills"));
}

#[test]
fn ids_are_sorted_and_distinct() {
    let t = Tokenizer::default().tokenize(SIMPLE);
    assert!(t.ids.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn same_bytes_same_tokens() {
    let tk = Tokenizer::default();
    assert_eq!(tk.tokenize(SIMPLE), tk.tokenize(SIMPLE));
}

#[test]
fn token_ids_are_stable_across_releases() {
    // Token ids are persisted: this pins the hash. If it changes, bump
    // TOKENIZER_VERSION and update the constant.
    assert_ne!(
        TokenId::of(Tag::Body, "free"),
        TokenId::of(Tag::Subject, "free")
    );
    assert_eq!(
        format!("{:?}", TokenId::of(Tag::Body, "viagra")),
        PINNED_VIAGRA
    );
}
const PINNED_VIAGRA: &str = "TokenId(066d554742b92e53)";

#[test]
fn base64_body_is_decoded() {
    let msg = b"Subject: x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nV2luIGEgbG90dGVyeSBwcml6ZQ==\r\n";
    let t = Tokenizer::default().tokenize(msg);
    assert!(has(&t, Tag::Body, "lottery"));
}

#[test]
fn html_body_gives_text_and_link_hosts() {
    let msg = b"Subject: x\r\nContent-Type: text/html\r\n\r\n<html><body><p>Claim your <b>prize</b></p><a href=\"http://evil.example/claim\">here</a></body></html>";
    let t = Tokenizer::default().tokenize(msg);
    assert!(has(&t, Tag::Body, "prize"));
    assert!(has(&t, Tag::UrlHost, "evil.example"));
}

#[test]
fn garbage_bytes_still_tokenize() {
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let t = Tokenizer::default().tokenize(&garbage);
    // Whatever it reads, it must not panic, and ids stay sorted.
    assert!(t.ids.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn token_cap_is_reported() {
    let mut body = String::from("Subject: many\r\n\r\n");
    for i in 0..5000 {
        body.push_str(&format!("word{i} "));
    }
    let tk = Tokenizer::new(Limits {
        max_tokens: 100,
        ..Limits::default()
    });
    let t = tk.tokenize(body.as_bytes());
    assert!(t.ids.len() <= 100);
    assert!(t.limits_hit.contains(&LimitHit::Tokens));
}

#[test]
fn long_words_become_shapes() {
    let msg = format!("Subject: x\r\n\r\nhello {}\r\n", "a".repeat(120));
    let t = Tokenizer::default().tokenize(msg.as_bytes());
    assert!(has(&t, Tag::LongWord, "body:a:120"));
}

#[test]
fn explain_lists_readable_features() {
    let (text, _) = Tokenizer::default().explain(SIMPLE);
    assert!(text.iter().any(|f| f == "subject:free"), "{text:?}");
    assert!(
        text.iter().any(|f| f == "url.host:shop.pharma.example"),
        "{text:?}"
    );
}
