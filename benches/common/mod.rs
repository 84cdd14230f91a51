//! Messages generated for the benches (never taken from a corpus).
#![allow(dead_code)]

/// Deterministic xorshift so every run benches the same bytes.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "you",
    "that",
    "it",
    "for",
    "on",
    "are",
    "with",
    "as",
    "this",
    "your",
    "be",
    "at",
    "have",
    "from",
    "or",
    "by",
    "offer",
    "account",
    "meeting",
    "please",
    "review",
    "price",
    "free",
    "order",
    "shipping",
    "report",
    "project",
    "team",
    "update",
    "click",
    "here",
    "unsubscribe",
    "newsletter",
    "schedule",
    "invoice",
    "payment",
    "customer",
    "service",
    "security",
    "password",
    "discount",
    "limited",
    "today",
    "tomorrow",
    "thanks",
    "regards",
    "attached",
    "document",
    "agenda",
    "budget",
    "quarter",
    "results",
    "market",
    "growth",
];

/// Real mail in Latin script has the odd accented word, not many: about
/// one word in a hundred comes from here.
const NON_ASCII: &[&str] = &["données", "größe", "naïve", "café", "résumé", "straße"];

/// ~10 KB: headers, a plain part and an HTML part with links.
pub fn message(seed: u64, target: usize) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    let mut text = String::new();
    while text.len() < target / 2 {
        for _ in 0..12 {
            let word = if r.next().is_multiple_of(100) {
                NON_ASCII[(r.next() % NON_ASCII.len() as u64) as usize]
            } else {
                WORDS[(r.next() % WORDS.len() as u64) as usize]
            };
            text.push_str(word);
            text.push(' ');
        }
        if r.next().is_multiple_of(5) {
            text.push_str(&format!(
                "https://host{}.example.com/p/{} ",
                r.next() % 50,
                r.next() % 1000
            ));
        }
        text.push_str(&format!("{}.\r\n", r.next() % 10_000));
    }
    let html = format!(
        "<html><body><p>{}</p><a href=\"https://shop.example.com/x\">buy</a></body></html>",
        text.replace("\r\n", "<br>\r\n")
    );
    format!(
        "Received: from mx1.example.net (mx1.example.net [198.51.100.{a}]) by mx.example.org; Mon, 3 Nov 2026 10:00:00 +0000\r\n\
From: \"Example News\" <news@example.com>\r\nTo: user@example.org\r\nSubject: Weekly update {seed}\r\n\
Message-ID: <{seed}@example.com>\r\nMIME-Version: 1.0\r\nX-Mailer: Mailer 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n\
--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--b1--\r\n",
        a = seed % 250
    )
    .into_bytes()
}

/// A plain-text message in a language written without spaces, plus some
/// Latin text: exercises the segmenter path instead of the ASCII one.
pub fn cjk_message(target: usize) -> Vec<u8> {
    let mut body = String::new();
    while body.len() < target {
        body.push_str("今すぐ無料でお試しください。限定オファーは本日まで。詳しくはこちら https://example.jp/offer をご覧ください。\r\n");
        body.push_str("Special offer for you today only, click below.\r\n");
    }
    format!("From: shop@example.jp\r\nSubject: =?utf-8?B?54Sh5paZ?=\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}").into_bytes()
}
