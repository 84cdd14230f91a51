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
    continuation
        || memchr::memchr(b':', line).is_some_and(|colon| {
            colon > 0 && line[..colon].iter().all(|&b| (33..=126).contains(&b))
        })
}

/// `line` without its trailing `\n` or `\r\n`.
fn content(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Header fields the parser is given. mail-parser reads each field into
/// a structure (its name looked up, its value copied into a vector), about
/// 0.3 µs each: 256 KiB of short fields (`headers-many`, ~7,500) cost
/// ~2 ms, most of a Score, where chaff learns one token per field name and
/// the fields after the first few dozen say nothing new. A message with
/// more is parsed from its first `MAX_HEADER_FIELDS` fields
/// (`LimitHit::HeaderFields`). The most in a message of the SpamAssassin
/// and TREC 2006 corpora is 49.
pub(super) const MAX_HEADER_FIELDS: usize = 512;

/// Where the header block ends, as far as the scan looked.
struct HeaderEnd {
    /// The end of the last whole header field that ends within
    /// `max_header_bytes`: where to cut a header block that is longer.
    last_field_end: usize,
    /// The end of field number [`MAX_HEADER_FIELDS`], when the block (as
    /// far as looked at) has more fields: where to cut for the field cap.
    fields_end: Option<usize>,
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
    // Fields started so far, where field MAX_HEADER_FIELDS ends, and
    // whether another one starts after it.
    let mut fields = 0;
    let mut cap_end = None;
    let mut over = false;
    let done = |end: Option<usize>,
                body: usize,
                last_field_end: usize,
                cap_end: Option<usize>,
                over: bool| HeaderEnd {
        last_field_end,
        fields_end: cap_end.filter(|_| over),
        end,
        body,
    };
    while pos < raw.len() {
        let Some(nl) = memchr::memchr(b'\n', &raw[pos..]) else {
            // The line runs past what we look at: a body line (a 10 MiB
            // line after headers without a blank line) still ends the block.
            if !is_header_line(&raw[pos..], seen_field) {
                return done(Some(pos), pos, last_field_end, cap_end, over);
            }
            break;
        };
        let end = pos + nl + 1;
        let line = content(&raw[pos..end]);
        if line.is_empty() {
            return done(Some(pos), end, last_field_end, cap_end, over);
        }
        if !is_header_line(line, seen_field) {
            return done(Some(pos), pos, last_field_end, cap_end, over);
        }
        if !(seen_field && matches!(line.first(), Some(b' ' | b'\t'))) {
            over |= fields == MAX_HEADER_FIELDS;
            fields += 1;
        }
        seen_field = true;
        // A field ends where the next line does not continue it.
        let next_continues = matches!(raw.get(end), Some(b' ' | b'\t'));
        if !next_continues && end <= max_header_bytes {
            last_field_end = end;
        }
        if !next_continues && fields == MAX_HEADER_FIELDS && cap_end.is_none() {
            cap_end = Some(end);
        }
        pos = end;
    }
    done(None, raw.len(), last_field_end, cap_end, over)
}

/// Fields carried past a header cut: those that say how the body is read
/// (without `Content-Type` and `Content-Transfer-Encoding` a base64 or
/// multipart body is read as its raw text, which scores as unknown
/// words) and the ones that carry most of a header's evidence. Padding the
/// header with 512 fields, or 256 KiB, must not hide them.
const CARRIED_FIELDS: [&[u8]; 5] = [
    b"content-type",
    b"content-transfer-encoding",
    b"mime-version",
    b"subject",
    b"from",
];

/// The longest field carried past a cut: a Content-Type with a boundary
/// is well under 1 KiB; a longer one is padding itself.
const MAX_CARRIED_FIELD: usize = 8 * 1024;

/// The name of the header field starting `line` (before its `:`), if it
/// is one of [`CARRIED_FIELDS`].
fn carried_name(line: &[u8]) -> Option<&'static [u8]> {
    let colon = memchr::memchr(b':', line)?;
    let name = line[..colon].trim_ascii_end();
    CARRIED_FIELDS
        .iter()
        .copied()
        .find(|c| name.eq_ignore_ascii_case(c))
}

/// Appends to `kept` (a header block cut after a whole field) the first of
/// each of [`CARRIED_FIELDS`] that `dropped` (the rest of the block, whole
/// lines) holds and `kept` does not, each with its continuation lines, so
/// a cut header still says how the body is encoded. Runs only on a
/// message over a header cap.
fn carry_fields(kept: &mut Vec<u8>, dropped: &[u8]) {
    let mut present: Vec<&'static [u8]> = Vec::new();
    for line in kept.split(|&b| b == b'\n') {
        if !matches!(line.first(), Some(b' ' | b'\t'))
            && let Some(name) = carried_name(line)
            && !present.contains(&name)
        {
            present.push(name);
        }
    }
    let mut pos = 0;
    while pos < dropped.len() && present.len() < CARRIED_FIELDS.len() {
        let line_end =
            memchr::memchr(b'\n', &dropped[pos..]).map_or(dropped.len(), |i| pos + i + 1);
        let mut field_end = line_end;
        while field_end < dropped.len() && matches!(dropped[field_end], b' ' | b'\t') {
            field_end = memchr::memchr(b'\n', &dropped[field_end..])
                .map_or(dropped.len(), |i| field_end + i + 1);
        }
        if let Some(name) = carried_name(&dropped[pos..line_end])
            && !present.contains(&name)
            && field_end - pos <= MAX_CARRIED_FIELD
        {
            kept.extend_from_slice(&dropped[pos..field_end]);
            if !kept.ends_with(b"\n") {
                kept.extend_from_slice(b"\r\n");
            }
            present.push(name);
        }
        pos = field_end;
    }
}

/// Whether `raw` may have more than [`MAX_HEADER_FIELDS`] header fields:
/// that many line breaks before its first blank line (a field is at least
/// one line). Stops at the blank line, so it costs a few hundred
/// nanoseconds for a message with an ordinary header block.
fn may_have_too_many_fields(raw: &[u8]) -> bool {
    let mut lines = 0;
    for nl in memchr::memchr_iter(b'\n', raw) {
        let rest = &raw[nl + 1..];
        if rest.starts_with(b"\n") || rest.starts_with(b"\r\n") {
            return false;
        }
        lines += 1;
        if lines > MAX_HEADER_FIELDS {
            return true;
        }
    }
    false
}

/// Where to cut `body` to at most `max` bytes: after the last line break
/// within the last [`LINE_SLACK`] bytes before `max`, else at `max`.
fn cut_point(body: &[u8], max: usize) -> usize {
    let from = max.saturating_sub(LINE_SLACK);
    match memchr::memrchr(b'\n', &body[from..max]) {
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
    // At each `y=` or `Y=`, whether `boundary` ends there. A two-byte
    // search finds these pairs with few false starts; searching for `=`
    // alone stopped at every byte of quoted-printable text, which is made
    // of `=` escapes (broken QP: 12% of a Score, session 11).
    each_key_end(text, |eq| {
        if eq < KEY.len() || !text[eq - KEY.len()..eq].eq_ignore_ascii_case(KEY) {
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

/// Calls `f`, in order, with the position of the `=` of each `y=` and `Y=`
/// in `text` (the end of a `boundary=` in any case), until `f` returns
/// false: two SIMD substring searches, merged.
fn each_key_end(text: &[u8], mut f: impl FnMut(usize) -> bool) {
    let mut lower = memchr::memmem::find_iter(text, b"y=").peekable();
    let mut upper = memchr::memmem::find_iter(text, b"Y=").peekable();
    loop {
        let at = match (lower.peek(), upper.peek()) {
            (Some(&l), Some(&u)) if l < u => lower.next(),
            (Some(_), Some(_)) | (None, Some(_)) => upper.next(),
            (Some(_), None) => lower.next(),
            (None, None) => return,
        };
        let Some(at) = at else { return };
        if !f(at + 1) {
            return;
        }
    }
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
        let end = memchr::memchr(b'\n', &text[start..]).map_or(text.len(), |i| start + i + 1);
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

/// Multiparts (`multipart/…` declarations in the body) the parser is
/// given. mail-parser keeps a state per open multipart and copies it as
/// the nest deepens: the first 256 KiB of a 10,000-deep nest
/// (`multipart-deep`, ~8,000 levels) cost ~2.5 ms, most of it `realloc`
/// and `memcpy`, while chaff reads 20 levels (`max_mime_depth`) and 100
/// parts (`max_parts`). A message declaring more is parsed up to the line
/// that declares the next one (`LimitHit::Multiparts`). The most in a
/// message of the SpamAssassin and TREC 2006 corpora is 114.
pub(super) const MAX_MULTIPARTS: usize = 256;

/// What a `/` in a message declares, as far as the nesting caps count.
#[derive(Clone, Copy, Default)]
struct Declares {
    /// A nested message ([`MAX_NESTED_MESSAGES`]): `message/rfc822`,
    /// `message/global` or `multipart/digest`, in any ASCII case.
    message: bool,
    /// A multipart ([`MAX_MULTIPARTS`]): `multipart/` and any subtype.
    multipart: bool,
}

/// What `text` at `slash` (a `/`) declares.
fn declares_at(text: &[u8], slash: usize) -> Declares {
    // The byte before first: most `/` are in URLs and end tags.
    let before = |word: &[u8]| {
        slash >= word.len() && text[slash - word.len()..slash].eq_ignore_ascii_case(word)
    };
    let after = |word: &[u8]| {
        text.get(slash + 1..slash + 1 + word.len())
            .is_some_and(|t| t.eq_ignore_ascii_case(word))
    };
    let next = text.get(slash + 1).map(|b| b | 0x20);
    match slash.checked_sub(1).map(|i| text[i] | 0x20) {
        Some(b't') if before(b"multipart") => Declares {
            message: after(b"digest"),
            multipart: true,
        },
        // Then the byte after: `example/page` is not worth comparing.
        Some(b'e') if matches!(next, Some(b'r' | b'g')) && before(b"message") => Declares {
            message: after(b"rfc822") || after(b"global"),
            multipart: false,
        },
        _ => Declares::default(),
    }
}

/// Where in `text`, at or after `from`, the first declaration past
/// either cap is: past the first [`MAX_NESTED_MESSAGES`] nested messages
/// (the first value) or past the first [`MAX_MULTIPARTS`] multiparts (the
/// second; both when one declaration is past both), see [`declares_at`].
/// Stops there: the cut is at the first.
fn past_the_caps(text: &[u8], from: usize) -> (Option<usize>, Option<usize>) {
    let (mut messages, mut multiparts) = (0, 0);
    let (mut message_at, mut multipart_at) = (None, None);
    each_position(text, from, b'/', |slash| {
        let d = declares_at(text, slash);
        if d.message {
            if messages == MAX_NESTED_MESSAGES {
                message_at.get_or_insert(slash);
            }
            messages += 1;
        }
        if d.multipart {
            if multiparts == MAX_MULTIPARTS {
                multipart_at.get_or_insert(slash);
            }
            multiparts += 1;
        }
        message_at.is_none() && multipart_at.is_none()
    });
    (message_at, multipart_at)
}

/// Where [`nesting_cut`] cuts, and for which cap.
struct NestingCut {
    at: usize,
    messages: bool,
    multiparts: bool,
}

/// Where to cut `bytes` (a whole message, or the prefix the scan cap
/// left) so that it declares at most [`MAX_NESTED_MESSAGES`] nested
/// messages and [`MAX_MULTIPARTS`] multiparts in its body: the start of
/// the line with the first declaration past either cap. `None` for nearly
/// all mail, after one fast pass.
fn nesting_cut(bytes: &[u8]) -> Option<NestingCut> {
    // One pass over everything rules out nearly all mail; declarations
    // in the header block are not in the body, so count again from the
    // body when there are enough.
    if past_the_caps(bytes, 0) == (None, None) {
        return None;
    }
    let body = header_end(bytes, usize::MAX, bytes.len()).body;
    let (message_at, multipart_at) = past_the_caps(bytes, body);
    let at = message_at.or(multipart_at)?;
    Some(NestingCut {
        at: memchr::memrchr(b'\n', &bytes[body..at]).map_or(body, |i| body + i + 1),
        messages: message_at == Some(at),
        multiparts: multipart_at == Some(at),
    })
}

/// What the parser gets of a message over the scan cap, with more header
/// fields than [`MAX_HEADER_FIELDS`], or with more nested messages or
/// multiparts than [`MAX_NESTED_MESSAGES`] and [`MAX_MULTIPARTS`].
pub(super) struct Cut {
    /// The header block (cut after its last whole field within
    /// `max_header_bytes`, or after field [`MAX_HEADER_FIELDS`], if
    /// longer), the first `max_scan_bytes` of the body (at a line break
    /// where one is near) or the body up to the line declaring one nested
    /// message or multipart too many, and closing delimiters.
    pub bytes: Vec<u8>,
    /// The header block was cut at `max_header_bytes`
    /// (`LimitHit::HeaderBytes`).
    pub header_bytes: bool,
    /// The header block was cut after [`MAX_HEADER_FIELDS`] fields
    /// (`LimitHit::HeaderFields`).
    pub header_fields: bool,
    /// Cut by the scan cap (`LimitHit::ScanBytes`).
    pub scan_bytes: bool,
    /// Cut before a nested message past [`MAX_NESTED_MESSAGES`]
    /// (`LimitHit::NestedMessages`).
    pub nested_messages: bool,
    /// Cut before a multipart past [`MAX_MULTIPARTS`]
    /// (`LimitHit::Multiparts`).
    pub multiparts: bool,
}

impl Cut {
    /// Whether the whole header block is in `bytes` as it is in the
    /// message, so that a parse of `bytes` reads the message's own headers.
    pub fn headers_whole(&self) -> bool {
        !(self.header_bytes || self.header_fields)
    }
}

/// The prefix of `raw` the parser reads, or `None` when `raw` is within the
/// caps and is parsed as it is. Looks at no more than `max_header_bytes +
/// max_scan_bytes` (plus [`LINE_SLACK`]) bytes of `raw`, whatever its size.
pub(super) fn cut(raw: &[u8], limits: &Limits) -> Option<Cut> {
    let scanned = scan_cut(raw, limits);
    let bytes = scanned.as_ref().map_or(raw, |c| &c.bytes[..]);
    let Some(nesting) = nesting_cut(bytes) else {
        return scanned;
    };
    let mut out = bytes[..nesting.at].to_vec();
    let close = closings(&out);
    out.extend_from_slice(&close);
    let was = |flag: fn(&Cut) -> bool| scanned.as_ref().is_some_and(flag);
    Some(Cut {
        bytes: out,
        header_bytes: was(|c| c.header_bytes),
        header_fields: was(|c| c.header_fields),
        scan_bytes: was(|c| c.scan_bytes),
        nested_messages: nesting.messages,
        multiparts: nesting.multiparts,
    })
}

/// The scan cap and the header field cap: [`cut`] without the nesting
/// caps.
fn scan_cut(raw: &[u8], limits: &Limits) -> Option<Cut> {
    let scan = limits.max_scan_bytes;
    if raw.len() <= scan && !may_have_too_many_fields(raw) {
        return None; // nearly all mail: no need to find its headers' end
    }
    let max_header = limits.max_header_bytes;
    let h = header_end(raw, max_header, max_header.saturating_add(scan));
    let header_bytes = h.end.is_none_or(|end| end > max_header);
    let header_fields = h.fields_end.is_some();
    let body = h.body.min(raw.len());
    let scan_bytes = raw.len() > scan && (header_bytes || raw.len() - body > scan);
    if !scan_bytes && !header_fields {
        return None;
    }
    let mut bytes = Vec::with_capacity(max_header.min(body) + scan.min(raw.len()) + 256);
    if !header_bytes && !header_fields {
        bytes.extend_from_slice(&raw[..body]);
    } else {
        let keep = match h.fields_end {
            Some(fields_end) => fields_end.min(h.last_field_end),
            None => h.last_field_end,
        };
        bytes.extend_from_slice(&raw[..keep]);
        if let Some(end) = h.end {
            carry_fields(&mut bytes, &raw[keep.min(end)..end]);
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
        // A body cut only by the field cap is whole: nothing to close.
        if scan_bytes {
            let close = closings(&bytes);
            bytes.extend_from_slice(&close);
        }
    }
    Some(Cut {
        bytes,
        header_bytes,
        header_fields,
        scan_bytes,
        nested_messages: false,
        multiparts: false,
    })
}
