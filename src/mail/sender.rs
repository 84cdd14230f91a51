//! Who a message says it is from, and how to unsubscribe from it: the
//! RFC 5322 From address (what the reader sees and what DMARC aligns to) and
//! the RFC 2369 `List-Unsubscribe` target, with RFC 8058 one-click.

use std::fmt;

use mail_parser::Message;

use super::auth::{Authentication, Border};

/// A lowercase `local@domain` mail address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    text: String,
    at: usize,
}

impl Address {
    /// Accepts `local@domain` (optionally in angle brackets); `None` for
    /// anything else. Lowercased whole: local parts are case-insensitive at
    /// every provider that matters, and lists must match either way.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .trim();
        let (local, domain) = s.rsplit_once('@')?;
        let domain = domain.trim_end_matches('.');
        let ok = !local.is_empty()
            && local.len() <= 64
            && domain.contains('.')
            && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            return None;
        }
        // An internationalized domain (SMTPUTF8 mail) in its ASCII form,
        // as list entries are stored (`policy::lists`) and most headers
        // carry it, so `bücher.example` and `xn--bcher-kva.example` are
        // one domain. Its length is the ASCII form's.
        let domain = super::ascii_domain(domain).unwrap_or_else(|_| domain.to_lowercase());
        (domain.len() <= 253).then(|| Address {
            text: format!("{}@{}", local.to_ascii_lowercase(), domain),
            at: local.len(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn domain(&self) -> &str {
        &self.text[self.at + 1..]
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Where the caller can unsubscribe the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    /// The preferred target: the first `https:` URI, else the first
    /// `mailto:` (RFC 2369 lists them in the sender's order of preference,
    /// but a web link is the one a webmail can follow for the user).
    pub target: String,
    /// RFC 8058: `List-Unsubscribe-Post: List-Unsubscribe=One-Click` is
    /// present and the target is https, so a POST unsubscribes with no
    /// further page.
    pub one_click: bool,
}

/// What the header block says about the sender, for delivery policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderFacts {
    /// The first From address (of the first From header).
    pub from: Option<Address>,
    /// Any further From addresses (RFC 5322 allows a list; a second From
    /// header is malformed but seen), every one that reads as an address:
    /// policy blocks on any of them.
    pub other_from: Vec<Address>,
    /// How many addresses the From headers hold, read as addresses or not:
    /// a sender allow entry, or a trusted sender, needs exactly one
    /// ([`HeaderFacts::single_from`]).
    pub from_count: usize,
    pub subject: Option<String>,
    pub unsubscribe: Option<Unsubscribe>,
    pub auth: Authentication,
}

impl HeaderFacts {
    /// Whether the message names exactly one From address (and it reads
    /// as one): what a sender allow entry and a trusted sender need, since
    /// with several an entry for one would pass the others.
    pub fn single_from(&self) -> bool {
        self.from.is_some() && self.from_count == 1
    }

    /// Reads the header block only (no MIME body parse): policy needs a
    /// few headers, and this runs for every scored message. A header block
    /// within `max_header_bytes` (all real mail) is parsed as it is. A
    /// longer one is not cut at the cap, which would hide a From (or the
    /// border's results) placed after 256 KiB of filler fields from the
    /// block list: its lines are scanned to its end (the message is already
    /// within `--max-message-bytes`) for the fields policy reads
    /// ([`POLICY_FIELDS`]), and only those are parsed. Header fields over
    /// 16 KiB are ignored for authentication, as the tokenizer does, so
    /// hostile headers cost little.
    pub fn from_message(raw: &[u8], max_header_bytes: usize, border: &Border) -> Self {
        let parser = crate::tokenize::message_parser();
        if raw.len() > max_header_bytes && walk_header(raw, max_header_bytes, |_, _| {}).is_none() {
            let mut fields = Vec::new();
            walk_header(raw, usize::MAX, |name, field| {
                if POLICY_FIELDS.iter().any(|f| f.as_bytes() == name) {
                    fields.extend_from_slice(field);
                    if !field.ends_with(b"\n") {
                        fields.extend_from_slice(b"\r\n");
                    }
                }
            });
            fields.extend_from_slice(b"\r\n");
            return match parser.parse_headers(&fields) {
                Some(headers) => Self::from_headers(&headers, border),
                None => Self::default(),
            };
        }
        let raw = &raw[..raw.len().min(max_header_bytes)];
        // The tokenizer's parser: only the fields read as structures (From,
        // Subject here) are parsed, the rest kept raw — mail-parser's default
        // parses every Received header into a structure nobody reads, which
        // was the largest mail-parser cost of a corpus replay. Raw header
        // boundaries are the default parser's (tokenize::message_parser).
        match parser.parse_headers(raw) {
            Some(headers) => Self::from_headers(&headers, border),
            None => Self::default(),
        }
    }

    /// [`HeaderFacts::from_message`], from the tokenizer's parse of the same
    /// bytes when it has one (`Tokenizer::tokenize_with`): the same facts
    /// without parsing the header block again. Falls back to reading `raw`
    /// when there is no parse, or when the header block is longer than
    /// `max_header_bytes` (which `from_message` would cut).
    pub fn read(
        raw: &[u8],
        parsed: Option<&Message<'_>>,
        max_header_bytes: usize,
        border: &Border,
    ) -> Self {
        match parsed {
            Some(m) if m.root_part().offset_body as usize <= max_header_bytes => {
                Self::from_headers(m, border)
            }
            _ => Self::from_message(raw, max_header_bytes, border),
        }
    }

    /// The facts in a parsed header block (the root part's headers);
    /// authentication as `border` wrote it ([`Authentication::from_border`]).
    fn from_headers(headers: &Message<'_>, border: &Border) -> Self {
        let auth = Authentication::from_border(headers.headers_raw(), 16 * 1024, border);
        let subject = headers.subject().map(str::to_string);
        let (mut from, mut other_from, mut from_count) = read_from(headers);
        // RFC 5322 allows comments inside an address (`jane.smith(c)@…`),
        // which the parser does not read as one: when a From has a comment
        // and an address went unread, the From fields are read again
        // without their comments (rare: no cost for the usual From).
        let from_fields = || {
            headers
                .headers_raw()
                .filter(|(n, _)| n.eq_ignore_ascii_case("from"))
        };
        if other_from.len() + usize::from(from.is_some()) < from_count
            && from_fields().any(|(_, v)| v.contains('('))
        {
            let mut block = Vec::new();
            for (_, v) in from_fields() {
                block.extend_from_slice(b"From:");
                block.extend_from_slice(super::lex::without_comments(v.trim_end()).as_bytes());
                block.extend_from_slice(b"\r\n");
            }
            block.extend_from_slice(b"\r\n");
            if let Some(again) = crate::tokenize::message_parser().parse_headers(&block) {
                (from, other_from, from_count) = read_from(&again);
            }
        }
        let one_click_post = headers
            .header_raw("List-Unsubscribe-Post")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("List-Unsubscribe=One-Click"));
        let unsubscribe = headers
            .header_raw("List-Unsubscribe")
            .and_then(|v| parse_list_unsubscribe(v, one_click_post));
        Self {
            from,
            other_from,
            from_count,
            subject,
            unsubscribe,
            auth,
        }
    }
}

/// The From addresses of a parsed header block: the first, the others
/// that read as addresses, and how many there are, read or not. Every one
/// (each costs policy one lookup per list); no allocation for the usual
/// single From.
fn read_from(headers: &Message<'_>) -> (Option<Address>, Vec<Address>, usize) {
    let (mut from, mut other_from, mut from_count) = (None, Vec::new(), 0);
    let listed = headers
        .header_values(mail_parser::HeaderName::From)
        .filter_map(|v| v.as_address())
        .flat_map(|a| a.iter());
    for a in listed {
        from_count += 1;
        match a.address().and_then(Address::parse) {
            Some(a) if from.is_none() => from = Some(a),
            Some(a) => other_from.push(a),
            None => {}
        }
    }
    (from, other_from, from_count)
}

/// The header fields [`HeaderFacts`] reads (lowercase): what a header block
/// longer than the cap is scanned for.
const POLICY_FIELDS: [&str; 7] = [
    "from",
    "subject",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "received-spf",
    "x-he-dkim-result",
    "authentication-results",
];

/// Walks the header block's fields where mail-parser delimits them (so the
/// scan and a parse agree on what is a field): a field runs from its name
/// line through the lines that start with a space or tab; a line without
/// a `:` is skipped, and the next line starts a field whatever it starts
/// with; the block ends at an empty line (or one of `\r`, spaces and tabs
/// that starts with `\r`), or at the end. Calls `field` with each field's
/// name (lowercase, white space removed; empty when longer than any name
/// asked for) and its bytes, leading white space trimmed. Returns where the
/// body starts, or `None` when the block does not end within `limit`
/// bytes (it stops looking there). Linear: one `memchr` per line.
fn walk_header(raw: &[u8], limit: usize, mut field: impl FnMut(&[u8], &[u8])) -> Option<usize> {
    let line_end =
        |from: usize| memchr::memchr(b'\n', &raw[from..]).map_or(raw.len(), |i| from + i + 1);
    let mut pos = 0;
    while pos < raw.len() {
        if pos > limit {
            return None;
        }
        // Where the field starts, past white space (mail-parser skips it).
        let start = pos
            + raw[pos..]
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\x0c'))
                .count();
        let first_end = line_end(start);
        if start == raw.len() || raw[start] == b'\n' {
            return Some(first_end);
        }
        let first = &raw[start..first_end];
        // The name ends at the first `:` after it starts (a `:` before it
        // is skipped, as mail-parser does).
        let lead = first
            .iter()
            .take_while(|b| b.is_ascii_whitespace() || **b == b':')
            .count();
        let Some(colon) = first[lead..]
            .iter()
            .position(|&b| b == b':')
            .map(|c| lead + c)
        else {
            pos = first_end;
            continue;
        };
        let mut end = first_end;
        while end < raw.len() && matches!(raw[end], b' ' | b'\t') {
            end = line_end(end);
        }
        let mut name = [0u8; 32];
        let mut len = 0;
        for &b in first[lead..colon]
            .iter()
            .filter(|b| !b.is_ascii_whitespace())
        {
            if len == name.len() {
                len = 0;
                break;
            }
            name[len] = b.to_ascii_lowercase();
            len += 1;
        }
        field(&name[..len], &raw[start..end]);
        pos = end;
    }
    (pos <= limit).then_some(pos)
}

/// RFC 2369: a comma-separated list of `<uri>`s.
fn parse_list_unsubscribe(value: &str, one_click_post: bool) -> Option<Unsubscribe> {
    let uris: Vec<&str> = value
        .split(',')
        .filter_map(|part| {
            let part = part.trim();
            let inner = part.strip_prefix('<')?.split('>').next()?;
            let inner = inner.trim();
            (!inner.is_empty() && !inner.contains(char::is_whitespace)).then_some(inner)
        })
        .collect();
    let https = uris
        .iter()
        .find(|u| u.len() > 8 && has_scheme(u, "https://"));
    let mailto = uris
        .iter()
        .find(|u| u.len() > 7 && has_scheme(u, "mailto:"));
    match (https, mailto) {
        (Some(h), _) => Some(Unsubscribe {
            target: h.to_string(),
            one_click: one_click_post,
        }),
        (None, Some(m)) => Some(Unsubscribe {
            target: m.to_string(),
            one_click: false,
        }),
        (None, None) => None,
    }
}

/// Whether `uri` starts with `scheme` (ASCII, any case). By `get`, not
/// by slicing: the header is any text, and a byte index inside a multi-byte
/// character panicked (found by the `grpc_request` fuzz target).
fn has_scheme(uri: &str, scheme: &str) -> bool {
    uri.get(..scheme.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsubscribe_uri_with_a_multibyte_character_at_the_scheme_does_not_panic() {
        // Fuzz finding: `mailt沀example.ru` sliced at byte 7, inside '沀'.
        assert_eq!(parse_list_unsubscribe("<mailt沀example.ru>", false), None);
        assert_eq!(parse_list_unsubscribe("<https:沀/example.ru>", true), None);
        let ok = parse_list_unsubscribe("<mailt沀x.ru>, <MAILTO:u@x.example>", false).unwrap();
        assert_eq!(ok.target, "MAILTO:u@x.example");
    }

    #[test]
    fn an_internationalized_domain_is_read_in_its_ascii_form_as_list_entries_are() {
        let a = Address::parse("Anna@BÜCHER.example").unwrap();
        assert_eq!(a.as_str(), "anna@xn--bcher-kva.example");
        assert_eq!(a.domain(), "xn--bcher-kva.example");
        let entry: crate::policy::Entry = "bücher.example".parse().unwrap();
        let list = crate::policy::List::from_entries([entry]);
        assert!(list.match_sender(&a).is_some());
    }

    #[test]
    fn addresses_are_lowercased_and_split() {
        let a = Address::parse("<Bob.Smith@News.Example.COM>").unwrap();
        assert_eq!(a.as_str(), "bob.smith@news.example.com");
        assert_eq!(a.domain(), "news.example.com");
        assert!(Address::parse("no at sign").is_none());
        assert!(Address::parse("a@localhost").is_none());
    }

    #[test]
    fn from_and_one_click_unsubscribe_are_read() {
        let raw = b"From: \"News\" <news@shop.example>\r\n\
            List-Unsubscribe: <mailto:leave@shop.example?subject=x>, <https://shop.example/u/123>\r\n\
            List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\
            Subject: hi\r\n\r\nbody";
        let f = HeaderFacts::from_message(raw, 1 << 20, &Border::default());
        assert_eq!(f.from.unwrap().as_str(), "news@shop.example");
        assert_eq!(
            f.unsubscribe,
            Some(Unsubscribe {
                target: "https://shop.example/u/123".into(),
                one_click: true
            })
        );
    }

    #[test]
    fn a_from_past_the_header_cap_is_read_with_the_fields_policy_reads() {
        let mut raw = b"Authentication-Results: mx.border.example; dmarc=fail (p=reject) header.from=example.net\r\n".to_vec();
        for i in 0..4000 {
            raw.extend_from_slice(format!("X-Filler-{i:04}: {}\r\n", "a".repeat(52)).as_bytes());
        }
        raw.extend_from_slice(
            b"from :\r\n Jane <jane.smith@example.net>\r\nSubject: hi\r\n\r\nbody",
        );
        let f = HeaderFacts::from_message(&raw, 256 * 1024, &Border::default());
        assert_eq!(
            f.from.map(|a| a.to_string()).as_deref(),
            Some("jane.smith@example.net")
        );
        assert_eq!(f.subject.as_deref(), Some("hi"));
        assert!(f.auth.dmarc_enforced_failure().is_some());
        // Where the block ends is where mail-parser ends it: a From after
        // the blank line is body, past the cap or not.
        let mut body_from = raw[..raw.len()
            - b"from :\r\n Jane <jane.smith@example.net>\r\nSubject: hi\r\n\r\nbody".len()]
            .to_vec();
        body_from.extend_from_slice(b"\r\nFrom: jane.smith@example.net\r\n");
        assert_eq!(
            HeaderFacts::from_message(&body_from, 256 * 1024, &Border::default()).from,
            None
        );
    }

    #[test]
    fn a_from_address_with_a_comment_inside_is_read_without_it() {
        let raw = b"From: jane.smith(c)@example.net\r\nSubject: x\r\n\r\nbody";
        let f = HeaderFacts::from_message(raw, 1 << 20, &Border::default());
        assert_eq!(
            f.from.map(|a| a.to_string()).as_deref(),
            Some("jane.smith@example.net")
        );
        assert_eq!(f.from_count, 1);
        let named = b"From: jane@example.net (Jane Smith)\r\n\r\nbody";
        let f = HeaderFacts::from_message(named, 1 << 20, &Border::default());
        assert_eq!(
            f.from.map(|a| a.to_string()).as_deref(),
            Some("jane@example.net")
        );
    }

    #[test]
    fn mailto_only_unsubscribe_is_not_one_click() {
        let u = parse_list_unsubscribe("<mailto:u@list.example>", true).unwrap();
        assert_eq!(u.target, "mailto:u@list.example");
        assert!(!u.one_click);
        assert_eq!(parse_list_unsubscribe("garbage", false), None);
    }
}
