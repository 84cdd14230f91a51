//! Reading facts out of hostile mail headers, as typed values that both the
//! tokenizer (as evidence) and delivery policy (as rules) use.

pub mod auth;
mod lex;
pub mod sender;

/// A domain in the one form chaff compares domains in: lowercase ASCII,
/// an internationalized name (`bücher.example`) as its punycode
/// (`xn--bcher-kva.example`), as DNS and most headers carry it. List
/// entries, From addresses, authentication results and `chaff why` all
/// go through here, so `bücher.example` and `xn--bcher-kva.example` are
/// one domain everywhere. `Err` for a name IDNA refuses; each caller says
/// what that means for it.
pub fn ascii_domain(domain: &str) -> Result<String, idna::Errors> {
    match domain.is_ascii() {
        true => Ok(domain.to_ascii_lowercase()),
        false => idna::domain_to_ascii(domain),
    }
}
