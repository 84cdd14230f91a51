//! HTML bodies: the text a reader sees, the text they don't, and the
//! structure spammers rely on (link text naming one host while the link goes
//! to another, image-only mail, forms). Parsed by `lol_html`, a streaming
//! HTML tokenizer built for untrusted input; entities are decoded by
//! `html-escape`.
//!
//! lol_html costs ~0.3–0.4 µs per tag (its selector machinery runs for
//! every element), so tag soup is the most expensive text there is: 256 KiB
//! of `<div>` took ~15–20 ms where 256 KiB of prose takes ~2 ms
//! (docs/PERFORMANCE.md, "Hostile mail at scale"). A message's HTML parts
//! share a budget of [`MAX_HTML_TAGS`] tag openings; past it the rest of
//! the HTML is read by [`strip`], a plain scan that keeps the text and
//! drops the markup, and the cut is reported as `LimitHit::HtmlTags`.
//!
//! Within the budget, HTML of a plain form (ordinary elements, simple
//! tags, nothing hidden, a plain head: see [`plain`]) is read by a byte
//! scan that gives what lol_html gives, property-tested against it; hostile
//! tag soup is of that form, and reading it so took `html-links` and
//! `html-tags-flat` from ~10× a normal Score to 5–7× (session 13).

use std::cell::RefCell;
use std::rc::Rc;

use lol_html::{HtmlRewriter, Settings, doc_text, element};

use super::LimitHit;
use super::parts;
use super::scan;
use super::sink::{Sink, Tag};

/// The text of an HTML part, split by visibility.
#[derive(Default)]
pub(super) struct Scan {
    pub visible: String,
    pub hidden: String,
}

#[derive(Default)]
struct State {
    /// Open elements whose content is not shown (display:none…): those of
    /// `open` that hide.
    hidden_depth: u32,
    /// Open elements whose content is not text at all (script, style,
    /// head): those of `open` that skip.
    skip_depth: u32,
    /// The elements lol_html's reading has open, with what each does to
    /// its content ([`open`](State::push_open)): lol_html builds no tree,
    /// so the ends HTML implies (`<p>` closing an open `<p>`, `</div>`
    /// closing the `<p>` inside it) are found here.
    open: Vec<Open>,
    /// The number the next element pushed on `open` gets.
    next_open: u32,
    visible: String,
    hidden: String,
    /// The open `<a href>`: its target host and its text so far.
    link: Option<(String, String)>,
    hrefs: Vec<String>,
    images: u32,
    forms: u32,
    mismatched_links: u32,
}

/// An element open in lol_html's reading.
struct Open {
    /// Its tag name if implied ends or formatting name it ([`interned`]),
    /// else empty: no allocation per element.
    name: &'static str,
    /// Its number, which its end-tag handler names.
    id: u32,
    hides: bool,
    skips: bool,
}

/// Whether an inline style hides the element's content from a reader:
/// `display: none`, `visibility: hidden`, `opacity` at most 0.05, a
/// `font-size` of at most 2 px (or its equal in pt, em, rem, %), a
/// height or width of 0 with `overflow: hidden`, text colored
/// transparent or exactly as its background, text moved 500 px or more
/// off the page, `transform: scale(0)`, `clip: rect(0 …)`.
///
/// The style is read as CSS is ([`css_text`]): entities decoded,
/// comments and escapes undone, `!important` dropped, any case and
/// spacing. Why each: a red-team walkthrough (session 25) padded spam
/// with 146 of the user's ham words under `font-size:0pt`,
/// `opacity:0.0`, `display&#58;none`, `display:/**/none`,
/// `display:n\6f ne`, white on white, `left:-9999px` and more: each was
/// read as visible, and the spam scored unsure, which is delivered.
/// Colors are compared only within one element's style: white text in a
/// dark table cell is common and visible.
fn hides(style: &str) -> bool {
    let text = css_text(style);
    let decls = css_declarations(&text);
    let get = |prop: &str| {
        decls
            .iter()
            .rev()
            .find(|(p, _)| *p == prop)
            .map(|(_, v)| *v)
    };
    let is_zero_len = |v: &str| css_length_px(v).is_some_and(|px| px <= 0.0);
    let overflow_hidden = get("overflow").is_some_and(|v| v == "hidden" || v == "clip");
    get("display") == Some("none")
        || get("visibility").is_some_and(|v| v == "hidden" || v == "collapse")
        || get("opacity")
            .and_then(css_number_or_percent)
            .is_some_and(|o| o <= 0.05)
        || get("font-size")
            .and_then(css_length_px)
            .is_some_and(|px| px <= 2.0)
        || (overflow_hidden
            && ["height", "max-height", "width", "max-width"]
                .iter()
                .any(|p| get(p).is_some_and(is_zero_len)))
        || get("color").is_some_and(|c| {
            c == "transparent"
                || css_color(c).is_some_and(|color| {
                    get("background-color")
                        .or_else(|| get("background"))
                        .is_some_and(|b| {
                            css_color(b) == Some(color)
                                || b.split_whitespace().any(|w| css_color(w) == Some(color))
                        })
                })
        })
        || ["text-indent", "left", "top", "margin-left", "margin-top"]
            .iter()
            .any(|p| {
                get(p)
                    .and_then(css_length_px)
                    .is_some_and(|px| px <= -500.0)
            })
        || get("transform").is_some_and(|t| {
            let t: String = t.chars().filter(|c| !c.is_whitespace()).collect();
            t.contains("scale(0)") || t.contains("scale(0,0)") || t.contains("scale(0.0)")
        })
        || get("clip").is_some_and(|c| {
            let c: String = c
                .chars()
                .filter(|c| !c.is_whitespace() && *c != ',')
                .collect();
            c.starts_with("rect(0") && c.chars().filter(char::is_ascii_digit).all(|d| d == '0')
        })
}

/// Most bytes of `<style>` element text read for [`hidden_classes`]: a
/// newsletter's stylesheet is a few KiB; past this a message gains no
/// hiding rule.
const MAX_STYLE_SHEET: usize = 64 * 1024;

/// Where a `<style>` is text, not a style sheet: a comment and the
/// elements HTML reads as text (raw text and escapable raw text), each
/// from its start to its end (case ignored).
const TEXT_ONLY: [(&str, &str); 5] = [
    ("<!--", "-->"),
    ("<script", "</script"),
    ("<title", "</title"),
    ("<textarea", "</textarea"),
    ("<xmp", "</xmp"),
];

/// Most hidden classes kept from a part's style sheets.
const MAX_HIDDEN_CLASSES: usize = 64;

/// The classes a part's `<style>` elements hide: rules whose selector is
/// one class (`.x`, or `span.x`) and whose declarations hide as an inline
/// style would ([`hides`]). Why: once inline styles were read as CSS
/// (session 25), `<style>.p{display:none}</style>` and `<span class=p>`
/// was the next way to pad spam with hidden ham words, and mail clients
/// that render HTML apply a head's style sheet.
///
/// Read as a reader's client reads it, within reason: rules in order, a
/// later rule for the class that sets `display`, `visibility`, `opacity`,
/// `font-size` or `color` without hiding shows it again; `@media` and
/// other at-rules are skipped (they apply only on some screens); compound,
/// descendant and id selectors are not matched (a class alone is what
/// padding uses; matching more needs a cascade). Class names are compared
/// without regard to ASCII case.
fn hidden_classes(html: &str) -> Vec<String> {
    let mut sheet = String::new();
    let mut at = 0;
    while sheet.len() < MAX_STYLE_SHEET
        && let Some(open) = find_ascii_nocase(html, at, "<style")
    {
        // A `<style>` inside a comment, or inside an element whose content
        // is text (`<script>`, `<title>`, `<textarea>`, `<xmp>`), is no
        // style sheet: a client shows what such a rule would hide, so
        // reading it would move visible words out of the body.
        let before = &html[..open];
        let text_first = TEXT_ONLY
            .iter()
            .filter_map(|(start, end)| Some((find_ascii_nocase(before, at, start)?, start, end)))
            .min_by_key(|(i, ..)| *i);
        if let Some((i, start, end)) = text_first {
            at =
                find_ascii_nocase(html, i + start.len(), end).map_or(html.len(), |j| j + end.len());
            continue;
        }
        let after = open + "<style".len();
        let Some(gt) = html[after..].find('>').map(|i| after + i + 1) else {
            break;
        };
        if !html[after..].starts_with(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/') {
            at = after;
            continue;
        }
        let end = find_ascii_nocase(html, gt, "</style").unwrap_or(html.len());
        let take = (end - gt).min(MAX_STYLE_SHEET - sheet.len());
        let mut cut = gt + take;
        while !html.is_char_boundary(cut) {
            cut -= 1;
        }
        sheet.push_str(&html[gt..cut]);
        sheet.push('\n');
        at = end;
    }
    if sheet.is_empty() {
        return Vec::new();
    }
    let text = css_text(&sheet).replace("<!--", " ").replace("-->", " ");
    let mut hidden: Vec<String> = Vec::new();
    let mut rest = text.as_str();
    while let Some(open) = rest.find('{') {
        let prelude = rest[..open].trim();
        // The block's end, past nested blocks (an at-rule's).
        let mut depth = 0usize;
        let mut close = None;
        for (i, c) in rest[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(open + i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(close) = close else { break };
        let body = &rest[open + 1..close];
        rest = &rest[close + 1..];
        // A `;` or `}` left before the prelude by a stray token.
        let prelude = prelude.rsplit(['}', ';']).next().unwrap_or(prelude).trim();
        if prelude.starts_with('@') || body.contains('{') {
            continue;
        }
        let hides_here = hides(body);
        let shows = !hides_here
            && css_declarations(body).iter().any(|(p, _)| {
                matches!(
                    *p,
                    "display" | "visibility" | "opacity" | "font-size" | "color"
                )
            });
        for selector in prelude.split(',') {
            let Some(class) = single_class(selector.trim()) else {
                continue;
            };
            if hides_here && !hidden.iter().any(|h| h == class) {
                if hidden.len() < MAX_HIDDEN_CLASSES {
                    hidden.push(class.to_string());
                }
            } else if shows {
                hidden.retain(|h| h != class);
            }
        }
    }
    hidden
}

/// The class of a selector that is one class, optionally on one element
/// name: `.x`, `span.x`; `None` for anything else.
fn single_class(selector: &str) -> Option<&str> {
    let (element, class) = selector.split_once('.')?;
    let name_ok = element.bytes().all(|b| b.is_ascii_alphanumeric());
    let class_ok = !class.is_empty()
        && class
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (name_ok && class_ok).then_some(class)
}

/// Whether a `class` attribute names one of `hidden` ([`hidden_classes`]).
fn has_hidden_class(class: &str, hidden: &[String]) -> bool {
    class
        .split_ascii_whitespace()
        .any(|c| hidden.iter().any(|h| h.eq_ignore_ascii_case(c)))
}

/// An inline style as CSS reads it, lowercase: entities decoded (an
/// attribute's value is HTML), CSS comments removed and CSS escapes
/// (`\\6f `, `\\:`) undone. Most styles have none of these and are
/// lowercase already: those are not copied.
fn css_text(style: &str) -> std::borrow::Cow<'_, str> {
    if !style
        .bytes()
        .any(|b| matches!(b, b'&' | b'/' | b'\\') || !b.is_ascii() || b.is_ascii_uppercase())
    {
        return std::borrow::Cow::Borrowed(style);
    }
    let decoded = html_escape::decode_html_entities(style);
    let mut text = String::with_capacity(decoded.len());
    let mut chars = decoded.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
                text.push(' ');
            }
            '\\' => {
                let mut hex = String::new();
                while hex.len() < 6 && chars.peek().is_some_and(char::is_ascii_hexdigit) {
                    hex.extend(chars.next());
                }
                if hex.is_empty() {
                    text.extend(chars.next());
                } else {
                    if chars.peek().is_some_and(|c| c.is_whitespace()) {
                        chars.next();
                    }
                    let c = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                    text.push(c.unwrap_or(char::REPLACEMENT_CHARACTER));
                }
            }
            _ => text.push(c),
        }
    }
    std::borrow::Cow::Owned(text.to_lowercase())
}

/// The declarations of a style read by [`css_text`], `(property, value)`,
/// trimmed, `!important` dropped.
fn css_declarations(text: &str) -> Vec<(&str, &str)> {
    text.split(';')
        .filter_map(|decl| {
            let (prop, value) = decl.split_once(':')?;
            let value = value.trim();
            let value = value.strip_suffix("!important").unwrap_or(value).trim();
            Some((prop.trim(), value))
        })
        .collect()
}

/// A CSS number, or a percentage as a fraction (`50%` is 0.5).
fn css_number_or_percent(v: &str) -> Option<f64> {
    match v.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().ok().map(|p| p / 100.0),
        None => v.parse().ok(),
    }
}

/// A CSS length in px (16 px to the em and rem, a percentage of a 16 px
/// font, 4/3 px to the pt), for the units mail uses; `None` for anything
/// else (`auto`, `calc()`, keywords).
fn css_length_px(v: &str) -> Option<f64> {
    let v = v.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    let per = match unit.trim() {
        "" if n == 0.0 => 1.0,
        "px" => 1.0,
        "pt" => 4.0 / 3.0,
        "em" | "rem" => 16.0,
        "%" => 0.16,
        "mm" => 96.0 / 25.4,
        "cm" => 96.0 / 2.54,
        "in" => 96.0,
        _ => return None,
    };
    Some(n * per)
}

/// A CSS color as `(r, g, b)`: `#rgb`, `#rrggbb`, `rgb(…)` and the
/// common names; `None` for others (the comparison then finds nothing).
fn css_color(v: &str) -> Option<(u8, u8, u8)> {
    let v: String = v.chars().filter(|c| !c.is_whitespace()).collect();
    let v = v.as_str();
    if let Some(hex) = v.strip_prefix('#') {
        let h = |s: &str| u8::from_str_radix(s, 16).ok();
        return match hex.len() {
            3 => {
                let d: Vec<u8> = hex
                    .chars()
                    .map(|c| c.to_digit(16).map(|d| d as u8 * 17))
                    .collect::<Option<_>>()?;
                Some((d[0], d[1], d[2]))
            }
            6 => Some((h(&hex[0..2])?, h(&hex[2..4])?, h(&hex[4..6])?)),
            _ => None,
        };
    }
    if let Some(args) = v.strip_prefix("rgb(").or_else(|| v.strip_prefix("rgba(")) {
        let mut it = args
            .trim_end_matches(')')
            .split(',')
            .map(|x| x.parse::<u8>().ok());
        return Some((it.next()??, it.next()??, it.next()??));
    }
    match v {
        "white" => Some((255, 255, 255)),
        "black" => Some((0, 0, 0)),
        "red" => Some((255, 0, 0)),
        "blue" => Some((0, 0, 255)),
        "yellow" => Some((255, 255, 0)),
        "silver" => Some((192, 192, 192)),
        "gray" | "grey" => Some((128, 128, 128)),
        _ => None,
    }
}

/// The host a URL or bare domain names, lowercased; `None` if it names none.
/// Called twice per link (its target, its text): its delimiters are ASCII
/// and found by byte (the `str` searches it used were a tenth of a
/// hostile message of links, docs/PERFORMANCE.md session 13); the same
/// slices as before, pinned by `host_of_is_as_before`.
fn host_of(s: &str) -> Option<String> {
    let s = s.trim();
    let b = s.as_bytes();
    // Past the first "://", if there is one.
    let rest = memchr::memchr_iter(b':', b)
        .find(|&i| b[i + 1..].starts_with(b"//"))
        .map_or(s, |i| &s[i + 3..]);
    let end = rest
        .bytes()
        .position(|c| matches!(c, b'/' | b'?' | b'#' | b':'))
        .unwrap_or(rest.len());
    let host = &rest[..end];
    let host = memchr::memrchr(b'@', host.as_bytes()).map_or(host, |i| &host[i + 1..]);
    let host = host.trim_end_matches('.');
    (host.len() <= 253
        && memchr::memchr(b'.', host.as_bytes()).is_some()
        && !host.contains(char::is_whitespace))
    .then(|| host.to_ascii_lowercase())
}

/// Tag openings (`<` followed by an ASCII letter, `/`, `!` or `?`) given
/// to lol_html per message, all HTML parts together. The most in a message
/// of the SpamAssassin and TREC 2006 corpora is about 4,600 (fewer within
/// the scan cap): real mail stays under it, and 4,096 tags cost ~1.5 ms.
pub(super) const MAX_HTML_TAGS: usize = 4096;

/// Where the tag opening past the budget `tags_left` is in `html` (`None`:
/// all of `html` fits), taking what `html` uses from the budget.
fn tag_cut(html: &str, tags_left: &mut usize) -> Option<usize> {
    let b = html.as_bytes();
    let mut cut = None;
    scan::each_position(b, 0, b'<', |at| {
        if !b.get(at + 1).is_some_and(|&c| opens_markup(c)) {
            return true;
        }
        if *tags_left == 0 {
            cut = Some(at);
            return false;
        }
        *tags_left -= 1;
        true
    });
    cut
}

/// Whether `<` followed by `c` opens markup (a tag, an end tag, a comment
/// or doctype, a processing instruction), as the HTML tokenizer reads it.
fn opens_markup(c: u8) -> bool {
    c.is_ascii_alphabetic() || matches!(c, b'/' | b'!' | b'?')
}

/// The first `byte` in `b`, as `memchr` finds it. Tag soup puts the next
/// `<` or `>` a few bytes on, where a call of `memchr` costs more than the
/// search (half of [`strip`]'s instructions on `html-tags-flat`,
/// docs/PERFORMANCE.md session 13): the first [`NEAR`] bytes are looked at
/// one by one, the rest by `memchr`.
fn find_byte(b: &[u8], byte: u8) -> Option<usize> {
    let near = b.len().min(NEAR);
    match b[..near].iter().position(|&c| c == byte) {
        Some(i) => Some(i),
        None => memchr::memchr(byte, &b[near..]).map(|i| near + i),
    }
}

/// Bytes [`find_byte`] looks at before calling `memchr`.
const NEAR: usize = 16;

/// The first `needle` (ASCII, lowercase) in `hay` at or after `from`,
/// ignoring ASCII case.
fn find_ascii_nocase(hay: &str, from: usize, needle: &str) -> Option<usize> {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    let mut at = from;
    while let Some(i) = hay[at..].find(char::from(n[0])) {
        let start = at + i;
        if h.len() - start >= n.len() && h[start..start + n.len()].eq_ignore_ascii_case(n) {
            return Some(start);
        }
        at = start + 1;
    }
    None
}

/// The text of HTML past the tag budget, read without an HTML tokenizer, a
/// few ns per byte: markup from `<` (followed by what [`opens_markup`]) to
/// the next `>` is dropped, a start tag separating words as in lol_html's
/// reading; comments and the contents of `script` and `style` are
/// skipped; everything else is appended to `out` (entities are decoded
/// later with the rest of the text). An unterminated tag or comment runs
/// to the end.
fn strip(html: &str, out: &mut String) {
    let b = html.as_bytes();
    let mut pos = 0;
    while pos < b.len() {
        let Some(i) = find_byte(&b[pos..], b'<') else {
            out.push_str(&html[pos..]);
            return;
        };
        let at = pos + i;
        let Some(&next) = b.get(at + 1).filter(|&&c| opens_markup(c)) else {
            out.push_str(&html[pos..=at]);
            pos = at + 1;
            continue;
        };
        out.push_str(&html[pos..at]);
        let end = if html[at..].starts_with("<!--") {
            html[at + 4..].find("-->").map(|e| at + 4 + e + 3)
        } else {
            find_byte(&b[at..], b'>').map(|e| at + e + 1)
        };
        let Some(end) = end else { return };
        pos = end;
        let name_at = at + 1 + usize::from(next == b'/');
        let name_len = b[name_at..end]
            .iter()
            .position(|c| !c.is_ascii_alphanumeric())
            .unwrap_or(end - name_at);
        let name = &b[name_at..name_at + name_len];
        if (next.is_ascii_alphabetic() || next == b'/') && !is_inline(name) {
            out.push(' ');
        }
        if next.is_ascii_alphabetic() {
            for raw in ["script", "style"] {
                if name.eq_ignore_ascii_case(raw.as_bytes()) {
                    let close = if raw == "script" {
                        "</script"
                    } else {
                        "</style"
                    };
                    pos = find_ascii_nocase(html, end, close).unwrap_or(b.len());
                }
            }
        }
    }
}

/// Scans `html`, pushes its structural features, returns its text. At most
/// `tags_left` tag openings are read as HTML (the message's budget,
/// [`MAX_HTML_TAGS`], taken from); the rest of the part by [`strip`]. The
/// HTML is read by [`plain`] when it is of the plain form it knows, by
/// lol_html otherwise; both give the same [`State`] (property-tested).
pub(super) fn scan(html: &str, tags_left: &mut usize, sink: &mut Sink) -> Scan {
    let cut = tag_cut(html, tags_left);
    let (html, rest) = html.split_at(cut.unwrap_or(html.len()));
    // A part whose style sheet hides classes is read by lol_html, which
    // applies them; `plain` reads no class.
    let hidden = hidden_classes(html);
    let plainly = if hidden.is_empty() { plain(html) } else { None };
    let mut s = match plainly {
        Some(s) => s,
        None => {
            let (s, ok) = rewrite(html, hidden);
            if !ok {
                sink.push(Tag::Html, "unparsable");
            }
            s
        }
    };
    if cut.is_some() {
        sink.hit(LimitHit::HtmlTags);
        strip(rest, &mut s.visible);
    }
    features(&s, sink);
    Scan {
        visible: html_escape::decode_html_entities(&s.visible).into_owned(),
        hidden: html_escape::decode_html_entities(&s.hidden).into_owned(),
    }
}

impl State {
    /// What every start tag does: the boundaries of block elements, and
    /// elements that show something of their own (`<br>`, `<img>`),
    /// separate words ("<p>a</p><p>b</p>" is "a b"); inline elements do
    /// not, as a reader sees no break: `mort<b></b>gage` is one word
    /// (splitting there let a red-team walkthrough, session 25, break every
    /// word of a spam in two).
    fn open_element(&mut self, name: &str) {
        self.boundary(name);
        match name {
            "img" => self.images += 1,
            "form" => self.forms += 1,
            _ => {}
        }
    }

    /// An `<a href>`: its target is kept, and its text followed (when it
    /// has content) to compare the host it names with the target's.
    fn open_link(&mut self, href: String, can_have_content: bool) {
        let host = host_of(&href).unwrap_or_default();
        if self.hrefs.len() < 1000 {
            self.hrefs.push(href);
        }
        if can_have_content {
            self.link = Some((host, String::new()));
        }
    }

    /// `</a>`: whether the link's text named another host than its target.
    fn close_link(&mut self) {
        if let Some((target, text)) = self.link.take() {
            let shown = html_escape::decode_html_entities(&text);
            if let Some(shown_host) = host_of(&shown)
                && !target.is_empty()
                && shown_host != target
                && !target.ends_with(&format!(".{shown_host}"))
            {
                self.mismatched_links += 1;
            }
        }
    }

    /// What every end tag does: a block's end separates words
    /// (`<div>a</div>b` is "a b"), an inline element's does not.
    fn close_element(&mut self, name: &str) {
        self.boundary(name);
    }

    /// A word boundary at a tag of element `name`, unless it is inline.
    fn boundary(&mut self, name: &str) {
        if !is_inline(name.as_bytes()) {
            self.visible.push(' ');
            self.hidden.push(' ');
        }
    }

    /// Ends elements whose end a start tag `name` implies (HTML's
    /// tree-construction rules, in outline: a block closes an open `<p>`,
    /// `<li>` an open `<li>`, a cell an open cell, `<body>` or body
    /// content the `<head>`), before `name` is pushed.
    fn implied_by_start(&mut self, name: &str) {
        const SCOPE: &[&str] = &[
            "applet", "caption", "html", "table", "td", "th", "marquee", "object", "template",
        ];
        const BUTTON_SCOPE: &[&str] = &[
            "applet", "caption", "html", "table", "td", "th", "marquee", "object", "template",
            "button",
        ];
        const LIST_SCOPE: &[&str] = &[
            "applet", "caption", "html", "table", "td", "th", "marquee", "object", "template",
            "ol", "ul",
        ];
        const TABLE_SCOPE: &[&str] = &["table", "html", "template"];
        let (targets, barriers): (&[&str], &[&str]) = match name {
            "li" => (&["li"], LIST_SCOPE),
            "dd" | "dt" => (&["dd", "dt"], SCOPE),
            "td" | "th" => (&["td", "th"], TABLE_SCOPE),
            "tr" => (&["td", "th", "tr"], TABLE_SCOPE),
            "tbody" | "thead" | "tfoot" => {
                (&["td", "th", "tr", "tbody", "thead", "tfoot"], TABLE_SCOPE)
            }
            "option" => (&["option"], &["select", "datalist", "optgroup"]),
            "optgroup" => (&["option", "optgroup"], &["select", "datalist"]),
            _ => (&[], &[]),
        };
        if !targets.is_empty() {
            self.close_in_scope(targets, barriers);
        }
        if closes_p(name) {
            self.close_in_scope(&["p"], BUTTON_SCOPE);
        }
        // A heading in a heading ends it.
        if is_heading(name) && self.open.last().is_some_and(|o| is_heading(o.name)) {
            self.pop_to(self.open.len() - 1);
        }
        if self.open.last().is_some_and(|o| o.name == "head") && !in_head(name) {
            self.pop_to(self.open.len() - 1);
        }
    }

    /// Closes the innermost open element named in `targets`, unless one
    /// named in `barriers` is open inside it.
    fn close_in_scope(&mut self, targets: &[&str], barriers: &[&str]) {
        for i in (0..self.open.len()).rev() {
            let name = self.open[i].name;
            if targets.contains(&name) {
                self.pop_to(i);
                return;
            }
            if barriers.contains(&name) {
                return;
            }
        }
    }

    /// Pushes an element with content on `open`; returns the number its
    /// end-tag handler names.
    fn push_open(&mut self, name: &str, hides: bool, skips: bool) -> u32 {
        let id = self.next_open;
        self.next_open = self.next_open.wrapping_add(1);
        self.hidden_depth += u32::from(hides);
        self.skip_depth += u32::from(skips);
        self.open.push(Open {
            name: interned(name),
            id,
            hides,
            skips,
        });
        id
    }

    /// The end tag of element `id`: it ends, and with it the elements
    /// opened inside it that are still open (their ends were implied) —
    /// except formatting elements (`<b>`, `<font>`, `<a>`…), which a
    /// browser carries on past a block's end with their attributes. An
    /// element already ended by an implied end is not found: nothing.
    fn close(&mut self, id: u32) {
        if let Some(i) = self.open.iter().rposition(|o| o.id == id) {
            self.pop_to(i);
        }
    }

    /// Ends `open[at]` and the non-formatting elements above it.
    fn pop_to(&mut self, at: usize) {
        let target = self.open[at].id;
        let mut i = self.open.len();
        while i > at {
            i -= 1;
            let o = &self.open[i];
            if o.id == target || !is_formatting(o.name) {
                let o = self.open.remove(i);
                self.hidden_depth -= u32::from(o.hides);
                self.skip_depth -= u32::from(o.skips);
            }
        }
    }

    /// Text in an open `<head>` (other than white space) ends it, as it
    /// does in HTML: the body has begun.
    fn text_in_head(&mut self, chunk: &str) {
        if self.open.last().is_some_and(|o| o.name == "head") && !chunk.trim_ascii().is_empty() {
            self.pop_to(self.open.len() - 1);
        }
    }

    /// A run of text, entities still in it.
    fn text(&mut self, chunk: &str) {
        if self.skip_depth > 0 {
            return;
        }
        if let Some((_, link_text)) = &mut self.link
            && link_text.len() < MAX_LINK_TEXT
        {
            link_text.push_str(chunk);
        }
        if self.hidden_depth > 0 {
            self.hidden.push_str(chunk);
        } else {
            self.visible.push_str(chunk);
        }
    }
}

/// Bytes of a link's text kept to find the host it names: text is added
/// while the kept text is shorter (lol_html gives it in runs).
const MAX_LINK_TEXT: usize = 1024;

/// `html` read by lol_html, elements of a `hidden` class
/// ([`hidden_classes`]) hiding their content; `false` if lol_html gave up
/// on it.
fn rewrite(html: &str, hidden: Vec<String>) -> (State, bool) {
    let state = Rc::new(RefCell::new(State::default()));
    let (st_el, st_text) = (state.clone(), state.clone());
    let mut rewriter = HtmlRewriter::new(
        Settings::new()
            .append_element_content_handler(element!("*", move |el| {
                // Already lowercased (ASCII) by lol_html.
                let name = el.tag_name();
                let mut s = st_el.borrow_mut();
                s.implied_by_start(&name);
                s.open_element(&name);
                if name == "a"
                    && let Some(href) = el.get_attribute("href")
                {
                    s.open_link(href, el.can_have_content());
                }
                // Void elements (<br>, <img>: most elements of most mail)
                // hide or skip nothing and have no end.
                if !el.can_have_content() {
                    return Ok(());
                }
                let skip = skips(&name);
                let hide = el.has_attribute("hidden")
                    || el.get_attribute("style").is_some_and(|st| hides(&st))
                    || (!hidden.is_empty()
                        && el
                            .get_attribute("class")
                            .is_some_and(|c| has_hidden_class(&c, &hidden)));
                let id = s.push_open(&name, hide, skip);
                drop(s);
                let st_end = st_el.clone();
                el.on_end_tag(lol_html::end_tag!(move |_end| {
                    let mut s = st_end.borrow_mut();
                    s.close_element(&name);
                    s.close(id);
                    if name == "a" {
                        s.close_link();
                    }
                    Ok(())
                }))?;
                Ok(())
            }))
            // Document-level, so text outside any element is seen too.
            .append_document_content_handler(doc_text!(move |t| {
                let mut s = st_text.borrow_mut();
                s.text_in_head(t.as_str());
                s.text(t.as_str());
                Ok(())
            })),
        |_: &[u8]| {},
    );
    let ok = rewriter
        .write(html.as_bytes())
        .and_then(|()| rewriter.end())
        .is_ok();
    let s = std::mem::take(&mut *state.borrow_mut());
    (s, ok)
}

/// Whether `name` (any ASCII case) is an inline element, whose tags do
/// not separate words ([`State::open_element`]): a `match`, not a list
/// search, since every tag asks.
fn is_inline(name: &[u8]) -> bool {
    let mut buf = [0u8; 6];
    if name.is_empty() || name.len() > buf.len() {
        return false;
    }
    for (b, c) in buf.iter_mut().zip(name) {
        *b = c.to_ascii_lowercase();
    }
    matches!(
        &buf[..name.len()],
        b"a" | b"abbr"
            | b"b"
            | b"bdi"
            | b"bdo"
            | b"big"
            | b"blink"
            | b"cite"
            | b"code"
            | b"data"
            | b"del"
            | b"dfn"
            | b"em"
            | b"font"
            | b"i"
            | b"ins"
            | b"kbd"
            | b"mark"
            | b"nobr"
            | b"q"
            | b"s"
            | b"samp"
            | b"small"
            | b"span"
            | b"strike"
            | b"strong"
            | b"sub"
            | b"sup"
            | b"time"
            | b"tt"
            | b"u"
            | b"var"
    )
}

/// Formatting elements, which a browser carries past the end of the block
/// they were opened in ([`State::close`]).
fn is_formatting(name: &str) -> bool {
    matches!(
        name,
        "a" | "b"
            | "big"
            | "code"
            | "em"
            | "font"
            | "i"
            | "nobr"
            | "s"
            | "small"
            | "strike"
            | "strong"
            | "tt"
            | "u"
    )
}

/// Start tags that end an open `<p>` ([`State::implied_by_start`]).
fn closes_p(name: &str) -> bool {
    matches!(
        name,
        "address"
            | "article"
            | "aside"
            | "blockquote"
            | "center"
            | "details"
            | "dialog"
            | "dir"
            | "div"
            | "dl"
            | "fieldset"
            | "figcaption"
            | "figure"
            | "footer"
            | "form"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "header"
            | "hgroup"
            | "hr"
            | "li"
            | "dd"
            | "dt"
            | "listing"
            | "main"
            | "menu"
            | "nav"
            | "ol"
            | "p"
            | "pre"
            | "section"
            | "summary"
            | "ul"
            | "xmp"
            | "plaintext"
    )
}

/// Elements that may stay in a `<head>` without ending it.
fn in_head(name: &str) -> bool {
    matches!(
        name,
        "base"
            | "basefont"
            | "bgsound"
            | "link"
            | "meta"
            | "noframes"
            | "script"
            | "style"
            | "template"
            | "title"
    )
}

/// The names the implied-end rules and [`is_formatting`] compare with,
/// sorted for [`interned`]'s binary search.
const NAMED: &[&str] = &[
    "a", "applet", "b", "big", "button", "caption", "code", "datalist", "dd", "dt", "em", "font",
    "h1", "h2", "h3", "h4", "h5", "h6", "head", "html", "i", "li", "marquee", "nobr", "object",
    "ol", "optgroup", "option", "p", "s", "select", "small", "strike", "strong", "table", "tbody",
    "td", "template", "tfoot", "th", "thead", "tr", "tt", "u", "ul",
];

/// `name` as the static string of [`NAMED`], or `""` for an element the
/// rules never name: no allocation per element.
fn interned(name: &str) -> &'static str {
    NAMED.binary_search(&name).map_or("", |i| NAMED[i])
}

fn is_heading(name: &str) -> bool {
    matches!(name, "h1" | "h2" | "h3" | "h4" | "h5" | "h6")
}

/// Elements whose content is not text at all.
fn skips(name: &str) -> bool {
    matches!(name, "script" | "style" | "head" | "template")
}

/// Elements [`plain`] reads that have content: in every context their
/// content is ordinary markup and text (not raw text or RCDATA like
/// `<title>` or `<textarea>`, not SVG or MathML, not a template, nothing
/// that makes lol_html's tree-builder simulation ambiguous).
const PLAIN_CONTAINERS: &[&str] = &[
    "a",
    "b",
    "big",
    "blockquote",
    "body",
    "center",
    "div",
    "em",
    "font",
    "form",
    "map",
    "sup",
    "sub",
    "strike",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "html",
    "i",
    "li",
    "ol",
    "p",
    "s",
    "small",
    "span",
    "strong",
    "table",
    "tbody",
    "td",
    "th",
    "tr",
    "u",
    "ul",
];

/// Void elements [`plain`] reads (no content, no end tag): all of
/// lol_html's but `<keygen>` (which its tree-builder simulation watches).
const PLAIN_VOIDS: &[&str] = &[
    "br", "hr", "img", "wbr", "meta", "link", "base", "area", "input", "col", "embed", "param",
    "source", "track", "basefont", "bgsound",
];

/// The void elements that may stand in a `<head>` without ending it
/// ([`in_head`]), as [`plain_head`] reads them.
const PLAIN_HEAD_VOIDS: &[&str] = &["meta", "link", "base"];

/// `name` as the element list spells it (lowercase), if it is in it.
fn known(list: &'static [&'static str], name: &[u8]) -> Option<&'static str> {
    list.iter()
        .copied()
        .find(|k| k.as_bytes().eq_ignore_ascii_case(name))
}

/// The tag that `<` at `at` opens, as `plain` reads it: whether it is an
/// end tag, its name (ASCII letters and digits, possibly empty), and where
/// the name ends.
fn tag_at(b: &[u8], at: usize) -> (bool, &[u8], usize) {
    let end_tag = b.get(at + 1) == Some(&b'/');
    let start = at + 1 + usize::from(end_tag);
    let len = b[start..]
        .iter()
        .position(|c| !c.is_ascii_alphanumeric())
        .unwrap_or(b.len() - start);
    (end_tag, &b[start..start + len], start + len)
}

/// Whitespace in a tag, as lol_html's lexer reads it (HTML's, with the
/// carriage return its input preprocessing would have made a line feed):
/// mail written on Windows has `\r\n` between attributes.
fn plain_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0c)
}

/// One attribute of a start tag: name and raw value (entities in it).
struct Attr<'h> {
    name: &'h [u8],
    value: &'h str,
}

/// The start tag's attributes at `html[at..]` (just past its name), the
/// position past its `>` and whether it ends `/>` (self-closing), if they
/// are of the plain form [`plain`] reads: names of ASCII letters, digits,
/// `-`, `_`, `:`, `.`; values quoted or unquoted without `"'<\`` and NUL;
/// no spaces around `=`; a `/` only in `/>` (or in an unquoted value,
/// where HTML reads it as part of the value).
fn plain_attrs<'h>(
    html: &'h str,
    mut at: usize,
    attrs: &mut Vec<Attr<'h>>,
) -> Option<(usize, bool)> {
    let b = html.as_bytes();
    let tag_end = |at: usize| {
        if b.get(at) == Some(&b'>') {
            Some((at + 1, false))
        } else if b.get(at..at + 2) == Some(b"/>") {
            Some((at + 2, true))
        } else {
            None
        }
    };
    loop {
        let c = *b.get(at)?;
        if let Some(end) = tag_end(at) {
            return Some(end);
        }
        // An attribute follows space, never the name or a value directly.
        if !plain_space(c) {
            return None;
        }
        while b.get(at).is_some_and(|&c| plain_space(c)) {
            at += 1;
        }
        if let Some(end) = tag_end(at) {
            return Some(end);
        }
        let name_start = at;
        while b
            .get(at)
            .is_some_and(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b':' | b'.'))
        {
            at += 1;
        }
        if at == name_start {
            return None;
        }
        let name = &b[name_start..at];
        let value = if b.get(at) == Some(&b'=') {
            at += 1;
            match *b.get(at)? {
                q @ (b'"' | b'\'') => {
                    let len = find_byte(&b[at + 1..], q)?;
                    let v = &html[at + 1..at + 1 + len];
                    at += len + 2;
                    v
                }
                _ => {
                    let start = at;
                    while b.get(at).is_some_and(|&c| !plain_space(c) && c != b'>') {
                        // `=` is part of an unquoted value, in HTML and in
                        // lol_html (`content=text/html;charset=utf-8`,
                        // `href=http://x.example/?a=1`).
                        if matches!(b[at], b'"' | b'\'' | b'<' | b'`' | 0) {
                            return None;
                        }
                        at += 1;
                    }
                    if at == start {
                        return None;
                    }
                    &html[start..at]
                }
            }
        } else {
            ""
        };
        if value.contains('\0') {
            return None;
        }
        attrs.push(Attr { name, value });
    }
}

/// The first attribute called `name` (ASCII, lowercase), as lol_html's
/// `get_attribute` finds it.
fn attr<'h>(attrs: &[Attr<'h>], name: &str) -> Option<&'h str> {
    attrs
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(name.as_bytes()))
        .map(|a| a.value)
}

/// `html` read without lol_html, when it is plain markup: only the
/// elements of [`PLAIN_CONTAINERS`] and [`PLAIN_VOIDS`] and a head of
/// what may stand in one ([`plain_head`]), tags and attributes of the
/// plain form [`plain_attrs`] reads, comments and declarations
/// ([`declaration_end`]) but no stray `<`, nothing hidden, links not
/// nested, each link's text under
/// [`MAX_LINK_TEXT`]. `None` when it is not: the caller reads it with
/// lol_html, and the property tests `plain_html_reads_as_lol_html_does`
/// and `plain_html_among_other_markup_reads_as_lol_html_does` pin that
/// [`State`] is the same either way. Hostile tag soup (thousands of
/// `<b>` or `<a href>`) is of this form; lol_html's lexer and selector
/// machine were most of its cost (docs/PERFORMANCE.md, session 13).
/// Since session 25 lol_html also runs a boxed end-tag handler for every
/// element with content, which made it the larger part of the
/// tokenizer's added cost; session 26 let the commonest mail through
/// here (a doctype, comments, a head with a title and a style, `<meta
/// />`, end tags inside links): 11,219 of trec06p's 13,260 HTML parts,
/// from 1,325.
fn plain(html: &str) -> Option<State> {
    let b = html.as_bytes();
    let mut s = State::default();
    let mut attrs = Vec::new();
    // Inside an `<a>` (whose end closes the link).
    let mut in_a = false;
    // The open containers, to pair end tags with as lol_html does.
    let mut open: Vec<&'static str> = Vec::new();
    let mut pos = 0;
    loop {
        let at = find_byte(&b[pos..], b'<').map_or(b.len(), |i| pos + i);
        let text = &html[pos..at];
        if let Some((_, link_text)) = &s.link
            && link_text.len() + text.len() >= MAX_LINK_TEXT
        {
            return None;
        }
        s.text(text);
        if at == b.len() {
            return Some(s);
        }
        if matches!(b.get(at + 1), Some(b'!' | b'?')) {
            pos = declaration_end(html, at)?;
            continue;
        }
        let (end_tag, name, after) = tag_at(b, at);
        if !name.first().is_some_and(u8::is_ascii_alphabetic) {
            return None;
        }
        if end_tag {
            let name = known(PLAIN_CONTAINERS, name)?;
            if b.get(after) != Some(&b'>') {
                return None;
            }
            // lol_html ends the innermost open element of the name and every
            // element opened inside it that is still open (its stack pops up
            // to the name), and none for a stray end tag; each ended element's
            // end-tag handler runs, innermost first, and a block's separates
            // words. Read so here, `<div><p>a</div>b` stays on this path
            // (when it left for lol_html, session 25, 192 of trec06p's 1,325
            // plain HTML parts went with it).
            // An `<a>` ended so, by its `</a>` or another's (`</font>` in
            // `<font><a href>x</font>`), ends its link: its handler's
            // `close_link`. A stray `</a>` ends nothing. (Session 26: end
            // tags inside a link, `<a href><font>x</font></a>`, had sent
            // 1,580 of trec06p's HTML parts to lol_html.)
            if let Some(i) = open.iter().rposition(|&o| o == name) {
                for &ended in open[i..].iter().rev() {
                    s.close_element(ended);
                    if ended == "a" {
                        s.close_link();
                        in_a = false;
                    }
                }
                open.truncate(i);
            }
            pos = after + 1;
            continue;
        }
        attrs.clear();
        let self_closing;
        (pos, self_closing) = plain_attrs(html, after, &mut attrs)?;
        if let Some(name) = known(PLAIN_VOIDS, name) {
            s.open_element(name);
            continue;
        }
        // `/>` ends no element of HTML's, but lol_html then gives the
        // element no end-tag handler: left to it.
        if self_closing {
            return None;
        }
        if name.eq_ignore_ascii_case(b"head") && !in_a {
            s.open_element("head");
            pos = plain_head(html, pos, &mut s, &mut attrs)?;
            continue;
        }
        let name = known(PLAIN_CONTAINERS, name)?;
        if attr(&attrs, "hidden").is_some() || attr(&attrs, "style").is_some_and(hides) {
            return None;
        }
        s.open_element(name);
        open.push(name);
        if name == "a" {
            if in_a {
                return None;
            }
            in_a = true;
            if let Some(href) = attr(&attrs, "href") {
                s.open_link(href.to_string(), true);
            }
        }
    }
}

/// The content of a `<head>` from `pos` (just past its start tag) to just
/// past its `</head>`, when it is of the form [`plain`] reads: white
/// space, comments and declarations, the void elements of
/// [`PLAIN_HEAD_VOIDS`], and `<title>` and `<style>` elements closed by
/// their end tags. None of it is text in lol_html's reading (a head's
/// content is skipped, [`skips`]), and each of its tags separates words
/// there as a block's do ([`State::boundary`]): so here. Anything else —
/// text, which in HTML ends the head and begins the body
/// ([`State::text_in_head`]), another element (most end the head,
/// [`in_head`]), an unclosed head — is left to lol_html (`None`). Why:
/// most HTML mail has a head, and it sent nine parts in ten to lol_html
/// (session 26: 5,269 of trec06p's 13,260 HTML parts had a head as the
/// first thing [`plain`] could not read, 5,271 a doctype).
fn plain_head<'h>(
    html: &'h str,
    mut pos: usize,
    s: &mut State,
    attrs: &mut Vec<Attr<'h>>,
) -> Option<usize> {
    let b = html.as_bytes();
    loop {
        let at = pos + find_byte(&b[pos..], b'<')?;
        if !html[pos..at].trim_ascii().is_empty() {
            return None;
        }
        if matches!(b.get(at + 1), Some(b'!' | b'?')) {
            pos = declaration_end(html, at)?;
            continue;
        }
        let (end_tag, name, after) = tag_at(b, at);
        if end_tag {
            // The head's own end (its title and style end below).
            if !name.eq_ignore_ascii_case(b"head") || b.get(after) != Some(&b'>') {
                return None;
            }
            s.close_element("head");
            return Some(after + 1);
        }
        attrs.clear();
        let (end, self_closing) = plain_attrs(html, after, attrs)?;
        if let Some(void) = known(PLAIN_HEAD_VOIDS, name) {
            s.open_element(void);
            pos = end;
            continue;
        }
        let raw = known(&["title", "style"], name)?;
        if self_closing {
            return None;
        }
        s.open_element(raw);
        // Their content is text up to the first end tag of their name
        // (RCDATA, raw text): no markup inside; skipped with the head's.
        let close = raw_text_end(html, end, raw)?;
        let close_end = close + 2 + raw.len();
        if b.get(close_end) != Some(&b'>') {
            return None;
        }
        s.close_element(raw);
        pos = close_end + 1;
    }
}

/// Where the markup declaration at `html[at..]` (`<!` or `<?`) ends, just
/// past its `>`, as HTML's tokenizer reads it: a comment (`<!--`) at the
/// first `-->` or `--!>` after its opening, or at once for `<!-->` and
/// `<!--->`; a doctype, a processing instruction or anything else (a
/// bogus comment, CDATA outside SVG and MathML) at its first `>`. None
/// of them is text or an element: lol_html's reading gets nothing from
/// them. `None` if it runs to the end.
fn declaration_end(html: &str, at: usize) -> Option<usize> {
    let b = html.as_bytes();
    if b[at + 1..].starts_with(b"!--") {
        let body = at + 4;
        if b[body..].starts_with(b">") {
            return Some(body + 1);
        }
        if b[body..].starts_with(b"->") {
            return Some(body + 2);
        }
        let mut from = body;
        loop {
            let dash = from + memchr::memchr(b'-', &b[from..])?;
            if b[dash..].starts_with(b"-->") {
                return Some(dash + 3);
            }
            if b[dash..].starts_with(b"--!>") {
                return Some(dash + 4);
            }
            from = dash + 1;
        }
    }
    memchr::memchr(b'>', &b[at..]).map(|i| at + i + 1)
}

/// Where the end tag of raw text or RCDATA element `name` (`title`,
/// `style`: lowercase) whose content starts at `from` begins: the first
/// `</name` in any case followed by white space, `/` or `>`, as HTML's
/// tokenizer ends such text.
fn raw_text_end(html: &str, mut from: usize, name: &str) -> Option<usize> {
    let b = html.as_bytes();
    loop {
        let lt = from + memchr::memmem::find(&b[from..], b"</")?;
        let name_end = lt + 2 + name.len();
        if b.get(lt + 2..name_end)
            .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
            && b.get(name_end)
                .is_some_and(|&c| matches!(c, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ' | b'/' | b'>'))
        {
            return Some(lt);
        }
        from = lt + 1;
    }
}

fn count_class(n: u32) -> &'static str {
    match n {
        0 => "0",
        1 => "1",
        2..=3 => "2-3",
        4..=9 => "4-9",
        _ => "10+",
    }
}

fn features(s: &State, sink: &mut Sink) {
    sink.push(Tag::Html, &format!("images:{}", count_class(s.images)));
    sink.push(
        Tag::Html,
        &format!("links:{}", count_class(s.hrefs.len() as u32)),
    );
    if s.forms > 0 {
        sink.push(Tag::Html, "form");
    }
    if s.mismatched_links > 0 {
        sink.push(Tag::Html, "link-text-names-another-host");
    }
    if !s.hidden.trim().is_empty() {
        sink.push(Tag::Html, "hidden-text");
    }
    // Mostly pictures, little text: the classic image spam.
    if s.images > 0 && s.visible.split_whitespace().count() < 20 {
        sink.push(Tag::Html, "image-heavy");
    }
    for href in &s.hrefs {
        let href = html_escape::decode_html_entities(href);
        let t = href.trim();
        // The scheme in any case, without a lowercased copy of each href.
        let starts = |p: &str| {
            t.as_bytes()
                .get(..p.len())
                .is_some_and(|b| b.eq_ignore_ascii_case(p.as_bytes()))
        };
        // `http:` with any slashes, or none: a browser follows them all.
        if starts("http:") || starts("https:") || starts("www.") {
            parts::url(&href, sink);
        } else if starts("mailto:") {
            let addr = t["mailto:".len()..].to_ascii_lowercase();
            if let Some((_, domain)) = addr.split('?').next().unwrap_or("").rsplit_once('@') {
                sink.push(Tag::BodyEmailDomain, domain);
            }
        }
        if sink.full() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a [`State`] gives the features and the text.
    fn outcome(s: &State) -> (&str, &str, &[String], u32, u32, u32) {
        (
            &s.visible,
            &s.hidden,
            &s.hrefs,
            s.images,
            s.forms,
            s.mismatched_links,
        )
    }

    /// Pieces of the plain form [`plain`] reads; links are whole (`<a>` to
    /// `</a>`), so any sequence of them is plain.
    const PLAIN: &[&str] = &[
        "<html>",
        "<body>",
        "<b>",
        "</b>",
        "<DIV>",
        "</div>",
        "<p>",
        "</p>",
        "<span class=\"x\" id=y>",
        "</span>",
        "<td style=\"color:red\">",
        "<font color=red face='Arial'>",
        "<form action=\"/go\">",
        "</form>",
        "<br>",
        "<img src=\"http://i.example/t.gif\">",
        "<IMG SRC=x style=\"display:none\">",
        "<a href=\"http://l1.example/p?i=1&amp;j=2\">click 1</a>",
        "<a href='http://b.example/'>www.other.example</a>",
        "<A HREF=c.example>c.example</A>",
        "<a href=\"http://sub.d.example\"><b>d.example <img src=y></a>",
        "<a href=\"mailto:x@m.example?subject=hi\">write</a>",
        "<a href=\"HTTP://E.example\" href=\"http://second.example\">e.example</a>",
        "<a name=top>top</a>",
        "<a href=\"\">nothing.example</a>",
        "<a\thref=\"http://tab.example\"\nclass=x >tab.example</a>",
        "<a href=\"http://q.example/?a=<b>&gt;\">q &amp; r</a>",
        "click ",
        "www.w.example ",
        "word",
        " ",
        "\n",
        "&amp;",
        "&lt;b&gt;",
        "é ",
        "x>y",
        "a.example",
        // Declarations and comments, skipped whole.
        "<!DOCTYPE html PUBLIC \"-//W3C//DTD HTML 4.01//EN\" \"x>y\">",
        "<!doctype html>",
        "<!-- c -->",
        "<!---->",
        "<!-->",
        "<!--->",
        "<!-- a --!>",
        "<!-- <b> -- --->",
        "<!-- <!-- -->",
        "<!x>",
        "<![CDATA[x]]>",
        "<?xml version=\"1.0\"?>",
        "<a href=\"http://c.example\">c<!-- x -->.example</a>",
        // End tags inside links, and links ended by another's end tag.
        "<a href=\"http://f.example\"><font color=red>f.example</font></a>",
        "<div><a href=\"http://in.example\">in</div>out.example</a>",
        "<b><a href=\"http://in.example\">in</b>out.example</a>",
        "<p><a href=\"http://p.example\"><p>p.example</a>",
        "</a>",
        // Unquoted values with `=`, tags with CR and FF.
        "<meta http-equiv=Content-Type content=text/html;charset=iso-8859-1>",
        "<a href=http://q.example/?a=1&b=2>q</a>",
        "<td\r\nclass=x\x0cid=y\r>",
        // Void elements, `/>` or not.
        "<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">",
        "<meta content=a/b />",
        "<LINK rel=stylesheet href=x.css/>",
        "<br/>",
        "<br />",
        "<img src=\"y\"/>",
        "<input type=text>",
        "<map name=m>",
        "<area href=x>",
        "</map>",
        "<sup>",
        "</sup>",
        // A head of what may stand in one.
        "<head></head>",
        "<HEAD>\n<title>T &amp; <b>x</b></titles> y</title>\n<META name=x content=y/>\n<!-- c --><style type=\"text/css\"><!-- p {color:red} --></STYLE>\n</head>",
    ];

    /// Pieces [`plain`] leaves to lol_html, or that change how it reads.
    const OTHER: &[&str] = &[
        "<script>",
        "</script>",
        "<style>",
        "<title>",
        "<textarea>",
        "<svg>",
        "<math>",
        "<select>",
        "<head>",
        "<template>",
        "<plaintext>",
        "<!-- c -->",
        "<!doctype html>",
        "<?x>",
        "< ",
        "a<3",
        "<a href=\"http://open.example\">",
        "<a>",
        "</a>",
        "</b >",
        "</br>",
        "<br/>",
        "<p style=\"display: none\">",
        "<span hidden>",
        "<div STYLE='font-size:0'>",
        "<a href = x>",
        "<p\x0cclass=x>",
        "<p\rclass=x>",
        "<img src=x\r>",
        "<a href=\"x\ry\">",
        "<a href=\"x\0y\">",
        "\0",
        "\r\n",
        "<custom-el>",
        // An end tag inside a link that closes it before its `</a>`.
        "<div><a href=\"http://in.example\">in</div>out.example</a>",
        "<b><a href=\"http://in.example\">in</b>out.example</a>",
        "<a href=\"unterminated",
        "<b",
        "<x-y>",
        "<table>",
        "<tr>",
        "<td>",
        "<li>",
        "</head>",
        "</title>",
        "</style>",
        "<head>x</head>",
        "<head><img></head>",
        "<head><p></head>",
        "<head><title>t</title ></head>",
        "<head><title>a</titlex>b</title></head>",
        "<head><style>p{}</style/></head>",
        "<div/>",
        "<a href=x/>",
        "<a href=\"x\"/>",
        "<!--",
        "<!-- x --",
        "<!",
        "<?",
        "<![CDATA[",
        "<noscript>",
        "<iframe>",
        "<xmp>",
        "<keygen>",
        "<frameset>",
        "<o:p>",
    ];

    /// `host_of` before session 13.
    fn host_of_reference(s: &str) -> Option<String> {
        let s = s.trim();
        let rest = s.split_once("://").map_or(s, |(_, r)| r);
        let host = rest
            .split(['/', '?', '#', ':'])
            .next()?
            .rsplit('@')
            .next()?
            .trim_end_matches('.');
        (host.contains('.') && !host.contains(char::is_whitespace) && host.len() <= 253)
            .then(|| host.to_ascii_lowercase())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn host_of_is_as_before(s in "[ \t]?(https?|[a-z]{0,3})?(:|://|:/)?[a-zA-Z0-9.@:/?# \t\u{a0}é_-]{0,30}[ .]?") {
            prop_assert_eq!(host_of(&s), host_of_reference(&s));
        }
    }

    #[test]
    fn host_of_reads_hosts_of_links_and_text() {
        for (s, host) in [
            (
                " HTTP://User@Www.Example.COM.:8080/p?q#f ",
                Some("www.example.com"),
            ),
            ("www.example.com", Some("www.example.com")),
            ("mailto:a@b.example", None),
            ("a:b://c.example/", Some("c.example")),
            ("click here", None),
            ("http://localhost/", None),
            ("http://a b.example/", None),
        ] {
            assert_eq!(host_of(s).as_deref(), host, "{s:?}");
            assert_eq!(host_of_reference(s).as_deref(), host, "{s:?}");
        }
    }

    proptest! {
        #[test]
        fn find_byte_finds_what_memchr_finds(b in prop::collection::vec(0u8..24, 0..80), byte in 0u8..24) {
            prop_assert_eq!(find_byte(&b, byte), memchr::memchr(byte, &b));
        }
    }

    /// Every HTML part of the corpora (`target/corpus/*/index`) read both
    /// ways: what [`plain`] reads must equal lol_html's reading, and the
    /// counts say how much real mail takes the plain path. Slow: run with
    /// `cargo test --lib plain_html_of_the_corpora -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn plain_html_of_the_corpora_reads_as_lol_html_does() {
        use mail_parser::{MessageParser, PartType};
        for corpus in ["spamassassin", "enron1", "enron2", "enron3", "trec06p"] {
            let dir = std::path::Path::new("target/corpus").join(corpus);
            let Ok(index) = std::fs::read_to_string(dir.join("index")) else {
                eprintln!("{corpus}: no corpus");
                continue;
            };
            let (mut parts, mut read_plain) = (0, 0);
            for line in index.lines() {
                let Some((_, path)) = line.split_once(' ') else {
                    continue;
                };
                let raw = std::fs::read(dir.join(path)).unwrap();
                let Some(msg) = MessageParser::default().parse(&raw) else {
                    continue;
                };
                for p in &msg.parts {
                    let PartType::Html(html) = &p.body else {
                        continue;
                    };
                    let mut tags = MAX_HTML_TAGS;
                    let cut = tag_cut(html, &mut tags).unwrap_or(html.len());
                    let html = &html[..cut];
                    parts += 1;
                    if let Some(fast) = plain(html) {
                        read_plain += 1;
                        let (slow, ok) = rewrite(html, Vec::new());
                        assert!(ok, "{corpus} {path}");
                        assert_eq!(outcome(&fast), outcome(&slow), "{corpus} {path}");
                    }
                }
            }
            eprintln!("{corpus}: {read_plain} of {parts} HTML parts read plain");
        }
    }

    #[test]
    fn the_named_elements_are_sorted_for_their_binary_search() {
        assert!(NAMED.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(interned("td"), "td");
        assert_eq!(interned("span"), "");
    }

    fn long_text() -> String {
        "long.example ".repeat(90)
    }

    fn check_same(html: &str) -> Result<bool, TestCaseError> {
        let (slow, ok) = rewrite(html, Vec::new());
        match plain(html) {
            Some(fast) => {
                prop_assert!(ok, "lol_html gave up on plain HTML {:?}", html);
                prop_assert_eq!(outcome(&fast), outcome(&slow), "{:?}", html);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        /// Plain markup is read without lol_html and gives the same state.
        #[test]
        fn plain_html_reads_as_lol_html_does(
            picks in prop::collection::vec(0usize..PLAIN.len(), 0..40),
            open_link_at_end in any::<bool>(),
            long in 0usize..6,
        ) {
            let mut html: String = picks.iter().map(|&i| PLAIN[i]).collect();
            if long == 0 {
                html.insert_str(0, &format!("<a href=\"http://t.example\">{}</a>", long_text()));
            }
            if open_link_at_end {
                // Where the tag budget cuts: the link is never closed.
                html.push_str("<a href=\"http://cut.example/\">cut.example");
            }
            let read = check_same(&html)?;
            prop_assert!(read || long == 0, "plain HTML left to lol_html: {:?}", html);
        }

        /// Whatever [`plain`] accepts, among pieces it should not, it reads
        /// as lol_html does.
        #[test]
        fn plain_html_among_other_markup_reads_as_lol_html_does(
            picks in prop::collection::vec((0u8..6, 0usize..64), 0..30),
        ) {
            // One piece in six from OTHER: some sequences are still plain.
            let html: String = picks
                .iter()
                .map(|&(k, i)| if k == 0 { OTHER[i % OTHER.len()] } else { PLAIN[i % PLAIN.len()] })
                .collect();
            check_same(&html)?;
        }
    }

    #[test]
    fn a_link_whose_text_would_pass_the_kept_length_is_left_to_lol_html() {
        let html = format!("<a href=\"http://t.example\">{}</a>", long_text());
        assert!(plain(&html).is_none());
        let html = format!("<a href=\"http://t.example\">{}</a>", "w ".repeat(400));
        assert!(plain(&html).is_some());
    }
}
