//! Rules for the free-text fields of requests, written twice on purpose: once as the JSON
//! Schema `pattern` the document gives each field (a client can check a value before sending
//! it) and once as the Rust check the services apply. The tests hold the two together.
//!
//! Lengths count Unicode scalar values, as JSON Schema's `minLength` and `maxLength` do.
//! "Control" is Unicode category Cc (`\x00-\x1f`, `\x7f-\x9f`); "whitespace" is the Unicode
//! White_Space property (Rust's `char::is_whitespace`, `\s` in the patterns).

/// Text shown to people (names, nicknames, codes): no control characters and at least one
/// character that is not whitespace. Services store it trimmed.
pub const VISIBLE_TEXT: &str =
    r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";

/// An email address as accepted at registration: 1 to 64 characters before the one `@`, a
/// domain with a dot that neither starts nor ends it, no whitespace or control characters.
/// (Total length, at most [`EMAIL_MAX`], is the field's `maxLength`.)
pub const EMAIL: &str = r"^[^@\s\x00-\x1f\x7f-\x9f]{1,64}@[^@.\s\x00-\x1f\x7f-\x9f][^@\s\x00-\x1f\x7f-\x9f]*\.[^@\s\x00-\x1f\x7f-\x9f]*[^@.\s\x00-\x1f\x7f-\x9f]$";

/// The longest email address, in characters.
pub const EMAIL_MAX: usize = 254;

/// Whether `text` is [`VISIBLE_TEXT`] of 1 to `max` characters.
pub fn is_visible_text(text: &str, max: usize) -> bool {
    let length = text.chars().count();
    (1..=max).contains(&length)
        && !text.chars().any(char::is_control)
        && text.chars().any(|c| !c.is_whitespace())
}

/// Whether `text` is an [`EMAIL`] of at most [`EMAIL_MAX`] characters.
pub fn is_email(text: &str) -> bool {
    let allowed = |c: char| c != '@' && !c.is_whitespace() && !c.is_control();
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    text.chars().count() <= EMAIL_MAX
        && (1..=64).contains(&local.chars().count())
        && local.chars().all(allowed)
        && domain.chars().all(allowed)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    const SAMPLES: &[&str] = &[
        "",
        "a",
        " ",
        "  a  ",
        "\u{a0}",
        "\u{3000}x",
        "\u{1c}",
        "\u{1c}a",
        "a\u{0}",
        "a\u{85}",
        "\u{85}",
        "\u{9f}a",
        "\u{200b}",
        "\u{feff}",
        "名前",
        "a@b.c",
        "A@B.CO",
        "a@b",
        "a@.b",
        "a@b.",
        "a@@b.c",
        "@b.c",
        "a b@c.d",
        "a@b..c",
        "a@b.c ",
        " a@b.c",
        "a@[1.2.3.4]",
        "\u{e9}@\u{e9}.\u{e9}",
        "a\u{1f}@b.c",
        "a@b\u{a0}.c",
    ];

    #[test]
    fn visible_text_and_its_pattern_agree() {
        let pattern = Regex::new(VISIBLE_TEXT).unwrap();
        for sample in SAMPLES {
            assert_eq!(
                is_visible_text(sample, usize::MAX),
                pattern.is_match(sample),
                "{sample:?}"
            );
        }
        assert!(is_visible_text("abc", 3));
        assert!(!is_visible_text("abcd", 3));
    }

    #[test]
    fn email_and_its_pattern_agree() {
        let pattern = Regex::new(EMAIL).unwrap();
        let long_local = format!("{}@b.c", "x".repeat(65));
        let longest = format!("{}@{}.c", "x".repeat(64), "d".repeat(EMAIL_MAX - 67));
        let samples = SAMPLES
            .iter()
            .copied()
            .chain([long_local.as_str(), longest.as_str()]);
        for sample in samples {
            let within = sample.chars().count() <= EMAIL_MAX;
            assert_eq!(
                is_email(sample),
                within && pattern.is_match(sample),
                "{sample:?}"
            );
        }
        assert!(is_email(&longest));
        assert!(!is_email(&format!("{longest}x")));
    }
}
