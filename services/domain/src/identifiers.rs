//! National identifier codes and their check characters.

/// The 31 characters of a 统一社会信用代码, in value order (I, O, Z, S, V never occur).
const USCC_ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const USCC_WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];

fn uscc_value(c: u8) -> Option<u32> {
    USCC_ALPHABET.iter().position(|&a| a == c).map(|p| p as u32)
}

/// The check character (GB 32100) for the first 17 characters of a 统一社会信用代码,
/// or `None` when one of them is outside the alphabet.
pub fn uscc_check_char(first17: &str) -> Option<char> {
    let bytes = first17.as_bytes();
    if bytes.len() != 17 {
        return None;
    }
    let mut sum = 0;
    for (c, w) in bytes.iter().zip(USCC_WEIGHTS) {
        sum += uscc_value(*c)? * w;
    }
    let check = (31 - sum % 31) % 31;
    Some(USCC_ALPHABET[check as usize] as char)
}

/// Validates a 统一社会信用代码 (GB 32100): 18 characters of the code alphabet, positions 3–8 an
/// administrative division code, and a correct check character.
pub fn validate_uscc(code: &str) -> Result<(), String> {
    if code.len() != 18 || !code.is_ascii() {
        return Err(format!("must be 18 characters, got {}", code.chars().count()));
    }
    if let Some(bad) = code.chars().find(|c| !USCC_ALPHABET.contains(&(*c as u8))) {
        return Err(format!(
            "contains '{bad}', which is not in the code alphabet 0-9 A-H J-N P-R T U W-Y"
        ));
    }
    if !code[2..8].bytes().all(|b| b.is_ascii_digit()) {
        return Err("positions 3-8 must be the 6-digit administrative division code".into());
    }
    let expected = uscc_check_char(&code[..17]).ok_or("contains characters outside the code alphabet")?;
    let actual = code.as_bytes()[17] as char;
    if actual != expected {
        return Err(format!(
            "check character is '{actual}', expected '{expected}' (GB 32100)"
        ));
    }
    Ok(())
}

/// Validates the shape of a 行政区划代码 (GB/T 2260): six digits, a province part from 11 to 82,
/// and a city part that is not set without its province.
pub fn validate_division_code(code: &str) -> Result<(), String> {
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err("must be 6 digits".into());
    }
    let province: u32 = code[..2].parse().map_err(|_| "must be 6 digits".to_string())?;
    if !(11..=82).contains(&province) {
        return Err(format!(
            "province part {province:02} is not a GB/T 2260 province code (11-82)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_uscc_codes_pass() {
        assert_eq!(validate_uscc("11100000000013127D"), Ok(()));
        assert_eq!(validate_uscc("91350100M000100Y43"), Ok(()));
    }

    #[test]
    fn check_character_is_computed_per_gb32100() {
        assert_eq!(uscc_check_char("11100000000013127"), Some('D'));
        assert_eq!(uscc_check_char("91350100M000100Y4"), Some('3'));
        // A remainder of 0 gives 31, which becomes '0'.
        let all_zero = "00000000000000000";
        assert_eq!(uscc_check_char(all_zero), Some('0'));
    }

    #[test]
    fn wrong_check_character_is_named() {
        let err = validate_uscc("11100000000013127E").unwrap_err();
        assert!(err.contains("expected 'D'"), "{err}");
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert!(validate_uscc("").is_err());
        assert!(validate_uscc("11100000000013127").is_err());
        assert!(validate_uscc("11100000000013127DD").is_err());
        assert!(validate_uscc("1110000000001312ID").unwrap_err().contains("'I'"));
        assert!(validate_uscc("11100000000013127d").is_err());
        assert!(validate_uscc("11A00000000013127D").unwrap_err().contains("division"));
        assert!(validate_uscc("１１100000000013127").is_err());
        assert!(validate_uscc("'; DROP TABLE x;--").is_err());
    }

    #[test]
    fn division_codes() {
        assert_eq!(validate_division_code("110000"), Ok(()));
        assert_eq!(validate_division_code("440305"), Ok(()));
        assert!(validate_division_code("000000").is_err());
        assert!(validate_division_code("99000").is_err());
        assert!(validate_division_code("11000a").is_err());
        assert!(validate_division_code("990000").is_err());
    }
}
