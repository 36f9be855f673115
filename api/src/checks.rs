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
}
