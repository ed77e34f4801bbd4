//! Schema compatibility (兼容性检查): may a new version of a shared record schema be registered
//! without breaking the departments that write or read records under the versions before it?
//!
//! The question is always one of inclusion: "is every record valid under the *writer* schema also
//! valid under the *reader* schema?". BACKWARD asks it with the new schema as reader and a previous
//! version as writer (consumers on the new schema still read old records); FORWARD asks it the
//! other way round (consumers still on the old schema read new records).
//!
//! The checker answers structurally, keyword by keyword, the way a person reading the two schemas
//! would, and errs on the side of "incompatible" where it cannot prove inclusion. Two choices
//! differ from a literal reading of JSON Schema and follow what users mean:
//!
//! - A property the writer does not declare is taken as one its writers never produce, even when
//!   the writer schema leaves `additionalProperties` open. So adding an optional property is
//!   backward compatible, and removing one is too unless the reader forbids undeclared properties.
//!   A writer that sets `additionalProperties` explicitly (to `true` or a schema) does declare that
//!   it produces other names, and those are checked.
//! - `format` is treated as an assertion, not an annotation: adding or changing it narrows.
//!
//! Keywords JSON Schema does not define are annotations and never matter. Assertion keywords this
//! checker does not reason about (`oneOf`, `not`, `if`/`then`/`else`, `patternProperties`, …) are
//! accepted only when reader and writer carry them unchanged.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

/// How a new version must relate to the versions registered before it (as in Confluent Schema
/// Registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompatibilityMode {
    /// The new schema reads every record written under the latest previous version.
    Backward,
    /// The latest previous version reads every record written under the new schema.
    Forward,
    /// Both backward and forward, against the latest previous version.
    Full,
    /// Backward against every previous version.
    BackwardTransitive,
    /// Forward against every previous version.
    ForwardTransitive,
    /// Full against every previous version.
    FullTransitive,
    /// Nothing is checked.
    None,
}

/// The registry-wide mode until the admin sets another.
pub const DEFAULT_MODE: CompatibilityMode = CompatibilityMode::Backward;

impl CompatibilityMode {
    pub const ALL: [CompatibilityMode; 7] = [
        CompatibilityMode::Backward,
        CompatibilityMode::Forward,
        CompatibilityMode::Full,
        CompatibilityMode::BackwardTransitive,
        CompatibilityMode::ForwardTransitive,
        CompatibilityMode::FullTransitive,
        CompatibilityMode::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityMode::Backward => "BACKWARD",
            CompatibilityMode::Forward => "FORWARD",
            CompatibilityMode::Full => "FULL",
            CompatibilityMode::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatibilityMode::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatibilityMode::FullTransitive => "FULL_TRANSITIVE",
            CompatibilityMode::None => "NONE",
        }
    }

    /// Parses the upper-case name (`BACKWARD`, `FULL_TRANSITIVE`, …).
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|mode| mode.as_str() == name).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|mode| mode.as_str()).collect();
            format!(
                "'{name}' is not a compatibility mode; expected one of {}",
                names.join(", ")
            )
        })
    }

    /// Whether the new schema must read records written under previous versions.
    pub fn checks_backward(self) -> bool {
        matches!(
            self,
            CompatibilityMode::Backward
                | CompatibilityMode::Full
                | CompatibilityMode::BackwardTransitive
                | CompatibilityMode::FullTransitive
        )
    }

    /// Whether previous versions must read records written under the new schema.
    pub fn checks_forward(self) -> bool {
        matches!(
            self,
            CompatibilityMode::Forward
                | CompatibilityMode::Full
                | CompatibilityMode::ForwardTransitive
                | CompatibilityMode::FullTransitive
        )
    }

    /// Whether every previous version is checked, not only the latest.
    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            CompatibilityMode::BackwardTransitive
                | CompatibilityMode::ForwardTransitive
                | CompatibilityMode::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CompatibilityMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// One reason a new schema is not compatible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    /// JSON pointer into the NEW schema at the place of the change (`/properties/name/type`,
    /// `/required`). For something the new schema dropped, it is where the old schema had it.
    /// Best effort where `allOf` branches were merged to compare them.
    pub pointer: String,
    /// The change and its consequence in plain words, naming the version it concerns.
    pub reason: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "(root)"
        } else {
            &self.pointer
        };
        write!(f, "{pointer}: {}", self.reason)
    }
}

/// Checks a new schema against the versions registered before it (oldest first, numbered 1, 2, …
/// in the reasons). No findings means compatible.
pub fn check(mode: CompatibilityMode, previous: &[&Value], new: &Value) -> Vec<Incompatibility> {
    let numbered: Vec<(u32, &Value)> = previous
        .iter()
        .enumerate()
        .map(|(i, schema)| (u32::try_from(i + 1).unwrap_or(u32::MAX), *schema))
        .collect();
    check_versions(mode, &numbered, new)
}

/// Like [`check`], with the registry's own version numbers (which skip deleted versions), oldest
/// first.
pub fn check_versions(mode: CompatibilityMode, previous: &[(u32, &Value)], new: &Value) -> Vec<Incompatibility> {
    let against = if mode.is_transitive() {
        previous
    } else {
        previous.last().map_or(&[][..], std::slice::from_ref)
    };
    let mut found = Vec::new();
    for (version, old) in against {
        // The same document accepts the same values: nothing to prove, even where the checker
        // could not follow it (a `$ref` it cannot resolve, say).
        if *old == new {
            continue;
        }
        let old_name = format!("version {version}");
        if mode.checks_backward() {
            found.extend(Checker::new(new, old, NEW_NAME, &old_name, true).run());
        }
        if mode.checks_forward() {
            found.extend(Checker::new(old, new, &old_name, NEW_NAME, false).run());
        }
    }
    found
}

const NEW_NAME: &str = "the new schema";
/// Deeper than any sensible record schema; stops cycles the reference tracking does not see.
const MAX_DEPTH: usize = 64;
/// Comparisons per check, so that a pathological schema cannot keep the hub busy.
const MAX_STEPS: usize = 20_000;
/// Schemas entered per check while validating a finite writer's values (`enum`, `const`): a few
/// per value for a record schema's enum, so ample for long code lists, yet well under a second.
const MAX_VALIDATION_STEPS: usize = 100_000;
/// Findings listed per check (one direction, one version); past that, one finding counts the rest.
const MAX_FINDINGS: usize = 100;
/// The reason given when a limit above is reached.
const TOO_COMPLEX: &str = "the schemas are too deeply nested or too large to compare; cannot prove compatibility";

static TRUE: Value = Value::Bool(true);

/// Bit set of JSON types; `integer` is split from the other numbers so that integer ⊂ number.
type Types = u8;
const NULL: Types = 1;
const BOOLEAN: Types = 2;
const OBJECT: Types = 4;
const ARRAY: Types = 8;
const STRING: Types = 16;
const INTEGER: Types = 32;
const FRACTION: Types = 64;
const NUMBER: Types = INTEGER | FRACTION;
const ANY_TYPE: Types = 127;

/// Keywords with a structural rule below.
const STRUCTURAL: &[&str] = &[
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "minProperties",
    "maxProperties",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
];

/// Assertion keywords compared only for equality: a change is reported as unprovable.
const UNPROVABLE: &[&str] = &[
    "oneOf",
    "not",
    "if",
    "patternProperties",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "propertyNames",
    "contains",
    "minContains",
    "maxContains",
    "prefixItems",
    "additionalItems",
    "unevaluatedProperties",
    "unevaluatedItems",
    "$dynamicRef",
    "$recursiveRef",
];

/// Keywords whose subschemas apply to the value itself, so that what they evaluate counts for an
/// `unevaluatedItems` or `unevaluatedProperties` beside them.
const IN_PLACE_APPLICATORS: &[&str] = &[
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "dependencies",
    "$ref",
    "$dynamicRef",
    "$recursiveRef",
];
/// Keywords that evaluate array items, besides the in-place applicators.
const ITEM_EVALUATORS: &[&str] = &["prefixItems", "items", "additionalItems", "contains"];
/// Keywords that evaluate object properties, besides the in-place applicators.
const PROPERTY_EVALUATORS: &[&str] = &["properties", "patternProperties", "additionalProperties"];

/// Keywords whose meanings depend on one another: one holds for the records of a schema that
/// repeats it only if that schema repeats the others too.
const ENTANGLED: [&[&str]; 6] = [
    &["properties", "patternProperties", "additionalProperties"],
    &["prefixItems", "items", "additionalItems"],
    &["if", "then", "else"],
    &["contains", "minContains", "maxContains"],
    &["minimum", "exclusiveMinimum"],
    &["maximum", "exclusiveMaximum"],
];

/// Whether a keyword can make a value invalid; everything else is an annotation.
fn is_assertion(keyword: &str) -> bool {
    matches!(keyword, "$ref" | "allOf" | "anyOf" | "then" | "else")
        || STRUCTURAL.contains(&keyword)
        || UNPROVABLE.contains(&keyword)
}

/// Both ends of a comparison: the place in the reader schema and in the writer schema.
#[derive(Debug, Clone)]
struct Loc {
    reader: String,
    writer: String,
}

impl Loc {
    fn key(&self, segment: &str) -> Loc {
        Loc {
            reader: push(&self.reader, segment),
            writer: push(&self.writer, segment),
        }
    }

    fn prop(&self, name: &str) -> Loc {
        self.key("properties").key(name)
    }
}

/// Appends one reference token to a JSON pointer, escaping `~` and `/`.
fn push(pointer: &str, segment: &str) -> String {
    format!("{pointer}/{}", segment.replace('~', "~0").replace('/', "~1"))
}

struct Checker<'a> {
    reader_root: &'a Value,
    writer_root: &'a Value,
    reader: &'a str,
    writer: &'a str,
    reader_is_new: bool,
    /// Whether both documents are the same, so that a local `$ref` means the same on both sides.
    same_roots: bool,
    /// Pairs of reference targets being compared; meeting one again closes a cycle, which holds.
    in_progress: HashSet<(String, String)>,
    depth: usize,
    steps: usize,
    /// Shared by every value validated in this check (see [`MAX_VALIDATION_STEPS`]).
    validation_steps: Cell<usize>,
    /// The finding of the first limit reached; every later one repeats it, so that a schema that
    /// branches out exponentially yields one finding, not one per path.
    too_complex: Option<Incompatibility>,
}

impl<'a> Checker<'a> {
    fn new(
        reader: &'a Value,
        writer: &'a Value,
        reader_name: &'a str,
        writer_name: &'a str,
        reader_is_new: bool,
    ) -> Self {
        Checker {
            reader_root: reader,
            writer_root: writer,
            reader: reader_name,
            writer: writer_name,
            reader_is_new,
            same_roots: reader == writer,
            in_progress: HashSet::new(),
            depth: 0,
            steps: 0,
            validation_steps: Cell::new(0),
            too_complex: None,
        }
    }

    fn run(&mut self) -> Vec<Incompatibility> {
        let root = Loc {
            reader: String::new(),
            writer: String::new(),
        };
        // Deduplicated once, here: at every level, for a writer that branches out, it would hash
        // each finding once per level above it.
        let mut found = dedupe(self.accepts_all_of(self.reader_root, self.writer_root, &root));
        if found.len() > MAX_FINDINGS {
            let more = found.len() - MAX_FINDINGS;
            found.truncate(MAX_FINDINGS);
            found.push(Incompatibility {
                pointer: String::new(),
                reason: format!(
                    "and {more} more reasons, not listed, why {} may reject records written under {}",
                    self.reader, self.writer
                ),
            });
        }
        found
    }

    /// The finding for a limit reached at `loc`: the first one's, whichever limit it was.
    fn too_complex(&mut self, loc: &Loc) -> Incompatibility {
        if let Some(found) = &self.too_complex {
            return found.clone();
        }
        let found = self.at(loc, "", TOO_COMPLEX.into());
        self.too_complex = Some(found.clone());
        found
    }

    /// Whether a keyword the writer carries word for word proves the reader's: only if a local
    /// `$ref` inside it resolves to the same schema on both sides.
    fn same(&self, reader_side: Option<&Value>, writer_side: Option<&Value>) -> bool {
        reader_side == writer_side && (self.same_roots || !reader_side.is_some_and(refers_locally))
    }

    /// The reader's keywords that the writer repeats word for word, together with the keywords
    /// their meaning depends on, so that they hold for every record of the writer.
    /// (`unevaluated*` depend on too much; see [`Checker::without_settled_unevaluated`].)
    fn repeated<'k>(&self, r: &'k Map<String, Value>, writer: &Map<String, Value>) -> Vec<&'k str> {
        r.keys()
            .map(String::as_str)
            .filter(|keyword| !keyword.starts_with("unevaluated"))
            .filter(|keyword| {
                let together = ENTANGLED.iter().find(|group| group.contains(keyword));
                together
                    .map_or(&[*keyword][..], |group| group)
                    .iter()
                    .all(|k| self.same(r.get(*k), writer.get(*k)))
            })
            .collect()
    }

    /// The reader without the `unevaluatedItems`/`unevaluatedProperties` that hold for every writer
    /// record, or `None` if none does. Which items or properties such a keyword sees depends on
    /// the keywords beside it (and in its subschemas) that evaluate them; when the writer repeats
    /// all of those and the keyword itself word for word, a writer record's unevaluated items or
    /// properties are the reader's too, and the writer's keyword already holds for them. The
    /// structural rules below cannot tell this: they merge the writer's branches, not the reader's.
    fn without_settled_unevaluated(
        &self,
        r: &Map<String, Value>,
        w: &Map<String, Value>,
    ) -> Option<Map<String, Value>> {
        let mut rest: Option<Map<String, Value>> = None;
        for (keyword, evaluators) in [
            ("unevaluatedItems", ITEM_EVALUATORS),
            ("unevaluatedProperties", PROPERTY_EVALUATORS),
        ] {
            let settled = r.contains_key(keyword)
                && self.same(r.get(keyword), w.get(keyword))
                && evaluators
                    .iter()
                    .chain(IN_PLACE_APPLICATORS)
                    .all(|k| self.same(r.get(*k), w.get(*k)));
            if settled {
                rest.get_or_insert_with(|| r.clone()).remove(keyword);
            }
        }
        rest
    }

    /// A finding at `loc` (on the new schema's side) plus a keyword suffix such as `/type`.
    fn at(&self, loc: &Loc, suffix: &str, reason: String) -> Incompatibility {
        let base = if self.reader_is_new { &loc.reader } else { &loc.writer };
        Incompatibility {
            pointer: format!("{base}{suffix}"),
            reason,
        }
    }

    /// "`what` changed from OLD to NEW", given the reader's and the writer's side.
    fn change(&self, what: &str, reader_side: String, writer_side: String) -> String {
        let (old, new) = if self.reader_is_new {
            (writer_side, reader_side)
        } else {
            (reader_side, writer_side)
        };
        format!("{what} changed from {old} to {new}")
    }

    fn rejects(&self, what: &str) -> String {
        format!(
            "records written under {} may hold {what}, which {} rejects",
            self.writer, self.reader
        )
    }

    /// Does every instance valid under `writer` validate under `reader`? The findings say why not.
    fn accepts_all_of(&mut self, reader: &Value, writer: &Value, loc: &Loc) -> Vec<Incompatibility> {
        self.steps += 1;
        if self.depth >= MAX_DEPTH || self.steps > MAX_STEPS {
            return vec![self.too_complex(loc)];
        }
        self.depth += 1;
        let found = self.compare(reader, writer, loc);
        self.depth -= 1;
        found
    }

    fn compare(&mut self, reader: &Value, writer: &Value, loc: &Loc) -> Vec<Incompatibility> {
        let empty = Map::new();
        let w = match writer {
            Value::Bool(false) => return Vec::new(),
            Value::Bool(true) => &empty,
            Value::Object(w) => w,
            _ => return self.not_schemas(reader, writer, loc),
        };
        let r = match reader {
            Value::Bool(true) => return Vec::new(),
            Value::Bool(false) => {
                return vec![self.at(
                    loc,
                    "",
                    format!(
                        "{} accepts no value here (false): {}",
                        self.reader,
                        self.rejects("a value")
                    ),
                )];
            }
            Value::Object(r) => r,
            _ => return self.not_schemas(reader, writer, loc),
        };
        let settled;
        let r = match self.without_settled_unevaluated(r, w) {
            Some(rest) => {
                settled = rest;
                &settled
            }
            None => r,
        };
        if !r.keys().any(|k| is_assertion(k)) {
            return Vec::new();
        }
        if r.contains_key("$ref") || w.contains_key("$ref") {
            return self.compare_refs(r, w, loc);
        }
        // A reader that is one of the writer's allOf branches word for word reads all its records
        // (merging would lose this where the branch's keywords depend on one another).
        if let Some(Value::Array(branches)) = w.get("allOf")
            && branches.iter().any(|branch| self.same(Some(reader), Some(branch)))
        {
            return Vec::new();
        }
        let w_flat = self.flatten_all_of(w, 0);
        if let Some((values, source)) = self.finite_values(&w_flat) {
            // Keywords the writer repeats (in itself or merged from its allOf branches) already
            // hold for its values; dropping them spares evaluating patterns, formats and the
            // keywords this module cannot evaluate.
            let mut reduced = r.clone();
            for keyword in [self.repeated(r, w), self.repeated(r, &w_flat)].concat() {
                reduced.remove(keyword);
            }
            return self.check_values(&Value::Object(reduced), &values, source, loc);
        }

        // A combinator the writer repeats word for word holds for every writer record, so the
        // reader need not check it again.
        let mut r_eff = r.clone();
        for keyword in ["allOf", "anyOf", "oneOf", "not"] {
            if r.get(keyword).is_some() && self.same(r.get(keyword), w.get(keyword)) {
                r_eff.remove(keyword);
            }
        }
        if r.contains_key("if") && ["if", "then", "else"].iter().all(|k| self.same(r.get(*k), w.get(*k))) {
            for keyword in ["if", "then", "else"] {
                r_eff.remove(keyword);
            }
        }
        if !r_eff.keys().any(|k| is_assertion(k)) {
            return Vec::new();
        }

        // A writer with alternatives: every alternative (with the rest of the writer) must be read.
        if let Some((keyword, branches)) = disjunction(&w_flat) {
            let mut base = w_flat.clone();
            base.remove(keyword);
            let mut found = Vec::new();
            // The branches no longer carry the writer's oneOf, so a changed reader oneOf is
            // judged here, once.
            if keyword == "oneOf" && r_eff.remove("oneOf").is_some() {
                found.push(self.unprovable(loc, "oneOf", "oneOf", w_flat.get("oneOf")));
            }
            let reader_eff = Value::Object(r_eff);
            for (j, branch) in branches.iter().enumerate() {
                let Some(branch) = self.writer_branch(branch) else {
                    continue;
                };
                let mut merged = base.clone();
                merge_into(&mut merged, &branch);
                let branch_loc = Loc {
                    reader: loc.reader.clone(),
                    writer: push(&push(&loc.writer, keyword), &j.to_string()),
                };
                found.extend(self.accepts_all_of(&reader_eff, &Value::Object(merged), &branch_loc));
            }
            return found;
        }

        let writer_value = Value::Object(w_flat.clone());
        let mut found = Vec::new();
        for (keyword, rv) in &r_eff {
            match keyword.as_str() {
                "allOf" => {
                    for (i, branch) in rv.as_array().into_iter().flatten().enumerate() {
                        let branch_loc = Loc {
                            reader: push(&push(&loc.reader, "allOf"), &i.to_string()),
                            writer: loc.writer.clone(),
                        };
                        found.extend(self.accepts_all_of(branch, &writer_value, &branch_loc));
                    }
                }
                "anyOf" => {
                    let alternatives = rv.as_array().map(Vec::as_slice).unwrap_or_default();
                    let mut matched = self.one_alternative_reads(alternatives, &writer_value, loc);
                    // A writer of several types (say string or null) may be read by a different
                    // alternative for each type.
                    let parts = split_types(type_set(&w_flat));
                    if !matched && parts.len() > 1 {
                        matched = parts.into_iter().all(|part| {
                            let mut one_type = w_flat.clone();
                            one_type.insert("type".into(), Value::String(part.into()));
                            self.one_alternative_reads(alternatives, &Value::Object(one_type), loc)
                        });
                    }
                    if !matched {
                        found.push(self.at(
                            loc,
                            "/anyOf",
                            format!(
                                "{}: cannot prove that every record valid under {} matches one of the alternatives of {}",
                                self.keyword_change("anyOf", w_flat.get("anyOf")),
                                self.writer,
                                self.reader
                            ),
                        ));
                    }
                }
                "if" if ["if", "then", "else"]
                    .iter()
                    .any(|k| !self.same(r.get(*k), w_flat.get(*k))) =>
                {
                    found.push(self.unprovable(loc, "if", "if/then/else", w_flat.get("if")));
                }
                "items" if rv.is_array() && !self.same(Some(rv), w_flat.get("items")) => {
                    found.push(self.unprovable(loc, "items", "items", w_flat.get("items")));
                }
                k if UNPROVABLE.contains(&k) && !self.same(Some(rv), w_flat.get(k)) => {
                    found.push(self.unprovable(loc, k, k, w_flat.get(k)));
                }
                _ => {}
            }
        }
        found.extend(self.structural(&r_eff, &w_flat, loc));
        found
    }

    fn one_alternative_reads(&mut self, alternatives: &[Value], writer: &Value, loc: &Loc) -> bool {
        for (i, branch) in alternatives.iter().enumerate() {
            let branch_loc = Loc {
                reader: push(&push(&loc.reader, "anyOf"), &i.to_string()),
                writer: loc.writer.clone(),
            };
            if self.accepts_all_of(branch, writer, &branch_loc).is_empty() {
                return true;
            }
        }
        false
    }

    fn keyword_change(&self, keyword: &str, writer_side: Option<&Value>) -> String {
        match (writer_side, self.reader_is_new) {
            (None, true) => format!("{keyword} was added"),
            (None, false) => format!("{keyword} was removed"),
            (Some(_), _) => format!("{keyword} changed"),
        }
    }

    fn unprovable(&self, loc: &Loc, keyword: &str, label: &str, writer_side: Option<&Value>) -> Incompatibility {
        self.at(
            loc,
            &push("", keyword),
            format!(
                "{}; cannot prove compatibility: this checker does not reason about {label}, so it cannot show that \
                 every record valid under {} is valid under {}",
                self.keyword_change(label, writer_side),
                self.writer,
                self.reader
            ),
        )
    }

    fn not_schemas(&self, reader: &Value, writer: &Value, loc: &Loc) -> Vec<Incompatibility> {
        if json_eq(reader, writer) {
            Vec::new()
        } else {
            vec![self.at(
                loc,
                "",
                "not a JSON Schema (neither an object nor a boolean); cannot prove compatibility".into(),
            )]
        }
    }

    /// `$ref` on either side: local references (`#/$defs/…`) are followed within their own
    /// document; others are compared as text. Keywords beside a reader's `$ref` are a schema of
    /// their own, compared with the writer's.
    fn compare_refs(&mut self, r: &Map<String, Value>, w: &Map<String, Value>, loc: &Loc) -> Vec<Incompatibility> {
        let r_ref = r.get("$ref").and_then(Value::as_str);
        let w_ref = w.get("$ref").and_then(Value::as_str);
        let r_target = r_ref.and_then(|s| resolve(self.reader_root, s));
        let w_target = w_ref.and_then(|s| resolve(self.writer_root, s));
        let mut r_rest = r.clone();
        r_rest.remove("$ref");
        let mut w_rest = w.clone();
        w_rest.remove("$ref");
        let w_whole = Value::Object(w.clone());
        let r_whole = Value::Object(r.clone());
        let quoted = |s: &str| Value::String(s.to_string()).to_string();

        let mut found = Vec::new();
        match (r_ref, w_ref) {
            (Some(a), Some(b)) => match (r_target, w_target) {
                (Some((rt, rp)), Some((wt, wp))) => found.extend(self.follow(rt, rp, wt, wp)),
                _ if a == b => {}
                _ => found.push(self.at(
                    loc,
                    "/$ref",
                    format!(
                        "{}; cannot prove compatibility: the referenced schemas cannot be compared here",
                        self.change("reference", quoted(a), quoted(b))
                    ),
                )),
            },
            (Some(a), None) => match r_target {
                Some((rt, rp)) => found.extend(self.follow(rt, rp, &w_whole, loc.writer.clone())),
                None => found.push(self.at(
                    loc,
                    "/$ref",
                    format!(
                        "{} refers to {}, which cannot be resolved within the schema; cannot prove compatibility",
                        self.reader,
                        quoted(a)
                    ),
                )),
            },
            (None, Some(b)) => match w_target {
                Some((wt, wp)) => found.extend(self.follow(&r_whole, loc.reader.clone(), wt, wp)),
                None => found.push(self.at(
                    loc,
                    "/$ref",
                    format!(
                        "{} refers to {}, which cannot be resolved within the schema; cannot prove compatibility",
                        self.writer,
                        quoted(b)
                    ),
                )),
            },
            (None, None) => {
                // `$ref` that is not a string: not a valid schema; compare the rest.
                if r.get("$ref").is_some() && r.get("$ref") != w.get("$ref") {
                    found.push(self.unprovable(loc, "$ref", "$ref", w.get("$ref")));
                }
                return [
                    found,
                    self.accepts_all_of(&Value::Object(r_rest), &Value::Object(w_rest), loc),
                ]
                .concat();
            }
        }
        if r_ref.is_some() && r_rest.keys().any(|k| is_assertion(k)) {
            let writer_side = if w_ref.is_some() {
                Value::Object(w_rest)
            } else {
                w_whole
            };
            found.extend(self.accepts_all_of(&Value::Object(r_rest), &writer_side, loc));
        }
        found
    }

    fn follow(&mut self, reader: &Value, reader_at: String, writer: &Value, writer_at: String) -> Vec<Incompatibility> {
        let key = (reader_at, writer_at);
        if self.in_progress.contains(&key) {
            return Vec::new();
        }
        self.in_progress.insert(key.clone());
        let loc = Loc {
            reader: key.0.clone(),
            writer: key.1.clone(),
        };
        let found = self.accepts_all_of(reader, writer, &loc);
        self.in_progress.remove(&key);
        found
    }

    /// The writer with its `allOf` branches merged in. Merging may only widen: a keyword two
    /// branches constrain differently keeps one of them, which admits more records, never fewer.
    fn flatten_all_of(&self, w: &Map<String, Value>, depth: usize) -> Map<String, Value> {
        let Some(Value::Array(branches)) = w.get("allOf") else {
            return w.clone();
        };
        let mut flat = w.clone();
        flat.remove("allOf");
        if depth > 8 {
            return flat;
        }
        for branch in branches {
            if let Some(branch) = self.writer_branch(branch) {
                let branch = self.flatten_all_of(&branch, depth + 1);
                merge_into(&mut flat, &branch);
            }
        }
        flat
    }

    /// A writer's `allOf`/`anyOf` branch as an object, its local `$ref` followed one step.
    fn writer_branch(&self, branch: &Value) -> Option<Map<String, Value>> {
        match branch {
            Value::Bool(true) => Some(Map::new()),
            Value::Object(m) => {
                let target = m
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|s| resolve(self.writer_root, s));
                match target {
                    Some((Value::Object(t), _)) => {
                        let mut merged = m.clone();
                        merged.remove("$ref");
                        merge_into(&mut merged, t);
                        Some(merged)
                    }
                    _ => Some(m.clone()),
                }
            }
            _ => None,
        }
    }

    /// The values a writer can produce when it names them (`const`, `enum`, or types null and
    /// boolean only), keeping those its other keywords do not rule out.
    fn finite_values(&self, w: &Map<String, Value>) -> Option<(Vec<Value>, &'static str)> {
        let (candidates, source) = if let Some(c) = w.get("const") {
            (vec![c.clone()], "const")
        } else if let Some(Value::Array(values)) = w.get("enum") {
            (values.clone(), "enum")
        } else {
            let types = type_set(w);
            if !w.contains_key("type") || types == 0 || types & !(NULL | BOOLEAN) != 0 {
                return None;
            }
            let mut values = Vec::new();
            if types & NULL != 0 {
                values.push(Value::Null);
            }
            if types & BOOLEAN != 0 {
                values.extend([Value::Bool(false), Value::Bool(true)]);
            }
            (values, "type")
        };
        // The values satisfy the keyword they come from; checking each against a long enum again
        // would take time quadratic in its length.
        let mut schema = w.clone();
        schema.remove(source);
        let schema = Value::Object(schema);
        let writer = Validation::new(self.writer_root, &self.validation_steps);
        // A value the validation cannot decide is kept: the writer may produce it.
        let values = candidates
            .into_iter()
            .filter(|v| !matches!(writer.validate(&schema, v, "", 0), Verdict::Invalid { .. }))
            .collect();
        Some((values, source))
    }

    fn check_values(&mut self, reader: &Value, values: &[Value], source: &str, loc: &Loc) -> Vec<Incompatibility> {
        let mut found = Vec::new();
        for value in values {
            let shown = show(value);
            let validation = Validation::new(self.reader_root, &self.validation_steps);
            let verdict = validation.validate(reader, value, &loc.reader, 0);
            if validation.gave_up.get() && matches!(verdict, Verdict::Unknown { .. }) {
                found.push(self.too_complex(loc));
                continue;
            }
            let (pointer, reason) = match verdict {
                Verdict::Valid => continue,
                Verdict::Invalid { pointer, why } => {
                    let reason = if source == "enum" && pointer == push(&loc.reader, "enum") {
                        let summary = if self.reader_is_new { "was removed" } else { "was added" };
                        format!(
                            "enum value {shown} {summary}: records written under {} may hold it, which {} rejects",
                            self.writer, self.reader
                        )
                    } else if source == "const" && pointer == push(&loc.reader, "const") {
                        let reader_const = reader.get("const").map(show).unwrap_or_default();
                        format!(
                            "{}: {}",
                            self.change("const", reader_const, shown.clone()),
                            self.rejects(&shown)
                        )
                    } else {
                        format!(
                            "value {shown}, allowed by {}, is rejected by {}: {why}",
                            self.writer, self.reader
                        )
                    };
                    (pointer, reason)
                }
                Verdict::Unknown { pointer, keyword } => (
                    pointer,
                    format!(
                        "cannot verify that value {shown}, allowed by {}, satisfies {keyword} in {}; cannot prove \
                         compatibility",
                        self.writer, self.reader
                    ),
                ),
            };
            let pointer = if self.reader_is_new {
                pointer
            } else {
                push(&loc.writer, source)
            };
            found.push(Incompatibility { pointer, reason });
        }
        found
    }

    /// The keyword-by-keyword rules, for a writer that is neither finite nor a disjunction.
    fn structural(&mut self, r: &Map<String, Value>, w: &Map<String, Value>, loc: &Loc) -> Vec<Incompatibility> {
        let mut found = Vec::new();
        let (reader_types, writer_types) = (type_set(r), type_set(w));
        let rejected = writer_types & !reader_types;
        if rejected != 0 {
            let reason = format!(
                "{}: {}",
                self.change("type", type_text(r), type_text(w)),
                self.rejects(&describe_types(rejected))
            );
            found.push(self.at(loc, "/type", reason));
        }
        let common = writer_types & reader_types;
        if common == 0 {
            return found;
        }
        if let Some(value) = r.get("const") {
            let summary = if self.reader_is_new {
                format!("the value is now fixed to {}", show(value))
            } else {
                format!("the fixed value {} was dropped", show(value))
            };
            found.push(self.at(loc, "/const", format!("{summary}: {}", self.rejects("other values"))));
        } else if let Some(Value::Array(values)) = r.get("enum") {
            let summary = if self.reader_is_new {
                format!(
                    "values are now restricted to the enum {}",
                    show(&Value::Array(values.clone()))
                )
            } else {
                format!("the enum {} was dropped", show(&Value::Array(values.clone())))
            };
            found.push(self.at(loc, "/enum", format!("{summary}: {}", self.rejects("other values"))));
        }
        if common & STRING != 0 {
            found.extend(self.strings(r, w, loc));
        }
        if common & NUMBER != 0 {
            found.extend(self.numbers(r, w, writer_types & common, loc));
        }
        if common & OBJECT != 0 {
            found.extend(self.objects(r, w, loc));
        }
        if common & ARRAY != 0 {
            found.extend(self.arrays(r, w, loc));
        }
        found
    }

    /// A lower limit on a count (`minLength`, `minItems`, `minProperties`) may not rise.
    fn count_floor(
        &self,
        r: &Map<String, Value>,
        w: &Map<String, Value>,
        keyword: &str,
        loc: &Loc,
        what: &str,
    ) -> Option<Incompatibility> {
        let limit = r.get(keyword)?;
        let reader_floor = limit.as_f64()?;
        let writer_floor = w.get(keyword).and_then(Value::as_f64).unwrap_or(0.0);
        (reader_floor > writer_floor).then(|| {
            let reason = format!(
                "{}: {}",
                self.change(keyword, show(limit), shown_or_unset(w.get(keyword))),
                self.rejects(&format!("{what} {}", show(limit)))
            );
            self.at(loc, &push("", keyword), reason)
        })
    }

    /// An upper limit on a count (`maxLength`, `maxItems`, `maxProperties`) may not fall.
    fn count_ceiling(
        &self,
        r: &Map<String, Value>,
        w: &Map<String, Value>,
        keyword: &str,
        loc: &Loc,
        what: &str,
    ) -> Option<Incompatibility> {
        let limit = r.get(keyword)?;
        let reader_ceiling = limit.as_f64()?;
        let writer_ceiling = w.get(keyword).and_then(Value::as_f64);
        writer_ceiling.is_none_or(|c| c > reader_ceiling).then(|| {
            let reason = format!(
                "{}: {}",
                self.change(keyword, show(limit), shown_or_unset(w.get(keyword))),
                self.rejects(&format!("{what} {}", show(limit)))
            );
            self.at(loc, &push("", keyword), reason)
        })
    }

    fn strings(&self, r: &Map<String, Value>, w: &Map<String, Value>, loc: &Loc) -> Vec<Incompatibility> {
        let mut found = Vec::new();
        found.extend(self.count_floor(r, w, "minLength", loc, "strings with fewer characters than"));
        found.extend(self.count_ceiling(r, w, "maxLength", loc, "strings with more characters than"));
        // Patterns are compared as text: proving one regular expression includes another is out
        // of reach, so any change on the reader's side narrows.
        if let Some(pattern) = r.get("pattern")
            && w.get("pattern") != Some(pattern)
        {
            let reason = format!(
                "{}: {}",
                self.change("pattern", show(pattern), shown_or_none(w.get("pattern"))),
                self.rejects(&format!("strings that do not match {}", show(pattern)))
            );
            found.push(self.at(loc, "/pattern", reason));
        }
        if let Some(format) = r.get("format")
            && w.get("format") != Some(format)
        {
            let reason = format!(
                "{}: {}",
                self.change("format", show(format), shown_or_none(w.get("format"))),
                self.rejects(&format!("strings that are not of format {}", show(format)))
            );
            found.push(self.at(loc, "/format", reason));
        }
        found
    }

    fn numbers(
        &self,
        r: &Map<String, Value>,
        w: &Map<String, Value>,
        writer_numbers: Types,
        loc: &Loc,
    ) -> Vec<Incompatibility> {
        let mut found = Vec::new();
        if let Some(floor) = bound(r, true) {
            let writer_floor = bound(w, true);
            let covered = writer_floor.as_ref().is_some_and(|wf| {
                wf.value > floor.value || (wf.value == floor.value && (wf.exclusive || !floor.exclusive))
            });
            if !covered {
                let what = if floor.exclusive {
                    format!("numbers of {} or less", show(&floor.raw))
                } else {
                    format!("numbers below {}", show(&floor.raw))
                };
                let reason = format!(
                    "{}: {}",
                    self.change("lower bound", floor.text(), Bound::text_of(writer_floor.as_ref())),
                    self.rejects(&what)
                );
                found.push(self.at(loc, &push("", floor.keyword), reason));
            }
        }
        if let Some(ceiling) = bound(r, false) {
            let writer_ceiling = bound(w, false);
            let covered = writer_ceiling.as_ref().is_some_and(|wc| {
                wc.value < ceiling.value || (wc.value == ceiling.value && (wc.exclusive || !ceiling.exclusive))
            });
            if !covered {
                let what = if ceiling.exclusive {
                    format!("numbers of {} or more", show(&ceiling.raw))
                } else {
                    format!("numbers above {}", show(&ceiling.raw))
                };
                let reason = format!(
                    "{}: {}",
                    self.change("upper bound", ceiling.text(), Bound::text_of(writer_ceiling.as_ref())),
                    self.rejects(&what)
                );
                found.push(self.at(loc, &push("", ceiling.keyword), reason));
            }
        }
        if let Some(step) = r.get("multipleOf")
            && let Some(reader_step) = step.as_f64().filter(|s| *s > 0.0)
        {
            let writer_step = w.get("multipleOf").and_then(Value::as_f64);
            let covered = writer_step.is_some_and(|ws| is_multiple(ws, reader_step))
                || (writer_numbers & FRACTION == 0 && is_multiple(1.0, reader_step));
            if !covered {
                let reason = format!(
                    "{}: {}",
                    self.change("multipleOf", show(step), shown_or_unset(w.get("multipleOf"))),
                    self.rejects(&format!("numbers that are not multiples of {}", show(step)))
                );
                found.push(self.at(loc, "/multipleOf", reason));
            }
        }
        found
    }

    fn objects(&mut self, r: &Map<String, Value>, w: &Map<String, Value>, loc: &Loc) -> Vec<Incompatibility> {
        let mut found = Vec::new();
        let empty = Map::new();
        let reader_props = r.get("properties").and_then(Value::as_object).unwrap_or(&empty);
        let writer_props = w.get("properties").and_then(Value::as_object).unwrap_or(&empty);

        let writer_required: HashSet<&str> = string_list(w.get("required")).collect();
        for name in string_list(r.get("required")) {
            if writer_required.contains(name) {
                continue;
            }
            let declared = writer_props.contains_key(name);
            let summary = match (declared, self.reader_is_new) {
                (true, true) => format!("property '{name}' became required"),
                (true, false) => format!("property '{name}' is no longer required"),
                (false, true) => format!("new required property '{name}'"),
                (false, false) => format!("required property '{name}' was removed"),
            };
            found.push(self.at(
                loc,
                "/required",
                format!(
                    "{summary}: records written under {} may lack it, which {} rejects",
                    self.writer, self.reader
                ),
            ));
        }

        // Properties the writer declares must be read by the reader's declaration, or else by
        // its additionalProperties. Properties the writer does not declare it does not produce.
        // Without additionalProperties, unevaluatedProperties plays its part; that ignores what
        // the reader's subschemas evaluate, which can only make the reader stricter here.
        let (reader_extra, extra_keyword) = match r.get("additionalProperties") {
            Some(extra) => (Some(extra), "additionalProperties"),
            None => (r.get("unevaluatedProperties"), "unevaluatedProperties"),
        };
        for (name, writer_schema) in writer_props {
            let prop_loc = loc.prop(name);
            if let Some(reader_schema) = reader_props.get(name) {
                found.extend(self.accepts_all_of(reader_schema, writer_schema, &prop_loc));
                continue;
            }
            match reader_extra {
                None | Some(Value::Bool(true)) => {}
                Some(Value::Bool(false)) => {
                    if *writer_schema != Value::Bool(false) {
                        found.push(self.undeclared(r, name, extra_keyword, &prop_loc));
                    }
                }
                Some(extra) => {
                    let extra_loc = Loc {
                        reader: push(&loc.reader, extra_keyword),
                        writer: prop_loc.writer.clone(),
                    };
                    found.extend(self.accepts_all_of(extra, writer_schema, &extra_loc));
                }
            }
        }

        // A writer that explicitly allows undeclared properties produces them.
        if let Some(writer_extra) = w.get("additionalProperties").filter(|v| **v != Value::Bool(false)) {
            for (name, reader_schema) in reader_props {
                if !writer_props.contains_key(name) {
                    let prop_loc = Loc {
                        reader: loc.prop(name).reader,
                        writer: push(&loc.writer, "additionalProperties"),
                    };
                    found.extend(self.accepts_all_of(reader_schema, writer_extra, &prop_loc));
                }
            }
            match reader_extra {
                None | Some(Value::Bool(true)) => {}
                Some(Value::Bool(false)) => found.push(self.at(
                    loc,
                    &push("", extra_keyword),
                    format!(
                        "{} allows properties it does not declare, but {} forbids them ({extra_keyword}: false): {}",
                        self.writer,
                        self.reader,
                        self.rejects("such properties")
                    ),
                )),
                Some(extra) => {
                    let extra_loc = Loc {
                        reader: push(&loc.reader, extra_keyword),
                        writer: push(&loc.writer, "additionalProperties"),
                    };
                    found.extend(self.accepts_all_of(extra, writer_extra, &extra_loc));
                }
            }
        }

        // Names the writer declares by pattern, which a closed reader may not accept. A reader
        // without patterns of its own holds them to its extra schema, like any name it does not
        // declare; with other patterns, which this module cannot match, nothing is proved.
        let writer_patterns = w
            .get("patternProperties")
            .and_then(Value::as_object)
            .filter(|m| !m.is_empty());
        let reader_has_patterns = r
            .get("patternProperties")
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty());
        if let Some(patterns) = writer_patterns
            && !matches!(reader_extra, None | Some(Value::Bool(true)))
            && !self.same(r.get("patternProperties"), w.get("patternProperties"))
        {
            match reader_extra {
                Some(extra) if !reader_has_patterns && *extra != Value::Bool(false) => {
                    for (pattern, writer_schema) in patterns {
                        let pattern_loc = Loc {
                            reader: push(&loc.reader, extra_keyword),
                            writer: push(&push(&loc.writer, "patternProperties"), pattern),
                        };
                        found.extend(self.accepts_all_of(extra, writer_schema, &pattern_loc));
                    }
                }
                _ => found.push(self.at(
                    loc,
                    "/patternProperties",
                    format!(
                        "{} allows properties by patternProperties that {} may not accept; cannot prove compatibility",
                        self.writer, self.reader
                    ),
                )),
            }
        }

        found.extend(self.count_floor(r, w, "minProperties", loc, "objects with fewer properties than"));
        found.extend(self.count_ceiling(r, w, "maxProperties", loc, "objects with more properties than"));
        found
    }

    fn undeclared(&self, r: &Map<String, Value>, name: &str, extra_keyword: &str, prop_loc: &Loc) -> Incompatibility {
        let patterns = if r.contains_key("patternProperties") {
            " (its patternProperties might match the name, but this checker cannot evaluate patterns)"
        } else {
            ""
        };
        let summary = if self.reader_is_new {
            format!("property '{name}' was removed")
        } else {
            format!("property '{name}' was added")
        };
        self.at(
            prop_loc,
            "",
            format!(
                "{summary}, and {} forbids undeclared properties ({extra_keyword}: false){patterns}: records \
                 written under {} may carry '{name}', which {} rejects",
                self.reader, self.writer, self.reader
            ),
        )
    }

    fn arrays(&mut self, r: &Map<String, Value>, w: &Map<String, Value>, loc: &Loc) -> Vec<Incompatibility> {
        let mut found = Vec::new();
        // Array-form `items` (tuples) is compared for equality with the other unprovable keywords.
        // Without `items`, unevaluatedItems covers the same positions, or more strictly fewer.
        let (reader_items, items_keyword) = match r.get("items") {
            Some(items) => (Some(items).filter(|v| !v.is_array()), "items"),
            None => (r.get("unevaluatedItems"), "unevaluatedItems"),
        };
        if let Some(reader_items) = reader_items {
            let mut writer_items: Vec<(&Value, String)> = Vec::new();
            match w.get("items") {
                Some(Value::Array(tuple)) => {
                    for (i, item) in tuple.iter().enumerate() {
                        writer_items.push((item, push(&push(&loc.writer, "items"), &i.to_string())));
                    }
                    let rest = w.get("additionalItems").unwrap_or(&TRUE);
                    writer_items.push((rest, push(&loc.writer, "additionalItems")));
                }
                Some(items) => writer_items.push((items, push(&loc.writer, "items"))),
                None => writer_items.push((&TRUE, push(&loc.writer, "items"))),
            }
            // With equal prefixItems, `items` covers the same positions on both sides.
            let same_prefix = r.get("prefixItems").is_some() && self.same(r.get("prefixItems"), w.get("prefixItems"));
            if !same_prefix {
                for (i, item) in w
                    .get("prefixItems")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    writer_items.push((item, push(&push(&loc.writer, "prefixItems"), &i.to_string())));
                }
            }
            for (writer_item, writer_at) in writer_items {
                let item_loc = Loc {
                    reader: push(&loc.reader, items_keyword),
                    writer: writer_at,
                };
                found.extend(self.accepts_all_of(reader_items, writer_item, &item_loc));
            }
        }
        found.extend(self.count_floor(r, w, "minItems", loc, "arrays with fewer items than"));
        found.extend(self.count_ceiling(r, w, "maxItems", loc, "arrays with more items than"));
        if r.get("uniqueItems") == Some(&Value::Bool(true)) && w.get("uniqueItems") != Some(&Value::Bool(true)) {
            let reason = format!(
                "{}: {}",
                self.change("uniqueItems", "true".into(), shown_or_unset(w.get("uniqueItems"))),
                self.rejects("arrays that repeat an item")
            );
            found.push(self.at(loc, "/uniqueItems", reason));
        }
        found
    }
}

/// A numeric bound from `minimum`/`exclusiveMinimum` (or the maximum pair), the tighter of the
/// two when both are given; draft-04's boolean `exclusiveMinimum` is understood.
struct Bound {
    value: f64,
    exclusive: bool,
    keyword: &'static str,
    raw: Value,
}

impl Bound {
    fn text(&self) -> String {
        format!("{} {}", self.keyword, show(&self.raw))
    }

    fn text_of(bound: Option<&Bound>) -> String {
        bound.map_or_else(|| "none".to_string(), Bound::text)
    }
}

fn bound(m: &Map<String, Value>, lower: bool) -> Option<Bound> {
    let (inclusive_kw, exclusive_kw) = if lower {
        ("minimum", "exclusiveMinimum")
    } else {
        ("maximum", "exclusiveMaximum")
    };
    let draft4_exclusive = m.get(exclusive_kw) == Some(&Value::Bool(true));
    let inclusive = m.get(inclusive_kw).and_then(|raw| {
        raw.as_f64().map(|value| Bound {
            value,
            exclusive: draft4_exclusive,
            keyword: inclusive_kw,
            raw: raw.clone(),
        })
    });
    let exclusive = m.get(exclusive_kw).and_then(|raw| {
        raw.as_f64().map(|value| Bound {
            value,
            exclusive: true,
            keyword: exclusive_kw,
            raw: raw.clone(),
        })
    });
    match (inclusive, exclusive) {
        (Some(a), Some(b)) => {
            let b_tighter = if lower { b.value >= a.value } else { b.value <= a.value };
            Some(if b_tighter { b } else { a })
        }
        (a, b) => a.or(b),
    }
}

fn is_multiple(value: f64, step: f64) -> bool {
    if value.fract() == 0.0 && step.fract() == 0.0 && step != 0.0 {
        return value % step == 0.0;
    }
    let quotient = value / step;
    quotient.is_finite() && (quotient - quotient.round()).abs() <= 1e-9 * quotient.abs().max(1.0)
}

/// The writer's alternatives (`anyOf`, else `oneOf`): for inclusion, oneOf is no stricter.
fn disjunction(w: &Map<String, Value>) -> Option<(&'static str, Vec<Value>)> {
    ["anyOf", "oneOf"].into_iter().find_map(|keyword| {
        w.get(keyword)
            .and_then(Value::as_array)
            .map(|branches| (keyword, branches.clone()))
    })
}

/// Adds a branch's keywords to an accumulated writer schema (a conjunction), so that the result
/// admits every record both admit, and perhaps more, never fewer. Properties declared on both
/// sides are kept as an `allOf` of the two; `required` lists are united; any other keyword both
/// constrain differently keeps the first, which only widens.
///
/// A merge must not change what the accumulated schema's own keywords mean, yet several keywords
/// mean something only beside others: `additionalProperties` applies to the names `properties`
/// and `patternProperties` do not declare, `items` to the positions after `prefixItems`,
/// `then`/`else` follow `if`, `minContains` counts what `contains` matches, a draft-4 boolean
/// `exclusiveMinimum` qualifies `minimum`, and `unevaluated*` sees what everything beside it
/// evaluates. So:
/// - a property only the branch declares is an additional one for the accumulated schema, and
///   is held to its `additionalProperties` too (left out if that is false: no record has it),
///   unless `patternProperties`, which this module cannot match, might claim the name;
/// - likewise the branch's `patternProperties`, taken only where the accumulated schema has none
///   (a closed one takes none): for the names the accumulated schema does not declare, which
///   are the only ones this module reads patterns for, that is exact;
/// - the item keywords, `if`/`then`/`else`, `contains` with its counts and a draft-4 bound come
///   in only together, and only where the accumulated schema has none of them;
/// - the branch's `unevaluatedItems` and `unevaluatedProperties` are left out.
fn merge_into(acc: &mut Map<String, Value>, branch: &Map<String, Value>) {
    const TOGETHER: [&[&str]; 3] = [
        &["prefixItems", "items", "additionalItems"],
        &["if", "then", "else"],
        &["contains", "minContains", "maxContains"],
    ];
    let has_any = |keywords: &[&str]| keywords.iter().any(|k| acc.contains_key(*k));
    let mut held_back: Vec<&str> = vec!["$ref", "unevaluatedItems", "unevaluatedProperties"];
    for group in TOGETHER {
        if has_any(group) {
            held_back.extend(group);
        }
    }
    for bound in [["minimum", "exclusiveMinimum"], ["maximum", "exclusiveMaximum"]] {
        let draft4 = [&*acc, branch]
            .iter()
            .any(|m| m.get(bound[1]).is_some_and(Value::is_boolean));
        if draft4 && has_any(&bound) {
            held_back.extend(bound);
        }
    }
    let extra = acc.get("additionalProperties").cloned();
    if extra == Some(Value::Bool(false)) {
        held_back.push("patternProperties");
    }
    let has_patterns = acc
        .get("patternProperties")
        .and_then(Value::as_object)
        .is_some_and(|p| !p.is_empty());

    for (keyword, value) in branch {
        if held_back.contains(&keyword.as_str()) {
            continue;
        }
        match (keyword.as_str(), value) {
            ("patternProperties", Value::Object(from)) if !has_patterns => {
                let held = |schema: &Value| match &extra {
                    None | Some(Value::Bool(true)) => schema.clone(),
                    Some(extra) => all_of_schema(extra.clone(), schema.clone()),
                };
                let from = from.iter().map(|(pattern, schema)| (pattern.clone(), held(schema)));
                acc.insert(keyword.clone(), Value::Object(from.collect()));
            }
            ("properties", Value::Object(from)) => {
                for (name, schema) in from {
                    let declared = acc
                        .get("properties")
                        .and_then(Value::as_object)
                        .is_some_and(|d| d.contains_key(name));
                    let schema = match &extra {
                        _ if declared || has_patterns => schema.clone(),
                        None | Some(Value::Bool(true)) => schema.clone(),
                        Some(Value::Bool(false)) => continue,
                        Some(extra) => all_of_schema(extra.clone(), schema.clone()),
                    };
                    let into = acc.entry("properties").or_insert_with(|| Value::Object(Map::new()));
                    let Value::Object(into) = into else { break };
                    match into.get_mut(name) {
                        Some(existing) if *existing != schema => *existing = all_of_schema(existing.take(), schema),
                        Some(_) => {}
                        None => {
                            into.insert(name.clone(), schema);
                        }
                    }
                }
            }
            ("required", _) => {
                let mut names: Vec<Value> = acc
                    .get("required")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for name in value.as_array().into_iter().flatten() {
                    if !names.contains(name) {
                        names.push(name.clone());
                    }
                }
                acc.insert(keyword.clone(), Value::Array(names));
            }
            _ => {
                acc.entry(keyword.clone()).or_insert_with(|| value.clone());
            }
        }
    }
}

/// `{"allOf": [a, b]}`.
fn all_of_schema(a: Value, b: Value) -> Value {
    Value::Object(Map::from_iter([("allOf".to_string(), Value::Array(vec![a, b]))]))
}

/// Whether a schema holds a reference resolved within its own document (a fragment such as
/// `#/$defs/a`, a relative address, a dynamic reference), which may mean another schema in
/// another document.
fn refers_locally(schema: &Value) -> bool {
    match schema {
        Value::Object(m) => m.iter().any(|(k, v)| match k.as_str() {
            "$ref" => !v.as_str().is_some_and(is_absolute_uri),
            "$dynamicRef" | "$recursiveRef" => true,
            _ => refers_locally(v),
        }),
        Value::Array(items) => items.iter().any(refers_locally),
        _ => false,
    }
}

/// `scheme:…` with no fragment: an address that means the same whatever document holds it.
fn is_absolute_uri(reference: &str) -> bool {
    let scheme = reference.split(':').next().unwrap_or_default();
    reference.len() > scheme.len()
        && !reference.contains('#')
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

/// Follows a local reference (`#`, `#/$defs/name`) within its document. Anchors and other
/// documents are not resolved.
fn resolve<'v>(root: &'v Value, reference: &str) -> Option<(&'v Value, String)> {
    let fragment = reference.strip_prefix('#')?;
    let pointer = percent_decode(fragment)?;
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return None;
    }
    root.pointer(&pointer).map(|target| (target, pointer))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn type_bits(name: &str) -> Types {
    match name {
        "null" => NULL,
        "boolean" => BOOLEAN,
        "object" => OBJECT,
        "array" => ARRAY,
        "string" => STRING,
        "integer" => INTEGER,
        "number" => NUMBER,
        _ => 0,
    }
}

fn types_of(keyword: &Value) -> Types {
    match keyword {
        Value::String(name) => type_bits(name),
        Value::Array(names) => names
            .iter()
            .filter_map(Value::as_str)
            .map(type_bits)
            .fold(0, |a, b| a | b),
        _ => ANY_TYPE,
    }
}

fn type_set(m: &Map<String, Value>) -> Types {
    m.get("type").map_or(ANY_TYPE, types_of)
}

/// A type set as single JSON Schema type names; integers go with the other numbers if both occur.
fn split_types(types: Types) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = [
        (NULL, "null"),
        (BOOLEAN, "boolean"),
        (OBJECT, "object"),
        (ARRAY, "array"),
        (STRING, "string"),
    ]
    .into_iter()
    .filter(|(bit, _)| types & bit != 0)
    .map(|(_, name)| name)
    .collect();
    if types & FRACTION != 0 {
        names.push("number");
    } else if types & INTEGER != 0 {
        names.push("integer");
    }
    names
}

fn type_text(m: &Map<String, Value>) -> String {
    m.get("type").map_or_else(|| "any type".to_string(), show)
}

fn describe_types(types: Types) -> String {
    let mut names = Vec::new();
    if types & NULL != 0 {
        names.push("null");
    }
    if types & BOOLEAN != 0 {
        names.push("booleans");
    }
    if types & OBJECT != 0 {
        names.push("objects");
    }
    if types & ARRAY != 0 {
        names.push("arrays");
    }
    if types & STRING != 0 {
        names.push("strings");
    }
    match types & NUMBER {
        NUMBER => names.push("numbers"),
        INTEGER => names.push("integers"),
        FRACTION => names.push("numbers with a fractional part"),
        _ => {}
    }
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => (*last).to_string(),
        None => "values".to_string(),
    }
}

fn value_type(value: &Value) -> Types {
    match value {
        Value::Null => NULL,
        Value::Bool(_) => BOOLEAN,
        Value::Object(_) => OBJECT,
        Value::Array(_) => ARRAY,
        Value::String(_) => STRING,
        Value::Number(n) if n.is_i64() || n.is_u64() => INTEGER,
        // JSON Schema counts 1.0 as an integer.
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 => INTEGER,
            _ => FRACTION,
        },
    }
}

fn string_list(value: Option<&Value>) -> impl Iterator<Item = &str> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// JSON equality as JSON Schema defines it: `1` equals `1.0`.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || ((x.is_f64() || y.is_f64()) && x.as_f64() == y.as_f64()),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// A value for a reason, shortened if long.
fn show(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 80 {
        text
    } else {
        let head: String = text.chars().take(77).collect();
        format!("{head}…")
    }
}

fn shown_or_unset(value: Option<&Value>) -> String {
    value.map_or_else(|| "unset".to_string(), show)
}

fn shown_or_none(value: Option<&Value>) -> String {
    value.map_or_else(|| "none".to_string(), show)
}

fn dedupe(found: Vec<Incompatibility>) -> Vec<Incompatibility> {
    let mut seen = HashSet::new();
    found
        .into_iter()
        .filter(|f| seen.insert((f.pointer.clone(), f.reason.clone())))
        .collect()
}

/// The outcome of validating one concrete value.
#[derive(Debug)]
enum Verdict {
    Valid,
    Invalid {
        pointer: String,
        why: String,
    },
    /// A keyword this module cannot evaluate (a `pattern`, a `format`, an external `$ref`).
    Unknown {
        pointer: String,
        keyword: String,
    },
}

/// Combines verdicts that must all hold: the first invalid one wins, else the first unknown.
fn all_of(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
    let mut unknown = None;
    for verdict in verdicts {
        match verdict {
            Verdict::Valid => {}
            Verdict::Invalid { .. } => return verdict,
            Verdict::Unknown { .. } => {
                unknown.get_or_insert(verdict);
            }
        }
    }
    unknown.unwrap_or(Verdict::Valid)
}

/// Validates values against the schemas of one document, as far as this module can without
/// regular expressions or format checkers, in bounded time: the schemas it enters are counted
/// against the check's budget, and past it (or past [`MAX_DEPTH`]) it gives up, saying so.
struct Validation<'v> {
    root: &'v Value,
    /// Schemas entered so far in the whole check.
    steps: &'v Cell<usize>,
    /// Set when a limit stopped the validation (the verdict is then `Unknown`).
    gave_up: Cell<bool>,
    /// The `$ref` targets being entered, each with the value it is applied to (by address: the
    /// same node of the value being checked). Entering one again means the reference leads back
    /// to itself without moving into the value, which would never end.
    entered: RefCell<HashSet<(String, *const Value)>>,
}

impl<'v> Validation<'v> {
    fn new(root: &'v Value, steps: &'v Cell<usize>) -> Self {
        Validation {
            root,
            steps,
            gave_up: Cell::new(false),
            entered: RefCell::new(HashSet::new()),
        }
    }

    /// Validates one value against a schema. `at` is the schema's pointer within the root, for
    /// the verdict's pointer.
    fn validate(&self, schema: &Value, value: &Value, at: &str, depth: usize) -> Verdict {
        self.steps.set(self.steps.get() + 1);
        if depth > MAX_DEPTH || self.steps.get() > MAX_VALIDATION_STEPS {
            self.gave_up.set(true);
            return Verdict::Unknown {
                pointer: at.to_string(),
                keyword: "schema".into(),
            };
        }
        match schema {
            Value::Bool(true) => Verdict::Valid,
            Value::Bool(false) => Verdict::Invalid {
                pointer: at.to_string(),
                why: "no value is allowed here".into(),
            },
            Value::Object(m) => all_of(m.iter().map(|(k, kv)| keyword(self, m, k, kv, value, at, depth))),
            _ => Verdict::Unknown {
                pointer: at.to_string(),
                keyword: "schema".into(),
            },
        }
    }

    /// Follows a local `$ref` from `value`, unless that would go round in a circle.
    fn reference(&self, target: &Value, pointer: String, value: &Value, depth: usize) -> Option<Verdict> {
        let key = (pointer, std::ptr::from_ref(value));
        if !self.entered.borrow_mut().insert(key.clone()) {
            return None;
        }
        let verdict = self.validate(target, value, &key.0, depth + 1);
        self.entered.borrow_mut().remove(&key);
        Some(verdict)
    }
}

fn keyword(
    validation: &Validation,
    m: &Map<String, Value>,
    k: &str,
    kv: &Value,
    value: &Value,
    at: &str,
    depth: usize,
) -> Verdict {
    let here = push(at, k);
    let invalid = |why: String| Verdict::Invalid {
        pointer: here.clone(),
        why,
    };
    let unknown = || Verdict::Unknown {
        pointer: here.clone(),
        keyword: k.to_string(),
    };
    let sub = |schema: &Value, v: &Value, pointer: &str| validation.validate(schema, v, pointer, depth + 1);
    let number = value.as_f64().filter(|_| value.is_number());
    let limit = kv.as_f64();
    match k {
        "$ref" => match kv.as_str().and_then(|s| resolve(validation.root, s)) {
            Some((target, pointer)) => validation
                .reference(target, pointer, value, depth)
                .unwrap_or_else(unknown),
            None => unknown(),
        },
        "type" => {
            if types_of(kv) & value_type(value) != 0 {
                Verdict::Valid
            } else {
                invalid(format!("must be of type {}", show(kv)))
            }
        }
        "enum" => match kv.as_array() {
            Some(values) if !values.iter().any(|v| json_eq(v, value)) => {
                invalid(format!("must be one of {}", show(kv)))
            }
            _ => Verdict::Valid,
        },
        "const" => {
            if json_eq(kv, value) {
                Verdict::Valid
            } else {
                invalid(format!("must equal {}", show(kv)))
            }
        }
        "minLength" | "maxLength" => match (value.as_str(), limit) {
            (Some(s), Some(n)) => {
                let length = s.chars().count() as f64;
                if k == "minLength" && length < n {
                    invalid(format!("must be at least {} characters long", show(kv)))
                } else if k == "maxLength" && length > n {
                    invalid(format!("must be at most {} characters long", show(kv)))
                } else {
                    Verdict::Valid
                }
            }
            _ => Verdict::Valid,
        },
        "pattern" | "format" if value.is_string() => unknown(),
        "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
            let (Some(x), Some(n)) = (number, limit) else {
                return Verdict::Valid;
            };
            let draft4 = |flag: &str| m.get(flag) == Some(&Value::Bool(true));
            let ok = match k {
                "minimum" if draft4("exclusiveMinimum") => x > n,
                "minimum" => x >= n,
                "maximum" if draft4("exclusiveMaximum") => x < n,
                "maximum" => x <= n,
                "exclusiveMinimum" => x > n,
                _ => x < n,
            };
            if ok {
                Verdict::Valid
            } else {
                invalid(format!("must satisfy {k} {}", show(kv)))
            }
        }
        "multipleOf" => match (number, limit) {
            (Some(x), Some(n)) if n > 0.0 && !is_multiple(x, n) => {
                invalid(format!("must be a multiple of {}", show(kv)))
            }
            _ => Verdict::Valid,
        },
        "required" => match value.as_object() {
            Some(object) => match string_list(Some(kv)).find(|name| !object.contains_key(*name)) {
                Some(name) => invalid(format!("must have property '{name}'")),
                None => Verdict::Valid,
            },
            None => Verdict::Valid,
        },
        "properties" => match (value.as_object(), kv.as_object()) {
            (Some(object), Some(props)) => all_of(
                props
                    .iter()
                    .filter_map(|(name, schema)| object.get(name).map(|v| sub(schema, v, &push(&here, name)))),
            ),
            _ => Verdict::Valid,
        },
        "additionalProperties" => {
            let Some(object) = value.as_object() else {
                return Verdict::Valid;
            };
            let declared = m.get("properties").and_then(Value::as_object);
            let extra = object
                .iter()
                .filter(|(name, _)| !declared.is_some_and(|d| d.contains_key(*name)));
            let has_patterns = m
                .get("patternProperties")
                .and_then(Value::as_object)
                .is_some_and(|p| !p.is_empty());
            all_of(extra.map(|(_, v)| {
                if has_patterns && *kv != Value::Bool(true) {
                    unknown()
                } else {
                    sub(kv, v, &here)
                }
            }))
        }
        "patternProperties" => match (value.as_object(), kv.as_object()) {
            (Some(object), Some(patterns)) if !object.is_empty() && !patterns.is_empty() => unknown(),
            _ => Verdict::Valid,
        },
        "propertyNames" => match value.as_object() {
            Some(object) => all_of(object.keys().map(|name| sub(kv, &Value::String(name.clone()), &here))),
            None => Verdict::Valid,
        },
        "minProperties" | "maxProperties" => match (value.as_object(), limit) {
            (Some(object), Some(n)) => {
                let count = object.len() as f64;
                if (k == "minProperties" && count < n) || (k == "maxProperties" && count > n) {
                    invalid(format!("must satisfy {k} {}", show(kv)))
                } else {
                    Verdict::Valid
                }
            }
            _ => Verdict::Valid,
        },
        "dependentRequired" | "dependentSchemas" | "dependencies" => match (value.as_object(), kv.as_object()) {
            (Some(object), Some(deps)) => all_of(deps.iter().filter(|(name, _)| object.contains_key(*name)).map(
                |(name, dependency)| match dependency {
                    Value::Array(_) => match string_list(Some(dependency)).find(|d| !object.contains_key(*d)) {
                        Some(missing) => invalid(format!("must have property '{missing}' when '{name}' is present")),
                        None => Verdict::Valid,
                    },
                    schema => sub(schema, value, &push(&here, name)),
                },
            )),
            _ => Verdict::Valid,
        },
        "items" => match (value.as_array(), kv) {
            (Some(array), Value::Array(tuple)) => all_of(
                tuple
                    .iter()
                    .zip(array)
                    .enumerate()
                    .map(|(i, (schema, v))| sub(schema, v, &push(&here, &i.to_string()))),
            ),
            (Some(array), schema) => {
                let skip = m.get("prefixItems").and_then(Value::as_array).map_or(0, Vec::len);
                all_of(array.iter().skip(skip).map(|v| sub(schema, v, &here)))
            }
            _ => Verdict::Valid,
        },
        "additionalItems" => match (value.as_array(), m.get("items")) {
            (Some(array), Some(Value::Array(tuple))) => {
                all_of(array.iter().skip(tuple.len()).map(|v| sub(kv, v, &here)))
            }
            _ => Verdict::Valid,
        },
        "prefixItems" => match (value.as_array(), kv.as_array()) {
            (Some(array), Some(prefix)) => all_of(
                prefix
                    .iter()
                    .zip(array)
                    .enumerate()
                    .map(|(i, (schema, v))| sub(schema, v, &push(&here, &i.to_string()))),
            ),
            _ => Verdict::Valid,
        },
        "minItems" | "maxItems" => match (value.as_array(), limit) {
            (Some(array), Some(n)) => {
                let count = array.len() as f64;
                if (k == "minItems" && count < n) || (k == "maxItems" && count > n) {
                    invalid(format!("must satisfy {k} {}", show(kv)))
                } else {
                    Verdict::Valid
                }
            }
            _ => Verdict::Valid,
        },
        "uniqueItems" => match value.as_array() {
            Some(array)
                if *kv == Value::Bool(true)
                    && array
                        .iter()
                        .enumerate()
                        .any(|(i, a)| array[i + 1..].iter().any(|b| json_eq(a, b))) =>
            {
                invalid("must not repeat items".into())
            }
            _ => Verdict::Valid,
        },
        "contains" => {
            let Some(array) = value.as_array() else {
                return Verdict::Valid;
            };
            let (mut matching, mut undecided) = (0u64, 0u64);
            for v in array {
                match sub(kv, v, &here) {
                    Verdict::Valid => matching += 1,
                    Verdict::Unknown { .. } => undecided += 1,
                    Verdict::Invalid { .. } => {}
                }
            }
            let min = m.get("minContains").and_then(Value::as_u64).unwrap_or(1);
            let max = m.get("maxContains").and_then(Value::as_u64);
            if matching >= min && max.is_none_or(|max| matching + undecided <= max) {
                Verdict::Valid
            } else if undecided > 0 {
                unknown()
            } else {
                invalid("does not contain the required items".into())
            }
        }
        "allOf" => all_of(
            kv.as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, schema)| sub(schema, value, &push(&here, &i.to_string()))),
        ),
        "anyOf" | "oneOf" => {
            let (mut matching, mut undecided) = (0, 0);
            for (i, schema) in kv.as_array().into_iter().flatten().enumerate() {
                match sub(schema, value, &push(&here, &i.to_string())) {
                    Verdict::Valid => matching += 1,
                    Verdict::Unknown { .. } => undecided += 1,
                    Verdict::Invalid { .. } => {}
                }
            }
            match (k, matching, undecided) {
                ("anyOf", 1.., _) | ("oneOf", 1, 0) => Verdict::Valid,
                ("oneOf", 2.., _) => invalid("matches more than one alternative".into()),
                (_, _, 1..) => unknown(),
                _ => invalid("matches none of the alternatives".into()),
            }
        }
        "not" => match sub(kv, value, &here) {
            Verdict::Valid => invalid("must not match the schema under not".into()),
            Verdict::Invalid { .. } => Verdict::Valid,
            Verdict::Unknown { .. } => unknown(),
        },
        "if" => {
            let branch = match sub(kv, value, &here) {
                Verdict::Valid => "then",
                Verdict::Invalid { .. } => "else",
                Verdict::Unknown { .. } if m.contains_key("then") || m.contains_key("else") => return unknown(),
                Verdict::Unknown { .. } => return Verdict::Valid,
            };
            m.get(branch)
                .map_or(Verdict::Valid, |schema| sub(schema, value, &push(at, branch)))
        }
        "unevaluatedProperties" | "unevaluatedItems" | "$dynamicRef" | "$recursiveRef" => unknown(),
        // Annotations, `then`/`else` (taken with `if`), `minContains`/`maxContains` (with
        // `contains`) and keywords JSON Schema does not define.
        _ => Verdict::Valid,
    }
}

#[cfg(test)]
mod tests {
    use super::{CompatibilityMode, DEFAULT_MODE, Incompatibility, check, check_versions};
    use serde_json::{Value, json};

    use CompatibilityMode::{Backward, BackwardTransitive, Forward, ForwardTransitive, Full, FullTransitive};

    fn person() -> Value {
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 20},
                "age": {"type": "integer", "minimum": 0},
                "status": {"type": "string", "enum": ["active", "closed"]}
            },
            "required": ["name"]
        })
    }

    /// `base` with one JSON value replaced (or removed, for `None`) at a pointer.
    fn edit(base: &Value, pointer: &str, value: Option<Value>) -> Value {
        let mut schema = base.clone();
        let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
        let parent = schema.pointer_mut(parent).expect("parent exists");
        match (parent, value) {
            (Value::Object(map), Some(value)) => {
                map.insert(key.to_string(), value);
            }
            (Value::Object(map), None) => {
                map.remove(key);
            }
            _ => panic!("{pointer} is not in an object"),
        }
        schema
    }

    fn backward(old: &Value, new: &Value) -> Vec<Incompatibility> {
        check(Backward, &[old], new)
    }

    fn forward(old: &Value, new: &Value) -> Vec<Incompatibility> {
        check(Forward, &[old], new)
    }

    fn pointers(found: &[Incompatibility]) -> Vec<&str> {
        found.iter().map(|f| f.pointer.as_str()).collect()
    }

    #[test]
    fn an_unchanged_schema_is_compatible_even_where_it_cannot_be_followed() {
        // Found by the fuzz target: the reference resolves nowhere, so the checker cannot compare
        // what it stands for; the same document still accepts the same values.
        let schema = json!({
            "allOf": [{"minimum": 0, "properties": {"b": true}}],
            "properties": {"b": {"$ref": "#/$defs/a"}}
        });
        for mode in [Backward, Forward, Full, FullTransitive] {
            assert_eq!(check(mode, &[&schema], &schema), Vec::new(), "{mode}");
        }
        // A change beside it is still not proved.
        let changed = edit(&schema, "/properties/c", Some(json!({"type": "string"})));
        assert!(!check(Full, &[&schema], &changed).is_empty());
    }

    #[test]
    fn compatibility_matrix() {
        let base = person();
        let nullable_name = edit(&base, "/properties/name/type", Some(json!(["string", "null"])));
        let number_age = edit(&base, "/properties/age/type", Some(json!("number")));
        let without_name = edit(&edit(&base, "/properties/name", None), "/required", Some(json!([])));
        let add = |pointer: &str, value: Value| edit(&base, pointer, Some(value));
        // (change, old, new, backward compatible, forward compatible, pointer of every finding)
        let cases: Vec<(&str, Value, Value, bool, bool, &str)> = vec![
            (
                "add optional property",
                base.clone(),
                add("/properties/email", json!({"type": "string"})),
                true,
                true,
                "",
            ),
            (
                "add required property",
                base.clone(),
                edit(
                    &add("/properties/email", json!({"type": "string"})),
                    "/required",
                    Some(json!(["name", "email"])),
                ),
                false,
                true,
                "/required",
            ),
            (
                "remove optional property",
                base.clone(),
                edit(&base, "/properties/age", None),
                true,
                true,
                "",
            ),
            (
                "remove required property",
                base.clone(),
                without_name,
                true,
                false,
                "/required",
            ),
            (
                "make a field required",
                base.clone(),
                add("/required", json!(["name", "age"])),
                false,
                true,
                "/required",
            ),
            (
                "make a required field optional",
                base.clone(),
                add("/required", json!([])),
                true,
                false,
                "/required",
            ),
            (
                "widen type",
                base.clone(),
                nullable_name.clone(),
                true,
                false,
                "/properties/name/type",
            ),
            (
                "narrow type",
                nullable_name,
                base.clone(),
                false,
                true,
                "/properties/name/type",
            ),
            (
                "integer to number",
                base.clone(),
                number_age.clone(),
                true,
                false,
                "/properties/age/type",
            ),
            (
                "number to integer",
                number_age,
                base.clone(),
                false,
                true,
                "/properties/age/type",
            ),
            (
                "add enum value",
                base.clone(),
                add("/properties/status/enum", json!(["active", "closed", "suspended"])),
                true,
                false,
                "/properties/status/enum",
            ),
            (
                "remove enum value",
                base.clone(),
                add("/properties/status/enum", json!(["active"])),
                false,
                true,
                "/properties/status/enum",
            ),
            (
                "add pattern",
                base.clone(),
                add("/properties/name/pattern", json!("^[^0-9]*$")),
                false,
                true,
                "/properties/name/pattern",
            ),
            (
                "relax maxLength",
                base.clone(),
                add("/properties/name/maxLength", json!(40)),
                true,
                false,
                "/properties/name/maxLength",
            ),
            (
                "tighten maxLength",
                base.clone(),
                add("/properties/name/maxLength", json!(10)),
                false,
                true,
                "/properties/name/maxLength",
            ),
            (
                "tighten minimum",
                base.clone(),
                add("/properties/age/minimum", json!(18)),
                false,
                true,
                "/properties/age/minimum",
            ),
            (
                "add format",
                base.clone(),
                add("/properties/name/format", json!("email")),
                false,
                true,
                "/properties/name/format",
            ),
        ];
        for (change, old, new, backward_ok, forward_ok, pointer) in cases {
            let expectations = [
                (Backward, backward_ok),
                (Forward, forward_ok),
                (Full, backward_ok && forward_ok),
                (CompatibilityMode::None, true),
            ];
            for (mode, expected) in expectations {
                let found = check(mode, &[&old], &new);
                assert_eq!(found.is_empty(), expected, "{change} under {mode}: {found:#?}");
                for finding in &found {
                    assert_eq!(finding.pointer, pointer, "{change} under {mode}: {finding}");
                    assert!(finding.reason.contains("version 1"), "{change} under {mode}: {finding}");
                    assert!(
                        finding.reason.contains("the new schema"),
                        "{change} under {mode}: {finding}"
                    );
                }
            }
        }
    }

    #[test]
    fn reasons_say_what_changed_and_what_breaks() {
        let base = person();
        let required_age = edit(&base, "/required", Some(json!(["name", "age"])));
        assert_eq!(
            backward(&base, &required_age),
            vec![Incompatibility {
                pointer: "/required".into(),
                reason:
                    "property 'age' became required: records written under version 1 may lack it, which the new schema \
                         rejects"
                        .into(),
            }]
        );
        let email = edit(
            &edit(&base, "/properties/email", Some(json!({"type": "string"}))),
            "/required",
            Some(json!(["name", "email"])),
        );
        assert!(
            backward(&base, &email)[0]
                .reason
                .starts_with("new required property 'email': records written under version 1")
        );
        assert!(
            forward(&required_age, &base)[0]
                .reason
                .starts_with("property 'age' is no longer required")
        );

        let nullable = edit(&base, "/properties/name/type", Some(json!(["string", "null"])));
        assert_eq!(
            forward(&base, &nullable)[0].reason,
            r#"type changed from "string" to ["string","null"]: records written under the new schema may hold null, which version 1 rejects"#
        );
        assert_eq!(
            backward(&nullable, &base)[0].reason,
            r#"type changed from ["string","null"] to "string": records written under version 1 may hold null, which the new schema rejects"#
        );
        let number = edit(&base, "/properties/age/type", Some(json!("number")));
        assert!(
            forward(&base, &number)[0]
                .reason
                .contains("may hold numbers with a fractional part, which version 1 rejects")
        );

        let fewer = edit(&base, "/properties/status/enum", Some(json!(["active"])));
        assert!(
            backward(&base, &fewer)[0]
                .reason
                .starts_with(r#"enum value "closed" was removed"#)
        );
        assert!(
            forward(&fewer, &base)[0]
                .reason
                .starts_with(r#"enum value "closed" was added"#)
        );

        let shorter = edit(&base, "/properties/name/maxLength", Some(json!(10)));
        assert_eq!(
            backward(&base, &shorter)[0].reason,
            "maxLength changed from 20 to 10: records written under version 1 may hold strings with more characters than \
             10, which the new schema rejects"
        );
        let adult = edit(&base, "/properties/age/minimum", Some(json!(18)));
        assert!(
            backward(&base, &adult)[0]
                .reason
                .starts_with("lower bound changed from minimum 0 to minimum 18")
        );
        let pattern = edit(&base, "/properties/name/pattern", Some(json!("^[A-Z]")));
        assert!(
            backward(&base, &pattern)[0]
                .reason
                .starts_with(r#"pattern changed from none to "^[A-Z]""#)
        );
    }

    #[test]
    fn transitive_modes_check_every_earlier_version_and_name_it() {
        // v2 drops `nickname`; v3 brings it back as a number. v3 reads v2's records (which have no
        // nickname) but not v1's (whose nickname is a string).
        let v1 = json!({"type": "object", "properties": {"id": {"type": "string"}, "nickname": {"type": "string"}}});
        let v2 = json!({"type": "object", "properties": {"id": {"type": "string"}}});
        let v3 = json!({"type": "object", "properties": {"id": {"type": "string"}, "nickname": {"type": "integer"}}});
        let history = [&v1, &v2];
        assert!(check(Backward, &history, &v3).is_empty());
        assert!(check(Full, &history, &v3).is_empty());
        let found = check(BackwardTransitive, &history, &v3);
        assert_eq!(pointers(&found), ["/properties/nickname/type"]);
        assert!(
            found[0]
                .reason
                .contains("records written under version 1 may hold strings"),
            "{}",
            found[0]
        );
        assert_eq!(
            check(FullTransitive, &history, &v3).len(),
            2,
            "backward and forward against version 1"
        );
        let forward_found = check(ForwardTransitive, &history, &v3);
        assert_eq!(pointers(&forward_found), ["/properties/nickname/type"]);
        assert!(
            forward_found[0].reason.contains("which version 1 rejects"),
            "{}",
            forward_found[0]
        );
        assert!(check(CompatibilityMode::None, &history, &json!({"type": "string"})).is_empty());
    }

    #[test]
    fn registry_version_numbers_appear_in_reasons() {
        let old = json!({"type": "string"});
        let new = json!({"type": "integer"});
        let found = check_versions(Backward, &[(3, &new), (7, &old)], &new);
        assert_eq!(found.len(), 1);
        assert!(found[0].reason.contains("version 7"));
        let found = check_versions(BackwardTransitive, &[(3, &old), (7, &new)], &new);
        assert!(found.len() == 1 && found[0].reason.contains("version 3"));
    }

    #[test]
    fn nothing_to_check_against_is_compatible() {
        for mode in CompatibilityMode::ALL {
            assert!(check(mode, &[], &json!({"type": "string"})).is_empty());
        }
    }

    #[test]
    fn modes_parse_and_print_their_upper_case_names() {
        for mode in CompatibilityMode::ALL {
            assert_eq!(CompatibilityMode::parse(mode.as_str()), Ok(mode));
            assert_eq!(mode.to_string().parse::<CompatibilityMode>(), Ok(mode));
        }
        assert_eq!(CompatibilityMode::parse("FULL_TRANSITIVE"), Ok(FullTransitive));
        let error = CompatibilityMode::parse("backward").expect_err("lower case is refused");
        assert!(error.contains("BACKWARD, FORWARD, FULL"), "{error}");
        assert_eq!(DEFAULT_MODE, Backward);
        assert!(Full.checks_backward() && Full.checks_forward() && !Full.is_transitive());
        assert!(!CompatibilityMode::None.checks_backward() && !CompatibilityMode::None.checks_forward());
    }

    #[test]
    fn additional_properties_false_makes_removal_and_addition_visible() {
        let open = person();
        let closed = edit(&open, "/additionalProperties", Some(json!(false)));
        // Closing the model is compatible while it still declares everything writers produced.
        assert!(backward(&open, &closed).is_empty());
        let closed_without_age = edit(&closed, "/properties/age", None);
        let found = backward(&open, &closed_without_age);
        assert_eq!(pointers(&found), ["/properties/age"]);
        assert!(
            found[0].reason.contains("forbids undeclared properties"),
            "{}",
            found[0]
        );
        // Old readers of a closed model reject a new property.
        let closed_with_email = edit(&closed, "/properties/email", Some(json!({"type": "string"})));
        assert!(backward(&closed, &closed_with_email).is_empty());
        let found = forward(&closed, &closed_with_email);
        assert_eq!(pointers(&found), ["/properties/email"]);
        assert!(
            found[0].reason.starts_with("property 'email' was added"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn explicitly_open_writers_produce_undeclared_properties() {
        let old = json!({"type": "object", "properties": {}, "additionalProperties": true});
        let new = json!({"type": "object", "properties": {"code": {"type": "string"}}});
        assert_eq!(pointers(&backward(&old, &new)), ["/properties/code/type"]);
        let typed_extra = json!({"type": "object", "additionalProperties": {"type": "string"}});
        assert!(backward(&typed_extra, &new).is_empty());
        let closed =
            json!({"type": "object", "properties": {"code": {"type": "string"}}, "additionalProperties": false});
        assert_eq!(pointers(&backward(&typed_extra, &closed)), ["/additionalProperties"]);
    }

    #[test]
    fn nested_objects_and_arrays_are_compared_at_their_path() {
        let old = json!({
            "type": "object",
            "properties": {
                "address": {"type": "object", "properties": {"city": {"type": "string"}}},
                "tags": {"type": "array", "items": {"type": "string"}}
            }
        });
        let city_required = edit(&old, "/properties/address/required", Some(json!(["city"])));
        let found = backward(&old, &city_required);
        assert_eq!(pointers(&found), ["/properties/address/required"]);
        assert!(found[0].reason.starts_with("property 'city' became required"));

        let number_tags = edit(&old, "/properties/tags/items", Some(json!({"type": "integer"})));
        assert_eq!(pointers(&backward(&old, &number_tags)), ["/properties/tags/items/type"]);
        let more_tags = edit(&old, "/properties/tags/minItems", Some(json!(1)));
        assert_eq!(pointers(&backward(&old, &more_tags)), ["/properties/tags/minItems"]);
        let unique_tags = edit(&old, "/properties/tags/uniqueItems", Some(json!(true)));
        assert_eq!(
            pointers(&backward(&old, &unique_tags)),
            ["/properties/tags/uniqueItems"]
        );
        assert!(forward(&old, &unique_tags).is_empty());
        let any_items = edit(&old, "/properties/tags/items", None);
        assert!(backward(&old, &any_items).is_empty());
        assert_eq!(pointers(&forward(&old, &any_items)), ["/properties/tags/items/type"]);
    }

    #[test]
    fn names_with_slashes_are_escaped_in_pointers() {
        let old = json!({"type": "object", "properties": {"a/b~c": {"type": "string"}}});
        let new = edit(&old, "/properties/a~1b~0c/type", Some(json!("integer")));
        assert_eq!(pointers(&backward(&old, &new)), ["/properties/a~1b~0c/type"]);
    }

    #[test]
    fn const_and_numeric_keywords() {
        let old = json!({"const": "v1"});
        let new = json!({"const": "v2"});
        let found = backward(&old, &new);
        assert_eq!(pointers(&found), ["/const"]);
        assert!(
            found[0].reason.starts_with(r#"const changed from "v1" to "v2""#),
            "{}",
            found[0]
        );
        assert_eq!(pointers(&forward(&old, &new)), ["/const"]);

        let inclusive = json!({"type": "number", "minimum": 0});
        let exclusive = json!({"type": "number", "exclusiveMinimum": 0});
        let draft4 = json!({"type": "number", "minimum": 0, "exclusiveMinimum": true});
        assert_eq!(pointers(&backward(&inclusive, &exclusive)), ["/exclusiveMinimum"]);
        assert!(forward(&inclusive, &exclusive).is_empty());
        assert!(backward(&exclusive, &draft4).is_empty() && forward(&exclusive, &draft4).is_empty());
        assert_eq!(
            pointers(&backward(
                &json!({"type": "number"}),
                &json!({"type": "number", "maximum": 9})
            )),
            ["/maximum"]
        );

        let halves = json!({"type": "number", "multipleOf": 0.5});
        let wholes = json!({"type": "number", "multipleOf": 1});
        assert!(backward(&halves, &json!({"type": "number", "multipleOf": 1.5})).len() == 1);
        assert!(backward(&wholes, &halves).is_empty());
        assert_eq!(pointers(&backward(&halves, &wholes)), ["/multipleOf"]);
        assert!(
            backward(
                &json!({"type": "integer"}),
                &json!({"type": "integer", "multipleOf": 1})
            )
            .is_empty()
        );
    }

    #[test]
    fn identical_or_local_references_are_understood() {
        let remote = json!({"type": "object", "properties": {"id": {"$ref": "xinqiao://schemas/identifiers/1"}}});
        assert!(check(Full, &[&remote], &remote.clone()).is_empty());
        let moved = edit(
            &remote,
            "/properties/id/$ref",
            Some(json!("xinqiao://schemas/identifiers/2")),
        );
        let found = backward(&remote, &moved);
        assert_eq!(pointers(&found), ["/properties/id/$ref"]);
        assert!(found[0].reason.starts_with(
            r#"reference changed from "xinqiao://schemas/identifiers/1" to "xinqiao://schemas/identifiers/2""#
        ));

        let local = json!({
            "$defs": {"code": {"type": "string", "maxLength": 18}},
            "type": "object",
            "properties": {"code": {"$ref": "#/$defs/code"}}
        });
        let shorter = edit(&local, "/$defs/code/maxLength", Some(json!(9)));
        assert_eq!(pointers(&backward(&local, &shorter)), ["/$defs/code/maxLength"]);
        assert!(forward(&local, &shorter).is_empty());
        // Inlining the definition changes nothing a record can see.
        let inlined = json!({"type": "object", "properties": {"code": {"type": "string", "maxLength": 18}}});
        assert!(check(Full, &[&local], &inlined).is_empty());
        assert!(check(Full, &[&inlined], &local).is_empty());
    }

    #[test]
    fn recursive_schemas_terminate() {
        let tree = json!({
            "type": "object",
            "properties": {"name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#"}}}
        });
        assert!(check(Full, &[&tree], &tree.clone()).is_empty());
        let named = edit(&tree, "/required", Some(json!(["name"])));
        assert_eq!(pointers(&backward(&tree, &named)), ["/required"]);
        let self_only = json!({"$ref": "#"});
        assert!(backward(&self_only, &self_only.clone()).is_empty());
    }

    #[test]
    fn unhandled_keywords_must_stay_unchanged() {
        let old = json!({"type": "object", "properties": {"id": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}});
        assert!(check(Full, &[&old], &old.clone()).is_empty());
        let changed = edit(
            &old,
            "/properties/id/oneOf",
            Some(json!([{"type": "string"}, {"type": "number"}])),
        );
        let found = backward(&old, &changed);
        assert_eq!(pointers(&found), ["/properties/id/oneOf"]);
        assert!(
            found[0].reason.starts_with("oneOf changed; cannot prove compatibility"),
            "{}",
            found[0]
        );

        let guarded = json!({"not": {"const": ""}, "if": {"type": "string"}, "then": {"minLength": 1}});
        assert!(check(Full, &[&guarded], &guarded.clone()).is_empty());
        let without_if = json!({"not": {"const": ""}});
        assert!(
            backward(&guarded, &without_if).is_empty(),
            "dropping a constraint widens"
        );
        assert_eq!(pointers(&forward(&guarded, &without_if)), ["/if"]);
    }

    #[test]
    fn unevaluated_properties_closes_the_model_like_additional_properties() {
        let old = json!({"type": "object", "properties": {"a": {}, "b": {}}, "unevaluatedProperties": false});
        let new = edit(&old, "/properties/b", None);
        let found = backward(&old, &new);
        assert_eq!(pointers(&found), ["/properties/b"]);
        assert!(
            found[0].reason.contains("(unevaluatedProperties: false)"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn annotations_and_unknown_keywords_never_matter() {
        let old = json!({"type": "string", "title": "名称", "description": "old", "x-source": "公安"});
        let new =
            json!({"type": "string", "title": "单位名称", "description": "new", "examples": ["x"], "x-source": "市监"});
        assert!(check(Full, &[&old], &new).is_empty());
    }

    #[test]
    fn alternatives_are_compared_branch_by_branch() {
        let any_of = json!({"anyOf": [{"type": "string"}, {"type": "null"}]});
        let list = json!({"type": ["string", "null"]});
        assert!(check(Full, &[&any_of], &list).is_empty());
        assert!(check(Full, &[&list], &any_of).is_empty());
        let short = json!({"anyOf": [{"type": "string", "maxLength": 5}, {"type": "null"}]});
        assert!(backward(&short, &list).is_empty());
        assert_eq!(pointers(&backward(&list, &short)), ["/anyOf"]);

        let all_of =
            json!({"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}}, {"required": ["a"]}]});
        let plain = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        assert_eq!(pointers(&backward(&plain, &all_of)), ["/allOf/1/required"]);
        assert!(forward(&plain, &all_of).is_empty());
    }

    #[test]
    fn finite_writers_are_checked_value_by_value() {
        let flag = json!({"type": "boolean"});
        assert!(check(Full, &[&flag], &json!({"enum": [true, false]})).is_empty());
        let codes = json!({"type": "string", "pattern": "^[A-Z]+$", "enum": ["AB"]});
        let more = edit(&codes, "/enum", Some(json!(["AB", "CD"])));
        assert!(
            backward(&codes, &more).is_empty(),
            "the shared pattern need not be evaluated"
        );
        assert_eq!(pointers(&forward(&codes, &more)), ["/enum"]);
        // 1.0 is the integer 1 in JSON Schema.
        assert!(backward(&json!({"enum": [1.0, 2]}), &json!({"type": "integer", "enum": [1, 2]})).is_empty());
        let found = backward(&json!({"enum": ["a", 3]}), &json!({"type": "string"}));
        assert_eq!(pointers(&found), ["/type"]);
    }

    #[test]
    fn findings_display_pointer_and_reason() {
        let finding = Incompatibility {
            pointer: String::new(),
            reason: "type changed".into(),
        };
        assert_eq!(finding.to_string(), "(root): type changed");
    }

    /// `#/$defs/a0` → two references to `a1` → … → `a{n}`: 2^n paths, with no cycle to detect.
    fn reference_graph(n: usize, keyword: &str, leaf: Value) -> Value {
        let mut defs = serde_json::Map::new();
        for i in 0..n {
            let next = format!("#/$defs/a{}", i + 1);
            defs.insert(format!("a{i}"), json!({ keyword: [{"$ref": next}, {"$ref": next}] }));
        }
        defs.insert(format!("a{n}"), leaf);
        json!({"$defs": defs, "$ref": "#/$defs/a0"})
    }

    #[test]
    fn exponentially_branching_schemas_end_as_too_complex_to_compare() {
        let object = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        let cases = [
            (json!({"const": 1}), json!({"anyOf": [{"$ref": "#"}, {"$ref": "#"}]})),
            (
                json!({"enum": [1, 2, "a"]}),
                reference_graph(40, "anyOf", json!({"type": "string"})),
            ),
            (
                json!({"enum": [1, 2, "a"]}),
                reference_graph(40, "allOf", json!({"type": "integer"})),
            ),
            (object.clone(), reference_graph(40, "anyOf", json!({"type": "string"}))),
            (object, json!({"anyOf": [{"$ref": "#"}, {"$ref": "#"}]})),
        ];
        for (old, new) in cases {
            // (BACKWARD, the reader that refers back to itself, is read as holding: see `follow`.)
            assert!(!forward(&old, &new).is_empty(), "{old} -> {new}");
            for mode in [Backward, Forward] {
                let found = check(mode, &[&old], &new);
                assert!(found.len() <= 101, "{mode}: {} findings", found.len());
            }
        }
        // A reference that leads back to itself without moving into the value cannot be decided.
        let found = backward(&json!({"const": 1}), &json!({"anyOf": [{"$ref": "#"}, {"$ref": "#"}]}));
        assert_eq!(pointers(&found), ["/anyOf"]);
        // Past the budget the finding says so, once.
        let found = backward(
            &json!({"enum": [1, 2, "a"]}),
            &reference_graph(40, "allOf", json!({"type": "integer"})),
        );
        let too_complex: Vec<_> = found
            .iter()
            .filter(|f| f.reason.contains("too large to compare"))
            .collect();
        assert_eq!(too_complex.len(), 1, "{found:#?}");
        let found = forward(
            &json!({"type": "object", "properties": {"a": {"type": "string"}}}),
            &json!({"anyOf": [{"$ref": "#"}, {"$ref": "#"}]}),
        );
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].reason.contains("too large to compare"), "{}", found[0]);
        // Unchanged, such schemas are still compatible with themselves.
        let graph = reference_graph(40, "anyOf", json!({"type": "string"}));
        assert!(check(Full, &[&graph], &graph).is_empty());
    }

    #[test]
    fn findings_are_listed_up_to_a_bound_then_counted() {
        let names = 0..250;
        let old = json!({"type": "object", "properties": names.clone().map(|i| (format!("p{i}"), json!({"type": "string"}))).collect::<serde_json::Map<_, _>>()});
        let new = json!({"type": "object", "properties": names.map(|i| (format!("p{i}"), json!({"type": "integer"}))).collect::<serde_json::Map<_, _>>()});
        let found = backward(&old, &new);
        assert_eq!(found.len(), 101);
        assert!(found[..100].iter().all(|f| f.pointer.ends_with("/type")));
        assert_eq!(found[100].pointer, "");
        assert_eq!(
            found[100].reason,
            "and 150 more reasons, not listed, why the new schema may reject records written under version 1"
        );
        // The bound is per version and direction, so FULL still lists both directions.
        assert_eq!(check(Full, &[&old], &new).len(), 202);
    }

    #[test]
    fn repeated_combinators_prove_nothing_when_their_references_mean_other_schemas() {
        let old = json!({"$defs": {"a": {"type": "string"}}, "allOf": [{"$ref": "#/$defs/a"}]});
        let new = json!({"$defs": {"a": {"type": "integer"}}, "allOf": [{"$ref": "#/$defs/a"}]});
        assert_eq!(pointers(&backward(&old, &new)), ["/$defs/a/type"]);
        let found = forward(&old, &new);
        assert!(
            found.len() == 1
                && found[0]
                    .reason
                    .starts_with(r#"type changed from "string" to "integer""#),
            "{found:#?}"
        );
        let guarded = |target: Value| json!({"$defs": {"a": target}, "not": {"$ref": "#/$defs/a"}});
        let (old, new) = (guarded(json!({"const": 1})), guarded(json!({"const": 2})));
        assert_eq!(pointers(&backward(&old, &new)), ["/not"]);
        assert!(check(Full, &[&old], &old.clone()).is_empty());
        // A registry address means the same schema in every document.
        let remote = |defs: Value| json!({"$defs": defs, "not": {"$ref": "xinqiao://schemas/a/1"}});
        assert!(check(Full, &[&remote(json!({}))], &remote(json!({"b": {}}))).is_empty());
    }

    /// Found by the fuzz run: merged into the writer, a branch's properties and patterns escaped
    /// its own additionalProperties, and a finite writer's repeated keywords other than a few
    /// named ones were evaluated again (patternProperties cannot be).
    #[test]
    fn unchanged_schemas_with_branches_or_finite_values_are_compatible_with_themselves() {
        for schema in [
            json!({"additionalProperties": {"anyOf": []}, "allOf": [{"minimum": 0, "properties": {"a": {}}}], "properties": {}}),
            json!({"const": {"a": 1}, "dependentSchemas": {"a": {"minimum": 0}}, "patternProperties": {"^x": true}}),
            json!({"additionalProperties": {}, "allOf": [{"dependentSchemas": {"a": true}, "patternProperties": {"^x": true}}], "properties": {}}),
            json!({"additionalProperties": {"type": "string"}, "allOf": [{"patternProperties": {"^x": {"minLength": 1}}}]}),
            json!({"type": "array", "items": {"type": "string"}, "allOf": [{"prefixItems": [{"maxLength": 2}]}]}),
            json!({"type": "object", "properties": {"a": {"type": "array", "unevaluatedItems": false}}, "allOf": [{"properties": {"a": {"prefixItems": [true]}}}]}),
        ] {
            assert!(check(Full, &[&schema], &schema.clone()).is_empty(), "{schema}");
        }
    }

    /// Keywords that mean something only beside others are merged from a writer's branches only
    /// with them: else the merged writer would be narrower than the writer.
    #[test]
    fn merged_branches_do_not_narrow_the_writer() {
        // minContains without contains does nothing: one string is enough for this writer.
        let old = json!({"type": "array", "minContains": 2, "allOf": [{"contains": {"type": "string"}}]});
        let new = json!({"type": "array", "contains": {"type": "string"}, "minContains": 2});
        assert!(!backward(&old, &new).is_empty());
        // A draft-4 exclusiveMinimum without minimum does nothing: this writer produces 0.
        let old = json!({"type": "number", "exclusiveMinimum": true, "allOf": [{"minimum": 0}]});
        let new = json!({"type": "number", "exclusiveMinimum": 0});
        assert_eq!(pointers(&backward(&old, &new)), ["/exclusiveMinimum"]);
    }

    #[test]
    fn a_closed_writer_produces_no_property_its_branches_add() {
        let closed = json!({
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "additionalProperties": false,
            "allOf": [{"properties": {"b": {"type": "integer"}}, "patternProperties": {"^x": true}}]
        });
        assert!(check(Full, &[&closed], &closed.clone()).is_empty());
        // Its records hold only `a`, so a reader closed to `a` reads them all.
        let reader = json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false});
        assert!(forward(&reader, &closed).is_empty());
        // Open, the same branches do declare `b` and the names matching ^x.
        let open = edit(&closed, "/additionalProperties", None);
        let found = forward(&reader, &open);
        assert_eq!(pointers(&found), ["/properties/b", "/patternProperties"], "{found:#?}");
    }
}
