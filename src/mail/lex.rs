//! Lexing the structured header values chaff reads for authentication
//! (`Authentication-Results`, RFC 8601; `Received-SPF`, RFC 7208 §9.1;
//! `X-HE-DKIM-Result`) as RFC 5322 says: a quoted string (`"…"`, with
//! `\` escapes) is one atom whose content never opens a comment, splits a
//! clause or ends a word; a comment (`( … )`) nests and honours `\`
//! escapes, and separates words like white space; `;` and `=` are special
//! only outside both.
//!
//! Why this matters: these values carry text the sender chose (the HELO
//! name, the MAIL FROM local part, a DKIM `i=`), copied by our own border.
//! Read naively, a `;` or `(` inside that text splits the border's result
//! into clauses the sender wrote (`smtp.helo="x;dmarc=pass"`) or hides the
//! rest of it (`smtp.mailfrom="a("@evil.example`).
//!
//! Malformed input is read, not refused, and never hides what follows it:
//! a `(` or `"` that is never closed is an ordinary character (so a
//! sender's stray `smtp.helo=x(` cannot swallow the border's `dmarc=fail`
//! after it). Linear in the value's length, whatever it holds.

use std::borrow::Cow;

/// A word: adjacent atoms and quoted strings with no white space, comment,
/// `;` or `=` between them (`"a;b"@evil.example` is one word).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Word<'a> {
    /// The word as a property value means it: a word that is one quoted
    /// string is its content (`"bob@example.com"` → `bob@example.com`);
    /// otherwise the text as written, quoted parts quoted again
    /// (`"a;b"@evil.example`), so an address keeps its local part apart
    /// from its domain.
    pub text: Cow<'a, str>,
}

/// What a clause holds, in order: words and the `=` between them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Item<'a> {
    Word(Word<'a>),
    Equals,
}

/// The text between two `;` outside quotes and comments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Clause<'a> {
    pub items: Vec<Item<'a>>,
    /// The inner text of the clause's comments (outermost only, nested
    /// ones inside it): verifiers write facts there (OpenDMARC's
    /// `(p=reject dis=none)`).
    pub comments: Vec<&'a str>,
}

impl<'a> Clause<'a> {
    /// The clause's words, ignoring `=`.
    pub fn words(&self) -> impl Iterator<Item = &Word<'a>> {
        self.items.iter().filter_map(|i| match i {
            Item::Word(w) => Some(w),
            Item::Equals => None,
        })
    }

    /// Every `name = value` in the clause (white space or comments around
    /// the `=` allowed, RFC 8601's CFWS), skipping anything else.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &Word<'a>)> {
        pairs(&self.items)
    }

    /// RFC 8601's methodspec: `method = result` at the start of the clause
    /// (a method version, `dkim/1`, dropped), then the rest of the items.
    pub fn methodspec(&self) -> Option<(&str, &str, &[Item<'a>])> {
        match &self.items[..] {
            [
                Item::Word(method),
                Item::Equals,
                Item::Word(result),
                rest @ ..,
            ] => {
                let method = method.text.split('/').next().unwrap_or_default();
                Some((method, &result.text, rest))
            }
            _ => None,
        }
    }
}

/// Every `name = value` among `items` (part of a clause, e.g. the
/// properties after a methodspec).
pub(crate) fn pairs<'i, 'a>(
    items: &'i [Item<'a>],
) -> impl Iterator<Item = (&'i str, &'i Word<'a>)> {
    items.windows(3).filter_map(|w| match w {
        [Item::Word(name), Item::Equals, Item::Word(value)] => Some((&*name.text, value)),
        _ => None,
    })
}

/// The value split into clauses at each `;` outside quotes and comments
/// (the first clause is what comes before the first `;`).
pub(crate) fn clauses(value: &str) -> Vec<Clause<'_>> {
    Lexer::new(value).run()
}

/// `value` with its RFC 5322 comments removed (quoted strings kept whole,
/// escapes honoured, an unclosed `(` kept as text): for re-reading a From
/// address written with CFWS inside it (`jane.smith(c)@example.net`),
/// which the address parser does not read as an address.
pub(crate) fn without_comments(value: &str) -> Cow<'_, str> {
    if !value.contains('(') {
        return Cow::Borrowed(value);
    }
    let mut lexer = Lexer::new(value);
    let mut out = String::with_capacity(value.len());
    let (mut i, mut run) = (0, 0);
    while i < value.len() {
        match value.as_bytes()[i] {
            b'"' => {
                if let Some((end, _)) = lexer.quote_end(i) {
                    i = end;
                }
            }
            b'(' => {
                if let Some(end) = lexer.comment_end(i) {
                    out.push_str(&value[run..i]);
                    run = end + 1;
                    i = end;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out.push_str(&value[run..]);
    Cow::Owned(out)
}

/// A word being built: where its current atom run started, and the text
/// so far when it has a quoted part.
#[derive(Default)]
struct WordBuf {
    atom_start: Option<usize>,
    /// `Some` once the word has a quoted string.
    owned: Option<String>,
    /// The content of the word's quoted string, while it is the whole word.
    sole_quoted: Option<String>,
    start: Option<usize>,
}

struct Lexer<'a> {
    s: &'a str,
    b: &'a [u8],
    out: Vec<Clause<'a>>,
    clause: Clause<'a>,
    word: WordBuf,
    /// Once a `"` is never closed, no later one is (the scan for a closing
    /// quote from a later `"` sees the same bytes the same way), so each is
    /// an ordinary character without scanning again.
    quotes_unclosed: bool,
    /// After the first `(` that is never closed, whether a later one is
    /// closed is answered from that one scan ([`Unclosed`]), not by scanning
    /// to the end again: many unclosed `(` stay linear.
    unclosed: Option<Unclosed>,
}

/// The comment depth after each byte, scanning from the first unclosed `(`
/// at `from` to the end in comment mode, and the least depth from each
/// position on. A later `(` at `j` is closed exactly when the depth after
/// it falls below where it started: the bytes after `j` are read the same
/// way by both scans, so the depths differ by a constant.
struct Unclosed {
    from: usize,
    depth: Vec<u32>,
    min_after: Vec<u32>,
}

impl Unclosed {
    fn closes(&self, j: usize) -> bool {
        let k = j - self.from;
        k + 1 < self.depth.len() && self.min_after[k + 1] < self.depth[k]
    }
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Self {
        Self {
            s,
            b: s.as_bytes(),
            out: Vec::new(),
            clause: Clause::default(),
            word: WordBuf::default(),
            quotes_unclosed: false,
            unclosed: None,
        }
    }

    fn run(mut self) -> Vec<Clause<'a>> {
        let mut i = 0;
        while i < self.b.len() {
            match self.b[i] {
                b' ' | b'\t' | b'\r' | b'\n' => self.end_word(i),
                b';' => {
                    self.end_word(i);
                    let clause = std::mem::take(&mut self.clause);
                    self.out.push(clause);
                }
                b'=' => {
                    self.end_word(i);
                    self.clause.items.push(Item::Equals);
                }
                b'(' => match self.comment_end(i) {
                    Some(end) => {
                        self.end_word(i);
                        self.clause.comments.push(&self.s[i + 1..end]);
                        i = end;
                    }
                    None => self.atom(i),
                },
                b'"' => match self.quote_end(i) {
                    Some((end, content)) => {
                        self.quoted(i, content);
                        i = end;
                    }
                    None => self.atom(i),
                },
                _ => self.atom(i),
            }
            i += 1;
        }
        self.end_word(self.b.len());
        self.out.push(self.clause);
        self.out
    }

    fn atom(&mut self, i: usize) {
        self.word.start.get_or_insert(i);
        self.word.atom_start.get_or_insert(i);
    }

    /// Ends the word's current atom run at `i`, into its owned text if it
    /// has one.
    fn flush_atom(&mut self, i: usize) {
        if let Some(start) = self.word.atom_start.take()
            && let Some(owned) = &mut self.word.owned
        {
            owned.push_str(&self.s[start..i]);
        }
    }

    fn quoted(&mut self, i: usize, content: String) {
        let first = self.word.start.is_none();
        let start = *self.word.start.get_or_insert(i);
        // The text so far, before this quoted string: the atoms since the
        // word started, or what was already built.
        self.flush_atom(i);
        let owned = self
            .word
            .owned
            .get_or_insert_with(|| self.s[start..i].to_string());
        owned.push('"');
        for c in content.chars() {
            if matches!(c, '"' | '\\') {
                owned.push('\\');
            }
            owned.push(c);
        }
        owned.push('"');
        self.word.sole_quoted = first.then_some(content);
    }

    fn end_word(&mut self, i: usize) {
        let Some(start) = self.word.start else {
            return;
        };
        let had_atom_after = self.word.atom_start.is_some();
        self.flush_atom(i);
        let word = std::mem::take(&mut self.word);
        let text = match (word.sole_quoted, word.owned) {
            (Some(content), _) if !had_atom_after => Cow::Owned(content),
            (_, Some(owned)) => Cow::Owned(owned),
            (_, None) => Cow::Borrowed(&self.s[start..i]),
        };
        self.clause.items.push(Item::Word(Word { text }));
    }

    /// The index of the `"` closing the quoted string opened at `i`, and
    /// its content (escapes resolved, folding removed).
    fn quote_end(&mut self, i: usize) -> Option<(usize, String)> {
        if self.quotes_unclosed {
            return None;
        }
        let mut content = String::new();
        let mut k = i + 1;
        let mut run = k;
        while k < self.b.len() {
            match self.b[k] {
                b'\\' if k + 1 < self.b.len() => {
                    content.push_str(&self.s[run..k]);
                    // The escaped character, whole (it may be multi-byte).
                    let c = self.s[k + 1..].chars().next().unwrap_or_default();
                    content.push(c);
                    k += 1 + c.len_utf8();
                    run = k;
                    continue;
                }
                b'"' => {
                    content.push_str(&self.s[run..k]);
                    return Some((k, content));
                }
                b'\r' | b'\n' => {
                    content.push_str(&self.s[run..k]);
                    run = k + 1;
                }
                _ => {}
            }
            k += 1;
        }
        self.quotes_unclosed = true;
        None
    }

    /// The index of the `)` closing the comment opened at `i`.
    fn comment_end(&mut self, i: usize) -> Option<usize> {
        if let Some(u) = &self.unclosed
            && !u.closes(i)
        {
            return None;
        }
        let mut depth = 0u32;
        let mut k = i;
        while k < self.b.len() {
            match self.b[k] {
                b'\\' => k += 1,
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(k);
                    }
                }
                _ => {}
            }
            k += 1;
        }
        // Never closed: remember how it reads, so later `(` are answered
        // without scanning to the end again.
        if self.unclosed.is_none() {
            self.unclosed = Some(self.scan_unclosed(i));
        }
        None
    }

    fn scan_unclosed(&self, from: usize) -> Unclosed {
        let n = self.b.len() - from;
        let mut depth = vec![0u32; n];
        let mut d = 0u32;
        let mut escaped = false;
        for (k, &c) in self.b[from..].iter().enumerate() {
            if escaped {
                escaped = false;
            } else {
                match c {
                    b'\\' => escaped = true,
                    b'(' => d += 1,
                    // Never below 1: the scan from `from` is never closed.
                    b')' => d -= 1,
                    _ => {}
                }
            }
            depth[k] = d;
        }
        let mut min_after = depth.clone();
        for k in (0..n.saturating_sub(1)).rev() {
            min_after[k] = min_after[k].min(min_after[k + 1]);
        }
        Unclosed {
            from,
            depth,
            min_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(value: &str) -> Vec<Vec<String>> {
        clauses(value)
            .iter()
            .map(|c| {
                c.items
                    .iter()
                    .map(|i| match i {
                        Item::Word(w) => w.text.to_string(),
                        Item::Equals => "=".to_string(),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_quoted_string_is_one_atom_whose_semicolons_and_parens_are_text() {
        assert_eq!(
            words(r#"mx; spf=none smtp.helo="x;dmarc=pass"; dmarc=fail"#),
            [
                vec!["mx"],
                vec!["spf", "=", "none", "smtp.helo", "=", "x;dmarc=pass"],
                vec!["dmarc", "=", "fail"]
            ]
        );
        assert_eq!(
            words(r#"spf=fail smtp.mailfrom="a("@evil.example; dkim=none"#),
            [
                vec![
                    "spf",
                    "=",
                    "fail",
                    "smtp.mailfrom",
                    "=",
                    r#""a("@evil.example"#
                ],
                vec!["dkim", "=", "none"]
            ]
        );
        // Escapes inside the quotes: an escaped quote does not close it.
        assert_eq!(
            words(r#"a="x\";y" ; b"#),
            [vec!["a", "=", r#"x";y"#], vec!["b"]]
        );
    }

    #[test]
    fn comments_nest_honour_escapes_and_separate_words() {
        let c =
            clauses(r#"dmarc=fail (p=reject (nested; still) \) "quote) header.from=x.example; b"#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].comments, [r#"p=reject (nested; still) \) "quote"#]);
        assert_eq!(
            c[0].pairs().map(|(n, v)| (n, &*v.text)).collect::<Vec<_>>(),
            [("dmarc", "fail"), ("header.from", "x.example")]
        );
        // A comment inside a word separates it; `"` inside a comment is text.
        assert_eq!(words("a(c)b"), [vec!["a", "b"]]);
    }

    #[test]
    fn an_unclosed_paren_or_quote_is_text_and_hides_nothing_after_it() {
        assert_eq!(
            words("spf=none smtp.helo=x(; dkim=none; dmarc=fail (p=reject)"),
            [
                vec!["spf", "=", "none", "smtp.helo", "=", "x("],
                vec!["dkim", "=", "none"],
                vec!["dmarc", "=", "fail"]
            ]
        );
        assert_eq!(
            words(r#"smtp.helo=x"; dmarc=fail"#),
            [vec!["smtp.helo", "=", r#"x""#], vec!["dmarc", "=", "fail"]]
        );
        // An unclosed `(` before a closed comment: the comment is still one.
        let c = clauses("a=x(( (c) ; b");
        assert_eq!(c[0].comments, ["c"]);
        assert_eq!(words("a=x(( (c) ; b")[1], ["b"]);
    }

    #[test]
    fn comments_are_removed_but_not_from_quoted_strings() {
        assert_eq!(
            without_comments("jane.smith(c)@example.net"),
            "jane.smith@example.net"
        );
        assert_eq!(
            without_comments(r#""Smith (Sales)" <a(x(y))@b.example> (old)"#),
            r#""Smith (Sales)" <a@b.example> "#
        );
        assert_eq!(without_comments("a(@b.example"), "a(@b.example");
    }

    #[test]
    fn many_unclosed_parens_are_read_in_linear_time() {
        let hostile = "(".repeat(200_000) + "; dmarc=fail";
        let t = std::time::Instant::now();
        let c = clauses(&hostile);
        assert_eq!(c.len(), 2);
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
        let quotes = "\"".repeat(200_001) + "; dmarc=fail";
        assert_eq!(clauses(&quotes).len(), 2);
    }
}
