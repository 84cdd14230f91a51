//! One test per feature, on messages written for the tests.

use super::*;

fn has(tokens: &Tokens, tag: Tag, text: &str) -> bool {
    tokens.ids.binary_search(&TokenId::of(tag, text)).is_ok()
}

fn tok(msg: &[u8]) -> Tokens {
    Tokenizer::default().tokenize(msg)
}

fn features(msg: &[u8]) -> Vec<String> {
    Tokenizer::default().explain(msg).0
}

/// The default tokenizer without the scan cap, for tests of the caps that
/// apply to a parsed message.
fn unscanned() -> Tokenizer {
    Tokenizer::new(Limits {
        max_scan_bytes: usize::MAX,
        ..Limits::default()
    })
}

fn scanning(max_scan_bytes: usize) -> Tokenizer {
    Tokenizer::new(Limits {
        max_scan_bytes,
        ..Limits::default()
    })
}

const SIMPLE: &[u8] = b"From: \"Cheap Meds\" <Deals@Pharma.example>\r\n\
Reply-To: orders@elsewhere.example\r\n\
Subject: FREE pills today\r\n\
Message-ID: <abc123@bulk.example>\r\n\
X-Mailer: MassMailer 5.0\r\n\
Received: from mx (host [192.0.2.77]) by us\r\n\
Received: from relay ([IPv6:2001:db8:1:2::9]) by mx\r\n\
List-Unsubscribe: <https://bulk.example/u>\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Buy now at https://Shop.Pharma.example/x?y=1 cheap cheap, mail sales@pharma-orders.example\r\n";

#[test]
fn sender_headers_become_tagged_tokens() {
    let t = tok(SIMPLE);
    assert!(has(&t, Tag::Subject, "free"));
    assert!(has(&t, Tag::FromAddr, "deals@pharma.example"));
    assert!(has(&t, Tag::FromDomain, "pharma.example"));
    assert!(has(&t, Tag::FromName, "cheap"));
    assert!(has(&t, Tag::ReplyToAddr, "orders@elsewhere.example"));
    assert!(has(&t, Tag::ReplyToDomain, "elsewhere.example"));
    assert!(has(&t, Tag::MessageIdDomain, "bulk.example"));
    assert!(has(&t, Tag::Mailer, "massmailer"));
    assert!(has(&t, Tag::HeaderName, "list-unsubscribe"));
    assert!(has(&t, Tag::ContentType, "text/plain"));
    assert!(has(&t, Tag::Charset, "utf-8"));
}

#[test]
fn received_hops_give_addresses_and_networks() {
    let t = tok(SIMPLE);
    assert!(has(&t, Tag::ReceivedIp, "192.0.2.77"));
    assert!(has(&t, Tag::ReceivedNet, "192.0.2.0/24"));
    assert!(has(&t, Tag::ReceivedIp, "2001:db8:1:2::9"));
    assert!(has(&t, Tag::ReceivedNet, "2001:db8:1:2::/64"));
}

#[test]
fn body_words_urls_and_email_domains() {
    let t = tok(SIMPLE);
    assert!(has(&t, Tag::Body, "buy"));
    assert!(has(&t, Tag::Body, "cheap"));
    assert!(has(&t, Tag::UrlHost, "shop.pharma.example"));
    assert!(has(&t, Tag::BodyEmailDomain, "pharma-orders.example"));
    // URL fragments are not words.
    assert!(!has(&t, Tag::Body, "shop.pharma.example"));
    // The same word in the subject and the body are different evidence.
    assert!(!has(&t, Tag::Body, "pills"));
}

#[test]
fn registered_domain_is_public_suffix_aware() {
    let t =
        tok(b"Subject: x\r\n\r\nsee http://a.b.shop.example.co.uk/z and www.news.example.com\r\n");
    assert!(has(&t, Tag::UrlHost, "a.b.shop.example.co.uk"));
    assert!(has(&t, Tag::UrlDomain, "example.co.uk"));
    assert!(has(&t, Tag::UrlDomain, "example.com"));
}

#[test]
fn url_tricks_are_features() {
    let t = tok(b"Subject: x\r\n\r\nlog in at http://bank.example@203.0.113.9/login now\r\n");
    assert!(has(&t, Tag::UrlShape, "userinfo"));
    assert!(has(&t, Tag::UrlShape, "ip-literal"));
    assert!(has(&t, Tag::UrlHost, "203.0.113.9"));
}

#[test]
fn word_pairs_keep_their_distance() {
    let tk = Tokenizer::new(Limits {
        pair_window: 5,
        ..Limits::default()
    });
    let f = tk.explain(b"Subject: x\r\n\r\nclick right here now\r\n").0;
    for pair in [
        "pair.body:click right",
        "pair.body:click _ here",
        "pair.body:right here",
        "pair.body:click _ _ now",
    ] {
        assert!(f.iter().any(|x| x == pair), "{pair} missing from {f:?}");
    }
    let no_pairs = Tokenizer::new(Limits {
        pair_window: 1,
        ..Limits::default()
    })
    .explain(b"Subject: x\r\n\r\nclick here\r\n")
    .0;
    assert!(
        !no_pairs.iter().any(|x| x.starts_with("pair.")),
        "{no_pairs:?}"
    );
}

#[test]
fn pair_window_bounds_the_distance() {
    let tk = Tokenizer::new(Limits {
        pair_window: 2,
        ..Limits::default()
    });
    let f = tk.explain(b"Subject: x\r\n\r\nclick right here\r\n").0;
    assert!(f.iter().any(|x| x == "pair.body:click right"));
    assert!(!f.iter().any(|x| x == "pair.body:click _ here"), "{f:?}");
}

#[test]
fn authentication_results_become_tokens() {
    let msg = b"From: a@bank.example\r\n\
Received-SPF: fail (mx: domain of bank.example does not designate 203.0.113.5) client-ip=203.0.113.5;\r\n\
X-HE-DKIM-Result: pass header.d=bank.example\r\n\
Authentication-Results: mx.example.org; dmarc=fail header.from=bank.example\r\n\
Subject: x\r\n\r\nhello\r\n";
    let t = tok(msg);
    assert!(has(&t, Tag::Auth, "spf:fail"));
    assert!(has(&t, Tag::Auth, "dkim:pass"));
    assert!(has(&t, Tag::Auth, "dkim-aligned:pass"));
    assert!(has(&t, Tag::Auth, "dmarc:fail"));
    assert!(has(&t, Tag::ReceivedIp, "203.0.113.5"));
    assert!(has(
        &tok(b"Subject: x\r\n\r\nhi\r\n"),
        Tag::Auth,
        "none-recorded"
    ));
}

#[test]
fn base64_and_quoted_printable_are_decoded() {
    let b64 = b"Subject: x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nV2luIGEgbG90dGVyeSBwcml6ZQ==\r\n";
    assert!(has(&tok(b64), Tag::Body, "lottery"));
    let qp = b"Subject: x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nV=69agra for cheap=\r\nr prices\r\n";
    assert!(has(&tok(qp), Tag::Body, "viagra"));
    assert!(has(&tok(qp), Tag::Body, "cheapr"));
}

#[test]
fn encoded_words_and_declared_charsets_are_decoded() {
    let msg = b"Subject: =?iso-8859-1?Q?Gr=FC=DFe_und_Rabatt?=\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nGro\xdfer Rabatt f\xfcr Sie\r\n";
    let t = tok(msg);
    assert!(has(&t, Tag::Subject, "grüße"), "{:?}", features(msg));
    assert!(has(&t, Tag::Body, "großer"));
    assert!(has(&t, Tag::Body, "für"));
    let sjis =
        b"Subject: x\r\nContent-Type: text/plain; charset=shift_jis\r\n\r\n\x96\xb3\x97\xbf\r\n"; // 無料
    assert!(has(&tok(sjis), Tag::Body, "無料"), "{:?}", features(sjis));
}

#[test]
fn mislabelled_charsets_still_read() {
    // Declared Latin-1 but holding Windows-1252 quotes and euro sign, as
    // many mailers send: WHATWG decoding treats them alike.
    let msg = b"Subject: x\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\n\x93Special\x94 offer \x80100\r\n";
    let t = tok(msg);
    assert!(has(&t, Tag::Body, "special"), "{:?}", features(msg));
    // UTF-8 bytes under a us-ascii label are not thrown away.
    let msg =
        b"Subject: x\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nprice caf\xc3\xa9\r\n";
    let f = features(msg);
    assert!(f.iter().any(|x| x == "body:price"), "{f:?}");
}

#[test]
fn html_visible_and_hidden_text_are_apart() {
    let msg = b"Subject: x\r\nContent-Type: text/html\r\n\r\n<html><body><p>Claim your <b>prize</b></p>\
<div style=\"display: none\">grandmother recipe weather</div><span style='font-size:0'>zzhidden</span>\
<script>var evil=1;</script>done &amp; dusted</body></html>";
    let t = tok(msg);
    assert!(has(&t, Tag::Body, "prize"));
    assert!(has(&t, Tag::Body, "dusted"));
    assert!(has(&t, Tag::HiddenWord, "grandmother"));
    assert!(has(&t, Tag::HiddenWord, "zzhidden"));
    assert!(!has(&t, Tag::Body, "grandmother"));
    assert!(!has(&t, Tag::Body, "evil"), "script text is not text");
    assert!(has(&t, Tag::Html, "hidden-text"));
}

/// An HTML body with `html`, as a message.
fn html_message(html: &str) -> Vec<u8> {
    format!("Subject: x\r\nContent-Type: text/html\r\n\r\n{html}").into_bytes()
}

#[test]
fn a_hidden_element_ends_where_html_ends_it_not_only_at_its_end_tag() {
    // A red-team walkthrough (session 25) hid a whole spam behind
    // `<p style="display:none">x<p>`: the second `<p>` ends the first in
    // HTML, so a reader sees everything after it.
    for html in [
        "<p style=\"display:none\">zzpad<p>zzshown",
        "<div><p style=\"display:none\">zzpad</div>zzshown",
        "<ul><li style=\"display:none\">zzpad<li>zzshown</ul>",
        "<table><tr><td style=\"display:none\">zzpad<td>zzshown</table>",
        "<table><tr><td style=\"display:none\">zzpad<tr><td>zzshown</table>",
        "<p style=\"display:none\">zzpad<div>zzshown</div>",
        "<dl><dt style=\"display:none\">zzpad<dd>zzshown</dl>",
        "<head><title>t</title><body>zzshown",
        "<head><meta charset=utf-8>zzshown",
    ] {
        let t = tok(&html_message(html));
        assert!(
            has(&t, Tag::Body, "zzshown"),
            "{html}: {:?}",
            features(&html_message(html))
        );
        assert!(!has(&t, Tag::HiddenWord, "zzshown"), "{html}");
        if html.contains("zzpad") {
            assert!(has(&t, Tag::HiddenWord, "zzpad"), "{html}");
        }
    }
    // What a browser does hide stays hidden: a `<span/>` is not closed by
    // its slash, and a hidden formatting element is carried past a start
    // tag that ends the block it was opened in. (Past the block's end
    // tag, lol_html ends it: `<div><b style="display:none">x</div>y` reads
    // `y` as visible where a browser carries the `<b>` on and hides it.)
    for html in [
        "<span style=\"display:none\"/>zzstill",
        "<font style=\"font-size:0\">zzpad<p>zzstill",
        "<p style=\"display:none\">zzpad <b>zzstill</b>",
    ] {
        let t = tok(&html_message(html));
        assert!(has(&t, Tag::HiddenWord, "zzstill"), "{html}");
        assert!(!has(&t, Tag::Body, "zzstill"), "{html}");
    }
}

/// A class a `<style>` element hides hides what carries it, as the
/// mail client renders it: the padding of a red-team walkthrough moved
/// from inline styles to a style sheet is hidden text, not ham words.
#[test]
fn a_class_the_style_sheet_hides_hides_its_elements() {
    let body = |sheet: &str, class: &str| {
        format!(
            "<html><head><style>{sheet}</style></head><body><p>zzshown</p>\
             <span class=\"{class}\">zzpad</span><div>zzafter</div></body></html>"
        )
    };
    for (sheet, class) in [
        (".p{display:none}", "p"),
        ("span.pad { font-size: 0px; }", "pad"),
        ("<!-- .x {visibility:hidden} -->", "a x b"),
        ("p{color:red} .Pad{opacity:0}", "pad"),
        (".a, .b {display: none !important}", "b"),
        ("/* c */ .z{display:n\\6f ne}", "z"),
        (".w{color:#fff;background:#ffffff}", "w"),
    ] {
        let html = body(sheet, class);
        let t = tok(&html_message(&html));
        assert!(
            has(&t, Tag::HiddenWord, "zzpad"),
            "{sheet}: {:?}",
            features(&html_message(&html))
        );
        assert!(!has(&t, Tag::Body, "zzpad"), "{sheet}");
        assert!(
            has(&t, Tag::Body, "zzshown") && has(&t, Tag::Body, "zzafter"),
            "{sheet}"
        );
    }
    // Shown: no rule hides the class, a later rule shows it again, the
    // rule is for some screens only, or the selector is not one class.
    for (sheet, class) in [
        (".p{color:red}", "p"),
        (".p{display:none} .p{display:block}", "p"),
        ("@media (max-width:600px){.p{display:none}}", "p"),
        (".q{display:none}", "p"),
        ("div .p{display:none}", "p"),
        ("#p{display:none}", "p"),
    ] {
        let html = body(sheet, class);
        let t = tok(&html_message(&html));
        assert!(
            has(&t, Tag::Body, "zzpad"),
            "{sheet}: {:?}",
            features(&html_message(&html))
        );
        assert!(!has(&t, Tag::HiddenWord, "zzpad"), "{sheet}");
    }
    // A style element inside a comment is not applied (a client shows the
    // text): words it would hide stay body words. One after a comment is.
    let commented = "<html><body><!-- <style>.p{display:none}</style> -->\
                     <p class=p>zzpad</p></body></html>";
    let t = tok(&html_message(commented));
    assert!(has(&t, Tag::Body, "zzpad") && !has(&t, Tag::HiddenWord, "zzpad"));
    let after = "<html><head><!-- c --><style>.p{display:none}</style></head>\
                 <body><p class=p>zzpad</p></body></html>";
    assert!(has(&tok(&html_message(after)), Tag::HiddenWord, "zzpad"));
    // Nor one inside an element HTML reads as text; one after it is.
    for (open, close) in [
        ("<script>var s='", "';</script>"),
        ("<TITLE>", "</title>"),
        ("<textarea name=t>", "</textarea>"),
        ("<xmp>", "</xmp>"),
    ] {
        let inside = format!(
            "<html><head>{open}<style>.p{{display:none}}</style>{close}</head>\
             <body><p class=p>zzpad</p></body></html>"
        );
        let t = tok(&html_message(&inside));
        assert!(
            has(&t, Tag::Body, "zzpad") && !has(&t, Tag::HiddenWord, "zzpad"),
            "{open}: {:?}",
            features(&html_message(&inside))
        );
        let after = format!(
            "<html><head>{open}x{close}<style>.p{{display:none}}</style></head>\
             <body><p class=p>zzpad</p></body></html>"
        );
        assert!(
            has(&tok(&html_message(&after)), Tag::HiddenWord, "zzpad"),
            "{open}"
        );
    }
}

#[test]
fn hidden_text_styles_are_read_as_css_reads_them() {
    // Each spelling padded spam with the user's ham words in a red-team
    // walkthrough (session 25), and was read as visible text.
    for style in [
        "font-size:0pt",
        "font-size:0em",
        "font-size:0%",
        "font-size:0.0px",
        "font-size:0.1px",
        "font-size:2px",
        "FONT-SIZE: 1PT",
        "font-size:0 !important",
        "font-size:1px!important",
        "opacity:0.0",
        "opacity:.0",
        "opacity:0%",
        "opacity:0 !important",
        "display&#58;none",
        "display:/**/none",
        "display:n\\6f ne",
        "di\\splay:none",
        "visibility:collapse",
        "color:#ffffff;background:#fff",
        "color:white;background-color:#FFFFFF",
        "color:transparent",
        "max-height:0;overflow:hidden",
        "width:0;height:0;overflow:hidden",
        "position:absolute;left:-9999px",
        "text-indent:-9999px",
        "transform:scale(0)",
        "clip:rect(0 0 0 0);position:absolute",
        "display:block;display:none",
    ] {
        let html = format!("<p>visible</p><div style=\"{style}\">zzpad</div>");
        let t = tok(&html_message(&html));
        assert!(has(&t, Tag::HiddenWord, "zzpad"), "{style}");
        assert!(!has(&t, Tag::Body, "zzpad"), "{style}");
    }
    // Text a reader sees stays visible: white text on a dark cell, ordinary
    // sizes, a display reset after none.
    for style in [
        "font-size:12px",
        "font-size:0.9em",
        "font-size:80%",
        "color:#fff",
        "color:#ffffff;background:#003366",
        "opacity:1",
        "opacity:0.9",
        "display:none;display:block",
        "height:0",
        "left:-10px",
        "font-family:'0 !important'",
    ] {
        let html = format!("<p>visible</p><div style=\"{style}\">zzshown</div>");
        let t = tok(&html_message(&html));
        assert!(has(&t, Tag::Body, "zzshown"), "{style}");
    }
}

#[test]
fn characters_a_reader_never_sees_do_not_change_a_word() {
    // Soft hyphen, zero-width space, non-joiner, joiner, word joiner, BOM,
    // left-to-right mark, combining grapheme joiner: each put inside every
    // word of a spam by a red-team walkthrough (session 25).
    for c in [
        '\u{ad}', '\u{200b}', '\u{200c}', '\u{200d}', '\u{2060}', '\u{feff}', '\u{200e}', '\u{34f}',
    ] {
        let msg = format!("Subject: mor{c}tgage\r\n\r\nre{c}finance to{c}day\r\n");
        let t = tok(msg.as_bytes());
        assert!(
            has(&t, Tag::Subject, "mortgage"),
            "U+{:04X}: {:?}",
            c as u32,
            features(msg.as_bytes())
        );
        assert!(has(&t, Tag::Body, "refinance"), "U+{:04X}", c as u32);
        assert!(has(&t, Tag::Body, "today"), "U+{:04X}", c as u32);
    }
    // Other text on the line is read as before.
    let t = tok("Subject: x\r\n\r\nca\u{ad}fé naïve\r\n".as_bytes());
    assert!(has(&t, Tag::Body, "café") && has(&t, Tag::Body, "naïve"));
}

#[test]
fn look_alike_letters_from_another_script_do_not_change_a_word() {
    // Cyrillic а and о, Greek ο, in the subject, the display name, plain
    // text and HTML (quoted-printable), and a word all in Cyrillic
    // look-alikes on an English line: each reads as the Latin word.
    let msg = "From: \"P\u{430}yPal Support\" <x@example.net>\r\n\
               Subject: Ch\u{435}ap vi\u{430}gra\r\n\
               Content-Type: multipart/alternative; boundary=b\r\n\r\n\
               --b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
               Your acc\u{43e}unt needs l\u{3bf}gin: \u{440}\u{430}\u{443} now\r\n\
               --b\r\nContent-Type: text/html; charset=utf-8\r\n\
               Content-Transfer-Encoding: quoted-printable\r\n\r\n\
               <p>r=D0=B5finance</p>\r\n--b--\r\n";
    let t = tok(msg.as_bytes());
    let f = features(msg.as_bytes());
    assert!(has(&t, Tag::Subject, "cheap"), "{f:?}");
    assert!(has(&t, Tag::Subject, "viagra"), "{f:?}");
    assert!(has(&t, Tag::Body, "account"), "{f:?}");
    assert!(has(&t, Tag::Body, "login"), "{f:?}");
    assert!(has(&t, Tag::Body, "pay"), "{f:?}");
    assert!(has(&t, Tag::Body, "refinance"), "{f:?}");
    assert!(f.iter().any(|x| x.contains("paypal")), "{f:?}");
    // The same words in Latin letters give the same ids.
    let plain = msg
        .replace('\u{430}', "a")
        .replace('\u{435}', "e")
        .replace(['\u{43e}', '\u{3bf}'], "o")
        .replace('\u{440}', "p")
        .replace('\u{443}', "y")
        .replace("=D0=B5", "e");
    assert_eq!(t.ids, tok(plain.as_bytes()).ids);
    // Russian text stays Russian.
    let ru = "Subject: \u{441}\u{43e}\u{440}\r\n\r\n\u{43f}\u{440}\u{438}\u{432}\u{435}\u{442}\r\n";
    let t = tok(ru.as_bytes());
    assert!(has(&t, Tag::Subject, "\u{441}\u{43e}\u{440}") && !has(&t, Tag::Subject, "cop"));
    assert!(has(
        &t,
        Tag::Body,
        "\u{43f}\u{440}\u{438}\u{432}\u{435}\u{442}"
    ));
}

#[test]
fn combining_marks_on_letters_do_not_change_a_word() {
    // A stroke on each letter in the subject, an accent written as a mark
    // of its own in the text, a quoted-printable overlay (U+0336 is
    // =CC=B6) in HTML: each reads as the bare word.
    let struck: String = "Viagra".chars().flat_map(|c| [c, '\u{336}']).collect();
    let msg = format!(
        "From: \"Pha\u{301}rmacy\" <x@example.net>\r\n\
         Subject: Cheap {struck}\r\n\
         Content-Type: multipart/alternative; boundary=b\r\n\r\n\
         --b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Order ci\u{301}alis today\r\n\
         --b\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\r\n\
         <p>r=CC=B6e=CC=B6finance</p>\r\n--b--\r\n"
    );
    let t = tok(msg.as_bytes());
    let f = features(msg.as_bytes());
    assert!(has(&t, Tag::Subject, "viagra"), "{f:?}");
    assert!(has(&t, Tag::Body, "cialis"), "{f:?}");
    assert!(has(&t, Tag::Body, "refinance"), "{f:?}");
    let plain = msg
        .replace(['\u{336}', '\u{301}'], "")
        .replace("=CC=B6", "");
    assert_eq!(t.ids, tok(plain.as_bytes()).ids);
}

#[test]
fn a_host_that_mixes_scripts_is_marked_and_not_read_as_the_host_it_imitates() {
    // Cyrillic а in the host, in Unicode and as punycode, in text and in
    // an HTML link.
    for link in [
        "http://p\u{430}ypal.com/login",
        "https://www.xn--pypal-4ve.com/x",
        "<a href=\"http://secure.p\u{430}ypal.com/\">log in</a>",
    ] {
        let html = link.starts_with('<');
        let msg = format!(
            "Subject: x\r\nContent-Type: text/{}; charset=utf-8\r\n\r\n{link}\r\n",
            if html { "html" } else { "plain" }
        );
        let t = tok(msg.as_bytes());
        let f = features(msg.as_bytes());
        assert!(has(&t, Tag::UrlShape, "mixed-script-host"), "{link}: {f:?}");
        assert!(!has(&t, Tag::UrlHost, "paypal.com"), "{link}: {f:?}");
        assert!(!has(&t, Tag::UrlDomain, "paypal.com"), "{link}: {f:?}");
    }
    // A host in one script, whatever script, is not marked; nor is a
    // Cyrillic label beside a Latin one.
    for link in [
        "http://paypal.com/",
        "http://\u{43f}\u{440}\u{438}\u{43c}\u{435}\u{440}.\u{440}\u{444}/",
        "http://xn--e1afmkfd.xn--p1ai/",
        "http://\u{43f}\u{440}\u{438}\u{43c}\u{435}\u{440}.example.com/",
    ] {
        let msg = format!("Subject: x\r\n\r\n{link}\r\n");
        assert!(
            !has(&tok(msg.as_bytes()), Tag::UrlShape, "mixed-script-host"),
            "{link}: {:?}",
            features(msg.as_bytes())
        );
    }
    // The same for the From and Reply-To domains.
    for (header, marked) in [
        ("From: PayPal <service@p\u{430}ypal.com>", true),
        ("Reply-To: x@xn--pypal-4ve.com", true),
        ("From: service@paypal.com", false),
        (
            "From: x@\u{43f}\u{440}\u{438}\u{43c}\u{435}\u{440}.\u{440}\u{444}",
            false,
        ),
    ] {
        let msg = format!("{header}\r\nSubject: x\r\n\r\nhello\r\n");
        let t = tok(msg.as_bytes());
        assert_eq!(
            has(&t, Tag::AddrShape, "mixed-script-domain"),
            marked,
            "{header}: {:?}",
            features(msg.as_bytes())
        );
        assert!(
            !has(&t, Tag::FromDomain, "paypal.com") || !marked,
            "{header}"
        );
    }
}

#[test]
fn inline_tags_inside_a_word_do_not_split_it() {
    // `mort<b></b>gage` reads "mortgage"; splitting at every tag let a
    // red-team walkthrough (session 25) break each word of a spam in two.
    for html in [
        "zzmort<b></b>gage",
        "<span>zzmort</span><span>gage</span>",
        "zzmort<font color=red>gage</font>",
        "<p>zzmort<i>gage</i></p>",
    ] {
        let t = tok(&html_message(html));
        assert!(
            has(&t, Tag::Body, "zzmortgage"),
            "{html}: {:?}",
            features(&html_message(html))
        );
    }
    // Blocks and line breaks still separate words, at their start and end.
    for html in [
        "zzone<br>zztwo",
        "<div>zzone</div>zztwo",
        "zzone<p>zztwo",
        "zzone<td>zztwo",
    ] {
        let t = tok(&html_message(html));
        assert!(
            has(&t, Tag::Body, "zzone") && has(&t, Tag::Body, "zztwo"),
            "{html}"
        );
    }
}

#[test]
fn a_link_to_an_ip_address_in_any_form_a_browser_reads_is_an_ip_literal() {
    // A red-team walkthrough (session 25): each of these goes to
    // 192.168.1.1 in a browser, and none was read as an IP address.
    for href in [
        "http://3232235777/x",
        "http://0xC0A80101/x",
        "http://0300.0250.1.1/x",
        "http://192.168.257/x",
        "http://192.168.1.1/x",
    ] {
        let msg = html_message(&format!("<a href=\"{href}\">click</a>"));
        let t = tok(&msg);
        assert!(
            has(&t, Tag::UrlShape, "ip-literal"),
            "{href}: {:?}",
            features(&msg)
        );
        assert!(
            has(&t, Tag::UrlHost, "192.168.1.1"),
            "{href}: {:?}",
            features(&msg)
        );
    }
    // A backslash is a slash to a browser: this link goes to evil.example.
    for href in [
        "http://evil.example\\@paypal.example/",
        "http:/\\evil.example/",
    ] {
        let msg = html_message(&format!("<a href=\"{href}\">click</a>"));
        let t = tok(&msg);
        assert!(
            has(&t, Tag::UrlHost, "evil.example"),
            "{href}: {:?}",
            features(&msg)
        );
        assert!(!has(&t, Tag::UrlHost, "paypal.example"), "{href}");
    }
    // Hosts that only look numeric are hosts.
    let msg =
        html_message("<a href=\"http://cafe.be/\">x</a><a href=\"http://deadbeef.example/\">y</a>");
    let t = tok(&msg);
    assert!(has(&t, Tag::UrlHost, "cafe.be") && !has(&t, Tag::UrlShape, "ip-literal"));
}

#[test]
fn a_link_in_plain_text_to_a_number_a_browser_reads_as_an_ip_is_an_ip_literal() {
    // linkify takes none of these hosts for a host; a mail client makes
    // each a link to 192.168.1.1.
    for link in [
        "http://3232235777/x",
        "HTTPS://3232235777",
        "http://192.168.257/claim?id=1",
        "http://0300.0250.1.1/x",
        "http://paypal.com@3232235777/login",
        "http://3232235777:8080/x",
    ] {
        let msg = format!(
            "Subject: x\r\nContent-Type: text/plain\r\n\r\nVerify at {link}. Thanks zzafter\r\n"
        );
        let t = tok(msg.as_bytes());
        let f = features(msg.as_bytes());
        assert!(has(&t, Tag::UrlShape, "ip-literal"), "{link}: {f:?}");
        assert!(has(&t, Tag::UrlHost, "192.168.1.1"), "{link}: {f:?}");
        assert!(has(&t, Tag::Body, "verify"), "{link}: {f:?}");
        assert!(has(&t, Tag::Body, "zzafter"), "{link}: {f:?}");
        assert!(!has(&t, Tag::Body, "http"), "{link}: {f:?}");
    }
    // A number alone, another scheme, a host that is a name, a host
    // longer than any host, and 40,000 `1http://` with no space between
    // (each looked at no further than a host can be long): no IP.
    let long_host = format!("http://{}/x", "1".repeat(300));
    let hostile = "1http://".repeat(40_000);
    for text in [
        "call 3232235777 now",
        "ftp://3232235777/x",
        "http://cafe.be/ and http:// alone",
        &long_host,
        &hostile,
    ] {
        let msg = format!("Subject: x\r\nContent-Type: text/plain\r\n\r\n{text}\r\n");
        let t = tok(msg.as_bytes());
        assert!(
            !has(&t, Tag::UrlShape, "ip-literal"),
            "{text}: {:?}",
            features(msg.as_bytes())
        );
    }
}

#[test]
fn html_links_images_and_forms() {
    let msg = b"Subject: x\r\nContent-Type: text/html\r\n\r\n<p>Dear customer</p>\
<a href=\"http://evil.example/claim\">https://www.mybank.example/login</a>\
<a href=\"https://news.example.org/a\">news.example.org</a><img src=cid:1><form action=x><input></form>";
    let t = tok(msg);
    assert!(has(&t, Tag::UrlHost, "evil.example"));
    assert!(has(&t, Tag::Html, "link-text-names-another-host"));
    assert!(has(&t, Tag::Html, "images:1"));
    assert!(has(&t, Tag::Html, "links:2-3"));
    assert!(has(&t, Tag::Html, "form"));
    assert!(has(&t, Tag::Html, "image-heavy"));
    let honest = b"Subject: x\r\nContent-Type: text/html\r\n\r\n<a href=\"https://news.example.org/a\">news.example.org</a>";
    assert!(!has(
        &tok(honest),
        Tag::Html,
        "link-text-names-another-host"
    ));
}

#[test]
fn html_hrefs_are_read_whatever_the_case_of_their_scheme() {
    let msg =
        b"Subject: x\r\nContent-Type: text/html\r\n\r\n<a href=\" HTTPS://Upper.Example/x\">a</a>\
<a href=\"WWW.Bare.Example\">b</a><a href=\"MailTo:Someone@Mail.Example?subject=Hi\">c</a>\
<a href=\"ftp://ftp.example/\">d</a><a href=\"mailto:nobody\">e</a>";
    let t = tok(msg);
    assert!(has(&t, Tag::UrlHost, "upper.example"));
    assert!(has(&t, Tag::UrlHost, "www.bare.example"));
    assert!(has(&t, Tag::BodyEmailDomain, "mail.example"));
    assert!(!has(&t, Tag::UrlHost, "ftp.example"));
    assert!(has(&t, Tag::Html, "links:4-9"));
}

#[test]
fn attachments_are_described_never_read() {
    let msg = b"Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"invoice.PDF.exe\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAgAAAAA4fug4AtAnNIbgBTM0hVGhpcyBwcm9ncmFt\r\n--b--\r\n";
    let t = tok(msg);
    assert!(has(&t, Tag::Attachment, "ext:exe"));
    assert!(has(&t, Tag::Attachment, "size:<1k"));
    assert!(has(&t, Tag::ContentType, "application/octet-stream"));
    assert!(has(&t, Tag::ContentType, "multipart/mixed"));
    assert!(
        !has(&t, Tag::Body, "program"),
        "attachment bytes are never words"
    );
}

#[test]
fn nested_messages_are_read() {
    let msg = b"Subject: fwd\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: message/rfc822\r\n\r\n\
Subject: inner secret\r\nContent-Type: text/plain\r\n\r\nnested lottery words\r\n--o--\r\n";
    let t = tok(msg);
    assert!(has(&t, Tag::Body, "lottery"), "{:?}", features(msg));
    assert!(has(&t, Tag::Body, "secret"));
}

#[test]
fn long_words_and_numbers_become_shapes() {
    let msg = format!(
        "Subject: x\r\n\r\nhello {} order 4839201 total 1,299.00\r\n",
        "a".repeat(120)
    );
    let t = tok(msg.as_bytes());
    assert!(has(&t, Tag::LongWord, "body:a:120"));
    assert!(has(&t, Tag::Number, "9999999"));
    assert!(has(&t, Tag::Number, "9,999.99"));
    assert!(!has(&t, Tag::Body, "4839201"));
}

#[test]
fn spaceless_scripts_are_segmented_not_dropped() {
    let t = tok(
        "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n今すぐ無料でお試し\r\n"
            .as_bytes(),
    );
    assert!(has(&t, Tag::Body, "無料"));
    let thai = tok(
        "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nส่วนลดพิเศษ\r\n".as_bytes(),
    );
    assert!(thai.ids.len() > 3);
}

#[test]
fn ids_are_sorted_distinct_and_deterministic() {
    let t = tok(SIMPLE);
    assert!(t.ids.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(t, tok(SIMPLE));
}

#[test]
fn token_ids_are_stable_across_releases() {
    // Token ids are persisted: this pins the hash. If it changes, bump
    // TOKENIZER_VERSION and update the constant.
    assert_ne!(
        TokenId::of(Tag::Body, "free"),
        TokenId::of(Tag::Subject, "free")
    );
    assert_eq!(
        format!("{:?}", TokenId::of(Tag::Body, "viagra")),
        "TokenId(066d554742b92e53)"
    );
}

#[test]
fn explain_lists_readable_features() {
    let f = features(SIMPLE);
    assert!(f.iter().any(|x| x == "subject:free"), "{f:?}");
    assert!(
        f.iter().any(|x| x == "url.host:shop.pharma.example"),
        "{f:?}"
    );
}

#[test]
fn body_after_headers_without_a_blank_line_is_still_body() {
    let msg = b"Subject: calpine daily gas nomination\r\n- calpine daily nomination 1 . doc\r\nplease see attached volumes\r\n";
    let t = tok(msg);
    assert!(has(&t, Tag::Subject, "calpine"));
    assert!(has(&t, Tag::Body, "volumes"), "{:?}", features(msg));
    assert!(has(&t, Tag::Mime, "missing-header-body-separator"));
    // Folded header lines are continuations, not body.
    let folded = b"Subject: a long\r\n subject line\r\nFrom: a@b.example\r\n\r\nbody\r\n";
    let t = tok(folded);
    assert!(has(&t, Tag::Subject, "subject"));
    assert!(!has(&t, Tag::Mime, "missing-header-body-separator"));
}

// --- hostile input: every cap holds and is reported ---

#[test]
fn garbage_bytes_still_tokenize() {
    let garbage: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let t = tok(&garbage);
    assert!(t.ids.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn an_empty_or_blank_message_is_said_to_be_empty_not_unparsable() {
    for raw in [&b""[..], b"\r\n\r\n", b" \t\n"] {
        let t = tok(raw);
        assert!(t.ids.is_empty(), "{raw:?}");
        assert_eq!(t.limits_hit, vec![LimitHit::Empty], "{raw:?}");
    }
}

#[test]
fn token_cap_is_reported() {
    let mut body = String::from("Subject: many\r\n\r\n");
    for i in 0..5000 {
        body.push_str(&format!("word{i} "));
    }
    let t = Tokenizer::new(Limits {
        max_tokens: 100,
        ..Limits::default()
    })
    .tokenize(body.as_bytes());
    assert!(t.ids.len() <= 100);
    assert!(t.limits_hit.contains(&LimitHit::Tokens));
}

#[test]
fn ten_mib_message_is_capped_by_the_body_budget() {
    let mut msg = b"Subject: big\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    while msg.len() < 10 * 1024 * 1024 {
        msg.extend_from_slice(b"lorem ipsum dolor sit amet consectetur\r\n");
    }
    // The scan cap would stop the parse long before the body budget.
    let t = unscanned().tokenize(&msg);
    assert!(
        t.limits_hit.contains(&LimitHit::BodyBytes),
        "{:?}",
        t.limits_hit
    );
    assert!(has(&t, Tag::Body, "lorem"));
}

#[test]
fn thousand_deep_mime_nesting_stops_at_the_depth_cap() {
    let mut msg = String::from("Subject: deep\r\n");
    for i in 0..1000 {
        msg.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    msg.push_str("Content-Type: text/plain\r\n\r\ninnermost words\r\n");
    let t = tok(msg.as_bytes());
    assert!(
        t.limits_hit.contains(&LimitHit::MimeDepth) || t.limits_hit.contains(&LimitHit::Parts),
        "{:?}",
        t.limits_hit
    );
}

#[test]
fn deeply_nested_attached_messages_do_not_overflow_the_stack() {
    // Found by fuzzing: dropping mail-parser's tree recursed once per
    // nested message/rfc822 and overflowed a 2 MiB stack (tokio's blocking
    // threads) at ~32,000 levels, aborting the process. 60,000 levels here,
    // on a thread with exactly that stack.
    let msg = b"Content-Type: message/rfc822\n\n".repeat(60_000);
    let t = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || unscanned().tokenize(&msg))
        .unwrap()
        .join()
        .expect("tokenizing must not overflow the stack");
    assert!(
        t.limits_hit.contains(&LimitHit::MimeDepth),
        "{:?}",
        t.limits_hit
    );
}

#[test]
fn many_parts_stop_at_the_parts_cap() {
    let mut msg =
        String::from("Subject: wide\r\nContent-Type: multipart/mixed; boundary=w\r\n\r\n");
    for i in 0..500 {
        msg.push_str(&format!(
            "--w\r\nContent-Type: text/plain\r\n\r\npart{i}\r\n"
        ));
    }
    msg.push_str("--w--\r\n");
    let t = tok(msg.as_bytes());
    assert!(
        t.limits_hit.contains(&LimitHit::Parts),
        "{:?}",
        t.limits_hit
    );
}

#[test]
fn five_mb_single_line_header_is_skipped_and_reported() {
    let mut msg = b"Subject: hello there\r\nX-Junk: ".to_vec();
    msg.extend(std::iter::repeat_n(b'A', 5 * 1024 * 1024));
    msg.extend_from_slice(b"\r\nFrom: a@b.example\r\n\r\nbody words\r\n");
    // Without the scan cap, which would cut the header block (below).
    let t = unscanned().tokenize(&msg);
    assert!(
        t.limits_hit.contains(&LimitHit::HeaderBytes),
        "{:?}",
        t.limits_hit
    );
    assert!(
        has(&t, Tag::Subject, "hello"),
        "the other headers are still read"
    );
    assert!(has(&t, Tag::Body, "words"));
}

#[test]
fn invalid_utf8_everywhere_is_read_lossily() {
    let msg = b"Subject: \xff\xfe bad \xc3\x28 subject\r\nFrom: \xff@\xfe\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>\xe2\x28\xa1 ok words \xf0\x90\x28\xbc</p>\r\n";
    let t = tok(msg);
    assert!(has(&t, Tag::Body, "words"), "{:?}", features(msg));
}

// --- the scan cap: the parser is given a bounded prefix ---

/// A multipart message: a text part, a long HTML part and a long base64
/// attachment, each `fill` bytes of content, closed properly.
fn three_parts(fill: usize) -> Vec<u8> {
    let mut m = b"From: a@b.example\r\nSubject: quarterly report\r\n\
Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
--outer\r\nContent-Type: text/plain\r\n\r\nplease find attached numbers\r\n\
--outer\r\nContent-Type: text/html\r\n\r\n<html><body><p>visible pitch</p>\r\n"
        .to_vec();
    while m.len() < fill {
        m.extend_from_slice(b"<div><span>filler prose goes here</span></div>\r\n");
    }
    m.extend_from_slice(
        b"</body></html>\r\n--outer\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\n\
Content-Disposition: attachment; filename=\"r.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    let start = m.len();
    while m.len() - start < fill {
        m.extend_from_slice(
            b"JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSL0ZpbHRlci9GbGF0ZURl\r\n",
        );
    }
    m.extend_from_slice(b"--outer--\r\n");
    m
}

#[test]
fn mail_within_the_scan_cap_is_parsed_as_it_is() {
    // 40 KiB of HTML filler: ~3,300 tags, within the HTML tag budget.
    let msg = three_parts(40 * 1024);
    assert!(msg.len() < Limits::default().max_scan_bytes);
    let t = tok(&msg);
    assert_eq!(t, unscanned().tokenize(&msg));
    assert!(t.limits_hit.is_empty(), "{:?}", t.limits_hit);
    assert!(!has(&t, Tag::Mime, "scan-cut"));
}

#[test]
fn long_body_is_read_from_its_prefix_and_the_cut_reported() {
    let mut msg = b"Subject: long\r\nContent-Type: text/plain\r\n\r\nearlyword\r\n".to_vec();
    while msg.len() < 1024 * 1024 {
        msg.extend_from_slice(b"lorem ipsum dolor sit amet consectetur\r\n");
    }
    msg.extend_from_slice(b"lateword\r\n");
    let t = tok(&msg);
    assert!(
        t.limits_hit.contains(&LimitHit::ScanBytes),
        "{:?}",
        t.limits_hit
    );
    assert!(has(&t, Tag::Mime, "scan-cut"));
    assert!(has(&t, Tag::Subject, "long"));
    assert!(has(&t, Tag::Body, "earlyword"));
    assert!(!has(&t, Tag::Body, "lateword"), "past the cap: not read");
}

#[test]
fn a_cut_inside_an_attachment_still_describes_it_and_reads_no_base64() {
    let msg = three_parts(100 * 1024);
    // Cut in the middle of the base64 attachment.
    let t = scanning(msg.len() - 50 * 1024).explain(&msg);
    assert!(t.1.contains(&LimitHit::ScanBytes), "{:?}", t.1);
    let f = t.0;
    for want in ["body:attached", "body:pitch", "attachment:ext:pdf"] {
        assert!(f.iter().any(|x| x == want), "{want} missing: {f:?}");
    }
    assert!(
        !f.iter()
            .any(|x| x.starts_with("long:") || x == "mime:encoding-problem"),
        "the cut part must not be read as text: {f:?}"
    );
}

#[test]
fn a_cut_inside_an_html_part_still_reads_it_as_html() {
    let msg = three_parts(100 * 1024);
    // Cut in the middle of the HTML part.
    let t = scanning(60 * 1024).explain(&msg);
    assert!(t.1.contains(&LimitHit::ScanBytes), "{:?}", t.1);
    let f = t.0;
    assert!(f.iter().any(|x| x == "body:pitch"), "{f:?}");
    assert!(f.iter().any(|x| x == "body:filler"), "{f:?}");
    assert!(
        !f.iter().any(|x| x == "body:div" || x == "body:span"),
        "tags are not words"
    );
    assert!(!f.iter().any(|x| x == "attachment:ext:pdf"), "past the cut");
}

#[test]
fn headers_longer_than_their_cap_are_cut_and_the_body_still_read() {
    let mut msg = b"Subject: hello there\r\n".to_vec();
    for i in 0..15_000 {
        msg.extend_from_slice(format!("X-Junk-{i}: some value\r\n").as_bytes());
    }
    msg.extend_from_slice(b"From: late@b.example\r\n\r\nbody words\r\n");
    // Longer than the header cap, shorter than it plus the scan cap (the
    // furthest the end of the headers is looked for).
    let limits = Limits::default();
    assert!(
        (limits.max_header_bytes..limits.max_header_bytes + limits.max_scan_bytes)
            .contains(&msg.len())
    );
    let t = tok(&msg);
    assert!(
        t.limits_hit.contains(&LimitHit::ScanBytes),
        "{:?}",
        t.limits_hit
    );
    assert!(has(&t, Tag::Subject, "hello"));
    assert!(has(&t, Tag::HeaderName, "x-junk-0"));
    assert!(
        !has(&t, Tag::HeaderName, "x-junk-14999"),
        "past the header cap"
    );
    assert!(
        has(&t, Tag::FromAddr, "late@b.example"),
        "the From is carried past the cap (`scan::CARRIED_FIELDS`)"
    );
    assert!(has(&t, Tag::Body, "words"), "{:?}", t.limits_hit);
}

#[test]
fn a_huge_body_line_after_headers_without_a_blank_line_is_still_body() {
    let mut msg = b"Subject: no separator\r\n".to_vec();
    while msg.len() < 2 * 1024 * 1024 {
        msg.extend_from_slice(b"spamword ");
    }
    let t = tok(&msg);
    assert!(
        t.limits_hit.contains(&LimitHit::ScanBytes),
        "{:?}",
        t.limits_hit
    );
    assert!(
        !t.limits_hit.contains(&LimitHit::HeaderBytes),
        "{:?}",
        t.limits_hit
    );
    assert!(has(&t, Tag::Subject, "separator"));
    assert!(has(&t, Tag::Body, "spamword"), "{:?}", t.limits_hit);
}

#[test]
fn a_cut_through_ten_thousand_nested_multiparts_closes_a_bounded_few() {
    // Found timing the nasty corpus: closing every open boundary of a
    // 10,000-deep nest was quadratic (0.05–0.2 s for a 700 KB message).
    let mut msg = String::from("Subject: deep\r\n");
    for i in 0..10_000 {
        msg.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    let cut = scan::cut(msg.as_bytes(), &Limits::default()).expect("over the cap");
    let closed = cut.bytes.windows(4).filter(|w| w == b"--\r\n").count();
    assert!((1..=64).contains(&closed), "{closed}");
}

#[test]
fn a_cut_anywhere_never_panics() {
    // Cut at every byte of a message with base64, quoted-printable,
    // multi-byte UTF-8 and nested parts: mid-quad, mid-sequence, mid-part,
    // mid-boundary, mid-header.
    let msg = "From: a@b.example\r\nSubject: =?utf-8?B?w6lsw6hWZQ==?=\r\n\
Content-Type: multipart/mixed; boundary=\"o\"\r\n\r\n--o\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n\
w6lsw6h2ZSDDqXTDqSDwn5iAIGZpbg==\r\n--o\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
caf=C3=A9 na=C3=AFve soft=\r\nbreak\r\n--o\r\n\
Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n\
--i\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>日本語のテキスト ünïcödé</p>\r\n--i--\r\n--o--\r\n";
    let msg = msg.as_bytes();
    let body = msg.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    for n in 1..=msg.len() - body {
        let t = scanning(n).tokenize(msg);
        assert!(t.ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            t.limits_hit.contains(&LimitHit::ScanBytes),
            n < msg.len() - body
        );
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let t = Tokenizer::default().tokenize(&bytes);
            prop_assert!(t.ids.windows(2).all(|w| w[0] < w[1]));
        }

        #[test]
        fn arbitrary_mime_shaped_input_never_panics(
            subject in "\\PC{0,40}",
            ctype in prop_oneof!["text/plain", "text/html", "multipart/mixed; boundary=x", "message/rfc822", "application/pdf"],
            cte in prop_oneof!["7bit", "base64", "quoted-printable", "8bit"],
            body in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let mut msg = format!("Subject: {subject}\r\nContent-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n").into_bytes();
            msg.extend(body);
            let _ = Tokenizer::default().tokenize(&msg);
        }
    }
}

#[test]
fn a_panic_inside_the_mime_parser_costs_only_the_mime_reading() {
    // Found by the fuzzer: trips a debug assertion in mail-parser 0.11.9
    // ("Invalid part ID"). Debug builds catch the panic; release builds
    // never panic. Either way the message is read and scored.
    let msg = include_bytes!("../../fuzz/regressions/mail_parser_invalid_part_id.bin");
    let t = tok(msg);
    assert!(!t.ids.is_empty());
    assert!(t.ids.windows(2).all(|w| w[0] < w[1]));
    if cfg!(debug_assertions) {
        assert!(has(&t, Tag::Mime, "parser-failure"), "{:?}", features(msg));
    }
}

#[test]
fn names_cover_exactly_the_ids_a_message_produces() {
    let raw = b"From: Ann <ann@shop.example>\r\nSubject: cheap garden chairs\r\n\r\n\
        Cheap garden chairs and tables, see https://shop.example/sale now.\r\n\
        Cheap garden chairs again, repeated words repeat ids.\r\n";
    let (tokens, names) = Tokenizer::default().tokenize_named(raw);
    let names: Vec<String> = names.of(&tokens.ids).into_iter().flatten().collect();
    assert_eq!(names.len(), tokens.ids.len(), "one name per distinct id");
    assert!(names.iter().any(|n| n == "subject:cheap"), "{names:?}");
    assert!(
        names.iter().any(|n| n == "pair.body:garden chairs"),
        "{names:?}"
    );
}

#[test]
fn names_kept_while_reading_match_the_explained_features() {
    let html = b"From: a@b.example\r\nSubject: Hello there friend\r\n\
Content-Type: text/html\r\n\r\n<p>Click <b>right</b> here now, caf\xc3\xa9 1234567890 \
aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa</p>\
<a href=\"http://198.51.100.7/x\">http://shop.example</a>\r\n";
    for msg in [SIMPLE, &html[..]] {
        let tk = Tokenizer::default();
        let (tokens, names) = tk.tokenize_named(msg);
        assert_eq!(tokens, tk.tokenize(msg));
        // Every feature, every occurrence, with its id: the reference.
        let mut sink = sink::Sink::new(tk.limits(), sink::Keep::AllNames);
        extract(msg, &mut sink, |_| ());
        let reference = sink.names;
        let all = reference.all();
        let named = names.of(&tokens.ids);
        for (id, name) in tokens.ids.iter().zip(&named) {
            let first = reference.of(&[*id]).remove(0);
            assert!(first.is_some(), "{id:?} has no reference name");
            assert_eq!(name, &first, "{id:?}");
        }
        // Pairs and shapes are named too, as `chaff tokens` spells them.
        assert!(named.iter().flatten().any(|n| n.starts_with("pair.")));
        assert!(named.iter().flatten().all(|n| all.contains(n)));
    }
    let (_, names) = Tokenizer::default().tokenize_named(SIMPLE);
    assert_eq!(
        names.of(&[TokenId::of(Tag::Subject, "free"), TokenId(7)]),
        [Some("subject:free".to_string()), None]
    );
}

#[test]
fn skipped_header_fields_end_where_mail_parser_default_ends_them() {
    // `message_parser()` skips the fields chaff reads only as raw text; the
    // raw text must end where mail-parser's default structured parsers end
    // it, or token ids change. Date is the field where they differ (kept
    // structured): its parser reads "AM" as a zone and swallows the next
    // line (a SpamAssassin corpus message, LF line ends, loses its From
    // header so).
    let msg = b"Received: from a (b [192.0.2.1]) by c;\n  Mon, 3 Nov 2026 10:00:00 +0000\n\
Date: 27 Jun 01 3:36:25 AM\n\
From: x@y.example\n\
To: \"unterminated <a@b.example>,\n\
Cc: (comment a@b.example\n\
References: <a@b> <c\n\
Keywords: a, \"b\n\
List-Unsubscribe: <mailto:u@l.example>\n\
Content-Type: text/plain\n\nbody\n";
    let default = mail_parser::MessageParser::default()
        .parse(&msg[..])
        .unwrap();
    let ours = message_parser().parse(&msg[..]).unwrap();
    let raw = |m: &mail_parser::Message<'_>| -> Vec<(String, String)> {
        m.headers_raw()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(raw(&ours), raw(&default));
    assert!(
        raw(&ours).iter().all(|(n, _)| n != "From"),
        "Date swallowed From"
    );
    assert_eq!(ours.subject(), default.subject());
    assert_eq!(ours.from(), default.from());
}

#[test]
fn sort_by_token_id_sorts_like_sort_unstable() {
    let mut r = 0x1234_5678_9abc_def0_u64;
    let mut next = || {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        r
    };
    for n in [0, 1, 63, 64, 65, 1000, 5000, 70_000, 600_000] {
        let random: Vec<TokenId> = (0..n).map(|_| TokenId(next())).collect();
        // Crafted: every id in one bucket; small ids; repeats.
        let piled: Vec<TokenId> = (0..n).map(|_| TokenId(next() >> 20)).collect();
        let repeats: Vec<TokenId> = (0..n).map(|_| TokenId((next() % 50) << 58)).collect();
        for ids in [random, piled, repeats] {
            let mut want = ids.clone();
            want.sort_unstable();
            assert_eq!(sort_by_token_id(ids, |id| *id), want);
        }
    }
    // Items carry their payload along (a snapshot's counts).
    let pairs: Vec<(TokenId, u64)> = (0..5000).map(|i| (TokenId(next()), i)).collect();
    let mut want = pairs.clone();
    want.sort_unstable_by_key(|p| p.0);
    assert_eq!(sort_by_token_id(pairs, |p| p.0), want);
}

const LIST_MAIL: &[u8] =
    b"Received: from imo-d07.mx.aol.com (imo-d07.mx.aol.com [205.188.157.39])\r\n\
\tby aleve.media.mit.edu (8.9.3/8.9.3/+ALEVE) with ESMTP id DAA14789\r\n\
\tfor <handyboard@media.mit.edu>; Sun, 14 May 2000 03:48:11 -0400 (EDT)\r\n\
From: member@aol.com\r\n\
Date: Sun, 14 May 2000 03:47:34 EDT\r\n\
Subject: Fwd: a scam\r\n\
List-Id: <handyboard.media.mit.edu>\r\n\
Precedence: Bulk\r\n\
Content-Type: text/plain\r\n\
\r\n\
Dear friend, a contractual transfer.\r\n";

fn tok_extras(msg: &[u8]) -> Tokens {
    Tokenizer::new(Limits {
        header_extras: true,
        ..Limits::default()
    })
    .tokenize(msg)
}

#[test]
fn header_extras_are_off_by_default_so_version_2_ids_stay() {
    let t = tok(LIST_MAIL);
    assert!(!has(&t, Tag::ReceivedHost, "aleve.media.mit.edu"));
    assert!(!has(&t, Tag::Date, "zone:EDT"));
    assert!(!has(&t, Tag::ListHeader, "precedence=bulk"));
    let extras = tok_extras(LIST_MAIL);
    assert!(t.ids.iter().all(|id| extras.ids.binary_search(id).is_ok()));
    assert!(extras.ids.len() > t.ids.len());
}

#[test]
fn received_chain_gives_relay_hosts_and_their_domains_not_versions_or_ids() {
    let t = tok_extras(LIST_MAIL);
    assert!(has(&t, Tag::ReceivedHost, "imo-d07.mx.aol.com"));
    assert!(has(&t, Tag::ReceivedHost, "aleve.media.mit.edu"));
    assert!(has(&t, Tag::ReceivedDomain, "aol.com"));
    assert!(has(&t, Tag::ReceivedDomain, "mit.edu"));
    assert!(!has(&t, Tag::ReceivedHost, "8.9.3"));
    assert!(!has(&t, Tag::ReceivedHost, "205.188.157.39"));
    assert!(has(&t, Tag::ReceivedIp, "205.188.157.39"));
}

#[test]
fn date_shape_and_zone_and_list_headers_are_evidence() {
    let t = tok_extras(LIST_MAIL);
    assert!(has(&t, Tag::Date, "Sun, 99 May 9999 99:99:99 EDT"));
    assert!(has(&t, Tag::Date, "zone:EDT"));
    assert!(has(
        &t,
        Tag::ListHeader,
        "list-id=<handyboard.media.mit.edu>"
    ));
    assert!(has(&t, Tag::ListHeader, "precedence=bulk"));
}

#[test]
fn header_tokens_are_told_apart_from_the_body_and_subject() {
    let t = tok_extras(LIST_MAIL);
    let in_header = |tag, text| t.header.binary_search(&TokenId::of(tag, text)).is_ok();
    assert!(in_header(Tag::ReceivedHost, "aleve.media.mit.edu"));
    assert!(in_header(Tag::FromDomain, "aol.com"));
    assert!(in_header(Tag::HeaderName, "list-id"));
    assert!(in_header(Tag::ContentType, "text/plain"));
    assert!(has(&t, Tag::Body, "contractual") && !in_header(Tag::Body, "contractual"));
    assert!(has(&t, Tag::Subject, "scam") && !in_header(Tag::Subject, "scam"));
    // A subset of the ids, sorted and distinct.
    assert!(t.header.windows(2).all(|w| w[0] < w[1]));
    assert!(t.header.iter().all(|id| t.ids.binary_search(id).is_ok()));
}

// --- the HTML tag budget: tag soup past it is read as plain text ---

/// An HTML message: `early`, then `tags` tag openings, then `tail`.
fn tag_soup(tags: usize, tail: &str) -> Vec<u8> {
    let mut m = b"Subject: soup\r\nContent-Type: text/html\r\n\r\n<p>early words</p>".to_vec();
    for _ in 0..tags / 2 {
        m.extend_from_slice(b"<b>x</b>");
    }
    m.extend_from_slice(tail.as_bytes());
    m
}

const SOUP_TAIL: &str = "<p>lateword <script>var scripted=1;</script><!-- commented <b> -->\
<style>p { color: stylish }</style>fish &amp; ampword</p>\
<a href=\"http://late.example/\">click</a>";

#[test]
fn html_past_the_tag_budget_is_read_as_text_without_markup() {
    let msg = tag_soup(html::MAX_HTML_TAGS, SOUP_TAIL);
    let t = tok(&msg);
    assert!(
        t.limits_hit.contains(&LimitHit::HtmlTags),
        "{:?}",
        t.limits_hit
    );
    for word in ["early", "lateword", "fish", "ampword", "click"] {
        assert!(has(&t, Tag::Body, word), "{word} missing");
    }
    for markup in [
        "scripted",
        "commented",
        "stylish",
        "script",
        "style",
        "amp",
        "p",
    ] {
        assert!(!has(&t, Tag::Body, markup), "{markup} read as a word");
    }
    assert!(
        !has(&t, Tag::UrlHost, "late.example"),
        "links past the budget are not followed"
    );
}

#[test]
fn html_within_the_tag_budget_is_read_whole() {
    // The tail itself has 11 tag openings.
    let msg = tag_soup(html::MAX_HTML_TAGS - 20, SOUP_TAIL);
    let t = tok(&msg);
    assert!(t.limits_hit.is_empty(), "{:?}", t.limits_hit);
    assert!(has(&t, Tag::UrlHost, "late.example"));
    assert!(has(&t, Tag::Body, "lateword"));
    assert!(!has(&t, Tag::Body, "scripted"));
}

#[test]
fn the_tag_budget_is_shared_by_the_html_parts_of_a_message() {
    let mut msg = b"Subject: two\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n".to_vec();
    for _ in 0..2 {
        msg.extend_from_slice(b"--b\r\nContent-Type: text/html\r\n\r\n");
        for _ in 0..html::MAX_HTML_TAGS * 3 / 8 {
            msg.extend_from_slice(b"<b>x</b>");
        }
        msg.extend_from_slice(b"\r\n");
    }
    msg.extend_from_slice(b"--b--\r\n");
    let t = tok(&msg);
    assert!(
        t.limits_hit.contains(&LimitHit::HtmlTags),
        "each part is within the budget, both are not: {:?}",
        t.limits_hit
    );
}

// --- the nesting cap: the parser is given a bounded number of levels ---

fn rfc822_nest(levels: usize) -> Vec<u8> {
    let mut m = b"Subject: outer\r\nContent-Type: message/rfc822\r\n\r\n".to_vec();
    for i in 0..levels {
        m.extend_from_slice(
            format!("Subject: level{i}\r\nContent-Type: Message/RFC822\r\n\r\n").as_bytes(),
        );
    }
    m.extend_from_slice(b"Subject: core\r\n\r\nthe core says free money\r\n");
    m
}

#[test]
fn nested_messages_past_the_cap_are_not_parsed() {
    let msg = rfc822_nest(2_000);
    assert!(msg.len() < Limits::default().max_scan_bytes);
    let cut = scan::cut(&msg, &Limits::default()).expect("over the nesting cap");
    assert!(cut.nested_messages && !cut.scan_bytes && cut.headers_whole());
    let declared = |m: &[u8]| {
        m.windows(7)
            .filter(|w| w.eq_ignore_ascii_case(b"/rfc822"))
            .count()
    };
    // The cap's worth in the body, and the outer one in the header block.
    assert_eq!(declared(&cut.bytes), scan::MAX_NESTED_MESSAGES + 1);
    let t = tok(&msg);
    for hit in [LimitHit::NestedMessages, LimitHit::MimeDepth] {
        assert!(t.limits_hit.contains(&hit), "{:?}", t.limits_hit);
    }
    assert!(has(&t, Tag::Subject, "outer"));
    assert!(has(&t, Tag::Body, "level0"), "the first levels are read");
    // Within the depth chaff reads, the cut changes nothing.
    assert_eq!(t.ids, tok(&rfc822_nest(scan::MAX_NESTED_MESSAGES - 1)).ids);
}

#[test]
fn a_few_nested_messages_and_the_header_block_are_not_cut() {
    assert!(
        scan::cut(
            &rfc822_nest(scan::MAX_NESTED_MESSAGES - 1),
            &Limits::default()
        )
        .is_none()
    );
    // Declarations in the header block are not nested messages.
    let mut msg = b"Subject: h\r\n".to_vec();
    for i in 0..500 {
        msg.extend_from_slice(format!("X-Type-{i}: message/rfc822\r\n").as_bytes());
    }
    msg.extend_from_slice(b"\r\nplain body\r\n");
    assert!(scan::cut(&msg, &Limits::default()).is_none());
}

/// A message with `n` header fields after its Subject (each `X-Field-i`,
/// one in ten folded over two lines) and a short body.
fn many_fields(n: usize) -> Vec<u8> {
    let mut m = b"Subject: many fields\r\n".to_vec();
    for i in 0..n {
        let fold = if i % 10 == 0 { "\r\n\tfolded" } else { "" };
        m.extend_from_slice(format!("X-Field-{i}: value {i}{fold}\r\n").as_bytes());
    }
    m.extend_from_slice(b"\r\nthe body says free money\r\n");
    m
}

#[test]
fn header_fields_past_the_cap_are_not_parsed() {
    // The Subject and 1,999 more: well within the header and scan caps.
    let msg = many_fields(1_999);
    assert!(msg.len() < Limits::default().max_header_bytes);
    let cut = scan::cut(&msg, &Limits::default()).expect("over the field cap");
    assert!(cut.header_fields && !cut.header_bytes && !cut.scan_bytes);
    assert!(!cut.headers_whole());
    let t = tok(&msg);
    assert_eq!(t.limits_hit, [LimitHit::HeaderFields]);
    assert!(has(&t, Tag::Subject, "many"));
    let last = scan::MAX_HEADER_FIELDS - 2; // the Subject is field 1
    assert!(has(&t, Tag::HeaderName, &format!("x-field-{last}")));
    assert!(!has(&t, Tag::HeaderName, &format!("x-field-{}", last + 1)));
    assert!(has(&t, Tag::Body, "money"), "the body is still read");
}

#[test]
fn header_fields_within_the_cap_are_parsed_as_they_are() {
    let msg = many_fields(scan::MAX_HEADER_FIELDS - 1);
    assert!(scan::cut(&msg, &Limits::default()).is_none());
    let t = tok(&msg);
    assert!(t.limits_hit.is_empty(), "{:?}", t.limits_hit);
    let last = scan::MAX_HEADER_FIELDS - 2;
    assert!(has(&t, Tag::HeaderName, &format!("x-field-{last}")));
}

/// Padding the header past the field cap (or the byte cap) must not hide
/// how the body is encoded, nor the Subject: the fields that say so are
/// carried past the cut. Without them a base64 HTML body was read as its
/// raw base64, unknown words that score near neutral.
#[test]
fn fields_that_say_how_the_body_reads_survive_a_header_cut() {
    // base64 of "<html><body><p>cheap viagra pills shipped
    // overnight</p></body></html>".
    let encoded = "PGh0bWw+PGJvZHk+PHA+Y2hlYXAgdmlhZ3JhIHBpbGxzIHNoaXBwZWQgb3Zlcm5pZ2h0PC9wPjwvYm9keT48L2h0bWw+";
    for (pad, field) in [(600, "short"), (5_000, &*"p".repeat(60))] {
        let mut msg = b"From: promo@pills.example\r\n".to_vec();
        for i in 0..pad {
            msg.extend_from_slice(format!("X-Pad-{i}: {field}\r\n").as_bytes());
        }
        msg.extend_from_slice(
            b"Subject: overnight\r\n pharmacy\r\nMIME-Version: 1.0\r\n\
              Content-Type: text/html;\r\n charset=utf-8\r\n\
              Content-Transfer-Encoding: base64\r\n\r\n",
        );
        msg.extend_from_slice(encoded.as_bytes());
        msg.extend_from_slice(b"\r\n");
        let cut = scan::cut(&msg, &Limits::default()).expect("over a header cap");
        assert!(!cut.headers_whole(), "{pad}");
        let t = tok(&msg);
        assert!(
            t.limits_hit.contains(&LimitHit::HeaderFields)
                || t.limits_hit.contains(&LimitHit::HeaderBytes),
            "{pad}: {:?}",
            t.limits_hit
        );
        assert!(has(&t, Tag::Body, "viagra"), "{pad}: the body is decoded");
        assert!(
            has(&t, Tag::Subject, "pharmacy"),
            "{pad}: the folded Subject is read"
        );
        assert!(
            !has(&t, Tag::Body, &encoded[..12].to_ascii_lowercase()),
            "{pad}"
        );
    }
    // A carried field is not doubled when the kept part has one already.
    let mut msg = b"Subject: first\r\n".to_vec();
    for i in 0..600 {
        msg.extend_from_slice(format!("X-Pad-{i}: v\r\n").as_bytes());
    }
    msg.extend_from_slice(b"Subject: second\r\n\r\nbody\r\n");
    let cut = scan::cut(&msg, &Limits::default()).unwrap();
    let text = String::from_utf8_lossy(&cut.bytes);
    assert_eq!(text.matches("Subject:").count(), 1, "{text}");
}

/// `levels` multiparts, each the only part of the one before.
fn multipart_nest(levels: usize) -> Vec<u8> {
    let mut m =
        b"Subject: outer\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n".to_vec();
    for i in 1..levels {
        m.extend_from_slice(
            format!(
                "--b{}\r\nContent-Type: Multipart/Alternative; boundary=\"b{i}\"\r\n\r\n",
                i - 1
            )
            .as_bytes(),
        );
    }
    m.extend_from_slice(
        format!(
            "--b{}\r\nContent-Type: text/plain\r\n\r\nthe core says free money\r\n",
            levels - 1
        )
        .as_bytes(),
    );
    for i in (0..levels).rev() {
        m.extend_from_slice(format!("--b{i}--\r\n").as_bytes());
    }
    m
}

#[test]
fn multiparts_past_the_cap_are_not_parsed() {
    let msg = multipart_nest(2_000);
    assert!(msg.len() < Limits::default().max_scan_bytes);
    let cut = scan::cut(&msg, &Limits::default()).expect("over the multipart cap");
    assert!(cut.multiparts && !cut.nested_messages && !cut.scan_bytes && cut.headers_whole());
    let declared = |m: &[u8]| {
        m.windows(10)
            .filter(|w| w.eq_ignore_ascii_case(b"multipart/"))
            .count()
    };
    // The cap's worth in the body, and the outer one in the header block.
    assert_eq!(declared(&cut.bytes), scan::MAX_MULTIPARTS + 1);
    let t = tok(&msg);
    for hit in [LimitHit::Multiparts, LimitHit::MimeDepth] {
        assert!(t.limits_hit.contains(&hit), "{:?}", t.limits_hit);
    }
    assert!(has(&t, Tag::Subject, "outer"));
    assert!(has(&t, Tag::ContentType, "multipart/alternative"));
    // Within the caps, a nest is parsed as it is.
    assert!(scan::cut(&multipart_nest(scan::MAX_MULTIPARTS), &Limits::default()).is_none());
}

#[test]
fn the_verdict_headers_chaff_suggests_are_not_evidence() {
    // Rescued spam-folder mail carries them when it is clicked Not spam, so
    // learned they would make a forged X-Spam-Flag a ham token.
    let t = tok(b"X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=0.99\r\nX-SPAM-SCORE: 0.99\r\nX-Mailer: mutt\r\nFrom: a@b.example\r\nSubject: hi\r\n\r\nhello there\r\n");
    for name in ["x-spam-flag", "x-spam-status", "x-spam-score"] {
        assert!(!has(&t, Tag::HeaderName, name), "{name}");
    }
    assert!(has(&t, Tag::HeaderName, "x-mailer"));
}
