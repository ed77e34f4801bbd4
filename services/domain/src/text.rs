//! Rules for free text coming from callers: bounded length and no hidden control characters.

/// Checks a text field: at most `max_chars` characters (not bytes: Chinese text is 3 bytes a
/// character in UTF-8) and no control characters except, where `multiline`, newline and tab.
/// NUL in particular is refused: PostgreSQL cannot store it in a text column.
pub fn check(value: &str, required: bool, max_chars: usize, multiline: bool) -> Result<(), String> {
    if required && value.trim().is_empty() {
        return Err("is required".into());
    }
    let count = value.chars().count();
    if count > max_chars {
        return Err(format!("is {count} characters long; at most {max_chars} are allowed"));
    }
    if let Some(c) = value
        .chars()
        .find(|&c| c.is_control() && !(multiline && (c == '\n' || c == '\t' || c == '\r')))
    {
        return Err(format!("contains the control character U+{:04X}", c as u32));
    }
    Ok(())
}

/// At most `max_chars` characters of `value`, with "…" when cut: for echoing caller input in
/// messages without echoing all of it.
pub fn shorten(value: &str, max_chars: usize) -> String {
    let mut chars = value.chars();
    let head: String = chars.by_ref().take(max_chars).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    use super::{check, shorten};

    #[test]
    fn shortens_by_characters() {
        assert_eq!(shorten("营业执照办理", 4), "营业执照…");
        assert_eq!(shorten("abc", 4), "abc");
    }

    #[test]
    fn counts_characters_not_bytes() {
        assert!(check("营业执照", true, 4, false).is_ok());
        assert!(check("营业执照办理", true, 4, false).is_err());
    }

    #[test]
    fn required_means_not_blank() {
        assert_eq!(check("  ", true, 10, false), Err("is required".to_string()));
        assert!(check("", false, 10, false).is_ok());
    }

    #[test]
    fn refuses_control_characters() {
        assert!(check("a\0b", false, 10, true).unwrap_err().contains("U+0000"));
        assert!(check("a\nb", false, 10, false).is_err());
        assert!(check("a\nb", false, 10, true).is_ok());
    }

    #[test]
    fn quotes_and_wildcards_are_ordinary_text() {
        assert!(check("O'Brien \"%_\\", true, 50, false).is_ok());
    }
}
