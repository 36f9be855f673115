//! Checks of request values that both services apply the same way: free text, names and ids
//! shown to people, and tool names. Errors are messages for the client, naming the member at
//! fault.

use std::collections::HashSet;

use unicode_security::confusable_detection::skeleton as uts39_skeleton;

/// Checks free text from a request: not blank, at most `max` characters, no control
/// characters.
pub fn check_text(member: &str, value: &str, max: usize) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("{member} must not be empty"));
    }
    if value.chars().count() > max {
        return Err(format!("{member} is longer than {max} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{member} must not contain control characters"));
    }
    Ok(())
}

/// Checks a name or id that people read (an agent name, a user id, a label): free text (see
/// [`check_text`]) without invisible characters or bidirectional controls, which would let it
/// show as something it is not.
pub fn check_name(member: &str, value: &str, max: usize) -> Result<(), String> {
    check_text(member, value, max)?;
    match value.chars().find(|c| is_invisible(*c)) {
        Some(c) => Err(format!(
            "{member} must not contain invisible or bidirectional control characters (it contains U+{:04X})",
            u32::from(c)
        )),
        None => Ok(()),
    }
}

/// The revocation id of a delegable AAT's block, as biscuit tools write it (hex, in either
/// case), in the lowercase form revocation lists carry.
pub fn revocation_id(member: &str, value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.len() < 32 || value.len() > 256 || !value.len().is_multiple_of(2) {
        return Err(format!(
            "{member} must be a block's revocation id: an even number of hex digits, 32 to 256"
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{member} must be a block's revocation id, in hex"));
    }
    Ok(value.to_ascii_lowercase())
}

/// The Unicode TR39 skeleton of a name: two names with the same skeleton look alike to people
/// (`paypal` and `pаypal` with a Cyrillic `а`, `paypa1` and `paypal`).
pub fn skeleton(name: &str) -> String {
    uts39_skeleton(name).collect()
}

/// Why `value`, given as `member`, is refused: it looks like `existing`, which `whose` says
/// what it is (e.g. "the name of agent ag_…"). Non-ASCII characters of `value` are shown as
/// code points, so the difference is visible.
pub fn imitation(member: &str, value: &str, existing: &str, whose: &str) -> String {
    let shown: String = value
        .chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                format!("\\u{{{:04x}}}", u32::from(c))
            }
        })
        .collect();
    format!("{member} \"{shown}\" looks like \"{existing}\", {whose}; choose one that cannot be mistaken for it")
}

/// Control characters (Cc) and the format characters (Cf) that render as nothing: zero-width
/// spaces and joiners, the byte order mark, bidirectional controls, variation selectors, tags.
pub fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFFB}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

/// Checks a list of tool names: at most 256, each 1-128 characters of letters, digits and
/// `_ - . : / *`, none twice.
pub fn check_tool_names(member: &str, tools: &[String]) -> Result<(), String> {
    if tools.len() > 256 {
        return Err(format!("{member} lists more than 256 tools"));
    }
    let mut seen = HashSet::new();
    for tool in tools {
        let valid = !tool.is_empty()
            && tool.len() <= 128
            && tool
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/' | b'*'));
        if !valid {
            return Err(format!(
                "{member}: {tool:?} is not a tool name (1-128 characters: letters, digits, _ - . : / *)"
            ));
        }
        if !seen.insert(tool) {
            return Err(format!("{member}: {tool:?} is listed twice"));
        }
    }
    Ok(())
}

/// The most redirect URIs an agent may have registered.
pub const MAX_REDIRECT_URIS: usize = 10;
/// The longest redirect URI accepted, in bytes.
pub const MAX_REDIRECT_URI_LEN: usize = 512;

/// Whether `host` (as a parsed URL names it) is a loopback IP address.
fn loopback_ip(url: &reqwest::Url) -> bool {
    // The parser has normalised the host: IPv6 addresses in brackets.
    url.host_str().is_some_and(|host| {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    })
}

/// Checks one redirect URI an agent registers (RFC 6749 §3.1.2, RFC 8252 §7.3, OAuth 2.1):
/// absolute, `https` with a host, or `http` with a loopback host (`127.0.0.1`, `[::1]`,
/// `localhost`); no fragment, no user information, no spaces or control characters; at most
/// [`MAX_REDIRECT_URI_LEN`] bytes.
pub fn check_redirect_uri(member: &str, uri: &str) -> Result<(), String> {
    if uri.is_empty() || uri.len() > MAX_REDIRECT_URI_LEN {
        return Err(format!("{member}: must be 1-{MAX_REDIRECT_URI_LEN} bytes"));
    }
    if uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{member}: must not contain spaces or control characters"));
    }
    let url = reqwest::Url::parse(uri).map_err(|_| format!("{member}: {uri:?} is not an absolute URI"))?;
    if uri.contains('#') || url.fragment().is_some() {
        return Err(format!("{member}: {uri:?} must not have a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{member}: {uri:?} must not contain user information"));
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if loopback_ip(&url) || url.host_str() == Some("localhost") => Ok(()),
        "http" => Err(format!(
            "{member}: {uri:?}: http is allowed only for loopback hosts (127.0.0.1, [::1], localhost); use https"
        )),
        _ => Err(format!(
            "{member}: {uri:?} must be an https URI (or http on a loopback host)"
        )),
    }
}

/// Checks the redirect URIs to register for an agent: at most [`MAX_REDIRECT_URIS`], each as
/// [`check_redirect_uri`] says, none twice.
pub fn check_redirect_uris(member: &str, uris: &[String]) -> Result<(), String> {
    if uris.len() > MAX_REDIRECT_URIS {
        return Err(format!("{member} lists more than {MAX_REDIRECT_URIS} URIs"));
    }
    let mut seen = HashSet::new();
    for (i, uri) in uris.iter().enumerate() {
        check_redirect_uri(&format!("{member}[{i}]"), uri)?;
        if !seen.insert(uri) {
            return Err(format!("{member}: {uri:?} is listed twice"));
        }
    }
    Ok(())
}

/// Whether `presented` (a request's `redirect_uri`) is the registered URI `registered`: the
/// same string, or, for an `http` URI on a loopback IP address, the same but for the port
/// (RFC 8252 §7.3: a native app's loopback listener gets its port at run time).
pub fn redirect_uri_matches(registered: &str, presented: &str) -> bool {
    if registered == presented {
        return true;
    }
    if presented.len() > MAX_REDIRECT_URI_LEN || presented.contains('#') {
        return false;
    }
    let (Ok(mut registered), Ok(mut presented)) = (reqwest::Url::parse(registered), reqwest::Url::parse(presented))
    else {
        return false;
    };
    if registered.scheme() != "http" || presented.scheme() != "http" || !loopback_ip(&registered) {
        return false;
    }
    if !presented.username().is_empty() || presented.password().is_some() {
        return false;
    }
    if registered.set_port(None).is_err() || presented.set_port(None).is_err() {
        return false;
    }
    registered.as_str() == presented.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn tool_names_are_checked() {
        assert!(check_tool_names("t", &tools(&["read_file", "fs:read", "*"])).is_ok());
        assert!(check_tool_names("t", &tools(&["a", "a"])).is_err());
        assert!(check_tool_names("t", &tools(&["bad name"])).is_err());
        assert!(check_tool_names("t", &tools(&[""])).is_err());
    }

    #[test]
    fn names_refuse_invisible_and_bidi_characters() {
        assert!(check_name("name", "paypal-agent", 128).is_ok());
        assert!(check_name("name", "agent de réservation", 128).is_ok());
        for bad in [
            '\u{202E}', '\u{2066}', '\u{200E}', '\u{061C}', '\u{200B}', '\u{200D}', '\u{2060}', '\u{FEFF}',
        ] {
            let name = format!("pay{bad}pal");
            let error = check_name("name", &name, 128).unwrap_err();
            assert!(error.contains(&format!("U+{:04X}", u32::from(bad))), "{error}");
        }
    }

    #[test]
    fn revocation_ids_are_hex_and_come_out_lowercase() {
        let id = "AB".repeat(64);
        assert_eq!(revocation_id("delegation", &id).unwrap(), "ab".repeat(64));
        for bad in [
            "",
            "abc",
            &"zz".repeat(64),
            &"a".repeat(129),
            &"ab".repeat(129),
            "not hex at all, not hex at all!!",
        ] {
            let error = revocation_id("delegation", bad).unwrap_err();
            assert!(error.starts_with("delegation must be"), "{error}");
        }
    }

    #[test]
    fn look_alikes_share_a_skeleton() {
        assert_eq!(skeleton("p\u{430}ypal-agent"), skeleton("paypal-agent"));
        assert_eq!(skeleton("\u{FF50}aypal"), skeleton("paypal"));
        assert_ne!(skeleton("paypal-agent"), skeleton("payroll-agent"));
        let message = imitation("name", "p\u{430}ypal", "paypal", "the name of agent ag_1");
        assert_eq!(
            message,
            "name \"p\\u{0430}ypal\" looks like \"paypal\", the name of agent ag_1; choose one that cannot be mistaken for it"
        );
    }

    #[test]
    fn text_is_checked() {
        assert!(check_text("name", "code reviewer", 128).is_ok());
        assert_eq!(check_text("name", "  ", 128), Err("name must not be empty".into()));
        assert!(check_text("name", "a\u{7}b", 128).is_err());
        assert!(check_text("name", &"x".repeat(129), 128).is_err());
    }

    #[test]
    fn redirect_uris_are_checked() {
        for ok in [
            "https://app.example/cb",
            "https://app.example/cb?x=1",
            "http://127.0.0.1/cb",
            "http://127.0.0.1:8080/cb",
            "http://[::1]:9/cb",
            "http://localhost:3000/cb",
        ] {
            assert!(check_redirect_uri("u", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/cb",
            "app.example/cb",
            "http://app.example/cb",
            "https://app.example/cb#f",
            "https://u:p@app.example/cb",
            "https://app.example/c b",
            "javascript:alert(1)",
            "ftp://app.example/",
        ] {
            assert!(check_redirect_uri("u", bad).is_err(), "{bad}");
        }
        assert!(check_redirect_uri("u", &format!("https://a.example/{}", "x".repeat(600))).is_err());
        let many: Vec<String> = (0..11).map(|i| format!("https://a.example/{i}")).collect();
        assert!(check_redirect_uris("u", &many).is_err());
        assert!(check_redirect_uris("u", &many[..10]).is_ok());
        assert!(check_redirect_uris("u", &tools(&["https://a.example/", "https://a.example/"])).is_err());
    }

    #[test]
    fn redirect_uris_match_exactly_but_for_loopback_ports() {
        assert!(redirect_uri_matches("https://a.example/cb", "https://a.example/cb"));
        assert!(!redirect_uri_matches("https://a.example/cb", "https://a.example/cb/"));
        assert!(!redirect_uri_matches(
            "https://a.example/cb",
            "https://a.example:444/cb"
        ));
        assert!(!redirect_uri_matches("https://a.example/cb", "https://a.example/cb?x"));
        assert!(redirect_uri_matches("http://127.0.0.1/cb", "http://127.0.0.1:49152/cb"));
        assert!(redirect_uri_matches(
            "http://127.0.0.1:8000/cb",
            "http://127.0.0.1:49152/cb"
        ));
        assert!(redirect_uri_matches("http://[::1]/cb", "http://[::1]:5000/cb"));
        assert!(!redirect_uri_matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:5000/other"
        ));
        assert!(!redirect_uri_matches("http://127.0.0.1/cb", "http://127.0.0.2:5000/cb"));
        assert!(!redirect_uri_matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:5000/cb#x"
        ));
        assert!(!redirect_uri_matches("http://localhost/cb", "http://localhost:5000/cb"));
        assert!(!redirect_uri_matches(
            "http://127.0.0.1/cb",
            "https://127.0.0.1:5000/cb"
        ));
    }
}
