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
    /// Open elements whose content is not shown (display:none…).
    hidden_depth: u32,
    /// Open elements whose content is not text at all (script, style, head).
    skip_depth: u32,
    visible: String,
    hidden: String,
    /// The open `<a href>`: its target host and its text so far.
    link: Option<(String, String)>,
    hrefs: Vec<String>,
    images: u32,
    forms: u32,
    mismatched_links: u32,
}

/// Whether an inline style or attribute hides the element's content.
fn hides(style: &str) -> bool {
    let s: String = style
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    s.contains("display:none")
        || s.contains("visibility:hidden")
        || s.contains("opacity:0;")
        || s.ends_with("opacity:0")
        || [
            "font-size:0",
            "font-size:1px",
            "font-size:0px",
            "font-size:1pt",
        ]
        .iter()
        .any(|p| s.split(';').any(|decl| decl == *p))
}

/// The host a URL or bare domain names, lowercased; `None` if it names none.
fn host_of(s: &str) -> Option<String> {
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
        let Some(i) = html[pos..].find('<') else {
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
            html[at..].find('>').map(|e| at + e + 1)
        };
        let Some(end) = end else { return };
        pos = end;
        if next.is_ascii_alphabetic() {
            out.push(' ');
            let name_end = b[at + 1..end]
                .iter()
                .position(|c| !c.is_ascii_alphanumeric())
                .map_or(end, |n| at + 1 + n);
            let name = &b[at + 1..name_end];
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
/// `tags_left` tag openings are read with lol_html (the message's budget,
/// [`MAX_HTML_TAGS`], taken from); the rest of the part by [`strip`].
pub(super) fn scan(html: &str, tags_left: &mut usize, sink: &mut Sink) -> Scan {
    let cut = tag_cut(html, tags_left);
    let (html, rest) = html.split_at(cut.unwrap_or(html.len()));
    let state = Rc::new(RefCell::new(State::default()));
    let (st_el, st_text) = (state.clone(), state.clone());
    let mut rewriter = HtmlRewriter::new(
        Settings::new()
            .append_element_content_handler(element!("*", move |el| {
                // Already lowercased (ASCII) by lol_html.
                let name = el.tag_name();
                let mut s = st_el.borrow_mut();
                // Block boundaries separate words: "<p>a</p><p>b</p>" is "a b".
                s.visible.push(' ');
                s.hidden.push(' ');
                match name.as_str() {
                    "img" => s.images += 1,
                    "form" => s.forms += 1,
                    "a" => {
                        if let Some(href) = el.get_attribute("href") {
                            let host = host_of(&href).unwrap_or_default();
                            if s.hrefs.len() < 1000 {
                                s.hrefs.push(href);
                            }
                            if el.can_have_content() {
                                s.link = Some((host, String::new()));
                            }
                        }
                    }
                    _ => {}
                }
                // Void elements (<br>, <img>: most elements of most mail)
                // hide or skip nothing: no need to read their attributes.
                if !el.can_have_content() {
                    return Ok(());
                }
                let skip = matches!(name.as_str(), "script" | "style" | "head" | "template");
                let hide = el.has_attribute("hidden")
                    || el.get_attribute("style").is_some_and(|st| hides(&st));
                if !(skip || hide || name == "a") {
                    return Ok(());
                }
                if skip {
                    s.skip_depth += 1;
                }
                if hide {
                    s.hidden_depth += 1;
                }
                drop(s);
                let st_end = st_el.clone();
                el.on_end_tag(lol_html::end_tag!(move |_end| {
                    let mut s = st_end.borrow_mut();
                    if skip {
                        s.skip_depth = s.skip_depth.saturating_sub(1);
                    }
                    if hide {
                        s.hidden_depth = s.hidden_depth.saturating_sub(1);
                    }
                    if name == "a"
                        && let Some((target, text)) = s.link.take()
                    {
                        let shown = html_escape::decode_html_entities(&text);
                        if let Some(shown_host) = host_of(&shown)
                            && !target.is_empty()
                            && shown_host != target
                            && !target.ends_with(&format!(".{shown_host}"))
                        {
                            s.mismatched_links += 1;
                        }
                    }
                    Ok(())
                }))?;
                Ok(())
            }))
            // Document-level, so text outside any element is seen too.
            .append_document_content_handler(doc_text!(move |t| {
                let mut s = st_text.borrow_mut();
                if s.skip_depth > 0 {
                    return Ok(());
                }
                let chunk = t.as_str();
                if let Some((_, link_text)) = &mut s.link
                    && link_text.len() < 1024
                {
                    link_text.push_str(chunk);
                }
                if s.hidden_depth > 0 {
                    s.hidden.push_str(chunk);
                } else {
                    s.visible.push_str(chunk);
                }
                Ok(())
            })),
        |_: &[u8]| {},
    );
    let ok = rewriter
        .write(html.as_bytes())
        .and_then(|()| rewriter.end());
    if ok.is_err() {
        sink.push(Tag::Html, "unparsable");
    }
    let mut s = std::mem::take(&mut *state.borrow_mut());
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
        let lower = href.trim().to_ascii_lowercase();
        if lower.starts_with("http://")
            || lower.starts_with("https://")
            || lower.starts_with("www.")
        {
            parts::url(&href, sink);
        } else if let Some(addr) = lower.strip_prefix("mailto:")
            && let Some((_, domain)) = addr.split('?').next().unwrap_or("").rsplit_once('@')
        {
            sink.push(Tag::BodyEmailDomain, domain);
        }
        if sink.full() {
            return;
        }
    }
}
