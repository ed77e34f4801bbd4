//! Every DirectoryService RPC doing its job: departments, entries, versions and search.

use tonic::Code;
use xinqiao_tests::v1 as pb;
use xinqiao_tests::*;

on_each_backend!(
    who_am_i_names_the_admin_and_each_department,
    departments_are_registered_updated_deactivated_and_reactivated,
    list_departments_pages_until_exhausted,
    resource_codes_are_classification_and_a_sequence,
    concurrent_creates_get_distinct_codes,
    an_entry_is_kept_as_written,
    get_entry_reads_the_current_and_past_versions,
    search_filters_each_attribute,
    search_finds_keywords_in_summaries_and_data_items,
    search_follows_revisions,
    search_pages_with_opaque_tokens_in_resource_code_order,
);

async fn who_am_i_names_the_admin_and_each_department(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let me = ok(hub.admin().await.who_am_i(pb::WhoAmIRequest {}).await);
    assert_eq!(me.identity, Some(pb::who_am_i_response::Identity::Admin(ADMIN.into())));

    for sample in xinqiao_hub::pki::SAMPLE_DEPARTMENTS {
        let me = ok(hub.dept(sample.code).await.who_am_i(pb::WhoAmIRequest {}).await);
        let Some(pb::who_am_i_response::Identity::Department(d)) = me.identity else {
            panic!("{} is not recognised as a department: {:?}", sample.code, me.identity)
        };
        assert_eq!(
            (d.code.as_str(), d.name.as_str(), d.active),
            (sample.code, sample.name, true)
        );
        assert_eq!(d.division_code, sample.division_code);
    }
    hub.finish().await;
}

async fn departments_are_registered_updated_deactivated_and_reactivated(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.admin().await;
    let mut samr = hub.dept(SAMR).await;

    let registered = ok(admin
        .register_department(register_request(HEALTH, "市卫生健康委员会"))
        .await);
    assert_eq!(registered.code, HEALTH);
    assert_eq!(registered.name, "市卫生健康委员会");
    assert_eq!(registered.division_code, "330100");
    assert_eq!(registered.contact, "办公室 0571-00000000");
    assert!(registered.active);
    assert!(registered.created_at.is_some() && registered.updated_at.is_some());

    // Any registered department may look another up.
    let get = |code: &str| pb::GetDepartmentRequest { code: code.into() };
    assert_eq!(ok(samr.get_department(get(HEALTH)).await), registered);

    let updated = ok(admin
        .update_department(pb::UpdateDepartmentRequest {
            code: HEALTH.into(),
            name: "市卫生健康委".into(),
            division_code: "330102".into(),
            contact: "信息中心 0571-12345678".into(),
        })
        .await);
    assert_eq!(
        (
            updated.name.as_str(),
            updated.division_code.as_str(),
            updated.contact.as_str()
        ),
        ("市卫生健康委", "330102", "信息中心 0571-12345678")
    );
    assert_eq!(updated.created_at, registered.created_at);
    assert!(updated_at(&updated) >= updated_at(&registered));
    assert_eq!(ok(samr.get_department(get(HEALTH)).await), updated);

    let listed = |include_inactive| pb::ListDepartmentsRequest {
        page_size: 0,
        page_token: String::new(),
        include_inactive,
    };
    let codes = |r: pb::ListDepartmentsResponse| r.departments.into_iter().map(|d| d.code).collect::<Vec<_>>();

    let deactivated = ok(admin
        .deactivate_department(pb::DeactivateDepartmentRequest {
            code: HEALTH.into(),
            reason: "机构改革".into(),
        })
        .await);
    assert!(!deactivated.active);
    assert!(!ok(samr.get_department(get(HEALTH)).await).active);
    assert!(!codes(ok(admin.list_departments(listed(false)).await)).contains(&HEALTH.to_string()));
    assert!(codes(ok(admin.list_departments(listed(true)).await)).contains(&HEALTH.to_string()));

    let reactivated = ok(admin
        .reactivate_department(pb::ReactivateDepartmentRequest { code: HEALTH.into() })
        .await);
    assert!(reactivated.active);
    assert_eq!(reactivated.name, "市卫生健康委");
    assert!(codes(ok(admin.list_departments(listed(false)).await)).contains(&HEALTH.to_string()));
    hub.finish().await;
}

fn updated_at(d: &pb::Department) -> (i64, i32) {
    let t = d.updated_at.as_ref().expect("updated_at is set");
    (t.seconds, t.nanos)
}

async fn list_departments_pages_until_exhausted(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.admin().await;
    // 3 sample departments + 8 = 11, of which 3 are then deactivated.
    let extra: Vec<String> = (0..8).map(|i| uscc(9_000_000 + i)).collect();
    for (i, code) in extra.iter().enumerate() {
        ok(admin
            .register_department(register_request(code, &format!("测试部门{i}")))
            .await);
    }
    for code in &extra[..3] {
        ok(admin
            .deactivate_department(pb::DeactivateDepartmentRequest {
                code: code.clone(),
                reason: String::new(),
            })
            .await);
    }

    let mut all: Vec<String> = extra.clone();
    all.extend(xinqiao_hub::pki::SAMPLE_DEPARTMENTS.iter().map(|d| d.code.to_string()));
    all.sort();
    let active: Vec<String> = all.iter().filter(|c| !extra[..3].contains(c)).cloned().collect();

    for (include_inactive, expected) in [(false, &active), (true, &all)] {
        let mut mine = hub.dept(POLICE).await;
        let mut request = pb::ListDepartmentsRequest {
            page_size: 3,
            page_token: String::new(),
            include_inactive,
        };
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = ok(mine.list_departments(request.clone()).await);
            pages += 1;
            assert!(
                page.departments.len() <= 3,
                "a page holds at most page_size departments"
            );
            assert!(page.departments.iter().all(|d| include_inactive || d.active));
            seen.extend(page.departments.into_iter().map(|d| d.code));
            if page.next_page_token.is_empty() {
                break;
            }
            assert!(pages < 10, "paging does not end");
            request.page_token = page.next_page_token;
        }
        assert_eq!(
            &seen, expected,
            "include_inactive = {include_inactive}: every department once, ordered by code"
        );
        assert_eq!(pages, expected.len().div_ceil(3));

        // The default page size holds them all in one page.
        request = pb::ListDepartmentsRequest {
            page_size: 0,
            page_token: String::new(),
            include_inactive,
        };
        let one = ok(mine.list_departments(request).await);
        assert_eq!(one.departments.len(), expected.len());
        assert_eq!(one.next_page_token, "");
    }
    hub.finish().await;
}

async fn resource_codes_are_classification_and_a_sequence(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let mut hrss = hub.dept(HRSS).await;

    let first = ok(samr
        .create_entry(create(content("企业登记信息", "102001", "营业执照登记信息")))
        .await);
    let second = ok(samr
        .create_entry(create(content("企业年报信息", "102001", "企业年度报告")))
        .await);
    // The sequence counts per classification, whichever department creates the entry.
    let third = ok(hrss
        .create_entry(create(content("用人单位信息", "102001", "参保单位名录")))
        .await);
    let other = ok(hrss
        .create_entry(create(content("社会保险参保信息", "201", "参保人员及缴费情况")))
        .await);

    assert_eq!(first.resource_code, "102001/000001");
    assert_eq!(second.resource_code, "102001/000002");
    assert_eq!(third.resource_code, "102001/000003");
    assert_eq!(other.resource_code, "201/000001");
    // 102 is a classification of its own, not a prefix of 102001's counter.
    let broader = ok(samr
        .create_entry(create(content("法人单位综合信息", "102", "法人单位汇总")))
        .await);
    assert_eq!(broader.resource_code, "102/000001");
    let fourth = ok(samr
        .create_entry(create(content("企业注销信息", "102001", "注销登记")))
        .await);
    assert_eq!(fourth.resource_code, "102001/000004");
    for (entry, provider) in [(&first, SAMR), (&second, SAMR), (&third, HRSS), (&other, HRSS)] {
        assert_eq!(entry.provider_code, provider);
        assert_eq!(entry.state, pb::EntryState::Draft as i32);
        assert_eq!(entry.version, 1);
        assert!(entry.published_at.is_none());
        assert!(entry.created_at.is_some() && entry.updated_at.is_some());
    }
    assert_eq!(first.provider_name, "市市场监督管理局");
    assert_eq!(third.provider_name, "市人力资源和社会保障局");
    hub.finish().await;
}

async fn concurrent_creates_get_distinct_codes(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let samr = hub.dept(SAMR).await;
    let hrss = hub.dept(HRSS).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut client = if i % 2 == 0 { samr.clone() } else { hrss.clone() };
        tasks.push(tokio::spawn(async move {
            client
                .create_entry(create(content(&format!("并发条目{i}"), "102001", "并发创建")))
                .await
        }));
    }
    let mut codes = Vec::new();
    for task in tasks {
        codes.push(ok(task.await.expect("task")).resource_code);
    }
    codes.sort();
    let expected: Vec<String> = (1..=20).map(|n| format!("102001/{n:06}")).collect();
    assert_eq!(codes, expected, "every create got its own code, with no gaps");
    assert_eq!(hub.snapshot().await.entries.len(), 20);
    hub.finish().await;
}

async fn an_entry_is_kept_as_written(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let mut written = conditional(content(
        "行政处罚信息",
        "102003",
        "行政处罚决定书的公开信息\n含处罚种类与依据",
    ));
    written.format = pb::ResourceFormat::Spreadsheet as i32;
    written.update_cycle = pb::UpdateCycle::Monthly as i32;
    written.open = Some(pb::OpenAttributes {
        open_type: pb::OpenType::Conditional as i32,
        condition: "申请后开放".into(),
    });
    written.items.push(pb::DataItem {
        name: "法定代表人".into(),
        data_type: "字符型".into(),
        length: 50,
        sensitive: true,
        description: "处罚对象的法定代表人".into(),
    });
    written.related_codes = vec!["102001/000001".into()];
    written.maintainer = "市市场监督管理局数据科".into();

    let created = ok(samr.create_entry(create(written.clone())).await);
    assert_eq!(created.content.as_ref(), Some(&written));
    let read = ok(samr.get_entry(get(&created.resource_code, 0)).await);
    assert_eq!(read, created);
    hub.finish().await;
}

async fn get_entry_reads_the_current_and_past_versions(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let v1 = ok(samr
        .create_entry(create(content("企业登记信息", "102001", "第一版摘要")))
        .await);
    let code = v1.resource_code.clone();
    let v2 = ok(samr
        .update_entry(update(&code, content("企业登记信息", "102001", "第二版摘要")))
        .await);
    assert_eq!(v2.version, 2);

    let current = ok(samr.get_entry(get(&code, 0)).await);
    assert_eq!(current, v2);
    assert_eq!(ok(samr.get_entry(get(&code, 2)).await), v2);
    let past = ok(samr.get_entry(get(&code, 1)).await);
    assert_eq!(past.version, 1);
    assert_eq!(past.content.as_ref().map(|c| c.summary.as_str()), Some("第一版摘要"));
    assert_eq!(past.content, v1.content);

    refused(samr.get_entry(get(&code, 3)).await, Code::NotFound);
    refused(samr.get_entry(get(&code, 99)).await, Code::NotFound);
    hub.finish().await;
}

/// Resource codes of the catalogue built by [`catalogue`].
struct Catalogue {
    /// SAMR, 102001, unconditional, open unconditionally, daily, database: published.
    enterprise: String,
    /// SAMR, 102003, conditional, not open, monthly, spreadsheet: published.
    penalty: String,
    /// POLICE, 101001, not shared, not open, realtime, service interface: pending review.
    population: String,
    /// HRSS, 201, conditional, open conditionally, quarterly, electronic file: draft.
    insurance: String,
    /// SAMR, 102001, unconditional, not open, yearly, database: returned.
    annual: String,
    /// POLICE, 101002, unconditional, not open, weekly, image: withdrawn.
    vehicles: String,
}

async fn catalogue(hub: &TestHub) -> Catalogue {
    let mut admin = hub.admin().await;
    let mut samr = hub.dept(SAMR).await;
    let mut police = hub.dept(POLICE).await;
    let mut hrss = hub.dept(HRSS).await;

    let mut c = content("企业登记信息", "102001", "本市登记注册企业的营业执照信息");
    c.open = Some(pb::OpenAttributes {
        open_type: pb::OpenType::Unconditional as i32,
        condition: String::new(),
    });
    let enterprise = ok(samr.create_entry(create(c)).await).resource_code;

    let mut c = conditional(content("行政处罚信息", "102003", "行政处罚决定的公示信息"));
    c.format = pb::ResourceFormat::Spreadsheet as i32;
    c.update_cycle = pb::UpdateCycle::Monthly as i32;
    c.items.push(item("处罚决定日期", "日期型", 8));
    let penalty = ok(samr.create_entry(create(c)).await).resource_code;

    let mut c = content("户籍人口信息", "101001", "常住人口户籍登记");
    c.share = Some(pb::ShareAttributes {
        share_type: pb::ShareType::NotShared as i32,
        condition: "涉及个人隐私".into(),
        channel: pb::ShareChannel::Media as i32,
        exchange_kind: pb::ExchangeKind::File as i32,
        legal_basis: "《中华人民共和国个人信息保护法》".into(),
    });
    c.format = pb::ResourceFormat::ServiceInterface as i32;
    c.update_cycle = pb::UpdateCycle::Realtime as i32;
    let population = ok(police.create_entry(create(c)).await).resource_code;

    let mut c = conditional(content("社会保险参保信息", "201", "参保人员及缴费情况"));
    c.open = Some(pb::OpenAttributes {
        open_type: pb::OpenType::Conditional as i32,
        condition: "经审批后开放".into(),
    });
    c.format = pb::ResourceFormat::ElectronicFile as i32;
    c.update_cycle = pb::UpdateCycle::Quarterly as i32;
    let insurance = ok(hrss.create_entry(create(c)).await).resource_code;

    let mut c = content("企业年度报告信息", "102001", "企业年度报告公示");
    c.update_cycle = pb::UpdateCycle::Yearly as i32;
    let annual = ok(samr.create_entry(create(c)).await).resource_code;

    let mut c = content("机动车登记信息", "101002", "机动车注册登记");
    c.format = pb::ResourceFormat::Image as i32;
    c.update_cycle = pb::UpdateCycle::Weekly as i32;
    let vehicles = ok(police.create_entry(create(c)).await).resource_code;

    for code in [&enterprise, &penalty, &annual] {
        ok(samr.submit_entry(submit(code)).await);
    }
    ok(police.submit_entry(submit(&population)).await);
    ok(admin.publish_entry(publish(&enterprise)).await);
    ok(admin.publish_entry(publish(&penalty)).await);
    ok(admin.return_entry(return_with(&annual, "摘要过于简单")).await);
    ok(police.withdraw_entry(withdraw(&vehicles, "数据源停用")).await);

    Catalogue {
        enterprise,
        penalty,
        population,
        insurance,
        annual,
        vehicles,
    }
}

async fn search_filters_each_attribute(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let cat = catalogue(&hub).await;
    let mut admin = hub.admin().await;
    let mut find = async |request: pb::SearchEntriesRequest| {
        let mut codes = search_codes(&mut admin, request).await;
        codes.sort();
        codes
    };
    let sorted = |mut codes: Vec<&String>| {
        codes.sort();
        codes.into_iter().cloned().collect::<Vec<_>>()
    };
    let all = sorted(vec![
        &cat.enterprise,
        &cat.penalty,
        &cat.population,
        &cat.insurance,
        &cat.annual,
        &cat.vehicles,
    ]);
    assert_eq!(
        find(pb::SearchEntriesRequest::default()).await,
        all,
        "the admin sees every entry"
    );

    let r = pb::SearchEntriesRequest::default;
    let prefix = |p: &str| pb::SearchEntriesRequest {
        classification_prefix: p.into(),
        ..r()
    };
    assert_eq!(
        find(prefix("1")).await,
        sorted(vec![
            &cat.enterprise,
            &cat.penalty,
            &cat.population,
            &cat.annual,
            &cat.vehicles
        ])
    );
    assert_eq!(
        find(prefix("102")).await,
        sorted(vec![&cat.enterprise, &cat.penalty, &cat.annual])
    );
    assert_eq!(find(prefix("102001")).await, sorted(vec![&cat.enterprise, &cat.annual]));
    assert_eq!(find(prefix("101")).await, sorted(vec![&cat.population, &cat.vehicles]));
    assert_eq!(find(prefix("2")).await, sorted(vec![&cat.insurance]));
    assert_eq!(find(prefix("3")).await, Vec::<String>::new());

    let provider = |p: &str| pb::SearchEntriesRequest {
        provider_code: p.into(),
        ..r()
    };
    assert_eq!(
        find(provider(SAMR)).await,
        sorted(vec![&cat.enterprise, &cat.penalty, &cat.annual])
    );
    assert_eq!(
        find(provider(POLICE)).await,
        sorted(vec![&cat.population, &cat.vehicles])
    );
    assert_eq!(find(provider(HRSS)).await, sorted(vec![&cat.insurance]));

    let share = |t: pb::ShareType| pb::SearchEntriesRequest {
        share_type: t as i32,
        ..r()
    };
    assert_eq!(
        find(share(pb::ShareType::Unconditional)).await,
        sorted(vec![&cat.enterprise, &cat.annual, &cat.vehicles])
    );
    assert_eq!(
        find(share(pb::ShareType::Conditional)).await,
        sorted(vec![&cat.penalty, &cat.insurance])
    );
    assert_eq!(
        find(share(pb::ShareType::NotShared)).await,
        sorted(vec![&cat.population])
    );

    let open = |t: pb::OpenType| pb::SearchEntriesRequest {
        open_type: t as i32,
        ..r()
    };
    assert_eq!(
        find(open(pb::OpenType::Unconditional)).await,
        sorted(vec![&cat.enterprise])
    );
    assert_eq!(
        find(open(pb::OpenType::Conditional)).await,
        sorted(vec![&cat.insurance])
    );
    assert_eq!(
        find(open(pb::OpenType::NotOpen)).await,
        sorted(vec![&cat.penalty, &cat.population, &cat.annual, &cat.vehicles])
    );

    let cycle = |c: pb::UpdateCycle| pb::SearchEntriesRequest {
        update_cycle: c as i32,
        ..r()
    };
    assert_eq!(find(cycle(pb::UpdateCycle::Daily)).await, sorted(vec![&cat.enterprise]));
    assert_eq!(find(cycle(pb::UpdateCycle::Monthly)).await, sorted(vec![&cat.penalty]));
    assert_eq!(
        find(cycle(pb::UpdateCycle::Realtime)).await,
        sorted(vec![&cat.population])
    );
    assert_eq!(
        find(cycle(pb::UpdateCycle::Quarterly)).await,
        sorted(vec![&cat.insurance])
    );
    assert_eq!(find(cycle(pb::UpdateCycle::Yearly)).await, sorted(vec![&cat.annual]));
    assert_eq!(find(cycle(pb::UpdateCycle::Weekly)).await, sorted(vec![&cat.vehicles]));
    assert_eq!(find(cycle(pb::UpdateCycle::HalfYearly)).await, Vec::<String>::new());

    let format = |f: pb::ResourceFormat| pb::SearchEntriesRequest {
        format: f as i32,
        ..r()
    };
    assert_eq!(
        find(format(pb::ResourceFormat::Database)).await,
        sorted(vec![&cat.enterprise, &cat.annual])
    );
    assert_eq!(
        find(format(pb::ResourceFormat::Spreadsheet)).await,
        sorted(vec![&cat.penalty])
    );
    assert_eq!(
        find(format(pb::ResourceFormat::ServiceInterface)).await,
        sorted(vec![&cat.population])
    );
    assert_eq!(
        find(format(pb::ResourceFormat::ElectronicFile)).await,
        sorted(vec![&cat.insurance])
    );
    assert_eq!(
        find(format(pb::ResourceFormat::Image)).await,
        sorted(vec![&cat.vehicles])
    );
    assert_eq!(
        find(format(pb::ResourceFormat::StreamingMedia)).await,
        Vec::<String>::new()
    );

    let state = |s: pb::EntryState| pb::SearchEntriesRequest { state: s as i32, ..r() };
    assert_eq!(
        find(state(pb::EntryState::Published)).await,
        sorted(vec![&cat.enterprise, &cat.penalty])
    );
    assert_eq!(
        find(state(pb::EntryState::PendingReview)).await,
        sorted(vec![&cat.population])
    );
    assert_eq!(find(state(pb::EntryState::Draft)).await, sorted(vec![&cat.insurance]));
    assert_eq!(find(state(pb::EntryState::Returned)).await, sorted(vec![&cat.annual]));
    assert_eq!(
        find(state(pb::EntryState::Withdrawn)).await,
        sorted(vec![&cat.vehicles])
    );

    // Filters combine with AND.
    let combined = pb::SearchEntriesRequest {
        provider_code: SAMR.into(),
        classification_prefix: "102001".into(),
        state: pb::EntryState::Published as i32,
        ..r()
    };
    assert_eq!(find(combined).await, sorted(vec![&cat.enterprise]));
    let disjoint = pb::SearchEntriesRequest {
        provider_code: HRSS.into(),
        classification_prefix: "1".into(),
        ..r()
    };
    assert_eq!(find(disjoint).await, Vec::<String>::new());
    hub.finish().await;
}

async fn search_finds_keywords_in_summaries_and_data_items(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let cat = catalogue(&hub).await;
    // 市市场监督管理局 sees the published entries and its own; 机动车登记信息 (市公安局's,
    // withdrawn) is not among them.
    let mut samr = hub.dept(SAMR).await;

    // In a summary only (the name is 企业登记信息).
    assert_eq!(
        search_codes(&mut samr, keyword("营业执照")).await,
        vec![cat.enterprise.clone()]
    );
    // In a data-item name only.
    assert_eq!(
        search_codes(&mut samr, keyword("处罚决定日期")).await,
        vec![cat.penalty.clone()]
    );
    // In a name, and as a substring in the middle of a word.
    assert_eq!(
        search_codes(&mut samr, keyword("登记信息")).await,
        vec![cat.enterprise.clone()]
    );
    assert_eq!(
        search_codes(&mut samr, keyword("不存在的关键词")).await,
        Vec::<String>::new()
    );
    // Leading and trailing blanks are not part of the keyword.
    assert_eq!(
        search_codes(&mut samr, keyword(" 营业执照 ")).await,
        vec![cat.enterprise.clone()]
    );
    // A keyword combines with the other filters.
    let combined = pb::SearchEntriesRequest {
        keyword: "信息".into(),
        share_type: pb::ShareType::Conditional as i32,
        ..Default::default()
    };
    assert_eq!(search_codes(&mut samr, combined).await, vec![cat.penalty.clone()]);
    hub.finish().await;
}

async fn search_follows_revisions(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let mut written = content("企业登记信息", "102001", "旧的摘要关键词");
    written.items.push(item("旧信息项", "字符型", 10));
    let code = ok(samr.create_entry(create(written)).await).resource_code;
    assert_eq!(search_codes(&mut samr, keyword("旧的摘要")).await, vec![code.clone()]);
    assert_eq!(search_codes(&mut samr, keyword("旧信息项")).await, vec![code.clone()]);

    let mut revised = content("企业登记信息", "102001", "新的摘要关键词");
    revised.items.push(item("新信息项", "字符型", 10));
    ok(samr.update_entry(update(&code, revised)).await);
    assert_eq!(search_codes(&mut samr, keyword("旧的摘要")).await, Vec::<String>::new());
    assert_eq!(search_codes(&mut samr, keyword("旧信息项")).await, Vec::<String>::new());
    assert_eq!(search_codes(&mut samr, keyword("新的摘要")).await, vec![code.clone()]);
    assert_eq!(search_codes(&mut samr, keyword("新信息项")).await, vec![code.clone()]);

    // State filters follow the lifecycle too.
    let state = |s: pb::EntryState| pb::SearchEntriesRequest {
        state: s as i32,
        ..Default::default()
    };
    ok(samr.submit_entry(submit(&code)).await);
    assert_eq!(
        search_codes(&mut samr, state(pb::EntryState::Draft)).await,
        Vec::<String>::new()
    );
    assert_eq!(
        search_codes(&mut samr, state(pb::EntryState::PendingReview)).await,
        vec![code.clone()]
    );
    hub.finish().await;
}

async fn search_pages_with_opaque_tokens_in_resource_code_order(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let mut hrss = hub.dept(HRSS).await;
    // Created out of resource-code order, by two providers.
    for (provider, classification) in [
        (SAMR, "201"),
        (HRSS, "102001"),
        (SAMR, "102001"),
        (HRSS, "101"),
        (SAMR, "102"),
    ] {
        let client = if provider == SAMR { &mut samr } else { &mut hrss };
        for i in 0..3 {
            ok(client
                .create_entry(create(content(
                    &format!("信息资源{classification}-{i}"),
                    classification,
                    "分页测试",
                )))
                .await);
        }
    }
    let mut admin = hub.admin().await;
    let unpaged = ok(admin.search_entries(pb::SearchEntriesRequest::default()).await);
    assert_eq!(unpaged.next_page_token, "");
    let expected: Vec<String> = unpaged.entries.iter().map(|e| e.resource_code.clone()).collect();
    assert_eq!(expected.len(), 15);
    let mut in_order = expected.clone();
    in_order.sort();
    assert_eq!(expected, in_order, "entries come ordered by resource code");

    let mut request = pb::SearchEntriesRequest {
        page_size: 4,
        ..Default::default()
    };
    let mut paged = Vec::new();
    let mut pages = 0;
    loop {
        let page = ok(admin.search_entries(request.clone()).await);
        pages += 1;
        assert!(page.entries.len() <= 4);
        let last = page.entries.last().map(|e| e.resource_code.clone());
        paged.extend(page.entries.into_iter().map(|e| e.resource_code));
        if page.next_page_token.is_empty() {
            break;
        }
        assert!(pages < 10, "paging does not end");
        // Opaque: the token does not spell out the key it continues after.
        let last = last.expect("a page with a next token is not empty");
        assert!(
            !page.next_page_token.contains(&last),
            "token {} shows {last}",
            page.next_page_token
        );
        request.page_token = page.next_page_token;
    }
    assert_eq!(paged, expected);
    assert_eq!(pages, 4);

    // A provider pages through its own entries the same way.
    let mine = search_codes(
        &mut samr,
        pb::SearchEntriesRequest {
            page_size: 2,
            ..Default::default()
        },
    )
    .await;
    let samr_codes: Vec<String> = unpaged
        .entries
        .iter()
        .filter(|e| e.provider_code == SAMR)
        .map(|e| e.resource_code.clone())
        .collect();
    assert_eq!(mine, samr_codes);

    // A token belongs to the listing that returned it.
    let departments = ok(admin
        .list_departments(pb::ListDepartmentsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await);
    assert!(!departments.next_page_token.is_empty());
    let replayed = pb::SearchEntriesRequest {
        page_token: departments.next_page_token,
        ..Default::default()
    };
    invalid(admin.search_entries(replayed).await, &["page_token"]);
    let forged = pb::SearchEntriesRequest {
        page_token: "not a token!".into(),
        ..Default::default()
    };
    invalid(admin.search_entries(forged).await, &["page_token"]);
    let entries_token = ok(admin
        .search_entries(pb::SearchEntriesRequest {
            page_size: 1,
            ..Default::default()
        })
        .await);
    let replayed = pb::ListDepartmentsRequest {
        page_token: entries_token.next_page_token,
        ..Default::default()
    };
    invalid(admin.list_departments(replayed).await, &["page_token"]);
    hub.finish().await;
}
