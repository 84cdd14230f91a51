//! Reading facts out of hostile mail headers, as typed values that both the
//! tokenizer (as evidence) and delivery policy (as rules) use.

pub mod auth;
pub mod sender;
