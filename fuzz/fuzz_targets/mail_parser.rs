//! mail-parser alone, configured exactly as chaff calls it
//! (`chaff::tokenize::message_parser()`). Used to tell a chaff bug from a
//! dependency bug, and to minimise dependency crashes
//! (`cargo fuzz tmin mail_parser FILE`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = chaff::tokenize::message_parser().parse(data);
});
