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
        if !unicode_line(&line[start..end], buf, f) {
            return false;
        }
        start = end;
    }
    true
}

fn unicode_line(line: &str, buf: &mut String, f: &mut impl FnMut(&str) -> bool) -> bool {
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
        }
        if !f(buf) {
            return false;
        }
    }
    flush_run(&mut run, buf, f)
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
            let mut whole = Vec::new();
            unicode_line(&line, &mut String::new(), &mut |w: &str| {
                whole.push(w.to_string());
                true
            });
            prop_assert_eq!(ours, whole);
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
            let mut whole = Vec::new();
            unicode_line(&line, &mut String::new(), &mut |w: &str| {
                whole.push(w.to_string());
                true
            });
            prop_assert_eq!(ours, whole);
        }

        #[test]
        fn any_text_splits_without_panicking(text in "\\PC{0,64}") {
            let _ = words(&text);
        }
    }
}
