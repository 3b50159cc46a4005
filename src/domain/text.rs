//! Free text that ends up in the signed log: key and token names, emails, reasons.
//!
//! Everything written here is signed and exported forever, and read by people deciding
//! who did what. So free text refuses what would deceive that reader or leak a credential:
//! control characters, Unicode format characters (category Cf: zero-width spaces, the BOM,
//! bidirectional overrides such as U+202E, which makes `admin<U+202E>gnp.exe` render
//! as `adminexe.png`), line and paragraph separators, and anything shaped like a keyledger
//! secret. Names are compared for uniqueness after NFKC normalisation and case folding, so
//! `ｃｉ` (full-width) and `CI` are the same name as `ci`.

use unicode_general_category::{GeneralCategory, get_general_category};
use unicode_normalization::UnicodeNormalization;

use crate::crypto::secret::contains_secret_like;

/// Why a piece of free text is refused. The message never repeats the text.
pub fn refusal(text: &str) -> Option<&'static str> {
    for c in text.chars() {
        if c.is_control() {
            return Some("must not contain control characters");
        }
        match get_general_category(c) {
            GeneralCategory::Format => {
                return Some(
                    "must not contain invisible formatting characters (zero-width, bidirectional controls)",
                );
            }
            GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => {
                return Some("must not contain line or paragraph separators");
            }
            _ => {}
        }
    }
    if contains_secret_like(text) {
        return Some("must not contain anything shaped like a keyledger secret");
    }
    None
}

/// The form under which two names are the same name: NFKC, then lowercased, then NFKC
/// again (lowercasing can denormalise), an approximation of Unicode's NFKC_Casefold.
pub fn fold(text: &str) -> String {
    // ASCII is its own NFKC form: lowercasing is all there is to do (every replay applies
    // every name, so this path matters).
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    text.nfkc()
        .flat_map(char::to_lowercase)
        .nfkc()
        .collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deceptive_characters_are_refused() {
        for text in [
            "c\u{200b}i",
            "\u{feff}ci",
            "admin\u{202e}gnp.exe",
            "\u{200b}\u{200b}",
            "a\u{2066}b",
            "a\u{200e}b",
            "a\u{2028}b",
            "a\u{2029}b",
            "a\u{7}b",
            "a\u{85}b",
        ] {
            assert!(refusal(text).is_some(), "{text:?}");
        }
        for text in [
            "ci",
            "chat frontend (prod)",
            "Zürich ✓",
            "日本語のキー",
            "ｃｉ",
        ] {
            assert_eq!(refusal(text), None, "{text:?}");
        }
    }

    #[test]
    fn folding_joins_width_and_case_variants() {
        assert_eq!(fold("ｃｉ"), "ci");
        assert_eq!(fold("CI"), "ci");
        assert_eq!(fold("Ｃi"), "ci");
        assert_eq!(fold("ﬁle"), "file");
        assert_eq!(fold("Straße"), fold("straße"));
        assert_ne!(fold("ci"), fold("cl"));
    }
}
