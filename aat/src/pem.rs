//! PEM armour (RFC 7468) for DER documents the toolkit's users publish, such as CRLs.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// `der` in PEM armour with the label `label` (`X509 CRL`, `CERTIFICATE`, …): base64 in lines
/// of 64 characters.
pub fn encode(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_64_between_the_labels() {
        let pem = encode("X509 CRL", &[0xAB; 100]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN X509 CRL-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last(), Some(&"-----END X509 CRL-----"));
        assert_eq!(
            STANDARD.decode(lines[1..lines.len() - 1].concat()).unwrap(),
            vec![0xAB; 100]
        );
    }
}
