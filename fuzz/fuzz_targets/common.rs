// Shared checks for both fuzz targets (included with `#[path]`/`mod`).
#![allow(dead_code)] // each target uses a subset

use chaff::mail::auth::Authentication;
use chaff::tokenize::Tokenizer;

/// Tokenizes `data` twice (ids and explanation) and checks the invariants
/// every caller of the tokenizer relies on.
pub fn check_message(data: &[u8]) {
    let tokenizer = Tokenizer::default();
    let max_tokens = tokenizer.limits().max_tokens;

    let t = tokenizer.tokenize(data);
    assert!(
        t.ids.windows(2).all(|w| w[0] < w[1]),
        "token ids not sorted and distinct"
    );
    assert!(
        t.ids.len() <= max_tokens,
        "{} ids > max_tokens {}",
        t.ids.len(),
        max_tokens
    );

    let (text, hits) = tokenizer.explain(data);
    // Both readings walk the same message with the same caps.
    assert_eq!(hits, t.limits_hit, "explain() and tokenize() hit different caps");
    assert!(
        text.len() <= max_tokens,
        "{} explained features > max_tokens {}",
        text.len(),
        max_tokens
    );
    // Determinism: the same bytes give the same ids.
    assert_eq!(tokenizer.tokenize(data), t, "tokenize() is not deterministic");
}

/// Reads the input as header lines `name: value` (UTF-8-lossy, one per line;
/// a line without ':' becomes a name with an empty value) and runs the
/// authentication-header parser over them.
pub fn check_auth(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let pairs: Vec<(&str, &str)> = text
        .lines()
        .map(|l| l.split_once(':').map_or((l, ""), |(n, v)| (n.trim(), v)))
        .collect();
    let a = Authentication::from_headers(pairs.iter().copied());
    // Same again, so any hidden state or non-determinism shows.
    assert_eq!(a, Authentication::from_headers(pairs.iter().copied()));
}
