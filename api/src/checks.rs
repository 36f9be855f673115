//! Checks of request values that both services apply the same way: free text and tool names.
//! Errors are messages for the client, naming the member at fault.

use std::collections::HashSet;

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
    fn text_is_checked() {
        assert!(check_text("name", "code reviewer", 128).is_ok());
        assert_eq!(check_text("name", "  ", 128), Err("name must not be empty".into()));
        assert!(check_text("name", "a\u{7}b", 128).is_err());
        assert!(check_text("name", &"x".repeat(129), 128).is_err());
    }
}
