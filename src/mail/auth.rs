//! Sender authentication as recorded by our border MTA: SPF in
//! `Received-SPF` (RFC 7208 §9.1), DKIM in the provider's
//! `X-HE-DKIM-Result`, and SPF/DKIM/DMARC in `Authentication-Results`
//! (RFC 8601).
//!
//! Headers are attacker-writable until our border adds its own, so there
//! are two readings: [`Authentication::from_border`], the topmost instance
//! of each header only (what our border added last: policy's), and
//! [`Authentication::from_headers`], every instance (the tokenizer's
//! evidence). Parsing is total: anything unrecognised is simply absent.

use std::net::IpAddr;

use super::lex::{self, Clause, Item, pairs};
use super::sender::Address;

/// An authentication method's result (RFC 8601 §2.7 values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthResult {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    TempError,
    PermError,
    Policy,
}

impl AuthResult {
    pub fn parse(word: &str) -> Option<Self> {
        Some(match word.trim().to_ascii_lowercase().as_str() {
            "pass" => Self::Pass,
            "fail" | "hardfail" => Self::Fail,
            "softfail" => Self::SoftFail,
            "neutral" => Self::Neutral,
            "none" => Self::None,
            "temperror" => Self::TempError,
            "permerror" => Self::PermError,
            "policy" => Self::Policy,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::SoftFail => "softfail",
            Self::Neutral => "neutral",
            Self::None => "none",
            Self::TempError => "temperror",
            Self::PermError => "permerror",
            Self::Policy => "policy",
        }
    }
}

/// One method's verdict and the domain it speaks for, when stated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub result: AuthResult,
    /// SPF: the checked MAIL FROM (or HELO) domain; DKIM: the signing
    /// domain `d=`; DMARC: the RFC 5322 From domain.
    pub domain: Option<String>,
}

/// Everything the headers say about how the message authenticated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Authentication {
    pub spf: Option<Check>,
    /// The connecting client's IP, from `client-ip=` of `Received-SPF`.
    pub client_ip: Option<IpAddr>,
    /// The envelope sender (MAIL FROM, what becomes Return-Path) as the
    /// SPF check saw it: `envelope-from=` of `Received-SPF`, or an address
    /// in `smtp.mailfrom=` of `Authentication-Results`; `None` for the null
    /// sender or a bare domain. Block entries match it too.
    pub envelope_from: Option<Address>,
    pub dkim: Vec<Check>,
    /// The message's DMARC result as one value (the model's evidence, the
    /// reason policy gives): the first result that failed, else the first
    /// one read. A failure is never overridden by a pass read before or
    /// after it: a pass beside a failure was not the border's own verdict.
    pub dmarc: Option<Check>,
    /// Every DMARC result read, each with the policy its own clause states,
    /// for [`Authentication::authenticates`] and
    /// [`Authentication::dmarc_enforced_failure`].
    dmarc_results: Vec<DmarcResult>,
}

/// One `dmarc=` result and the From domain's published policy as that
/// same clause notes it (`dmarc=fail (p=reject …)` as OpenDMARC writes,
/// or `policy.dmarc=reject`): read from the clause itself, so a policy in
/// another clause (one a sender's text made) is never taken for it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DmarcResult {
    check: Check,
    policy: Option<DmarcPolicy>,
}

/// A DMARC failure the From domain asks receivers to act on
/// ([`Authentication::dmarc_enforced_failure`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmarcFailure<'a> {
    /// The most severe policy any failing result states.
    pub policy: DmarcPolicy,
    /// The domain that failing result names (`header.from`), for the
    /// reason support reads; `None` when it names none.
    pub domain: Option<&'a str>,
}

/// What the operator says its border MTA writes, so that policy reads the
/// border's results and no one else's (`chaff serve --authserv-id`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Border {
    /// The authserv-ids of the border's `Authentication-Results` (RFC 8601
    /// §2.5: the first word of the value), lowercased. Empty: only the
    /// topmost `Authentication-Results` is read.
    pub authserv_ids: Vec<String>,
}

impl Border {
    /// A comma-separated list of authserv-ids (`mx.provider.example`).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut authserv_ids = Vec::new();
        for id in list.split(',').map(str::trim) {
            if id.is_empty() || id.contains(|c: char| c.is_whitespace() || c == ';' || c == '(') {
                return Err(format!(
                    "{id:?} is not an authserv-id: write the name the border puts first in its \
                     Authentication-Results (mx.provider.example), several separated by commas"
                ));
            }
            authserv_ids.push(id.to_ascii_lowercase());
        }
        Ok(Self { authserv_ids })
    }

    /// Whether the `Authentication-Results` value `value` names one of the
    /// border's authserv-ids.
    fn wrote(&self, value: &[Clause<'_>]) -> bool {
        // The id is the first word of the first clause (comments and quotes
        // read as RFC 5322 says, so a quoted id is its content).
        let id = value.first().and_then(|c| c.words().next());
        id.is_some_and(|id| {
            self.authserv_ids
                .iter()
                .any(|b| b.eq_ignore_ascii_case(&id.text))
        })
    }
}

/// A domain's DMARC `p=` policy (RFC 7489 §6.3), least severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DmarcPolicy {
    None,
    Quarantine,
    Reject,
}

impl DmarcPolicy {
    fn parse(word: &str) -> Option<Self> {
        match word.trim().to_ascii_lowercase().as_str() {
            "none" => Some(Self::None),
            "quarantine" => Some(Self::Quarantine),
            "reject" => Some(Self::Reject),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Quarantine => "quarantine",
            Self::Reject => "reject",
        }
    }
}

impl Authentication {
    /// Whether the message authenticates for `domain` (the From domain):
    /// DMARC pass for it, an SPF pass for it or a parent/child of it
    /// (relaxed alignment), or a DKIM pass with an aligned signing domain.
    ///
    /// A pass counts only for the domain it names: a result that names
    /// none (or names something that is not a domain) authenticates
    /// nothing, since it could be about any From. A DMARC failure for
    /// `domain` (or naming no domain) vetoes every pass: the border
    /// evaluated DMARC from these same SPF and DKIM results and found no
    /// aligned pass, so a pass read beside it is not the border's (text a
    /// sender got into the border's header) or is one the domain's own
    /// policy does not accept (strict alignment). A DMARC pass counts only
    /// when no other DMARC result for the domain disagrees with it.
    pub fn authenticates(&self, domain: &str) -> bool {
        let about = |c: &Check| c.domain.as_deref().is_none_or(|d| d == domain);
        let dmarc = || self.dmarc_results.iter().map(|r| &r.check);
        if dmarc().any(|c| c.result == AuthResult::Fail && about(c)) {
            return false;
        }
        let aligned = |c: &Check| {
            c.result == AuthResult::Pass
                && c.domain
                    .as_deref()
                    .is_some_and(|d| relaxed_aligned(d, domain))
        };
        let dmarc_pass = dmarc()
            .any(|c| c.result == AuthResult::Pass && c.domain.as_deref() == Some(domain))
            && !dmarc().any(|c| c.result != AuthResult::Pass && about(c));
        dmarc_pass || self.spf.as_ref().is_some_and(aligned) || self.dkim.iter().any(aligned)
    }

    /// DMARC failed and the domain asks receivers to act on failures: the
    /// most severe policy stated by any failing result, each read from its
    /// own clause. Whatever domain the result names (`header.from`):
    /// policy reads only the border's own results
    /// ([`Authentication::from_border`]), which are about the message's
    /// From, and a message with several From addresses must not escape it
    /// by leading with another; nor does a pass anywhere else (in the same
    /// header or another of the border's) undo a failure.
    pub fn dmarc_enforced_failure(&self) -> Option<DmarcFailure<'_>> {
        self.dmarc_results
            .iter()
            .filter(|r| r.check.result == AuthResult::Fail)
            .filter_map(|r| match r.policy {
                Some(p @ (DmarcPolicy::Reject | DmarcPolicy::Quarantine)) => Some((p, r)),
                _ => None,
            })
            // The first of the most severe (`max_by_key` keeps the last).
            .rev()
            .max_by_key(|(p, _)| *p)
            .map(|(policy, r)| DmarcFailure {
                policy,
                domain: r.check.domain.as_deref(),
            })
    }

    /// Records one DMARC result, keeping [`Authentication::dmarc`] the
    /// first failure, else the first result.
    fn add_dmarc(&mut self, check: Check, policy: Option<DmarcPolicy>) {
        let failed = check.result == AuthResult::Fail;
        match &self.dmarc {
            None => self.dmarc = Some(check.clone()),
            Some(first) if failed && first.result != AuthResult::Fail => {
                self.dmarc = Some(check.clone())
            }
            Some(_) => {}
        }
        self.dmarc_results.push(DmarcResult { check, policy });
    }
}

/// RFC 7489 relaxed alignment, approximated without the public suffix list:
/// one domain equals the other or is its subdomain.
fn relaxed_aligned(a: &str, b: &str) -> bool {
    let sub = |x: &str, y: &str| {
        x.len() > y.len() && x.ends_with(y) && x.as_bytes()[x.len() - y.len() - 1] == b'.'
    };
    a == b || sub(a, b) || sub(b, a)
}

/// `policy.dmarc=reject` among a `dmarc=` clause's properties, or `p=reject`
/// in its comments (OpenDMARC's `(p=reject dis=none)`): the most severe
/// stated, from this clause only.
fn dmarc_policy_in(clause: &Clause<'_>, props: &[Item<'_>]) -> Option<DmarcPolicy> {
    let in_props = pairs(props)
        .filter(|(n, _)| n.eq_ignore_ascii_case("policy.dmarc"))
        .filter_map(|(_, v)| DmarcPolicy::parse(&v.text));
    let in_comments = clause.comments.iter().flat_map(|c| {
        c.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
            .filter_map(|w| {
                let (k, v) = w.split_once('=')?;
                k.eq_ignore_ascii_case("p")
                    .then(|| DmarcPolicy::parse(v))
                    .flatten()
            })
    });
    in_props.chain(in_comments).max()
}

/// The domain the properties named `name` give, when there is one:
/// `None` when no such property is present; `Some(None)` when it is
/// present but does not name one domain (a value that is not a domain,
/// or two values that disagree): the result then speaks for no domain,
/// rather than for whichever value came first or last.
fn property_domain(props: &[Item<'_>], name: &str) -> Option<Option<String>> {
    let mut found: Option<Option<String>> = None;
    for (_, v) in pairs(props).filter(|(n, _)| n.eq_ignore_ascii_case(name)) {
        let d = domain_of(&v.text);
        found = Some(match found {
            None => d,
            Some(prev) if prev == d => d,
            Some(_) => None,
        });
    }
    found
}

/// The domain part of an address or the domain itself, lowercased and
/// in ASCII; `None` unless it reads as a domain name (labels of letters,
/// digits, `-` and `_`, at least two): a property value the border copied
/// from the sender (`smtp.helo="x;dmarc=pass"`) is not trusted as a domain.
fn domain_of(value: &str) -> Option<String> {
    let v = value.trim().trim_matches(|c| c == '<' || c == '>');
    let d = v
        .rsplit_once('@')
        .map_or(v, |(_, d)| d)
        .trim()
        .trim_end_matches('.');
    // As `mail::Address` and list entries hold it, so alignment compares
    // like with like.
    let d = super::ascii_domain(d).ok()?;
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (d.len() <= 253 && d.contains('.') && d.split('.').all(label_ok)).then_some(d)
}

impl Authentication {
    /// Reads every authentication header of one header block, topmost
    /// first: the message's evidence, as the tokenizer reads it (a forged
    /// result is a feature the model learns like any other). For
    /// single-valued facts (SPF, DMARC, client IP) the first instance that
    /// states one wins. Policy reads [`Authentication::from_border`].
    pub fn from_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut auth = Authentication::default();
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("received-spf") {
                auth.read_received_spf(value);
            } else if name.eq_ignore_ascii_case("x-he-dkim-result") {
                auth.read_he_dkim(value);
            } else if name.eq_ignore_ascii_case("authentication-results") {
                auth.read_authentication_results(&lex::clauses(value));
            }
        }
        auth
    }

    /// What policy may trust: what our border wrote, and nothing a sender
    /// or another host did. Of `Received-SPF` and `X-HE-DKIM-Result`, the
    /// **topmost** instance and nothing below it: our border MTA adds its
    /// own on top, every instance below was written by some other host,
    /// and a sender can write any of them (a `dkim=pass` for a bank's
    /// domain under the border's own `dkim=none`), so a lower instance is
    /// never read, not even where the topmost one states nothing. Of
    /// `Authentication-Results`, every instance whose authserv-id is one of
    /// `border.authserv_ids` (RFC 8601 §5: a border that verifies with
    /// several milters writes several), wherever it is; without configured
    /// ids, the topmost only. A field over `max` bytes is read as absent,
    /// as the tokenizer skips such fields.
    pub fn from_border<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        max: usize,
        border: &Border,
    ) -> Self {
        let mut auth = Authentication::default();
        let mut seen = [false; 3];
        for (name, value) in headers {
            let which = if name.eq_ignore_ascii_case("received-spf") {
                0
            } else if name.eq_ignore_ascii_case("x-he-dkim-result") {
                1
            } else if name.eq_ignore_ascii_case("authentication-results") {
                2
            } else {
                continue;
            };
            let by_id = which == 2 && !border.authserv_ids.is_empty();
            if by_id {
                if name.len() + value.len() > max {
                    continue;
                }
                let clauses = lex::clauses(value);
                if border.wrote(&clauses) {
                    auth.read_authentication_results(&clauses);
                }
                continue;
            } else if std::mem::replace(&mut seen[which], true) || name.len() + value.len() > max {
                continue;
            }
            match which {
                0 => auth.read_received_spf(value),
                1 => auth.read_he_dkim(value),
                _ => auth.read_authentication_results(&lex::clauses(value)),
            }
        }
        auth
    }

    /// `Received-SPF: pass (comment) client-ip=192.0.2.1; envelope-from=...`
    fn read_received_spf(&mut self, value: &str) {
        let clauses = lex::clauses(value);
        let first = clauses.first().and_then(|c| c.words().next());
        let Some(result) = first.and_then(|w| AuthResult::parse(&w.text)) else {
            return;
        };
        // `Some(None)`: an envelope sender that names no domain we read.
        let (mut mail_from, mut helo, mut helo_identity) = (None, None, false);
        let mut ip = None;
        let mut envelope = None;
        for (k, v) in clauses.iter().flat_map(Clause::pairs) {
            match k.to_ascii_lowercase().as_str() {
                "client-ip" => ip = v.text.trim().parse::<IpAddr>().ok(),
                // The null sender: SPF checked the HELO name (RFC 7208 §2.4).
                "envelope-from" if null_sender(&v.text) => {}
                "envelope-from" => {
                    mail_from = Some(domain_of(&v.text));
                    envelope = Address::parse(&v.text);
                }
                "helo" => helo = domain_of(&v.text),
                // RFC 7208 §9.1: which identity the result is about. A
                // pass for the HELO name says nothing of MAIL FROM's.
                "identity" => helo_identity = v.text.trim().eq_ignore_ascii_case("helo"),
                _ => {}
            }
        }
        // A MAIL FROM that does not read as a domain leaves the result
        // speaking for none, not for the HELO name.
        let domain = match (helo_identity, mail_from) {
            (false, Some(mail_from)) => mail_from,
            _ => helo,
        };
        // The support articles: "the sending IP appears at the end of the
        // Received-SPF line" — accept a bare trailing IP when no client-ip=.
        if ip.is_none() {
            ip = clauses
                .iter()
                .flat_map(Clause::words)
                .last()
                .and_then(|w| w.text.trim_end_matches('.').parse().ok());
        }
        if self.spf.is_none() {
            self.spf = Some(Check { result, domain });
        }
        if self.client_ip.is_none() {
            self.client_ip = ip;
        }
        if self.envelope_from.is_none() {
            self.envelope_from = envelope;
        }
    }

    /// `X-HE-DKIM-Result: pass (…) header.d=example.com` — the first word is
    /// the result; a `d=` or `header.d=` property names the signer.
    fn read_he_dkim(&mut self, value: &str) {
        let clauses = lex::clauses(value);
        let first = clauses.first().and_then(|c| c.words().next());
        let Some(result) = first.and_then(|w| AuthResult::parse(&w.text)) else {
            return;
        };
        let mut domain = None;
        for c in &clauses {
            for name in ["header.d", "d"] {
                if domain.is_none() {
                    domain = property_domain(&c.items, name);
                }
            }
        }
        self.dkim.push(Check {
            result,
            domain: domain.flatten(),
        });
    }

    /// RFC 8601: `authserv-id [version]; method=result ptype.prop=value …; …`,
    /// lexed as RFC 5322 says ([`lex`]): a `;` or `(` inside a quoted value
    /// (a HELO name, a MAIL FROM local part) is text, not structure. The
    /// domain a result speaks for is its identity property alone (SPF:
    /// `smtp.mailfrom`, or `smtp.helo` when there is none; DKIM:
    /// `header.d`, else `header.i`; DMARC: `header.from`); one that is
    /// present but not a domain leaves the result speaking for none.
    fn read_authentication_results(&mut self, clauses: &[Clause<'_>]) {
        // The first clause is the authserv-id (and version), which has no
        // `=`: read as a result only when it is one (Microsoft 365 writes
        // no authserv-id, its value starts `spf=pass …`).
        for clause in clauses {
            let Some((method, result, props)) = clause.methodspec() else {
                continue;
            };
            let Some(result) = AuthResult::parse(result) else {
                continue;
            };
            let method = method.to_ascii_lowercase();
            if self.envelope_from.is_none()
                && let Some((_, v)) =
                    pairs(props).find(|(n, _)| n.eq_ignore_ascii_case("smtp.mailfrom"))
            {
                self.envelope_from = Address::parse(&v.text);
            }
            match method.as_str() {
                "spf" => {
                    let mail_from = pairs(props).any(|(n, v)| {
                        n.eq_ignore_ascii_case("smtp.mailfrom") && !null_sender(&v.text)
                    });
                    let domain = match mail_from {
                        true => property_domain(props, "smtp.mailfrom").flatten(),
                        false => property_domain(props, "smtp.helo").flatten(),
                    };
                    if self.spf.is_none() {
                        self.spf = Some(Check { result, domain });
                    }
                }
                "dkim" => {
                    let domain = property_domain(props, "header.d")
                        .or_else(|| property_domain(props, "header.i"))
                        .flatten();
                    self.dkim.push(Check { result, domain });
                }
                "dmarc" => {
                    let domain = property_domain(props, "header.from").flatten();
                    let policy = dmarc_policy_in(clause, props);
                    self.add_dmarc(Check { result, domain }, policy);
                }
                _ => {}
            }
        }
    }
}

/// The null reverse-path (`<>`, or nothing), for which SPF checks the HELO
/// name instead (RFC 7208 §2.4).
fn null_sender(value: &str) -> bool {
    matches!(value.trim(), "" | "<>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dmarc_policy_is_read_from_comment_or_property() {
        let a = parse(&[(
            "Authentication-Results",
            "mx.example.org; dmarc=fail (p=reject dis=none) header.from=bank.example",
        )]);
        assert_eq!(
            a.dmarc_enforced_failure().map(|f| f.policy),
            Some(DmarcPolicy::Reject)
        );
        let b = parse(&[(
            "Authentication-Results",
            "mx.example.org; dmarc=fail policy.dmarc=none header.from=x.example",
        )]);
        assert_eq!(b.dmarc_results[0].policy, Some(DmarcPolicy::None));
        assert_eq!(b.dmarc_enforced_failure(), None);
    }

    #[test]
    fn authentication_for_a_domain_needs_an_aligned_pass() {
        let spf_elsewhere = parse(&[(
            "Received-SPF",
            "pass client-ip=192.0.2.1; envelope-from=x@bulk.example;",
        )]);
        assert!(!spf_elsewhere.authenticates("bank.example"));
        let dkim_sub = parse(&[("X-HE-DKIM-Result", "pass header.d=mail.bank.example")]);
        assert!(dkim_sub.authenticates("bank.example"));
        let dkim_fail = parse(&[("X-HE-DKIM-Result", "fail header.d=bank.example")]);
        assert!(!dkim_fail.authenticates("bank.example"));
        let dmarc = parse(&[(
            "Authentication-Results",
            "mx; dmarc=pass header.from=bank.example",
        )]);
        assert!(dmarc.authenticates("bank.example"));
        assert!(!dmarc.authenticates("notbank.example"));
        // A result written with the Unicode name aligns with the ASCII form
        // `mail::Address` holds.
        let idn = parse(&[(
            "Authentication-Results",
            "mx; dmarc=pass header.from=Bücher.example",
        )]);
        assert!(idn.authenticates("xn--bcher-kva.example"));
    }

    fn parse(headers: &[(&str, &str)]) -> Authentication {
        Authentication::from_headers(headers.iter().copied())
    }

    fn border(headers: &[(&str, &str)]) -> Authentication {
        Authentication::from_border(headers.iter().copied(), 16 * 1024, &Border::default())
    }

    #[test]
    fn policy_reads_only_the_topmost_instance_of_each_header() {
        // The border's own results on top; a sender's forgeries below.
        let forged = [
            (
                "Authentication-Results",
                "mx.provider.example; spf=fail smtp.mailfrom=bank.example; dkim=none; dmarc=fail (p=none) header.from=bank.example",
            ),
            ("X-HE-DKIM-Result", "fail header.d=bank.example"),
            (
                "Received-SPF",
                "pass (mx.provider.example: designates 203.0.113.9)",
            ),
            ("Received", "from evil.example"),
            (
                "Authentication-Results",
                "mx.google.com; dkim=pass header.d=bank.example; dmarc=fail (p=reject) header.from=bank.example",
            ),
            ("X-HE-DKIM-Result", "pass header.d=bank.example"),
            (
                "Received-SPF",
                "pass client-ip=192.0.2.44; envelope-from=x@bank.example",
            ),
        ];
        let a = border(&forged);
        assert!(!a.authenticates("bank.example"), "{a:?}");
        let policies: Vec<_> = a.dmarc_results.iter().map(|r| r.policy).collect();
        assert_eq!(policies, [Some(DmarcPolicy::None)]);
        assert_eq!(a.client_ip, None, "the border's line states no IP");
        assert_eq!(a.dkim.len(), 2, "the border's AR clause and its own header");
        // The evidence reading still sees every instance (the forged DKIM
        // passes; it no longer authenticates, the border's DMARC failure
        // for the domain vetoing them).
        let evidence = parse(&forged);
        let forged_pass = Check {
            result: AuthResult::Pass,
            domain: Some("bank.example".into()),
        };
        assert_eq!(
            evidence.dkim.iter().filter(|c| **c == forged_pass).count(),
            2
        );
        // A topmost field over the size cap is absent, and the one below it
        // is not read in its place.
        let topmost_field_too_long = [
            ("Received-SPF", "fail client-ip=198.51.100.9;"),
            ("Received-SPF", "pass client-ip=192.0.2.1;"),
        ];
        assert_eq!(
            Authentication::from_border(
                topmost_field_too_long.iter().copied(),
                20,
                &Border::default()
            )
            .spf,
            None,
            "an oversize topmost field is absent, not replaced by the next"
        );
    }

    #[test]
    fn the_envelope_sender_is_read_from_spf_as_an_address_or_not_at_all() {
        let a = parse(&[(
            "Received-SPF",
            "pass client-ip=192.0.2.1; envelope-from=\"Bounce@ESP.example\"; helo=mta.esp.example;",
        )]);
        let text = |a: &Authentication| a.envelope_from.as_ref().map(|e| e.to_string());
        assert_eq!(text(&a).as_deref(), Some("bounce@esp.example"));
        let null = parse(&[(
            "Received-SPF",
            "none client-ip=192.0.2.1; envelope-from=<>;",
        )]);
        assert_eq!(null.envelope_from, None);
        let ar = parse(&[(
            "Authentication-Results",
            "mx.provider.example; spf=pass smtp.mailfrom=<b@esp.example>",
        )]);
        assert_eq!(text(&ar).as_deref(), Some("b@esp.example"));
        let bare = parse(&[(
            "Authentication-Results",
            "mx; spf=pass smtp.mailfrom=esp.example",
        )]);
        assert_eq!(bare.envelope_from, None);
    }

    #[test]
    fn with_the_borders_authserv_ids_every_result_of_theirs_is_read_and_no_other() {
        let border = Border::parse("mx.provider.example, MX2.provider.example").unwrap();
        // One header per milter, with a sender's forgery between them.
        let headers = [
            ("Authentication-Results", "mx.provider.example; dkim=none"),
            (
                "Authentication-Results",
                "mx.google.com; dkim=pass header.d=bank.example; dmarc=pass header.from=bank.example",
            ),
            (
                "Authentication-Results",
                "mx2.provider.example 1; dmarc=fail (p=reject) header.from=bank.example",
            ),
        ];
        let a = Authentication::from_border(headers.iter().copied(), 16 * 1024, &border);
        assert_eq!(
            a.dmarc_enforced_failure().map(|f| f.policy),
            Some(DmarcPolicy::Reject),
            "{a:?}"
        );
        assert!(!a.authenticates("bank.example"));
        assert_eq!(a.dkim.len(), 1);
        // A message the border wrote no result for: nothing is read, where
        // without the ids the sender's topmost one would be.
        let forged = [(
            "Authentication-Results",
            "mx.provider.example.evil; dmarc=pass header.from=bank.example",
        )];
        let a = Authentication::from_border(forged.iter().copied(), 16 * 1024, &border);
        assert!(!a.authenticates("bank.example"));
        assert!(border_default_reads_topmost(&forged).authenticates("bank.example"));
        assert!(Border::parse("mx.example, ").is_err());
        assert!(Border::parse("mx example").is_err());
    }

    fn border_default_reads_topmost(headers: &[(&str, &str)]) -> Authentication {
        Authentication::from_border(headers.iter().copied(), 16 * 1024, &Border::default())
    }

    #[test]
    fn an_spf_pass_for_the_helo_name_speaks_for_the_helo_domain() {
        let a = parse(&[(
            "Received-SPF",
            "Pass (helo) identity=helo; client-ip=203.0.113.9; helo=mail.evil.example; envelope-from=ceo@bank.example",
        )]);
        assert_eq!(
            a.spf.as_ref().unwrap().domain.as_deref(),
            Some("mail.evil.example")
        );
        assert!(!a.authenticates("bank.example"));
        let m = parse(&[(
            "Received-SPF",
            "pass identity=mailfrom; client-ip=203.0.113.9; helo=mail.evil.example; envelope-from=ceo@bank.example",
        )]);
        assert!(m.authenticates("bank.example"));
    }

    #[test]
    fn received_spf_result_domain_and_client_ip() {
        let a = parse(&[(
            "Received-SPF",
            "pass (mx.example.org: domain of bob@example.com designates 192.0.2.1 as permitted sender) \
             receiver=mx.example.org; client-ip=192.0.2.1; envelope-from=\"bob@example.com\"; helo=mail.example.com;",
        )]);
        assert_eq!(
            a.spf,
            Some(Check {
                result: AuthResult::Pass,
                domain: Some("example.com".into())
            })
        );
        assert_eq!(a.client_ip, Some("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn received_spf_with_the_ip_at_the_end_and_ipv6() {
        let a = parse(&[(
            "Received-SPF",
            "softfail (domain of transitioning x@y.example) 2001:db8::7",
        )]);
        assert_eq!(a.spf.unwrap().result, AuthResult::SoftFail);
        assert_eq!(a.client_ip, Some("2001:db8::7".parse().unwrap()));
    }

    #[test]
    fn topmost_received_spf_wins() {
        let a = parse(&[
            ("Received-SPF", "fail client-ip=198.51.100.9;"),
            ("Received-SPF", "pass client-ip=192.0.2.1;"),
        ]);
        assert_eq!(a.spf.unwrap().result, AuthResult::Fail);
        assert_eq!(a.client_ip, Some("198.51.100.9".parse().unwrap()));
    }

    #[test]
    fn he_dkim_result() {
        let a = parse(&[(
            "X-HE-DKIM-Result",
            "pass (signature verified) header.d=News.Example.com",
        )]);
        assert_eq!(
            a.dkim,
            vec![Check {
                result: AuthResult::Pass,
                domain: Some("news.example.com".into())
            }]
        );
        assert!(parse(&[("X-HE-DKIM-Result", "")]).dkim.is_empty());
    }

    #[test]
    fn authentication_results_rfc8601() {
        let a = parse(&[(
            "Authentication-Results",
            "mx.example.org; spf=fail (sender IP is 203.0.113.5) smtp.mailfrom=evil.example; \
             dkim=pass (2048-bit key) header.d=bank.example header.i=@bank.example; dmarc=fail header.from=bank.example",
        )]);
        assert_eq!(
            a.spf,
            Some(Check {
                result: AuthResult::Fail,
                domain: Some("evil.example".into())
            })
        );
        assert_eq!(
            a.dkim,
            vec![Check {
                result: AuthResult::Pass,
                domain: Some("bank.example".into())
            }]
        );
        assert_eq!(
            a.dmarc,
            Some(Check {
                result: AuthResult::Fail,
                domain: Some("bank.example".into())
            })
        );
    }

    #[test]
    fn garbage_is_absent_not_an_error() {
        let a = parse(&[
            ("Received-SPF", "((((unbalanced"),
            ("Authentication-Results", ";;;=;=pass;dkim=;spf=maybe"),
            ("X-HE-DKIM-Result", "\u{fffd}\u{fffd}"),
        ]);
        assert_eq!(a, Authentication::default());
    }

    /// The border's clauses in the red-team cases (s25 finding 1): SPF
    /// fails or is none, no DKIM, and DMARC fails for the From domain,
    /// whose policy is reject; only the first clause varies, and carries
    /// the sender's text (a HELO name or MAIL FROM the border copied).
    fn border_result(first_clause: &str) -> String {
        format!(
            "mx.border.example;\r\n {first_clause};\r\n dkim=none;\r\n dmarc=fail (p=reject dis=reject) header.from=paypal.com"
        )
    }

    /// Reads `value` as the border's only Authentication-Results, both
    /// ways policy can: the topmost one, and by the border's authserv-id.
    fn read_as_border(value: &str) -> [Authentication; 2] {
        let headers = [("Authentication-Results", value)];
        let by_id = Border::parse("mx.border.example").unwrap();
        [
            border(&headers),
            Authentication::from_border(headers.iter().copied(), 16 * 1024, &by_id),
        ]
    }

    const REJECT_PAYPAL: Option<DmarcFailure<'static>> = Some(DmarcFailure {
        policy: DmarcPolicy::Reject,
        domain: Some("paypal.com"),
    });

    fn assert_the_borders_failure_stands(first_clause: &str) {
        let value = border_result(first_clause);
        for a in read_as_border(&value) {
            assert!(!a.authenticates("paypal.com"), "{first_clause}: {a:?}");
            assert_eq!(
                a.dmarc_enforced_failure(),
                REJECT_PAYPAL,
                "{first_clause}: {a:?}"
            );
            assert_eq!(
                a.dmarc.as_ref().map(|c| c.result),
                Some(AuthResult::Fail),
                "{first_clause}"
            );
        }
    }

    #[test]
    fn a_semicolon_inside_a_quoted_value_forges_no_clause() {
        // a10: the HELO name quoted as RFC 8601 asks.
        assert_the_borders_failure_stands(r#"spf=none smtp.helo="x;dmarc=pass""#);
        // a11: a MAIL FROM local part with a whole forged DMARC pass.
        assert_the_borders_failure_stands(
            r#"spf=fail smtp.mailfrom="a;dmarc=pass header.from=paypal.com;x"@evil.example"#,
        );
        // a02: the forged clause came first, and the policy was read from it.
        assert_the_borders_failure_stands(r#"spf=fail smtp.mailfrom="a;dmarc=pass"@evil.example"#);
        // The quoted value is the clause's own, whole.
        let [a, _] = read_as_border(&border_result(
            r#"spf=fail smtp.mailfrom="a;dmarc=pass"@evil.example"#,
        ));
        assert_eq!(
            a.spf,
            Some(Check {
                result: AuthResult::Fail,
                domain: Some("evil.example".into())
            })
        );
    }

    #[test]
    fn a_paren_in_a_value_hides_none_of_the_borders_results() {
        // a03: inside quotes a `(` opens no comment.
        assert_the_borders_failure_stands(r#"spf=fail smtp.mailfrom="a("@evil.example"#);
        // a12: a `(` never closed is a character, not a comment to the end.
        assert_the_borders_failure_stands("spf=none smtp.helo=x(");
        assert_the_borders_failure_stands("spf=none smtp.helo=x(((\\(");
        // A closed comment is still one, and may hold `;` and `"`.
        assert_the_borders_failure_stands(r#"spf=none (a "quoted; (nested) comment) smtp.helo=x"#);
    }

    #[test]
    fn a_dmarc_pass_beside_a_failure_does_not_override_it() {
        // a01: a HELO name copied unquoted splits the clause; the forged
        // pass comes first, names no domain, and the failure still stands.
        assert_the_borders_failure_stands(
            "spf=none smtp.mailfrom=bounce@evil.example smtp.helo=x;dmarc=pass",
        );
        // Even a forged pass that names the domain.
        assert_the_borders_failure_stands("spf=none smtp.helo=x;dmarc=pass header.from=paypal.com");
        // A forged `p=none` failure first: the most severe policy stated
        // by a failing clause is the one enforced.
        assert_the_borders_failure_stands(
            "spf=none smtp.helo=x;dmarc=fail (p=none) header.from=paypal.com",
        );
        // A pass in another of the border's headers, above or below.
        let border_ids = Border::parse("mx.border.example").unwrap();
        let fail = border_result("spf=fail smtp.mailfrom=bounce@evil.example");
        let pass = "mx.border.example; dmarc=pass header.from=paypal.com";
        for headers in [
            [
                ("Authentication-Results", pass),
                ("Authentication-Results", &fail),
            ],
            [
                ("Authentication-Results", &fail),
                ("Authentication-Results", pass),
            ],
        ] {
            let a = Authentication::from_border(headers.iter().copied(), 16 * 1024, &border_ids);
            assert!(!a.authenticates("paypal.com"), "{a:?}");
            assert_eq!(a.dmarc_enforced_failure(), REJECT_PAYPAL);
        }
        // A failure vetoes an SPF or DKIM pass for the domain too (a06).
        let a = parse(&[(
            "Authentication-Results",
            "mx; dkim=pass header.d=paypal.com; spf=pass smtp.mailfrom=paypal.com; dmarc=fail (p=none) header.from=paypal.com",
        )]);
        assert!(!a.authenticates("paypal.com"));
        // A pass contradicted by another DMARC result for the domain.
        let a = parse(&[(
            "Authentication-Results",
            "mx; spf=none smtp.helo=x;dmarc=pass header.from=paypal.com; dmarc=none header.from=paypal.com",
        )]);
        assert!(!a.authenticates("paypal.com"));
    }

    #[test]
    fn a_pass_that_names_no_domain_authenticates_none() {
        // h08: the border's own `dmarc=pass` with no header.from.
        for a in read_as_border("mx.border.example; dmarc=pass") {
            assert!(!a.authenticates("paypal.com"), "{a:?}");
        }
        for value in [
            "mx; spf=pass",
            "mx; dkim=pass header.s=s1",
            // Present but not a domain: ignored, not trusted.
            r#"mx; dmarc=pass header.from="x;y""#,
            "mx; dmarc=pass header.from=paypal.com(",
            // Not a subdomain of paypal.com, though it ends like one.
            "mx; spf=pass smtp.mailfrom=a@x(.paypal.com",
            "mx; spf=pass smtp.mailfrom=\"a\"@\"paypal.com\"",
            // A MAIL FROM that is not a domain does not fall back to HELO.
            r#"mx; spf=pass smtp.mailfrom="a(" smtp.helo=paypal.com"#,
            // Two values that disagree name neither.
            "mx; dkim=pass header.d=evil.example header.d=paypal.com",
        ] {
            let a = parse(&[("Authentication-Results", value)]);
            assert!(!a.authenticates("paypal.com"), "{value}: {a:?}");
        }
        let null_sender = parse(&[(
            "Authentication-Results",
            "mx; spf=pass smtp.mailfrom=<> smtp.helo=mail.paypal.com",
        )]);
        assert!(null_sender.authenticates("paypal.com"));
    }

    #[test]
    fn real_world_results_still_read() {
        let gmail = "mx.google.com;\r\n       dkim=pass header.i=@example.com header.s=s1 header.b=abc;\r\n       spf=pass (google.com: domain of a@example.com designates 1.2.3.4 as permitted sender) smtp.mailfrom=a@example.com;\r\n       dmarc=pass (p=NONE sp=NONE dis=NONE) header.from=example.com";
        let a = parse(&[("Authentication-Results", gmail)]);
        assert_eq!(
            a.dkim,
            [Check {
                result: AuthResult::Pass,
                domain: Some("example.com".into())
            }]
        );
        let spf = a.spf.as_ref().unwrap();
        assert_eq!(
            (spf.result, spf.domain.as_deref()),
            (AuthResult::Pass, Some("example.com"))
        );
        assert_eq!(a.envelope_from.as_ref().unwrap().as_str(), "a@example.com");
        assert_eq!(a.dmarc_results[0].policy, Some(DmarcPolicy::None));
        assert!(a.authenticates("example.com"));
        assert_eq!(a.dmarc_enforced_failure(), None);
        let gmail_fail =
            "mx.google.com; dmarc=fail (p=REJECT sp=REJECT dis=REJECT) header.from=bank.example";
        let f = parse(&[("Authentication-Results", gmail_fail)]);
        assert_eq!(
            f.dmarc_enforced_failure().map(|f| f.policy),
            Some(DmarcPolicy::Reject)
        );

        let microsoft = "spf=pass (sender IP is 203.0.113.5)\r\n smtp.mailfrom=news.example.com; dkim=pass (signature was verified)\r\n header.d=example.com;dmarc=pass action=none\r\n header.from=example.com;compauth=pass reason=100";
        // Microsoft 365 writes no authserv-id: the first clause is a result.
        let m = parse(&[("Authentication-Results", microsoft)]);
        assert!(m.authenticates("example.com"), "{m:?}");
        assert_eq!(m.dkim.len(), 1);
        assert_eq!(m.spf.unwrap().domain.as_deref(), Some("news.example.com"));
        // Spaces around `=` and a version after the id (RFC 8601 CFWS).
        let spaced = parse(&[(
            "Authentication-Results",
            "mx.example.org 1; dmarc = fail (p = reject) header.from = bank.example",
        )]);
        let c = spaced.dmarc.unwrap();
        assert_eq!(
            (c.result, c.domain.as_deref()),
            (AuthResult::Fail, Some("bank.example"))
        );
    }
}
