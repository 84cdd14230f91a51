//! The scan cap: how much of a message the MIME parser is ever given.
//!
//! Every other cap ([`Limits`]) bounds what chaff reads *after* mail-parser
//! has parsed the whole message, and mail-parser's work grows with the
//! message: 100,000 nested `message/rfc822` levels, a million HTML tags or a
//! fan-out of attached messages cost 50–150 ms to parse although chaff
//! reads 20 levels, 100 parts and 2 MiB of text of them (docs/PERFORMANCE.md
//! "Hostile mail at scale"). So a message whose body is longer than
//! [`Limits::max_scan_bytes`] is parsed from a prefix: its header block
//! (up to [`Limits::max_header_bytes`]) and the first `max_scan_bytes` of
//! its body, as SpamAssassin reads only the first 50 KB of each text part
//! and spamc skips mail over 500 KB. Spam puts its pitch first; what lies
//! past the cap in real mail is attachments, which chaff describes but
//! never reads. A message within the caps is parsed as it is, byte for
//! byte, so its token ids do not change.

use super::Limits;

/// Bytes looked at past the cap for the end of the line the cap falls in,
/// so that a cut lands between lines (whole base64 lines and boundary
/// lines) rather than inside one. A line longer than this is cut mid-line.
const LINE_SLACK: usize = 4096;

/// A boundary longer than RFC 2046's 70 characters is not one we close.
const MAX_BOUNDARY: usize = 70;

/// Boundaries considered for closing, the first declared (outermost)
/// first. Real mail declares a handful; a 10,000-deep nest declares one per
/// level, and chaff reads 20 levels (`max_mime_depth`) of it anyway. Keeps
/// the closing work linear in the prefix.
const MAX_BOUNDARIES: usize = 64;

/// Whether `line` (without its line break) continues a header block: a
/// field (`name:` with a printable name, no spaces) or, after one, a
/// folded continuation. The first line that is neither ends the block;
/// shared with `repair_header_separator` so both agree where headers end.
pub(super) fn is_header_line(line: &[u8], seen_field: bool) -> bool {
    let continuation = seen_field && matches!(line.first(), Some(b' ' | b'\t'));
    let field = line
        .iter()
        .position(|&b| b == b':')
        .is_some_and(|colon| colon > 0 && line[..colon].iter().all(|&b| (33..=126).contains(&b)));
    continuation || field
}

/// `line` without its trailing `\n` or `\r\n`.
fn content(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Where the header block ends, as far as the scan looked.
struct HeaderEnd {
    /// The end of the last whole header field that ends within
    /// `max_header_bytes`: where to cut a header block that is longer.
    last_field_end: usize,
    /// Where the block ends (the blank line, or the first line that is not
    /// a header line), if within the bytes looked at.
    end: Option<usize>,
    /// Where the body starts: after the blank line, or at the line that
    /// ended the block when the blank line is missing.
    body: usize,
}

/// Walks header lines, looking at no more than `limit` bytes.
fn header_end(raw: &[u8], max_header_bytes: usize, limit: usize) -> HeaderEnd {
    let raw = &raw[..raw.len().min(limit)];
    let mut pos = 0;
    let mut seen_field = false;
    let mut last_field_end = 0;
    while pos < raw.len() {
        let Some(nl) = raw[pos..].iter().position(|&b| b == b'\n') else {
            // The line runs past what we look at: a body line (a 10 MiB
            // line after headers without a blank line) still ends the block.
            if !is_header_line(&raw[pos..], seen_field) {
                return HeaderEnd {
                    last_field_end,
                    end: Some(pos),
                    body: pos,
                };
            }
            break;
        };
        let end = pos + nl + 1;
        let line = content(&raw[pos..end]);
        if line.is_empty() {
            return HeaderEnd {
                last_field_end,
                end: Some(pos),
                body: end,
            };
        }
        if !is_header_line(line, seen_field) {
            return HeaderEnd {
                last_field_end,
                end: Some(pos),
                body: pos,
            };
        }
        seen_field = true;
        // A field ends where the next line does not continue it.
        let next_continues = matches!(raw.get(end), Some(b' ' | b'\t'));
        if !next_continues && end <= max_header_bytes {
            last_field_end = end;
        }
        pos = end;
    }
    HeaderEnd {
        last_field_end,
        end: None,
        body: raw.len(),
    }
}

/// Where to cut `body` to at most `max` bytes: after the last line break
/// within the last [`LINE_SLACK`] bytes before `max`, else at `max`.
fn cut_point(body: &[u8], max: usize) -> usize {
    let from = max.saturating_sub(LINE_SLACK);
    match body[from..max].iter().rposition(|&b| b == b'\n') {
        Some(i) => from + i + 1,
        None => max,
    }
}

/// Calls `f` with each position of `byte` in `text` at or after `from`,
/// in order, until `f` returns false. `memchr`'s SIMD search: text without
/// the byte costs a fraction of a ns per byte, and HTML, where `<` and `/`
/// are in nearly every 32 bytes, pays per hit rather than per byte.
pub(super) fn each_position(text: &[u8], from: usize, byte: u8, mut f: impl FnMut(usize) -> bool) {
    let from = from.min(text.len());
    for i in memchr::memchr_iter(byte, &text[from..]) {
        if !f(from + i) {
            return;
        }
    }
}

/// The multipart boundaries declared (`boundary=`) in `text`.
fn declared_boundaries(text: &[u8]) -> Vec<&[u8]> {
    const KEY: &[u8] = b"boundary";
    let mut found: Vec<&[u8]> = Vec::new();
    // At each `=`, whether `boundary` precedes it: `=` is far rarer than
    // the `b` a forward scan would stop at.
    each_position(text, 0, b'=', |eq| {
        // The byte before first: quoted-printable text is full of `=`.
        if eq < KEY.len()
            || text[eq - 1] | 0x20 != b'y'
            || !text[eq - KEY.len()..eq].eq_ignore_ascii_case(KEY)
        {
            return true;
        }
        let rest = &text[eq + 1..];
        let value = match rest.first() {
            Some(b'"') => rest[1..].split(|&b| b == b'"').next(),
            _ => rest
                .split(|&b| matches!(b, b';' | b' ' | b'\t' | b'\r' | b'\n'))
                .next(),
        };
        if let Some(v) = value
            && !v.is_empty()
            && v.len() <= MAX_BOUNDARY
            && !found.contains(&v)
        {
            found.push(v);
        }
        found.len() < MAX_BOUNDARIES
    });
    found
}

/// Closing delimiters (`--b--`) for the multiparts still open at the end
/// of `prefix`, innermost first. Without them the part the cut falls in
/// has no end, and mail-parser reads an unterminated part of a multipart
/// as an encoding problem: a cut base64 attachment would be read as text
/// (base64 debris as words) and a cut HTML part as plain text, tags and
/// all. A boundary counts as open when it is declared in the prefix and
/// its last delimiter line there is not a closing one.
fn closings(prefix: &[u8]) -> Vec<u8> {
    let declared = declared_boundaries(prefix);
    if declared.is_empty() {
        return Vec::new();
    }
    // (boundary, position of its last delimiter line, closed there?)
    let mut last: Vec<(&[u8], usize, bool)> = Vec::new();
    for (start, line) in delimiter_lines(prefix) {
        let Some(rest) = content(line).strip_prefix(b"--") else {
            continue;
        };
        let rest = trim_end(rest);
        let (b, closed) = match rest.strip_suffix(b"--") {
            Some(b) if declared.contains(&b) => (b, true),
            _ => (rest, false),
        };
        if !declared.contains(&b) {
            continue;
        }
        match last.iter_mut().find(|(x, _, _)| *x == b) {
            Some(entry) => *entry = (b, start, closed),
            None => last.push((b, start, closed)),
        }
    }
    last.retain(|&(_, _, closed)| !closed);
    last.sort_by_key(|&(_, at, _)| std::cmp::Reverse(at));
    let mut out = Vec::new();
    for (b, _, _) in last {
        out.extend_from_slice(b"\r\n--");
        out.extend_from_slice(b);
        out.extend_from_slice(b"--\r\n");
    }
    out
}

/// `text`'s lines that start with `--` (line breaks included) with their
/// start offsets: the candidates for delimiter lines. Found from the line
/// breaks with a SIMD search ([`each_position`]), not byte by byte: a
/// message over the scan cap has 256 KiB of lines to look at.
fn delimiter_lines(text: &[u8]) -> Vec<(usize, &[u8])> {
    let line_at = |start: usize| {
        let end = text[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |i| start + i + 1);
        (start, &text[start..end])
    };
    let mut found = Vec::new();
    if text.starts_with(b"--") {
        found.push(line_at(0));
    }
    each_position(text, 0, b'\n', |nl| {
        if text[nl + 1..].starts_with(b"--") {
            found.push(line_at(nl + 1));
        }
        true
    });
    found
}

fn trim_end(s: &[u8]) -> &[u8] {
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &s[..end]
}

/// Nested messages (`message/rfc822`, `message/global`) and digests
/// (`multipart/digest`, whose parts are messages) the parser is given.
/// mail-parser parses every level it is given, ~1 µs each (100,000 levels
/// in 3 MB; 8,000 in the first 256 KiB, ~7–13 ms), while chaff reads 20
/// levels (`max_mime_depth`) and 100 parts (`max_parts`): a message
/// declaring more than this is parsed up to the line that declares the
/// next one (`LimitHit::NestedMessages`). Real mail declares a handful
/// (at most 6 in a message of the SpamAssassin and TREC 2006 corpora).
pub(super) const MAX_NESTED_MESSAGES: usize = 128;

/// Whether `text` at `slash` (a `/`) is one of the media types
/// [`MAX_NESTED_MESSAGES`] counts, in any ASCII case.
fn nests_at(text: &[u8], slash: usize) -> bool {
    // The byte after first: most `/` are in URLs and end tags.
    if !matches!(
        text.get(slash + 1).map(|b| b | 0x20),
        Some(b'r' | b'g' | b'd')
    ) {
        return false;
    }
    let before = |word: &[u8]| {
        slash >= word.len() && text[slash - word.len()..slash].eq_ignore_ascii_case(word)
    };
    let after = |word: &[u8]| {
        text.get(slash + 1..slash + 1 + word.len())
            .is_some_and(|t| t.eq_ignore_ascii_case(word))
    };
    (before(b"message") && (after(b"rfc822") || after(b"global")))
        || (before(b"multipart") && after(b"digest"))
}

/// Where in `text`, at or after `from`, the nested-message declaration
/// past the first `skip` is (see [`nests_at`]).
fn nth_nesting(text: &[u8], from: usize, mut skip: usize) -> Option<usize> {
    let mut found = None;
    each_position(text, from, b'/', |slash| {
        if !nests_at(text, slash) {
            return true;
        }
        if skip == 0 {
            found = Some(slash);
            return false;
        }
        skip -= 1;
        true
    });
    found
}

/// Where to cut `bytes` (a whole message, or the prefix the scan cap
/// left) so that it declares at most [`MAX_NESTED_MESSAGES`] nested
/// messages in its body: the start of the line with the next declaration.
/// `None` for nearly all mail, after one fast pass.
fn nesting_cut(bytes: &[u8]) -> Option<usize> {
    // One pass over everything rules out nearly all mail; declarations
    // in the header block are not nested messages, so count again from
    // the body when there are enough.
    nth_nesting(bytes, 0, MAX_NESTED_MESSAGES)?;
    let body = header_end(bytes, usize::MAX, bytes.len()).body;
    let at = nth_nesting(bytes, body, MAX_NESTED_MESSAGES)?;
    Some(
        bytes[body..at]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(body, |i| body + i + 1),
    )
}

/// What the parser gets of a message over the scan cap, or with more
/// nested messages than [`MAX_NESTED_MESSAGES`].
pub(super) struct Cut {
    /// The header block (cut after its last whole field within
    /// `max_header_bytes` if longer), the first `max_scan_bytes` of the
    /// body (at a line break where one is near) or the body up to the
    /// line declaring one nested message too many, and closing delimiters.
    pub bytes: Vec<u8>,
    /// Whether the whole header block is in `bytes` as it is in the
    /// message, so that a parse of `bytes` reads the message's own headers.
    pub headers_whole: bool,
    /// Cut by the scan cap (`LimitHit::ScanBytes`).
    pub scan_bytes: bool,
    /// Cut before a nested message past [`MAX_NESTED_MESSAGES`]
    /// (`LimitHit::NestedMessages`).
    pub nested_messages: bool,
}

/// The prefix of `raw` the parser reads, or `None` when `raw` is within the
/// caps and is parsed as it is. Looks at no more than `max_header_bytes +
/// max_scan_bytes` (plus [`LINE_SLACK`]) bytes of `raw`, whatever its size.
pub(super) fn cut(raw: &[u8], limits: &Limits) -> Option<Cut> {
    let scanned = scan_cut(raw, limits);
    let bytes = scanned.as_ref().map_or(raw, |c| &c.bytes[..]);
    let Some(at) = nesting_cut(bytes) else {
        return scanned;
    };
    let mut out = bytes[..at].to_vec();
    let close = closings(&out);
    out.extend_from_slice(&close);
    Some(Cut {
        bytes: out,
        headers_whole: scanned.as_ref().is_none_or(|c| c.headers_whole),
        scan_bytes: scanned.is_some(),
        nested_messages: true,
    })
}

/// The scan cap alone: [`cut`] without the nesting cap.
fn scan_cut(raw: &[u8], limits: &Limits) -> Option<Cut> {
    let scan = limits.max_scan_bytes;
    if raw.len() <= scan {
        return None; // nearly all mail: no need to find its headers' end
    }
    let max_header = limits.max_header_bytes;
    let h = header_end(raw, max_header, max_header.saturating_add(scan));
    let headers_whole = h.end.is_some_and(|end| end <= max_header);
    let body = h.body.min(raw.len());
    if headers_whole && raw.len() - body <= scan {
        return None;
    }
    let mut bytes = Vec::with_capacity(max_header.min(body) + scan + 256);
    if headers_whole {
        bytes.extend_from_slice(&raw[..body]);
    } else {
        bytes.extend_from_slice(&raw[..h.last_field_end]);
        if h.end.is_some() {
            bytes.extend_from_slice(b"\r\n");
        }
    }
    if h.end.is_some() {
        let rest = &raw[body..];
        let take = if rest.len() <= scan {
            rest.len()
        } else {
            cut_point(rest, scan)
        };
        bytes.extend_from_slice(&rest[..take]);
        let close = closings(&bytes);
        bytes.extend_from_slice(&close);
    }
    Some(Cut {
        bytes,
        headers_whole,
        scan_bytes: true,
        nested_messages: false,
    })
}
