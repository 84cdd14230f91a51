//! Header features: who sent it, how it travelled, how it authenticated.

use std::net::{IpAddr, Ipv6Addr};

use mail_parser::{Address, Message};

use super::LimitHit;
use super::sink::{Sink, Tag};
use super::words;
use crate::mail::auth::Authentication;

/// Features of one message's header block.
pub(super) fn headers(msg: &Message<'_>, sink: &mut Sink) {
    let mut budget = sink.limits().max_header_bytes;
    let extras = sink.limits().header_extras;
    let mut cut = false;
    for (name, value) in msg.headers_raw() {
        let cost = name.len() + value.len();
        if cost > budget {
            // One huge header (a 5 MB line) must not stop the others from
            // being read: skip it, note the cap, go on with what fits.
            cut = true;
            continue;
        }
        budget -= cost;
        if OWN_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            // What chaff suggests the pipeline add (`policy::Decision::
            // headers`): not evidence. Users rescue flagged mail from the
            // spam folder, so the flag would be learned as ham, and a
            // spammer who writes it would ride that.
            continue;
        }
        push_lowercase(sink, Tag::HeaderName, name);
        if name.eq_ignore_ascii_case("received") {
            received_ips(value, sink);
            if extras {
                received_hosts(value, sink);
            }
        } else if name.eq_ignore_ascii_case("x-mailer") || name.eq_ignore_ascii_case("user-agent") {
            sink.words(Tag::Mailer, value);
        } else if extras && name.eq_ignore_ascii_case("date") {
            date(value, sink);
        } else if extras && LIST_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            list_header(name, value, sink);
        }
    }
    if cut {
        sink.hit(LimitHit::HeaderBytes);
    }
    let max = sink.limits().max_header_bytes;
    if let Some(subject) = msg.subject()
        && subject.len() <= max
    {
        sink.words(Tag::Subject, subject);
    }
    if let Some(from) = msg.from() {
        address(
            from,
            Tag::FromAddr,
            Some(Tag::FromDomain),
            Some(Tag::FromName),
            sink,
        );
    }
    if let Some(reply_to) = msg.reply_to() {
        address(
            reply_to,
            Tag::ReplyToAddr,
            Some(Tag::ReplyToDomain),
            None,
            sink,
        );
    }
    if let Some(rp) = msg.return_address()
        && rp.len() <= 320
    {
        sink.push(Tag::ReturnPathAddr, &rp.to_lowercase());
    }
    if let Some(id) = msg.message_id()
        && let Some((_, domain)) = id.rsplit_once('@')
        && domain.len() <= 255
    {
        sink.push(Tag::MessageIdDomain, &domain.to_lowercase());
    }
    auth(msg, sink);
}

/// The headers chaff's own verdict writes (`policy::Decision::headers`),
/// which the tokenizer never reads.
const OWN_HEADERS: [&str; 3] = ["x-spam-flag", "x-spam-status", "x-spam-score"];

/// SPF, DKIM and DMARC results as evidence, from every instance of the
/// headers (`Authentication::from_headers`; policy trusts only the
/// border's, `Authentication::from_border`).
fn auth(msg: &Message<'_>, sink: &mut Sink) {
    let a = Authentication::from_headers(
        msg.headers_raw()
            .filter(|(n, v)| n.len() + v.len() <= 16 * 1024),
    );
    if let Some(spf) = &a.spf {
        sink.push(Tag::Auth, &format!("spf:{}", spf.result.as_str()));
    }
    for dkim in &a.dkim {
        sink.push(Tag::Auth, &format!("dkim:{}", dkim.result.as_str()));
        // A valid signature from the From domain is what DMARC alignment
        // means; a valid signature by someone else is much weaker evidence.
        let from_domain = msg
            .from()
            .and_then(|f| f.first())
            .and_then(|a| a.address())
            .and_then(|a| a.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase());
        if dkim.domain.is_some() && dkim.domain == from_domain {
            sink.push(Tag::Auth, &format!("dkim-aligned:{}", dkim.result.as_str()));
        }
    }
    if let Some(dmarc) = &a.dmarc {
        sink.push(Tag::Auth, &format!("dmarc:{}", dmarc.result.as_str()));
    }
    if a.spf.is_none() && a.dkim.is_empty() && a.dmarc.is_none() {
        sink.push(Tag::Auth, "none-recorded");
    }
    if let Some(ip) = a.client_ip {
        ip_tokens(ip, sink);
    }
}

/// The first address of a header: address, domain, display-name words.
fn address(
    addr: &Address<'_>,
    tag: Tag,
    domain_tag: Option<Tag>,
    name_tag: Option<Tag>,
    sink: &mut Sink,
) {
    let Some(first) = addr.first() else { return };
    if let Some(a) = first.address()
        && a.len() <= 320
    {
        let a = a.to_lowercase();
        sink.push(tag, &a);
        if let (Some(dt), Some((_, domain))) = (domain_tag, a.rsplit_once('@')) {
            sink.push(dt, domain);
            // `service@pаypal.com` with a Cyrillic `а`: not folded (it would
            // carry the real domain's evidence), marked.
            if words::host_mixes_scripts(domain) {
                sink.push(Tag::AddrShape, "mixed-script-domain");
            }
        }
    }
    if let (Some(nt), Some(name)) = (name_tag, first.name())
        && name.len() <= 1024
    {
        sink.words(nt, name);
    }
}

/// IP addresses anywhere in a Received header (`[192.0.2.1]`,
/// `[IPv6:2001:db8::1]`, bare), each with its network.
fn received_ips(value: &str, sink: &mut Sink) {
    // `[IPv6:…]` literals: drop the tag, or its "6:" would join the address.
    // Most Received headers have none: no copy for those.
    let replaced;
    let value = if value.contains("IPv6:") || value.contains("ipv6:") {
        replaced = value.replace("IPv6:", " ").replace("ipv6:", " ");
        replaced.as_str()
    } else {
        value
    };
    for candidate in value.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':')) {
        if candidate.len() < 3 || !candidate.contains(['.', ':']) {
            continue;
        }
        if let Ok(ip) = candidate.parse::<IpAddr>() {
            ip_tokens(ip, sink);
        }
    }
}

/// [`Sink::push`] of `text` in ASCII lower case, without allocating when
/// it is short (a header name): one per header field, and a message may
/// have thousands of fields.
fn push_lowercase(sink: &mut Sink, tag: Tag, text: &str) {
    let mut buf = [0u8; 64];
    match buf.get_mut(..text.len()) {
        Some(b) => {
            b.copy_from_slice(text.as_bytes());
            b.make_ascii_lowercase();
            // ASCII case changes keep UTF-8 valid.
            let lower = std::str::from_utf8(b).expect("lowercased UTF-8 is UTF-8");
            sink.push(tag, lower);
        }
        None => {
            sink.push(tag, &text.to_ascii_lowercase());
        }
    }
}

/// An address and its network (/24, or /64 for IPv6): neighbours in a
/// spammer's range share reputation.
fn ip_tokens(ip: IpAddr, sink: &mut Sink) {
    sink.push(Tag::ReceivedIp, &ip.to_string());
    let net = match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    };
    sink.push(Tag::ReceivedNet, &net);
}

/// Headers that say which list or bulk sender relayed a message; their
/// values are evidence (`Tag::ListHeader`).
const LIST_HEADERS: [&str; 9] = [
    "list-id",
    "list-post",
    "precedence",
    "x-mailing-list",
    "mailing-list",
    "sender",
    "x-beenthere",
    "x-loop",
    "list-unsubscribe",
];

/// `name=value` of a list header, lower-cased, white space collapsed.
fn list_header(name: &str, value: &str, sink: &mut Sink) {
    let value = value.trim();
    if value.is_empty() || value.len() > 200 {
        return;
    }
    let mut text = name.to_ascii_lowercase();
    text.push('=');
    for (i, w) in value.split_whitespace().enumerate() {
        if i > 0 {
            text.push(' ');
        }
        text.push_str(&w.to_lowercase());
    }
    sink.push(Tag::ListHeader, &text);
}

/// Host names in a Received header (words with a dot and a letter that
/// are not addresses), each with its last two labels.
fn received_hosts(value: &str, sink: &mut Sink) {
    let mut seen = 0;
    for word in value.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-')) {
        let host = word.trim_matches(|c| c == '.' || c == '-');
        if host.len() < 4
            || host.len() > 100
            || !host.contains('.')
            || !host.bytes().any(|b| b.is_ascii_alphabetic())
            || host.parse::<IpAddr>().is_ok()
        {
            continue;
        }
        // A name whose last label is not letters is a version or an id
        // (`8.9.3`, `y.3b.4d35cf5`), not a host.
        let last = host.rsplit('.').next().unwrap_or("");
        if last.len() < 2 || !last.bytes().all(|b| b.is_ascii_alphabetic()) {
            continue;
        }
        let host = host.to_ascii_lowercase();
        sink.push(Tag::ReceivedHost, &host);
        let mut labels = host.rsplitn(3, '.');
        if let (Some(tld), Some(name)) = (labels.next(), labels.next()) {
            sink.push(Tag::ReceivedDomain, &format!("{name}.{tld}"));
        }
        seen += 1;
        if seen == 8 {
            break;
        }
    }
}

/// The Date header's shape (ASCII digits as `9`, letters kept, white
/// space collapsed) and its zone (the token after the time).
fn date(value: &str, sink: &mut Sink) {
    let value = value.trim();
    if value.is_empty() || value.len() > 100 {
        return;
    }
    let mut shape = String::with_capacity(value.len());
    for w in value.split_whitespace() {
        if !shape.is_empty() {
            shape.push(' ');
        }
        shape.extend(w.chars().map(|c| if c.is_ascii_digit() { '9' } else { c }));
    }
    sink.push(Tag::Date, &shape);
    let mut words = value.split_whitespace();
    if words
        .any(|w| w.matches(':').count() >= 1 && w.bytes().all(|b| b.is_ascii_digit() || b == b':'))
        && let Some(zone) = words.next()
    {
        sink.push(Tag::Date, &format!("zone:{zone}"));
    }
}
