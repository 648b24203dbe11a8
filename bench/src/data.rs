//! Synthetic but realistic customers: valid SSNs (never 000, 666 or 9xx
//! areas), Luhn-valid card numbers of real networks' prefixes, e-mail
//! addresses, US phone numbers and dates of birth. A customer's profile is a
//! function of its index, so a data set can be checked and re-created.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use pii_vault::pb;

const FIRST: [&str; 32] = [
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Carlos",
    "Karen",
    "Wei",
    "Nancy",
    "Ahmed",
    "Lisa",
    "Daniel",
    "Priya",
    "Matthew",
    "Sofia",
    "Anthony",
    "Ana",
    "Mark",
    "Fatima",
];

const LAST: [&str; 32] = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Nguyen",
    "Patel",
];

const DOMAINS: [&str; 6] = [
    "Example.com",
    "example.org",
    "mail.example.net",
    "EXAMPLE.co.uk",
    "example.io",
    "corp.example.com",
];

/// Field names of a customer's profile, in the order they are written.
pub const PROFILE_FIELDS: [(&str, pb::FieldKind); 6] = [
    ("full_name", pb::FieldKind::Name),
    ("email", pb::FieldKind::Email),
    ("phone", pb::FieldKind::Phone),
    ("ssn", pb::FieldKind::Ssn),
    ("date_of_birth", pb::FieldKind::DateOfBirth),
    ("card", pb::FieldKind::CardNumber),
];

/// The id of customer `index`: `<prefix>c<index, 9 digits>` (the letter keeps
/// the number from looking like an SSN, which the vault refuses in an id).
pub fn customer_id(prefix: &str, index: u64) -> String {
    format!("{prefix}c{index:09}")
}

/// A generator seeded from a customer index (the same profile every time).
pub fn seeded(index: u64) -> SmallRng {
    SmallRng::seed_from_u64(index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed)
}

/// A generator for fresh values.
pub fn fresh() -> SmallRng {
    SmallRng::from_rng(&mut rand::rng())
}

/// `ddd-dd-dddd` with an area that is issued (001-899 except 666), a group of
/// 01-99 and a serial of 0001-9999.
pub fn ssn(rng: &mut impl Rng) -> String {
    let area = loop {
        let area = rng.random_range(1..900);
        if area != 666 {
            break area;
        }
    };
    format!(
        "{area:03}-{:02}-{:04}",
        rng.random_range(1..100),
        rng.random_range(1..10_000)
    )
}

/// A Luhn-valid card number: Visa (16 digits, 4...), Mastercard (16, 51-55)
/// or American Express (15, 34/37), written in groups as people type them.
pub fn card_number(rng: &mut impl Rng) -> String {
    let (prefix, len): (&str, usize) = match rng.random_range(0..10) {
        0..=5 => ("4", 16),
        6..=8 => (["51", "52", "53", "54", "55"][rng.random_range(0..5)], 16),
        _ => (["34", "37"][rng.random_range(0..2)], 15),
    };
    let mut digits: Vec<u8> = prefix.bytes().map(|b| b - b'0').collect();
    while digits.len() < len - 1 {
        digits.push(rng.random_range(0..10));
    }
    digits.push(luhn_check_digit(&digits));
    let text: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
    if len == 16 {
        format!(
            "{} {} {} {}",
            &text[0..4],
            &text[4..8],
            &text[8..12],
            &text[12..16]
        )
    } else {
        text
    }
}

/// The digit that makes `payload` followed by it pass the Luhn check.
fn luhn_check_digit(payload: &[u8]) -> u8 {
    let sum: u32 = payload
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// A US number as people type it: `(415) 555-0134`, area and exchange 200-999.
pub fn phone(rng: &mut impl Rng) -> String {
    format!(
        "({}) {}-{:04}",
        rng.random_range(201..990),
        rng.random_range(200..1000),
        rng.random_range(0..10_000)
    )
}

/// A real calendar date between 1940 and 2005.
pub fn date_of_birth(rng: &mut impl Rng) -> String {
    format!(
        "{}-{:02}-{:02}",
        rng.random_range(1940..2006),
        rng.random_range(1..13),
        rng.random_range(1..29)
    )
}

fn person(rng: &mut impl Rng) -> (&'static str, &'static str) {
    (
        FIRST[rng.random_range(0..FIRST.len())],
        LAST[rng.random_range(0..LAST.len())],
    )
}

pub fn email(rng: &mut impl Rng) -> String {
    let (first, last) = person(rng);
    email_of(rng, first, last)
}

fn email_of(rng: &mut impl Rng, first: &str, last: &str) -> String {
    let domain = DOMAINS[rng.random_range(0..DOMAINS.len())];
    match rng.random_range(0..3) {
        0 => format!(
            "{}.{}@{domain}",
            first.to_ascii_lowercase(),
            last.to_ascii_lowercase()
        ),
        1 => format!(
            "{}{}{}@{domain}",
            &first[..1].to_ascii_lowercase(),
            last.to_ascii_lowercase(),
            rng.random_range(1..1000)
        ),
        _ => format!("{first}.{last}+{}@{domain}", rng.random_range(1..100)),
    }
}

/// A customer's whole profile (one value per `PROFILE_FIELDS` entry).
pub fn profile(rng: &mut impl Rng) -> Vec<pb::Field> {
    let (first, last) = person(rng);
    let values = [
        format!("{first} {last}"),
        email_of(rng, first, last),
        phone(rng),
        ssn(rng),
        date_of_birth(rng),
        card_number(rng),
    ];
    PROFILE_FIELDS
        .iter()
        .zip(values)
        .map(|((name, kind), value)| pb::Field {
            name: (*name).to_owned(),
            kind: *kind as i32,
            value,
        })
        .collect()
}

/// A standalone value to tokenize, of the kinds payment and support flows
/// tokenize most: half card numbers, then SSNs, e-mails and phones.
pub fn standalone(rng: &mut impl Rng) -> (pb::FieldKind, String) {
    match rng.random_range(0..8) {
        0..=3 => (pb::FieldKind::CardNumber, card_number(rng)),
        4 => (pb::FieldKind::Ssn, ssn(rng)),
        5 | 6 => (pb::FieldKind::Email, email(rng)),
        _ => (pb::FieldKind::Phone, phone(rng)),
    }
}

/// `count` standalone items for a Tokenize request.
pub fn tokenize_items(rng: &mut impl Rng, count: usize) -> Vec<pb::TokenizeItem> {
    (0..count)
        .map(|_| {
            let (kind, value) = standalone(rng);
            pb::TokenizeItem {
                value,
                kind: kind as i32,
                format: pb::TokenFormat::Random as i32,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;
    use pii_vault::vault::kinds::is_luhn_valid;
    use pii_vault::vault::FieldKind;

    #[test]
    fn every_synthetic_value_is_accepted_by_its_kind() {
        let today = date!(2026 - 01 - 01);
        let mut rng = seeded(7);
        for _ in 0..2000 {
            let ssn = ssn(&mut rng);
            assert!(FieldKind::Ssn.normalize(&ssn, today).is_ok(), "{ssn}");
            let card = card_number(&mut rng);
            let normalized = FieldKind::CardNumber
                .normalize(&card, today)
                .unwrap_or_else(|e| panic!("{card}: {e}"));
            assert!(is_luhn_valid(normalized.as_str()));
            for (kind, value) in [
                (FieldKind::Email, email(&mut rng)),
                (FieldKind::Phone, phone(&mut rng)),
                (FieldKind::DateOfBirth, date_of_birth(&mut rng)),
            ] {
                assert!(kind.normalize(&value, today).is_ok(), "{value}");
            }
        }
    }

    #[test]
    fn a_customer_profile_is_a_function_of_its_index() {
        let a = profile(&mut seeded(42));
        let b = profile(&mut seeded(42));
        let c = profile(&mut seeded(43));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(customer_id("bench-", 42), "bench-c000000042");
    }
}
