//! Ed25519 verification with `verify_strict`'s acceptance rule and less work per signature.
//!
//! A signature `(R, s)` on message `M` under key `A` is accepted exactly when
//! `ed25519_dalek::VerifyingKey::verify_strict` accepts it:
//!
//! * `s` is a canonical scalar (below the group order ℓ);
//! * `R` decodes to a curve point and is not of small order, and `A` is not of small order;
//! * `[s]B − [k]A`, with `k = SHA-512(R ‖ A ‖ M) mod ℓ`, encodes to exactly the bytes of `R`.
//!
//! `verify_strict` checks the last point by compressing `[s]B − [k]A`, a field inversion. Here
//! the comparison is made in projective coordinates against the `R` already decoded for the
//! small-order check, which needs no inversion; what the byte comparison adds — that `R` is
//! the canonical encoding of its point — is checked on the bytes (`y < p`). The encoding with
//! `x = 0` and the sign bit set is not canonical either, but both points with `x = 0` are of
//! small order and refused before. `A` is checked once, when the key is parsed, not per
//! signature.
//!
//! A key that verifies many signatures (an agent's key checking a proof on every call, an
//! issuer's key) gets precomputed multiples of `B` and `−A` after [`TABLES_AFTER`] uses: about
//! 20 kB per key, built in roughly half a verification's time, which make each later
//! verification about 5 % cheaper. Verification is variable-time, as in `verify_strict`: every
//! input is public.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint, VartimeEdwardsPrecomputation};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::VartimePrecomputedMultiscalarMul;
use sha2::{Digest, Sha512};

use super::SignatureError;

/// Verifications a key makes before its precomputed tables are built.
pub(super) const TABLES_AFTER: u32 = 4;

/// An Ed25519 public key ready to verify: the decoded `−A`, and tables once it is reused.
pub(super) struct Ed25519Key {
    key: ed25519_dalek::VerifyingKey,
    minus_a: EdwardsPoint,
    uses: AtomicU32,
    /// Tables for the static points `[B, −A]`.
    tables: OnceLock<VartimeEdwardsPrecomputation>,
}

impl Ed25519Key {
    /// The caller has made sure the key is not of small order (`VerifyingKey::is_weak`).
    pub(super) fn new(key: ed25519_dalek::VerifyingKey) -> Self {
        Self {
            minus_a: -key.to_edwards(),
            key,
            uses: AtomicU32::new(0),
            tables: OnceLock::new(),
        }
    }

    pub(super) fn verifying_key(&self) -> &ed25519_dalek::VerifyingKey {
        &self.key
    }

    /// Verifies a 64-byte signature `R ‖ s` over `message` (see the module documentation).
    pub(super) fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        let (r_bytes, s_bytes) = split_signature(signature).ok_or(SignatureError::Invalid)?;
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(*s_bytes)).ok_or(SignatureError::Invalid)?;
        if !is_canonical_y(r_bytes) {
            return Err(SignatureError::Invalid);
        }
        let r = CompressedEdwardsY(*r_bytes)
            .decompress()
            .ok_or(SignatureError::Invalid)?;
        if r.is_small_order() {
            return Err(SignatureError::Invalid);
        }
        let k = Scalar::from_hash(
            Sha512::new()
                .chain_update(r_bytes)
                .chain_update(self.key.as_bytes())
                .chain_update(message),
        );
        let expected = match self.tables() {
            Some(tables) => tables.vartime_multiscalar_mul([s, k]),
            None => EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &self.minus_a, &s),
        };
        // Projective comparison: no inversion.
        if expected == r {
            Ok(())
        } else {
            Err(SignatureError::Invalid)
        }
    }

    /// The precomputed tables, built on the [`TABLES_AFTER`]th use (a use: a signature well
    /// formed enough to reach the multiplication).
    fn tables(&self) -> Option<&VartimeEdwardsPrecomputation> {
        if let Some(tables) = self.tables.get() {
            return Some(tables);
        }
        if self.uses.fetch_add(1, Ordering::Relaxed) + 1 < TABLES_AFTER {
            return None;
        }
        Some(
            self.tables
                .get_or_init(|| VartimeEdwardsPrecomputation::new([ED25519_BASEPOINT_POINT, self.minus_a])),
        )
    }

    #[cfg(test)]
    fn has_tables(&self) -> bool {
        self.tables.get().is_some()
    }
}

/// `R` and `s` of a signature that is exactly 64 bytes long.
fn split_signature(signature: &[u8]) -> Option<(&[u8; 32], &[u8; 32])> {
    let (r, s) = signature.split_first_chunk::<32>()?;
    Some((r, s.try_into().ok()?))
}

/// Whether the 255-bit `y` of an encoded point (the sign bit masked) is below
/// p = 2^255 − 19, i.e. the encoding is the one a point compresses to.
fn is_canonical_y(encoded: &[u8; 32]) -> bool {
    // p in little-endian bytes: 0xed, then thirty 0xff, then 0x7f.
    let top_is_max = encoded[31] & 0x7f == 0x7f && encoded[1..31].iter().all(|&b| b == 0xff);
    !(top_is_max && encoded[0] >= 0xed)
}

#[cfg(test)]
mod tests {
    //! Differential tests: every case is also given to `verify_strict`, and the two must agree.

    use curve25519_dalek::traits::Identity;
    use ed25519_dalek::{Signer, SigningKey};
    use proptest::prelude::*;

    use super::*;

    /// Group order ℓ, little-endian.
    const ORDER: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    fn strict(key: &ed25519_dalek::VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
        ed25519_dalek::Signature::from_slice(signature).is_ok_and(|sig| key.verify_strict(message, &sig).is_ok())
    }

    /// Checks `signature` with a fresh key (no tables), a key with tables, and `verify_strict`;
    /// returns the common verdict.
    fn verdict(key: &ed25519_dalek::VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
        let expected = strict(key, message, signature);
        let fresh = Ed25519Key::new(*key);
        assert_eq!(fresh.verify(message, signature).is_ok(), expected, "without tables");
        let reused = reused_key(key);
        assert_eq!(reused.verify(message, signature).is_ok(), expected, "with tables");
        expected
    }

    fn reused_key(key: &ed25519_dalek::VerifyingKey) -> Ed25519Key {
        let reused = Ed25519Key::new(*key);
        // R = B, s = 0: well formed, so each attempt gets as far as the multiplication.
        let mut attempt = [0; 64];
        attempt[..32].copy_from_slice(curve25519_dalek::constants::ED25519_BASEPOINT_COMPRESSED.as_bytes());
        for _ in 0..TABLES_AFTER {
            assert!(reused.verify(b"", &attempt).is_err());
        }
        assert!(reused.has_tables());
        reused
    }

    fn add_le(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(a[i]) + u16::from(b[i]) + carry;
            out[i] = sum as u8;
            carry = sum >> 8;
        }
        out
    }

    #[test]
    fn rfc_8032_test_vectors_verify() {
        // RFC 8032 §7.1, TEST 1, 2 and 3: (public key, message, signature), hex.
        let vectors = [
            (
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
                "",
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
            ),
            (
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
                "72",
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
            ),
            (
                "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
                "af82",
                "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
            ),
        ];
        for (public, message, signature) in vectors {
            let public: [u8; 32] = hex::decode(public).unwrap().try_into().unwrap();
            let key = ed25519_dalek::VerifyingKey::from_bytes(&public).unwrap();
            let message = hex::decode(message).unwrap();
            let signature = hex::decode(signature).unwrap();
            assert!(verdict(&key, &message, &signature));
            let mut other = message.clone();
            other.push(0);
            assert!(!verdict(&key, &other, &signature));
        }
    }

    #[test]
    fn malformed_and_non_canonical_signatures_are_refused() {
        let signer = SigningKey::from_bytes(&[3; 32]);
        let key = signer.verifying_key();
        let message = b"proof signing input";
        let good = signer.sign(message).to_bytes();
        assert!(verdict(&key, message, &good));

        // Wrong lengths.
        assert!(Ed25519Key::new(key).verify(message, &good[..63]).is_err());
        assert!(
            Ed25519Key::new(key)
                .verify(message, &[good.as_slice(), &[0]].concat())
                .is_err()
        );

        // s + ℓ: the same point equation, but a non-canonical scalar.
        let mut malleated = good;
        let s: [u8; 32] = good[32..].try_into().unwrap();
        malleated[32..].copy_from_slice(&add_le(&s, &ORDER));
        assert!(!verdict(&key, message, &malleated));

        // R of small order: the identity, and the point of order 2 (y = −1).
        let mut identity_r = good;
        identity_r[..32].copy_from_slice(&CompressedEdwardsY::identity().0);
        assert!(!verdict(&key, message, &identity_r));
        let mut minus_one = [0xff; 32];
        minus_one[0] = 0xec;
        minus_one[31] = 0x7f;
        let mut order_two = good;
        order_two[..32].copy_from_slice(&minus_one);
        assert!(!verdict(&key, message, &order_two));

        // R not on the curve.
        let off_curve = (0u8..=255)
            .map(|b| {
                let mut y = [0u8; 32];
                y[0] = b;
                y
            })
            .find(|y| CompressedEdwardsY(*y).decompress().is_none())
            .unwrap();
        let mut bad_r = good;
        bad_r[..32].copy_from_slice(&off_curve);
        assert!(!verdict(&key, message, &bad_r));

        // R encoded with y + p: decodes to a valid point that is not of small order, yet is
        // not the encoding that point compresses to.
        let non_canonical = (2u8..19)
            .map(|y| {
                let mut encoded = [0xff; 32];
                encoded[0] = 0xed + y;
                encoded[31] = 0x7f;
                encoded
            })
            .find(|e| CompressedEdwardsY(*e).decompress().is_some_and(|p| !p.is_small_order()))
            .expect("some y below 19 is on the curve");
        assert!(!is_canonical_y(&non_canonical));
        let mut bad_r = good;
        bad_r[..32].copy_from_slice(&non_canonical);
        assert!(!verdict(&key, message, &bad_r));
    }

    #[test]
    fn a_signature_whose_equation_holds_for_a_small_order_r_is_refused() {
        // A key with a known discrete log a; R = identity, s = k·a: then [s]B − [k]A is the
        // identity, so the equation holds and only the small-order check refuses it.
        let a = Scalar::from_bytes_mod_order([5; 32]);
        let key = ed25519_dalek::VerifyingKey::from_bytes(&(ED25519_BASEPOINT_POINT * a).compress().0).unwrap();
        let message = b"forged";
        let r = CompressedEdwardsY::identity();
        let k = Scalar::from_hash(
            Sha512::new()
                .chain_update(r.as_bytes())
                .chain_update(key.as_bytes())
                .chain_update(message),
        );
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(r.as_bytes());
        signature[32..].copy_from_slice((k * a).as_bytes());
        let parsed = ed25519_dalek::Signature::from_bytes(&signature);
        assert!(
            ed25519_dalek::Verifier::verify(&key, message, &parsed).is_ok(),
            "the plain check accepts it"
        );
        assert!(!verdict(&key, message, &signature));
    }

    #[test]
    fn the_canonical_encoding_bound_is_p() {
        let mut p_minus_one = [0xff; 32];
        p_minus_one[0] = 0xec;
        p_minus_one[31] = 0x7f;
        assert!(is_canonical_y(&p_minus_one));
        let mut p = p_minus_one;
        p[0] = 0xed;
        assert!(!is_canonical_y(&p));
        // The sign bit is not part of y.
        let mut signed = p_minus_one;
        signed[31] = 0xff;
        assert!(is_canonical_y(&signed));
        let mut signed_p = p;
        signed_p[31] = 0xff;
        assert!(!is_canonical_y(&signed_p));
        assert!(is_canonical_y(&[0; 32]));
    }

    #[test]
    fn tables_are_built_on_the_threshold_use_only() {
        let signer = SigningKey::from_bytes(&[9; 32]);
        let key = Ed25519Key::new(signer.verifying_key());
        let signature = signer.sign(b"m").to_bytes();
        for use_ in 1..=TABLES_AFTER {
            assert!(!key.has_tables(), "before use {use_}");
            key.verify(b"m", &signature).unwrap();
        }
        assert!(key.has_tables());
        key.verify(b"m", &signature).unwrap();
        assert!(key.verify(b"n", &signature).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Valid signatures, and the same with one bit of the signature or message flipped.
        #[test]
        fn agrees_with_verify_strict(
            seed in any::<[u8; 32]>(),
            message in proptest::collection::vec(any::<u8>(), 0..200),
            flip in 0usize..(64 * 8 + 1),
            flip_message in any::<bool>(),
        ) {
            let signer = SigningKey::from_bytes(&seed);
            let key = signer.verifying_key();
            let mut signature = signer.sign(&message).to_bytes();
            let mut message = message;
            prop_assert!(verdict(&key, &message, &signature));
            if flip < 64 * 8 {
                if flip_message && !message.is_empty() {
                    let at = flip / 8 % message.len();
                    message[at] ^= 1 << (flip % 8);
                } else {
                    signature[flip / 8] ^= 1 << (flip % 8);
                }
                prop_assert!(!verdict(&key, &message, &signature));
            }
        }

        /// Arbitrary bytes as a signature: almost always refused, and always as `verify_strict` does.
        #[test]
        fn arbitrary_signatures_agree(seed in any::<[u8; 32]>(), signature in any::<[u8; 64]>()) {
            let key = SigningKey::from_bytes(&seed).verifying_key();
            verdict(&key, b"message", &signature);
        }
    }
}
