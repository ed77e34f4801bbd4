//! Xinqiao's identifier formats for the JSON Schema `format` keyword.
//!
//! One implementation, used by the offline `xinqiao validate` command and by the hub: both
//! compile schemas through [`crate::compile`], which registers these checks.

use jsonschema::ValidationOptions;
use xinqiao_domain::identifiers::{self, IdentifierProblem};

/// What a wrong check character means for a record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum FormatMode {
    /// A wrong check character is an error, like any other format failure.
    #[default]
    Strict,
    /// A wrong check character is accepted and reported as a warning on the record; a bad shape
    /// is still an error. Some real codes in the wild fail their check digit.
    Lenient,
}

/// A Chinese identifier that a schema can ask for with `"format"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentifierFormat {
    /// `uscc`: 统一社会信用代码 (GB 32100).
    Uscc,
    /// `cn-resident-id`: 公民身份号码 (GB 11643).
    ResidentId,
    /// `cn-division-code`: 行政区划代码 (GB/T 2260).
    DivisionCode,
    /// `cn-mobile`: 手机号码, 11 digits without a country code.
    Mobile,
}

impl IdentifierFormat {
    pub const ALL: [IdentifierFormat; 4] = [Self::Uscc, Self::ResidentId, Self::DivisionCode, Self::Mobile];

    /// The name a schema writes in `"format"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Uscc => "uscc",
            Self::ResidentId => "cn-resident-id",
            Self::DivisionCode => "cn-division-code",
            Self::Mobile => "cn-mobile",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The identifier's name in messages.
    pub fn label(self) -> &'static str {
        match self {
            Self::Uscc => "统一社会信用代码",
            Self::ResidentId => "公民身份号码",
            Self::DivisionCode => "行政区划代码",
            Self::Mobile => "手机号码",
        }
    }

    /// Checks a value. Only the identifiers with a check character can fail on it alone.
    pub fn check(self, value: &str) -> Result<(), IdentifierProblem> {
        match self {
            Self::Uscc => identifiers::check_uscc(value),
            Self::ResidentId => identifiers::check_resident_id(value),
            Self::DivisionCode => identifiers::validate_division_code(value).map_err(IdentifierProblem::Shape),
            Self::Mobile => identifiers::validate_mobile(value).map_err(IdentifierProblem::Shape),
        }
    }

    /// Why `value` fails, in plain words naming the identifier, or `None` when it passes.
    pub fn explain(self, value: &str) -> Option<String> {
        self.check(value)
            .err()
            .map(|problem| format!("{} {problem}", self.label()))
    }
}

/// Registers the identifier formats so that they pass what `mode` accepts, and turns `format`
/// assertions on for every draft (2020-12 treats `format` as an annotation by default).
pub(crate) fn register(options: ValidationOptions<'_>, mode: FormatMode) -> ValidationOptions<'_> {
    let mut options = options
        .should_validate_formats(true)
        .should_ignore_unknown_formats(false);
    for format in IdentifierFormat::ALL {
        options = options.with_format(format.name(), move |value: &str| match format.check(value) {
            Ok(()) => true,
            Err(IdentifierProblem::CheckCharacter(_)) => mode == FormatMode::Lenient,
            Err(IdentifierProblem::Shape(_)) => false,
        });
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for format in IdentifierFormat::ALL {
            assert_eq!(IdentifierFormat::from_name(format.name()), Some(format));
        }
        assert_eq!(IdentifierFormat::from_name("email"), None);
    }

    #[test]
    fn explanations_name_the_identifier_and_the_reason() {
        assert_eq!(IdentifierFormat::Uscc.explain("11100000000013127D"), None);
        assert_eq!(
            IdentifierFormat::Uscc.explain("11100000000013127E").as_deref(),
            Some("统一社会信用代码 check character is 'E', expected 'D' (GB 32100)")
        );
        assert_eq!(
            IdentifierFormat::DivisionCode.explain("990000").as_deref(),
            Some("行政区划代码 province part 99 is not a GB/T 2260 province code (11-82)")
        );
        assert!(
            IdentifierFormat::Mobile
                .explain("+8613800138000")
                .is_some_and(|m| m.contains("+86"))
        );
        assert!(matches!(
            IdentifierFormat::ResidentId.check("x"),
            Err(IdentifierProblem::Shape(_))
        ));
    }

    #[test]
    fn lenient_registration_passes_only_a_wrong_check_character() {
        let schema = serde_json::json!({"format": "uscc"});
        let strict = register(jsonschema::options(), FormatMode::Strict)
            .build(&schema)
            .expect("schema");
        let lenient = register(jsonschema::options(), FormatMode::Lenient)
            .build(&schema)
            .expect("schema");
        let bad_check = serde_json::json!("11100000000013127E");
        let bad_shape = serde_json::json!("11100000000013127");
        assert!(!strict.is_valid(&bad_check));
        assert!(lenient.is_valid(&bad_check));
        assert!(!strict.is_valid(&bad_shape));
        assert!(!lenient.is_valid(&bad_shape));
        // `format` constrains only strings.
        assert!(strict.is_valid(&serde_json::json!(42)));
    }
}
