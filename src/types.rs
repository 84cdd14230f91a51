//! The nouns every layer shares: who a statistic belongs to, which message a
//! click was about, and what the user said about it.
//!
//! These are validated once, at the edge (the gRPC adapter or the CLI), so the
//! library below never sees an empty user id or an unspecified label.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// Longest user id accepted, in bytes. Keys in the store are prefixed by the
/// user id, so it must stay small; 256 covers any mailbox address.
pub const MAX_USER_ID_BYTES: usize = 256;

/// Longest message id accepted, in bytes. Message-ID headers in the wild are
/// well under this; longer ids are almost always garbage or an attack.
pub const MAX_MESSAGE_ID_BYTES: usize = 512;

/// Checks a new id field: what [`check_stored_id`] checks, and not blank.
/// With `trimmed`, not padded with whitespace either: a caller's " alice"
/// would be a mailbox apart from "alice", which nobody means. (A message id
/// is the caller's own string, padded or not, and is only compared with
/// itself.) `hint` tells an empty field's caller what to pass.
fn check_id(field: &str, id: &str, max: usize, hint: &str, trimmed: bool) -> Result<(), Error> {
    check_stored_id(field, id, max, hint)?;
    if id.trim().is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{field} is blank (only whitespace){hint}"
        )));
    }
    if trimmed && id.trim() != id {
        return Err(Error::InvalidArgument(format!(
            "{field} {id:?} starts or ends with whitespace; send it trimmed"
        )));
    }
    Ok(())
}

/// What an id read back from the store must be: non-empty, at most `max`
/// bytes, no control characters (ids are printed in logs and prefix store
/// keys). Blank and padded ids are refused at the edge ([`check_id`]) but
/// not here: one that an older build accepted is still read back, listed
/// and forgotten, never turned into a decoding error.
fn check_stored_id(field: &str, id: &str, max: usize, hint: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(Error::InvalidArgument(format!("{field} is empty{hint}")));
    }
    if id.len() > max {
        return Err(Error::InvalidArgument(format!(
            "{field} is {} bytes; the limit is {max}",
            id.len()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "{field} contains control characters"
        )));
    }
    Ok(())
}

/// Declares a validated string id type with `new`, `as_str`, `Display`
/// and a `Debug` that names the type.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr, $hint:literal, trimmed: $trimmed:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            #[doc = concat!("Accepts a non-blank `", $field, "` within its byte limit, with no control characters (trimmed: ", stringify!($trimmed), ").")]
            pub fn new(id: impl Into<String>) -> Result<Self, Error> {
                let id = id.into();
                check_id($field, &id, $max, $hint, $trimmed)?;
                Ok(Self(id))
            }

            /// Reads back an id the store holds (a key, a page token, the
            /// decision log): checked as an older build checked it, so an
            /// id it accepted is never lost to a stricter edge.
            pub fn stored(id: impl Into<String>) -> Result<Self, Error> {
                let id = id.into();
                check_stored_id($field, &id, $max, $hint)?;
                Ok(Self(id))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// As the plain string (the decision log's JSON).
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        /// Checked as [`Self::stored`] checks it: a stored id that is not
        /// one is a decoding error, never passed on.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::stored(String::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.0)
            }
        }
    };
}

string_id!(
    /// A mailbox whose statistics are kept apart from every other mailbox's.
    UserId,
    "user_id",
    MAX_USER_ID_BYTES,
    "; pass the recipient's mailbox id",
    trimmed: true
);

string_id!(
    /// The caller's stable name for a message, under which a click is
    /// recorded so that a repeated click is recognised and a flipped or
    /// forgotten one undone.
    MessageId,
    "message_id",
    MAX_MESSAGE_ID_BYTES,
    "",
    trimmed: false
);

/// Whose something is: a user's, or the operator's. The one type for both
/// "whose list" (a user's allow/block list, or an operator-wide one) and
/// "whose part of the shared model" (a consenting user's clicks, or the
/// operator's seed corpus; each part is kept apart so it can be capped and
/// removed exactly, see `classify::shared`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    User(UserId),
    Operator,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::User(u) => write!(f, "user {u}"),
            Owner::Operator => f.write_str("the operator"),
        }
    }
}

/// What a user said a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Label {
    Spam,
    Ham,
}

impl Label {
    /// `spam` or `ham`, as people and the CLI write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Spam => "spam",
            Label::Ham => "ham",
        }
    }

    /// The other class: a flipped click moves a message here.
    pub fn other(self) -> Self {
        match self {
            Label::Spam => Label::Ham,
            Label::Ham => Label::Spam,
        }
    }

    /// One-byte form for the store; stable on disk.
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Label::Spam => b'S',
            Label::Ham => b'H',
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'S' => Some(Label::Spam),
            b'H' => Some(Label::Ham),
            _ => None,
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Label::Spam => "spam",
            Label::Ham => "ham",
        })
    }
}

/// The classifier's reading of a score against the user's cutoffs
/// (`classify::verdict`). Stored in the decision log as `ham`, `unsure`,
/// `spam`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ham,
    /// Not enough evidence either way; the pipeline should deliver but may tag.
    Unsure,
    Spam,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Ham => "ham",
            Verdict::Unsure => "unsure",
            Verdict::Spam => "spam",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_rejects_empty_long_and_control() {
        assert!(UserId::new("").is_err());
        assert!(UserId::new("a".repeat(MAX_USER_ID_BYTES + 1)).is_err());
        assert!(UserId::new("al\nice").is_err());
        assert_eq!(
            UserId::new("alice@example.com").unwrap().as_str(),
            "alice@example.com"
        );
    }

    #[test]
    fn a_blank_id_is_refused_and_a_padded_user_id_too_but_stored_ones_read_back() {
        for blank in [" ", "  \u{a0} ", "\u{3000}"] {
            let e = UserId::new(blank).unwrap_err().to_string();
            assert!(e.contains("user_id is blank"), "{e}");
            assert!(MessageId::new(blank).is_err());
        }
        let e = UserId::new(" alice").unwrap_err().to_string();
        assert!(e.contains("starts or ends with whitespace"), "{e}");
        assert!(UserId::new("alice ").is_err());
        // A message id is only compared with itself: padding is the caller's.
        assert_eq!(MessageId::new(" <x@y> ").unwrap().as_str(), " <x@y> ");
        // An id an older build stored is read back, not made a decoding error.
        assert_eq!(UserId::stored(" alice").unwrap().as_str(), " alice");
        assert_eq!(UserId::stored(" ").unwrap().as_str(), " ");
        let back: UserId = serde_json::from_str("\" \"").unwrap();
        assert_eq!(back.as_str(), " ");
        assert!(UserId::stored("").is_err());
    }

    #[test]
    fn label_byte_round_trips_and_flips() {
        for l in [Label::Spam, Label::Ham] {
            assert_eq!(Label::from_byte(l.to_byte()), Some(l));
            assert_eq!(l.other().other(), l);
            assert_ne!(l.other(), l);
        }
        assert_eq!(Label::from_byte(0), None);
    }
}
