//! Allow, block and trusted-sender lists: what an entry can name, how it is
//! written, and how a message's sender and sending IP are matched against a
//! list. Pure data; the store keeps the entries, the engine holds them in
//! memory (no storage read per scored message).

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use crate::error::Error;
use crate::mail::sender::Address;

/// Most entries one user may keep per list. Lists are read into memory for
/// every user with mail in flight; a few hundred covers real use (the
/// support articles speak of senders, domains and an IP range or two).
pub const MAX_USER_ENTRIES: usize = 1000;

/// Most entries an operator-wide list may hold.
pub const MAX_OPERATOR_ENTRIES: usize = 100_000;

/// Which list an entry is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListKind {
    /// Deliver: the model is not asked (sender entries need authentication).
    Allow,
    /// Treat as spam, whatever the model says.
    Block,
    /// Legitimate bulk senders (operator-wide): a spam click on their mail
    /// counts little and the caller is told to offer unsubscribe instead.
    Trusted,
}

impl ListKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListKind::Allow => "allow",
            ListKind::Block => "block",
            ListKind::Trusted => "trusted",
        }
    }

    pub(crate) fn to_byte(self) -> u8 {
        match self {
            ListKind::Allow => b'a',
            ListKind::Block => b'b',
            ListKind::Trusted => b't',
        }
    }
}

/// One list entry, in canonical form (lowercase, CIDR truncated to its
/// network), so adding `Example.COM` twice is one entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entry {
    /// An exact sender address, `alice@example.com`.
    Address(String),
    /// A domain: `example.com` matches senders at exactly that domain;
    /// `*.example.com` matches it and every subdomain.
    Domain { name: String, subdomains: bool },
    /// One IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A CIDR range, `192.0.2.0/24` or `2001:db8::/32`.
    Net(IpNet),
}

impl Entry {
    /// Whether matching this entry is a claim about who sent the message
    /// (and so, for allow entries, needs the sender to authenticate).
    pub fn names_sender(&self) -> bool {
        matches!(self, Entry::Address(_) | Entry::Domain { .. })
    }

    /// A range with prefix length 0: every IPv4 or every IPv6 address.
    pub fn covers_everything(&self) -> bool {
        matches!(self, Entry::Net(n) if n.prefix_len() == 0)
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Address(a) => f.write_str(a),
            Entry::Domain {
                name,
                subdomains: true,
            } => write!(f, "*.{name}"),
            Entry::Domain { name, .. } => f.write_str(name),
            Entry::Ip(ip) => write!(f, "{ip}"),
            Entry::Net(net) => write!(f, "{net}"),
        }
    }
}

fn invalid(entry: &str, why: &str) -> Error {
    // A pasted 20 kB line is named, not echoed whole.
    let entry = match entry.char_indices().nth(60) {
        Some((cut, _)) => format!("{:?}… ({} bytes)", &entry[..cut], entry.len()),
        None => format!("{entry:?}"),
    };
    Error::InvalidArgument(format!(
        "list entry {entry} {why}; write an address (alice@example.com), a domain \
         (example.com, or *.example.com with subdomains), an IP (192.0.2.7, 2001:db8::7) \
         or a CIDR range (192.0.2.0/24, 2001:db8::/32)"
    ))
}

/// A hostname as list entries accept it: letters, digits, hyphens and dots,
/// at least two labels, none empty, 253 bytes at most, and a last label
/// that is not a number (`999.1.1.1` is a mistyped IP, never a domain a
/// sender can have). Internationalized names (`bücher.example`) are stored
/// in their ASCII (punycode) form, `xn--bcher-kva.example`, which is how
/// DNS and mail headers carry them.
fn check_domain(entry: &str, d: &str, strict: bool) -> Result<String, Error> {
    let d = d.trim_end_matches('.');
    let d = crate::mail::ascii_domain(d)
        .map_err(|_| invalid(entry, "is not a valid internationalized domain"))?;
    if d.len() > 253 {
        return Err(invalid(
            entry,
            &format!("is {} bytes long; a domain is at most 253", d.len()),
        ));
    }
    if !d.contains('.') {
        return Err(invalid(
            entry,
            "is not a valid domain (it has a single label)",
        ));
    }
    for l in d.split('.') {
        let why = if l.is_empty() {
            "is not a valid domain (an empty label: two dots in a row)"
        } else if l.len() > 63 {
            "is not a valid domain (a label longer than 63 bytes)"
        } else if !l
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            "is not a valid domain (only letters, digits, hyphens and dots)"
        } else if strict && (l.starts_with('-') || l.ends_with('-')) {
            "is not a valid domain (a label starts or ends with a hyphen)"
        } else {
            continue;
        };
        return Err(invalid(entry, why));
    }
    // A punycode label that does not decode is no name a sender can have.
    if strict
        && d.split('.').any(|l| l.starts_with("xn--"))
        && idna::domain_to_unicode(&d).1.is_err()
    {
        return Err(invalid(
            entry,
            "is not a valid domain (an xn-- label that is not valid punycode)",
        ));
    }
    let last = d.rsplit('.').next().unwrap_or_default();
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            entry,
            "is neither an IP address nor a domain (a domain does not end in a number)",
        ));
    }
    Ok(d)
}

/// Refuses an entry that covers every address (`0.0.0.0/0`, `::/0`) unless
/// the caller says it means it: on a block list it files all mail as spam,
/// on an allow list it lets all mail past the model.
pub fn check_reach(entry: &Entry, force: bool) -> Result<(), Error> {
    if entry.covers_everything() && !force {
        return Err(Error::InvalidArgument(format!(
            "list entry {entry} covers every IP address, so it would match all mail; \
             if that is what you want, pass force (chaff list add --force)"
        )));
    }
    Ok(())
}

impl FromStr for Entry {
    type Err = Error;

    /// An entry as a caller writes it: checked, and stored in the form it
    /// matches in.
    fn from_str(s: &str) -> Result<Self, Error> {
        Entry::parse(s, true)
    }
}

impl Entry {
    /// An entry read back from the store: checked as the builds that may
    /// have written it checked (no test of a label's hyphens or punycode,
    /// an IPv4-mapped IP kept as written), so an entry an older build
    /// accepted is still listed, matched as it was, and removable — never a
    /// decoding error that stops the user's scoring.
    pub fn stored(s: &str) -> Result<Self, Error> {
        Entry::parse(s, false)
    }

    fn parse(s: &str, strict: bool) -> Result<Self, Error> {
        let t = s.trim();
        if t.is_empty() {
            return Err(invalid(s, "is empty"));
        }
        if t.contains("://") {
            return Err(invalid(
                s,
                "is a URL; write the domain alone (example.com, or *.example.com)",
            ));
        }
        if t.contains('<') || t.contains('>') {
            return Err(invalid(
                s,
                "has a display name or angle brackets; write the address alone",
            ));
        }
        if t.contains('%') && t.contains(':') {
            return Err(invalid(
                s,
                "is an IP with a zone index (%…), which no sending IP carries; write it without",
            ));
        }
        if t.contains('/') {
            let net: IpNet = t.parse().map_err(|_| {
                invalid(
                    s,
                    "is not a CIDR range (an IP address, a slash and a prefix length: \
                     at most /32 for IPv4, /128 for IPv6)",
                )
            })?;
            let net = net.trunc();
            return Ok(Entry::Net(if strict { canonical_net(net) } else { net }));
        }
        if let Ok(ip) = t.parse::<IpAddr>() {
            // Stored as the address it matches: a message's IP is compared
            // in its IPv4 form (`canonical_ip`), so a mapped entry as given
            // could never match.
            return Ok(Entry::Ip(if strict { canonical_ip(ip) } else { ip }));
        }
        if let Some((local, domain)) = t.rsplit_once('@') {
            if local.is_empty()
                || local.len() > 64
                || local
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "@<>,;:\"()[]\\".contains(c))
            {
                return Err(invalid(s, "has no valid local part"));
            }
            let domain = check_domain(s, domain, strict)?;
            return Ok(Entry::Address(format!(
                "{}@{domain}",
                local.to_ascii_lowercase()
            )));
        }
        if let Some(rest) = t.strip_prefix("*.").or_else(|| t.strip_prefix('.')) {
            return Ok(Entry::Domain {
                name: check_domain(s, rest, strict)?,
                subdomains: true,
            });
        }
        Ok(Entry::Domain {
            name: check_domain(s, t, strict)?,
            subdomains: false,
        })
    }
}

/// What a list matched on: the sender (From address or its domain) or the
/// sending IP. Allow entries that match on the sender need authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchedOn {
    Sender,
    Ip,
}

/// A list held for matching.
///
/// Empty, it is one null pointer: every user in memory carries two lists
/// (allow, block) and few users have any entry, and the five sets inline
/// made an idle user's slot 632 bytes, 432 of them empty lists
/// (`examples/slot_cost.rs`; docs/OPERATIONS.md "Memory").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct List(Option<Box<Sets>>);

/// A non-empty list's entries, by what they match on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Sets {
    addresses: HashSet<String>,
    /// `example.com` entries, and `*.example.com` entries (by their base).
    exact_domains: HashSet<String>,
    wildcard_domains: HashSet<String>,
    ips: HashSet<IpAddr>,
    /// Few per user; a linear scan beats a trie at this size.
    nets: Vec<IpNet>,
}

impl Sets {
    fn is_empty(&self) -> bool {
        self.addresses.is_empty()
            && self.exact_domains.is_empty()
            && self.wildcard_domains.is_empty()
            && self.ips.is_empty()
            && self.nets.is_empty()
    }
}

impl List {
    pub fn from_entries(entries: impl IntoIterator<Item = Entry>) -> Self {
        let mut list = List::default();
        for e in entries {
            list.insert(e);
        }
        list
    }

    pub fn insert(&mut self, entry: Entry) {
        let sets = self.0.get_or_insert_with(Box::default);
        match entry {
            Entry::Address(a) => {
                sets.addresses.insert(a);
            }
            Entry::Domain {
                name,
                subdomains: false,
            } => {
                sets.exact_domains.insert(name);
            }
            Entry::Domain { name, .. } => {
                sets.wildcard_domains.insert(name);
            }
            Entry::Ip(ip) => {
                sets.ips.insert(ip);
            }
            Entry::Net(net) => {
                if !sets.nets.contains(&net) {
                    sets.nets.push(net);
                }
            }
        }
    }

    pub fn remove(&mut self, entry: &Entry) {
        let Some(sets) = self.0.as_mut() else {
            return;
        };
        match entry {
            Entry::Address(a) => {
                sets.addresses.remove(a);
            }
            Entry::Domain {
                name,
                subdomains: false,
            } => {
                sets.exact_domains.remove(name);
            }
            Entry::Domain { name, .. } => {
                sets.wildcard_domains.remove(name);
            }
            Entry::Ip(ip) => {
                sets.ips.remove(ip);
            }
            Entry::Net(net) => sets.nets.retain(|n| n != net),
        }
        if sets.is_empty() {
            self.0 = None;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|s| s.is_empty())
    }

    /// The first entry naming this sender: its exact address, its domain,
    /// or a parent domain entered with subdomains.
    pub fn match_sender(&self, sender: &Address) -> Option<Entry> {
        let sets = self.0.as_deref()?;
        if sets.addresses.contains(sender.as_str()) {
            return Some(Entry::Address(sender.as_str().to_string()));
        }
        let domain = sender.domain();
        if sets.exact_domains.contains(domain) {
            return Some(Entry::Domain {
                name: domain.to_string(),
                subdomains: false,
            });
        }
        // example.com, then its parents: a.b.example.com → b.example.com → …
        let mut d = domain;
        loop {
            if sets.wildcard_domains.contains(d) {
                return Some(Entry::Domain {
                    name: d.to_string(),
                    subdomains: true,
                });
            }
            match d.split_once('.') {
                Some((_, parent)) if parent.contains('.') => d = parent,
                _ => return None,
            }
        }
    }

    /// The first entry covering this IP (exact, then ranges).
    pub fn match_ip(&self, ip: IpAddr) -> Option<Entry> {
        let sets = self.0.as_deref()?;
        let ip = canonical_ip(ip);
        if sets.ips.contains(&ip) {
            return Some(Entry::Ip(ip));
        }
        sets.nets
            .iter()
            .find(|n| n.contains(&ip))
            .map(|n| Entry::Net(*n))
    }

    /// Sender first (the more specific claim), then the IP.
    pub fn matches(
        &self,
        sender: Option<&Address>,
        ip: Option<IpAddr>,
    ) -> Option<(Entry, MatchedOn)> {
        sender
            .and_then(|s| self.match_sender(s).map(|e| (e, MatchedOn::Sender)))
            .or_else(|| ip.and_then(|ip| self.match_ip(ip).map(|e| (e, MatchedOn::Ip))))
    }
}

/// A range within IPv4-mapped IPv6 (`::ffff:192.0.2.0/120`) as the IPv4
/// range it is, for the reason of [`canonical_ip`]; any other as given.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

/// IPv4-mapped IPv6 (`::ffff:192.0.2.7`, as dual-stack sockets report IPv4
/// peers) is the IPv4 address, so IPv4 entries match it.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(s: &str) -> Entry {
        s.parse().unwrap()
    }

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn entries_parse_to_canonical_forms() {
        assert_eq!(
            e(" Alice@Example.COM "),
            Entry::Address("alice@example.com".into())
        );
        assert_eq!(
            e("Example.com."),
            Entry::Domain {
                name: "example.com".into(),
                subdomains: false
            }
        );
        assert_eq!(e("*.example.com").to_string(), "*.example.com");
        assert_eq!(e(".example.com").to_string(), "*.example.com");
        assert_eq!(e("192.0.2.7").to_string(), "192.0.2.7");
        assert_eq!(e("192.0.2.77/24").to_string(), "192.0.2.0/24");
        assert_eq!(e("2001:DB8::1/32").to_string(), "2001:db8::/32");
    }

    #[test]
    fn bad_entries_say_what_to_write() {
        for bad in [
            "",
            "localhost",
            "exa mple.com",
            "@example.com",
            "192.0.2.0/33",
            "a@b",
            "999.1.1.1",
            "10.0.0",
            "a@b@c.example",
            "<a>@c.example",
        ] {
            let err = bad.parse::<Entry>().unwrap_err().to_string();
            assert!(err.contains("CIDR range"), "{bad}: {err}");
        }
        let says = |bad: &str, what: &str| {
            let err = bad.parse::<Entry>().unwrap_err().to_string();
            assert!(err.contains(what), "{bad}: {err}");
        };
        says("http://bank.example", "is a URL");
        says("Bob Smith <bob@x.example>", "display name");
        says("fe80::1%eth0", "zone index");
        says("-bad-.example", "hyphen");
        says("xn--zz.example", "not valid punycode");
        says(
            &format!("{}.example", "a".repeat(250)),
            "bytes long; a domain is at most 253",
        );
        let long = format!("{}.example", "a".repeat(20_000));
        let err = long.parse::<Entry>().unwrap_err().to_string();
        assert!(err.len() < 600 && err.contains("(20008 bytes)"), "{err}");
    }

    #[test]
    fn internationalized_domains_are_stored_as_punycode() {
        assert_eq!(e("bücher.example").to_string(), "xn--bcher-kva.example");
        assert_eq!(e("*.BÜCHER.example").to_string(), "*.xn--bcher-kva.example");
        assert_eq!(
            e("anna@bücher.example").to_string(),
            "anna@xn--bcher-kva.example"
        );
    }

    #[test]
    fn ranges_covering_every_address_need_force() {
        for all in ["0.0.0.0/0", "::/0", "10.1.2.3/0"] {
            let entry = e(all);
            let err = check_reach(&entry, false).unwrap_err().to_string();
            assert!(err.contains("every IP address"), "{all}: {err}");
            check_reach(&entry, true).unwrap();
        }
        check_reach(&e("10.0.0.0/8"), false).unwrap();
        check_reach(&e("example.com"), false).unwrap();
    }

    #[test]
    fn domains_match_exactly_or_with_subdomains() {
        let list = List::from_entries([e("example.com"), e("*.corp.example")]);
        assert!(list.match_sender(&addr("a@example.com")).is_some());
        assert!(list.match_sender(&addr("a@mail.example.com")).is_none());
        assert!(list.match_sender(&addr("a@corp.example")).is_some());
        assert!(list.match_sender(&addr("a@x.y.corp.example")).is_some());
        assert!(list.match_sender(&addr("a@notcorp.example")).is_none());
    }

    #[test]
    fn ips_match_exactly_and_by_range_in_both_families() {
        let list = List::from_entries([e("192.0.2.7"), e("198.51.100.0/24"), e("2001:db8::/32")]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(list.match_ip(ip("192.0.2.7")).is_some());
        assert!(list.match_ip(ip("192.0.2.8")).is_none());
        assert!(list.match_ip(ip("198.51.100.200")).is_some());
        assert!(list.match_ip(ip("::ffff:198.51.100.200")).is_some());
        assert!(list.match_ip(ip("2001:db8:ffff::1")).is_some());
        assert!(list.match_ip(ip("2001:db9::1")).is_none());
    }

    #[test]
    fn ipv4_mapped_entries_are_stored_as_ipv4_and_match() {
        assert_eq!(e("::ffff:192.0.2.9").to_string(), "192.0.2.9");
        assert_eq!(e("::ffff:192.0.2.0/120").to_string(), "192.0.2.0/24");
        assert_eq!(e("2001:db8::/32").to_string(), "2001:db8::/32");
        let list = List::from_entries([e("::ffff:192.0.2.9"), e("::ffff:198.51.100.0/120")]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(list.match_ip(ip("192.0.2.9")).is_some());
        assert!(list.match_ip(ip("::ffff:192.0.2.9")).is_some());
        assert!(list.match_ip(ip("198.51.100.77")).is_some());
        let err = "10.0.0.0/33".parse::<Entry>().unwrap_err().to_string();
        assert!(err.contains("at most /32"), "{err}");
    }

    #[test]
    fn removing_an_entry_stops_it_matching() {
        let mut list = List::from_entries([e("10.0.0.0/8"), e("a@example.com")]);
        list.remove(&e("10.0.0.0/8"));
        list.remove(&e("a@example.com"));
        assert!(list.is_empty());
    }
}
