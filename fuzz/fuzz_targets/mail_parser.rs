//! mail-parser alone, exactly as chaff calls it (`MessageParser::default()`).
//! Used to tell a chaff bug from a dependency bug, and to minimise
//! dependency crashes (`cargo fuzz tmin mail_parser FILE`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mail_parser::MessageParser::default().parse(data);
});
