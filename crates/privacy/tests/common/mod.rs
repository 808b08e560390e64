//! Deterministic generators of personal values and look-alikes, shared by the fixture corpus
//! (`tests/corpus.rs`, which writes `tests/fixtures/*.jsonl` from them) and the property tests.

#![allow(dead_code)]

use privacy::Kind;

/// SplitMix64: small, deterministic, the same on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
    }

    pub fn chars(&mut self, alphabet: &[u8], n: usize) -> String {
        (0..n).map(|_| char::from(*self.pick(alphabet))).collect()
    }
}

pub const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
pub const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
pub const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
pub const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
pub const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// ---------------------------------------------------------------- personal values

pub fn email(r: &mut Rng) -> String {
    let first = r.pick(&["jane", "john", "maria", "li", "ahmed", "olga", "sam", "noah"]);
    let last = r.pick(&["doe", "smith", "garcia", "wang", "khan", "petrova", "lee"]);
    let domain = r.pick(&[
        "example.com",
        "mail.example.org",
        "example.co.uk",
        "firma-beispiel.de",
        "exemple.fr",
        "corp.example.io",
    ]);
    let local = match r.below(5) {
        0 => format!("{first}.{last}"),
        1 => format!("{first}{}", r.digits(2)),
        2 => format!("{first}+support@{last}"),
        3 => format!("{}_{last}", first.to_uppercase()),
        _ => format!("{first}-{last}"),
    };
    let local = local.split('@').next().unwrap_or(&local).to_owned();
    format!("{local}@{domain}")
}

/// (country, formatted number), valid by the `phonenumber` crate's strict `is_valid`.
pub fn phone(r: &mut Rng) -> (&'static str, String) {
    let countries = ["US", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "BR", "JP", "AU"];
    let country = *r.pick(&countries);
    for _ in 0..200 {
        let s = phone_format(r, country);
        let valid = phonenumber::parse(Some(phonenumber::country::Id::US), &s)
            .map(|n| phonenumber::is_valid(&n))
            .unwrap_or(false);
        if valid {
            return (country, s);
        }
    }
    panic!("no valid {country} number in 200 tries")
}

fn phone_format(r: &mut Rng, country: &str) -> String {
    match country {
        "US" => {
            let area = r.pick(&["201", "212", "305", "312", "415", "512", "617", "646", "702", "718", "206", "303"]);
            let exch = format!("{}{}", 2 + r.below(8), r.digits(2));
            let line = r.digits(4);
            match r.below(5) {
                0 => format!("({area}) {exch}-{line}"),
                1 => format!("{area}-{exch}-{line}"),
                2 => format!("{area}.{exch}.{line}"),
                3 => format!("+1 {area} {exch} {line}"),
                _ => format!("+1-{area}-{exch}-{line}"),
            }
        }
        "GB" => match r.below(3) {
            0 => format!("+44 20 7{} {}", r.digits(3), r.digits(4)),
            1 => format!("+44 7{}{} {}", 4 + r.below(6), r.digits(2), r.digits(6)),
            _ => format!("0044 161 {} {}", r.digits(3), r.digits(4)),
        },
        "DE" => match r.below(2) {
            0 => format!("+49 30 {}", r.digits(8)),
            _ => format!("+49 15{} {}", 1 + r.below(2), r.digits(8)),
        },
        "FR" => {
            format!("+33 {} {} {} {} {}", r.pick(&["1", "6", "7"]), r.digits(2), r.digits(2), r.digits(2), r.digits(2))
        }
        "ES" => format!("+34 6{} {} {}", r.digits(2), r.digits(3), r.digits(3)),
        "IT" => match r.below(2) {
            0 => format!("+39 06 {} {}", r.digits(4), r.digits(4)),
            _ => format!("+39 3{} {} {}", r.digits(2), r.digits(3), r.digits(4)),
        },
        "NL" => format!("+31 6 {}", r.digits(8)),
        "IN" => format!("+91 9{} {}", r.digits(4), r.digits(5)),
        "JP" => format!("+81 90-{}-{}", r.digits(4), r.digits(4)),
        _ => format!("+61 4{} {} {}", r.digits(2), r.digits(3), r.digits(3)),
    }
}

pub fn luhn_check_digit(body: &str) -> char {
    let mut sum = 0;
    for (i, d) in body.bytes().rev().map(|b| u32::from(b - b'0')).enumerate() {
        sum += if i % 2 == 0 {
            let x = d * 2;
            if x > 9 { x - 9 } else { x }
        } else {
            d
        };
    }
    char::from(b'0' + ((10 - sum % 10) % 10) as u8)
}

pub fn luhn_ok(digits: &str) -> bool {
    let body = &digits[..digits.len() - 1];
    luhn_check_digit(body) == digits.chars().last().unwrap()
}

/// A Luhn-valid card number of a real issuer range, formatted as people type it.
pub fn card(r: &mut Rng) -> String {
    let (prefix, len): (String, usize) = match r.below(8) {
        0 => ("4".into(), 16),
        1 => ("4".into(), 13),
        2 => (format!("5{}", 1 + r.below(5)), 16),
        3 => (format!("2{}", 221 + r.below(500)), 16),
        4 => (r.pick(&["34", "37"]).to_string(), 15),
        5 => ("6011".into(), 16),
        6 => (format!("35{}", 28 + r.below(62)), 16),
        _ => ("62".into(), 19),
    };
    let body = format!("{prefix}{}", r.digits(len - prefix.len() - 1));
    let number = format!("{body}{}", luhn_check_digit(&body));
    match (r.below(3), len) {
        (0, _) => number,
        (1, 15) => format!("{} {} {}", &number[..4], &number[4..10], &number[10..]),
        (sep, _) => {
            let sep = if sep == 1 { " " } else { "-" };
            number.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(sep)
        }
    }
}

pub fn iban_check(country: &str, bban: &str) -> String {
    let rearranged = format!("{bban}{country}00");
    let mut rem: u32 = 0;
    for ch in rearranged.chars() {
        rem = match ch {
            '0'..='9' => (rem * 10 + ch.to_digit(10).unwrap()) % 97,
            _ => (rem * 100 + (ch as u32 - 'A' as u32 + 10)) % 97,
        };
    }
    format!("{:02}", 98 - rem)
}

/// A mod-97-valid IBAN of one of ten countries, compact or grouped by four.
pub fn iban(r: &mut Rng) -> String {
    let upper = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let (country, bban) = match r.below(10) {
        0 => ("DE", r.digits(18)),
        1 => ("FR", r.digits(23)),
        2 => ("GB", format!("{}{}", r.chars(upper, 4), r.digits(14))),
        3 => ("ES", r.digits(20)),
        4 => ("IT", format!("{}{}{}", r.chars(upper, 1), r.digits(10), r.digits(12))),
        5 => ("NL", format!("{}{}", r.chars(upper, 4), r.digits(10))),
        6 => ("BE", r.digits(12)),
        7 => ("CH", format!("{}{}", r.digits(5), r.chars(UPPER_DIGITS, 12))),
        8 => ("PL", r.digits(24)),
        _ => ("AT", r.digits(16)),
    };
    let compact = format!("{country}{}{bban}", iban_check(country, &bban));
    match r.below(3) {
        0 => compact,
        _ => compact.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(" "),
    }
}

/// (text containing a secret, the secret part that must disappear).
pub fn secret(r: &mut Rng) -> (String, String) {
    let s = match r.below(16) {
        0 => format!("sk-proj-{}", r.chars(ALNUM, 48)),
        1 => format!("sk-{}", r.chars(ALNUM, 48)),
        2 => format!("sk_live_{}", r.chars(ALNUM, 24)),
        3 => format!("pk_live_{}", r.chars(ALNUM, 24)),
        4 => format!("rk_live_{}", r.chars(ALNUM, 24)),
        5 => format!("AKIA{}", r.chars(UPPER_DIGITS, 16)),
        6 => format!("ghp_{}", r.chars(ALNUM, 36)),
        7 => format!("gho_{}", r.chars(ALNUM, 36)),
        8 => format!("github_pat_{}_{}", r.chars(ALNUM, 22), r.chars(ALNUM, 59)),
        9 => format!("xox{}-{}-{}-{}", r.pick(&["b", "p", "a", "r"]), r.digits(12), r.digits(13), r.chars(ALNUM, 24)),
        10 => format!("AIza{}", r.chars(B64URL, 35)),
        11 => jwt(r),
        12 => {
            let token = format!("{}{}", r.digits(2), r.chars(ALNUM, 30));
            return (format!("Authorization: Bearer {token}"), token);
        }
        13 => {
            let pem = pem(r);
            return (pem.clone(), pem);
        }
        14 => {
            let pw = format!("{}{}!{}", r.chars(ALNUM, 8), r.digits(2), r.chars(LOWER, 2));
            let key = r.pick(&["password", "Password", "passwd", "pwd", "PIN"]);
            let sep = r.pick(&[": ", "=", " = ", ":"]);
            return (format!("{key}{sep}{pw}"), pw);
        }
        _ => {
            let v = r.chars(ALNUM, 32);
            let key = r.pick(&["api_key", "apiKey", "client_secret", "access_token", "token"]);
            return (format!("{key}={v}"), v);
        }
    };
    (s.clone(), s)
}

pub fn jwt(r: &mut Rng) -> String {
    format!("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ{}.{}", r.chars(B64URL, 40), r.chars(B64URL, 43))
}

pub fn pem(r: &mut Rng) -> String {
    let label = r.pick(&["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"]);
    let lines: Vec<String> = (0..4).map(|_| r.chars(B64, 64)).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----", lines.join("\n"))
}

/// (URL, the query or fragment values that must disappear).
pub fn url_with_query(r: &mut Rng) -> (String, Vec<String>) {
    let len = 20 + r.below(20);
    let token = r.chars(ALNUM, len);
    let id = format!("u{}", r.digits(6));
    match r.below(5) {
        0 => (format!("https://app.example.com/reset?token={token}"), vec![token]),
        1 => (format!("https://id.example.org/callback#access_token={token}&expires_in=3600"), vec![token]),
        2 => (format!("https://shop.example.com/orders/list?session={token}&user={id}"), vec![token, id]),
        3 => (format!("www.example.net/verify?code={token}"), vec![token]),
        _ => (format!("https://app.example.com/#/invite?key={token}"), vec![token]),
    }
}

// ---------------------------------------------------------------- contexts

/// Embeds `value` in a visitor message, a page title, a URL or an activity summary.
pub fn embed(r: &mut Rng, value: &str) -> (&'static str, String) {
    let url_ok = !value.contains(char::is_whitespace) && !value.contains("://");
    let n = if url_ok { 4 } else { 3 };
    match r.below(n) {
        0 => {
            let t = r.pick(&[
                "Hi, I tried {} but it keeps failing",
                "my details are {}. can you check?",
                "Hello!\nHere it is: {}\nthanks",
                "({}) is what I typed",
                "I entered {}, then the page froze.",
            ]);
            ("message", t.replace("{}", value))
        }
        1 => {
            let t = r.pick(&["Account settings – {} – Acme", "Checkout | {}", "Profile of {} · Acme Cloud"]);
            ("title", t.replace("{}", value))
        }
        2 => {
            let t = r.pick(&[
                "The visitor pasted {} into the support form, then opened Billing.",
                "Summary: edited the field to {} and clicked Save twice.",
            ]);
            ("summary", t.replace("{}", value))
        }
        _ => ("url", format!("opened https://app.example.com/account/edit?field={value}&step=2")),
    }
}

/// One personal value of `kind`: (text as typed, the parts that must disappear).
pub fn personal(r: &mut Rng, kind: Kind) -> (String, Vec<String>) {
    match kind {
        Kind::Email => {
            let v = email(r);
            (v.clone(), vec![v])
        }
        Kind::Phone => {
            let v = phone(r).1;
            (v.clone(), vec![v])
        }
        Kind::Card => {
            let v = card(r);
            (v.clone(), vec![v])
        }
        Kind::Iban => {
            let v = iban(r);
            (v.clone(), vec![v])
        }
        Kind::Secret => {
            let (t, v) = secret(r);
            (t, vec![v])
        }
        Kind::UrlQuery => url_with_query(r),
    }
}

// ---------------------------------------------------------------- look-alikes

pub fn benign(r: &mut Rng) -> (&'static str, String) {
    let months = ["January", "March", "June", "October", "December"];
    match r.below(14) {
        0 => (
            "order",
            match r.below(3) {
                0 => {
                    let n = 6 + r.below(5);
                    format!("order #{}", r.digits(n))
                }
                1 => format!("ORD-2024-{}", r.digits(6)),
                _ => format!("order number {}", r.digits(5)),
            },
        ),
        1 => {
            let (y, m, d) = (2015 + r.below(12), 1 + r.below(12), 1 + r.below(28));
            (
                "date",
                match r.below(5) {
                    0 => format!("{y}-{m:02}-{d:02}"),
                    1 => format!("{d:02}/{m:02}/{y}"),
                    2 => format!("{m}/{d}/{y}"),
                    3 => format!("{d:02}.{m:02}.{y}"),
                    _ => format!("{} {d}, {y}", r.pick(&months)),
                },
            )
        }
        2 => (
            "time",
            match r.below(3) {
                0 => format!("{:02}:{:02}", r.below(24), r.below(60)),
                1 => format!("{:02}:{:02}:{:02}", r.below(24), r.below(60), r.below(60)),
                _ => format!("2024-0{}-1{}T{:02}:{:02}:00Z", 1 + r.below(9), r.below(10), r.below(24), r.below(60)),
            },
        ),
        3 => (
            "price",
            match r.below(4) {
                0 => format!("${},{}.{}", 1 + r.below(99), r.digits(3), r.digits(2)),
                1 => format!("€{},{}", r.below(1000), r.digits(2)),
                2 => format!("{} {} kr", 1 + r.below(99), r.digits(3)),
                _ => format!("USD {}.{}", r.below(10000), r.digits(2)),
            },
        ),
        4 => (
            "version",
            match r.below(4) {
                0 => format!("v{}.{}.{}", r.below(20), r.below(50), r.below(100)),
                1 => format!("10.0.{}.{}", r.digits(5), r.digits(4)),
                2 => format!("{}.{}.{}-beta.{}", r.below(5), r.below(20), r.below(10), r.below(9)),
                _ => format!("Chrome {}.0.{}.{}", 100 + r.below(30), r.digits(4), r.digits(3)),
            },
        ),
        5 => {
            let hex = b"0123456789abcdef";
            (
                "uuid",
                format!(
                    "{}-{}-4{}-a{}-{}",
                    r.chars(hex, 8),
                    r.chars(hex, 4),
                    r.chars(hex, 3),
                    r.chars(hex, 3),
                    r.chars(hex, 12)
                ),
            )
        }
        6 => (
            "tracking",
            match r.below(4) {
                0 => format!("1Z{}{}", r.chars(UPPER_DIGITS, 6), r.digits(10)),
                1 => {
                    let d = format!("9400{}", r.digits(18));
                    d.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(" ")
                }
                2 => format!("JD{}", r.digits(18)),
                _ => format!("tracking {}", r.digits(12)),
            },
        ),
        7 | 8 => ("luhn-invalid", luhn_invalid_run(r)),
        9 => {
            // An IBAN with wrong check digits.
            let bban = r.digits(18);
            let good: u32 = iban_check("DE", &bban).parse().unwrap();
            let bad = (good + 1 + r.below(90) as u32) % 97 + 2;
            let bad = if bad == good { (bad % 96) + 2 } else { bad };
            ("iban-invalid", format!("DE{bad:02}{bban}"))
        }
        10 => ("ip", format!("{}.{}.{}.{}", 1 + r.below(254), r.below(256), r.below(256), 1 + r.below(254))),
        11 => ("isbn", format!("978-{}-{}-{}-{}", r.below(10), r.digits(2), r.digits(6), r.below(10))),
        12 => (
            "misc",
            match r.below(6) {
                0 => format!("{}% done", r.below(100)),
                1 => format!("ZIP {}", r.digits(5)),
                2 => format!("SKU-{}-{}", r.digits(5), r.chars(UPPER_DIGITS, 1)),
                3 => format!("#{}", r.chars(b"0123456789abcdef", 6)),
                4 => format!("page {} of {}", r.below(50), 50 + r.below(50)),
                _ => format!("ticket {}", r.digits(5)),
            },
        ),
        _ => (
            "words",
            r.pick(&[
                "the password reset page does not load",
                "a bearer of bad news",
                "I use sk-learn for my models",
                "the token ring network",
                "www.example.com/pricing",
                "see https://docs.example.com/guide#installation",
                "my secret is that I love this app",
                "pin the tab, please",
            ])
            .to_string(),
        ),
    }
}

/// 13-19 digits, contiguous or grouped by four, that fail Luhn (whole run and every leading
/// group window a card could be).
pub fn luhn_invalid_run(r: &mut Rng) -> String {
    loop {
        let len = 13 + r.below(7);
        let first = 2 + r.below(5);
        let digits = format!("{first}{}", r.digits(len - 1));
        if luhn_ok(&digits) {
            continue;
        }
        if r.below(2) == 0 {
            return digits;
        }
        let groups: Vec<&str> = digits.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect();
        let any_prefix_valid = (1..=groups.len()).any(|k| {
            let p: String = groups[..k].concat();
            (13..=19).contains(&p.len()) && luhn_ok(&p)
        });
        if !any_prefix_valid {
            return groups.join(" ");
        }
    }
}

pub fn benign_sentence(r: &mut Rng, value: &str) -> String {
    r.pick(&[
        "Hi, about {} — it still shows an error.",
        "Summary: the visitor looked at {} on the Orders page.",
        "Page title: Invoice {} | Acme",
        "{}",
        "we talked on {} and nothing changed",
    ])
    .replace("{}", value)
}
