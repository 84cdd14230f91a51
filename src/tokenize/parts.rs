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
    // The first `://`, found from the colons: a substring search set up
    // for every URL cost more than the search (hostile text is thousands
    // of short URLs).
    let scheme_end =
        memchr::memchr_iter(b':', u.as_bytes()).find(|&i| u[i + 1..].starts_with("//"));
    let rest = match scheme_end {
        Some(i) => &u[i + 3..],
        None => u,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = match memchr::memrchr(b'@', authority.as_bytes()) {
        Some(at) => {
            // `http://bank.example@evil.example/` shows one host and visits another.
            sink.push(Tag::UrlShape, "userinfo");
            &authority[at + 1..]
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
    // Most hosts are lower case already: no copy for those.
    let lowered;
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        lowered = host.to_ascii_lowercase();
        lowered.as_str()
    } else {
        host
    };
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
    if let Some(domain) = registered_domain(host)
        && domain != host
    {
        sink.push(Tag::UrlDomain, domain);
    }
}

/// `psl::domain_str(host)` for a host without a trailing dot, without
/// validating the answer as UTF-8 again (`domain_str` does, and a host of
/// non-ASCII text takes its slow path): the registered domain is a slice
/// of `host`, taken back out of it by position.
fn registered_domain(host: &str) -> Option<&str> {
    let domain = psl::domain(host.as_bytes())?.trim().as_bytes();
    let start = (domain.as_ptr() as usize).checked_sub(host.as_ptr() as usize)?;
    host.get(start..start.checked_add(domain.len())?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::Limits;
    use crate::tokenize::sink::Keep;
    use proptest::prelude::*;

    /// [`url`] as it was before it was made cheaper (session 11): the
    /// features must not change.
    fn url_reference(u: &str, sink: &mut Sink) {
        let rest = match u.find("://") {
            Some(i) => &u[i + 3..],
            None => u,
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host_port = match authority.rsplit_once('@') {
            Some((_, h)) => {
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
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() || host.len() > 253 {
            return;
        }
        if host.parse::<std::net::IpAddr>().is_ok() {
            sink.push(Tag::UrlShape, "ip-literal");
            sink.push(Tag::UrlHost, &host);
            return;
        }
        sink.push(Tag::UrlHost, &host);
        if let Some(domain) = psl::domain_str(&host)
            && domain != host
        {
            sink.push(Tag::UrlDomain, domain);
        }
    }

    fn features(u: &str, read: fn(&str, &mut Sink)) -> Vec<String> {
        let mut sink = Sink::new(&Limits::default(), Keep::AllNames);
        read(u, &mut sink);
        sink.names.all()
    }

    #[test]
    fn url_reads_hosts_domains_and_tricks() {
        for u in [
            "http://Bank.Example@203.0.113.9:8080/login",
            "https://[2001:DB8::1]/x",
            "www.Shop.CO.UK./a?b#c",
            "x://a:b://c.example",
            "http://\u{202e}elgoog.example/",
        ] {
            assert_eq!(features(u, url), features(u, url_reference), "{u}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn url_features_are_as_before(
            u in "(https?://|[a-z]{1,5}:|//|:/|)[a-zA-Z0-9.:@/?#_\\[\\]\u{202e}é-]{0,40}"
        ) {
            prop_assert_eq!(features(&u, url), features(&u, url_reference));
        }
    }
}
