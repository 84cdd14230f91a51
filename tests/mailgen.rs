//! Varied, realistic-looking test mail from a seeded generator: ham on
//! everyday topics and spam from several campaigns, sharing the common
//! words and the provider's relay headers the way real mail does. Written
//! for the tests (the corpora are not in the repository).

/// xorshift64*: deterministic, so a failing test fails the same way.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[self.below(words.len())]
    }
}

const COMMON: &[&str] = &[
    "the", "and", "to", "of", "a", "in", "for", "is", "on", "that", "with", "you", "it", "this",
    "be", "are", "have", "we", "at", "your", "from", "will", "can", "our", "all", "more", "not",
    "please", "about", "if", "by", "or", "as", "here", "now", "new", "time", "one", "just", "get",
    "so", "out", "up", "my", "me", "know", "today", "would", "like", "there", "what", "when",
    "next", "week", "make", "sure", "let", "us", "thanks", "see", "need", "some", "also", "been",
    "only", "back", "day", "best", "good", "any", "how",
];

const HAM_TOPICS: &[&[&str]] = &[
    &[
        "meeting",
        "agenda",
        "quarterly",
        "budget",
        "slides",
        "roadmap",
        "minutes",
        "project",
        "deadline",
        "milestone",
        "review",
        "colleagues",
        "conference",
        "room",
        "notes",
    ],
    &[
        "weekend", "grandma", "birthday", "dinner", "kids", "garden", "picnic", "photos", "cousin",
        "holiday", "cake", "visit", "sunday", "family", "lake",
    ],
    &[
        "patch",
        "commit",
        "branch",
        "compile",
        "regression",
        "kernel",
        "merge",
        "test",
        "benchmark",
        "refactor",
        "function",
        "variable",
        "debugger",
        "stack",
        "trace",
    ],
    &[
        "flight",
        "itinerary",
        "hotel",
        "booking",
        "airport",
        "luggage",
        "terminal",
        "train",
        "platform",
        "passport",
        "layover",
        "boarding",
        "seat",
        "arrival",
        "departure",
    ],
    &[
        "homework",
        "teacher",
        "semester",
        "lecture",
        "exam",
        "essay",
        "library",
        "campus",
        "syllabus",
        "grades",
        "tutor",
        "assignment",
        "classroom",
        "professor",
        "thesis",
    ],
    &[
        "rehearsal",
        "choir",
        "concert",
        "tickets",
        "violin",
        "score",
        "soprano",
        "conductor",
        "practice",
        "program",
        "venue",
        "tuning",
        "audience",
        "chamber",
        "sonata",
    ],
    &[
        "recipe", "oven", "flour", "butter", "simmer", "garlic", "onions", "pasta", "sauce",
        "bake", "pan", "spoon", "tomatoes", "basil", "dessert",
    ],
    &[
        "appointment",
        "clinic",
        "dentist",
        "prescription",
        "checkup",
        "nurse",
        "schedule",
        "insurance",
        "pharmacy",
        "results",
        "reception",
        "referral",
        "allergy",
        "vaccine",
        "xray",
    ],
];

const SPAM_CAMPAIGNS: &[&[&str]] = &[
    &[
        "viagra",
        "cialis",
        "pills",
        "pharmacy",
        "prescription",
        "discount",
        "shipping",
        "generic",
        "meds",
        "order",
        "cheap",
        "dosage",
        "online",
        "save",
        "canadian",
    ],
    &[
        "loan",
        "mortgage",
        "credit",
        "approved",
        "refinance",
        "rates",
        "debt",
        "cash",
        "lender",
        "qualify",
        "instant",
        "apply",
        "guaranteed",
        "bad",
        "low",
    ],
    &[
        "casino", "jackpot", "bonus", "spins", "poker", "slots", "deposit", "win", "bet",
        "roulette", "vip", "free", "play", "players", "welcome",
    ],
    &[
        "bitcoin",
        "crypto",
        "investment",
        "profit",
        "returns",
        "trading",
        "wallet",
        "token",
        "presale",
        "moon",
        "double",
        "signals",
        "exchange",
        "opportunity",
        "earn",
    ],
    &[
        "rolex",
        "replica",
        "watches",
        "luxury",
        "handbags",
        "designer",
        "brand",
        "quality",
        "swiss",
        "outlet",
        "clearance",
        "authentic",
        "style",
        "gucci",
        "prices",
    ],
    &[
        "lottery",
        "winner",
        "claim",
        "prize",
        "beneficiary",
        "million",
        "transfer",
        "agent",
        "notification",
        "ticket",
        "funds",
        "fee",
        "processing",
        "award",
        "congratulations",
    ],
    &[
        "account",
        "suspended",
        "verify",
        "password",
        "login",
        "security",
        "unusual",
        "activity",
        "confirm",
        "bank",
        "update",
        "details",
        "locked",
        "click",
        "immediately",
    ],
    &[
        "weight",
        "diet",
        "burn",
        "fat",
        "slim",
        "pounds",
        "metabolism",
        "formula",
        "belly",
        "miracle",
        "natural",
        "supplement",
        "results",
        "celebrity",
        "secret",
    ],
];

fn body(rng: &mut Rng, topic: &[&str], words: usize) -> String {
    let mut out = String::new();
    for i in 0..words {
        let w = if rng.below(5) < 2 {
            rng.pick(topic)
        } else {
            rng.pick(COMMON)
        };
        out.push_str(w);
        out.push(if i % 12 == 11 { '\n' } else { ' ' });
    }
    out
}

fn message(from: &str, subject: &str, id: &str, date_day: usize, body: &str) -> Vec<u8> {
    format!(
        "Received: from mx1.provider.example (mx1.provider.example [192.0.2.25])\r\n\
         \tby mail.provider.example with ESMTPS id {id}; Mon, {d} Mar 2026 10:00:00 +0000\r\n\
         From: {from}\r\n\
         To: user@provider.example\r\n\
         Subject: {subject}\r\n\
         Date: Mon, {d} Mar 2026 10:00:00 +0000\r\n\
         Message-ID: <{id}@gen.example>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         {body}\r\n",
        d = 1 + date_day % 28,
    )
    .into_bytes()
}

/// The `i`-th of a stream of everyday ham.
pub fn ham(seed: u64, i: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ (i as u64).wrapping_mul(0x1234_5678_9abc_def1));
    let topic = HAM_TOPICS[rng.below(HAM_TOPICS.len())];
    let names = [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    ];
    let domains = [
        "work.example",
        "family.example",
        "school.example",
        "club.example",
    ];
    let from = format!(
        "{} <{}@{}>",
        rng.pick(&names),
        rng.pick(&names),
        rng.pick(&domains)
    );
    let subject = format!(
        "{} {} {}",
        rng.pick(topic),
        rng.pick(COMMON),
        rng.pick(topic)
    );
    let words = 40 + rng.below(120);
    let text = body(&mut rng, topic, words);
    message(&from, &subject, &format!("ham{seed}x{i}"), i, &text)
}

/// The `i`-th of a stream of spam from rotating campaigns.
pub fn spam(seed: u64, i: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ (i as u64).wrapping_mul(0x0fed_cba9_8765_4321) ^ 0x55);
    let campaign = SPAM_CAMPAIGNS[i % SPAM_CAMPAIGNS.len()];
    let from = format!(
        "Offers <promo{}@{}{}.example>",
        rng.below(1000),
        rng.pick(campaign),
        rng.below(100)
    );
    let subject = format!(
        "{} {} {}",
        rng.pick(campaign),
        rng.pick(campaign),
        rng.pick(COMMON)
    );
    let words = 40 + rng.below(120);
    let text = body(&mut rng, campaign, words);
    message(&from, &subject, &format!("spam{seed}x{i}"), i, &text)
}

/// The same message as delivered to the user again: a new Message-ID, Date
/// and relay id, and one word of the body changed (a campaign's next send).
pub fn near_copy(message: &[u8], n: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(message);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("generated mail has a body");
    let head: Vec<String> = head
        .split("\r\n")
        .map(|line| {
            if line.starts_with("Message-ID:") {
                format!("Message-ID: <copy{n}.{}>", line.len())
            } else if line.starts_with("Date:") {
                "Date: Tue, 31 Mar 2026 23:59:00 +0000".to_string()
            } else if line.starts_with("\tby ") {
                format!("\tby mail.provider.example with ESMTPS id copy{n}; Tue, 31 Mar 2026 23:59:00 +0000")
            } else {
                line.to_string()
            }
        })
        .collect();
    let body = body.replacen(" the ", &format!(" yours{n} "), 1);
    format!("{}\r\n\r\n{body}", head.join("\r\n")).into_bytes()
}

/// A pseudo-word for `rank` in the vocabulary `class` (0 the words every
/// kind of mail shares, 1 ham's, 2 spam's): letters only, two or three
/// syllables (for the ranks used), distinct for distinct (class, rank).
fn word(class: usize, rank: usize) -> String {
    const ONSETS: &[&str] = &[
        "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
    ];
    const VOWELS: &[&str] = &["a", "e", "i", "o", "u"];
    let mut n = rank * 3 + class;
    let mut w = String::new();
    loop {
        w.push_str(ONSETS[n % ONSETS.len()]);
        n /= ONSETS.len();
        w.push_str(VOWELS[n % VOWELS.len()]);
        n /= VOWELS.len();
        if n == 0 && w.len() >= 4 {
            return w;
        }
    }
}

/// A Zipf draw (`P(r) ∝ 1/(r + 1)`) from a vocabulary of `size` words.
fn zipf(rng: &mut Rng, size: usize) -> usize {
    // Inverse of the continuous approximation of the Zipf CDF.
    let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    let r = ((size as f64 + 1.0).powf(u) - 1.0) as usize;
    r.min(size - 1)
}

/// Mail whose words follow Zipf's law, as real mail's do (unlike
/// [`ham`]/[`spam`], whose few dozen common words every message soon
/// shows): most of a message's words come from a large vocabulary that
/// ham and spam share, the rest from its own class's. So a new ham holds
/// many middling words that a hundred learned spam showed and a handful
/// of learned ham did not, as a real user's does after a hundred *Spam*
/// clicks — the case in which the one-sided fix used to leak on the
/// corpora (docs/ACCURACY.md, "Session 17").
fn zipf_message(seed: u64, i: usize, class: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ class as u64);
    let words = 80 + rng.below(220);
    let mut text = String::new();
    for k in 0..words {
        let w = if rng.below(100) < 85 {
            word(0, zipf(&mut rng, 20_000))
        } else {
            word(class, zipf(&mut rng, 20_000))
        };
        text.push_str(&w);
        text.push(if k % 12 == 11 { '\n' } else { ' ' });
    }
    let subject = format!(
        "{} {}",
        word(class, zipf(&mut rng, 5_000)),
        word(0, zipf(&mut rng, 20_000))
    );
    let from = if class == 1 {
        format!(
            "{} <{}@people{}.example>",
            word(1, i % 50),
            word(1, i % 50),
            i % 7
        )
    } else {
        format!(
            "Offers <{}@{}{}.example>",
            word(2, rng.below(1000)),
            word(2, i % 13),
            rng.below(100)
        )
    };
    let kind = if class == 1 { "zham" } else { "zspam" };
    message(&from, &subject, &format!("{kind}{seed}x{i}"), i, &text)
}

/// The `i`-th of a stream of ham with Zipf-distributed words ([`zipf_message`]).
pub fn zipf_ham(seed: u64, i: usize) -> Vec<u8> {
    zipf_message(seed, i, 1)
}

/// The `i`-th of a stream of spam with Zipf-distributed words ([`zipf_message`]).
pub fn zipf_spam(seed: u64, i: usize) -> Vec<u8> {
    zipf_message(seed, i, 2)
}

/// A ham with a subject and an empty body, and no header but its own
/// (enron1's first ham is `Subject: christmas tree farm pictures` and
/// nothing else): one message, almost no words, none of them the relay
/// headers every other generated message shares.
pub fn subject_only_ham(seed: u64, i: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let subject = format!(
        "{} {} {}",
        word(1, rng.below(50)),
        word(1, rng.below(500)),
        word(0, rng.below(200))
    );
    format!("Subject: {subject}\r\n\r\n").into_bytes()
}

/// A note with an empty body from a sender the user never heard from,
/// with the full header real mail has: received from the sender's own
/// relay, at its own time, with its own Message-ID domain. The header
/// lines it shares with any clicked spam are the ones all mail has
/// (`header:to`, `header:date`, `content-type:text/plain`, …).
pub fn empty_note(seed: u64, i: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let (name, domain) = (word(0, rng.below(200)), word(1, rng.below(500)));
    let ip = format!("198.51.100.{}", 1 + rng.below(250));
    let (day, hour) = (1 + rng.below(28), rng.below(24));
    format!(
        "Received: from mx.{domain}.example (mx.{domain}.example [{ip}])\r\n\
         \tby mail.provider.example with ESMTPS id n{seed}x{i}; Tue, {day} Mar 2026 {hour:02}:17:00 +0000\r\n\
         From: {name} <{name}@{domain}.example>\r\n\
         To: user@provider.example\r\n\
         Subject: {}\r\n\
         Date: Tue, {day} Mar 2026 {hour:02}:16:42 +0000\r\n\
         Message-ID: <{}.{i}@{domain}.example>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n",
        word(1, rng.below(500)),
        rng.below(1_000_000),
    )
    .into_bytes()
}

/// `msg` with its header cut down to the `Subject:` line, as the Enron
/// corpora's messages are: no relay, sender or MIME header that every
/// message shares.
pub fn subject_and_body(msg: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(msg);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let subject = head
        .lines()
        .find(|l| l.starts_with("Subject:"))
        .unwrap_or("Subject:");
    format!("{subject}\r\n\r\n{body}").into_bytes()
}
