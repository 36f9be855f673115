//! Name normalization (spec 4.1) and confusable detection.
//!
//! `normalize` is NFKC, lowercase, removal of control and format characters (zero-width spaces,
//! joiners, BOM, bidi controls), then trimming. NFKC folds fullwidth letters and ligatures but
//! leaves look-alikes from other scripts alone (Cyrillic `е` stays distinct from Latin `e`), so
//! [`skeleton`] adds the Unicode confusables mapping (UTS #39) to catch those.

use std::borrow::Cow;

use aip_api::checks::{is_invisible, skeleton as uts39_skeleton};
use unicode_normalization::UnicodeNormalization;

/// Normalizes a tool or method name for comparison (spec 4.1).
///
/// Plain lowercase ASCII names without surrounding blanks, the common case, are returned as they
/// are without allocating.
pub fn normalize(input: &str) -> Cow<'_, str> {
    let plain = input.bytes().all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase());
    if plain {
        return Cow::Borrowed(input);
    }
    // Lowercasing can leave a string that NFKC would change again (e.g. U+0130), hence the
    // second pass: normalizing a normalized name must change nothing.
    let lowered: String = input.nfkc().flat_map(char::to_lowercase).collect();
    let folded: String = lowered.nfkc().filter(|c| !is_invisible(*c)).collect();
    Cow::Owned(folded.trim().to_owned())
}

/// The UTS #39 skeleton of an already normalized name: two names with the same skeleton look
/// alike to a human reader.
pub fn skeleton(normalized: &str) -> String {
    let skeleton = uts39_skeleton(normalized);
    if normalized.is_ascii() {
        // The confusables table maps some ASCII sequences too ("rn" → "m"); keep those.
        return skeleton;
    }
    skeleton.chars().flat_map(char::to_lowercase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_width_ligatures_and_invisibles() {
        assert_eq!(normalize("read_file"), "read_file");
        assert!(matches!(normalize("read_file"), Cow::Borrowed(_)));
        assert_eq!(normalize("READ_FILE"), "read_file");
        assert_eq!(normalize("ｄｅｌｅｔｅ＿ｆｉｌｅ"), "delete_file");
        assert_eq!(normalize("\u{FB01}le_read"), "file_read");
        assert_eq!(normalize("tool\u{00B2}"), "tool2");
        assert_eq!(normalize("delete\u{200B}file"), "deletefile");
        assert_eq!(normalize("\u{FEFF}safe_tool"), "safe_tool");
        assert_eq!(normalize("\u{2003}read_file\u{2003}"), "read_file");
        assert_eq!(normalize("  read_file\t"), "read_file");
        assert_eq!(normalize("a\u{202E}b"), "ab");
    }

    #[test]
    fn cyrillic_lookalikes_survive_nfkc_but_share_a_skeleton() {
        let cyrillic = normalize("d\u{0435}l\u{0435}t\u{0435}_fil\u{0435}");
        assert_ne!(cyrillic, "delete_file");
        assert_eq!(skeleton(&cyrillic), skeleton("delete_file"));
        assert_ne!(skeleton("read_file"), skeleton("delete_file"));
    }

    proptest::proptest! {
        #[test]
        fn normalization_is_idempotent(s in "\\PC{0,24}") {
            let once = normalize(&s).into_owned();
            let twice = normalize(&once).into_owned();
            proptest::prop_assert_eq!(once, twice);
        }
    }
}
