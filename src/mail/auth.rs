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
    pub dmarc: Option<Check>,
    /// The From domain's published DMARC policy, when the verifier noted
    /// it (`dmarc=fail (p=reject …)` as OpenDMARC writes, or
    /// `policy.dmarc=reject`).
    pub dmarc_policy: Option<DmarcPolicy>,
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
    fn wrote(&self, value: &str) -> bool {
        // The id is the first word before the first `;`: only that prefix
        // is read (and copied to drop its comments).
        let head = strip_comments(value.split(';').next().unwrap_or_default());
        let id = head.split_whitespace().next();
        id.is_some_and(|id| self.authserv_ids.iter().any(|b| b.eq_ignore_ascii_case(id)))
    }
}

/// A domain's DMARC `p=` policy (RFC 7489 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    pub fn authenticates(&self, domain: &str) -> bool {
        let aligned = |c: &Check| {
            c.result == AuthResult::Pass
                && c.domain
                    .as_deref()
                    .is_some_and(|d| relaxed_aligned(d, domain))
        };
        self.dmarc.as_ref().is_some_and(|c| {
            c.result == AuthResult::Pass && c.domain.as_deref().is_none_or(|d| d == domain)
        }) || self.spf.as_ref().is_some_and(aligned)
            || self.dkim.iter().any(aligned)
    }

    /// DMARC failed and the domain asks receivers to act on failures.
    /// Whatever domain the result names (`header.from`): policy reads only
    /// the border's own result ([`Authentication::from_border`]), which is
    /// about the message's From, and a message with several From
    /// addresses must not escape it by leading with another.
    pub fn dmarc_enforced_failure(&self) -> Option<DmarcPolicy> {
        let failed = self
            .dmarc
            .as_ref()
            .is_some_and(|c| c.result == AuthResult::Fail);
        match self.dmarc_policy {
            Some(p @ (DmarcPolicy::Reject | DmarcPolicy::Quarantine)) if failed => Some(p),
            _ => None,
        }
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

/// Strips RFC 5322 comments `( … )`, which may nest, and quotes.
fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '"' => {}
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// `p=reject` (in OpenDMARC's comment) or `policy.dmarc=reject` within the
/// `dmarc=` clause of an Authentication-Results value.
fn dmarc_policy_in(value: &str) -> Option<DmarcPolicy> {
    let lower = value.to_ascii_lowercase();
    let start = lower.find("dmarc=")?;
    let clause = lower[start..].split(';').next()?;
    clause
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .find_map(|w| {
            w.strip_prefix("policy.dmarc=")
                .or_else(|| w.strip_prefix("p="))
                .and_then(DmarcPolicy::parse)
        })
}

/// The domain part of an address or the domain itself, lowercased.
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
    (!d.is_empty() && d.len() <= 253 && d.contains('.')).then_some(d)
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
                auth.read_authentication_results(value);
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
                if !border.wrote(value) || name.len() + value.len() > max {
                    continue;
                }
            } else if std::mem::replace(&mut seen[which], true) || name.len() + value.len() > max {
                continue;
            }
            match which {
                0 => auth.read_received_spf(value),
                1 => auth.read_he_dkim(value),
                _ => auth.read_authentication_results(value),
            }
        }
        auth
    }

    /// `Received-SPF: pass (comment) client-ip=192.0.2.1; envelope-from=...`
    fn read_received_spf(&mut self, value: &str) {
        let first = value.split_whitespace().next().unwrap_or("");
        let Some(result) = AuthResult::parse(first) else {
            return;
        };
        let text = strip_comments(value);
        let (mut mail_from, mut helo, mut helo_identity) = (None, None, false);
        let mut ip = None;
        let mut envelope = None;
        for part in text.split(';').flat_map(|p| p.split_whitespace()) {
            if let Some((k, v)) = part.split_once('=') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "client-ip" => ip = v.trim().parse::<IpAddr>().ok(),
                    "envelope-from" => {
                        mail_from = domain_of(v);
                        envelope = Address::parse(v);
                    }
                    "helo" => helo = domain_of(v),
                    // RFC 7208 §9.1: which identity the result is about. A
                    // pass for the HELO name says nothing of MAIL FROM's.
                    "identity" => helo_identity = v.trim().eq_ignore_ascii_case("helo"),
                    _ => {}
                }
            }
        }
        let domain = if helo_identity {
            helo
        } else {
            mail_from.or(helo)
        };
        // The support articles: "the sending IP appears at the end of the
        // Received-SPF line" — accept a bare trailing IP when no client-ip=.
        if ip.is_none() {
            ip = text
                .split_whitespace()
                .last()
                .and_then(|w| w.trim_end_matches([';', '.']).parse().ok());
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
        let text = strip_comments(value);
        let Some(result) = text.split_whitespace().next().and_then(AuthResult::parse) else {
            return;
        };
        let domain = text
            .split(|c: char| c.is_whitespace() || c == ';')
            .find_map(|p| p.strip_prefix("header.d=").or_else(|| p.strip_prefix("d=")))
            .and_then(domain_of);
        self.dkim.push(Check { result, domain });
    }

    /// RFC 8601: `authserv-id; method=result ptype.prop=value …; …`.
    fn read_authentication_results(&mut self, value: &str) {
        // The policy often lives in a comment, so read it before comments go.
        if self.dmarc.is_none() {
            self.dmarc_policy = dmarc_policy_in(value);
        }
        let text = strip_comments(value);
        let mut clauses = text.split(';');
        clauses.next(); // authserv-id (and version)
        for clause in clauses {
            let mut words = clause.split_whitespace();
            let Some((method, result)) = words.next().and_then(|w| w.split_once('=')) else {
                continue;
            };
            let Some(result) = AuthResult::parse(result) else {
                continue;
            };
            let mut domain = None;
            for w in words {
                if let Some((prop, v)) = w.split_once('=') {
                    let prop = prop.to_ascii_lowercase();
                    let wanted = match method.to_ascii_lowercase().as_str() {
                        "spf" => {
                            prop == "smtp.mailfrom" || (prop == "smtp.helo" && domain.is_none())
                        }
                        "dkim" => prop == "header.d" || (prop == "header.i" && domain.is_none()),
                        "dmarc" => prop == "header.from",
                        _ => false,
                    };
                    if wanted {
                        domain = domain_of(v);
                    }
                    if prop == "smtp.mailfrom" && self.envelope_from.is_none() {
                        self.envelope_from = Address::parse(v);
                    }
                }
            }
            let check = Check { result, domain };
            match method.to_ascii_lowercase().as_str() {
                "spf" if self.spf.is_none() => self.spf = Some(check),
                "dkim" => self.dkim.push(check),
                "dmarc" if self.dmarc.is_none() => self.dmarc = Some(check),
                _ => {}
            }
        }
    }
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
        assert_eq!(a.dmarc_enforced_failure(), Some(DmarcPolicy::Reject));
        let b = parse(&[(
            "Authentication-Results",
            "mx.example.org; dmarc=fail policy.dmarc=none header.from=x.example",
        )]);
        assert_eq!(b.dmarc_policy, Some(DmarcPolicy::None));
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
        assert_eq!(a.dmarc_policy, Some(DmarcPolicy::None));
        assert_eq!(a.client_ip, None, "the border's line states no IP");
        assert_eq!(a.dkim.len(), 2, "the border's AR clause and its own header");
        // The evidence reading still sees every instance.
        assert!(parse(&forged).authenticates("bank.example"));
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
            a.dmarc_enforced_failure(),
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
}
