//! The MIME walk: which parts are read as text, which as HTML, which are
//! attachments (described, never read), and how deep we go.

use linkify::{LinkFinder, LinkKind};
use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

use super::LimitHit;
use super::html;
use super::sink::{Sink, Tag};
use super::words;

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

/// Links of a text part read before [`text_features`] starts to remember
/// each URL's features: normal mail has far fewer (and pays nothing for
/// the memo), hostile text thousands, mostly repeats.
const URL_MEMO_AFTER: usize = 256;

/// Most distinct URLs remembered per text part (a bound on the memo's
/// memory; URLs past it are read as before).
const URL_MEMO_MAX: usize = 4096;

/// Words of running text, with URLs and e-mail addresses taken out first
/// (they are features of their own, and their fragments are not words).
fn text_features(text: &str, budget: &mut Budget, sink: &mut Sink) {
    text_features_memo_after(text, budget, sink, URL_MEMO_AFTER);
}

/// [`text_features`], remembering URL features after `memo_after` links: a
/// URL seen again in the same text pushes the features it pushed the
/// first time, in the same order, without reading it again (the
/// features, the token cap's count and the names kept are the same as
/// reading it again; `the_url_memo_pushes_what_reading_the_url_again_pushes`
/// and `url_memo_gives_the_same_features_names_and_caps` pin it).
/// Hostile text of thousands of repeated domain-like words spent a third
/// of its time here (`rtl-overrides`, docs/PERFORMANCE.md).
fn text_features_memo_after(text: &str, budget: &mut Budget, sink: &mut Sink, memo_after: usize) {
    let Some(text) = take(text, budget, sink) else {
        return;
    };
    let mut links = 0usize;
    let mut memo: rustc_hash::FxHashMap<&str, UrlFeatures> = Default::default();
    let mut finder = LinkFinder::new();
    finder
        .kinds(&[LinkKind::Url, LinkKind::Email])
        .url_must_have_scheme(false);
    let mut last = 0;
    for link in finder.links(text) {
        words_and_numeric_links(&text[last..link.start()], sink);
        last = link.end();
        links += 1;
        match link.kind() {
            LinkKind::Url if links > memo_after => {
                let u = link.as_str();
                if let Some(f) = memo.get(u) {
                    f.push(sink);
                } else {
                    let f = UrlFeatures::of(u);
                    f.push(sink);
                    if memo.len() < URL_MEMO_MAX {
                        memo.insert(u, f);
                    }
                }
            }
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
    words_and_numeric_links(&text[last..], sink);
}

/// The longest host name (RFC 1035: 253 bytes), for
/// [`words_and_numeric_links`]'s look past a `://`.
const MAX_HOST_BYTES: usize = 253;

/// The words of `text`, a stretch of free text in which linkify found no
/// link, and the `http://` and `https://` links in it whose host is a
/// number a browser reads as an IPv4 address but linkify does not take
/// for a host: `http://3232235777/` and `http://192.168.257/` (both
/// 192.168.1.1, [`whatwg_ipv4`]). Why: a red-team walkthrough (session
/// 25) hid `url:ip-literal`, one of the strongest URL shapes, behind such
/// hosts; in links they were found, in plain text they were read as the
/// word `http` and a number.
fn words_and_numeric_links(text: &str, sink: &mut Sink) {
    let b = text.as_bytes();
    let (mut last, mut from) = (0, 0);
    while let Some(i) = memchr::memmem::find(&b[from..], b"://") {
        let at = from + i;
        from = at + 3;
        // The scheme: the ASCII letters just before `://` (the byte after
        // a non-letter is a letter, so a character boundary).
        let start = b[..at]
            .iter()
            .rposition(|c| !c.is_ascii_alphabetic())
            .map_or(0, |j| j + 1);
        let scheme = &text[start..at];
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            continue;
        }
        // The host, read no further than a host can be long: text of
        // thousands of `http://` with no space between (hostile, or a
        // broken part) costs each a bounded look, not a scan to the end.
        let rest = &text[from..];
        let ends_link =
            |c: u8| c.is_ascii_whitespace() || matches!(c, b'<' | b'>' | b'"' | b'\'' | b'`');
        // The authority (`user@host:port`) is read as far as a user name
        // and a host can be long together.
        let window = &rest.as_bytes()[..rest.len().min(2 * MAX_HOST_BYTES + 1)];
        let Some(host_end) = window
            .iter()
            .position(|&c| ends_link(c) || matches!(c, b'/' | b'?' | b'#' | b'\\'))
            .or((window.len() == rest.len()).then_some(rest.len()))
        else {
            continue;
        };
        // Trailing punctuation ends a sentence, not the link (as linkify).
        let trim = |s: &str| {
            s.trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']'])
                .len()
        };
        // Is its host a number? Read as every link is read ([`url_with`]:
        // past a user name, before a port, in any IPv4 form), up to the
        // authority's end.
        let mut numeric = false;
        url_with(&text[start..from + trim(&rest[..host_end])], |feature| {
            numeric |= matches!(feature, UrlFeature::IpLiteral(_));
        });
        if !numeric {
            continue;
        }
        // A link to a number: to its end (once per link, as `from` moves
        // past it).
        let end = rest.as_bytes()[host_end..]
            .iter()
            .position(|&c| ends_link(c))
            .map_or(rest.len(), |i| host_end + i);
        let end = trim(&rest[..end]);
        sink.words(Tag::Body, &text[last..start]);
        url(&text[start..from + end], sink);
        (last, from) = (from + end, from + end);
        if sink.full() {
            return;
        }
    }
    sink.words(Tag::Body, &text[last..]);
}

/// What [`url`] pushes for one URL, kept for [`text_features`]'s memo.
struct UrlFeatures {
    userinfo: bool,
    /// The lower-cased host, unless the URL has none [`url`] reads.
    host: Option<Box<str>>,
    ip_literal: bool,
    /// The registered domain's place in `host`, when it is not the host.
    domain: Option<std::ops::Range<usize>>,
    /// The host mixes scripts in a label ([`MIXED_SCRIPT_HOST`]).
    mixed_script: bool,
}

impl UrlFeatures {
    /// [`url`]'s reading of `u`, kept.
    fn of(u: &str) -> Self {
        let mut f = UrlFeatures {
            userinfo: false,
            host: None,
            ip_literal: false,
            domain: None,
            mixed_script: false,
        };
        url_with(u, |feature| match feature {
            UrlFeature::Userinfo => f.userinfo = true,
            UrlFeature::IpLiteral(host) => {
                f.ip_literal = true;
                f.host = Some(host.as_ref().into());
            }
            UrlFeature::Host(host, domain) => {
                f.mixed_script = words::host_mixes_scripts(host);
                f.host = Some(host.into());
                f.domain = domain.map(|d| {
                    let start = d.as_ptr() as usize - host.as_ptr() as usize;
                    start..start + d.len()
                });
            }
        });
        f
    }

    /// Pushes what [`url`] pushed, in the same order.
    fn push(&self, sink: &mut Sink) {
        if self.userinfo {
            sink.push(Tag::UrlShape, "userinfo");
        }
        let Some(host) = &self.host else {
            return;
        };
        if self.ip_literal {
            sink.push(Tag::UrlShape, "ip-literal");
            sink.push(Tag::UrlHost, host);
            return;
        }
        sink.push(Tag::UrlHost, host);
        if let Some(d) = &self.domain {
            sink.push(Tag::UrlDomain, &host[d.clone()]);
        }
        if self.mixed_script {
            sink.push(Tag::UrlShape, MIXED_SCRIPT_HOST);
        }
    }
}

/// One reading of a URL ([`url_with`]), in the order they are found.
enum UrlFeature<'h> {
    /// `user@` before the host.
    Userinfo,
    /// The host is an IP address (an IPv4 address in any of the forms a
    /// browser reads, as a dotted quad).
    IpLiteral(std::borrow::Cow<'h, str>),
    /// The host, and its registered domain when that is not the host.
    Host(&'h str, Option<&'h str>),
}

/// A URL's host, registered domain and shape.
pub(super) fn url(u: &str, sink: &mut Sink) {
    url_with(u, |feature| match feature {
        UrlFeature::Userinfo => {
            sink.push(Tag::UrlShape, "userinfo");
        }
        UrlFeature::IpLiteral(host) => {
            sink.push(Tag::UrlShape, "ip-literal");
            sink.push(Tag::UrlHost, &host);
        }
        UrlFeature::Host(host, domain) => {
            sink.push(Tag::UrlHost, host);
            if let Some(domain) = domain {
                sink.push(Tag::UrlDomain, domain);
            }
            if words::host_mixes_scripts(host) {
                sink.push(Tag::UrlShape, MIXED_SCRIPT_HOST);
            }
        }
    });
}

/// The [`Tag::UrlShape`] of a link whose host mixes scripts in a label
/// (`words::host_mixes_scripts`): a look-alike of a known host.
const MIXED_SCRIPT_HOST: &str = "mixed-script-host";

/// `u` past its scheme, when it has no `://` but an http(s) scheme: a
/// browser reads `http:/\\evil.example/` and `http:evil.example` as
/// `http://evil.example/`.
fn past_odd_slashes(u: &str) -> Option<&str> {
    let colon = memchr::memchr(b':', u.as_bytes())?;
    let scheme = &u[..colon];
    let special = ["http", "https"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme));
    let rest = &u[colon + 1..];
    special.then_some(rest)
}

/// `host` as the WHATWG URL standard's IPv4 parser reads it, when its
/// last label is a number: one to four parts, each decimal, `0x` hex or
/// `0` octal, the last filling the bytes left (`3232235777`,
/// `0xC0A80101`, `0300.0250.1.1` and `192.168.257` are all 192.168.1.1
/// in a browser). `None` for anything else, a dotted quad included (the
/// standard parser reads those).
///
/// Why: a red-team walkthrough (session 25) linked to such hosts, and
/// `url:ip-literal`, one of the strongest URL shapes, was not found.
fn whatwg_ipv4(host: &str) -> Option<std::net::Ipv4Addr> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let number = |p: &str| -> Option<u64> {
        if p.is_empty() {
            return None;
        }
        if let Some(hex) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
            return if hex.is_empty() {
                Some(0)
            } else {
                u64::from_str_radix(hex, 16).ok()
            };
        }
        if p.len() > 1 && p.starts_with('0') {
            return u64::from_str_radix(&p[1..], 8).ok();
        }
        p.parse().ok()
    };
    let numbers: Vec<u64> = parts.iter().map(|p| number(p)).collect::<Option<_>>()?;
    let (last, init) = numbers.split_last()?;
    if init.iter().any(|&n| n > 255) || *last >= 256u64.pow(5 - numbers.len() as u32) {
        return None;
    }
    let mut ip = *last;
    for (i, &n) in init.iter().enumerate() {
        ip += n << (8 * (3 - i));
    }
    Some(std::net::Ipv4Addr::from(u32::try_from(ip).ok()?))
}

/// Reads `u` and hands each [`UrlFeature`] to `found`.
fn url_with(u: &str, mut found: impl FnMut(UrlFeature<'_>)) {
    // The first `://`, found from the colons: a substring search set up
    // for every URL cost more than the search (hostile text is thousands
    // of short URLs).
    let scheme_end =
        memchr::memchr_iter(b':', u.as_bytes()).find(|&i| u[i + 1..].starts_with("//"));
    // Past the scheme, a browser reads any run of `/` and `\` as `//`, and
    // a `\` as `/` (WHATWG URL): `http:/\\evil.example/` and
    // `http://evil.example\\@bank.example/` go to evil.example.
    let rest = match scheme_end
        .map(|i| &u[i + 3..])
        .or_else(|| past_odd_slashes(u))
    {
        Some(rest) => rest.trim_start_matches(['/', '\\']),
        None => u,
    };
    // Byte searches for the ASCII delimiters (a UTF-8 continuation byte is
    // never ASCII): splitting by `char` decoded every character of the
    // host, and hostile text is thousands of short non-ASCII hosts.
    let end = memchr::memchr3(b'/', b'?', b'#', rest.as_bytes()).unwrap_or(rest.len());
    let end = memchr::memchr(b'\\', &rest.as_bytes()[..end]).unwrap_or(end);
    let authority = &rest[..end];
    let host_port = match memchr::memrchr(b'@', authority.as_bytes()) {
        Some(at) => {
            // `http://bank.example@evil.example/` shows one host and visits another.
            found(UrlFeature::Userinfo);
            &authority[at + 1..]
        }
        None => authority,
    };
    let host = if host_port.starts_with('[') {
        host_port[..memchr::memchr(b']', host_port.as_bytes()).unwrap_or(host_port.len())]
            .trim_start_matches('[')
    } else {
        &host_port[..memchr::memchr(b':', host_port.as_bytes()).unwrap_or(host_port.len())]
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
    // Only hex digits, `x`, `.` and `:` can spell an IP address: most
    // hosts are ruled out at their first letter past `f` (but `x`),
    // without the parser.
    if host
        .bytes()
        .all(|b| b.is_ascii_hexdigit() || matches!(b, b'.' | b':' | b'x'))
    {
        if host.parse::<std::net::IpAddr>().is_ok() {
            found(UrlFeature::IpLiteral(host.into()));
            return;
        }
        if let Some(ip) = whatwg_ipv4(host) {
            found(UrlFeature::IpLiteral(ip.to_string().into()));
            return;
        }
    }
    let domain = registered_domain(host).filter(|&d| d != host);
    found(UrlFeature::Host(host, domain));
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
    use crate::tokenize::sink::Keep;
    use crate::tokenize::{Limits, Tokens};
    use proptest::prelude::*;

    /// [`url`] as it was before it was made cheaper (session 11): the
    /// features must not change.
    fn url_reference(u: &str, sink: &mut Sink) {
        let rest = match u.find("://") {
            Some(i) => u[i + 3..].trim_start_matches(['/', '\\']),
            None => match u.split_once(':') {
                Some((scheme, rest))
                    if ["http", "https"].contains(&scheme.to_ascii_lowercase().as_str()) =>
                {
                    rest.trim_start_matches(['/', '\\'])
                }
                _ => u,
            },
        };
        let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or("");
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
        if let Some(ip) = whatwg_ipv4(&host) {
            sink.push(Tag::UrlShape, "ip-literal");
            sink.push(Tag::UrlHost, &ip.to_string());
            return;
        }
        sink.push(Tag::UrlHost, &host);
        if let Some(domain) = psl::domain_str(&host)
            && domain != host
        {
            sink.push(Tag::UrlDomain, domain);
        }
        if words::host_mixes_scripts(&host) {
            sink.push(Tag::UrlShape, MIXED_SCRIPT_HOST);
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

    /// Every feature `text` gives, in order (names kept for each), with
    /// the URL memo from its first link or never, under a token cap of
    /// `max_tokens`.
    fn text_read(text: &str, memo_after: usize, max_tokens: usize) -> (Vec<String>, Tokens) {
        let limits = Limits {
            max_tokens,
            ..Limits::default()
        };
        let mut sink = Sink::new(&limits, Keep::AllNames);
        let mut budget = Budget {
            body_bytes: usize::MAX,
            parts: 0,
            html_tags: 0,
        };
        text_features_memo_after(text, &mut budget, &mut sink, memo_after);
        (sink.names.all(), sink.finish())
    }

    #[test]
    fn the_url_memo_pushes_what_reading_the_url_again_pushes() {
        let urls = [
            "http://Bank.Example@203.0.113.9:8080/login",
            "https://[2001:DB8::1]/x",
            "www.Shop.CO.UK./a?b#c",
            "answer\u{2069}exe.fdp",
            "mail.example.org",
            "user@example.net",
            "http://a.b.example.com:80/p",
        ];
        let mut text = String::new();
        for i in 0..700 {
            text.push_str(urls[i * 7 % urls.len()]);
            text.push_str(if i % 5 == 0 { " word\n" } else { " " });
        }
        for cap in [usize::MAX, 900] {
            let (names, tokens) = text_read(&text, 0, cap);
            assert!(names.len() > 700, "{}", names.len());
            assert_eq!(
                (names, tokens),
                text_read(&text, usize::MAX, cap),
                "cap {cap}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn url_memo_gives_the_same_features_names_and_caps(
            urls in prop::collection::vec(
                "(https?://|)[a-zA-Z0-9.:@/_\u{202e}é-]{1,20}\\.[a-z]{2,4}", 1..12),
            picks in prop::collection::vec(0usize..12, 1..400),
            cap in 20usize..2000,
        ) {
            let text: Vec<&str> = picks.iter().map(|&i| urls[i % urls.len()].as_str()).collect();
            let text = text.join(" x ");
            prop_assert_eq!(text_read(&text, 0, cap), text_read(&text, usize::MAX, cap));
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
