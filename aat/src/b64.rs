//! Strict unpadded base64url (RFC 4648 §5), as JOSE requires (RFC 7515 §2).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Encodes bytes as unpadded base64url.
pub(crate) fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Appends the unpadded base64url form of `bytes` to `out`.
pub(crate) fn encode_into(bytes: impl AsRef<[u8]>, out: &mut String) {
    URL_SAFE_NO_PAD.encode_string(bytes, out);
}

/// Decodes unpadded base64url, rejecting padding and non-canonical trailing bits.
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Decodes into a fixed-size array; `None` when the text is not exactly `N` bytes of base64url.
pub(crate) fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    // Unpadded base64 of N bytes is exactly ceil(4N/3) characters.
    if text.len() != (4 * N).div_ceil(3) {
        return None;
    }
    let mut out = [0u8; N];
    match URL_SAFE_NO_PAD.decode_slice(text, &mut out) {
        Ok(n) if n == N => Some(out),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_padding_and_standard_alphabet() {
        assert_eq!(decode("AQ"), Some(vec![1]));
        assert_eq!(decode("AQ=="), None);
        assert_eq!(decode("+/8"), None);
        assert_eq!(decode("-_8"), Some(vec![0xfb, 0xff]));
    }

    #[test]
    fn rejects_non_canonical_trailing_bits() {
        // "AR" decodes to 0x01 with non-zero trailing bits; only "AQ" is canonical.
        assert_eq!(decode("AR"), None);
    }

    #[test]
    fn fixed_size_decoding_checks_length() {
        let text = encode([7u8; 32]);
        assert_eq!(decode_array::<32>(&text), Some([7u8; 32]));
        assert_eq!(decode_array::<31>(&text), None);
        assert_eq!(decode_array::<32>(&text[1..]), None);
    }
}
