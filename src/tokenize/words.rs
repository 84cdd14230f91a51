//! Word splitting for free text (subjects, display names, bodies).
//!
//! We follow UAX #29 word boundaries (`unicode-segmentation`), fed one line at
//! a time: the crate's ASCII fast path is lost for the rest of its input at the
//! first non-ASCII byte, so a whole 10 KB message costs ~41 ns/byte where line
//! by line costs ~13 ns/byte with identical output (shared/notes/stack.md).

use unicode_segmentation::UnicodeSegmentation;

/// Calls `f` with each UAX #29 word of `text`, lowercased into a reused
/// buffer so the hot loop allocates nothing per word.
pub fn for_each_word(text: &str, buf: &mut String, mut f: impl FnMut(&str) -> bool) {
    for line in text.lines() {
        for word in line.unicode_words() {
            buf.clear();
            if word.is_ascii() {
                buf.push_str(word);
                buf.make_ascii_lowercase();
            } else {
                buf.extend(word.chars().flat_map(char::to_lowercase));
            }
            if !f(buf) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = String::new();
        for_each_word(s, &mut buf, |w| {
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
    }

    #[test]
    fn lowercases_non_ascii() {
        assert_eq!(words("ÜBER Straße"), ["über", "straße"]);
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
}
