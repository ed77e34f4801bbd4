//! The published catalogue as DCAT-AP (W3C DCAT with the EU application profile) in JSON-LD, so
//! that CKAN's DCAT harvester, or any other DCAT or RDF tool, can read the directory
//! (政务信息资源目录).
//!
//! A pure mapping: the hub reads the entries, datasets and departments through the store and
//! hands them here, for every edge that serves the export. What goes where:
//! - the catalogue: a `dcat:Catalog` published by the platform, with the classification
//!   (信息资源分类) as its theme taxonomy;
//! - each published entry: a `dcat:Dataset` named by its resource code, published by its
//!   department, its classification as `dcat:theme`, 更新周期 as `dct:accrualPeriodicity` and
//!   共享类型 as `dct:accessRights` (EU vocabularies);
//! - each way to get the entry's data through the hub: a `dcat:Distribution`, one for the
//!   dataset on the entry (库表 or 文件) and one for its service interface (接口), when it has
//!   them (see [`Distribution`]).
//!
//! Entries that are not published are never exported. 不予共享 entries are listed, as NON_PUBLIC:
//! the directory shows that the resource exists, as the platform's own catalogue does. Entries
//! have no keyword field, so no `dcat:keyword` is written.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::catalogue::{CatalogEntry, ShareType, UpdateCycle};
use crate::department::Department;
use crate::error::{Result, Violations};
use crate::exchange::{Dataset, DatasetKind};
use crate::interface::Interface;
use crate::lifecycle::EntryState;

/// The media type of the document.
pub const MEDIA_TYPE: &str = "application/ld+json";

/// The EU Publications Office's frequency vocabulary, as DCAT-AP asks for accrualPeriodicity.
pub const FREQUENCY: &str = "http://publications.europa.eu/resource/authority/frequency/";
/// The EU access-right vocabulary (PUBLIC, RESTRICTED, NON_PUBLIC).
pub const ACCESS_RIGHT: &str = "http://publications.europa.eu/resource/authority/access-right/";
/// The EU file-type vocabulary, for `dct:format`.
pub const FILE_TYPE: &str = "http://publications.europa.eu/resource/authority/file-type/";
/// IANA media types as IRIs, for `dcat:mediaType`.
const IANA_MEDIA_TYPES: &str = "http://www.iana.org/assignments/media-types/";

/// What the hub says of itself in the export. The defaults suit a development hub (its address is
/// the CLI's default `--hub`); a deployment names its platform and its public address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogueSite {
    /// The catalogue's `dct:title`.
    pub title: String,
    /// The catalogue's `dct:description`.
    pub description: String,
    /// The platform that runs the hub: the catalogue's `dct:publisher`.
    pub publisher: String,
    /// Where a user reaches the hub: every distribution's `dcat:accessURL`.
    pub access_url: String,
    /// The catalogue, its datasets, distributions and themes are named under this base (for
    /// example `https://data.example.gov.cn/catalog/`); empty: `urn:xinqiao:…` names, stable
    /// wherever the hub runs.
    pub base_iri: String,
}

impl Default for CatalogueSite {
    fn default() -> Self {
        Self {
            title: "信桥政务信息资源目录".into(),
            description: "信桥共享交换平台已发布的政务信息资源目录".into(),
            publisher: "信桥共享交换平台".into(),
            access_url: "https://localhost:7443".into(),
            base_iri: String::new(),
        }
    }
}

impl CatalogueSite {
    /// Checks what an operator configured: texts present, addresses absolute and without spaces.
    pub fn validate(&self) -> Result<()> {
        let mut v = Violations::new();
        v.check("title", crate::text::check(&self.title, true, 200, false));
        v.check("description", crate::text::check(&self.description, false, 2000, true));
        v.check("publisher", crate::text::check(&self.publisher, true, 200, false));
        v.check("access_url", absolute_iri(&self.access_url));
        if !self.base_iri.is_empty() {
            v.check("base_iri", absolute_iri(&self.base_iri));
        }
        v.into_result()
    }

    /// The IRI of a thing of `kind` (resource, dataset, classification) named `id`.
    fn iri(&self, kind: &str, id: &str) -> String {
        match self.base() {
            None => format!("urn:xinqiao:{kind}:{id}"),
            Some(base) => format!("{base}{kind}/{id}"),
        }
    }

    /// The IRI of one thing of which there is one per hub (the catalogue, the platform).
    fn single(&self, name: &str) -> String {
        match self.base() {
            None => format!("urn:xinqiao:{name}"),
            Some(base) => format!("{base}{name}"),
        }
    }

    /// The base, ending in `/` or `#`, when one is set.
    fn base(&self) -> Option<String> {
        match self.base_iri.trim() {
            "" => None,
            base if base.ends_with('/') || base.ends_with('#') => Some(base.to_string()),
            base => Some(format!("{base}/")),
        }
    }
}

fn absolute_iri(text: &str) -> Result<(), String> {
    let scheme_ok = text.split_once(':').is_some_and(|(scheme, rest)| {
        !scheme.is_empty() && !rest.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    if !scheme_ok {
        return Err("must be an absolute IRI, for example https://hub.example.gov.cn:7443".into());
    }
    if text
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "<>\"{}|\\^`".contains(c))
    {
        return Err("must not hold spaces, control characters or <>\"{}|\\^`".into());
    }
    Ok(())
}

/// 更新周期 as an EU frequency IRI.
pub fn accrual_periodicity(cycle: UpdateCycle) -> String {
    let code = match cycle {
        // 实时 has no period, and the vocabulary has no "real time": "continuously updated" is
        // the nearest term, not an exact match.
        UpdateCycle::Realtime => "UPDATE_CONT",
        UpdateCycle::Daily => "DAILY",
        UpdateCycle::Weekly => "WEEKLY",
        UpdateCycle::Monthly => "MONTHLY",
        UpdateCycle::Quarterly => "QUARTERLY",
        // "semiannual": twice a year.
        UpdateCycle::HalfYearly => "ANNUAL_2",
        UpdateCycle::Yearly => "ANNUAL",
        // 其他 names no period, so nothing matches it exactly; OTHER says as much.
        UpdateCycle::Other => "OTHER",
    };
    format!("{FREQUENCY}{code}")
}

/// 共享类型 as an EU access-right IRI. "Public" here is what 无条件共享 means on the platform:
/// every department may use the resource, without asking.
pub fn access_rights(share: ShareType) -> String {
    let code = match share {
        ShareType::Unconditional => "PUBLIC",
        // Granted on an approved application (有条件共享).
        ShareType::Conditional => "RESTRICTED",
        ShareType::NotShared => "NON_PUBLIC",
    };
    format!("{ACCESS_RIGHT}{code}")
}

/// One way to get a resource's data through the hub: a `dcat:Distribution`. Another way (a
/// mirror on a peer hub, say) is another variant, written by [`distribution`].
enum Distribution<'a> {
    /// The exchange dataset on the entry (库表 or 文件).
    Dataset(&'a Dataset),
    /// The entry's service interface (接口), called through the hub (Invoke) while enabled.
    Interface(&'a Interface),
}

/// The catalogue as a JSON-LD document: the published entries among `entries`, each with the
/// datasets and enabled interfaces on it, published by its department from `departments`.
/// Ordered by resource code, so that the same catalogue always gives the same document.
pub fn document(
    site: &CatalogueSite,
    entries: &[CatalogEntry],
    datasets: &[Dataset],
    interfaces: &[Interface],
    departments: &[Department],
) -> Value {
    let departments: HashMap<&str, &Department> = departments.iter().map(|d| (d.code(), d)).collect();
    // Datasets and interfaces are named by their entry's resource code.
    let mut distributions: HashMap<&str, Vec<Distribution<'_>>> = HashMap::new();
    for dataset in datasets {
        distributions
            .entry(dataset.id.as_str())
            .or_default()
            .push(Distribution::Dataset(dataset));
    }
    // A disabled interface gives no data until its provider registers it again.
    for interface in interfaces.iter().filter(|i| i.enabled) {
        distributions
            .entry(interface.code.as_str())
            .or_default()
            .push(Distribution::Interface(interface));
    }
    let mut published: Vec<&CatalogEntry> = entries.iter().filter(|e| e.state == EntryState::Published).collect();
    published.sort_by(|a, b| a.resource_code.cmp(&b.resource_code));

    let mut catalogue = Map::new();
    catalogue.insert("@context".into(), context());
    catalogue.insert("@id".into(), json!(site.single("catalog")));
    catalogue.insert("@type".into(), json!("dcat:Catalog"));
    catalogue.insert("dct:title".into(), text(&site.title));
    catalogue.insert("dct:description".into(), text(&site.description));
    catalogue.insert(
        "dct:publisher".into(),
        json!({
            "@id": site.single("platform"),
            "@type": "foaf:Agent",
            "foaf:name": text(&site.publisher),
        }),
    );
    catalogue.insert("dcat:themeTaxonomy".into(), classification_scheme(site));
    if let Some(modified) = published.iter().map(|e| e.updated_at).max() {
        catalogue.insert("dct:modified".into(), date_time(modified));
    }
    let datasets: Vec<Value> = published
        .iter()
        .map(|entry| {
            let on_entry = distributions.get(entry.resource_code.as_str()).map(Vec::as_slice);
            dataset(
                site,
                entry,
                departments.get(entry.provider_code.as_str()).copied(),
                on_entry.unwrap_or_default(),
            )
        })
        .collect();
    catalogue.insert("dcat:dataset".into(), Value::Array(datasets));
    Value::Object(catalogue)
}

/// The prefixes the document uses, written inline: nothing is fetched to read it.
fn context() -> Value {
    json!({
        "dcat": "http://www.w3.org/ns/dcat#",
        "dct": "http://purl.org/dc/terms/",
        "foaf": "http://xmlns.com/foaf/0.1/",
        "vcard": "http://www.w3.org/2006/vcard/ns#",
        "xsd": "http://www.w3.org/2001/XMLSchema#",
        "skos": "http://www.w3.org/2004/02/skos/core#",
        "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    })
}

fn dataset(
    site: &CatalogueSite,
    entry: &CatalogEntry,
    department: Option<&Department>,
    on_entry: &[Distribution<'_>],
) -> Value {
    let content = &entry.content;
    let mut node = Map::new();
    node.insert("@id".into(), json!(site.iri("resource", &entry.resource_code)));
    node.insert("@type".into(), json!("dcat:Dataset"));
    node.insert("dct:identifier".into(), json!(entry.resource_code));
    node.insert("dct:title".into(), text(&content.name));
    node.insert("dct:description".into(), text(&content.summary));
    // The department's name as registered now; the entry's copy if it is no longer registered.
    let name = department.map_or(entry.provider_name.as_str(), |d| d.profile.name.as_str());
    node.insert(
        "dct:publisher".into(),
        json!({
            // The department's identity, as its certificate names it.
            "@id": format!("urn:xinqiao:dept:{}", entry.provider_code),
            "@type": "foaf:Agent",
            "foaf:name": text(name),
            "dct:identifier": entry.provider_code,
        }),
    );
    if let Some(contact) = department.map(|d| d.profile.contact.trim()).filter(|c| !c.is_empty()) {
        node.insert(
            "dcat:contactPoint".into(),
            json!({
                "@type": "vcard:Organization",
                "vcard:fn": text(name),
                "vcard:note": text(contact),
            }),
        );
    }
    node.insert("dcat:theme".into(), theme(site, &content.classification));
    node.insert(
        "dct:accrualPeriodicity".into(),
        json!({ "@id": accrual_periodicity(content.update_cycle) }),
    );
    node.insert(
        "dct:accessRights".into(),
        json!({ "@id": access_rights(content.share.share_type) }),
    );
    if let Some(published_at) = entry.published_at {
        node.insert("dct:issued".into(), date_time(published_at));
    }
    node.insert("dct:modified".into(), date_time(entry.updated_at));
    if !content.related_codes.is_empty() {
        let related: Vec<Value> = content
            .related_codes
            .iter()
            .map(|code| json!({ "@id": site.iri("resource", code) }))
            .collect();
        node.insert("dct:relation".into(), Value::Array(related));
    }
    if !on_entry.is_empty() {
        let distributions = on_entry.iter().map(|d| distribution(site, entry, d)).collect();
        node.insert("dcat:distribution".into(), Value::Array(distributions));
    }
    Value::Object(node)
}

fn distribution(site: &CatalogueSite, entry: &CatalogEntry, distribution: &Distribution<'_>) -> Value {
    let json_format = || json!({ "@id": format!("{FILE_TYPE}JSON") });
    let json_media_type = || Some(format!("{IANA_MEDIA_TYPES}application/json"));
    let (id, way, format, media_type, issued, modified) = match distribution {
        Distribution::Dataset(dataset) => {
            let (way, format, media_type) = match dataset.kind {
                // Table records leave the hub as JSON, whatever the entry's own format.
                DatasetKind::Table => ("库表", json_format(), json_media_type()),
                // Files are passed on as the provider published them: the entry's 信息资源格式.
                DatasetKind::File => (
                    "文件",
                    json!({
                        "@type": "dct:MediaTypeOrExtent",
                        "rdfs:label": text(entry.content.format.label()),
                    }),
                    None,
                ),
            };
            let id = site.iri("dataset", &dataset.id);
            (
                id,
                way,
                format,
                media_type,
                dataset.created_at,
                dataset.last_published_at,
            )
        }
        // Requests and answers are JSON, checked against the operations' schemas.
        Distribution::Interface(interface) => {
            let id = site.iri("interface", &interface.code);
            let modified = Some(interface.updated_at);
            (
                id,
                "接口",
                json_format(),
                json_media_type(),
                interface.registered_at,
                modified,
            )
        }
    };
    let title = text(&format!("{}（{way}）", entry.content.name));
    let mut node = Map::new();
    node.insert("@id".into(), json!(id));
    node.insert("@type".into(), json!("dcat:Distribution"));
    node.insert("dct:identifier".into(), json!(entry.resource_code));
    node.insert("dct:title".into(), title.clone());
    node.insert("dcat:accessURL".into(), json!({ "@id": site.access_url }));
    node.insert("dct:format".into(), format);
    if let Some(media_type) = media_type {
        node.insert("dcat:mediaType".into(), json!({ "@id": media_type }));
    }
    if let Distribution::Interface(interface) = distribution {
        // Callers reach the interface through the hub, never at its upstream (the provider's own
        // system), which the export does not name.
        let operations: Vec<&str> = interface.spec.operations.iter().map(|o| o.name.as_str()).collect();
        node.insert(
            "dcat:accessService".into(),
            json!({
                "@id": site.iri("service", &interface.code),
                "@type": "dcat:DataService",
                "dct:title": title,
                "dct:description": text(&format!("经共享平台调用（Invoke）的操作：{}", operations.join("、"))),
                "dcat:endpointURL": { "@id": site.access_url },
            }),
        );
    }
    node.insert("dct:issued".into(), date_time(issued));
    if let Some(modified) = modified {
        node.insert("dct:modified".into(), date_time(modified));
    }
    Value::Object(node)
}

/// The classification scheme (GB/T 21063.4) as the catalogue's theme taxonomy.
fn classification_scheme(site: &CatalogueSite) -> Value {
    json!({
        "@id": site.single("classification"),
        "@type": "skos:ConceptScheme",
        "dct:title": text("政务信息资源分类（GB/T 21063.4）"),
    })
}

/// A classification code as a concept. The hub knows the name of the 类 (the first digit) only;
/// the label is that name and the code, for example "基础信息资源 102001".
fn theme(site: &CatalogueSite, classification: &str) -> Value {
    let class = match classification.as_bytes().first() {
        Some(b'1') => "基础信息资源",
        Some(b'2') => "主题信息资源",
        Some(b'3') => "部门信息资源",
        _ => "信息资源",
    };
    json!({
        "@id": site.iri("classification", classification),
        "@type": "skos:Concept",
        "skos:notation": classification,
        "skos:prefLabel": text(&format!("{class} {classification}")),
        "skos:inScheme": { "@id": site.single("classification") },
    })
}

fn date_time(at: DateTime<Utc>) -> Value {
    json!({ "@value": at.to_rfc3339_opts(SecondsFormat::AutoSi, true), "@type": "xsd:dateTime" })
}

/// A human-readable literal: tagged `zh` when it holds Chinese, plain otherwise (an operator may
/// name the platform in English).
fn text(value: &str) -> Value {
    if value.chars().any(is_cjk) {
        json!({ "@value": value, "@language": "zh" })
    } else {
        json!(value)
    }
}

fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{3000}'..='\u{303F}'     // CJK punctuation
        | '\u{3400}'..='\u{4DBF}'   // Extension A
        | '\u{4E00}'..='\u{9FFF}'   // Unified Ideographs
        | '\u{F900}'..='\u{FAFF}'   // Compatibility Ideographs
        | '\u{FF00}'..='\u{FFEF}'   // full-width forms
        | '\u{20000}'..='\u{3134F}' // Extensions B to G
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::tests::draft;
    use crate::department::DepartmentProfile;
    use crate::interface::{InterfaceSpec, Method, Operation};
    use crate::schema::SchemaRef;
    use chrono::TimeZone;

    const SAMR: &str = "11330100MB00010011";

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, 8, 0, 0).unwrap()
    }

    fn entry(code: &str, state: EntryState, share: ShareType, cycle: UpdateCycle) -> CatalogEntry {
        let mut content = draft().validate().expect("a valid draft");
        content.share.share_type = share;
        content.update_cycle = cycle;
        CatalogEntry {
            resource_code: code.into(),
            provider_code: SAMR.into(),
            provider_name: "市场监管局（旧名）".into(),
            content,
            state,
            version: 3,
            state_reason: String::new(),
            published_at: (state == EntryState::Published).then(|| at(2)),
            created_at: at(1),
            updated_at: at(2),
        }
    }

    fn samr() -> Department {
        Department {
            profile: DepartmentProfile {
                code: SAMR.into(),
                name: "市市场监督管理局".into(),
                division_code: "330100".into(),
                contact: "办公室 0571-00000000".into(),
            },
            active: true,
            created_at: at(1),
            updated_at: at(1),
        }
    }

    fn table(id: &str) -> Dataset {
        Dataset {
            id: id.into(),
            provider_code: SAMR.into(),
            kind: DatasetKind::Table,
            schema: Some(SchemaRef {
                subject: "legal-entity".into(),
                version: 1,
            }),
            key: vec!["uscc".into()],
            record_count: 5,
            last_sequence: 5,
            last_published_at: Some(at(3)),
            created_at: at(2),
        }
    }

    fn datasets_of(document: &Value) -> &Vec<Value> {
        document["dcat:dataset"].as_array().expect("a list of datasets")
    }

    fn find<'a>(document: &'a Value, code: &str) -> &'a Value {
        datasets_of(document)
            .iter()
            .find(|d| d["dct:identifier"] == code)
            .unwrap_or_else(|| panic!("{code} is not exported"))
    }

    #[test]
    fn only_published_entries_are_exported_in_code_order() {
        let entries = [
            entry(
                "102/000003",
                EntryState::Published,
                ShareType::Unconditional,
                UpdateCycle::Daily,
            ),
            entry(
                "102/000001",
                EntryState::Published,
                ShareType::NotShared,
                UpdateCycle::Yearly,
            ),
            entry(
                "102/000002",
                EntryState::Draft,
                ShareType::Unconditional,
                UpdateCycle::Daily,
            ),
            entry(
                "102/000004",
                EntryState::PendingReview,
                ShareType::Unconditional,
                UpdateCycle::Daily,
            ),
            entry(
                "102/000005",
                EntryState::Returned,
                ShareType::Unconditional,
                UpdateCycle::Daily,
            ),
            entry(
                "102/000006",
                EntryState::Withdrawn,
                ShareType::Unconditional,
                UpdateCycle::Daily,
            ),
        ];
        let doc = document(
            &CatalogueSite::default(),
            &entries,
            &[table("102/000002")],
            &[],
            &[samr()],
        );
        let codes: Vec<&str> = datasets_of(&doc)
            .iter()
            .map(|d| d["dct:identifier"].as_str().expect("an identifier"))
            .collect();
        assert_eq!(codes, ["102/000001", "102/000003"]);
        // Nothing of an unpublished entry leaks, not even its dataset.
        let text = doc.to_string();
        for hidden in ["102/000002", "102/000004", "102/000005", "102/000006"] {
            assert!(!text.contains(hidden), "{hidden} leaked: {text}");
        }
        // 不予共享 is listed, marked non-public.
        assert_eq!(
            find(&doc, "102/000001")["dct:accessRights"]["@id"],
            format!("{ACCESS_RIGHT}NON_PUBLIC")
        );
    }

    #[test]
    fn a_dataset_is_described_in_full() {
        let entries = [entry(
            "102/000001",
            EntryState::Published,
            ShareType::Conditional,
            UpdateCycle::Monthly,
        )];
        let doc = document(
            &CatalogueSite::default(),
            &entries,
            &[table("102/000001")],
            &[],
            &[samr()],
        );
        assert_eq!(doc["@type"], "dcat:Catalog");
        assert_eq!(doc["@id"], "urn:xinqiao:catalog");
        assert_eq!(doc["@context"]["dcat"], "http://www.w3.org/ns/dcat#");
        assert_eq!(doc["@context"]["dct"], "http://purl.org/dc/terms/");
        assert_eq!(doc["dct:publisher"]["foaf:name"]["@value"], "信桥共享交换平台");
        assert_eq!(doc["dct:modified"]["@value"], "2026-11-02T08:00:00Z");
        assert_eq!(doc["dct:modified"]["@type"], "xsd:dateTime");

        let d = find(&doc, "102/000001");
        assert_eq!(d["@id"], "urn:xinqiao:resource:102/000001");
        assert_eq!(d["@type"], "dcat:Dataset");
        assert_eq!(d["dct:title"], json!({"@value": "企业登记信息", "@language": "zh"}));
        assert_eq!(d["dct:description"]["@value"], "本市企业的营业执照登记信息");
        // The department as registered now, named by its identity.
        assert_eq!(d["dct:publisher"]["@id"], format!("urn:xinqiao:dept:{SAMR}"));
        assert_eq!(d["dct:publisher"]["foaf:name"]["@value"], "市市场监督管理局");
        assert_eq!(d["dct:publisher"]["dct:identifier"], SAMR);
        assert_eq!(d["dcat:contactPoint"]["vcard:note"]["@value"], "办公室 0571-00000000");
        assert_eq!(d["dcat:theme"]["@id"], "urn:xinqiao:classification:102");
        assert_eq!(d["dcat:theme"]["skos:prefLabel"]["@value"], "基础信息资源 102");
        assert_eq!(d["dct:accrualPeriodicity"]["@id"], format!("{FREQUENCY}MONTHLY"));
        assert_eq!(d["dct:accessRights"]["@id"], format!("{ACCESS_RIGHT}RESTRICTED"));
        assert_eq!(d["dct:issued"]["@value"], "2026-11-02T08:00:00Z");

        let distributions = d["dcat:distribution"].as_array().expect("distributions");
        assert_eq!(distributions.len(), 1);
        let table = &distributions[0];
        assert_eq!(table["@type"], "dcat:Distribution");
        assert_eq!(table["@id"], "urn:xinqiao:dataset:102/000001");
        assert_eq!(table["dcat:accessURL"]["@id"], "https://localhost:7443");
        assert_eq!(table["dct:format"]["@id"], format!("{FILE_TYPE}JSON"));
        assert_eq!(table["dct:title"]["@value"], "企业登记信息（库表）");
        assert_eq!(table["dct:modified"]["@value"], "2026-11-03T08:00:00Z");
    }

    #[test]
    fn a_file_dataset_carries_the_entrys_format_and_no_dataset_no_distribution() {
        let entries = [
            entry(
                "102/000001",
                EntryState::Published,
                ShareType::Unconditional,
                UpdateCycle::Daily,
            ),
            entry(
                "102/000002",
                EntryState::Published,
                ShareType::Unconditional,
                UpdateCycle::Daily,
            ),
        ];
        let files = Dataset {
            kind: DatasetKind::File,
            schema: None,
            key: vec![],
            last_published_at: None,
            ..table("102/000001")
        };
        let doc = document(&CatalogueSite::default(), &entries, &[files], &[], &[samr()]);
        let file = &find(&doc, "102/000001")["dcat:distribution"][0];
        assert_eq!(file["dct:format"]["rdfs:label"]["@value"], "数据库");
        assert_eq!(file["dct:title"]["@value"], "企业登记信息（文件）");
        assert!(file.get("dcat:mediaType").is_none() && file.get("dct:modified").is_none());
        assert!(find(&doc, "102/000002").get("dcat:distribution").is_none());
    }

    fn interface(code: &str, enabled: bool) -> Interface {
        let schema = |subject: &str| SchemaRef {
            subject: subject.into(),
            version: 1,
        };
        let operation = |name: &str| Operation {
            name: name.into(),
            method: Method::Post,
            path: format!("/{name}"),
            request_schema: schema("id-check-request"),
            response_schema: schema("id-check-response"),
            idempotent: true,
        };
        Interface {
            code: code.into(),
            provider_code: SAMR.into(),
            spec: InterfaceSpec {
                upstream: "https://upstream.internal.example:8443/api".into(),
                upstream_ca_pem: String::new(),
                operations: vec![operation("verify"), operation("status")],
                timeout_ms: 2_000,
                rate_per_minute: 600,
                max_concurrency: 16,
                descriptor_set: Vec::new(),
            },
            enabled,
            disabled_reason: String::new(),
            registered_at: at(4),
            updated_at: at(5),
        }
    }

    #[test]
    fn an_enabled_interface_is_a_distribution_through_the_hub() {
        let entries = [
            entry(
                "101/000001",
                EntryState::Published,
                ShareType::Conditional,
                UpdateCycle::Realtime,
            ),
            entry(
                "101/000002",
                EntryState::Published,
                ShareType::Conditional,
                UpdateCycle::Realtime,
            ),
            entry(
                "101/000003",
                EntryState::Withdrawn,
                ShareType::Conditional,
                UpdateCycle::Realtime,
            ),
        ];
        let interfaces = [
            interface("101/000001", true),
            interface("101/000002", false),
            interface("101/000003", true),
        ];
        let doc = document(&CatalogueSite::default(), &entries, &[], &interfaces, &[samr()]);
        let service = &find(&doc, "101/000001")["dcat:distribution"];
        assert_eq!(service.as_array().map(Vec::len), Some(1), "{service:#}");
        let service = &service[0];
        assert_eq!(service["@id"], "urn:xinqiao:interface:101/000001");
        assert_eq!(service["dct:title"]["@value"], "企业登记信息（接口）");
        assert_eq!(service["dct:format"]["@id"], format!("{FILE_TYPE}JSON"));
        assert_eq!(service["dcat:accessURL"]["@id"], "https://localhost:7443");
        assert_eq!(service["dct:issued"]["@value"], "2026-11-04T08:00:00Z");
        assert_eq!(service["dct:modified"]["@value"], "2026-11-05T08:00:00Z");
        let access = &service["dcat:accessService"];
        assert_eq!(access["@type"], "dcat:DataService");
        assert_eq!(access["dcat:endpointURL"]["@id"], "https://localhost:7443");
        assert_eq!(
            access["dct:description"]["@value"],
            "经共享平台调用（Invoke）的操作：verify、status"
        );
        // A disabled interface is no way to the data; a withdrawn entry's is not exported at all.
        assert!(find(&doc, "101/000002").get("dcat:distribution").is_none());
        let text = doc.to_string();
        assert!(!text.contains("101/000003"), "{text}");
        // The provider's own system is reached through the hub only, and never named.
        assert!(!text.contains("upstream.internal.example"), "{text}");
    }

    #[test]
    fn an_unregistered_provider_keeps_the_entrys_name_and_no_contact() {
        let entries = [entry(
            "102/000001",
            EntryState::Published,
            ShareType::Unconditional,
            UpdateCycle::Daily,
        )];
        let doc = document(&CatalogueSite::default(), &entries, &[], &[], &[]);
        let d = find(&doc, "102/000001");
        assert_eq!(d["dct:publisher"]["foaf:name"]["@value"], "市场监管局（旧名）");
        assert!(d.get("dcat:contactPoint").is_none());
    }

    #[test]
    fn every_update_cycle_has_its_own_frequency() {
        let all: Vec<String> = UpdateCycle::ALL.iter().map(|c| accrual_periodicity(*c)).collect();
        let distinct: std::collections::HashSet<&String> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "{all:?}");
        assert!(all.iter().all(|iri| iri.starts_with(FREQUENCY)));
        assert_eq!(accrual_periodicity(UpdateCycle::Daily), format!("{FREQUENCY}DAILY"));
        assert_eq!(
            accrual_periodicity(UpdateCycle::HalfYearly),
            format!("{FREQUENCY}ANNUAL_2")
        );
        assert_eq!(accrual_periodicity(UpdateCycle::Yearly), format!("{FREQUENCY}ANNUAL"));
        assert_eq!(
            accrual_periodicity(UpdateCycle::Realtime),
            format!("{FREQUENCY}UPDATE_CONT")
        );
        assert_eq!(accrual_periodicity(UpdateCycle::Other), format!("{FREQUENCY}OTHER"));
    }

    #[test]
    fn share_types_map_to_access_rights() {
        let rights: Vec<String> = ShareType::ALL.iter().map(|s| access_rights(*s)).collect();
        assert_eq!(
            rights,
            ["PUBLIC", "RESTRICTED", "NON_PUBLIC"].map(|code| format!("{ACCESS_RIGHT}{code}"))
        );
    }

    #[test]
    fn names_under_a_base_and_literals_tagged_only_when_chinese() {
        let site = CatalogueSite {
            title: "City open catalogue".into(),
            base_iri: "https://data.example.gov.cn/catalog".into(),
            access_url: "https://hub.example.gov.cn:7443".into(),
            ..CatalogueSite::default()
        };
        assert_eq!(site.validate(), Ok(()));
        let mut e = entry(
            "102/000001",
            EntryState::Published,
            ShareType::Unconditional,
            UpdateCycle::Daily,
        );
        e.content.related_codes = vec!["201/000009".into()];
        let doc = document(&site, &[e], &[table("102/000001")], &[], &[samr()]);
        assert_eq!(doc["@id"], "https://data.example.gov.cn/catalog/catalog");
        assert_eq!(doc["dct:title"], "City open catalogue");
        let d = find(&doc, "102/000001");
        assert_eq!(d["@id"], "https://data.example.gov.cn/catalog/resource/102/000001");
        assert_eq!(
            d["dct:relation"][0]["@id"],
            "https://data.example.gov.cn/catalog/resource/201/000009"
        );
        assert_eq!(
            d["dcat:theme"]["@id"],
            "https://data.example.gov.cn/catalog/classification/102"
        );
        assert_eq!(
            d["dcat:distribution"][0]["dcat:accessURL"]["@id"],
            "https://hub.example.gov.cn:7443"
        );
        // A department is named by its identity, whatever the base.
        assert_eq!(d["dct:publisher"]["@id"], format!("urn:xinqiao:dept:{SAMR}"));
    }

    #[test]
    fn an_empty_catalogue_is_still_a_catalogue() {
        let doc = document(&CatalogueSite::default(), &[], &[], &[], &[]);
        assert_eq!(doc["@type"], "dcat:Catalog");
        assert_eq!(doc["dcat:dataset"], json!([]));
        assert!(doc.get("dct:modified").is_none());
    }

    #[test]
    fn odd_site_settings_are_refused() {
        let bad = CatalogueSite {
            title: " ".into(),
            access_url: "localhost:7443 ".into(),
            base_iri: "data/catalog".into(),
            ..CatalogueSite::default()
        };
        let Err(crate::Error::InvalidArgument(violations)) = bad.validate() else {
            panic!("expected violations")
        };
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["title", "access_url", "base_iri"]);
        assert_eq!(CatalogueSite::default().validate(), Ok(()));
    }
}
