//! Realistic records against shared schemas: 法人 (legal entity), 人口 (person), 电子证照.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};
use xinqiao_domain::identifiers::resident_id_check_char;
use xinqiao_schema::records::{self, UNREADABLE};
use xinqiao_schema::{
    CompiledSchema, FormatMode, NoReferences, SchemaError, ValidatorCache, Violation, compile, references,
};

const VALID_USCC: &str = "11100000000013127D";
const WRONG_CHECK_USCC: &str = "11100000000013127E";

/// A 公民身份号码 with a correct check character, computed rather than copied from somewhere.
fn resident_id(first17: &str) -> String {
    let check = resident_id_check_char(first17).expect("17 digits");
    format!("{first17}{check}")
}

/// The same number with a check character that is certainly wrong.
fn wrong_check(id: &str) -> String {
    let wrong = if id.ends_with('1') { '2' } else { '1' };
    format!("{}{wrong}", &id[..17])
}

fn legal_entity_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "法人",
        "type": "object",
        "required": ["统一社会信用代码", "名称", "经营状态"],
        "properties": {
            "统一社会信用代码": {"type": "string", "format": "uscc"},
            "名称": {"type": "string", "minLength": 2, "maxLength": 100},
            "法定代表人": {"type": "string"},
            "注册资本": {"type": "number", "minimum": 0},
            "成立日期": {"type": "string", "format": "date"},
            "登记机关": {"type": "string"},
            "经营状态": {"enum": ["存续", "在业", "吊销", "注销"]},
            "住所": {"type": "string"},
            "联系电话": {"type": "string", "format": "cn-mobile"},
            "住所行政区划": {"type": "string", "format": "cn-division-code"}
        },
        "additionalProperties": false
    })
}

fn legal_entity() -> Value {
    json!({
        "统一社会信用代码": VALID_USCC,
        "名称": "国家市场监督管理总局",
        "法定代表人": "张三",
        "注册资本": 0,
        "成立日期": "2018-04-10",
        "登记机关": "国务院",
        "经营状态": "存续",
        "住所": "北京市西城区三里河东路八号",
        "联系电话": "13800138000",
        "住所行政区划": "110102"
    })
}

fn strict(schema: &Value) -> CompiledSchema {
    compile(schema, &NoReferences, FormatMode::Strict).expect("schema compiles")
}

fn lenient(schema: &Value) -> CompiledSchema {
    compile(schema, &NoReferences, FormatMode::Lenient).expect("schema compiles")
}

fn violation(pointer: &str, keyword: &str, message: &str) -> Violation {
    Violation {
        instance_pointer: pointer.into(),
        keyword: keyword.into(),
        message: message.into(),
    }
}

#[test]
fn a_valid_legal_entity_passes() {
    let outcome = strict(&legal_entity_schema()).validate(&legal_entity());
    assert!(outcome.is_valid(), "{outcome:?}");
    assert!(outcome.warnings.is_empty());
}

#[test]
fn a_wrong_uscc_check_character_is_named_precisely() {
    let mut record = legal_entity();
    record["统一社会信用代码"] = json!(WRONG_CHECK_USCC);
    let outcome = strict(&legal_entity_schema()).validate(&record);
    assert_eq!(
        outcome.errors,
        vec![violation(
            "/统一社会信用代码",
            "format",
            "统一社会信用代码 check character is 'E', expected 'D' (GB 32100)"
        )]
    );
}

#[test]
fn errors_carry_pointer_keyword_and_plain_message() {
    let mut record = legal_entity();
    let object = record.as_object_mut().expect("object");
    object.remove("名称");
    object.insert("注册资本".into(), json!("一百万"));
    object.insert("成立日期".into(), json!("2018-02-30"));
    object.insert("经营状态".into(), json!("营业中"));
    object.insert("联系电话".into(), json!("+8613800138000"));
    object.insert("住所行政区划".into(), json!("990000"));
    object.insert("网址".into(), json!("https://www.samr.gov.cn"));
    let outcome = strict(&legal_entity_schema()).validate(&record);
    let mut found: Vec<(&str, &str)> = outcome
        .errors
        .iter()
        .map(|v| (v.instance_pointer.as_str(), v.keyword.as_str()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("", "additionalProperties"),
            ("", "required"),
            ("/住所行政区划", "format"),
            ("/成立日期", "format"),
            ("/注册资本", "type"),
            ("/经营状态", "enum"),
            ("/联系电话", "format"),
        ],
        "{outcome:#?}"
    );
    let message = |keyword: &str, pointer: &str| {
        outcome
            .errors
            .iter()
            .find(|v| v.keyword == keyword && v.instance_pointer == pointer)
            .map(|v| v.message.clone())
            .expect("reported")
    };
    assert!(message("required", "").contains("名称"));
    assert!(message("additionalProperties", "").contains("网址"));
    assert!(message("format", "/联系电话").starts_with("手机号码 "));
    assert!(message("format", "/联系电话").contains("+86"));
    assert!(message("format", "/住所行政区划").contains("province part 99"));
    assert!(message("format", "/成立日期").contains("date"));
}

fn person_schema_draft7() -> Value {
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "人口",
        "type": "object",
        "required": ["公民身份号码", "姓名"],
        "properties": {
            "公民身份号码": {"$ref": "#/definitions/resident_id"},
            "姓名": {"type": "string", "minLength": 1},
            "性别": {"enum": ["男", "女"]},
            "出生日期": {"type": "string", "format": "date"},
            "民族": {"type": "string"},
            "户籍地址": {"type": "string"},
            "行政区划代码": {"type": "string", "format": "cn-division-code"},
            "手机号码": {"type": "string", "format": "cn-mobile"}
        },
        "definitions": {
            "resident_id": {"type": "string", "format": "cn-resident-id"}
        }
    })
}

fn person() -> Value {
    json!({
        "公民身份号码": resident_id("11010519491231002"),
        "姓名": "李四",
        "性别": "女",
        "出生日期": "1949-12-31",
        "民族": "汉族",
        "户籍地址": "北京市朝阳区",
        "行政区划代码": "110105",
        "手机号码": "13912345678"
    })
}

#[test]
fn draft7_schemas_are_compiled_as_draft7_and_assert_formats() {
    let schema = strict(&person_schema_draft7());
    assert_eq!(schema.draft(), "7");
    assert!(schema.validate(&person()).is_valid());
    let mut record = person();
    record["公民身份号码"] = json!("11010519491231002x");
    let outcome = schema.validate(&record);
    assert_eq!(outcome.errors.len(), 1, "{outcome:?}");
    assert_eq!(outcome.errors[0].instance_pointer, "/公民身份号码");
    assert_eq!(
        outcome.errors[0].message,
        "公民身份号码 check character must be an uppercase 'X', not 'x'"
    );
}

#[test]
fn draft7_ignores_keywords_beside_ref_and_2020_12_does_not() {
    let body = |dialect: &str| {
        json!({
            "$schema": dialect,
            "definitions": {"text": {"type": "string"}},
            "$ref": "#/definitions/text",
            "maxLength": 2
        })
    };
    let draft7 = strict(&body("http://json-schema.org/draft-07/schema#"));
    let draft2020 = strict(&body("https://json-schema.org/draft/2020-12/schema"));
    assert_eq!(draft2020.draft(), "2020-12");
    assert!(draft7.is_valid(&json!("long text")));
    assert!(!draft2020.is_valid(&json!("long text")));
}

#[test]
fn schemas_without_dollar_schema_are_2020_12() {
    assert_eq!(strict(&json!({"type": "object"})).draft(), "2020-12");
}

#[test]
fn invalid_schemas_are_readable_errors() {
    let err = compile(
        &json!({"type": "object", "properties": {"注册资本": {"minimum": "零"}}}),
        &NoReferences,
        FormatMode::Strict,
    )
    .expect_err("refused");
    assert!(
        matches!(&err, SchemaError::Invalid { pointer, .. } if pointer == "/properties/注册资本/minimum"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("invalid schema at /properties/注册资本/minimum: "),
        "{err}"
    );
    let err = compile(&json!({"format": "uscc-code"}), &NoReferences, FormatMode::Strict).expect_err("refused");
    assert!(err.to_string().contains("unknown format 'uscc-code'"), "{err}");
    let err = compile(
        &json!({"$schema": "http://json-schema.org/draft-04/schema#"}),
        &NoReferences,
        FormatMode::Strict,
    )
    .expect_err("refused");
    assert!(err.to_string().contains("draft 2020-12"), "{err}");
}

/// The registry: an identifiers subject, and subjects built on it.
fn registry() -> HashMap<(String, u32), Value> {
    let mut source = HashMap::new();
    source.insert(
        ("identifiers".to_string(), 1),
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$defs": {
                "uscc": {"type": "string", "format": "uscc"},
                "resident_id": {"type": "string", "format": "cn-resident-id"},
                "holder": {"anyOf": [{"$ref": "#/$defs/uscc"}, {"$ref": "#/$defs/resident_id"}]}
            }
        }),
    );
    source.insert(
        ("legal-entity".to_string(), 1),
        json!({
            "type": "object",
            "required": ["统一社会信用代码"],
            "properties": {
                "统一社会信用代码": {"$ref": "xinqiao://schemas/identifiers/1#/$defs/uscc"},
                "名称": {"type": "string"}
            }
        }),
    );
    // A draft-7 schema may use a 2020-12 one.
    source.insert(
        ("e-licence".to_string(), 1),
        json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "required": ["证照编号", "持证主体", "颁发机构"],
            "properties": {
                "证照编号": {"type": "string"},
                "持证主体": {"$ref": "xinqiao://schemas/identifiers/1#/$defs/holder"},
                "颁发机构": {"$ref": "xinqiao://schemas/legal-entity/1"},
                "有效期": {"type": "string", "format": "date"}
            }
        }),
    );
    source
}

#[test]
fn references_resolve_through_the_source_transitively() {
    let source = registry();
    let licence = source[&("e-licence".to_string(), 1)].clone();
    assert_eq!(
        references(&licence),
        vec![("identifiers".to_string(), 1), ("legal-entity".to_string(), 1)]
    );
    let schema = compile(&licence, &source, FormatMode::Strict).expect("compiles");
    assert_eq!(
        schema.dependencies(),
        &[("identifiers".to_string(), 1), ("legal-entity".to_string(), 1)]
    );
    let record = json!({
        "证照编号": "GA-2024-000001",
        "持证主体": resident_id("44030419900101001"),
        "颁发机构": {"统一社会信用代码": VALID_USCC, "名称": "公安部"},
        "有效期": "2034-01-01"
    });
    assert!(schema.validate(&record).is_valid(), "{:?}", schema.validate(&record));
    let mut bad = record.clone();
    bad["颁发机构"]["统一社会信用代码"] = json!(WRONG_CHECK_USCC);
    let outcome = schema.validate(&bad);
    assert_eq!(
        outcome.errors,
        vec![violation(
            "/颁发机构/统一社会信用代码",
            "format",
            "统一社会信用代码 check character is 'E', expected 'D' (GB 32100)"
        )]
    );
}

#[test]
fn a_missing_registered_schema_is_named() {
    let schema = json!({"$ref": "xinqiao://schemas/identifiers/2#/$defs/uscc"});
    let err = compile(&schema, &registry(), FormatMode::Strict).expect_err("refused");
    assert!(matches!(err, SchemaError::Reference(_)));
    assert!(
        err.to_string().contains("'identifiers' version 2 is not registered"),
        "{err}"
    );
    let err = compile(
        &json!({"$ref": "xinqiao://schemas/identifiers/1#/$defs/nothing"}),
        &registry(),
        FormatMode::Strict,
    )
    .expect_err("refused");
    assert!(err.to_string().contains("/$defs/nothing"), "{err}");
}

#[test]
fn other_references_are_refused_without_fetching() {
    for uri in [
        "https://json-schema.example.com/person.json",
        "http://127.0.0.1:9/schema.json",
        "file:///etc/passwd",
        "person.json",
        "urn:example:person",
    ] {
        let schema = json!({"properties": {"p": {"$ref": uri}}});
        let err = compile(&schema, &registry(), FormatMode::Strict).expect_err("refused");
        assert!(matches!(err, SchemaError::Reference(_)), "{uri}: {err:?}");
        assert!(
            err.to_string()
                .contains("only xinqiao://schemas/<subject>/<version> references"),
            "{uri}: {err}"
        );
    }
}

#[test]
fn lenient_mode_turns_only_wrong_check_characters_into_warnings() {
    let schema = json!({
        "type": "object",
        "properties": {
            "主体": {"type": "string", "format": "uscc"},
            "成员": {"type": "array", "items": {
                "type": "object",
                "properties": {"公民身份号码": {"type": "string", "format": "cn-resident-id"}}
            }}
        }
    });
    let good_id = resident_id("32010219800229051");
    let record = json!({
        "主体": WRONG_CHECK_USCC,
        "成员": [{"公民身份号码": good_id}, {"公民身份号码": wrong_check(&good_id)}]
    });

    let outcome = strict(&schema).validate(&record);
    assert_eq!(outcome.errors.len(), 2, "{outcome:?}");
    assert!(outcome.warnings.is_empty());

    let outcome = lenient(&schema).validate(&record);
    assert!(outcome.is_valid(), "{outcome:?}");
    let pointers: Vec<_> = outcome.warnings.iter().map(|w| w.instance_pointer.as_str()).collect();
    assert_eq!(pointers, vec!["/主体", "/成员/1/公民身份号码"]);
    assert!(outcome.warnings.iter().all(|w| w.keyword == "format"));
    assert!(
        outcome.warnings[1]
            .message
            .starts_with("公民身份号码 check character is")
    );
    assert!(outcome.warnings[1].message.ends_with("(GB 11643)"));

    // A bad shape is an error in lenient mode too.
    let shape = json!({"主体": "11100000000013127", "成员": [{"公民身份号码": "11010519491231002x"}]});
    let outcome = lenient(&schema).validate(&shape);
    assert_eq!(outcome.errors.len(), 2, "{outcome:?}");
    assert!(outcome.warnings.is_empty());
}

#[test]
fn lenient_warnings_are_reported_on_invalid_records_and_through_references() {
    let source = registry();
    let schema = compile(&source[&("legal-entity".to_string(), 1)], &source, FormatMode::Lenient).expect("compiles");
    let outcome = schema.validate(&json!({"统一社会信用代码": WRONG_CHECK_USCC, "名称": 42}));
    assert_eq!(outcome.errors.len(), 1, "{outcome:?}");
    assert_eq!(outcome.errors[0].keyword, "type");
    assert_eq!(
        outcome.warnings,
        vec![violation(
            "/统一社会信用代码",
            "format",
            "统一社会信用代码 check character is 'E', expected 'D' (GB 32100)"
        )]
    );
}

#[test]
fn the_cache_compiles_once_across_threads() {
    let source = registry();
    let cache = ValidatorCache::new();
    let compiled: Vec<Arc<CompiledSchema>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    cache
                        .get("e-licence", 1, FormatMode::Strict, &source)
                        .expect("compiles")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    assert_eq!(cache.compilations(), 1);
    assert!(compiled.windows(2).all(|pair| Arc::ptr_eq(&pair[0], &pair[1])));
    let again = cache.get("e-licence", 1, FormatMode::Strict, &source).expect("cached");
    assert!(Arc::ptr_eq(&again, &compiled[0]));
    assert_eq!(cache.compilations(), 1);
    let lenient = cache
        .get("e-licence", 1, FormatMode::Lenient, &source)
        .expect("compiles");
    assert_eq!(lenient.mode(), FormatMode::Lenient);
    assert_eq!(cache.compilations(), 2);
}

#[test]
fn csv_cells_are_coerced_to_the_declared_types() {
    let schema = json!({
        "type": "object",
        "required": ["统一社会信用代码", "名称"],
        "properties": {
            "统一社会信用代码": {"type": "string", "format": "uscc"},
            "名称": {"type": "string"},
            "注册资本": {"type": "number", "minimum": 0},
            "从业人数": {"type": "integer"},
            "是否上市": {"type": "boolean"},
            "邮编": {"type": "string", "pattern": "^[0-9]{6}$"}
        }
    });
    let input = "\u{feff}统一社会信用代码,名称,注册资本,从业人数,是否上市,邮编\n\
        11100000000013127D,国家市场监督管理总局,1500.5,320,false,100037\n\
        11100000000013127D,,,,,\n\
        11100000000013127E,\"某某, 有限公司\",-1,三百,是,012345\n\
        11100000000013127D,少一列\n";
    let rows: Vec<_> = records::csv(input.as_bytes(), &schema).expect("header").collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(
        rows[0],
        (
            2,
            Ok(json!({
                "统一社会信用代码": VALID_USCC,
                "名称": "国家市场监督管理总局",
                "注册资本": 1500.5,
                "从业人数": 320,
                "是否上市": false,
                "邮编": "100037"
            }))
        )
    );
    // Empty cells are absent properties.
    assert_eq!(rows[1], (3, Ok(json!({"统一社会信用代码": VALID_USCC}))));
    assert_eq!(rows[2].1.as_ref().expect("row")["邮编"], json!("012345"));
    assert_eq!(rows[3].0, 5);
    assert!(
        rows[3].1.as_ref().expect_err("refused").contains("2 cells"),
        "{:?}",
        rows[3]
    );

    let compiled = strict(&schema);
    let input_again = records::csv(input.as_bytes(), &schema).expect("header");
    let summary = records::validate_stream(input_again, &compiled, 20, 100);
    assert_eq!((summary.records, summary.invalid, summary.warned), (4, 3, 0));
    let lines: Vec<u64> = summary.reports.iter().map(|r| r.line).collect();
    assert_eq!(lines, vec![3, 4, 5]);
    let missing = &summary.reports[0].outcome.errors;
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].keyword, "required");
    let mut keywords: Vec<_> = summary.reports[1]
        .outcome
        .errors
        .iter()
        .map(|v| v.keyword.as_str())
        .collect();
    keywords.sort();
    assert_eq!(keywords, vec!["format", "minimum", "type", "type"]);
    assert_eq!(summary.reports[2].outcome.errors[0].keyword, UNREADABLE);
}

#[test]
fn ndjson_with_a_broken_line_is_reported_by_line_and_reading_goes_on() {
    let schema = lenient(&legal_entity_schema());
    let good = legal_entity().to_string();
    let mut warned = legal_entity();
    warned["统一社会信用代码"] = json!(WRONG_CHECK_USCC);
    let input = format!("{good}\n\n{{\"统一社会信用代码\": \"1110\n{}\n{good}\n", warned);
    let summary = records::validate_stream(records::ndjson(input.as_bytes()), &schema, 20, 100);
    assert_eq!(
        (summary.records, summary.invalid, summary.warned),
        (4, 1, 1),
        "{summary:#?}"
    );
    assert_eq!(summary.reports.len(), 2);
    assert_eq!(summary.reports[0].line, 3);
    assert_eq!(summary.reports[0].outcome.errors[0].keyword, UNREADABLE);
    assert!(summary.reports[0].outcome.errors[0].message.contains("not valid JSON"));
    assert_eq!(summary.reports[1].line, 4);
    assert!(summary.reports[1].outcome.is_valid());
    assert_eq!(
        summary.reports[1].outcome.warnings[0].instance_pointer,
        "/统一社会信用代码"
    );
}

#[test]
fn stream_reports_are_bounded_but_counts_are_not() {
    let schema = strict(&json!({"type": "integer"}));
    let input: String = (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                format!("{i}\n")
            } else {
                "\"x\"\n".to_string()
            }
        })
        .collect();
    let summary = records::validate_stream(records::ndjson(input.as_bytes()), &schema, 20, 10);
    assert_eq!(summary.records, 1000);
    assert_eq!(summary.invalid, 500);
    assert_eq!(summary.reports.len(), 10);
    assert!(summary.truncated);
    let mut seen = 0;
    let summary = records::validate_each(records::ndjson(input.as_bytes()), &schema, 20, |_| seen += 1);
    assert_eq!(seen, 500);
    assert!(summary.reports.is_empty());
}
