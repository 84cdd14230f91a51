//! Where features go: hashed to ids, capped, optionally kept as text for
//! `chaff tokens`. Word pairs (orthogonal sparse bigrams) and shape tokens
//! are made here, so every text source gets them alike.

use super::words;
use super::{LimitHit, Limits, TokenId, Tokens};

/// Where in the message a feature came from. The tag is part of the hash, so
/// the same word in two places is two pieces of evidence. The names are part
/// of the token ids: renaming one needs a new tokenizer version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// A word of visible body text (plain parts, visible HTML text).
    Body,
    /// A word of the Subject.
    Subject,
    /// A word of HTML text a reader would not see (display:none, font-size 0…).
    HiddenWord,
    /// The From address, its domain and display-name words.
    FromAddr,
    FromDomain,
    FromName,
    ReplyToAddr,
    ReplyToDomain,
    ReturnPathAddr,
    /// The domain part of the Message-ID (`<x@host>`): bulk mailers leave marks.
    MessageIdDomain,
    /// Words of X-Mailer / User-Agent.
    Mailer,
    /// The MIME type of every part, and declared charsets.
    ContentType,
    Charset,
    /// The name of each header present (e.g. `list-unsubscribe`).
    HeaderName,
    /// Addresses in Received headers, and their /24 (IPv6: /64).
    ReceivedIp,
    ReceivedNet,
    /// SPF / DKIM / DMARC results (`spf:pass`, `dkim:fail`, `dmarc:none`…).
    Auth,
    /// Host names in Received headers, and their last two labels: the
    /// relays a message came through (a list's server, a provider's).
    ReceivedHost,
    ReceivedDomain,
    /// The Date header's shape (digits as `9`) and its zone: mailers and
    /// their time zones differ between senders.
    Date,
    /// `name=value` of the mailing-list and bulk headers (`List-Id`,
    /// `Precedence`, `X-Mailing-List`, `Sender`, …): which list relayed it.
    ListHeader,
    /// Hosts of URLs, their registered domains (public-suffix aware).
    UrlHost,
    UrlDomain,
    /// URL oddities: an IP literal as host, userinfo before the host, a
    /// host that mixes scripts.
    UrlShape,
    /// Address oddities: a From or Reply-To domain that mixes scripts in
    /// a label (`words::host_mixes_scripts`).
    AddrShape,
    /// Domains of e-mail addresses in body text.
    BodyEmailDomain,
    /// HTML structure: hidden text, images, forms, link text naming another host.
    Html,
    /// Attachments, described by extension, type and size class — never bytes.
    Attachment,
    /// MIME oddities: encoding problems, caps hit.
    Mime,
    /// A word too long to be evidence verbatim, kept as its shape.
    LongWord,
    /// A long number, kept as its digit pattern.
    Number,
}

impl Tag {
    pub fn as_str(self) -> &'static str {
        match self {
            Tag::Body => "body",
            Tag::Subject => "subject",
            Tag::HiddenWord => "hidden",
            Tag::FromAddr => "from",
            Tag::FromDomain => "from.domain",
            Tag::FromName => "from.name",
            Tag::ReplyToAddr => "reply-to",
            Tag::ReplyToDomain => "reply-to.domain",
            Tag::ReturnPathAddr => "return-path",
            Tag::MessageIdDomain => "message-id.domain",
            Tag::Mailer => "mailer",
            Tag::ContentType => "content-type",
            Tag::Charset => "charset",
            Tag::HeaderName => "header",
            Tag::ReceivedIp => "received.ip",
            Tag::ReceivedNet => "received.net",
            Tag::Auth => "auth",
            Tag::ReceivedHost => "received.host",
            Tag::ReceivedDomain => "received.domain",
            Tag::Date => "date",
            Tag::ListHeader => "list",
            Tag::UrlHost => "url.host",
            Tag::UrlDomain => "url.domain",
            Tag::UrlShape => "url",
            Tag::AddrShape => "addr",
            Tag::BodyEmailDomain => "body.email-domain",
            Tag::Html => "html",
            Tag::Attachment => "attachment",
            Tag::Mime => "mime",
            Tag::LongWord => "long",
            Tag::Number => "number",
        }
    }

    /// Whether this feature says how the message was sent and built (its
    /// header: sender, relays, authentication, mailer, header names, MIME
    /// structure) rather than what it says (body text, Subject, links,
    /// attachments). The classifier can weigh the two parts' evidence
    /// apart (`classify::robinson`, "Header and body"), so that a long
    /// body's hundreds of words and word pairs cannot drown the few header
    /// tokens that tell a list's relayed spam from spam.
    pub fn in_header(self) -> bool {
        matches!(
            self,
            Tag::FromAddr
                | Tag::FromDomain
                | Tag::FromName
                | Tag::ReplyToAddr
                | Tag::ReplyToDomain
                | Tag::AddrShape
                | Tag::ReturnPathAddr
                | Tag::MessageIdDomain
                | Tag::Mailer
                | Tag::ContentType
                | Tag::Charset
                | Tag::HeaderName
                | Tag::ReceivedIp
                | Tag::ReceivedNet
                | Tag::Auth
                | Tag::ReceivedHost
                | Tag::ReceivedDomain
                | Tag::Date
                | Tag::ListHeader
                | Tag::Mime
        )
    }

    /// Whether word pairs are made from this text (running prose only).
    fn pairs(self) -> bool {
        matches!(self, Tag::Body | Tag::Subject)
    }
}

/// Id of an orthogonal sparse bigram: `first`, then `skip` words, then
/// `second`, in text tagged `tag` — xxh3-64 (seed `TOKEN_SEED`) of
/// `"osb" tag 0x1F skip xxh3(first) xxh3(second)` (little-endian u64s).
/// The reference form of [`WordKeys::pair`], which the tests hold it to.
#[cfg(test)]
fn pair_id(tag: Tag, first: u64, skip: u8, second: u64) -> TokenId {
    TokenId::of_parts(&[
        b"osb",
        tag.as_str().as_bytes(),
        &[0x1F, skip],
        &first.to_le_bytes(),
        &second.to_le_bytes(),
    ])
}

/// The hashed bytes of one text's words and pairs, with their fixed
/// prefixes (`tag 0x1F`, `"osb" tag 0x1F`) laid out once per text rather
/// than joined from parts for every word: per word, that copying cost more
/// than the hash (several small `memcpy` calls). Same bytes, same ids as
/// [`TokenId::of`] and [`pair_id`].
struct WordKeys {
    tag: Tag,
    /// `tag 0x1F`, zero-padded; `token_len` bytes long.
    token: [u8; 32],
    token_len: usize,
    /// `"osb" tag 0x1F`, zero-padded; `pair_len` bytes long.
    pair: [u8; 32],
    pair_len: usize,
    /// The first 16 bytes of `pair`, little-endian.
    pair_head: u128,
}

/// xxh3's default secret, its first 56 bytes as little-endian u64s (the
/// part its paths for inputs of 4–32 bytes read); `XXH_PRIME64_1` its
/// length multiplier. `WordKeys::token` and `WordKeys::pair` compute those
/// paths from registers; tests hold them to the crate.
const XXH3_SECRET: [u64; 7] = [
    0xbe4b_a423_396c_feb8,
    0x1cad_21f7_2c81_017c,
    0xdb97_9083_e96d_d4de,
    0x1f67_b3b7_a4a4_4072,
    0x78e5_c0cc_4ee6_79cb,
    0x2172_ffcc_7dd0_5a82,
    0x8e24_43f7_7446_08b8,
];
const XXH_PRIME64_1: u64 = 0x9E37_79B1_85EB_CA87;

/// xxh3-64's (seed [`TOKEN_SEED`](super::TOKEN_SEED)) path for inputs of
/// 17–32 bytes, given the input's length and its first 16 and last 16
/// bytes as little-endian u64s: `[0..8, 8..16, len-16..len-8, len-8..len]`.
#[inline]
fn xxh3_17to32(len: usize, [a, b, c, d]: [u64; 4]) -> u64 {
    let (s, seed) = (XXH3_SECRET, super::TOKEN_SEED);
    let mut acc = (len as u64).wrapping_mul(XXH_PRIME64_1);
    acc = acc.wrapping_add(xxh3_fold(
        a ^ s[0].wrapping_add(seed),
        b ^ s[1].wrapping_sub(seed),
    ));
    acc = acc.wrapping_add(xxh3_fold(
        c ^ s[2].wrapping_add(seed),
        d ^ s[3].wrapping_sub(seed),
    ));
    xxh3_avalanche(acc)
}

/// xxh3's 64×64 → 128-bit multiply, folded to 64 bits.
#[inline]
fn xxh3_fold(lo: u64, hi: u64) -> u64 {
    let product = u128::from(lo) * u128::from(hi);
    product as u64 ^ (product >> 64) as u64
}

/// xxh3's final mix.
#[inline]
fn xxh3_avalanche(mut h: u64) -> u64 {
    h ^= h >> 37;
    h = h.wrapping_mul(0x1656_6791_9E37_79F9);
    h ^ (h >> 32)
}

/// Up to 8 bytes as a little-endian number, from two overlapping 4-byte
/// loads (or three single bytes): no copy into a buffer.
fn load_le(s: &[u8]) -> u64 {
    let m = s.len();
    let u32_at = |i: usize| u64::from(u32::from_le_bytes(s[i..i + 4].try_into().expect("4 bytes")));
    match m {
        4..=8 => u32_at(0) | u32_at(m - 4) << (8 * (m - 4)),
        1..=3 => {
            u64::from(s[0])
                | u64::from(s[m / 2]) << (8 * (m / 2))
                | u64::from(s[m - 1]) << (8 * (m - 1))
        }
        _ => 0,
    }
}

impl WordKeys {
    fn new(tag: Tag) -> Self {
        Self::named(tag, tag.as_str().as_bytes())
    }

    /// Keys for `tag` spelled `name` (tests try every prefix length).
    fn named(tag: Tag, name: &[u8]) -> Self {
        // Tag names are at most 17 bytes, so both prefixes fit in 32 (a
        // name over 28 bytes would panic here, in every test that reads words).
        let mut token = [0u8; 32];
        token[..name.len()].copy_from_slice(name);
        token[name.len()] = 0x1F;
        let mut pair = [0u8; 32];
        pair[..3].copy_from_slice(b"osb");
        pair[3..3 + name.len()].copy_from_slice(name);
        pair[3 + name.len()] = 0x1F;
        Self {
            tag,
            token,
            token_len: name.len() + 1,
            pair_head: u128::from_le_bytes(pair[..16].try_into().expect("16 bytes")),
            pair,
            pair_len: name.len() + 4,
        }
    }

    /// [`TokenId::of`]`(self.tag, word)`.
    ///
    /// Inputs of 4–32 bytes (`tag 0x1F` and nearly every word) are hashed
    /// from registers, as [`WordKeys::pair`] is and for the same reason:
    /// xxh3 reads at most four 8-byte windows of them, and building the
    /// bytes in a stack buffer first made those reads wait on the stores
    /// (perf annotate: 43% of `TokenId::hash`'s samples on its first two
    /// loads from the buffer, 2026-11-23).
    /// Same ids as hashing the bytes (`token_from_bytes`), pinned by a test.
    fn token(&self, word: &str) -> TokenId {
        let w = word.as_bytes();
        let len = self.token_len + w.len();
        if self.token_len > 24 {
            // `window` reads 8 prefix bytes at offsets below the prefix's
            // length from a 32-byte copy; no tag name is this long.
            return self.token_from_bytes(word);
        }
        let seed = super::TOKEN_SEED;
        let s = XXH3_SECRET;
        let at = |off: usize, n: usize| self.window(w, off, n);
        match len {
            // xxh3-64's 4–8-byte path.
            4..=8 => {
                let seed = seed ^ (u64::from((seed as u32).swap_bytes()) << 32);
                let input = at(len - 4, 4).wrapping_add(at(0, 4) << 32);
                let mut x = input ^ (s[1] ^ s[2]).wrapping_sub(seed);
                x ^= x.rotate_left(49) ^ x.rotate_left(24);
                x = x.wrapping_mul(0x9FB2_1C65_1E98_DF25);
                x ^= (x >> 35).wrapping_add(len as u64);
                x = x.wrapping_mul(0x9FB2_1C65_1E98_DF25);
                TokenId(x ^ (x >> 28))
            }
            // Its 9–16-byte path.
            9..=16 => {
                let lo = at(0, 8) ^ (s[3] ^ s[4]).wrapping_add(seed);
                let hi = at(len - 8, 8) ^ (s[5] ^ s[6]).wrapping_sub(seed);
                TokenId(xxh3_avalanche(
                    (len as u64)
                        .wrapping_add(lo.swap_bytes())
                        .wrapping_add(hi)
                        .wrapping_add(xxh3_fold(lo, hi)),
                ))
            }
            17..=32 => TokenId(xxh3_17to32(
                len,
                [at(0, 8), at(8, 8), at(len - 16, 8), at(len - 8, 8)],
            )),
            _ => self.token_from_bytes(word),
        }
    }

    /// The `n` (≤ 8) bytes at `off` of `tag 0x1F` followed by `w`, as a
    /// little-endian number, from the prefix's padded copy and from `w`
    /// itself (no bytes joined in memory).
    fn window(&self, w: &[u8], off: usize, n: usize) -> u64 {
        let p = self.token_len;
        let mut v = 0;
        if off < p {
            // Bytes past the prefix are zero in `token`.
            let prefix = u64::from_le_bytes(self.token[off..off + 8].try_into().expect("8 bytes"));
            v = prefix & (u64::MAX >> (64 - 8 * n));
        }
        let start = off.max(p);
        if off + n > start {
            v |= load_le(&w[start - p..off + n - p]) << (8 * (start - off));
        }
        v
    }

    /// [`WordKeys::token`] by hashing the joined bytes.
    fn token_from_bytes(&self, word: &str) -> TokenId {
        let len = self.token_len + word.len();
        let mut buf = [0u8; 128];
        if len > buf.len() {
            return TokenId::of(self.tag, word);
        }
        // A fixed-size copy of the whole padded prefix (two vector moves),
        // then the word over its padding.
        buf[..32].copy_from_slice(&self.token);
        buf[self.token_len..len].copy_from_slice(word.as_bytes());
        TokenId::hash(&buf[..len])
    }

    /// [`pair_id`]`(self.tag, first, skip, second)`.
    ///
    /// For the tags that have pairs (prefixes of at most 15 bytes, so the
    /// input is 17–32 bytes long) xxh3-64 is computed from registers: its
    /// 17–32-byte path reads the input's first 16 bytes and its last 16,
    /// which here are exactly `first` and `second`. Building the bytes in a
    /// buffer and hashing that stalled on store forwarding — a 64-bit load
    /// over the one-byte `skip` store and part of an 8-byte store — and
    /// pairs are four of a word's six hashes. Same ids as the buffer form
    /// (`pair_from_bytes`), pinned by a test.
    fn pair(&self, first: u64, skip: u8, second: u64) -> TokenId {
        let p = self.pair_len;
        if p > 15 {
            return self.pair_from_bytes(first, skip, second);
        }
        let mut head = self.pair_head | u128::from(skip) << (8 * p);
        if p < 15 {
            head |= u128::from(first) << (8 * (p + 1));
        }
        if p < 7 {
            head |= u128::from(second) << (8 * (p + 9));
        }
        TokenId(xxh3_17to32(
            p + 17,
            [head as u64, (head >> 64) as u64, first, second],
        ))
    }

    /// [`WordKeys::pair`] by hashing the bytes themselves.
    fn pair_from_bytes(&self, first: u64, skip: u8, second: u64) -> TokenId {
        let mut buf = [0u8; 64];
        let p = self.pair_len;
        buf[..32].copy_from_slice(&self.pair);
        buf[p] = skip;
        buf[p + 1..p + 9].copy_from_slice(&first.to_le_bytes());
        buf[p + 9..p + 17].copy_from_slice(&second.to_le_bytes());
        TokenId::hash(&buf[..p + 17])
    }
}

/// Slots of [`Collected`]'s repeat filter (a power of two): 32 KiB, room
/// for the few hundred to few thousand distinct tokens of most messages.
const SEEN_SLOTS: usize = 4096;

/// The ids a message produced, on their way to a sorted distinct set.
struct Collected {
    /// Ids kept so far: mostly distinct (see `seen`); sorted and
    /// de-duplicated exactly by [`Collected::into_sorted_distinct`].
    ids: Vec<TokenId>,
    /// The kept ids that came from the header ([`Tag::in_header`]), also
    /// in `ids`.
    header: Vec<TokenId>,
    /// Ids pushed so far, repeats included: the token cap counts these.
    emitted: usize,
    /// A direct-mapped filter of recently kept ids (slot = low bits of the
    /// id, which is already a hash). A typical message repeats each feature
    /// about 3.5 times (an HTML part repeats the text part), and dropping
    /// repeats here is much cheaper than sorting them away. A collision only
    /// lets a repeat through to the final sort + dedup, which removes it, so
    /// the result is the exact sorted distinct set whatever the input — and
    /// hostile input cannot make the filter cost more than one probe per id.
    seen: Box<[u64; SEEN_SLOTS]>,
}

impl Collected {
    fn new() -> Self {
        Self {
            ids: Vec::with_capacity(1024),
            header: Vec::new(),
            emitted: 0,
            seen: Box::new([0; SEEN_SLOTS]),
        }
    }

    /// Returns whether the id was kept (false: a recent repeat, dropped).
    fn push(&mut self, id: TokenId, header: bool) -> bool {
        self.emitted += 1;
        let slot = &mut self.seen[id.0 as usize % SEEN_SLOTS];
        // Slots start at 0, so id 0 must never count as seen.
        if *slot != id.0 || id.0 == 0 {
            *slot = id.0;
            self.ids.push(id);
            if header {
                self.header.push(id);
            }
            true
        } else {
            false
        }
    }

    /// All ids and the header's, each sorted and distinct.
    fn into_sorted_distinct(self) -> (Vec<TokenId>, Vec<TokenId>) {
        let mut ids = super::sort_by_token_id(self.ids, |id| *id);
        ids.dedup();
        let mut header = self.header;
        header.sort_unstable();
        header.dedup();
        (ids, header)
    }
}

/// A byte range of [`Names`]' text.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u32,
    end: u32,
}

/// How to spell one feature, by reference into [`Names`]' text.
#[derive(Clone, Copy, Debug)]
enum Spelling {
    /// `tag:text`
    Plain { tag: Tag, text: Span },
    /// `pair.tag:first _ … second`, with `skip` words left out between.
    Pair {
        tag: Tag,
        first: Span,
        skip: u8,
        second: Span,
    },
}

/// Readable names of the features a message produced, kept during the
/// same reading that hashes them: explaining a score needs no second pass
/// over the message. Each word's text is copied once into one growing
/// buffer and features refer to it, so keeping names costs no allocation
/// per token — a word pair is two references, spelled out only when asked.
#[derive(Debug, Default)]
pub struct Names {
    text: String,
    features: Vec<(TokenId, Spelling)>,
}

impl Names {
    fn keep(&mut self, text: &str) -> Span {
        let start = self.text.len() as u32;
        self.text.push_str(text);
        Span {
            start,
            end: self.text.len() as u32,
        }
    }

    fn str(&self, span: Span) -> &str {
        &self.text[span.start as usize..span.end as usize]
    }

    fn spell(&self, spelling: Spelling) -> String {
        match spelling {
            Spelling::Plain { tag, text } => format!("{}:{}", tag.as_str(), self.str(text)),
            Spelling::Pair {
                tag,
                first,
                skip,
                second,
            } => format!(
                "pair.{}:{}{} {}",
                tag.as_str(),
                self.str(first),
                " _".repeat(usize::from(skip)),
                self.str(second)
            ),
        }
    }

    /// The names of features `ids` (a few: one pass over the kept
    /// features, comparing each with every wanted id), `None` for an id
    /// this message did not produce.
    pub fn of(&self, ids: &[TokenId]) -> Vec<Option<String>> {
        let mut out = vec![None; ids.len()];
        for (id, spelling) in &self.features {
            if let Some(i) = ids.iter().position(|w| w == id)
                && out[i].is_none()
            {
                out[i] = Some(self.spell(*spelling));
            }
        }
        out
    }

    /// Every kept feature, named, in extraction order.
    pub(super) fn all(&self) -> Vec<String> {
        self.features.iter().map(|(_, s)| self.spell(*s)).collect()
    }
}

/// Whether, and which, feature names the sink keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Keep {
    /// Ids only: scoring and learning.
    Nothing,
    /// The first occurrence of each feature: explanations.
    FirstNames,
    /// Every occurrence, repeats included: `chaff tokens`.
    AllNames,
}

/// Collects hashed features up to the token cap.
pub(super) struct Sink {
    ids: Collected,
    limits: Limits,
    limits_hit: Vec<LimitHit>,
    keep: Keep,
    /// The kept names, unless `keep` is [`Keep::Nothing`].
    pub(super) names: Names,
    word_buf: String,
    shape_buf: String,
    /// Hashes of the current text's words so far, most recent last; the
    /// last `pair_window − 1` pair with the next word. Kept whole rather
    /// than trimmed to the window (pushing is cheaper than shifting); like
    /// `ids`, it is bounded by the token cap, as every word in it emitted a
    /// token.
    recent: Vec<u64>,
    /// Their text in `names`, only when keeping names.
    recent_text: Vec<Span>,
}

impl Sink {
    pub(super) fn new(limits: &Limits, keep: Keep) -> Self {
        Self {
            ids: Collected::new(),
            limits: limits.clone(),
            limits_hit: Vec::new(),
            keep,
            names: Names::default(),
            word_buf: String::new(),
            shape_buf: String::new(),
            recent: Vec::with_capacity(1024),
            recent_text: Vec::new(),
        }
    }

    /// Records the id (and, when keeping names, how to spell it).
    fn emit(&mut self, id: TokenId, tag: Tag, spelling: impl FnOnce(&mut Names) -> Spelling) {
        let kept = self.ids.push(id, tag.in_header());
        if self.keep == Keep::AllNames || (kept && self.keep == Keep::FirstNames) {
            let s = spelling(&mut self.names);
            self.names.features.push((id, s));
        }
    }

    pub(super) fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(super) fn full(&self) -> bool {
        self.ids.emitted >= self.limits.max_tokens
    }

    pub(super) fn hit(&mut self, limit: LimitHit) {
        if !self.limits_hit.contains(&limit) {
            self.limits_hit.push(limit);
        }
    }

    /// Adds one feature; returns false once the token cap is reached.
    pub(super) fn push(&mut self, tag: Tag, text: &str) -> bool {
        if self.full() {
            self.hit(LimitHit::Tokens);
            return false;
        }
        let id = TokenId::of(tag, text);
        self.emit(id, tag, |names| Spelling::Plain {
            tag,
            text: names.keep(text),
        });
        true
    }

    /// [`Sink::push`] of a word, by its precomputed prefix; `span` is the
    /// word's text in `names` when keeping names.
    fn push_word(&mut self, keys: &WordKeys, w: &str, span: Option<Span>) -> bool {
        if self.full() {
            self.hit(LimitHit::Tokens);
            return false;
        }
        let id = keys.token(w);
        let tag = keys.tag;
        self.emit(id, tag, |names| Spelling::Plain {
            tag,
            text: span.unwrap_or_else(|| names.keep(w)),
        });
        true
    }

    /// Adds each word of free text (and, for prose, word pairs); long words
    /// and long numbers as shapes. Pairs never span two calls.
    pub(super) fn words(&mut self, tag: Tag, text: &str) -> bool {
        self.recent.clear();
        self.recent_text.clear();
        let keys = WordKeys::new(tag);
        let mut buf = std::mem::take(&mut self.word_buf);
        let more = words::for_each_word(text, &mut buf, |w| self.word(&keys, w));
        self.word_buf = buf;
        more
    }

    fn word(&mut self, keys: &WordKeys, w: &str) -> bool {
        let tag = keys.tag;
        // Single ASCII letters and digits are noise; a lone CJK character is
        // a word and is kept.
        if w.len() == 1 {
            return true;
        }
        let mut shape = std::mem::take(&mut self.shape_buf);
        // A number pattern needs at least five digits: shorter words (most
        // of them) skip the count.
        let digits = match w.len() {
            0..5 => 0,
            _ => w.bytes().filter(u8::is_ascii_digit).count(),
        };
        let ok = if w.len() > self.limits.max_word_bytes {
            words::shape(w, &mut shape);
            shape.insert_str(0, tag.as_str());
            shape.insert(tag.as_str().len(), ':');
            self.push(Tag::LongWord, &shape)
        } else if digits >= 5 && digits * 2 >= w.len() {
            words::number_pattern(w, &mut shape);
            self.push(Tag::Number, &shape)
        } else {
            // The word's text is kept once for its own name and its pairs'.
            let span = (self.keep != Keep::Nothing).then(|| self.names.keep(w));
            self.push_word(keys, w, span) && (!tag.pairs() || self.pairs(keys, w, span))
        };
        self.shape_buf = shape;
        ok
    }

    /// Orthogonal sparse bigrams (Siefkes et al. 2004, as crm114's OSB):
    /// the word with each of the previous `window − 1` words, keeping the
    /// distance, so "click … here" matches across a varying filler word.
    fn pairs(&mut self, keys: &WordKeys, w: &str, span: Option<Span>) -> bool {
        let tag = keys.tag;
        let window = self.limits.pair_window;
        if window < 2 {
            return true;
        }
        let h = xxhash_rust::xxh3::xxh3_64(w.as_bytes());
        let n = self.recent.len();
        for back in 0..(window - 1).min(n) {
            if self.full() {
                self.hit(LimitHit::Tokens);
                return false;
            }
            let prev = n - 1 - back;
            let id = keys.pair(self.recent[prev], back as u8, h);
            let first = self.recent_text.get(prev).copied();
            self.emit(id, tag, |_| Spelling::Pair {
                tag,
                first: first.expect("words' text is kept when names are"),
                skip: back as u8,
                second: span.expect("words' text is kept when names are"),
            });
        }
        self.recent.push(h);
        if let Some(span) = span {
            self.recent_text.push(span);
        }
        true
    }

    pub(super) fn finish(self) -> Tokens {
        let (ids, header) = self.ids.into_sorted_distinct();
        Tokens {
            ids,
            header,
            limits_hit: self.limits_hit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_keys_hash_the_same_bytes_as_the_reference_forms() {
        let tags = [Tag::Body, Tag::Subject, Tag::BodyEmailDomain, Tag::Mailer];
        let long = "x".repeat(200);
        for tag in tags {
            let keys = WordKeys::new(tag);
            for w in ["", "a", "free", "données", long.as_str()] {
                assert_eq!(keys.token(w), TokenId::of(tag, w), "{tag:?} {w}");
            }
            for (first, skip, second) in [(0, 0, 0), (1, 1, u64::MAX), (0xDEAD, 7, 42)] {
                assert_eq!(
                    keys.pair(first, skip, second),
                    pair_id(tag, first, skip, second)
                );
            }
        }
    }

    #[test]
    fn pair_ids_from_registers_equal_hashing_the_bytes() {
        // Every prefix length up to where the bytes form takes over (and a
        // few beyond): `second` starts inside the first 16 bytes below 7,
        // `first` does below 15.
        for name_len in 0..=24 {
            let name = vec![b'a' + name_len as u8; name_len];
            let keys = WordKeys::named(Tag::Body, &name);
            let mut r = 0x853C_49E6_748F_EA9Bu64 ^ name_len as u64;
            for _ in 0..2_000 {
                r ^= r << 13;
                r ^= r >> 7;
                r ^= r << 17;
                let (first, second, skip) = (r, r.rotate_left(29) ^ 0xA5A5, (r >> 56) as u8);
                assert_eq!(
                    keys.pair(first, skip, second),
                    keys.pair_from_bytes(first, skip, second),
                    "prefix of {} bytes",
                    keys.pair_len
                );
            }
        }
    }

    #[test]
    fn token_ids_from_registers_equal_hashing_the_bytes() {
        // Every prefix length a tag name allows and every word length
        // through the register paths (4-32 bytes joined) and past them.
        let mut r = 0x2545_F491_4F6C_DD1Du64;
        for name_len in 1..=20 {
            let name = vec![b'a' + name_len as u8; name_len];
            let keys = WordKeys::named(Tag::Body, &name);
            for word_len in 0..=40 {
                for _ in 0..50 {
                    let word: String = (0..word_len)
                        .map(|_| {
                            r ^= r << 13;
                            r ^= r >> 7;
                            r ^= r << 17;
                            char::from(b'!' + (r % 94) as u8)
                        })
                        .collect();
                    assert_eq!(
                        keys.token(&word),
                        keys.token_from_bytes(&word),
                        "prefix of {} bytes, word {word:?}",
                        keys.token_len
                    );
                }
            }
        }
    }

    #[test]
    fn repeat_filter_never_changes_the_distinct_set() {
        let mut c = Collected::new();
        // 0 (the empty-slot value), slot collisions, repeats after eviction.
        let s = SEEN_SLOTS as u64;
        let input = [0, 0, 5, 5 + s, 5, 5 + 2 * s, 5 + s, 7, 0, 7];
        for id in input {
            c.push(TokenId(id), id == 7);
        }
        assert_eq!(c.emitted, input.len());
        let mut want: Vec<TokenId> = input.iter().map(|&i| TokenId(i)).collect();
        want.sort_unstable();
        want.dedup();
        assert_eq!(c.into_sorted_distinct(), (want, vec![TokenId(7)]));
    }
}
