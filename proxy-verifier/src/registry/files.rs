//! The link's local files (`jwks_file`, the signed list of `crl` mode, the CA bundle): read
//! whole, and refused beyond a size bound.

use std::io::Read as _;
use std::path::Path;

use super::error::LinkError;

/// Reads at most `limit` bytes of `path`; a longer file is refused.
pub(super) fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>, LinkError> {
    let file_error = |e: std::io::Error| LinkError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(file_error)?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(file_error)?;
    if bytes.len() > limit {
        return Err(LinkError::TooLarge {
            source_name: path.display().to_string(),
            limit,
        });
    }
    Ok(bytes)
}
