//! Reading request headers that must appear at most once.

use axum::http::{HeaderMap, HeaderName};

/// The one value of `name` as text: `Ok(None)` when absent, `Err` when repeated or not text.
pub(super) fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, String> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("sent more than once".into());
    }
    first.to_str().map(Some).map_err(|_| "not visible ASCII".into())
}
