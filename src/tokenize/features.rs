//! Feature extraction: which parts of a message become which tagged tokens.
//!
//! MIME is parsed by `mail-parser` (maintained by the Stalwart project, built
//! for hostile input) — base64, quoted-printable, RFC 2047 words, declared
//! charsets and HTML-to-text are its job, not ours.

use std::net::Ipv4Addr;

use mail_parser::{Address, MessageParser, MimeHeaders};

use super::{LimitHit, Limits, TokenId, Tokens, words};

/// Where in the message a feature came from. The tag is part of the hash, so
/// the same word in two places is two pieces of evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// A word of decoded body text.
    Body,
    /// A word of the Subject.
    Subject,
    /// The From address, its domain and display-name words.
    FromAddr,
    FromDomain,
    FromName,
    ReplyToAddr,
    ReturnPathAddr,
    /// The domain part of the Message-ID (`<x@host>`): bulk mailers leave marks.
    MessageIdDomain,
    /// Words of X-Mailer / User-Agent.
    Mailer,
    /// The MIME type of every part.
    ContentType,
    /// The name of each header present.
    HeaderName,
    /// IPv4 addresses in Received headers, and their /24.
    ReceivedIp,
    ReceivedNet,
    /// Hosts of URLs in the bodies.
    UrlHost,
    /// A word too long to be evidence verbatim, kept as its shape.
    LongWord,
}

impl Tag {
    pub fn as_str(self) -> &'static str {
        match self {
            Tag::Body => "body",
            Tag::Subject => "subject",
            Tag::FromAddr => "from",
            Tag::FromDomain => "from.domain",
            Tag::FromName => "from.name",
            Tag::ReplyToAddr => "reply-to",
            Tag::ReturnPathAddr => "return-path",
            Tag::MessageIdDomain => "message-id.domain",
            Tag::Mailer => "mailer",
            Tag::ContentType => "content-type",
            Tag::HeaderName => "header",
            Tag::ReceivedIp => "received.ip",
            Tag::ReceivedNet => "received.net24",
            Tag::UrlHost => "url.host",
            Tag::LongWord => "long",
        }
    }
}

/// Collects hashed features up to the token cap.
pub(super) struct Sink {
    ids: Vec<TokenId>,
    max_tokens: usize,
    max_word_bytes: usize,
    limits_hit: Vec<LimitHit>,
    /// Readable `tag:text` features, only when explaining.
    pub(super) text: Vec<String>,
    keep_text: bool,
    word_buf: String,
}

impl Sink {
    pub(super) fn new(limits: &Limits, keep_text: bool) -> Self {
        Self {
            ids: Vec::with_capacity(512),
            max_tokens: limits.max_tokens,
            max_word_bytes: limits.max_word_bytes,
            limits_hit: Vec::new(),
            text: Vec::new(),
            keep_text,
            word_buf: String::new(),
        }
    }

    fn full(&self) -> bool {
        self.ids.len() >= self.max_tokens
    }

    fn hit(&mut self, limit: LimitHit) {
        if !self.limits_hit.contains(&limit) {
            self.limits_hit.push(limit);
        }
    }

    /// Adds one feature; returns false once the token cap is reached.
    fn push(&mut self, tag: Tag, text: &str) -> bool {
        if self.full() {
            self.hit(LimitHit::Tokens);
            return false;
        }
        self.ids.push(TokenId::of(tag, text));
        if self.keep_text {
            self.text.push(format!("{}:{}", tag.as_str(), text));
        }
        true
    }

    /// Adds each word of free text, long words as shapes.
    fn words(&mut self, tag: Tag, text: &str) -> bool {
        let mut buf = std::mem::take(&mut self.word_buf);
        let mut more = true;
        words::for_each_word(text, &mut buf, |w| {
            more = self.word(tag, w);
            more
        });
        self.word_buf = buf;
        more
    }

    fn word(&mut self, tag: Tag, w: &str) -> bool {
        // Single ASCII letters and digits are noise; a single CJK ideograph is
        // a word and is kept.
        if w.len() == 1 {
            return true;
        }
        if w.len() > self.max_word_bytes {
            let first = w.chars().next().unwrap_or('?');
            let shape = format!("{}:{}:{}", tag.as_str(), first, w.len() / 10 * 10);
            return self.push(Tag::LongWord, &shape);
        }
        self.push(tag, w)
    }

    pub(super) fn finish(mut self) -> Tokens {
        self.ids.sort_unstable();
        self.ids.dedup();
        Tokens {
            ids: self.ids,
            limits_hit: self.limits_hit,
        }
    }
}

/// Reads `raw` into `sink`, headers first (they are the most telling and the
/// cheapest), then bodies, stopping at whichever cap is reached first.
pub(super) fn extract(raw: &[u8], limits: &Limits, sink: &mut Sink) {
    let Some(msg) = MessageParser::default().parse(raw) else {
        // Not a message at all (or empty): still give it a reading, so garbage
        // gets a score rather than an error.
        sink.hit(LimitHit::Unparsable);
        let text = String::from_utf8_lossy(&raw[..raw.len().min(limits.max_body_bytes)]);
        sink.words(Tag::Body, &text);
        return;
    };

    headers(&msg, limits, sink);

    let mut budget = limits.max_body_bytes;
    for part in msg.parts.iter() {
        if let Some(ct) = part.content_type() {
            let mime = match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub),
                None => ct.ctype().to_string(),
            };
            sink.push(Tag::ContentType, &mime.to_ascii_lowercase());
        }
    }
    for i in 0..msg.text_body_count() {
        let Some(text) = msg.body_text(i) else {
            continue;
        };
        if !body_text(&text, &mut budget, sink) {
            return;
        }
    }
    // Links live in HTML attributes, which the HTML-to-text view drops.
    for i in 0..msg.html_body_count() {
        let Some(html) = msg.body_html(i) else {
            continue;
        };
        let html = clip(&html, budget);
        url_hosts(html, sink);
    }
}

/// Body words and URL hosts within the remaining body budget.
fn body_text(text: &str, budget: &mut usize, sink: &mut Sink) -> bool {
    if *budget == 0 {
        sink.hit(LimitHit::BodyBytes);
        return false;
    }
    let text = clip(text, *budget);
    *budget -= text.len();
    url_hosts(text, sink);
    sink.words(Tag::Body, text)
}

fn headers(msg: &mail_parser::Message<'_>, limits: &Limits, sink: &mut Sink) {
    let mut budget = limits.max_header_bytes;
    for (name, value) in msg.headers_raw() {
        if budget < name.len() + value.len() {
            sink.hit(LimitHit::HeaderBytes);
            break;
        }
        budget -= name.len() + value.len();
        sink.push(Tag::HeaderName, &name.to_ascii_lowercase());
        if name.eq_ignore_ascii_case("received") {
            received_ips(value, sink);
        } else if name.eq_ignore_ascii_case("x-mailer") || name.eq_ignore_ascii_case("user-agent") {
            sink.words(Tag::Mailer, value);
        }
    }
    if let Some(subject) = msg.subject() {
        sink.words(Tag::Subject, clip(subject, limits.max_header_bytes));
    }
    if let Some(from) = msg.from() {
        address(from, Tag::FromAddr, sink);
    }
    if let Some(reply_to) = msg.reply_to() {
        address(reply_to, Tag::ReplyToAddr, sink);
    }
    if let Some(rp) = msg.return_address() {
        sink.push(Tag::ReturnPathAddr, &rp.to_lowercase());
    }
    if let Some(id) = msg.message_id()
        && let Some((_, domain)) = id.rsplit_once('@')
    {
        sink.push(Tag::MessageIdDomain, &domain.to_lowercase());
    }
}

/// The first address of a From/Reply-To header: address, domain, name words.
fn address(addr: &Address<'_>, tag: Tag, sink: &mut Sink) {
    let Some(first) = addr.first() else { return };
    if let Some(a) = first.address() {
        let a = a.to_lowercase();
        sink.push(tag, &a);
        if tag == Tag::FromAddr
            && let Some((_, domain)) = a.rsplit_once('@')
        {
            sink.push(Tag::FromDomain, domain);
        }
    }
    if tag == Tag::FromAddr
        && let Some(name) = first.name()
    {
        sink.words(Tag::FromName, name);
    }
}

/// Dotted-quad IPv4 addresses anywhere in a Received header, and their /24.
fn received_ips(value: &str, sink: &mut Sink) {
    for candidate in value.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
        if candidate.len() < 7 {
            continue;
        }
        if let Ok(ip) = candidate.parse::<Ipv4Addr>() {
            let [a, b, c, _] = ip.octets();
            sink.push(Tag::ReceivedIp, candidate);
            sink.push(Tag::ReceivedNet, &format!("{a}.{b}.{c}"));
        }
    }
}

/// Hosts of `http(s)://` URLs, lowercased.
fn url_hosts(text: &str, sink: &mut Sink) {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(pos) = find_ascii_ci(&bytes[from..], b"http") {
        let start = from + pos + 4;
        from = start;
        let rest = &bytes[start..];
        let skip = if rest.starts_with(b"://") {
            3
        } else if rest.len() >= 4
            && rest[0].eq_ignore_ascii_case(&b's')
            && rest[1..].starts_with(b"://")
        {
            4
        } else {
            continue;
        };
        let host_start = start + skip;
        let host_len = bytes[host_start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'.' || **b == b'-')
            .count();
        if host_len > 0 {
            let host = text[host_start..host_start + host_len]
                .trim_end_matches('.')
                .to_ascii_lowercase();
            if !sink.push(Tag::UrlHost, &host) {
                return;
            }
        }
        from = host_start + host_len;
    }
}

fn find_ascii_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// The longest prefix of `s` within `max` bytes, cut at a char boundary.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
