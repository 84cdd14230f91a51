//! Hostile mail, generated deterministically (issue #17, "hostile input at
//! scale"). One generator serves two users: the integration test
//! `tests/hostile.rs` (every category at [`Scale::TEST`], so a debug build
//! stays fast) and `examples/nasty_mail.rs` (the full-size corpus at
//! [`Scale::FULL`], written to a directory and timed against a release
//! server). Same scale, same bytes: nothing here is random.
//!
//! Categories: deep multipart nesting, deep and base64-nested ("zip-bomb
//! like") `message/rfc822`, a fan-out of attached messages, 100k headers,
//! one huge header, a 10 MiB single line (just over and just under the
//! default `--max-message-bytes`), every WHATWG charset label (as RFC 2047
//! words and as MIME parts), broken base64 and quoted-printable, NUL bytes,
//! overlong and otherwise invalid UTF-8, bidi (RTL) overrides, and HTML with
//! a million tags.

#![allow(dead_code)] // each user calls a different part

use std::fmt::Write as _;

/// How big each category is.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Nested `multipart/mixed` levels.
    pub multipart_depth: usize,
    /// Nested `message/rfc822` levels (plain, each level a few bytes).
    pub rfc822_depth: usize,
    /// Levels of base64-encoded `message/rfc822` inside each other; each
    /// level is 4/3 of the one inside it.
    pub rfc822_base64_depth: usize,
    /// Attached messages × parts in each (a wide tree).
    pub fan_out: usize,
    /// Header fields in the many-headers message.
    pub headers: usize,
    /// Bytes of the one huge (folded) Subject.
    pub header_bytes: usize,
    /// The size cap the single-line messages straddle
    /// (`--max-message-bytes`): one is just over, one just under.
    pub message_cap: usize,
    /// Bytes of each broken base64 / QP body.
    pub broken_bytes: usize,
    /// Tags in the huge HTML messages.
    pub html_tags: usize,
}

impl Scale {
    /// The full-size corpus: the sizes the issue names (100k headers, a
    /// 10 MiB line against the default 10 MiB cap, 1M HTML tags).
    pub const FULL: Scale = Scale {
        multipart_depth: 10_000,
        rfc822_depth: 100_000,
        rfc822_base64_depth: 40,
        fan_out: 300,
        headers: 100_000,
        header_bytes: 4 << 20,
        message_cap: 10 << 20,
        broken_bytes: 2 << 20,
        html_tags: 1_000_000,
    };

    /// Every category, small enough for a debug-build test; the test server
    /// runs with caps scaled down to match (see `tests/hostile.rs`).
    pub const TEST: Scale = Scale {
        multipart_depth: 500,
        rfc822_depth: 5_000,
        rfc822_base64_depth: 16,
        fan_out: 30,
        headers: 5_000,
        header_bytes: 200 << 10,
        message_cap: 1 << 20,
        broken_bytes: 100 << 10,
        html_tags: 50_000,
    };
}

/// One generated message.
pub struct Nasty {
    /// A file name: category and what makes it nasty.
    pub name: String,
    pub bytes: Vec<u8>,
}

fn nasty(name: &str, bytes: Vec<u8>) -> Nasty {
    Nasty {
        name: name.to_string(),
        bytes,
    }
}

/// A small deterministic generator (xorshift64*), for filler text.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const WORDS: &[&str] = &[
    "the", "meeting", "budget", "review", "notes", "please", "attached", "quarter", "team",
    "schedule", "project", "update", "thanks", "regards", "tomorrow", "office", "report",
    "numbers", "draft", "comments", "agenda", "client", "invoice", "delivery", "release",
    "planning", "section", "change", "question", "answer", "weekend", "travel", "lunch", "friday",
    "monday", "server", "customer", "contract", "summary", "proposal", "offer",
];

fn filler(rng: &mut Rng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 16);
    let mut line = 0;
    while s.len() < bytes {
        let w = WORDS[rng.below(WORDS.len())];
        s.push_str(w);
        line += w.len() + 1;
        if line > 70 {
            s.push_str(".\r\n");
            line = 0;
        } else {
            s.push(' ');
        }
    }
    s
}

fn headers(subject: &str, extra: &str) -> String {
    format!(
        "From: Hostile Sender <hostile@nasty.example>\r\n\
         To: victim@example.org\r\n\
         Subject: {subject}\r\n\
         Date: Sat, 05 Dec 2026 04:00:00 +0000\r\n\
         Message-ID: <{}@nasty.example>\r\n\
         MIME-Version: 1.0\r\n{extra}",
        subject.len()
    )
}

/// A normal ~10 KB plain-text message: the yardstick the nasty ones are
/// timed against.
pub fn normal_10k() -> Vec<u8> {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut m = headers(
        "Notes from the quarterly planning meeting",
        "Content-Type: text/plain; charset=utf-8\r\n",
    );
    m.push_str("\r\n");
    let body = filler(&mut rng, 10_000 - m.len());
    m.push_str(&body);
    m.into_bytes()
}

/// The whole corpus at `scale`, in a fixed order.
pub fn corpus(scale: &Scale) -> Vec<Nasty> {
    let mut out = vec![
        nasty("multipart-deep", multipart_deep(scale.multipart_depth)),
        nasty("rfc822-deep", rfc822_deep(scale.rfc822_depth)),
        nasty(
            "rfc822-base64-nested",
            rfc822_base64_nested(scale.rfc822_base64_depth),
        ),
        nasty("rfc822-fan-out", rfc822_fan_out(scale.fan_out)),
        nasty("headers-many", headers_many(scale.headers)),
        nasty("header-huge-folded", header_huge(scale.header_bytes)),
        nasty("line-over-cap", single_line(scale.message_cap + 1)),
        nasty("line-under-cap", single_line(scale.message_cap - 1024)),
        nasty("charsets-encoded-words", charsets_words()),
        nasty("charsets-parts", charsets_parts()),
        nasty("broken-base64", broken_base64(scale.broken_bytes)),
        nasty("broken-qp", broken_qp(scale.broken_bytes)),
        nasty("nul-bytes", nul_bytes(scale.broken_bytes)),
        nasty("overlong-utf8", overlong_utf8(scale.broken_bytes)),
        nasty("rtl-overrides", rtl_overrides(scale.broken_bytes)),
        nasty("html-tags-flat", html_flat(scale.html_tags)),
        nasty("html-tags-nested", html_nested(scale.html_tags)),
        nasty("html-links", html_links(scale.html_tags / 10)),
    ];
    out.push(nasty("normal-10k", normal_10k()));
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64, lines of 76 characters.
fn base64(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len() * 4 / 3 + data.len() / 38 + 8);
    let mut col = 0;
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
        col += 4;
        if col >= 76 {
            s.push_str("\r\n");
            col = 0;
        }
    }
    s.push_str("\r\n");
    s
}

fn multipart_deep(depth: usize) -> Vec<u8> {
    let mut m = headers("deep multipart", "");
    for i in 0..depth {
        let _ = write!(
            m,
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        );
    }
    m.push_str("Content-Type: text/plain\r\n\r\nthe innermost part says free money\r\n");
    for i in (0..depth).rev() {
        let _ = write!(m, "--b{i}--\r\n");
    }
    m.into_bytes()
}

fn rfc822_deep(depth: usize) -> Vec<u8> {
    let mut m = headers("deep rfc822", "Content-Type: message/rfc822\r\n");
    m.push_str("\r\n");
    m.reserve(depth * 32);
    for _ in 0..depth {
        m.push_str("Content-Type: message/rfc822\r\n\r\n");
    }
    m.push_str("Subject: the core\r\n\r\nthe innermost message says free money\r\n");
    m.into_bytes()
}

/// Attached messages, each base64-encoded inside the next, until `depth`
/// levels or 4 MiB (each level is 4/3 of the last).
fn rfc822_base64_nested(depth: usize) -> Vec<u8> {
    let mut rng = Rng(7);
    let mut inner = headers("level 0", "Content-Type: text/plain\r\n");
    inner.push_str("\r\n");
    inner.push_str(&filler(&mut rng, 400));
    let mut inner = inner.into_bytes();
    for level in 1..=depth {
        let next = headers(
            &format!("level {level}"),
            "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n",
        ) + "\r\n"
            + &base64(&inner);
        if next.len() > 4 << 20 {
            break;
        }
        inner = next.into_bytes();
    }
    inner
}

fn rfc822_fan_out(n: usize) -> Vec<u8> {
    let mut rng = Rng(11);
    let mut m = headers(
        "fan-out",
        "Content-Type: multipart/mixed; boundary=\"outer\"\r\n",
    );
    m.push_str("\r\n");
    for i in 0..n {
        let _ = write!(
            m,
            "--outer\r\nContent-Type: message/rfc822\r\n\r\n\
             Subject: attached {i}\r\nContent-Type: multipart/mixed; boundary=\"in{i}\"\r\n\r\n"
        );
        for j in 0..n {
            let _ = write!(m, "--in{i}\r\nContent-Type: text/plain\r\n\r\npart {j} ");
            m.push_str(&filler(&mut rng, 20));
            m.push_str("\r\n");
        }
        let _ = write!(m, "--in{i}--\r\n");
    }
    m.push_str("--outer--\r\n");
    m.into_bytes()
}

fn headers_many(n: usize) -> Vec<u8> {
    let mut m = headers("many headers", "");
    m.reserve(n * 48);
    for i in 0..n {
        if i % 10 == 0 {
            let _ = write!(
                m,
                "Received: from h{i}.relay.example ([10.{}.{}.{}]) by mx.example; Sat, 5 Dec 2026\r\n",
                i >> 16 & 255,
                i >> 8 & 255,
                i & 255
            );
        } else {
            let _ = write!(m, "X-Nasty-{i}: value {i} cheap pills\r\n");
        }
    }
    m.push_str("\r\nbody after many headers\r\n");
    m.into_bytes()
}

fn header_huge(bytes: usize) -> Vec<u8> {
    let mut rng = Rng(13);
    let mut subject = String::with_capacity(bytes + 80);
    while subject.len() < bytes {
        subject.push_str(WORDS[rng.below(WORDS.len())]);
        subject.push_str(if rng.below(8) == 0 { "\r\n " } else { " " });
    }
    let mut m = headers(&subject, "");
    m.push_str("\r\nbody after a huge subject\r\n");
    m.into_bytes()
}

/// Exactly `total` bytes: headers, then one line of words without a line
/// break.
fn single_line(total: usize) -> Vec<u8> {
    let mut rng = Rng(17);
    let mut m = headers("one line", "Content-Type: text/plain\r\n");
    m.push_str("\r\n");
    m.reserve(total.saturating_sub(m.len()));
    while m.len() < total {
        m.push_str(WORDS[rng.below(WORDS.len())]);
        m.push(' ');
    }
    m.truncate(total);
    m.into_bytes()
}

/// Labels mail software has been seen to send that are no WHATWG label.
const ODD_LABELS: &[&str] = &[
    "utf-7",
    "unicode-1-1-utf-7",
    "x-unknown",
    "",
    "iso-8859-99",
    "utf-32",
    "ucs-4",
    "x-user-defined-but-not",
    "\"quoted\"",
    "=?",
    "a\u{0}b",
];

fn all_labels() -> Vec<String> {
    let mut long = "x".repeat(1000);
    long.insert_str(0, "iso-");
    CHARSET_LABELS
        .iter()
        .chain(ODD_LABELS)
        .map(|l| l.to_string())
        .chain([long])
        .collect()
}

/// Bytes 0x20..=0xFF with some words: every charset decodes something.
fn high_bytes() -> Vec<u8> {
    let mut b = b"caf\xe9 na\xefve \xa4 \x8e\x9a ".to_vec();
    b.extend(0x20u8..=0xFF);
    b
}

fn charsets_words() -> Vec<u8> {
    let sample = base64(&high_bytes()).replace("\r\n", "");
    let mut extra = String::new();
    for (i, label) in all_labels().iter().enumerate() {
        let _ = write!(
            extra,
            "X-Cs-{i}: =?{label}?B?{sample}?= =?{label}?Q?caf=E9_=A4=8E=9A_free?=\r\n"
        );
    }
    let mut m = headers("=?shift_jis?B?gsCCwoLE?= =?koi8-r?Q?=F0=D2=C9?=", &extra);
    m.push_str("\r\nevery charset label\r\n");
    m.into_bytes()
}

fn charsets_parts() -> Vec<u8> {
    let mut m = headers(
        "every charset as a part",
        "Content-Type: multipart/mixed; boundary=\"cs\"\r\n",
    )
    .into_bytes();
    m.extend_from_slice(b"\r\n");
    for (i, label) in all_labels().iter().enumerate() {
        let kind = if i % 2 == 0 { "plain" } else { "html" };
        m.extend_from_slice(
            format!(
                "--cs\r\nContent-Type: text/{kind}; charset=\"{label}\"\r\n\
                 Content-Transfer-Encoding: 8bit\r\n\r\n"
            )
            .as_bytes(),
        );
        m.extend_from_slice(&high_bytes());
        // An odd byte count, for the UTF-16 labels.
        m.extend_from_slice(b" x\r\n");
    }
    m.extend_from_slice(b"--cs--\r\n");
    m
}

fn part(m: &mut Vec<u8>, boundary: &str, head: &str, body: &[u8]) {
    m.extend_from_slice(format!("--{boundary}\r\n{head}\r\n\r\n").as_bytes());
    m.extend_from_slice(body);
    m.extend_from_slice(b"\r\n");
}

fn broken_base64(bytes: usize) -> Vec<u8> {
    let mut rng = Rng(19);
    let each = bytes / 6;
    let text = filler(&mut rng, each * 3 / 4);
    let good = base64(text.as_bytes());
    let mut m = headers(
        "broken base64",
        "Content-Type: multipart/mixed; boundary=bb\r\n",
    )
    .into_bytes();
    m.extend_from_slice(b"\r\n");
    let b64 = "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64";
    // Garbage characters interleaved.
    let garbage: String = good
        .chars()
        .enumerate()
        .map(|(i, c)| if i % 7 == 3 { '!' } else { c })
        .collect();
    part(&mut m, "bb", b64, garbage.as_bytes());
    // Truncated: a length that is 1 mod 4, no padding.
    let cut: String = good
        .replace("\r\n", "")
        .chars()
        .take(each / 4 * 4 + 1)
        .collect();
    part(&mut m, "bb", b64, cut.as_bytes());
    // Padding in the middle of every line.
    part(&mut m, "bb", b64, good.replace("\r\n", "==\r\n").as_bytes());
    // One line, no breaks at all.
    part(&mut m, "bb", b64, good.replace("\r\n", "").as_bytes());
    // Binary declared as HTML.
    let binary: Vec<u8> = (0..each * 3 / 4).map(|_| rng.next() as u8).collect();
    part(
        &mut m,
        "bb",
        "Content-Type: text/html\r\nContent-Transfer-Encoding: base64",
        base64(&binary).as_bytes(),
    );
    // Declared base64, but plain text.
    part(&mut m, "bb", b64, text.as_bytes());
    // Broken encoded words in the part headers.
    part(
        &mut m,
        "bb",
        "Content-Type: text/plain\r\nSubject: =?utf-8?B?!!!?= =?utf-8?B?QQ?= =?utf-8?X?abc?=",
        b"broken words",
    );
    m.extend_from_slice(b"--bb--\r\n");
    m
}

fn broken_qp(bytes: usize) -> Vec<u8> {
    let mut rng = Rng(23);
    let each = bytes / 6;
    let qp =
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable";
    let mut m = headers(
        "broken quoted-printable",
        "Content-Type: multipart/mixed; boundary=qq\r\n",
    )
    .into_bytes();
    m.extend_from_slice(b"\r\n");
    // Invalid escapes.
    let bad: String = filler(&mut rng, each).replace(' ', "=ZZ=G1=\u{e9}");
    part(&mut m, "qq", qp, bad.as_bytes());
    // Every line a soft break: one long decoded line.
    let soft = filler(&mut rng, each).replace("\r\n", "=\r\n");
    part(&mut m, "qq", qp, soft.as_bytes());
    // One escaped word, megabytes long.
    part(&mut m, "qq", qp, "=41".repeat(each / 3).as_bytes());
    // NULs and a lone "=" at the very end.
    let mut nul = "=00a".repeat(each / 4);
    nul.push('=');
    part(&mut m, "qq", qp, nul.as_bytes());
    // Ten-thousand-character lines of "=".
    let eq = "=".repeat(10_000) + "\r\n";
    part(
        &mut m,
        "qq",
        qp,
        eq.repeat((each / eq.len()).max(1)).as_bytes(),
    );
    // QP declared, HTML inside with escapes in tags.
    part(
        &mut m,
        "qq",
        "Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable",
        "<a href=3D\"http://qp.example/=\r\nx\">cl=\r\nick</a><scr=\r\nipt>=3C</script>"
            .repeat(each / 80)
            .as_bytes(),
    );
    m.extend_from_slice(b"--qq--\r\n");
    m
}

fn nul_bytes(bytes: usize) -> Vec<u8> {
    let mut rng = Rng(29);
    let mut m = b"From: Nul\0Sender <nul\0@nasty.example>\r\nTo: victim@example.org\r\n\
        Subject: nul\0bytes\0free\0money\r\nX-N\0ul: v\0alue\r\n\
        Message-ID: <nul\0@nasty.example>\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=\"n\0b\"\r\n\r\n"
        .to_vec();
    let text = filler(&mut rng, bytes / 3);
    let with_nuls: Vec<u8> = text
        .bytes()
        .enumerate()
        .flat_map(|(i, b)| if i % 5 == 0 { vec![0, b] } else { vec![b] })
        .collect();
    part(&mut m, "n\0b", "Content-Type: text/plain", &with_nuls);
    part(
        &mut m,
        "n\0b",
        "Content-Type: text/html",
        &vec![0u8; bytes / 3],
    );
    part(
        &mut m,
        "n\0b",
        "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64",
        base64(&vec![0u8; bytes / 4]).as_bytes(),
    );
    m.extend_from_slice(b"--n\0b--\r\n");
    m
}

/// Overlong forms, surrogates, code points past U+10FFFF, 5- and 6-byte
/// forms, stray continuation bytes, truncated sequences.
const BAD_UTF8: &[&[u8]] = &[
    b"\xc0\xaf",
    b"\xc1\xbf",
    b"\xe0\x80\xaf",
    b"\xf0\x80\x80\xaf",
    b"\xf8\x88\x80\x80\xaf",
    b"\xfc\x84\x80\x80\x80\xaf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xfe\xff",
    b"\x80",
    b"\xbf\xbf",
    b"\xe2\x82",
    b"\xf0\x9f\x98",
];

fn overlong_utf8(bytes: usize) -> Vec<u8> {
    let mut rng = Rng(31);
    let mut m =
        b"From: \xc0\xafroot\xed\xa0\x80 <over@nasty.example>\r\nTo: victim@example.org\r\n\
        Subject: fr\xc0\xa5e m\xe0\x80\xafoney =?utf-8?B?wK/goK8=?=\r\n\
        Message-ID: <overlong@nasty.example>\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/alternative; boundary=ov\r\n\r\n"
            .to_vec();
    let mut body = Vec::with_capacity(bytes / 2 + 64);
    while body.len() < bytes / 2 {
        body.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes());
        body.extend_from_slice(BAD_UTF8[rng.below(BAD_UTF8.len())]);
        body.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
    }
    part(
        &mut m,
        "ov",
        "Content-Type: text/plain; charset=utf-8",
        &body,
    );
    let mut html = b"<html><body><a href=\"http://ov\xc0\xaf.example/\xe0\x80\xaf\">".to_vec();
    html.extend_from_slice(&body);
    html.extend_from_slice(b"</a></body></html>");
    part(
        &mut m,
        "ov",
        "Content-Type: text/html; charset=utf-8",
        &html,
    );
    m.extend_from_slice(b"--ov--\r\n");
    m
}

fn rtl_overrides(bytes: usize) -> Vec<u8> {
    let mut rng = Rng(37);
    let bidi = [
        '\u{202e}', '\u{202d}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{200f}',
        '\u{061c}', '\u{202c}',
    ];
    let mut text = String::with_capacity(bytes / 2 + 64);
    while text.len() < bytes / 2 {
        text.push_str(WORDS[rng.below(WORDS.len())]);
        text.push(bidi[rng.below(bidi.len())]);
        text.push_str("exe.fdp");
        text.push(if rng.below(12) == 0 { '\n' } else { ' ' });
    }
    let mut m =
        "From: \"\u{202e}moc.lapyap\u{202c}\" <rtl@nasty.example>\r\nTo: victim@example.org\r\n\
         Subject: invoice\u{202e}fdp.exe \u{2067}free\u{2069} money\r\n\
         Message-ID: <rtl@nasty.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=rtl\r\n\r\n"
            .as_bytes()
            .to_vec();
    part(
        &mut m,
        "rtl",
        "Content-Type: text/plain; charset=utf-8",
        text.as_bytes(),
    );
    let html = format!(
        "<a href=\"http://\u{202e}elgoog.example/\">\u{202e}moc.knab\u{202c}</a><p>{text}</p>"
    );
    part(
        &mut m,
        "rtl",
        "Content-Type: text/html; charset=utf-8",
        html.as_bytes(),
    );
    part(
        &mut m,
        "rtl",
        "Content-Type: application/octet-stream\r\n\
         Content-Disposition: attachment; filename*=utf-8''photo%E2%80%AEgpj.exe",
        base64(b"MZ not really").as_bytes(),
    );
    m.extend_from_slice(b"--rtl--\r\n");
    m
}

fn html_message(subject: &str, html: &str) -> Vec<u8> {
    let mut m = headers(subject, "Content-Type: text/html; charset=utf-8\r\n");
    m.push_str("\r\n");
    m.push_str(html);
    m.into_bytes()
}

/// `tags` tags, open and close counted apart, side by side.
fn html_flat(tags: usize) -> Vec<u8> {
    let mut rng = Rng(41);
    let names = ["b", "i", "span", "div", "p", "font", "td", "u"];
    let mut h = String::with_capacity(tags * 8);
    h.push_str("<html><body>");
    for _ in 0..tags / 2 {
        let t = names[rng.below(names.len())];
        let _ = write!(h, "<{t}>{}</{t}>", WORDS[rng.below(WORDS.len())]);
    }
    h.push_str("</body></html>");
    html_message("a million tags", &h)
}

/// `tags` unclosed tags, each inside the last.
fn html_nested(tags: usize) -> Vec<u8> {
    let mut h = String::with_capacity(tags * 6);
    h.push_str("<html><body>");
    for i in 0..tags {
        h.push_str(if i % 2 == 0 { "<div>" } else { "<span>" });
    }
    h.push_str("free money at the bottom");
    html_message("a million nested tags", &h)
}

fn html_links(links: usize) -> Vec<u8> {
    let mut h = String::with_capacity(links * 56);
    h.push_str("<html><body>");
    for i in 0..links {
        let _ = write!(
            h,
            "<a href=\"http://l{i}.example/p?i={i}\">click {i}</a><img src=\"http://i{i}.example/t.gif\">"
        );
    }
    h.push_str("</body></html>");
    html_message("links", &h)
}

/// Every WHATWG encoding label (encoding_rs 0.8 `LABELS_SORTED`).
pub const CHARSET_LABELS: &[&str] = &[
    "l1",
    "l2",
    "l3",
    "l4",
    "l5",
    "l6",
    "l9",
    "866",
    "mac",
    "koi",
    "gbk",
    "big5",
    "utf8",
    "koi8",
    "sjis",
    "ucs-2",
    "ms932",
    "cp866",
    "utf-8",
    "cp819",
    "ascii",
    "x-gbk",
    "greek",
    "cp1250",
    "cp1251",
    "latin1",
    "gb2312",
    "cp1252",
    "latin2",
    "cp1253",
    "latin3",
    "cp1254",
    "latin4",
    "cp1255",
    "csbig5",
    "latin5",
    "utf-16",
    "cp1256",
    "ibm866",
    "latin6",
    "cp1257",
    "cp1258",
    "greek8",
    "ibm819",
    "arabic",
    "visual",
    "korean",
    "euc-jp",
    "koi8-r",
    "koi8_r",
    "euc-kr",
    "x-sjis",
    "koi8-u",
    "hebrew",
    "tis-620",
    "gb18030",
    "ksc5601",
    "gb_2312",
    "dos-874",
    "cn-big5",
    "unicode",
    "chinese",
    "logical",
    "cskoi8r",
    "cseuckr",
    "koi8-ru",
    "x-cp1250",
    "ksc_5601",
    "x-cp1251",
    "iso88591",
    "csgb2312",
    "x-cp1252",
    "iso88592",
    "x-cp1253",
    "iso88593",
    "ecma-114",
    "x-cp1254",
    "iso88594",
    "x-cp1255",
    "iso88595",
    "x-x-big5",
    "x-cp1256",
    "csibm866",
    "iso88596",
    "x-cp1257",
    "iso88597",
    "asmo-708",
    "ecma-118",
    "elot_928",
    "x-cp1258",
    "iso88598",
    "iso88599",
    "cyrillic",
    "utf-16be",
    "utf-16le",
    "us-ascii",
    "ms_kanji",
    "x-euc-jp",
    "iso885910",
    "iso8859-1",
    "iso885911",
    "iso8859-2",
    "iso8859-3",
    "iso885913",
    "iso8859-4",
    "iso885914",
    "iso8859-5",
    "iso885915",
    "iso8859-6",
    "iso8859-7",
    "iso8859-8",
    "iso-ir-58",
    "iso8859-9",
    "csunicode",
    "macintosh",
    "shift-jis",
    "shift_jis",
    "iso-ir-100",
    "iso8859-10",
    "iso-ir-110",
    "gb_2312-80",
    "iso-8859-1",
    "iso_8859-1",
    "iso-ir-101",
    "iso8859-11",
    "iso-8859-2",
    "iso_8859-2",
    "hz-gb-2312",
    "iso-8859-3",
    "iso_8859-3",
    "iso8859-13",
    "iso-8859-4",
    "iso_8859-4",
    "iso8859-14",
    "iso-ir-144",
    "iso-8859-5",
    "iso_8859-5",
    "iso8859-15",
    "iso-8859-6",
    "iso_8859-6",
    "iso-ir-126",
    "iso-8859-7",
    "iso_8859-7",
    "iso-ir-127",
    "iso-ir-157",
    "iso-8859-8",
    "iso_8859-8",
    "iso-ir-138",
    "iso-ir-148",
    "iso-8859-9",
    "iso_8859-9",
    "iso-ir-109",
    "iso-ir-149",
    "big5-hkscs",
    "csshiftjis",
    "iso-8859-10",
    "iso-8859-11",
    "csisolatin1",
    "csisolatin2",
    "iso-8859-13",
    "csisolatin3",
    "iso-8859-14",
    "windows-874",
    "csisolatin4",
    "iso-8859-15",
    "iso_8859-15",
    "csisolatin5",
    "iso-8859-16",
    "csisolatin6",
    "windows-949",
    "csisolatin9",
    "csiso88596e",
    "csiso88598e",
    "unicodefffe",
    "unicodefeff",
    "csmacintosh",
    "csiso88596i",
    "csiso88598i",
    "windows-31j",
    "x-mac-roman",
    "iso-2022-cn",
    "iso-2022-jp",
    "csiso2022jp",
    "iso-2022-kr",
    "csiso2022kr",
    "replacement",
    "windows-1250",
    "windows-1251",
    "windows-1252",
    "windows-1253",
    "windows-1254",
    "windows-1255",
    "windows-1256",
    "windows-1257",
    "windows-1258",
    "iso-8859-6-e",
    "iso-8859-8-e",
    "iso-8859-6-i",
    "iso-8859-8-i",
    "sun_eu_greek",
    "csksc56011987",
    "unicode20utf8",
    "unicode11utf8",
    "ks_c_5601-1987",
    "ansi_x3.4-1968",
    "ks_c_5601-1989",
    "x-mac-cyrillic",
    "x-user-defined",
    "csiso58gb231280",
    "iso-10646-ucs-2",
    "iso_8859-1:1987",
    "iso_8859-2:1987",
    "iso_8859-6:1987",
    "iso_8859-7:1987",
    "iso_8859-3:1988",
    "iso_8859-4:1988",
    "iso_8859-5:1988",
    "iso_8859-8:1988",
    "x-unicode20utf8",
    "iso_8859-9:1989",
    "csisolatingreek",
    "x-mac-ukrainian",
    "iso-2022-cn-ext",
    "csisolatinarabic",
    "csisolatinhebrew",
    "unicode-1-1-utf-8",
    "csisolatincyrillic",
    "cseucpkdfmtjapanese",
];
