//! Catalogue entries written as TOML or JSON files (see deploy/examples/). Enumerations take
//! the code (`conditional`) or the Chinese term of the standard (`有条件共享`).

use std::path::Path;

use serde::Deserialize;
use xinqiao_domain::catalogue as d;
use xinqiao_hub::convert;
use xinqiao_proto::v1 as pb;

use crate::CliResult;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    name: String,
    classification: String,
    summary: String,
    format: Option<String>,
    update_cycle: Option<String>,
    #[serde(default)]
    maintainer: String,
    #[serde(default)]
    related_codes: Vec<String>,
    share: Option<ShareFile>,
    open: Option<OpenFile>,
    #[serde(default)]
    items: Vec<ItemFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareFile {
    #[serde(rename = "type")]
    share_type: Option<String>,
    #[serde(default)]
    condition: String,
    channel: Option<String>,
    exchange_kind: Option<String>,
    #[serde(default)]
    legal_basis: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenFile {
    #[serde(rename = "type")]
    open_type: Option<String>,
    #[serde(default)]
    condition: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemFile {
    name: String,
    data_type: String,
    #[serde(default)]
    length: u32,
    #[serde(default)]
    sensitive: bool,
    #[serde(default)]
    description: String,
}

/// Reads a code or Chinese term into the API's number; a missing value stays unspecified (0) so
/// the hub names it.
fn code<T: Copy>(
    field: &str,
    value: &Option<String>,
    parse: fn(&str) -> Option<T>,
    all: &[T],
    text: fn(T) -> &'static str,
    label: fn(T) -> &'static str,
    api: fn(T) -> i32,
) -> CliResult<i32> {
    let Some(value) = value else { return Ok(0) };
    match parse(value.trim()) {
        Some(v) => Ok(api(v)),
        None => {
            let allowed: Vec<String> = all.iter().map(|&v| format!("{} ({})", text(v), label(v))).collect();
            Err(format!("{field}: '{value}' is not one of: {}", allowed.join(", ")))
        }
    }
}

/// Reads an entry file; `.json` files are JSON, anything else TOML.
pub fn read(path: &Path) -> CliResult<pb::EntryContent> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let json = path.extension().is_some_and(|e| e == "json");
    parse(&text, json).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn parse(text: &str, json: bool) -> CliResult<pb::EntryContent> {
    let file: EntryFile = if json {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    } else {
        toml::from_str(text).map_err(|e| e.to_string())?
    };
    let share = match &file.share {
        None => None,
        Some(s) => Some(pb::ShareAttributes {
            share_type: code(
                "share.type",
                &s.share_type,
                d::ShareType::parse,
                d::ShareType::ALL,
                d::ShareType::as_str,
                d::ShareType::label,
                convert::share_type_api,
            )?,
            condition: s.condition.clone(),
            channel: code(
                "share.channel",
                &s.channel,
                d::ShareChannel::parse,
                d::ShareChannel::ALL,
                d::ShareChannel::as_str,
                d::ShareChannel::label,
                convert::share_channel_api,
            )?,
            exchange_kind: code(
                "share.exchange_kind",
                &s.exchange_kind,
                d::ExchangeKind::parse,
                d::ExchangeKind::ALL,
                d::ExchangeKind::as_str,
                d::ExchangeKind::label,
                convert::exchange_kind_api,
            )?,
            legal_basis: s.legal_basis.clone(),
        }),
    };
    let open = match &file.open {
        None => None,
        Some(o) => Some(pb::OpenAttributes {
            open_type: code(
                "open.type",
                &o.open_type,
                d::OpenType::parse,
                d::OpenType::ALL,
                d::OpenType::as_str,
                d::OpenType::label,
                convert::open_type_api,
            )?,
            condition: o.condition.clone(),
        }),
    };
    Ok(pb::EntryContent {
        format: code(
            "format",
            &file.format,
            d::ResourceFormat::parse,
            d::ResourceFormat::ALL,
            d::ResourceFormat::as_str,
            d::ResourceFormat::label,
            convert::resource_format_api,
        )?,
        update_cycle: code(
            "update_cycle",
            &file.update_cycle,
            d::UpdateCycle::parse,
            d::UpdateCycle::ALL,
            d::UpdateCycle::as_str,
            d::UpdateCycle::label,
            convert::update_cycle_api,
        )?,
        name: file.name,
        classification: file.classification,
        summary: file.summary,
        items: file
            .items
            .into_iter()
            .map(|i| pb::DataItem {
                name: i.name,
                data_type: i.data_type,
                length: i.length,
                sensitive: i.sensitive,
                description: i.description,
            })
            .collect(),
        share,
        open,
        related_codes: file.related_codes,
        maintainer: file.maintainer,
    })
}

/// Fuzzing the entry-file parser (issue 15, item 2): arbitrary TOML and JSON text, files that are
/// not UTF-8, generated entries written both ways and read back, and the checked-in seed corpus
/// under `fuzz/corpus/entry-files/`. Each property runs `PROPTEST_CASES` cases.
#[cfg(test)]
mod fuzz {
    use std::fmt::Debug;
    use std::io::Write;
    use std::path::PathBuf;

    use proptest::prelude::*;
    use proptest::sample::Index;
    use proptest::test_runner::RngAlgorithm;
    use serde_json::json;

    use super::*;

    /// The default configuration (which reads `PROPTEST_CASES`; failures are kept in
    /// `services/cli/proptest-regressions/`). XorShift instead of ChaCha: unoptimised in a debug
    /// build, ChaCha took most of the run's time.
    fn config() -> ProptestConfig {
        ProptestConfig {
            rng_algorithm: RngAlgorithm::XorShift,
            ..ProptestConfig::default()
        }
    }

    /// Whitespace `trim` removes: what a hand-edited file has around a value.
    const PADDING: &str = "[ \t\u{3000}]{0,2}";

    /// How one enumerated field appears in a file.
    #[derive(Debug, Clone)]
    enum Choice {
        Absent,
        /// A code or Chinese term (with padding), and the API number it stands for.
        Valid(String, i32),
        Invalid(String),
    }

    impl Choice {
        fn text(&self) -> Option<&str> {
            match self {
                Choice::Absent => None,
                Choice::Valid(text, _) | Choice::Invalid(text) => Some(text),
            }
        }

        fn api(&self) -> i32 {
            match self {
                Choice::Valid(_, api) => *api,
                _ => 0,
            }
        }
    }

    fn choice<T: Copy + Debug + 'static>(
        all: &'static [T],
        parse: fn(&str) -> Option<T>,
        text: fn(T) -> &'static str,
        label: fn(T) -> &'static str,
        api: fn(T) -> i32,
    ) -> impl Strategy<Value = Choice> {
        prop_oneof![
            Just(Choice::Absent),
            (prop::sample::select(all), any::<bool>(), PADDING, PADDING).prop_map(
                move |(v, chinese, before, after)| {
                    let word = if chinese { label(v) } else { text(v) };
                    Choice::Valid(format!("{before}{word}{after}"), api(v))
                }
            ),
            prop_oneof!["\\PC{0,8}", "[a-z_]{1,12}", "UNCONDITIONAL|无条件|无条件共享 共享"].prop_map(move |t| {
                match parse(t.trim()) {
                    Some(v) => Choice::Valid(t, api(v)),
                    None => Choice::Invalid(t),
                }
            }),
        ]
    }

    #[derive(Debug, Clone)]
    struct Share {
        share_type: Choice,
        condition: Option<String>,
        channel: Choice,
        exchange_kind: Choice,
        legal_basis: Option<String>,
    }

    #[derive(Debug, Clone)]
    struct Open {
        open_type: Choice,
        condition: Option<String>,
    }

    #[derive(Debug, Clone)]
    struct Item {
        name: String,
        data_type: String,
        length: Option<u32>,
        sensitive: Option<bool>,
        description: Option<String>,
    }

    /// An entry as a department might write it.
    #[derive(Debug, Clone)]
    struct Entry {
        name: String,
        classification: String,
        summary: String,
        format: Choice,
        update_cycle: Choice,
        maintainer: Option<String>,
        related_codes: Option<Vec<String>>,
        share: Option<Share>,
        open: Option<Open>,
        items: Option<Vec<Item>>,
    }

    /// Text with what breaks naive writers and readers: quotes, backslashes, line breaks, NUL,
    /// Chinese, emoji, SQL and path metacharacters, TOML syntax.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "\\PC{0,20}",
            "[\"'\\\\\n\r\t\0#=\\[\\]{}]{0,6}",
            Just("'; DROP TABLE catalog_entries;--".to_string()),
            Just("../../../etc/passwd".to_string()),
            Just("企业登记信息😀\u{200d}\u{0301}".to_string()),
            Just("\"\"\"\n'''".to_string()),
        ]
    }

    fn entry() -> impl Strategy<Value = Entry> {
        let share = (
            choice(
                d::ShareType::ALL,
                d::ShareType::parse,
                d::ShareType::as_str,
                d::ShareType::label,
                convert::share_type_api,
            ),
            prop::option::of(text()),
            choice(
                d::ShareChannel::ALL,
                d::ShareChannel::parse,
                d::ShareChannel::as_str,
                d::ShareChannel::label,
                convert::share_channel_api,
            ),
            choice(
                d::ExchangeKind::ALL,
                d::ExchangeKind::parse,
                d::ExchangeKind::as_str,
                d::ExchangeKind::label,
                convert::exchange_kind_api,
            ),
            prop::option::of(text()),
        )
            .prop_map(|(share_type, condition, channel, exchange_kind, legal_basis)| Share {
                share_type,
                condition,
                channel,
                exchange_kind,
                legal_basis,
            });
        let open = (
            choice(
                d::OpenType::ALL,
                d::OpenType::parse,
                d::OpenType::as_str,
                d::OpenType::label,
                convert::open_type_api,
            ),
            prop::option::of(text()),
        )
            .prop_map(|(open_type, condition)| Open { open_type, condition });
        let item = (
            text(),
            text(),
            prop::option::of(any::<u32>()),
            prop::option::of(any::<bool>()),
            prop::option::of(text()),
        )
            .prop_map(|(name, data_type, length, sensitive, description)| Item {
                name,
                data_type,
                length,
                sensitive,
                description,
            });
        (
            (text(), "[0-9]{0,8}|\\PC{0,8}", text()),
            choice(
                d::ResourceFormat::ALL,
                d::ResourceFormat::parse,
                d::ResourceFormat::as_str,
                d::ResourceFormat::label,
                convert::resource_format_api,
            ),
            choice(
                d::UpdateCycle::ALL,
                d::UpdateCycle::parse,
                d::UpdateCycle::as_str,
                d::UpdateCycle::label,
                convert::update_cycle_api,
            ),
            prop::option::of(text()),
            prop::option::of(prop::collection::vec(text(), 0..3)),
            prop::option::of(share),
            prop::option::of(open),
            prop::option::of(prop::collection::vec(item, 0..4)),
        )
            .prop_map(
                |(
                    (name, classification, summary),
                    format,
                    update_cycle,
                    maintainer,
                    related_codes,
                    share,
                    open,
                    items,
                )| {
                    Entry {
                        name,
                        classification,
                        summary,
                        format,
                        update_cycle,
                        maintainer,
                        related_codes,
                        share,
                        open,
                        items,
                    }
                },
            )
    }

    /// The entry as a JSON document; absent fields are left out.
    fn as_json(entry: &Entry) -> serde_json::Value {
        fn put(map: &mut serde_json::Map<String, serde_json::Value>, key: &str, value: Option<serde_json::Value>) {
            if let Some(value) = value {
                map.insert(key.to_string(), value);
            }
        }
        let choice = |c: &Choice| c.text().map(|t| json!(t));
        let mut root = serde_json::Map::new();
        put(&mut root, "name", Some(json!(entry.name)));
        put(&mut root, "classification", Some(json!(entry.classification)));
        put(&mut root, "summary", Some(json!(entry.summary)));
        put(&mut root, "format", choice(&entry.format));
        put(&mut root, "update_cycle", choice(&entry.update_cycle));
        put(&mut root, "maintainer", entry.maintainer.as_ref().map(|m| json!(m)));
        put(
            &mut root,
            "related_codes",
            entry.related_codes.as_ref().map(|c| json!(c)),
        );
        if let Some(share) = &entry.share {
            let mut s = serde_json::Map::new();
            put(&mut s, "type", choice(&share.share_type));
            put(&mut s, "condition", share.condition.as_ref().map(|c| json!(c)));
            put(&mut s, "channel", choice(&share.channel));
            put(&mut s, "exchange_kind", choice(&share.exchange_kind));
            put(&mut s, "legal_basis", share.legal_basis.as_ref().map(|c| json!(c)));
            root.insert("share".into(), serde_json::Value::Object(s));
        }
        if let Some(open) = &entry.open {
            let mut o = serde_json::Map::new();
            put(&mut o, "type", choice(&open.open_type));
            put(&mut o, "condition", open.condition.as_ref().map(|c| json!(c)));
            root.insert("open".into(), serde_json::Value::Object(o));
        }
        if let Some(items) = &entry.items {
            let items: Vec<serde_json::Value> = items
                .iter()
                .map(|i| {
                    let mut m = serde_json::Map::new();
                    put(&mut m, "name", Some(json!(i.name)));
                    put(&mut m, "data_type", Some(json!(i.data_type)));
                    put(&mut m, "length", i.length.map(|l| json!(l)));
                    put(&mut m, "sensitive", i.sensitive.map(|s| json!(s)));
                    put(&mut m, "description", i.description.as_ref().map(|d| json!(d)));
                    serde_json::Value::Object(m)
                })
                .collect();
            root.insert("items".into(), json!(items));
        }
        serde_json::Value::Object(root)
    }

    /// The same document as TOML text, through the toml crate's own writer.
    fn as_toml(entry: &Entry) -> String {
        let table: toml::Table = serde_json::from_value(as_json(entry)).expect("a TOML table");
        toml::to_string(&table).expect("TOML text")
    }

    /// What the parser must make of the entry: the content, or the first invalid code's field.
    fn expected(entry: &Entry) -> Result<pb::EntryContent, &'static str> {
        let mut fields: Vec<(&'static str, &Choice)> = Vec::new();
        if let Some(s) = &entry.share {
            fields.extend([
                ("share.type", &s.share_type),
                ("share.channel", &s.channel),
                ("share.exchange_kind", &s.exchange_kind),
            ]);
        }
        if let Some(o) = &entry.open {
            fields.push(("open.type", &o.open_type));
        }
        fields.extend([("format", &entry.format), ("update_cycle", &entry.update_cycle)]);
        if let Some((field, _)) = fields.iter().find(|(_, c)| matches!(c, Choice::Invalid(_))) {
            return Err(field);
        }
        Ok(pb::EntryContent {
            name: entry.name.clone(),
            classification: entry.classification.clone(),
            summary: entry.summary.clone(),
            format: entry.format.api(),
            update_cycle: entry.update_cycle.api(),
            maintainer: entry.maintainer.clone().unwrap_or_default(),
            related_codes: entry.related_codes.clone().unwrap_or_default(),
            share: entry.share.as_ref().map(|s| pb::ShareAttributes {
                share_type: s.share_type.api(),
                condition: s.condition.clone().unwrap_or_default(),
                channel: s.channel.api(),
                exchange_kind: s.exchange_kind.api(),
                legal_basis: s.legal_basis.clone().unwrap_or_default(),
            }),
            open: entry.open.as_ref().map(|o| pb::OpenAttributes {
                open_type: o.open_type.api(),
                condition: o.condition.clone().unwrap_or_default(),
            }),
            items: entry
                .items
                .iter()
                .flatten()
                .map(|i| pb::DataItem {
                    name: i.name.clone(),
                    data_type: i.data_type.clone(),
                    length: i.length.unwrap_or_default(),
                    sensitive: i.sensitive.unwrap_or_default(),
                    description: i.description.clone().unwrap_or_default(),
                })
                .collect(),
        })
    }

    fn parsed_as_expected(text: &str, json: bool, entry: &Entry) -> Result<(), TestCaseError> {
        match (parse(text, json), expected(entry)) {
            (Ok(content), Ok(expected)) => prop_assert_eq!(content, expected),
            (Err(message), Err(field)) => {
                prop_assert!(message.starts_with(&format!("{field}: ")), "{} for {}", message, field);
            }
            (outcome, expected) => prop_assert!(false, "parsed {:?}, expected {:?}\n{}", outcome, expected, text),
        }
        Ok(())
    }

    /// Reading a file never panics, and text that is not UTF-8 is an error naming the file.
    fn read_holds(bytes: &[u8], extension: &str) -> Result<(), TestCaseError> {
        let mut file = tempfile::Builder::new()
            .suffix(extension)
            .tempfile()
            .expect("temporary file");
        file.write_all(bytes).expect("write");
        let outcome = read(file.path());
        if std::str::from_utf8(bytes).is_err() {
            prop_assert!(outcome.is_err());
        }
        if let Err(message) = outcome {
            prop_assert!(message.contains(&file.path().display().to_string()), "{}", message);
        }
        Ok(())
    }

    #[test]
    fn entry_file_corpus() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/entry-files");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .collect();
        paths.sort();
        assert!(!paths.is_empty(), "{} holds no seed", dir.display());
        for path in paths {
            let name = path.file_name().expect("name").to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).expect("seed");
            for extension in [".toml", ".json", ""] {
                read_holds(&bytes, extension).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            // Seeds named `valid-*` are entries the CLI must read; every other one is broken and
            // must be refused with a message.
            let outcome = read(&path);
            assert_eq!(outcome.is_ok(), name.starts_with("valid-"), "{name}: {outcome:?}");
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn generated_entries_read_back_from_toml_and_json(entry in entry()) {
            parsed_as_expected(&as_toml(&entry), false, &entry)?;
            parsed_as_expected(&as_json(&entry).to_string(), true, &entry)?;
            parsed_as_expected(&serde_json::to_string_pretty(&as_json(&entry)).expect("JSON"), true, &entry)?;
        }

        /// A valid file with one character removed, changed or inserted, or cut short: parsed or
        /// refused, never a panic.
        #[test]
        fn damaged_entry_files_never_panic(
            entry in entry(),
            json in any::<bool>(),
            edit in 0u8..4,
            at in any::<Index>(),
            with in prop_oneof![any::<char>(), prop::sample::select(vec!['"', '\'', '[', ']', '{', '}', '=', '\n', '\\', '#', '\0'])],
        ) {
            let text = if json { as_json(&entry).to_string() } else { as_toml(&entry) };
            let mut chars: Vec<char> = text.chars().collect();
            let i = at.index(chars.len() + 1);
            match edit {
                0 if i < chars.len() => {
                    chars.remove(i);
                }
                1 if i < chars.len() => chars[i] = with,
                2 => chars.insert(i, with),
                _ => chars.truncate(i),
            }
            let damaged: String = chars.into_iter().collect();
            if let Err(message) = parse(&damaged, json) {
                prop_assert!(!message.is_empty());
            }
        }

        #[test]
        fn arbitrary_text_and_bytes_never_panic(text in any::<String>(), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            for json in [false, true] {
                if let Err(message) = parse(&text, json) {
                    prop_assert!(!message.is_empty());
                }
            }
            for extension in [".toml", ".json"] {
                read_holds(&bytes, extension)?;
                read_holds(text.as_bytes(), extension)?;
            }
        }

        /// A key the format does not define is refused, at the top and in every table.
        #[test]
        fn unknown_fields_are_refused(entry in entry(), key in "[a-z_]{1,10}", place in any::<Index>()) {
            let mut document = as_json(&entry);
            let known = [
                "name",
                "classification",
                "summary",
                "format",
                "update_cycle",
                "maintainer",
                "related_codes",
                "share",
                "open",
                "items",
                "type",
                "condition",
                "channel",
                "exchange_kind",
                "legal_basis",
                "data_type",
                "length",
                "sensitive",
                "description",
            ];
            prop_assume!(!known.contains(&key.as_str()));
            // The top level, or one of the tables the entry has.
            let mut places = vec![""];
            places.extend(["share", "open"].into_iter().filter(|t| document.get(*t).is_some()));
            if document.get("items").and_then(|i| i.get(0)).is_some() {
                places.push("items");
            }
            let target = match places[place.index(places.len())] {
                "" => document.as_object_mut(),
                "items" => document.get_mut("items").and_then(|i| i.get_mut(0)).and_then(|i| i.as_object_mut()),
                table => document.get_mut(table).and_then(|t| t.as_object_mut()),
            };
            target.expect("a table").insert(key.clone(), json!("x"));
            let text = document.to_string();
            prop_assert!(parse(&text, true).is_err());
            let table: toml::Table = serde_json::from_value(document).expect("a TOML table");
            prop_assert!(parse(&toml::to_string(&table).expect("TOML"), false).is_err());
        }
    }
}
