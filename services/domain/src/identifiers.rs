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

/// Why an identifier was refused: its shape, or only its check character.
///
/// Some real codes in the wild carry a wrong check character, so a warn-only validation mode
/// accepts [`IdentifierProblem::CheckCharacter`] and still refuses [`IdentifierProblem::Shape`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentifierProblem {
    /// Wrong length, characters, division code or date: not this kind of identifier at all.
    Shape(String),
    /// Well-formed, but the check character does not match the other characters.
    CheckCharacter(String),
}

impl IdentifierProblem {
    /// The problem in plain words, whichever kind it is.
    pub fn message(&self) -> &str {
        match self {
            IdentifierProblem::Shape(m) | IdentifierProblem::CheckCharacter(m) => m,
        }
    }

    pub fn into_message(self) -> String {
        match self {
            IdentifierProblem::Shape(m) | IdentifierProblem::CheckCharacter(m) => m,
        }
    }
}

impl std::fmt::Display for IdentifierProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

fn shape(message: impl Into<String>) -> IdentifierProblem {
    IdentifierProblem::Shape(message.into())
}

/// Validates a 统一社会信用代码 (GB 32100): 18 characters of the code alphabet, positions 3–8 an
/// administrative division code, and a correct check character.
pub fn validate_uscc(code: &str) -> Result<(), String> {
    check_uscc(code).map_err(IdentifierProblem::into_message)
}

/// Checks a 统一社会信用代码 (GB 32100), telling a wrong check character apart from a bad shape.
pub fn check_uscc(code: &str) -> Result<(), IdentifierProblem> {
    let count = code.chars().count();
    if count != 18 {
        return Err(shape(format!("must be 18 characters, got {count}")));
    }
    // Test ASCII first: `c as u8` would fold a non-ASCII character onto an alphabet byte.
    if let Some(bad) = code.chars().find(|c| !c.is_ascii() || uscc_value(*c as u8).is_none()) {
        let hint = if bad.is_ascii_lowercase() && uscc_value(bad.to_ascii_uppercase() as u8).is_some() {
            "; letters must be uppercase"
        } else {
            ""
        };
        return Err(shape(format!(
            "contains '{bad}', which is not in the code alphabet 0-9 A-H J-N P-R T U W-Y{hint}"
        )));
    }
    if !code[2..8].bytes().all(|b| b.is_ascii_digit()) {
        return Err(shape("positions 3-8 must be the 6-digit administrative division code"));
    }
    let expected =
        uscc_check_char(&code[..17]).ok_or_else(|| shape("contains characters outside the code alphabet"))?;
    let actual = code.as_bytes()[17] as char;
    if actual != expected {
        return Err(IdentifierProblem::CheckCharacter(format!(
            "check character is '{actual}', expected '{expected}' (GB 32100)"
        )));
    }
    Ok(())
}

const RESIDENT_ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// ISO 7064 MOD 11-2: the check character for each remainder 0..=10.
const RESIDENT_ID_CHECK: &[u8; 11] = b"10X98765432";

/// The check character (GB 11643, ISO 7064 MOD 11-2) for the first 17 digits of a 公民身份号码,
/// or `None` when they are not 17 ASCII digits.
pub fn resident_id_check_char(first17: &str) -> Option<char> {
    let bytes = first17.as_bytes();
    if bytes.len() != 17 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = bytes
        .iter()
        .zip(RESIDENT_ID_WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    Some(RESIDENT_ID_CHECK[(sum % 11) as usize] as char)
}

/// Validates a 公民身份号码 (GB 11643): see [`check_resident_id`].
pub fn validate_resident_id(id: &str) -> Result<(), String> {
    check_resident_id(id).map_err(IdentifierProblem::into_message)
}

/// Checks a 公民身份号码 (GB 11643): 18 characters; a division code whose province part is
/// 11–82; a birth date `YYYYMMDD` that exists in the calendar (year 1800 or later); a 3-digit
/// sequence; and the ISO 7064 MOD 11-2 check character, where `X` stands for 10.
///
/// Only an uppercase `X` is accepted, and only as the last character: GB 11643 prints it so, and
/// one spelling keeps identical numbers identical when records are matched across departments.
/// A birth date in the future is not refused: a pure rule has no clock, and the same record
/// should get the same answer on every day it is checked.
pub fn check_resident_id(id: &str) -> Result<(), IdentifierProblem> {
    let count = id.chars().count();
    if count != 18 {
        return Err(shape(format!("must be 18 characters, got {count}")));
    }
    for (i, c) in id.chars().enumerate().take(17) {
        if c.is_ascii_digit() {
            continue;
        }
        return Err(shape(if c == 'X' || c == 'x' {
            format!(
                "has '{c}' at position {}; 'X' is allowed only as the last (check) character",
                i + 1
            )
        } else {
            format!(
                "has '{c}' at position {}; the first 17 characters must be digits",
                i + 1
            )
        }));
    }
    // The first 17 characters are ASCII digits, so byte offsets below are character offsets.
    let last = id[17..].chars().next().unwrap_or_default();
    if last == 'x' {
        return Err(shape("check character must be an uppercase 'X', not 'x'"));
    }
    if !(last.is_ascii_digit() || last == 'X') {
        return Err(shape(format!("check character is '{last}'; it must be a digit or 'X'")));
    }
    validate_division_code(&id[..6]).map_err(|e| shape(format!("positions 1-6 (division code): {e}")))?;
    check_birth_date(&id[6..14]).map_err(|e| shape(format!("positions 7-14 (birth date {}): {e}", &id[6..14])))?;
    let expected = resident_id_check_char(&id[..17]).ok_or_else(|| shape("the first 17 characters must be digits"))?;
    if last != expected {
        return Err(IdentifierProblem::CheckCharacter(format!(
            "check character is '{last}', expected '{expected}' (GB 11643)"
        )));
    }
    Ok(())
}

/// Earliest birth year accepted: anything earlier is a data-entry error, not a living record.
const EARLIEST_BIRTH_YEAR: u32 = 1800;

/// Checks that eight ASCII digits `YYYYMMDD` name a day of the Gregorian calendar.
fn check_birth_date(date: &str) -> Result<(), String> {
    let number = |range: std::ops::Range<usize>| date[range].parse::<u32>().map_err(|_| "must be digits".to_string());
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    if year < EARLIEST_BIRTH_YEAR {
        return Err(format!("year {year} is before {EARLIEST_BIRTH_YEAR}"));
    }
    if !(1..=12).contains(&month) {
        return Err(format!("month {month:02} does not exist"));
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day == 0 || day > days {
        return Err(if month == 2 && day == 29 {
            format!("{year} is not a leap year, so 29 February does not exist")
        } else {
            format!("day {day:02} does not exist in month {month:02}")
        });
    }
    Ok(())
}

/// Validates a mainland mobile number (cn-mobile): exactly 11 digits, `1` then `3`–`9`.
///
/// No `+86`/`0086` prefix, spaces or dashes: records exchanged between departments carry one
/// spelling, so equal numbers compare equal and masking (3 + `****` + 4) always fits.
pub fn validate_mobile(number: &str) -> Result<(), String> {
    let count = number.chars().count();
    if number.starts_with('+') || (count == 13 && number.starts_with("86")) || number.starts_with("0086") {
        return Err("write the 11-digit number without the +86 country code".into());
    }
    if count != 11 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("must be 11 digits, got {count} characters"));
    }
    let bytes = number.as_bytes();
    if bytes[0] != b'1' || !(b'3'..=b'9').contains(&bytes[1]) {
        return Err(format!(
            "'{}' is not a mobile prefix; mobile numbers start with 13-19",
            &number[..2]
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
        let err = validate_uscc("11100000000013127E").expect_err("refused");
        assert!(err.contains("expected 'D'"), "{err}");
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert!(validate_uscc("").is_err());
        assert!(validate_uscc("11100000000013127").is_err());
        assert!(validate_uscc("11100000000013127DD").is_err());
        assert!(
            validate_uscc("1110000000001312ID")
                .expect_err("refused")
                .contains("'I'")
        );
        assert!(validate_uscc("11100000000013127d").is_err());
        assert!(
            validate_uscc("11A00000000013127D")
                .expect_err("refused")
                .contains("division")
        );
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

    #[test]
    fn uscc_check_character_problems_are_told_apart_from_shape() {
        assert_eq!(check_uscc("11100000000013127D"), Ok(()));
        assert!(matches!(
            check_uscc("11100000000013127E"),
            Err(IdentifierProblem::CheckCharacter(_))
        ));
        assert!(matches!(
            check_uscc("11100000000013127"),
            Err(IdentifierProblem::Shape(_))
        ));
        assert!(matches!(
            check_uscc("11A00000000013127D"),
            Err(IdentifierProblem::Shape(_))
        ));
        // The message is the same one `validate_uscc` gives existing callers.
        assert_eq!(
            validate_uscc("11100000000013127E"),
            Err("check character is 'E', expected 'D' (GB 32100)".to_string())
        );
        assert!(
            validate_uscc("11100000000013127d")
                .expect_err("refused")
                .contains("uppercase")
        );
        // 'Ł' is U+0141: truncated to a byte it would read as 'A'.
        assert!(check_uscc("1110000000001312ŁD").is_err());
    }

    /// A resident id with the given first 17 digits and its correct check character.
    fn resident_id(first17: &str) -> String {
        let check = resident_id_check_char(first17).expect("17 digits");
        format!("{first17}{check}")
    }

    #[test]
    fn resident_id_check_character_per_gb11643() {
        // Σ digit·weight for 11010519491231002 is 167; 167 mod 11 = 2, which maps to 'X'.
        assert_eq!(resident_id_check_char("11010519491231002"), Some('X'));
        assert_eq!(validate_resident_id("11010519491231002X"), Ok(()));
        // Σ for 44030419900101001 is 176; 176 mod 11 = 0, which maps to '1'.
        assert_eq!(resident_id_check_char("44030419900101001"), Some('1'));
        assert_eq!(validate_resident_id("440304199001010011"), Ok(()));
        assert_eq!(resident_id_check_char("1101051949123100"), None);
        assert_eq!(resident_id_check_char("1101051949123100A"), None);
    }

    #[test]
    fn wrong_resident_id_check_character_is_its_own_problem() {
        let problem = check_resident_id("110105194912310021").expect_err("refused");
        assert_eq!(
            problem,
            IdentifierProblem::CheckCharacter("check character is '1', expected 'X' (GB 11643)".into())
        );
    }

    #[test]
    fn lowercase_x_is_refused_with_a_hint() {
        let err = check_resident_id("11010519491231002x").expect_err("refused");
        assert!(matches!(err, IdentifierProblem::Shape(_)));
        assert!(err.message().contains("uppercase 'X'"), "{err}");
    }

    #[test]
    fn resident_id_shapes() {
        assert!(validate_resident_id("").expect_err("refused").contains("18 characters"));
        assert!(
            validate_resident_id("11010519491231002")
                .expect_err("refused")
                .contains("got 17")
        );
        assert!(
            validate_resident_id("11010519491231002XX")
                .expect_err("refused")
                .contains("got 19")
        );
        let middle = validate_resident_id("1101051949X231002X").expect_err("refused");
        assert!(middle.contains("only as the last"), "{middle}");
        assert!(
            validate_resident_id("11010519491231002A")
                .expect_err("refused")
                .contains("digit or 'X'")
        );
        assert!(
            validate_resident_id("99010519491231002X")
                .expect_err("refused")
                .contains("division code")
        );
        assert!(validate_resident_id("１1010519491231002X").is_err());
        assert!(
            validate_resident_id(&resident_id("11010517001231002"))
                .expect_err("refused")
                .contains("1800")
        );
    }

    #[test]
    fn birth_date_must_be_a_real_date() {
        for leap in ["20000229", "20040229", "19960229"] {
            let id = resident_id(&format!("110105{leap}001"));
            assert_eq!(validate_resident_id(&id), Ok(()), "{id}");
        }
        for not_leap in ["19000229", "20010229"] {
            let err = validate_resident_id(&resident_id(&format!("110105{not_leap}001"))).expect_err("refused");
            assert!(err.contains("not a leap year"), "{err}");
        }
        let month = validate_resident_id(&resident_id("11010519901301001")).expect_err("refused");
        assert!(month.contains("month 13"), "{month}");
        let day = validate_resident_id(&resident_id("11010519900100001")).expect_err("refused");
        assert!(day.contains("day 00"), "{day}");
        assert!(
            validate_resident_id(&resident_id("11010519900431001"))
                .expect_err("refused")
                .contains("day 31")
        );
        assert_eq!(validate_resident_id(&resident_id("11010519901231001")), Ok(()));
    }

    #[test]
    fn mobile_numbers() {
        assert_eq!(validate_mobile("13800138000"), Ok(()));
        assert_eq!(validate_mobile("19912345678"), Ok(()));
        assert!(validate_mobile("12800138000").expect_err("refused").contains("13-19"));
        assert!(validate_mobile("23800138000").is_err());
        assert!(
            validate_mobile("1380013800")
                .expect_err("refused")
                .contains("11 digits")
        );
        assert!(validate_mobile("138001380001").is_err());
        assert!(validate_mobile("138-0013-800").is_err());
        assert!(validate_mobile("+8613800138000").expect_err("refused").contains("+86"));
        assert!(validate_mobile("8613800138000").expect_err("refused").contains("+86"));
        assert!(validate_mobile("008613800138000").expect_err("refused").contains("+86"));
        assert!(validate_mobile("１3800138000").is_err());
        assert!(validate_mobile("").is_err());
    }
}
