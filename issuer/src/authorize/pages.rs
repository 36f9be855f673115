//! The pages people see: sign-in, consent and errors. Plain HTML with every value escaped, no
//! scripts, no external assets (one inline style sheet, allowed by its hash), and headers that
//! keep them out of frames, caches and referrers.

use std::sync::OnceLock;

use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:38rem;margin:2rem auto;padding:0 1rem;\
color:#1b1b1b;line-height:1.45}h1{font-size:1.35rem}h2{font-size:1.05rem;margin-top:1.4rem}code{background:#f2f2f2;padding:0 .25rem;\
word-break:break-all}form{margin:1rem 0}button{font-size:1rem;padding:.45rem 1rem;margin:.2rem .4rem .2rem 0}\
input[type=password]{font-size:1rem;padding:.35rem;width:100%;box-sizing:border-box}.error{color:#a00000}\
.muted{color:#555}ul{padding-left:1.3rem}";

/// `'sha256-…'` of [`STYLE`], for the `style-src` directive.
fn style_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| format!("'sha256-{}'", STANDARD.encode(Sha256::digest(STYLE.as_bytes()))))
}

/// `value` safe to place in HTML text and in double- or single-quoted attribute values.
pub(crate) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The headers of every response of the flow: no caching, no referrer, no framing, no
/// sniffing, and the content security policy. `form_targets` are the origins a form on the
/// page may submit to, or be redirected to after submitting, besides the authority itself.
pub(crate) fn security_headers(form_targets: &[String]) -> HeaderMap {
    let mut form_action = String::from("'self'");
    for origin in form_targets {
        // Origins are ASCII serializations of parsed URLs; anything else is left out.
        if origin
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',' && b != b'\'')
        {
            form_action.push(' ');
            form_action.push_str(origin);
        }
    }
    let csp = format!(
        "default-src 'none'; style-src {}; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'",
        style_hash()
    );
    let mut headers = HeaderMap::new();
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::CONTENT_SECURITY_POLICY, &csp);
    set(header::CACHE_CONTROL, "no-store");
    set(header::PRAGMA, "no-cache");
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    headers
}

/// An HTML page: `title` (escaped here) and `body` (HTML whose values the caller escaped).
pub(crate) fn page(status: StatusCode, title: &str, body: &str, form_targets: &[String]) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\"><title>{title}</title><style>{STYLE}</style></head>\
         <body><h1>{title}</h1>\n{body}\n</body></html>\n",
        title = escape(title),
    );
    let mut headers = security_headers(form_targets);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    (status, headers, html).into_response()
}

/// An error page: the request cannot go on, and nothing is sent back to the application.
pub(crate) fn error_page(status: StatusCode, message: &str) -> Response {
    page(
        status,
        "Authorization failed",
        &format!(
            "<p class=\"error\">{}</p><p class=\"muted\">Return to the application and start again.</p>",
            escape(message)
        ),
        &[],
    )
}

/// A hidden form field.
pub(crate) fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        escape(name),
        escape(value)
    )
}

/// A list of values as `<ul>` (or `none`).
pub(crate) fn list(values: &[String]) -> String {
    if values.is_empty() {
        return "<p class=\"muted\">none</p>".into();
    }
    let items: String = values
        .iter()
        .map(|v| format!("<li><code>{}</code></li>", escape(v)))
        .collect();
    format!("<ul>{items}</ul>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        assert_eq!(
            escape("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
        assert_eq!(
            hidden("a", "\"><b>"),
            "<input type=\"hidden\" name=\"a\" value=\"&quot;&gt;&lt;b&gt;\">"
        );
    }

    #[test]
    fn the_policy_allows_only_the_style_and_the_form_targets() {
        let headers = security_headers(&["https://idp.example".into(), "x; script-src *".into()]);
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"), "{csp}");
        assert!(
            csp.contains("form-action 'self' https://idp.example; frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("script-src"), "{csp}");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
    }
}
