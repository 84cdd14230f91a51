//! Arbitrary bytes as a whole message: the MIME parser (mail-parser), the
//! tokenizer (headers, MIME walk, HTML, URLs, words) and the
//! authentication-header parser must never panic, hang or blow memory, and
//! the token ids must stay sorted, distinct and capped.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::check_message(data);
    common::check_auth(data);
});
