//! Word splitting for free text (subjects, display names, bodies).
//!
//! Words follow UAX #29 word boundaries, as `unicode-segmentation` computes
//! them, but we feed the segmenter one line at a time and only the
//! stretches of a line around its non-ASCII bytes: its ASCII fast path is
//! lost for the rest of its input at the first non-ASCII byte, so a whole
//! 10 KB message costs ~41 ns/byte where line by line costs ~13 ns/byte, and
//! our own ASCII splitter ~4 ns/byte (shared/notes/stack.md).
//! [`ascii_words`] implements exactly the UAX #29 rules that can apply to
//! ASCII text; property tests pin it, and the cutting of lines, to the
//! segmenter's output.
//!
//! Normalisation: ASCII is lowercased in place; other words get NFKC (so
//! fullwidth `ＦＲＥＥ` and styled letters read as `free`) and full Unicode
//! lowercasing. Scripts written without spaces (Han, Hiragana, Thai, Lao,
//! Khmer, Myanmar) come out of UAX #29 one character at a time; runs of them
//! become overlapping character bigrams, the usual indexing unit for such
//! text (e.g. Lucene's CJK analyzer), instead of single characters.

use unicode_normalization::UnicodeNormalization;
use unicode_segmentation::UnicodeSegmentation;

/// Calls `f` with each normalised word of `text`; stops when `f` returns
/// false. `buf` is reused so the loop allocates nothing per word.
pub fn for_each_word(text: &str, buf: &mut String, mut f: impl FnMut(&str) -> bool) -> bool {
    for line in text.lines() {
        let more = if line.is_ascii() {
            ascii_chunk(line, buf, &mut f)
        } else {
            non_ascii_line(line, buf, &mut f)
        };
        if !more {
            return false;
        }
    }
    true
}

/// A line with a non-ASCII byte. Kept out of line so that the ASCII path
/// above compiles as it did before the U+FFFD path existed: inlined, that
/// path's second call of [`ascii_chunk`] cost every message ~4 % in the
/// score bench (session 10).
#[inline(never)]
fn non_ascii_line(line: &str, buf: &mut String, f: &mut impl FnMut(&str) -> bool) -> bool {
    if line.chars().any(is_default_ignorable) {
        let seen: String = line.chars().filter(|&c| !is_default_ignorable(c)).collect();
        return if seen.is_ascii() {
            ascii_chunk(&seen, buf, f)
        } else {
            visible_line(&seen, buf, f)
        };
    }
    visible_line(line, buf, f)
}

/// Whether `c` is a Unicode Default_Ignorable_Code_Point (Unicode 15,
/// DerivedCoreProperties): characters a reader never sees — the soft
/// hyphen, zero-width spaces and joiners, bidi marks, the word joiner,
/// the byte order mark, variation selectors, the combining grapheme
/// joiner, tag characters. They are dropped before words are split.
///
/// Why: inserted inside words they make every word new to the model
/// while the reader sees the same text. A red-team walkthrough (session
/// 25) put one in the middle of every word of a spam: UAX #29 keeps the
/// format characters inside the word (`vi\u{ad}agra` one unknown word)
/// and splits at U+200B, and the spam (p = 1.0) scored 0.15, ham.
fn is_default_ignorable(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}'..='\u{1160}' | '\u{17B4}'..='\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// A non-ASCII line with nothing invisible in it.
fn visible_line(line: &str, buf: &mut String, f: &mut impl FnMut(&str) -> bool) -> bool {
    if is_ascii_but_replacements(line) {
        line.split(char::REPLACEMENT_CHARACTER)
            .all(|piece| ascii_chunk(piece, buf, f))
    } else {
        mixed_line(line, buf, f)
    }
}

/// Whether `line` is ASCII apart from U+FFFD, the replacement character
/// that lossy decoding puts where bytes were not valid text (broken or
/// hostile mail: overlong UTF-8, stray 8-bit bytes). Such a line splits at
/// each U+FFFD into ASCII pieces with the words the segmenter finds in the
/// whole line, at [`ascii_words`]'s speed rather than the segmenter's
/// (~3–10× slower, and it has to be called around every U+FFFD). Under UAX
/// #29, U+FFFD is `Other` (and not Extended_Pictographic): no rule joins
/// it to anything but a following Extend/Format/ZWJ (WB4), which ASCII
/// never is, so there is a boundary on each side of it; no rule's look
/// ahead or behind (WB6/7, WB7b/c, WB11/12, WB15/16) passes through it, as
/// none passes the start or end of the text; and it is no word itself (no
/// letter or digit). A property test pins this to the segmenter.
///
/// Looks only at the non-ASCII bytes, and most non-ASCII lines (real text
/// in another script) are ruled out at their first one.
fn is_ascii_but_replacements(line: &str) -> bool {
    const FFFD: &[u8] = "\u{FFFD}".as_bytes();
    let b = line.as_bytes();
    let mut at = 0;
    while let Some(i) = b[at..].iter().position(|c| !c.is_ascii()) {
        if !b[at + i..].starts_with(FFFD) {
            return false;
        }
        at += i + FFFD.len();
    }
    true
}

fn ascii_chunk(chunk: &str, buf: &mut String, f: &mut impl FnMut(&str) -> bool) -> bool {
    for word in ascii_words(chunk) {
        // Most words are lowercase already: pass those without a copy.
        let word = if word.bytes().any(|c| c.is_ascii_uppercase()) {
            buf.clear();
            buf.push_str(word);
            buf.make_ascii_lowercase();
            buf.as_str()
        } else {
            word
        };
        if !f(word) {
            return false;
        }
    }
    true
}

/// A line with some non-ASCII text: only the stretches around non-ASCII
/// bytes go to the segmenter, the rest to [`ascii_words`]. Latin-script mail
/// has the odd accented word per line, and the segmenter costs ~3× our
/// ASCII splitter (and its ASCII fast path ends at the first non-ASCII byte).
///
/// A line may be cut just after an ASCII space that is followed by an ASCII
/// byte other than a space; the words are the same as the whole line's.
/// Under UAX #29 there is always a boundary there (no rule joins a space to
/// a following ASCII character other than a space: WB3d joins spaces, and
/// WB4's Extend/Format/ZWJ are never ASCII), and no rule deciding a boundary
/// on one side can see past that space to the other: the look-ahead of
/// WB6/WB7b/WB12 and the look-behind of WB7/WB7c/WB11/WB15–16 stop at a
/// space just as they do at the end or start of the text. A property test
/// pins this to the segmenter run over the whole line.
fn mixed_line(line: &str, buf: &mut String, f: &mut impl FnMut(&str) -> bool) -> bool {
    let context = Line::new(line);
    let b = line.as_bytes();
    let cut_before = |i: usize| i > 0 && b[i - 1] == b' ' && b[i].is_ascii() && b[i] != b' ';
    let mut start = 0;
    while start < b.len() {
        let Some(first) = b[start..].iter().position(|&c| !c.is_ascii()) else {
            return ascii_chunk(&line[start..], buf, f);
        };
        let first = start + first;
        // The ASCII stretch before it, up to the last cut.
        let cut = (start + 1..first).rev().find(|&i| cut_before(i));
        if let Some(cut) = cut {
            if !ascii_chunk(&line[start..cut], buf, f) {
                return false;
            }
            start = cut;
        }
        // The stretch with non-ASCII text, up to the next cut.
        let end = (first + 1..b.len())
            .find(|&i| cut_before(i))
            .unwrap_or(b.len());
        let stretch = &line[start..end];
        let more = if is_ascii_and_latin_letters(stretch) {
            latin_chunk(stretch, buf, f)
        } else {
            unicode_line(stretch, &context, buf, f)
        };
        if !more {
            return false;
        }
        start = end;
    }
    true
}

/// Whether `text`'s non-ASCII characters are all Latin-1 letters
/// (U+00C0–U+00FF but `×` and `÷`: `é`, `ß`, `Ñ`…, two bytes `C3 xx`),
/// the accented letters of Western European text.
fn is_ascii_and_latin_letters(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(n) = b[i..].iter().position(|c| !c.is_ascii()) {
        i += n;
        if !(b[i] == 0xC3 && is_latin_letter_tail(b[i + 1])) {
            return false;
        }
        i += 2;
    }
    true
}

/// Whether `C3 tail` is a Latin-1 letter (`tail` is a continuation byte:
/// U+00C0–U+00FF, of which U+00D7 `×` and U+00F7 `÷` are not letters).
fn is_latin_letter_tail(tail: u8) -> bool {
    tail != 0x97 && tail != 0xB7
}

/// UAX #29 word class of the character at `i` of ASCII and Latin-1 letter
/// text ([`is_ascii_and_latin_letters`]), and its length in bytes.
fn latin_class(b: &[u8], i: usize) -> (Wc, usize) {
    let class = match b[i] {
        0xC3 => return (Wc::Letter, 2),
        b'a'..=b'z' | b'A'..=b'Z' => Wc::Letter,
        b'0'..=b'9' => Wc::Digit,
        b'_' => Wc::Underscore,
        b':' => Wc::MidLetter,
        b'.' | b'\'' => Wc::MidNumLet,
        b',' | b';' => Wc::MidNum,
        _ => Wc::Other,
    };
    (class, 1)
}

/// The UAX #29 word classes that occur in ASCII and Latin-1 letters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wc {
    /// ALetter: ASCII and Latin-1 letters.
    Letter,
    /// Numeric.
    Digit,
    /// ExtendNumLet.
    Underscore,
    /// `:`
    MidLetter,
    /// `.` and `'` (MidNumLet, Single_Quote).
    MidNumLet,
    /// `,` and `;`
    MidNum,
    Other,
}

/// The words of text made of ASCII and Latin-1 letters, lowercased, as
/// [`unicode_line`] gives them, without the general segmenter: the rules
/// of [`ascii_words`] with Latin-1 letters as letters. Under UAX #29 they
/// are ALetter, as ASCII letters are, and NFKC leaves them as they are (no
/// compatibility mappings, nothing to compose with), so lowercasing is all
/// the normalising there is (`À`–`Þ` to `à`–`þ`). Mail in French, German
/// or Spanish has such a stretch every few words, and broken
/// quoted-printable lines full of stray `é` are all stretches; the
/// segmenter costs several times more per byte. A property test pins this
/// to the segmenter.
fn latin_chunk(text: &str, buf: &mut String, f: &mut impl FnMut(&str) -> bool) -> bool {
    let b = text.as_bytes();
    let word_class = |c: Wc| matches!(c, Wc::Letter | Wc::Digit | Wc::Underscore);
    let mut i = 0;
    while i < b.len() {
        let (class, len) = latin_class(b, i);
        if !word_class(class) {
            i += len;
            continue;
        }
        let start = i;
        let mut alnum = false;
        let mut prev = class;
        while i < b.len() {
            let (class, len) = latin_class(b, i);
            if word_class(class) {
                alnum |= class != Wc::Underscore;
                prev = class;
                i += len;
                continue;
            }
            let joins = i + len < b.len() && {
                let next = latin_class(b, i + len).0;
                let letters = prev == Wc::Letter && next == Wc::Letter;
                let digits = prev == Wc::Digit && next == Wc::Digit;
                match class {
                    Wc::MidLetter => letters,
                    Wc::MidNumLet => letters || digits,
                    Wc::MidNum => digits,
                    _ => false,
                }
            };
            if !joins {
                break;
            }
            i += len;
        }
        if alnum && !f(latin_lowercase(&text[start..i], buf)) {
            return false;
        }
    }
    true
}

/// `word` (ASCII and Latin-1 letters) lowercased, into `buf`: `A`–`Z`
/// and `À`–`Þ` (but `×`, not a letter) are 0x20 below their lower case.
fn latin_lowercase<'b>(word: &str, buf: &'b mut String) -> &'b str {
    buf.clear();
    buf.extend(word.chars().map(|c| match c {
        'A'..='Z' | 'À'..='Þ' if c != '×' => char::from_u32(c as u32 + 0x20).unwrap_or(c),
        _ => c,
    }));
    buf.as_str()
}

/// The words of `line`, a stretch of `context`'s line, by the UAX #29
/// segmenter.
fn unicode_line(
    line: &str,
    context: &Line,
    buf: &mut String,
    f: &mut impl FnMut(&str) -> bool,
) -> bool {
    // A run of adjacent single characters of a spaceless script, as
    // (start byte, char) pairs, flushed as bigrams when the run ends.
    let mut run: Vec<char> = Vec::new();
    let mut run_end = usize::MAX;
    for (start, word) in line.unicode_word_indices() {
        let mut chars = word.chars();
        let single = match (chars.next(), chars.next()) {
            (Some(c), None) if is_spaceless_script(c) => Some(c),
            _ => None,
        };
        if let Some(c) = single {
            if start != run_end && !flush_run(&mut run, buf, f) {
                return false;
            }
            run.push(c);
            run_end = start + word.len();
            continue;
        }
        if !flush_run(&mut run, buf, f) {
            return false;
        }
        buf.clear();
        if word.is_ascii() {
            buf.push_str(word);
            buf.make_ascii_lowercase();
        } else {
            buf.extend(word.nfkc().flat_map(char::to_lowercase));
            if word.chars().any(is_diacritic) {
                drop_marks(word, buf);
            }
            fold_homoglyphs(buf);
            fold_look_alike_word(buf, context);
        }
        // A word of marks alone (`\u{363}` at a line's start, which UAX
        // #29 counts as a word) is none once they are dropped.
        if buf.is_empty() {
            continue;
        }
        if !f(buf) {
            return false;
        }
    }
    flush_run(&mut run, buf, f)
}

/// The longest word [`fold_homoglyphs`] folds, in bytes (words longer
/// than `Limits::max_word_bytes`, 40 by default, are read as shapes).
const MAX_FOLDED_BYTES: usize = 256;

/// A word that mixes Latin letters with letters of another script that
/// look like them, read in its main script: `viаgra` with a Cyrillic `а`
/// is `viagra`, and `Рoссия` with a Latin `o` is `россия`. Why: a spammer
/// swaps a letter or two for a look-alike so that the word is one the
/// model has never seen, while a reader sees the word they know; UAX #29
/// keeps both scripts in one word, so it is read as a reader reads it.
/// The main script is the one with more of the word's letters (Latin on a
/// tie); the other script's letters that imitate one of the main
/// script's are written as that letter. Which letter a character
/// imitates is its UTS #39 confusable skeleton (`unicode-security`); only
/// characters whose skeleton is one ASCII letter count (Cyrillic `д` is
/// kept). A word in one script is left alone (Russian stays Russian,
/// however many of its letters look Latin), and so is a word with no
/// ASCII letter.
fn fold_homoglyphs(word: &mut String) {
    use unicode_script::UnicodeScript;
    // Latin letters here are ASCII ones: a byte test, so a word of
    // Russian or Greek text costs no script lookup. A word longer than
    // any word (a hostile run of letters with no break) is read as its
    // shape, which folding does not change: it is not folded, so its cost
    // stays the segmenter's.
    if word.len() > MAX_FOLDED_BYTES
        || !word.bytes().any(|b| b.is_ascii_alphabetic())
        || word.is_ascii()
    {
        return;
    }
    let (mut latin, mut foreign, mut main) = (0usize, 0usize, None);
    for c in word.chars() {
        if c.is_ascii_alphabetic() {
            latin += 1;
        } else if let Some(script) = look_alike_script(c.script()) {
            // The first foreign script is the one counted; a third
            // script's letters are left as they are.
            if main.is_none_or(|m| m == script) {
                main = Some(script);
                foreign += 1;
            }
        }
    }
    let Some(script) = main else { return };
    let mut folded = String::with_capacity(word.len());
    if latin >= foreign {
        for c in word.chars() {
            let imitated = (c.script() == script).then(|| imitated_letter(c)).flatten();
            folded.push(imitated.unwrap_or(c));
        }
    } else {
        let table = look_alikes(script);
        for c in word.chars() {
            let imitated = c
                .is_ascii_lowercase()
                .then(|| table[usize::from(c as u8 - b'a')])
                .flatten();
            folded.push(imitated.unwrap_or(c));
        }
    }
    *word = folded;
}

/// A word of an alphabet (Latin, Greek, Cyrillic, Armenian) without the
/// combining marks a reader reads through, given `word` as the mail has
/// it and `buf`, its normalised form (NFKC, lower case), which is
/// rewritten. Why: a spammer stacks marks on letters (`v̶i̶a̶g̶r̶a̶`, with
/// U+0336 on each) or writes an accent as a mark of its own
/// (`vi\u{301}agra`), and UAX #29 keeps the marks in the word, so the
/// model sees a word it has never seen while the reader sees `viagra`.
///
/// - A mark NFKC did not compose into a letter (strokes, overlays, a
///   second accent no precomposed letter has) is dropped: `café`, `ệ` and
///   Greek `έ`, written either way, are letters of their own and stay.
/// - A word that is ASCII apart from its marks loses them all: the
///   accent on `vi\u{301}agra` is not read as `í`. An ASCII word with an
///   accent written as a separate mark is rare in real text (mail is
///   almost always NFC) and is the way this trick is written; the cost
///   is that decomposed (NFD) `cafe\u{301}` reads as `cafe`, not `café`.
///
/// Words with a letter of any other script are left alone: in Devanagari,
/// Thai, Arabic or Hebrew the marks are vowels and signs of the word.
fn drop_marks(word: &str, buf: &mut String) {
    use unicode_script::{Script, UnicodeScript};
    let alphabet = buf.chars().all(|c| {
        is_diacritic(c)
            || matches!(
                c.script(),
                Script::Latin
                    | Script::Greek
                    | Script::Cyrillic
                    | Script::Armenian
                    | Script::Common
                    | Script::Inherited
            )
    });
    if !alphabet {
        return;
    }
    if word.chars().all(|c| c.is_ascii() || is_diacritic(c)) {
        buf.clear();
        buf.extend(word.chars().filter(char::is_ascii));
        buf.make_ascii_lowercase();
    } else {
        buf.retain(|c| !is_diacritic(c));
    }
}

/// Whether `c` is a combining mark that belongs to no script of its own
/// (Unicode script Inherited): the combining diacritics (U+0300–U+036F and
/// their supplements), the marks for symbols (U+20D0–U+20FF) and the half
/// marks, which go on any letter. Marks of a script (Hebrew points, Syriac,
/// Devanagari signs) are that script's, and text that mis-decoded into
/// them is left as it reads. A few marks shared by scripts are Inherited
/// too (the Arabic harakat U+064B–U+0655): put on a Latin word they are
/// dropped like any diacritic; in Arabic words they stay, as
/// [`drop_marks`] leaves words of other scripts alone.
fn is_diacritic(c: char) -> bool {
    use unicode_script::{Script, UnicodeScript};
    !c.is_ascii()
        && unicode_normalization::char::is_combining_mark(c)
        && c.script() == Script::Inherited
}

/// The line a word is read in, for the one rule that looks past the
/// word ([`fold_look_alike_word`]): whether its letters are mostly Latin,
/// worked out only when a word asks. The line is a line of the text the
/// tokenizer hands to [`for_each_word`]: in a body, the text between two
/// links is read apart, so a link ends a line as a line break does.
struct Line<'a> {
    text: &'a str,
    latin: std::cell::Cell<Option<bool>>,
}

impl<'a> Line<'a> {
    fn new(text: &'a str) -> Self {
        Line {
            text,
            latin: Default::default(),
        }
    }

    /// Whether more of the line's letters are ASCII ones than not (any
    /// other letter: Cyrillic, accented Latin, Han, or the letters of
    /// text decoded in the wrong charset).
    fn is_mostly_latin(&self) -> bool {
        *self.latin.get().get_or_insert_with(|| {
            let (mut latin, mut other) = (0usize, 0usize);
            for c in self.text.chars() {
                if c.is_ascii_alphabetic() {
                    latin += 1;
                } else if !c.is_ascii() && c.is_alphabetic() {
                    other += 1;
                }
            }
            latin > other
        })
    }
}

/// A word written wholly in Cyrillic, Greek or Armenian letters that each
/// imitate a Latin one (`рау`, all three Cyrillic), on a line that is
/// mostly Latin letters, read as the Latin word (`pay`). Why: swapping
/// every letter of a word hides it from the model as well as swapping
/// one does ([`fold_homoglyphs`]), and a reader of an English line reads
/// `pay`. On a line mostly in those scripts the word is the language's
/// own (`сор`, `рос` in Russian text) and is left alone, as is any word
/// with a letter that imitates none (`д`). A lone letter is not folded:
/// it is no word a reader reads, and one ASCII letter is not a token.
fn fold_look_alike_word(word: &mut String, context: &Line) {
    if word.len() > MAX_FOLDED_BYTES || word.is_ascii() || word.chars().nth(1).is_none() {
        return;
    }
    // Any mix of the three scripts (`рαу`, Cyrillic, Greek, Cyrillic):
    // every letter must imitate a Latin one.
    let whole = word.chars().all(|c| latin_look_alike(c).is_some());
    if !whole || !context.is_mostly_latin() {
        return;
    }
    let folded: String = word.chars().filter_map(latin_look_alike).collect();
    *word = folded;
}

/// The ASCII letter a lower-case Greek, Cyrillic or Armenian letter
/// (U+0370–U+058F) imitates ([`imitated_letter`]), from a table built
/// once.
fn latin_look_alike(c: char) -> Option<char> {
    use std::sync::OnceLock;
    const FIRST: u32 = 0x370;
    const LAST: u32 = 0x58f;
    static TABLE: OnceLock<[u8; (LAST - FIRST + 1) as usize]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u8; (LAST - FIRST + 1) as usize];
        for (slot, code) in table.iter_mut().zip(FIRST..=LAST) {
            let letter = char::from_u32(code)
                .filter(|c| c.is_lowercase())
                .and_then(imitated_letter);
            *slot = letter.map_or(0, |l| l as u8);
        }
        table
    });
    let i = (c as u32).checked_sub(FIRST)?;
    table
        .get(i as usize)
        .filter(|&&b| b != 0)
        .map(|&b| char::from(b))
}

/// Whether a host name has a label that mixes Latin letters with
/// Cyrillic, Greek or Armenian ones, written in Unicode or as punycode
/// (`xn--`): `pаypal.com` with a Cyrillic `а`. Browsers show such a name
/// as punycode for this reason; mail has no such guard, and legitimate
/// hosts do not mix scripts in a label. Hosts are not folded as words
/// are ([`fold_homoglyphs`]): read as `paypal.com`, the phishing link
/// would carry the real one's evidence.
pub(super) fn host_mixes_scripts(host: &str) -> bool {
    use unicode_script::UnicodeScript;
    // Almost every host: ASCII, no punycode label.
    if host.is_ascii() && !host.contains("xn--") {
        return false;
    }
    let decoded;
    let host = if host.contains("xn--") {
        decoded = idna::domain_to_unicode(host).0;
        decoded.as_str()
    } else {
        host
    };
    host.split('.').any(|label| {
        label.bytes().any(|b| b.is_ascii_alphabetic())
            && label
                .chars()
                .any(|c| look_alike_script(c.script()).is_some())
    })
}

/// The scripts whose letters [`fold_homoglyphs`] reads as Latin ones (or
/// Latin ones as theirs): those with lower-case look-alikes of Latin
/// letters, in the blocks [`look_alikes`] reads.
fn look_alike_script(script: unicode_script::Script) -> Option<unicode_script::Script> {
    use unicode_script::Script;
    matches!(script, Script::Cyrillic | Script::Greek | Script::Armenian).then_some(script)
}

/// For each ASCII lower-case letter, the first lower-case letter of
/// `script` (Greek, Cyrillic or Armenian, U+0370–U+058F) whose UTS #39
/// skeleton it is: Cyrillic `а` for `a`, `р` for `p`. Built once per
/// script from the `unicode-security` data.
fn look_alikes(script: unicode_script::Script) -> &'static [Option<char>; 26] {
    use std::sync::OnceLock;
    use unicode_script::{Script, UnicodeScript};
    static TABLES: [OnceLock<[Option<char>; 26]>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let slot = match script {
        Script::Cyrillic => 0,
        Script::Greek => 1,
        _ => 2,
    };
    TABLES[slot].get_or_init(|| {
        let mut table = [None; 26];
        for c in ('\u{370}'..='\u{58f}').filter(|c| c.script() == script && c.is_lowercase()) {
            if let Some(letter) = imitated_letter(c) {
                table[usize::from(letter as u8 - b'a')].get_or_insert(c);
            }
        }
        table
    })
}

/// The ASCII letter `c` imitates, lower case: its UTS #39 confusable
/// skeleton (`unicode-security`) when that is one ASCII letter.
fn imitated_letter(c: char) -> Option<char> {
    let mut utf8 = [0u8; 4];
    let mut skeleton = unicode_security::confusable_detection::skeleton(c.encode_utf8(&mut utf8));
    match (skeleton.next(), skeleton.next()) {
        (Some(s), None) if s.is_ascii_alphabetic() => Some(s.to_ascii_lowercase()),
        _ => None,
    }
}

/// Emits a run of spaceless-script characters as bigrams (a lone character
/// as itself), and empties it.
fn flush_run(run: &mut Vec<char>, buf: &mut String, f: &mut impl FnMut(&str) -> bool) -> bool {
    let ok = if run.len() == 1 {
        buf.clear();
        buf.push(run[0]);
        f(buf)
    } else {
        run.windows(2).all(|pair| {
            buf.clear();
            buf.extend(pair.iter());
            f(buf)
        })
    };
    run.clear();
    ok
}

/// Scripts that UAX #29 splits into single characters because they are
/// written without spaces between words.
pub fn is_spaceless_script(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x309F   // Hiragana
        | 0x3400..=0x4DBF // CJK Extension A
        | 0x4E00..=0x9FFF // CJK Unified Ideographs
        | 0xF900..=0xFAFF // CJK Compatibility Ideographs
        | 0x20000..=0x3134F // CJK Extensions B–G
        | 0x0E00..=0x0E7F // Thai
        | 0x0E80..=0x0EFF // Lao
        | 0x1000..=0x109F // Myanmar
        | 0x1780..=0x17FF // Khmer
    )
}

/// UAX #29 words of an ASCII line, without the general segmenter.
///
/// In ASCII only these rules can apply: letters and digits and `_` join
/// (WB5, WB8–WB10, WB13a/b); a single `:` (MidLetter) joins two letters; a
/// single `.` or `'` (MidNumLet, Single_Quote) joins two letters or two
/// digits (WB6/7, WB11/12); a single `,` or `;` (MidNum) joins two digits.
/// Everything else breaks, and a segment counts as a word only if it has a
/// letter or digit (as `unicode_words` filters).
pub fn ascii_words(line: &str) -> impl Iterator<Item = &str> {
    let b = line.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        loop {
            while i < b.len() && !is_word_byte(b[i]) {
                i += 1;
            }
            if i >= b.len() {
                return None;
            }
            let start = i;
            let mut alnum = false;
            while i < b.len() {
                let c = b[i];
                if is_word_byte(c) {
                    alnum |= c != b'_';
                    i += 1;
                } else if i > start && i + 1 < b.len() && joins(b[i - 1], c, b[i + 1]) {
                    i += 1;
                } else {
                    break;
                }
            }
            if alnum {
                return Some(&line[start..i]);
            }
        }
    })
}

/// ASCII letters, digits and `_`, by table: this test runs for every byte
/// of body text, and a load is cheaper than the range comparisons.
static WORD_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || b == b'_';
        c += 1;
    }
    t
};

fn is_word_byte(c: u8) -> bool {
    WORD_BYTE[c as usize]
}

/// Whether `mid` between `prev` and `next` stays inside a word.
fn joins(prev: u8, mid: u8, next: u8) -> bool {
    let letters = prev.is_ascii_alphabetic() && next.is_ascii_alphabetic();
    let digits = prev.is_ascii_digit() && next.is_ascii_digit();
    match mid {
        b':' => letters,
        b'.' | b'\'' => letters || digits,
        b',' | b';' => digits,
        _ => false,
    }
}

/// A word's shape, for words that carry no reusable evidence verbatim: the
/// classes of characters it has (`a` letters, `9` digits, `-` other) and its
/// length rounded down to a multiple of ten (`long` words) or its exact
/// length (numbers).
pub fn shape(word: &str, out: &mut String) {
    out.clear();
    let (mut letters, mut digits, mut other) = (false, false, false);
    for c in word.chars() {
        if c.is_alphabetic() {
            letters = true;
        } else if c.is_numeric() {
            digits = true;
        } else {
            other = true;
        }
    }
    if letters {
        out.push('a');
    }
    if digits {
        out.push('9');
    }
    if other {
        out.push('-');
    }
    out.push(':');
    let n = word.chars().count();
    out.push_str(&(n / 10 * 10).to_string());
}

/// Long digit strings (order numbers, phone numbers, amounts) as a pattern:
/// each digit becomes `9`, so `1,299.00` reads as `9,999.99`.
pub fn number_pattern(word: &str, out: &mut String) {
    out.clear();
    out.extend(
        word.chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn words(s: &str) -> Vec<String> {
        let mut out = Vec::new();
        for_each_word(s, &mut String::new(), |w| {
            out.push(w.to_string());
            true
        });
        out
    }

    #[test]
    fn splits_on_uax29_boundaries_and_lowercases() {
        assert_eq!(
            words("FREE Viagra!! don't\nwait 3.14"),
            ["free", "viagra", "don't", "wait", "3.14"]
        );
        assert_eq!(
            words("e.g. foo:bar 1,000.50 a_b __ x.1"),
            ["e.g", "foo:bar", "1,000.50", "a_b", "x", "1"]
        );
    }

    #[test]
    fn normalises_non_ascii_with_nfkc() {
        assert_eq!(words("ÜBER Straße"), ["über", "straße"]);
        assert_eq!(words("ＦＲＥＥ money"), ["free", "money"]);
    }

    #[test]
    fn look_alike_letters_in_a_latin_word_read_as_latin() {
        // Cyrillic а, о, р, е, с; Greek ο and ν: each word as a reader sees it.
        assert_eq!(words("Buy vi\u{430}gra"), ["buy", "viagra"]);
        assert_eq!(words("P\u{430}yP\u{430}l \u{441}lick"), ["paypal", "click"]);
        assert_eq!(
            words("m\u{43e}rtg\u{430}g\u{435} l\u{3bf}\u{3bd}e"),
            ["mortgage", "love"]
        );
        assert_eq!(
            words("VI\u{410}GRA"),
            ["viagra"],
            "upper case, lowered first"
        );
        // One script stays as it is: Russian, Greek, a Cyrillic word that
        // happens to look Latin ("сор").
        assert_eq!(
            words("\u{43f}\u{440}\u{438}\u{432}\u{435}\u{442}"),
            ["\u{43f}\u{440}\u{438}\u{432}\u{435}\u{442}"]
        );
        assert_eq!(
            words("\u{3bb}\u{3cc}\u{3b3}\u{3bf}\u{3c2}"),
            ["\u{3bb}\u{3cc}\u{3b3}\u{3bf}\u{3c2}"]
        );
        assert_eq!(words("\u{441}\u{43e}\u{440}"), ["\u{441}\u{43e}\u{440}"]);
        // A run of letters longer than any word is left as it is (read as
        // its shape, which folding would not change).
        let run = "vi\u{430}gra".repeat(40);
        assert_eq!(words(&run), std::slice::from_ref(&run));
        // A word mostly in Cyrillic with a Latin look-alike or two is read
        // in Cyrillic: "Рoссия" with a Latin o.
        assert_eq!(
            words("\u{420}o\u{441}\u{441}\u{438}\u{44f}"),
            ["\u{440}\u{43e}\u{441}\u{441}\u{438}\u{44f}"]
        );
        // A word wholly in look-alikes (Cyrillic р, а, у, о, с, е) on a
        // line of mostly Latin letters is the Latin word; on a line of
        // mostly Cyrillic letters it is the Russian one.
        assert_eq!(
            words("Confirm your \u{440}\u{430}\u{443} details"),
            ["confirm", "your", "pay", "details"]
        );
        assert_eq!(
            words("CLICK: \u{421}\u{41e}\u{420}\u{415}"),
            ["click", "cope"]
        );
        assert_eq!(
            words("\u{42d}\u{442}\u{43e} \u{441}\u{43e}\u{440} John"),
            ["\u{44d}\u{442}\u{43e}", "\u{441}\u{43e}\u{440}", "john"]
        );
        // Look-alikes of the three scripts mixed in one word: the same.
        assert_eq!(
            words("Confirm your \u{440}\u{3b1}\u{443} details"),
            ["confirm", "your", "pay", "details"]
        );
        // A lone letter is not a word to fold (Greek α in an English line).
        assert_eq!(
            words("the angle \u{3b1} is"),
            ["the", "angle", "\u{3b1}", "is"]
        );
        // One letter that imitates nothing (д) keeps the word as it is.
        assert_eq!(
            words("Confirm your \u{434}\u{430}\u{443}"),
            ["confirm", "your", "\u{434}\u{430}\u{443}"]
        );
        // A letter that imitates no single Latin letter is kept (Cyrillic
        // д); accented Latin letters are Latin.
        assert_eq!(words("c\u{434}fé"), ["c\u{434}fé"]);
        assert_eq!(words("café"), ["café"]);
    }

    #[test]
    fn combining_marks_a_reader_reads_through_do_not_change_a_word() {
        // Strokes and overlays on every letter, an accent written as a
        // mark of its own, marks stacked on a letter: `viagra`.
        let struck: String = "viagra".chars().flat_map(|c| [c, '\u{336}']).collect();
        assert_eq!(
            words(&format!("Buy {struck} now")),
            ["buy", "viagra", "now"]
        );
        assert_eq!(words("vi\u{301}agra"), ["viagra"]);
        assert_eq!(words("VI\u{301}\u{308}\u{323}AGRA"), ["viagra"]);
        // Marks alone at the start of a line are no word.
        assert_eq!(words("\u{363} x\u{345}\u{345} yz"), ["x", "yz"]);
        let circled: String = "free".chars().flat_map(|c| [c, '\u{20dd}']).collect();
        assert_eq!(words(&circled), ["free"]);
        // With a look-alike letter as well: both undone.
        assert_eq!(words("vi\u{430}\u{336}gra"), ["viagra"]);
        // A mark that composes into a letter of a word that has letters
        // beyond ASCII is that letter, in any alphabet, whichever way it
        // is written; a mark that composes into none is dropped.
        assert_eq!(words("crème brûle\u{301}e"), ["crème", "brûlée"]);
        assert_eq!(words("Vi\u{1ec7}t"), ["vi\u{1ec7}t"]);
        assert_eq!(
            words("\u{3ba}\u{3b1}\u{3bb}\u{3b7}\u{3bc}\u{3b5}\u{301}\u{3c1}\u{3b1}"),
            ["\u{3ba}\u{3b1}\u{3bb}\u{3b7}\u{3bc}\u{3ad}\u{3c1}\u{3b1}"]
        );
        assert_eq!(
            words("\u{43f}\u{440}\u{438}\u{336}\u{432}\u{435}\u{442}"),
            ["\u{43f}\u{440}\u{438}\u{432}\u{435}\u{442}"]
        );
        assert_eq!(words("café"), ["café"]);
        // Marks that are part of another script's words stay: Hindi
        // vowel signs and virama, Hebrew points (in canonical order, as NFKC
        // puts them).
        for w in [
            "\u{928}\u{92e}\u{938}\u{94d}\u{924}\u{947}",
            "\u{5e9}\u{5b8}\u{5c1}\u{5dc}\u{5d5}\u{5b9}\u{5dd}",
        ] {
            assert_eq!(words(w), [w]);
        }
    }

    #[test]
    fn latin_letters_are_letters_and_lowercase() {
        assert_eq!(
            words("CAFÉ crème 3×4 ÀÞ_ß l'ÉTÉ a.é 1,5 ÿÿ"),
            [
                "café", "crème", "3", "4", "àþ_ß", "l'été", "a.é", "1,5", "ÿÿ"
            ]
        );
    }

    #[test]
    fn replacement_characters_end_words() {
        assert_eq!(
            words("fr\u{FFFD}ee MONEY\u{FFFD}\u{FFFD} e.g\u{FFFD}.x 3\u{FFFD},5"),
            ["fr", "ee", "money", "e.g", "x", "3", "5"]
        );
    }

    #[test]
    fn spaceless_scripts_become_bigrams() {
        assert_eq!(
            words("無料で今すぐ"),
            ["無料", "料で", "で今", "今す", "すぐ"]
        );
        assert_eq!(words("ฟรีเงิน"), words("ฟรีเงิน"));
        assert!(!words("ส่วนลดพิเศษ").is_empty());
        // A lone ideograph between other words stays a word.
        assert_eq!(words("win 金 now"), ["win", "金", "now"]);
    }

    #[test]
    fn stops_when_asked() {
        let mut n = 0;
        for_each_word("a b c d", &mut String::new(), |_| {
            n += 1;
            n < 2
        });
        assert_eq!(n, 2);
    }

    #[test]
    fn shapes_and_number_patterns() {
        let mut s = String::new();
        shape(
            "aGVsbG8gd29ybGQ0000000000000000000000000000000000000",
            &mut s,
        );
        assert_eq!(s, "a9:50");
        number_pattern("1,299.00", &mut s);
        assert_eq!(s, "9,999.99");
    }

    /// The words of `line` by the UAX #29 segmenter over the whole line
    /// (`unicode_line`): what every fast path must give.
    fn segmenter_words(line: &str) -> Vec<String> {
        let mut whole = Vec::new();
        unicode_line(
            line,
            &Line::new(line),
            &mut String::new(),
            &mut |w: &str| {
                whole.push(w.to_string());
                true
            },
        );
        whole
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// The ASCII fast path is an optimisation, never a behaviour change.
        #[test]
        fn ascii_fast_path_equals_the_segmenter(line in "[ -~\t]{0,48}") {
            let ours: Vec<&str> = ascii_words(&line).collect();
            let uax: Vec<&str> = line.unicode_words().collect();
            prop_assert_eq!(ours, uax);
        }

        /// Cutting a line around its non-ASCII stretches is an optimisation,
        /// never a behaviour change: the same words as the segmenter run
        /// over the whole line, on lines mixing ASCII with the characters
        /// whose UAX #29 rules look furthest (combining marks, ZWJ, emoji,
        /// regional indicators, Hebrew, Katakana, spaceless scripts, wide
        /// and format characters, non-ASCII spaces).
        #[test]
        fn cutting_mixed_lines_equals_the_segmenter(
            parts in proptest::collection::vec(
                prop_oneof![
                    "[ -~]{1,6}",
                    Just(" ".to_string()),
                    Just("  ".to_string()),
                    proptest::sample::select(vec![
                        "é", "\u{301}", "\u{200D}", "\u{AD}", "\u{2060}", "👍", "🇫", "🇷",
                        "א", "״", "カ", "ー", "日本", "無", "ฟรี", "ＦＲＥＥ", "\u{3000}",
                        "\u{A0}", "’", "·", "١٢", "ß", "İ",
                    ]).prop_map(str::to_string),
                ],
                0..24,
            )
        ) {
            let line: String = parts.concat();
            let mut ours = Vec::new();
            mixed_line(&line, &mut String::new(), &mut |w: &str| {
                ours.push(w.to_string());
                true
            });
            prop_assert_eq!(ours, segmenter_words(&line));
        }

        /// Reading Latin-1 letters without the segmenter is an
        /// optimisation, never a behaviour change: the same words as the
        /// segmenter over the whole line, for lines of ASCII and every
        /// Latin-1 letter (with `×`, `÷` and other characters that send a
        /// stretch to the segmenter).
        #[test]
        fn latin_letters_split_as_the_segmenter_does(
            parts in proptest::collection::vec(
                prop_oneof![
                    "[ -~]{1,6}",
                    Just(" ".to_string()),
                    "[\u{C0}-\u{FF}]{1,3}",
                    "[a-zA-Z0-9_.:',;\u{C0}-\u{FF}]{1,6}",
                    proptest::sample::select(vec![
                        "×", "÷", "\u{A0}", "’", "·", "\u{301}", "ª", "µ", "İ", "ﬁ",
                    ]).prop_map(str::to_string),
                ],
                0..24,
            )
        ) {
            let line: String = parts.concat();
            let ours = words(&line);
            prop_assert_eq!(ours, segmenter_words(&line));
        }

        /// Splitting ASCII text at U+FFFD is an optimisation, never a
        /// behaviour change: the same words as the segmenter.
        #[test]
        fn replacement_characters_split_as_the_segmenter_does(
            parts in proptest::collection::vec(
                prop_oneof![
                    "[ -~\t]{1,8}",
                    Just("\u{FFFD}".to_string()),
                    Just("\u{FFFD}\u{FFFD}".to_string()),
                ],
                0..24,
            )
        ) {
            let line: String = parts.concat();
            let ours = words(&line);
            prop_assert_eq!(ours, segmenter_words(&line));
        }

        #[test]
        fn any_text_splits_without_panicking(text in "\\PC{0,64}") {
            let _ = words(&text);
        }
    }
}
