//! Opaque page tokens. A token carries the last key of the page it follows and the listing it
//! belongs to, so that it cannot be replayed against another listing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use xinqiao_domain::{Error, Result};

pub fn encode(listing: &str, last_key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{listing}\n{last_key}"))
}

/// The key to continue after, or `None` for the first page.
pub fn decode(listing: &str, token: &str) -> Result<Option<String>> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Error::invalid("page_token", "is not a token this listing returned");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    match text.split_once('\n') {
        // No key the hub writes holds a control character; a forged one with NUL would reach
        // PostgreSQL, which cannot compare it.
        Some((l, key)) if l == listing && !key.chars().any(char::is_control) => Ok(Some(key.to_string())),
        _ => Err(invalid()),
    }
}

/// The token for the next page: present only when the page came back full. `page` may hold one
/// item more than `limit` (fetched to learn whether more follow); it is cut to `limit`.
pub fn next_token<T>(listing: &str, page: &mut Vec<T>, limit: u32, key: impl Fn(&T) -> &str) -> String {
    if page.len() > limit as usize {
        page.truncate(limit as usize);
        page.last().map(|last| encode(listing, key(last))).unwrap_or_default()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_bound_to_their_listing() {
        let t = encode("entries", "102/000003");
        assert_eq!(decode("entries", &t), Ok(Some("102/000003".into())));
        assert!(decode("departments", &t).is_err());
        assert!(decode("entries", "not base64!").is_err());
        assert_eq!(decode("entries", ""), Ok(None));
    }

    #[test]
    fn forged_keys_with_control_characters_are_refused() {
        assert!(decode("entries", &encode("entries", "102/\u{0}")).is_err());
        assert!(decode("entries", &encode("entries", "a\nb")).is_err());
        assert_eq!(
            decode("entries", &encode("entries", "' OR 1=1 --")),
            Ok(Some("' OR 1=1 --".into()))
        );
    }

    #[test]
    fn next_token_only_when_more_follow() {
        let mut page = vec!["a", "b", "c"];
        let t = next_token("x", &mut page, 2, |s| s);
        assert_eq!(page, ["a", "b"]);
        assert_eq!(decode("x", &t), Ok(Some("b".into())));
        let mut page = vec!["a", "b"];
        assert_eq!(next_token("x", &mut page, 2, |s| s), "");
    }
}
