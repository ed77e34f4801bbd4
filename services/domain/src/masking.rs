//! Masking (脱敏): per-grant, per-field rules applied in the hub before a record leaves it.
//! No national rule fixes the shapes; these are the common practice (../shared/DOMAIN.md).

use serde_json::Value;

/// How one field is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaskRule {
    /// 身份证号: the first 6 and last 4 characters stay (`330106********1234`).
    ResidentId,
    /// 手机号码: the first 3 and last 4 digits stay (`138****5678`).
    Mobile,
    /// 姓名: the family name stays (`张**`). Two-character compound surnames are not guessed.
    PersonalName,
    /// Keep the first and last so many characters, mask the rest.
    Keep { first: usize, last: usize },
}

pub const MASK: char = '*';

impl MaskRule {
    /// Reads `resident_id`, `mobile`, `name`, or `keep:FIRST:LAST`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "resident_id" | "身份证号" => Some(MaskRule::ResidentId),
            "mobile" | "手机号码" => Some(MaskRule::Mobile),
            "name" | "姓名" => Some(MaskRule::PersonalName),
            _ => {
                let rest = text.strip_prefix("keep:")?;
                let (first, last) = rest.split_once(':')?;
                Some(MaskRule::Keep {
                    first: first.parse().ok()?,
                    last: last.parse().ok()?,
                })
            }
        }
    }

    pub fn as_text(self) -> String {
        match self {
            MaskRule::ResidentId => "resident_id".into(),
            MaskRule::Mobile => "mobile".into(),
            MaskRule::PersonalName => "name".into(),
            MaskRule::Keep { first, last } => format!("keep:{first}:{last}"),
        }
    }

    /// The masked text. Characters, not bytes, are counted, so Chinese text masks correctly.
    /// A value too short to keep anything back is masked whole: masking never reveals more than
    /// its rule says.
    pub fn apply(self, value: &str) -> String {
        let (first, last) = match self {
            MaskRule::ResidentId => (6, 4),
            MaskRule::Mobile => (3, 4),
            MaskRule::PersonalName => (1, 0),
            MaskRule::Keep { first, last } => (first, last),
        };
        let chars: Vec<char> = value.chars().collect();
        let n = chars.len();
        // Saturating: a grant's `keep:FIRST:LAST` may name counts near usize::MAX; their sum
        // overflowed (a panic in debug builds, a slice out of range in release builds).
        if first.saturating_add(last) >= n {
            return MASK.to_string().repeat(n.max(1));
        }
        let mut out: String = chars[..first].iter().collect();
        out.extend(std::iter::repeat_n(MASK, n - first - last));
        out.extend(chars[n - last..].iter());
        out
    }
}

/// Masks a record's top-level fields in place. Non-text values of a masked field are masked as
/// their JSON text, so a number does not slip through unmasked.
pub fn mask_record(record: &mut Value, rules: &[(String, MaskRule)]) {
    let Some(fields) = record.as_object_mut() else { return };
    for (field, rule) in rules {
        if let Some(value) = fields.get_mut(field) {
            let text = match &*value {
                Value::Null => continue,
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            *value = Value::String(rule.apply(&text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn presets() {
        assert_eq!(MaskRule::ResidentId.apply("33010619900307123X"), "330106********123X");
        assert_eq!(MaskRule::Mobile.apply("13812345678"), "138****5678");
        assert_eq!(MaskRule::PersonalName.apply("张三丰"), "张**");
        assert_eq!(MaskRule::PersonalName.apply("李四"), "李*");
    }

    #[test]
    fn custom_keep_rules_count_characters() {
        assert_eq!(
            MaskRule::Keep { first: 3, last: 4 }.apply("330106199003071234"),
            "330***********1234"
        );
        assert_eq!(MaskRule::Keep { first: 2, last: 0 }.apply("浙江省杭州市"), "浙江****");
        assert_eq!(MaskRule::Keep { first: 0, last: 0 }.apply("abc"), "***");
    }

    #[test]
    fn short_values_are_masked_whole() {
        assert_eq!(MaskRule::Mobile.apply("12345"), "*****");
        assert_eq!(MaskRule::PersonalName.apply("张"), "*");
        assert_eq!(MaskRule::ResidentId.apply(""), "*");
    }

    #[test]
    fn huge_keep_counts_mask_everything() {
        let rule = MaskRule::parse("keep:18446744073709551615:1").expect("parses");
        assert_eq!(rule.apply("13812345678"), "***********");
        assert_eq!(
            MaskRule::Keep {
                first: 1,
                last: usize::MAX
            }
            .apply("张三"),
            "**"
        );
    }

    #[test]
    fn records_are_masked_field_by_field() {
        let mut record =
            json!({"name": "王小明", "mobile": 13812345678u64, "id": "33010619900307123X", "city": "杭州", "x": null});
        let rules = vec![
            ("name".to_string(), MaskRule::PersonalName),
            ("mobile".to_string(), MaskRule::Mobile),
            ("id".to_string(), MaskRule::ResidentId),
            ("x".to_string(), MaskRule::Mobile),
        ];
        mask_record(&mut record, &rules);
        assert_eq!(
            record,
            json!({"name": "王**", "mobile": "138****5678", "id": "330106********123X", "city": "杭州", "x": null})
        );
    }

    #[test]
    fn rules_read_back_from_text() {
        for rule in [
            MaskRule::ResidentId,
            MaskRule::Mobile,
            MaskRule::PersonalName,
            MaskRule::Keep { first: 1, last: 2 },
        ] {
            assert_eq!(MaskRule::parse(&rule.as_text()), Some(rule));
        }
        assert_eq!(MaskRule::parse("keep:x:1"), None);
        assert_eq!(MaskRule::parse("身份证号"), Some(MaskRule::ResidentId));
    }
}
