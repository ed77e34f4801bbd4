//! Bad requests get the precise status, name the offending fields, and leave the database as it
//! was.

use tonic::Code;
use xinqiao_tests::v1 as pb;
use xinqiao_tests::*;

on_each_backend!(
    a_wrong_uscc_check_character_is_named,
    every_problem_of_a_department_is_named,
    a_duplicate_department_already_exists,
    missing_entry_metadata_is_named,
    oversized_strings_are_refused,
    a_message_over_the_size_limit_is_refused,
    a_message_over_the_default_size_limit_is_refused,
    nul_characters_are_refused,
    unknown_enum_numbers_are_refused,
    page_sizes_are_checked,
    unknown_codes_are_not_found,
    keywords_match_literally,
    the_classification_is_fixed_once_created,
);

/// Content that passes validation, from which each case breaks one thing.
fn valid() -> pb::EntryContent {
    content("企业登记信息", "102001", "本市企业的营业执照登记信息")
}

async fn a_wrong_uscc_check_character_is_named(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.admin().await;
    let before = hub.snapshot().await;
    // HEALTH ends in 0; 1 is the wrong check character.
    let status = invalid(
        admin
            .register_department(register_request("11330100MB00040041", "市卫生健康委员会"))
            .await,
        &["code"],
    );
    assert_eq!(violated_fields(&status), ["code"], "only the code is wrong");
    for code in [
        "",
        "11330100MB0004004",
        "11330100MB000400400",
        "11330100MB0004004I",
        "11ABCDEFMB00040040",
    ] {
        invalid(
            admin
                .register_department(register_request(code, "市卫生健康委员会"))
                .await,
            &["code"],
        );
    }
    assert_eq!(hub.snapshot().await, before);
    hub.finish().await;
}

async fn every_problem_of_a_department_is_named(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.admin().await;
    let before = hub.snapshot().await;
    let request = pb::RegisterDepartmentRequest {
        code: "123".into(),
        name: " ".into(),
        division_code: "99000".into(),
        contact: "x".repeat(201),
    };
    let status = refused(admin.register_department(request).await, Code::InvalidArgument);
    let mut fields = violated_fields(&status);
    fields.sort();
    assert_eq!(fields, ["code", "contact", "division_code", "name"]);

    let update = pb::UpdateDepartmentRequest {
        code: SAMR.into(),
        name: String::new(),
        division_code: "330100".into(),
        contact: String::new(),
    };
    invalid(admin.update_department(update).await, &["name"]);
    let update = pb::UpdateDepartmentRequest {
        code: SAMR.into(),
        name: "市场监管局".into(),
        division_code: "990000".into(),
        contact: String::new(),
    };
    invalid(admin.update_department(update).await, &["division_code"]);
    assert_eq!(hub.snapshot().await, before);
    hub.finish().await;
}

async fn a_duplicate_department_already_exists(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.admin().await;
    let before = hub.snapshot().await;
    refused(
        admin
            .register_department(register_request(SAMR, "另一个市场监管局"))
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(hub.snapshot().await, before, "the existing department is untouched");

    ok(admin
        .register_department(register_request(HEALTH, "市卫生健康委员会"))
        .await);
    let after_first = hub.snapshot().await;
    refused(
        admin
            .register_department(register_request(HEALTH, "市卫生健康委员会"))
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(hub.snapshot().await, after_first);
    hub.finish().await;
}

async fn missing_entry_metadata_is_named(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let before = hub.snapshot().await;

    invalid(
        samr.create_entry(pb::CreateEntryRequest { content: None }).await,
        &["content"],
    );

    let status = refused(
        samr.create_entry(create(pb::EntryContent::default())).await,
        Code::InvalidArgument,
    );
    let fields = violated_fields(&status);
    for field in [
        "content.name",
        "content.classification",
        "content.summary",
        "content.format",
        "content.update_cycle",
        "content.items",
        "content.share",
        "content.open",
    ] {
        assert!(
            fields.iter().any(|f| f == field),
            "empty content: no violation on {field} in {fields:?}"
        );
    }

    let no_share = pb::EntryContent { share: None, ..valid() };
    assert_eq!(
        violated_fields(&invalid(samr.create_entry(create(no_share)).await, &["content.share"])),
        ["content.share"]
    );

    let mut no_legal_basis = conditional(valid());
    no_legal_basis.share.as_mut().expect("share").legal_basis = String::new();
    let status = invalid(
        samr.create_entry(create(no_legal_basis)).await,
        &["content.share.legal_basis"],
    );
    assert_eq!(violated_fields(&status), ["content.share.legal_basis"]);

    let mut no_condition = conditional(valid());
    no_condition.share.as_mut().expect("share").condition = " ".into();
    invalid(
        samr.create_entry(create(no_condition)).await,
        &["content.share.condition"],
    );

    let mut open_without_condition = valid();
    open_without_condition.open = Some(pb::OpenAttributes {
        open_type: pb::OpenType::Conditional as i32,
        condition: String::new(),
    });
    invalid(
        samr.create_entry(create(open_without_condition)).await,
        &["content.open.condition"],
    );

    let mut unnamed_item = valid();
    unnamed_item.items[1].name = String::new();
    invalid(
        samr.create_entry(create(unnamed_item)).await,
        &["content.items[1].name"],
    );

    let mut bad_related = valid();
    bad_related.related_codes = vec!["not-a-code".into()];
    invalid(
        samr.create_entry(create(bad_related)).await,
        &["content.related_codes[0]"],
    );

    for classification in ["4", "10", "1020", "abc", "102/1"] {
        invalid(
            samr.create_entry(create(content("企业登记信息", classification, "摘要")))
                .await,
            &["content.classification"],
        );
    }
    assert_eq!(hub.snapshot().await, before, "nothing was stored");

    // Updates are validated the same way and leave the entry as it was.
    let code = ok(samr.create_entry(create(valid())).await).resource_code;
    let stored = hub.snapshot().await;
    invalid(
        samr.update_entry(update(
            &code,
            pb::EntryContent {
                summary: String::new(),
                ..valid()
            },
        ))
        .await,
        &["content.summary"],
    );
    invalid(
        samr.update_entry(pb::UpdateEntryRequest {
            content: None,
            ..update(&code, valid())
        })
        .await,
        &["content"],
    );
    assert_eq!(hub.snapshot().await, stored);
    hub.finish().await;
}

async fn oversized_strings_are_refused(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let mut admin = hub.admin().await;
    let before = hub.snapshot().await;

    let long_name = "名".repeat(10_000);
    invalid(
        samr.create_entry(create(pb::EntryContent {
            name: long_name.clone(),
            ..valid()
        }))
        .await,
        &["content.name"],
    );
    let megabyte_summary = "a".repeat(1024 * 1024);
    invalid(
        samr.create_entry(create(pb::EntryContent {
            summary: megabyte_summary,
            ..valid()
        }))
        .await,
        &["content.summary"],
    );
    invalid(
        admin.register_department(register_request(HEALTH, &long_name)).await,
        &["name"],
    );
    let long_reason = pb::DeactivateDepartmentRequest {
        code: POLICE.into(),
        reason: "因".repeat(10_000),
    };
    invalid(admin.deactivate_department(long_reason).await, &["reason"]);
    invalid(samr.search_entries(keyword(&long_name)).await, &["keyword"]);
    assert_eq!(hub.snapshot().await, before);

    // The limits count characters, not bytes: 200 Chinese characters (600 bytes) is a valid name.
    ok(samr
        .create_entry(create(pb::EntryContent {
            name: "名".repeat(200),
            ..valid()
        }))
        .await);
    invalid(
        samr.create_entry(create(pb::EntryContent {
            name: "名".repeat(201),
            ..valid()
        }))
        .await,
        &["content.name"],
    );
    hub.finish().await;
}

/// A request the hub refuses to decode must fail as too large. tonic's own code for that is
/// OUT_OF_RANGE; RESOURCE_EXHAUSTED is what gRPC's status table suggests. Either will do.
#[track_caller]
fn too_large<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) {
    match result {
        Ok(response) => panic!("an oversized message was accepted: {:?}", response.get_ref()),
        Err(status) => assert!(
            matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
            "expected OUT_OF_RANGE or RESOURCE_EXHAUSTED, got {:?}: {}",
            status.code(),
            status.message()
        ),
    }
}

async fn a_message_over_the_size_limit_is_refused(backend: Backend) {
    let hub = TestHub::start_with(backend, |config| config.limits.max_message_bytes = 64 * 1024).await;
    let mut samr = hub.dept(SAMR).await;
    let before = hub.snapshot().await;

    // 100 KiB of items, each one valid: only the size is wrong.
    let mut big = valid();
    big.items = (0..800)
        .map(|i| item(&format!("信息项{i:04}{}", "长".repeat(30)), "字符型", 10))
        .collect();
    too_large(samr.create_entry(create(big)).await);
    assert_eq!(hub.snapshot().await, before, "nothing was stored");

    // The connection and the hub are fine, and a request under the limit goes through.
    let created = ok(samr.create_entry(create(valid())).await);
    assert_eq!(created.resource_code, "102001/000001");
    hub.finish().await;
}

async fn a_message_over_the_default_size_limit_is_refused(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let before = hub.snapshot().await;
    let five_megabytes = pb::EntryContent {
        summary: "a".repeat(5 * 1024 * 1024),
        ..valid()
    };
    too_large(samr.create_entry(create(five_megabytes)).await);
    assert_eq!(hub.snapshot().await, before);
    ok(samr.who_am_i(pb::WhoAmIRequest {}).await);
    hub.finish().await;
}

async fn nul_characters_are_refused(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let mut admin = hub.admin().await;
    let code = ok(samr.create_entry(create(valid())).await).resource_code;
    let before = hub.snapshot().await;

    invalid(
        admin
            .register_department(register_request(HEALTH, "市卫生\0健康委员会"))
            .await,
        &["name"],
    );
    invalid(
        samr.create_entry(create(pb::EntryContent {
            name: "企业\0登记".into(),
            ..valid()
        }))
        .await,
        &["content.name"],
    );
    invalid(
        samr.create_entry(create(pb::EntryContent {
            summary: "摘要\0".into(),
            ..valid()
        }))
        .await,
        &["content.summary"],
    );
    let mut nul_item = valid();
    nul_item.items[0].name = "代码\0".into();
    invalid(samr.create_entry(create(nul_item)).await, &["content.items[0].name"]);
    invalid(
        samr.update_entry(update(
            &code,
            pb::EntryContent {
                name: "\0".into(),
                ..valid()
            },
        ))
        .await,
        &["content.name"],
    );
    invalid(samr.search_entries(keyword("营业\0执照")).await, &["keyword"]);
    assert_eq!(hub.snapshot().await, before);
    hub.finish().await;
}

async fn unknown_enum_numbers_are_refused(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let before = hub.snapshot().await;

    let mut share = valid();
    share.share.as_mut().expect("share").share_type = 99;
    invalid(samr.create_entry(create(share)).await, &["content.share.share_type"]);
    let mut channel = valid();
    channel.share.as_mut().expect("share").channel = -1;
    invalid(samr.create_entry(create(channel)).await, &["content.share.channel"]);
    let mut exchange = valid();
    exchange.share.as_mut().expect("share").exchange_kind = 4;
    invalid(
        samr.create_entry(create(exchange)).await,
        &["content.share.exchange_kind"],
    );
    let mut open = valid();
    open.open.as_mut().expect("open").open_type = 99;
    invalid(samr.create_entry(create(open)).await, &["content.open.open_type"]);
    invalid(
        samr.create_entry(create(pb::EntryContent { format: 99, ..valid() }))
            .await,
        &["content.format"],
    );
    invalid(
        samr.create_entry(create(pb::EntryContent {
            update_cycle: 42,
            ..valid()
        }))
        .await,
        &["content.update_cycle"],
    );
    // Unspecified (0) is as good as missing.
    invalid(
        samr.create_entry(create(pb::EntryContent { format: 0, ..valid() }))
            .await,
        &["content.format"],
    );
    assert_eq!(hub.snapshot().await, before);

    let search = pb::SearchEntriesRequest::default;
    invalid(
        samr.search_entries(pb::SearchEntriesRequest {
            share_type: 99,
            ..search()
        })
        .await,
        &["share_type"],
    );
    invalid(
        samr.search_entries(pb::SearchEntriesRequest {
            open_type: 99,
            ..search()
        })
        .await,
        &["open_type"],
    );
    invalid(
        samr.search_entries(pb::SearchEntriesRequest {
            update_cycle: 99,
            ..search()
        })
        .await,
        &["update_cycle"],
    );
    invalid(
        samr.search_entries(pb::SearchEntriesRequest { format: 99, ..search() })
            .await,
        &["format"],
    );
    invalid(
        samr.search_entries(pb::SearchEntriesRequest { state: 99, ..search() })
            .await,
        &["state"],
    );
    invalid(
        samr.search_entries(pb::SearchEntriesRequest {
            classification_prefix: "1%".into(),
            ..search()
        })
        .await,
        &["classification_prefix"],
    );
    hub.finish().await;
}

async fn page_sizes_are_checked(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    for i in 0..3 {
        ok(samr
            .create_entry(create(content(&format!("条目{i}"), "102001", "分页")))
            .await);
    }

    let entries = ok(samr
        .search_entries(pb::SearchEntriesRequest {
            page_size: 0,
            ..Default::default()
        })
        .await);
    assert_eq!((entries.entries.len(), entries.next_page_token.as_str()), (3, ""));
    let departments = ok(samr
        .list_departments(pb::ListDepartmentsRequest {
            page_size: 0,
            ..Default::default()
        })
        .await);
    assert_eq!(
        (departments.departments.len(), departments.next_page_token.as_str()),
        (3, "")
    );

    invalid(
        samr.search_entries(pb::SearchEntriesRequest {
            page_size: 1_000_000,
            ..Default::default()
        })
        .await,
        &["page_size"],
    );
    invalid(
        samr.list_departments(pb::ListDepartmentsRequest {
            page_size: 1_000_000,
            ..Default::default()
        })
        .await,
        &["page_size"],
    );
    invalid(
        samr.search_entries(pb::SearchEntriesRequest {
            page_size: 1001,
            ..Default::default()
        })
        .await,
        &["page_size"],
    );
    // The maximum itself is fine.
    ok(samr
        .search_entries(pb::SearchEntriesRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await);
    ok(samr
        .list_departments(pb::ListDepartmentsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await);
    hub.finish().await;
}

async fn unknown_codes_are_not_found(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let mut admin = hub.admin().await;
    ok(samr.create_entry(create(valid())).await);
    let before = hub.snapshot().await;

    for code in ["102001/999999", "102002/000001", "999/000001"] {
        refused(samr.get_entry(get(code, 0)).await, Code::NotFound);
        refused(samr.get_entry(get(code, 1)).await, Code::NotFound);
        refused(samr.list_entry_versions(versions(code)).await, Code::NotFound);
        refused(samr.update_entry(update(code, valid())).await, Code::NotFound);
        refused(samr.submit_entry(submit(code)).await, Code::NotFound);
        refused(samr.withdraw_entry(withdraw(code, "")).await, Code::NotFound);
        refused(admin.publish_entry(publish(code)).await, Code::NotFound);
        refused(admin.return_entry(return_with(code, "不存在")).await, Code::NotFound);
    }

    refused(
        samr.get_department(pb::GetDepartmentRequest { code: HEALTH.into() })
            .await,
        Code::NotFound,
    );
    let profile = pb::UpdateDepartmentRequest {
        code: HEALTH.into(),
        name: "市卫生健康委员会".into(),
        division_code: "330100".into(),
        contact: String::new(),
    };
    refused(admin.update_department(profile).await, Code::NotFound);
    let deactivate = pb::DeactivateDepartmentRequest {
        code: HEALTH.into(),
        reason: String::new(),
    };
    refused(admin.deactivate_department(deactivate).await, Code::NotFound);
    refused(
        admin
            .reactivate_department(pb::ReactivateDepartmentRequest { code: HEALTH.into() })
            .await,
        Code::NotFound,
    );
    assert_eq!(hub.snapshot().await, before);
    hub.finish().await;
}

async fn keywords_match_literally(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let plain = ok(samr.create_entry(create(valid())).await).resource_code;
    let quoted = ok(samr
        .create_entry(create(content(
            "O'Brien \"引号\" 信息",
            "102001",
            "反斜杠 C:\\数据 目录",
        )))
        .await)
    .resource_code;
    let before = hub.snapshot().await;

    // Nothing stored holds a %, _ or the injection text, so these find nothing, and do no harm.
    for text in [
        "%",
        "_",
        "%%",
        "'; DROP TABLE departments; --",
        "\"; DROP TABLE catalog_entries; --",
        "' OR '1'='1",
        "\\%",
        "营业%执照",
        "营_执照",
    ] {
        assert_eq!(
            search_codes(&mut samr, keyword(text)).await,
            Vec::<String>::new(),
            "keyword {text:?}"
        );
    }
    // Quotes and backslashes match themselves.
    assert_eq!(search_codes(&mut samr, keyword("O'Brien")).await, vec![quoted.clone()]);
    assert_eq!(search_codes(&mut samr, keyword("\"引号\"")).await, vec![quoted.clone()]);
    assert_eq!(search_codes(&mut samr, keyword("C:\\数据")).await, vec![quoted.clone()]);
    assert_eq!(search_codes(&mut samr, keyword("\\")).await, vec![quoted.clone()]);
    assert_eq!(hub.snapshot().await, before, "the tables are still there and unchanged");

    let percent = ok(samr
        .create_entry(create(content("达标率统计", "102001", "检测合格率 100%_达标")))
        .await)
    .resource_code;
    assert_eq!(search_codes(&mut samr, keyword("%_")).await, vec![percent.clone()]);
    assert_eq!(search_codes(&mut samr, keyword("%")).await, vec![percent.clone()]);
    assert_eq!(search_codes(&mut samr, keyword("_")).await, vec![percent.clone()]);
    assert_eq!(search_codes(&mut samr, keyword("100%")).await, vec![percent.clone()]);
    // As wildcards these would match 100%_达标; literally they do not occur.
    assert_eq!(search_codes(&mut samr, keyword("1_0")).await, Vec::<String>::new());
    assert_eq!(search_codes(&mut samr, keyword("1%达标")).await, Vec::<String>::new());
    assert_eq!(search_codes(&mut samr, keyword("营业执照")).await, vec![plain]);

    // Every table is still in place: departments, entries and histories all read back.
    let snapshot = hub.snapshot().await;
    assert_eq!(snapshot.departments.len(), 3);
    assert_eq!(snapshot.entries.len(), 3);
    assert_eq!(
        ok(samr.list_departments(pb::ListDepartmentsRequest::default()).await)
            .departments
            .len(),
        3
    );
    hub.finish().await;
}

async fn the_classification_is_fixed_once_created(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let code = ok(samr.create_entry(create(valid())).await).resource_code;
    let before = hub.snapshot().await;
    let moved = content("企业登记信息", "102003", "本市企业的营业执照登记信息");
    invalid(
        samr.update_entry(update(&code, moved)).await,
        &["content.classification"],
    );
    assert_eq!(hub.snapshot().await, before);
    // The same classification is fine.
    assert_eq!(ok(samr.update_entry(update(&code, valid())).await).version, 2);
    hub.finish().await;
}
