//! The catalogue export: `ExportCatalog` gives the published catalogue as DCAT-AP JSON-LD, and an
//! RDF library (rdflib, from Python, as CKAN's DCAT harvester uses it) reads in it what was
//! published: every published entry as a dataset with its title, publisher, access rights and
//! update frequency, a distribution for each dataset and interface on it, and nothing that is not
//! published.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use tonic::Code;
use xinqiao_domain::dcat::{ACCESS_RIGHT, FILE_TYPE, FREQUENCY};
use xinqiao_hub::pki;
use xinqiao_proto::v1::directory_service_client::DirectoryServiceClient;
use xinqiao_proto::v1::interface_service_client::InterfaceServiceClient;
use xinqiao_store::AuditFilter;
use xinqiao_tests::v1 as pb;
use xinqiao_tests::*;

on_each_backend!(
    the_published_catalogue_is_exported_as_dcat,
    rdflib_reads_the_export,
    the_export_is_for_callers_of_the_catalogue_in_a_named_format,
);

/// The script that reads the document with rdflib.
const RDFLIB_CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/dcat_check.py");

fn export() -> pb::ExportCatalogRequest {
    pb::ExportCatalogRequest {
        format: pb::CatalogFormat::DcatJsonld as i32,
    }
}

fn cycle(mut content: pb::EntryContent, cycle: pb::UpdateCycle) -> pb::EntryContent {
    content.update_cycle = cycle as i32;
    content
}

/// What the hub holds: one published entry of each sharing type, a table dataset on one and a
/// file dataset on another, and entries in every unpublished state.
struct Catalogue {
    /// 无条件共享, daily, a table dataset (SAMR).
    open: String,
    /// 有条件共享 through an interface, monthly, its interface registered (POLICE).
    conditional: String,
    /// 不予共享, yearly (HRSS).
    not_shared: String,
    /// 无条件共享 files, real time (POLICE).
    files: String,
    /// A draft, one pending review, one returned and one withdrawn (SAMR).
    unpublished: Vec<String>,
}

impl Catalogue {
    fn published(&self) -> Vec<&str> {
        let mut codes = vec![
            self.open.as_str(),
            self.conditional.as_str(),
            self.not_shared.as_str(),
            self.files.as_str(),
        ];
        codes.sort();
        codes
    }
}

async fn compile(hub: &TestHub) -> Catalogue {
    hub.import_shared_schemas().await;
    let open = hub
        .open_table(
            SAMR,
            content("企业登记信息", "102001", "本市登记注册企业的营业执照信息"),
        )
        .await
        .dataset;
    let conditional = hub
        .published_entry(
            POLICE,
            cycle(
                conditional(content("户籍人口信息", "101001", "本市户籍人口的基本信息")),
                pb::UpdateCycle::Monthly,
            ),
        )
        .await;
    register_interface(hub, &conditional).await;
    let not_shared = hub
        .published_entry(
            HRSS,
            cycle(
                shared_as(
                    content("社会保险个人权益记录", "201003", "参保人员的个人权益记录"),
                    pb::ShareType::NotShared,
                    pb::ExchangeKind::Table,
                ),
                pb::UpdateCycle::Yearly,
            ),
        )
        .await;
    let files = hub
        .open_files(
            POLICE,
            cycle(
                content("交通违法处理文书", "301002", "交通违法处理决定书的电子文件"),
                pb::UpdateCycle::Realtime,
            ),
        )
        .await
        .dataset;

    let mut samr = hub.dept(SAMR).await;
    let mut admin = hub.admin().await;
    let mut unpublished = Vec::new();
    for state in ["draft", "pending", "returned", "withdrawn"] {
        let name = format!("未发布的目录（{state}）");
        let code = ok(samr.create_entry(create(content(&name, "102002", "尚未发布"))).await).resource_code;
        if state != "draft" {
            ok(samr.submit_entry(submit(&code)).await);
        }
        match state {
            "returned" => {
                ok(admin.return_entry(return_with(&code, "摘要不完整")).await);
            }
            "withdrawn" => {
                ok(admin.publish_entry(publish(&code)).await);
                ok(admin.withdraw_entry(withdraw(&code, "资源停止提供")).await);
            }
            _ => {}
        }
        unpublished.push(code);
    }
    Catalogue {
        open,
        conditional,
        not_shared,
        files,
        unpublished,
    }
}

/// Where the interface's provider runs it: never dialled here, and never to be exported.
const UPSTREAM: &str = "https://127.0.0.1:9/population";

/// Registers an interface on POLICE's 接口 entry `code`, with two operations on schemas of its own.
async fn register_interface(hub: &TestHub, code: &str) {
    let mut schemas = hub.schemas(POLICE).await;
    for subject in ["dcat-test-request", "dcat-test-response"] {
        ok(schemas
            .register_schema(pb::RegisterSchemaRequest {
                subject: subject.into(),
                schema_json: r#"{"type": "object"}"#.into(),
            })
            .await);
    }
    let schema = |subject: &str| {
        Some(pb::SchemaReference {
            subject: subject.into(),
            version: 1,
        })
    };
    let operation = |name: &str| pb::InterfaceOperation {
        name: name.into(),
        method: "POST".into(),
        path: format!("/{name}"),
        request_schema: schema("dcat-test-request"),
        response_schema: schema("dcat-test-response"),
        idempotent: true,
    };
    let ca_pem = std::fs::read_to_string(pki::ca_cert_path(&hub.pki_dir())).expect("a CA certificate");
    let channel = hub.channel(pki::department_files(&hub.pki_dir(), POLICE)).await;
    ok(InterfaceServiceClient::new(channel)
        .register_interface(pb::RegisterInterfaceRequest {
            code: code.into(),
            spec: Some(pb::InterfaceSpec {
                upstream: UPSTREAM.into(),
                upstream_ca_pem: ca_pem,
                operations: vec![operation("lookup"), operation("verify")],
                timeout_ms: 0,
                rate_per_minute: 0,
                max_concurrency: 0,
                descriptor_set: Vec::new(),
            }),
        })
        .await);
}

/// The export's document, parsed, after checking its media type.
async fn exported(client: &mut Directory) -> (String, Value) {
    let answer = ok(client.export_catalog(export()).await);
    assert_eq!(answer.media_type, "application/ld+json");
    let document = json(&answer.document);
    (answer.document, document)
}

fn dataset<'a>(document: &'a Value, code: &str) -> &'a Value {
    document["dcat:dataset"]
        .as_array()
        .and_then(|all| all.iter().find(|d| d["dct:identifier"] == code))
        .unwrap_or_else(|| panic!("{code} is not in the export: {document:#}"))
}

fn iri(node: &Value) -> &str {
    node["@id"]
        .as_str()
        .unwrap_or_else(|| panic!("not a reference: {node}"))
}

async fn the_published_catalogue_is_exported_as_dcat(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let catalogue = compile(&hub).await;
    let (text, document) = exported(&mut hub.dept(HRSS).await).await;

    let context = &document["@context"];
    for (prefix, namespace) in [
        ("dcat", "http://www.w3.org/ns/dcat#"),
        ("dct", "http://purl.org/dc/terms/"),
        ("foaf", "http://xmlns.com/foaf/0.1/"),
        ("vcard", "http://www.w3.org/2006/vcard/ns#"),
        ("xsd", "http://www.w3.org/2001/XMLSchema#"),
    ] {
        assert_eq!(context[prefix], namespace, "{context}");
    }
    assert_eq!(document["@type"], "dcat:Catalog");
    assert!(document["dct:title"]["@value"].is_string(), "{document:#}");
    assert_eq!(document["dct:publisher"]["@type"], "foaf:Agent");
    assert_eq!(document["dct:modified"]["@type"], "xsd:dateTime");

    // Every published entry, in resource-code order; nothing unpublished, not even by name.
    let codes: Vec<&str> = document["dcat:dataset"]
        .as_array()
        .expect("a list of datasets")
        .iter()
        .map(|d| d["dct:identifier"].as_str().expect("an identifier"))
        .collect();
    assert_eq!(codes, catalogue.published());
    for code in &catalogue.unpublished {
        assert!(!text.contains(code.as_str()), "{code} is not published but exported");
    }
    assert!(
        !text.contains("未发布的目录"),
        "an unpublished entry's name is exported"
    );

    let open = dataset(&document, &catalogue.open);
    assert_eq!(open["@type"], "dcat:Dataset");
    assert_eq!(iri(open), format!("urn:xinqiao:resource:{}", catalogue.open));
    assert_eq!(
        open["dct:title"],
        serde_json::json!({"@value": "企业登记信息", "@language": "zh"})
    );
    assert_eq!(open["dct:description"]["@value"], "本市登记注册企业的营业执照信息");
    assert_eq!(iri(&open["dct:publisher"]), format!("urn:xinqiao:dept:{SAMR}"));
    assert_eq!(open["dct:publisher"]["foaf:name"]["@value"], "市市场监督管理局");
    assert_eq!(open["dct:publisher"]["dct:identifier"], SAMR);
    assert_eq!(iri(&open["dcat:theme"]), "urn:xinqiao:classification:102001");
    assert_eq!(open["dcat:theme"]["skos:prefLabel"]["@value"], "基础信息资源 102001");
    assert_eq!(iri(&open["dct:accrualPeriodicity"]), format!("{FREQUENCY}DAILY"));
    assert_eq!(iri(&open["dct:accessRights"]), format!("{ACCESS_RIGHT}PUBLIC"));
    assert_eq!(open["dct:issued"]["@type"], "xsd:dateTime");
    let distributions = open["dcat:distribution"].as_array().expect("distributions");
    assert_eq!(distributions.len(), 1, "{open:#}");
    let table = &distributions[0];
    assert_eq!(table["@type"], "dcat:Distribution");
    assert_eq!(table["dct:identifier"], catalogue.open.as_str());
    assert_eq!(iri(&table["dct:format"]), format!("{FILE_TYPE}JSON"));
    assert!(iri(&table["dcat:accessURL"]).starts_with("https://"), "{table}");
    assert_eq!(table["dct:title"]["@value"], "企业登记信息（库表）");

    // 有条件共享 through an interface: restricted, called through the hub, whose address stands
    // for the provider's own system.
    let conditional = dataset(&document, &catalogue.conditional);
    assert_eq!(
        iri(&conditional["dct:accessRights"]),
        format!("{ACCESS_RIGHT}RESTRICTED")
    );
    assert_eq!(
        iri(&conditional["dct:accrualPeriodicity"]),
        format!("{FREQUENCY}MONTHLY")
    );
    assert_eq!(conditional["dct:publisher"]["foaf:name"]["@value"], "市公安局");
    let service = &conditional["dcat:distribution"];
    assert_eq!(service.as_array().map(Vec::len), Some(1), "{conditional:#}");
    assert_eq!(
        iri(&service[0]),
        format!("urn:xinqiao:interface:{}", catalogue.conditional)
    );
    assert_eq!(service[0]["dct:title"]["@value"], "户籍人口信息（接口）");
    assert_eq!(iri(&service[0]["dct:format"]), format!("{FILE_TYPE}JSON"));
    let access = &service[0]["dcat:accessService"];
    assert_eq!(access["@type"], "dcat:DataService");
    assert_eq!(iri(&access["dcat:endpointURL"]), iri(&table["dcat:accessURL"]));
    assert_eq!(
        access["dct:description"]["@value"],
        "经共享平台调用（Invoke）的操作：lookup、verify"
    );
    assert!(!text.contains(UPSTREAM), "the upstream is exported");

    // 不予共享: listed, so that the directory shows it exists, as non-public.
    let not_shared = dataset(&document, &catalogue.not_shared);
    assert_eq!(
        iri(&not_shared["dct:accessRights"]),
        format!("{ACCESS_RIGHT}NON_PUBLIC")
    );
    assert_eq!(iri(&not_shared["dct:accrualPeriodicity"]), format!("{FREQUENCY}ANNUAL"));
    assert_eq!(
        not_shared["dcat:theme"]["skos:prefLabel"]["@value"],
        "主题信息资源 201003"
    );

    // Files: the entry's own format, updated in real time (continuously).
    let files = dataset(&document, &catalogue.files);
    assert_eq!(iri(&files["dct:accrualPeriodicity"]), format!("{FREQUENCY}UPDATE_CONT"));
    assert_eq!(
        files["dcat:distribution"][0]["dct:format"]["rdfs:label"]["@value"],
        "电子文件"
    );

    // The same catalogue for every caller: the admin, who sees every entry, exports the same.
    let (admin_text, _) = exported(&mut hub.admin().await).await;
    assert_eq!(admin_text, text);
    hub.finish().await;
}

/// Runs the rdflib script on `document`; what it read, as JSON.
fn read_with_rdflib(dir: &Path, document: &str) -> Value {
    let file = dir.join("catalog.jsonld");
    std::fs::write(&file, document).expect("write the document");
    let out = Command::new("python3")
        .arg(RDFLIB_CHECK)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("python3 does not run ({e}); the export must be read by rdflib"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rdflib could not read the export (pip install rdflib):\n{}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&stdout)
}

async fn rdflib_reads_the_export(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let catalogue = compile(&hub).await;
    let answer = ok(hub.dept(SAMR).await.export_catalog(export()).await);
    let dir = tempfile::tempdir().expect("temporary directory");
    let read = read_with_rdflib(dir.path(), &answer.document);

    assert_eq!(read["catalogs"], serde_json::json!(["urn:xinqiao:catalog"]), "{read:#}");
    assert!(read["triples"].as_u64().is_some_and(|n| n > 50), "{read:#}");
    let datasets = read["datasets"].as_array().expect("datasets");
    let codes: Vec<&str> = datasets.iter().filter_map(|d| d["identifier"].as_str()).collect();
    assert_eq!(codes, catalogue.published(), "{read:#}");
    let find = |code: &str| {
        datasets
            .iter()
            .find(|d| d["identifier"] == code)
            .unwrap_or_else(|| panic!("rdflib finds no dataset {code}: {read:#}"))
    };
    let expected = [
        (
            &catalogue.open,
            "企业登记信息",
            "市市场监督管理局",
            SAMR,
            "PUBLIC",
            "DAILY",
        ),
        (
            &catalogue.conditional,
            "户籍人口信息",
            "市公安局",
            POLICE,
            "RESTRICTED",
            "MONTHLY",
        ),
        (
            &catalogue.not_shared,
            "社会保险个人权益记录",
            "市人力资源和社会保障局",
            HRSS,
            "NON_PUBLIC",
            "ANNUAL",
        ),
        (
            &catalogue.files,
            "交通违法处理文书",
            "市公安局",
            POLICE,
            "PUBLIC",
            "UPDATE_CONT",
        ),
    ];
    for (code, title, publisher, publisher_id, rights, frequency) in expected {
        let d = find(code);
        assert_eq!(d["title"], title, "{d}");
        assert_eq!(d["title_language"], "zh", "{d}");
        assert_eq!(d["publisher_name"], publisher, "{d}");
        assert_eq!(d["publisher_id"], publisher_id, "{d}");
        assert_eq!(d["access_rights"], format!("{ACCESS_RIGHT}{rights}"), "{d}");
        assert_eq!(d["periodicity"], format!("{FREQUENCY}{frequency}"), "{d}");
        assert_eq!(d["iri"], format!("urn:xinqiao:resource:{code}"), "{d}");
    }

    // One distribution per dataset and interface: the table and the interface as JSON, the files
    // in the entry's format.
    let distributions: Vec<(&str, &str)> = read["distributions"]
        .as_array()
        .expect("distributions")
        .iter()
        .map(|d| {
            (
                d["dataset"].as_str().unwrap_or_default(),
                d["format"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let json_type = format!("{FILE_TYPE}JSON");
    let mut expected = vec![
        (catalogue.open.as_str(), json_type.as_str()),
        (catalogue.conditional.as_str(), json_type.as_str()),
        (catalogue.files.as_str(), "电子文件"),
    ];
    expected.sort();
    assert_eq!(distributions, expected, "{read:#}");
    hub.finish().await;
}

async fn the_export_is_for_callers_of_the_catalogue_in_a_named_format(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    // An empty catalogue is a catalogue with no dataset.
    let (_, empty) = exported(&mut hub.dept(POLICE).await).await;
    assert_eq!(empty["@type"], "dcat:Catalog");
    assert_eq!(empty["dcat:dataset"], serde_json::json!([]));

    // The format must be named: there will be others.
    let unnamed = refused(
        hub.dept(POLICE)
            .await
            .export_catalog(pb::ExportCatalogRequest::default())
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&unnamed), ["format"]);

    // Like a catalogue search, closed to an evaluator (评价方), which reads scorecards only.
    let evaluator = hub.channel(pki::evaluator_files(&hub.pki_dir())).await;
    refused(
        DirectoryServiceClient::new(evaluator).export_catalog(export()).await,
        Code::PermissionDenied,
    );

    // Audited as the directory's other reads: the refusal is in the trail, the reads are not.
    let events = hub
        .store()
        .list_audit(
            &AuditFilter {
                action: Some("ExportCatalog".into()),
                ..AuditFilter::default()
            },
            0,
            100,
        )
        .await
        .expect("the trail");
    let outcomes: Vec<&str> = events.iter().map(|e| e.event.outcome.as_str()).collect();
    assert_eq!(outcomes, ["PERMISSION_DENIED"], "{events:#?}");
    hub.finish().await;
}
