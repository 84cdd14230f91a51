//! The fuzz bytes wrapped in a MIME skeleton, so libFuzzer starts inside the
//! interesting parser states (multipart walk, transfer decoding, charsets,
//! HTML, nested messages) instead of having to discover the headers first.
//!
//! Byte 0 picks the Content-Transfer-Encoding, byte 1 the skeleton shape,
//! byte 2 the charset; the rest is the payload, placed in one or more parts.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

const ENCODINGS: &[&str] = &["7bit", "8bit", "base64", "quoted-printable", "binary", "x-uuencode", "BASE64 ", "bogus"];
const CHARSETS: &[&str] = &["utf-8", "iso-8859-1", "windows-1252", "shift_jis", "iso-2022-jp", "koi8-r", "gb2312", "utf-16", "x-unknown", "\"utf-8\""];

fn build(data: &[u8]) -> Vec<u8> {
    let (head, payload) = data.split_at(data.len().min(3));
    let pick = |i: usize| head.get(i).copied().unwrap_or(0) as usize;
    let cte = ENCODINGS[pick(0) % ENCODINGS.len()];
    let charset = CHARSETS[pick(2) % CHARSETS.len()];
    // Split the payload in two halves for the shapes with two parts.
    let (a, b) = payload.split_at(payload.len() / 2);

    let mut m = Vec::with_capacity(payload.len() + 1024);
    m.extend_from_slice(
        b"From: \"Fuzz\" <fuzz@example.com>\r\n\
          To: victim@example.org\r\n\
          Subject: =?utf-8?b?ZnV6eg==?= test\r\n\
          Message-ID: <x@mailer.example.net>\r\n\
          Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=example.com; dkim=pass header.d=example.com\r\n\
          MIME-Version: 1.0\r\n",
    );
    let part = |m: &mut Vec<u8>, ctype: &str, body: &[u8]| {
        m.extend_from_slice(format!("Content-Type: {ctype}; charset={charset}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n").as_bytes());
        m.extend_from_slice(body);
        m.extend_from_slice(b"\r\n");
    };
    match pick(1) % 6 {
        // Single HTML part.
        0 => part(&mut m, "text/html", payload),
        // multipart/mixed: a text part and an HTML part.
        1 => {
            m.extend_from_slice(b"Content-Type: multipart/mixed; boundary=x\r\n\r\npreamble\r\n--x\r\n");
            part(&mut m, "text/plain", a);
            m.extend_from_slice(b"--x\r\n");
            part(&mut m, "text/html", b);
            m.extend_from_slice(b"--x--\r\nepilogue\r\n");
        }
        // multipart/alternative whose boundary the payload may also contain,
        // with no closing delimiter.
        2 => {
            m.extend_from_slice(b"Content-Type: multipart/alternative; boundary=\"x\"\r\n\r\n--x\r\n");
            part(&mut m, "text/html", payload);
        }
        // Nested message/rfc822 inside a multipart; the payload is the whole
        // inner message (headers and all), so the fuzzer controls its MIME.
        3 => {
            m.extend_from_slice(b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n");
            part(&mut m, "text/plain", a);
            m.extend_from_slice(b"--x\r\nContent-Type: message/rfc822\r\n\r\n");
            m.extend_from_slice(b);
            m.extend_from_slice(b"\r\n--x--\r\n");
        }
        // Payload supplies the multipart body itself (its own delimiters).
        4 => {
            m.extend_from_slice(b"Content-Type: multipart/related; boundary=x\r\n\r\n");
            m.extend_from_slice(payload);
        }
        // Attachment with a filename, then an HTML part.
        _ => {
            m.extend_from_slice(b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n");
            m.extend_from_slice(b"Content-Disposition: attachment; filename=\"a.pdf.exe\"\r\n");
            part(&mut m, "application/octet-stream", a);
            m.extend_from_slice(b"--x\r\n");
            part(&mut m, "text/html", b);
            m.extend_from_slice(b"--x--\r\n");
        }
    }
    m
}

fuzz_target!(|data: &[u8]| {
    let msg = build(data);
    common::check_message(&msg);
});
