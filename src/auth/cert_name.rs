//! A client certificate's name, with its type: a DNS name, an e-mail
//! address or a URI from the subject alternative name extension.
//!
//! Why typed: a CA that signs client certificates vouches for each name
//! under that name's own rules — a DNS name for a host it checked, an
//! e-mail address for a mailbox it checked. Comparing the bare strings let
//! a certificate carrying `rfc822Name: mx1.example` (an e-mail entry any
//! user of that CA might get) stand for the DNS name `mx1.example` that a
//! keys-file entry meant. So a name matches only a name of the same type.
//!
//! In the keys file the type is read from the name's form, which is
//! unambiguous: a URI has a scheme (`spiffe://…`, `urn:…`, so a `:`), an
//! e-mail address has an `@` and no `:`, and a DNS name has neither.

use std::fmt;

/// One subject alternative name (or a keys-file entry that names one).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CertName {
    /// `dNSName`; compared without regard to ASCII case or a final dot.
    Dns(String),
    /// `rfc822Name`; the domain compared without regard to ASCII case.
    Email(String),
    /// `uniformResourceIdentifier`; compared exactly.
    Uri(String),
}

/// Why a keys-file `certificate_name` names no certificate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadCertName {
    #[error("the certificate name is empty")]
    Empty,
    #[error(
        "certificate name {0:?} is neither a DNS name (letters, digits, '-', '.'), an e-mail address (one '@') nor a URI (a scheme and ':')"
    )]
    Unreadable(String),
}

impl CertName {
    /// Reads a keys-file name; its type is taken from its form (module
    /// documentation).
    pub fn parse(text: &str) -> Result<CertName, BadCertName> {
        let t = text.trim();
        if t.is_empty() {
            return Err(BadCertName::Empty);
        }
        let bad = || BadCertName::Unreadable(text.to_string());
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        if let Some((scheme, rest)) = t.split_once(':') {
            let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
            return if scheme_ok && !rest.is_empty() {
                Ok(CertName::Uri(t.to_string()))
            } else {
                Err(bad())
            };
        }
        if let Some((local, domain)) = t.split_once('@') {
            return if !local.is_empty() && is_dns_name(domain) {
                Ok(CertName::Email(t.to_string()))
            } else {
                Err(bad())
            };
        }
        if is_dns_name(t) {
            Ok(CertName::Dns(t.to_string()))
        } else {
            Err(bad())
        }
    }

    /// Does this entry name the certificate name `other`? Only names of
    /// one type match.
    pub fn matches(&self, other: &CertName) -> bool {
        match (self, other) {
            (CertName::Dns(a), CertName::Dns(b)) => a
                .trim_end_matches('.')
                .eq_ignore_ascii_case(b.trim_end_matches('.')),
            (CertName::Email(a), CertName::Email(b)) => {
                match (a.rsplit_once('@'), b.rsplit_once('@')) {
                    (Some((la, da)), Some((lb, db))) => la == lb && da.eq_ignore_ascii_case(db),
                    _ => false,
                }
            }
            (CertName::Uri(a), CertName::Uri(b)) => a == b,
            _ => false,
        }
    }

    /// `dns`, `email` or `uri`: what logs and errors say of the type.
    pub fn kind(&self) -> &'static str {
        match self {
            CertName::Dns(_) => "dns",
            CertName::Email(_) => "email",
            CertName::Uri(_) => "uri",
        }
    }

    /// The name itself.
    pub fn as_str(&self) -> &str {
        match self {
            CertName::Dns(s) | CertName::Email(s) | CertName::Uri(s) => s,
        }
    }
}

/// `dns:mx1.example`, `email:ops@example.com`, `uri:spiffe://…`: the type
/// is always shown, so a log line says which kind of name identified a
/// caller.
impl fmt::Display for CertName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind(), self.as_str())
    }
}

/// Letters, digits, `-`, `_` and `.` in labels of 1–63 bytes, at most 253 in all
/// (a final dot allowed). A wildcard is not a name a client proves.
fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_is_read_from_the_form() {
        assert_eq!(
            CertName::parse("mx1.mail.example"),
            Ok(CertName::Dns("mx1.mail.example".into()))
        );
        assert_eq!(
            CertName::parse("ops@example.com"),
            Ok(CertName::Email("ops@example.com".into()))
        );
        assert_eq!(
            CertName::parse("spiffe://mail.example/mx1"),
            Ok(CertName::Uri("spiffe://mail.example/mx1".into()))
        );
        assert_eq!(
            CertName::parse("urn:uuid:7f1e"),
            Ok(CertName::Uri("urn:uuid:7f1e".into()))
        );
        for bad in [
            "",
            "  ",
            "*.example",
            "a b.example",
            "@example",
            "ops@",
            "://x",
            "x..y",
        ] {
            assert!(CertName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_name_matches_only_a_name_of_its_own_type() {
        let dns = CertName::Dns("mx1.example".into());
        assert!(dns.matches(&CertName::Dns("MX1.Example.".into())));
        assert!(!dns.matches(&CertName::Email("mx1.example".into())));
        assert!(!dns.matches(&CertName::Uri("mx1.example".into())));
        let email = CertName::Email("ops@example.com".into());
        assert!(email.matches(&CertName::Email("ops@EXAMPLE.com".into())));
        assert!(!email.matches(&CertName::Email("Ops@example.com".into())));
        assert!(!email.matches(&CertName::Dns("ops@example.com".into())));
        let uri = CertName::Uri("spiffe://a/b".into());
        assert!(uri.matches(&CertName::Uri("spiffe://a/b".into())));
        assert!(!uri.matches(&CertName::Dns("spiffe://a/b".into())));
    }

    #[test]
    fn display_names_the_type() {
        assert_eq!(
            CertName::Dns("a.example".into()).to_string(),
            "dns:a.example"
        );
        assert_eq!(
            CertName::Email("o@a.example".into()).to_string(),
            "email:o@a.example"
        );
    }
}
