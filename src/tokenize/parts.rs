//! The MIME walk: which parts are read as text, which as HTML, which are
//! attachments (described, never read), and how deep we go.

use linkify::{LinkFinder, LinkKind};
use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

use super::LimitHit;
use super::html;
use super::sink::{Sink, Tag};

/// What is left to read of a message, shared across nested parts.
pub(super) struct Budget {
    pub body_bytes: usize,
    pub parts: usize,
    /// Tag openings left for the HTML tokenizer ([`html::MAX_HTML_TAGS`]).
    pub html_tags: usize,
}

/// Walks `msg`'s part tree from its root; `depth` counts nesting of
/// multiparts and attached messages.
pub(super) fn walk(msg: &Message<'_>, budget: &mut Budget, sink: &mut Sink, depth: usize) {
    if msg.parts.is_empty() {
        return;
    }
    part(msg, 0, budget, sink, depth);
}

fn part(msg: &Message<'_>, id: usize, budget: &mut Budget, sink: &mut Sink, depth: usize) {
    if sink.full() {
        return;
    }
    if depth > sink.limits().max_mime_depth {
        sink.hit(LimitHit::MimeDepth);
        return;
    }
    if budget.parts == 0 {
        sink.hit(LimitHit::Parts);
        return;
    }
    budget.parts -= 1;
    let Some(p) = msg.parts.get(id) else { return };
    describe(p, sink);
    match &p.body {
        PartType::Text(text) => {
            text_features(text, budget, sink);
        }
        PartType::Html(html) => {
            let Some(html) = take(html, budget, sink) else {
                return;
            };
            let scan = html::scan(html, &mut budget.html_tags, sink);
            text_features(
                &scan.visible,
                &mut Budget {
                    body_bytes: usize::MAX,
                    parts: 0,
                    html_tags: 0,
                },
                sink,
            );
            sink.words(Tag::HiddenWord, &scan.hidden);
        }
        PartType::Binary(bytes) | PartType::InlineBinary(bytes) => attachment(p, bytes.len(), sink),
        PartType::Message(inner) => {
            if let Some(subject) = inner.subject() {
                sink.words(Tag::Body, subject);
            }
            walk(inner, budget, sink, depth + 1);
        }
        PartType::Multipart(children) => {
            for &child in children {
                part(msg, child as usize, budget, sink, depth + 1);
            }
        }
    }
}

/// Content type, charset and decoding trouble of every part.
fn describe(p: &MessagePart<'_>, sink: &mut Sink) {
    if let Some(ct) = p.content_type() {
        let mime = match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub),
            None => ct.ctype().to_string(),
        };
        if mime.len() <= 100 {
            sink.push(Tag::ContentType, &mime.to_ascii_lowercase());
        }
        if let Some(cs) = ct.attribute("charset")
            && cs.len() <= 40
        {
            sink.push(Tag::Charset, &cs.to_ascii_lowercase());
        }
    }
    if p.is_encoding_problem {
        sink.push(Tag::Mime, "encoding-problem");
    }
}

/// The longest prefix of `text` the body budget allows.
fn take<'t>(text: &'t str, budget: &mut Budget, sink: &mut Sink) -> Option<&'t str> {
    if budget.body_bytes == 0 {
        sink.hit(LimitHit::BodyBytes);
        return None;
    }
    let mut end = text.len().min(budget.body_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if end < text.len() {
        sink.hit(LimitHit::BodyBytes);
    }
    budget.body_bytes -= end;
    Some(&text[..end])
}

/// Words of running text, with URLs and e-mail addresses taken out first
/// (they are features of their own, and their fragments are not words).
fn text_features(text: &str, budget: &mut Budget, sink: &mut Sink) {
    let Some(text) = take(text, budget, sink) else {
        return;
    };
    let mut finder = LinkFinder::new();
    finder
        .kinds(&[LinkKind::Url, LinkKind::Email])
        .url_must_have_scheme(false);
    let mut last = 0;
    for link in finder.links(text) {
        sink.words(Tag::Body, &text[last..link.start()]);
        last = link.end();
        match link.kind() {
            LinkKind::Url => url(link.as_str(), sink),
            LinkKind::Email => {
                if let Some((_, domain)) = link.as_str().rsplit_once('@') {
                    sink.push(Tag::BodyEmailDomain, &domain.to_ascii_lowercase());
                }
            }
            _ => {}
        }
        if sink.full() {
            return;
        }
    }
    sink.words(Tag::Body, &text[last..]);
}

/// A URL's host, registered domain and shape.
pub(super) fn url(u: &str, sink: &mut Sink) {
    let rest = match u.find("://") {
        Some(i) => &u[i + 3..],
        None => u,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = match authority.rsplit_once('@') {
        Some((_, h)) => {
            // `http://bank.example@evil.example/` shows one host and visits another.
            sink.push(Tag::UrlShape, "userinfo");
            h
        }
        None => authority,
    };
    let host = if host_port.starts_with('[') {
        host_port
            .split(']')
            .next()
            .unwrap_or("")
            .trim_start_matches('[')
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    let host = host.trim_end_matches('.');
    if host.is_empty() || host.len() > 253 {
        return;
    }
    // Lowercased on the stack: a message can hold thousands of URLs.
    let mut buf = [0u8; 253];
    let lower = &mut buf[..host.len()];
    lower.copy_from_slice(host.as_bytes());
    lower.make_ascii_lowercase();
    let host = std::str::from_utf8(lower).expect("lowercased UTF-8 is UTF-8");
    // Only hex digits, `.` and `:` can spell an IP address: most hosts are
    // ruled out at their first letter past `f`, without the parser.
    if host
        .bytes()
        .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':')
        && host.parse::<std::net::IpAddr>().is_ok()
    {
        sink.push(Tag::UrlShape, "ip-literal");
        sink.push(Tag::UrlHost, host);
        return;
    }
    sink.push(Tag::UrlHost, host);
    if let Some(domain) = psl::domain_str(host)
        && domain != host
    {
        sink.push(Tag::UrlDomain, domain);
    }
}

/// An attachment by what it claims to be: extension, type and size class.
fn attachment(p: &MessagePart<'_>, size: usize, sink: &mut Sink) {
    if let Some(name) = p.attachment_name()
        && let Some((_, ext)) = name.rsplit_once('.')
        && !ext.is_empty()
        && ext.len() <= 10
    {
        sink.push(Tag::Attachment, &format!("ext:{}", ext.to_lowercase()));
    }
    let class = match size {
        0..1_024 => "<1k",
        1_024..10_240 => "<10k",
        10_240..102_400 => "<100k",
        102_400..1_048_576 => "<1m",
        _ => ">=1m",
    };
    sink.push(Tag::Attachment, &format!("size:{class}"));
}
