//! Turns raw message bytes into the set of features the classifier learns.
//!
//! What the classifier can learn is what the tokenizer sees, so this module
//! decides chaff's accuracy as much as the statistics do. It is pure: no I/O,
//! no clock, no global state — the same bytes always give the same tokens,
//! which is what makes exact relearn and Forget possible.
//!
//! Every feature is a `(Tag, text)` pair hashed to a [`TokenId`]: the tag keeps
//! "free" in a Subject apart from "free" in the body. Hostile mail is normal
//! input: every loop here is bounded by [`Limits`], and a message that hits a
//! cap is still tokenized up to it, with the cap reported in [`Tokens`].

mod headers;
mod html;
mod parts;
mod scan;
mod sink;
mod words;

use std::fmt;
use std::sync::LazyLock;

use mail_parser::{HeaderName, Message, MessageParser};

pub use sink::{Names, Tag};
pub use words::{ascii_words, for_each_word};

/// Bumped whenever a change alters which ids a message produces. Each user's
/// model records the version it was built with, so statistics from two
/// tokenizers are never mixed silently.
pub const TOKENIZER_VERSION: u32 = 2;

/// Fixed seed for token hashing. Token ids are persisted, so this (and the
/// hash, xxh3-64) must never change without bumping [`TOKENIZER_VERSION`].
const TOKEN_SEED: u64 = 0x6368_6166_665f_7631; // "chaff_v1"

/// A feature's identity: xxh3-64 (seed [`TOKEN_SEED`]) of `tag 0x1F text`.
/// 64 bits make collisions negligible at any realistic vocabulary size
/// (~1e-8 chance of any collision in a 500k-token model).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(pub u64);

/// `items` sorted by their token ids, using that ids are hashes: uniformly
/// spread, so a counting pass on their top bits splits them into buckets of
/// four to eight items each, already in order between buckets, and sorting
/// those tiny buckets is cheap. About a third of `sort_unstable`'s
/// instructions on a message's ~2,000 ids; used for those and for model
/// snapshots (hundreds of thousands). Crafted ids that pile into one bucket
/// just make that bucket an ordinary `sort_unstable`.
pub fn sort_by_token_id<T: Copy>(mut items: Vec<T>, id: impl Fn(&T) -> TokenId) -> Vec<T> {
    if items.len() < 64 {
        items.sort_unstable_by_key(&id);
        return items;
    }
    // n/8 to n/4 buckets (at least 8, at most 65,536), by the top bits.
    let bits = (usize::BITS - (items.len() / 8).leading_zeros()).min(16);
    let shift = 64 - bits;
    let bucket_of = |item: &T| (id(item).0 >> shift) as usize;
    let mut starts = vec![0usize; (1 << bits) + 1];
    for item in &items {
        starts[bucket_of(item) + 1] += 1;
    }
    for b in 1..starts.len() {
        starts[b] += starts[b - 1];
    }
    let mut sorted = vec![items[0]; items.len()];
    let mut next = starts.clone();
    for item in &items {
        let slot = &mut next[bucket_of(item)];
        sorted[*slot] = *item;
        *slot += 1;
    }
    for bucket in starts.windows(2) {
        let bucket = &mut sorted[bucket[0]..bucket[1]];
        if bucket.len() <= 16 {
            // Insertion sort: a call to `sort_unstable` per tiny bucket
            // would cost more than sorting it.
            for i in 1..bucket.len() {
                let mut j = i;
                while j > 0 && id(&bucket[j - 1]) > id(&bucket[j]) {
                    bucket.swap(j - 1, j);
                    j -= 1;
                }
            }
        } else {
            bucket.sort_unstable_by_key(&id);
        }
    }
    sorted
}

impl TokenId {
    /// Hashes a feature. Public so tests and tools can name a token.
    pub fn of(tag: Tag, text: &str) -> Self {
        Self::of_parts(&[tag.as_str().as_bytes(), &[0x1F], text.as_bytes()])
    }

    /// xxh3-64 (seed [`TOKEN_SEED`]) of `bytes`, the one-shot form.
    pub(crate) fn hash(bytes: &[u8]) -> Self {
        TokenId(xxhash_rust::xxh3::xxh3_64_with_seed(bytes, TOKEN_SEED))
    }

    /// xxh3-64 of the concatenated parts. Short inputs (nearly all tokens)
    /// are joined on the stack and hashed one-shot: the streaming hasher's
    /// ~600-byte state costs more than the hash itself. Same bytes, same id.
    pub(crate) fn of_parts(parts: &[&[u8]]) -> Self {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut buf = [0u8; 128];
        if len <= buf.len() {
            let mut at = 0;
            for p in parts {
                buf[at..at + p.len()].copy_from_slice(p);
                at += p.len();
            }
            return Self::hash(&buf[..len]);
        }
        let mut h = xxhash_rust::xxh3::Xxh3::with_seed(TOKEN_SEED);
        for p in parts {
            h.update(p);
        }
        TokenId(h.digest())
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({:016x})", self.0)
    }
}

/// Caps that keep hostile mail boring. Defaults suit real mail: a typical
/// message yields 100–600 distinct tokens.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Features emitted per message (before de-duplication).
    pub max_tokens: usize,
    /// Longer words become a shape token instead (`long:a:40`), as SpamBayes
    /// does: base64 debris and hashes carry no reusable evidence verbatim.
    pub max_word_bytes: usize,
    /// Header bytes examined in total.
    pub max_header_bytes: usize,
    /// Decoded body text examined in total.
    pub max_body_bytes: usize,
    /// MIME parts examined (attachments and nested messages included).
    pub max_parts: usize,
    /// Nesting of multiparts and attached messages followed.
    pub max_mime_depth: usize,
    /// Raw body bytes (after the header block) the MIME parser is given.
    /// The caps above bound what is read of a parsed message; this bounds
    /// the parse itself, whose cost grows with the message (deep nesting,
    /// a million HTML tags). A longer message is parsed from its header
    /// block (at most `max_header_bytes`) and the first `max_scan_bytes`
    /// of its body; a message within both is parsed as it is.
    pub max_scan_bytes: usize,
    /// Word pairs: each word is paired with the previous `pair_window − 1`
    /// words (orthogonal sparse bigrams); below 2, no pairs.
    pub pair_window: usize,
    /// Also read the Received chain's host names, the Date header's shape
    /// and zone and the list headers' values (`headers.rs`). Off by
    /// default: measured better with every message learned and worse
    /// under clicks (docs/ACCURACY.md, "Header and body evidence"); turning
    /// it on for a server changes token ids, so it would need the next
    /// [`TOKENIZER_VERSION`]. `chaff eval --header-extras` only.
    pub header_extras: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_tokens: 20_000,
            max_word_bytes: 40,
            max_header_bytes: 256 * 1024,
            max_body_bytes: 2 * 1024 * 1024,
            max_parts: 100,
            max_mime_depth: 20,
            max_scan_bytes: 256 * 1024,
            pair_window: 2,
            header_extras: false,
        }
    }
}

/// A cap that cut a message's reading short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitHit {
    Tokens,
    HeaderBytes,
    BodyBytes,
    Parts,
    MimeDepth,
    /// The message was longer than the scan cap (`max_scan_bytes` of body,
    /// `max_header_bytes` of headers) and was read from its prefix.
    ScanBytes,
    /// The bytes did not parse as a message at all; read as plain text.
    Unparsable,
    /// The message was empty or blank: there was nothing to read, so it
    /// scores as an unknown message (neutral for most models). Said apart
    /// from [`Self::Unparsable`] so a caller sees a lost body as one.
    Empty,
    /// The message's HTML had more tags than the HTML tokenizer is given
    /// (4,096); the rest of its HTML was read as text with the markup
    /// stripped (no links, images or hidden text past that point).
    HtmlTags,
    /// The message declared more nested messages than the parser is given
    /// (128, `scan.rs`); it was parsed up to the one past that.
    NestedMessages,
    /// The header block had more fields than the parser is given (512,
    /// `scan.rs`); the fields past them were not read.
    HeaderFields,
    /// The message declared more multiparts than the parser is given
    /// (256, `scan.rs`); it was parsed up to the one past that.
    Multiparts,
}

impl LimitHit {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitHit::Tokens => "tokens per message",
            LimitHit::HeaderBytes => "header bytes",
            LimitHit::BodyBytes => "body bytes",
            LimitHit::Parts => "MIME parts",
            LimitHit::MimeDepth => "MIME depth",
            LimitHit::ScanBytes => "scan bytes",
            LimitHit::Unparsable => "not parsable as MIME; read as plain text",
            LimitHit::Empty => "empty message; nothing to read",
            LimitHit::HtmlTags => "HTML tags",
            LimitHit::NestedMessages => "nested messages",
            LimitHit::HeaderFields => "header fields",
            LimitHit::Multiparts => "multiparts",
        }
    }
}

/// A message's distinct features, sorted by id, plus the caps it hit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Sorted and de-duplicated: a word seen ten times counts once, as in
    /// Graham's and Robinson's schemes (presence, not frequency).
    pub ids: Vec<TokenId>,
    /// The ids among `ids` that came from the header (sorted, distinct;
    /// `Tag::in_header`): the classifier can weigh header and body
    /// evidence apart. Not stored: learning counts `ids` alone.
    pub header: Vec<TokenId>,
    pub limits_hit: Vec<LimitHit>,
}

/// The message tokenizer. Cheap to share across threads.
#[derive(Clone, Debug, Default)]
pub struct Tokenizer {
    limits: Limits,
}

impl Tokenizer {
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The message's distinct token ids.
    pub fn tokenize(&self, raw: &[u8]) -> Tokens {
        self.tokenize_with(raw, |_| ()).0
    }

    /// [`Tokenizer::tokenize`], also handing the parsed message to `also`,
    /// so a caller that reads header fields (policy's [`HeaderFacts`], a
    /// derived message id) reads them from this parse instead of parsing
    /// the header block again: two more parses of it were 8% of a corpus
    /// replay's instructions (callgrind, 2026-11-23). `also` gets `None`
    /// when the tokenizer did not parse `raw` as it is (not a message, a
    /// parser failure, or headers repaired first: see
    /// `repair_header_separator`); the caller then reads `raw` itself.
    ///
    /// [`HeaderFacts`]: crate::mail::sender::HeaderFacts
    pub fn tokenize_with<T>(
        &self,
        raw: &[u8],
        also: impl FnOnce(Option<&Message<'_>>) -> T,
    ) -> (Tokens, T) {
        let mut sink = sink::Sink::new(&self.limits, sink::Keep::Nothing);
        let out = extract(raw, &mut sink, also);
        (sink.finish(), out)
    }

    /// [`Tokenizer::tokenize`], also keeping each feature's readable name,
    /// for explaining a score from the same reading (no second pass).
    pub fn tokenize_named(&self, raw: &[u8]) -> (Tokens, Names) {
        let (tokens, names, ()) = self.tokenize_named_with(raw, |_| ());
        (tokens, names)
    }

    /// [`Tokenizer::tokenize_named`] with the parsed message handed to
    /// `also`, as [`Tokenizer::tokenize_with`].
    pub fn tokenize_named_with<T>(
        &self,
        raw: &[u8],
        also: impl FnOnce(Option<&Message<'_>>) -> T,
    ) -> (Tokens, Names, T) {
        let mut sink = sink::Sink::new(&self.limits, sink::Keep::FirstNames);
        let out = extract(raw, &mut sink, also);
        let names = std::mem::take(&mut sink.names);
        (sink.finish(), names, out)
    }

    /// The features as readable `tag:text` strings, in extraction order (with
    /// repeats), for `chaff tokens` and for support staff.
    pub fn explain(&self, raw: &[u8]) -> (Vec<String>, Vec<LimitHit>) {
        let mut sink = sink::Sink::new(&self.limits, sink::Keep::AllNames);
        extract(raw, &mut sink, |_| ());
        let names = sink.names.all();
        (names, sink.finish().limits_hit)
    }
}

/// The MIME parser as the tokenizer uses it. mail-parser by default parses
/// every header field it knows into a structure (a `Received` header into
/// hosts, addresses and a date: ~9% of the tokenizer's instructions on the
/// SpamAssassin corpus); chaff reads most fields only as raw text
/// (`headers_raw`), so only the fields read as structures are parsed:
/// Subject, From, Reply-To, Return-Path and Message-ID (`headers.rs`) and
/// the MIME fields that shape the part tree and its decoding. Every other
/// field is skipped, and still listed with its raw text in `headers_raw`.
///
/// A field's raw text ends where its parser stopped, so skipping must stop
/// where the structured parser did, or token ids change: the skipping
/// parser stops at the first unfolded newline, as mail-parser's address,
/// id, list, received and text parsers do (pinned by a test, and by the
/// token ids of the SpamAssassin and Enron corpora), but its date parser
/// can read past a malformed Date's end into the next field, so Date stays
/// parsed.
pub fn message_parser() -> &'static MessageParser {
    static PARSER: LazyLock<MessageParser> = LazyLock::new(|| {
        MessageParser::new()
            .header_text(HeaderName::Subject)
            .header_address(HeaderName::From)
            .header_address(HeaderName::ReplyTo)
            .header_id(HeaderName::ReturnPath)
            .header_id(HeaderName::MessageId)
            .header_content_type(HeaderName::ContentType)
            .header_content_type(HeaderName::ContentDisposition)
            .header_text(HeaderName::ContentTransferEncoding)
            .header_date(HeaderName::Date)
            .header_date(HeaderName::ResentDate)
            .default_header_ignore()
    });
    &PARSER
}

/// Drops a parsed message without recursion. mail-parser nests each
/// attached `message/rfc822` inside its parent without a depth limit, and
/// dropping the tree recurses once per level: ~1 MB of nested attachments
/// overflowed a 2 MiB thread stack (found by fuzzing, see
/// fuzz/regressions/), which aborts the whole process. Taking each nested
/// message out of its parent first keeps the stack flat.
fn drop_flat(msg: mail_parser::Message<'_>) {
    let mut stack = vec![msg];
    while let Some(mut m) = stack.pop() {
        for part in &mut m.parts {
            if let mail_parser::PartType::Message(inner) = std::mem::take(&mut part.body) {
                stack.push(inner);
            }
        }
    }
}

/// Where the header block ends without the blank line RFC 5322 requires:
/// the first line that is neither a header field (`name:` with a printable
/// name, no spaces) nor a continuation (leading white space). Such messages
/// are common in spam and in preprocessed corpora; a parser that trusts the
/// missing separator reads the whole body as headers. Returns the message
/// with a blank line inserted there, or `None` if the headers are well formed.
fn repair_header_separator(raw: &[u8]) -> Option<Vec<u8>> {
    let mut pos = 0;
    let mut seen_field = false;
    while pos < raw.len() {
        let end = memchr::memchr(b'\n', &raw[pos..]).map_or(raw.len(), |i| pos + i + 1);
        let line = &raw[pos..end];
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.is_empty() {
            return None; // the separator is there
        }
        if !scan::is_header_line(content, seen_field) {
            if !seen_field {
                return None; // not a message with headers at all
            }
            let mut fixed = Vec::with_capacity(raw.len() + 2);
            fixed.extend_from_slice(&raw[..pos]);
            fixed.extend_from_slice(b"\r\n");
            fixed.extend_from_slice(&raw[pos..]);
            return Some(fixed);
        }
        seen_field = true;
        pos = end;
    }
    None
}

/// Reads `raw` into `sink`: headers first (the most telling and the
/// cheapest), then the MIME tree, stopping at whichever cap comes first.
/// `also` is called once with the parse of `raw` as given (`None` if there
/// is none: see [`Tokenizer::tokenize_with`]).
fn extract<T>(
    raw: &[u8],
    sink: &mut sink::Sink,
    also: impl FnOnce(Option<&Message<'_>>) -> T,
) -> T {
    if raw.iter().all(u8::is_ascii_whitespace) {
        // Nothing to read: said as such, not as unparsable (a lost body).
        sink.hit(LimitHit::Empty);
        return also(None);
    }
    let cut = scan::cut(raw, sink.limits());
    // A parse of the prefix reads the message's own header block only when
    // that block is whole in it; else `also` reads `raw` itself.
    let headers_as_given = cut.as_ref().is_none_or(|c| c.headers_whole());
    if let Some(c) = &cut {
        if c.header_bytes {
            sink.hit(LimitHit::HeaderBytes);
        }
        if c.header_fields {
            sink.hit(LimitHit::HeaderFields);
        }
        if c.scan_bytes {
            sink.hit(LimitHit::ScanBytes);
            // Being that long is evidence of its own (the cut's only trace
            // in the ids: mail within the caps gets none).
            sink.push(Tag::Mime, "scan-cut");
        }
        if c.nested_messages {
            sink.hit(LimitHit::NestedMessages);
        }
        if c.multiparts {
            sink.hit(LimitHit::Multiparts);
        }
    }
    let raw = cut.as_ref().map_or(raw, |c| &c.bytes[..]);
    let repaired = repair_header_separator(raw);
    if repaired.is_some() {
        sink.push(Tag::Mime, "missing-header-body-separator");
    }
    let raw = repaired.as_deref().unwrap_or(raw);
    // mail-parser is the boundary with hostile bytes; a panic inside it (the
    // fuzzer found a debug assertion, fuzz/regressions/) must cost this
    // message its MIME reading, not the request.
    let parsed = std::panic::catch_unwind(|| message_parser().parse(raw));
    let parsed = parsed.unwrap_or_else(|_| {
        sink.push(Tag::Mime, "parser-failure");
        None
    });
    let Some(msg) = parsed else {
        // Not a message at all (or empty): still give it a reading, so
        // garbage gets a score rather than an error.
        sink.hit(LimitHit::Unparsable);
        let max = sink.limits().max_body_bytes;
        let text = String::from_utf8_lossy(&raw[..raw.len().min(max)]);
        sink.words(Tag::Body, &text);
        return also(None);
    };
    let out = also((repaired.is_none() && headers_as_given).then_some(&msg));
    headers::headers(&msg, sink);
    let limits = sink.limits();
    let mut budget = parts::Budget {
        body_bytes: limits.max_body_bytes,
        parts: limits.max_parts,
        html_tags: html::MAX_HTML_TAGS,
    };
    parts::walk(&msg, &mut budget, sink, 0);
    drop_flat(msg);
    out
}

#[cfg(test)]
mod tests;
