//! B5's catalogue: many published entries with realistic names, summaries and data items, and the
//! keywords searched in it, from very common (信息) to rare (旅行社) and absent (海关).
//!
//! The entries are written through the hub's own store (the `CatalogStore` trait, as the
//! directory service writes them, search index included) before the search is measured: making
//! 100k entries through four RPCs each would take longer than the whole benchmark, and the hub
//! serves them like any other.

use std::sync::Arc;

use chrono::Utc;
use xinqiao_domain::catalogue::{
    CatalogEntry, DataItem, EntryContent, EntryFilter, ExchangeKind, OpenAttributes, OpenType, ResourceFormat,
    ShareAttributes, ShareChannel, ShareType, UpdateCycle,
};
use xinqiao_domain::lifecycle::{EntryAction, EntryState};
use xinqiao_store::{EntryChange, Store};

use crate::report::Res;

const DEPARTMENTS: &[&str] = &[
    "市场监管局",
    "人社局",
    "公安局",
    "民政局",
    "卫健委",
    "教育局",
    "交通运输局",
    "住建局",
    "自然资源局",
    "生态环境局",
    "税务局",
    "医保局",
    "农业农村局",
    "水利局",
    "文旅局",
    "应急管理局",
    "统计局",
    "财政局",
    "司法局",
    "商务局",
];

const SUBJECTS: &[&str] = &[
    "企业登记",
    "企业年报",
    "社保缴费",
    "社保待遇",
    "户籍人口",
    "流动人口",
    "婚姻登记",
    "养老机构",
    "医疗机构",
    "执业医师",
    "学校名录",
    "学籍",
    "道路运输许可",
    "公交线路",
    "建筑施工许可",
    "房屋预售",
    "不动产登记",
    "土地出让",
    "排污许可",
    "环境监测",
    "纳税信用",
    "发票",
    "医保结算",
    "定点药店",
    "农机补贴",
    "农产品质量",
    "河道管理",
    "水资源",
    "旅行社",
    "文物保护",
    "安全生产许可",
    "危化品",
    "经济普查",
    "物价",
    "财政预算",
    "政府采购",
    "律师执业",
    "公证",
    "外商投资",
    "食品经营许可",
];

const KINDS: &[&str] = &["信息", "名录", "台账", "统计", "目录", "记录", "明细", "清单"];

const DISTRICTS: &[&str] = &[
    "上城区",
    "拱墅区",
    "西湖区",
    "滨江区",
    "萧山区",
    "余杭区",
    "临平区",
    "钱塘区",
    "富阳区",
    "临安区",
    "桐庐县",
    "淳安县",
    "建德市",
];

const ITEMS: &[&str] = &[
    "统一社会信用代码",
    "名称",
    "法定代表人",
    "公民身份号码",
    "姓名",
    "性别",
    "出生日期",
    "住址",
    "联系电话",
    "登记日期",
    "许可证编号",
    "有效期",
    "发证机关",
    "经营范围",
    "注册资本",
    "行政区划代码",
    "金额",
    "年度",
    "状态",
    "备注",
];

const CYCLES: &[(UpdateCycle, &str)] = &[
    (UpdateCycle::Daily, "每日"),
    (UpdateCycle::Weekly, "每周"),
    (UpdateCycle::Monthly, "每月"),
    (UpdateCycle::Yearly, "每年"),
];

/// Keywords of varied selectivity: one- and two-character words found in many entries, names of
/// subjects found in a few hundred, data items, a district, and words found nowhere.
pub const KEYWORDS: &[&str] = &[
    "企业",
    "社保",
    "登记",
    "许可",
    "医",
    "信息",
    "不动产登记",
    "旅行社",
    "统一社会信用代码",
    "西湖区",
    "婚姻",
    "排污",
    "学籍",
    "税",
    "海关",
    "公交线路",
    "危化品",
    "农产品质量",
    "律师",
    "发票",
];

/// The `i`-th entry's content: a department, a subject and a kind name it, a district and an
/// update cycle describe it, and three to six data items.
pub fn content(i: usize) -> EntryContent {
    // Strides prime to the lists' lengths mix them, so names repeat only across many entries.
    let department = DEPARTMENTS[i % DEPARTMENTS.len()];
    let subject = SUBJECTS[(i * 7 + i / DEPARTMENTS.len()) % SUBJECTS.len()];
    let kind = KINDS[(i / 3) % KINDS.len()];
    let district = DISTRICTS[(i * 5) % DISTRICTS.len()];
    let (cycle, cycle_name) = CYCLES[(i / 11) % CYCLES.len()];
    let items: Vec<DataItem> = (0..3 + i % 4)
        .map(|k| DataItem {
            name: ITEMS[(i * 3 + k * 7) % ITEMS.len()].to_string(),
            data_type: "字符型".into(),
            length: 64,
            sensitive: false,
            description: String::new(),
        })
        .collect();
    let summary = format!(
        "{district}{department}掌握的{subject}{kind}，{cycle_name}更新，含{}等{}个信息项（第{i}号）。",
        items[0].name,
        items.len()
    );
    EntryContent {
        name: format!("{district}{department}{subject}{kind}"),
        classification: format!("{}", 101 + i % 9),
        summary,
        format: ResourceFormat::Database,
        items,
        share: ShareAttributes {
            share_type: ShareType::Unconditional,
            condition: String::new(),
            channel: ShareChannel::Platform,
            exchange_kind: ExchangeKind::Table,
            legal_basis: String::new(),
        },
        open: OpenAttributes {
            open_type: OpenType::NotOpen,
            condition: String::new(),
        },
        update_cycle: cycle,
        related_codes: vec![],
        maintainer: String::new(),
    }
}

/// Creates and publishes `count` entries of `provider` in `store`, `writers` at a time (the
/// database groups their commits); returns how many it made.
pub async fn grow(store: Arc<dyn Store>, provider: &str, count: usize, writers: usize) -> Res<usize> {
    let writers = writers.clamp(1, count.max(1));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let provider = provider.to_string();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < count {
                let at = Utc::now();
                let create = EntryChange {
                    action: EntryAction::Create,
                    actor: provider.clone(),
                    reason: String::new(),
                    at,
                };
                let mut entry = store
                    .create_entry(&provider, &content(i), &create)
                    .await
                    .map_err(|e| format!("creating catalogue entry {i}: {e}"))?;
                entry.version += 1;
                entry.state = EntryState::Published;
                entry.published_at = Some(at);
                let publish = EntryChange {
                    action: EntryAction::Publish,
                    actor: "admin:bench".into(),
                    reason: String::new(),
                    at,
                };
                store
                    .save_entry_version(&entry, &publish)
                    .await
                    .map_err(|e| format!("publishing catalogue entry {i}: {e}"))?;
                i += writers;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| format!("a catalogue writer failed: {e}"))??;
    }
    Ok(count)
}

/// The hub's in-memory search index over `count` entries of B5's catalogue, built apart from the
/// hub's own: what it holds by its own count (the process's growth would say little here: the
/// hub's own index and the catalogue's growth came first, and the allocator reuses what they
/// freed), how long it takes to build, and a page of 21 for each keyword (B5's note).
pub fn index_figures(count: usize) -> String {
    use xinqiao_hub::search_index::{Index, Record};
    let now = Utc::now();
    // A provider of no consequence: every entry is published, so any caller sees it.
    const PROVIDER: &str = "11330100MB00010011";
    let records: Vec<Arc<Record>> = (0..count)
        .map(|i| {
            let entry = CatalogEntry {
                resource_code: format!("{}/{:06}", 101 + i % 9, i / 9 + 1),
                provider_code: PROVIDER.into(),
                provider_name: String::new(),
                content: content(i),
                state: EntryState::Published,
                version: 2,
                state_reason: String::new(),
                published_at: Some(now),
                created_at: now,
                updated_at: now,
            };
            Arc::new(Record::of("", &entry))
        })
        .collect();
    let started = std::time::Instant::now();
    let index = Index::build(records);
    let built = started.elapsed();
    let visibility = xinqiao_domain::policy::EntryVisibility::PublishedOrOwnedBy(PROVIDER.into());
    let rounds = 200;
    let mut served = 0;
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        for keyword in KEYWORDS {
            let filter = EntryFilter {
                keyword: (*keyword).into(),
                ..Default::default()
            };
            served += usize::from(index.search(true, &visibility, &filter, None, 21).is_some());
        }
    }
    let page_us = started.elapsed().as_secs_f64() * 1e6 / (rounds * KEYWORDS.len()) as f64;
    format!(
        "the index of {} entries: {:.1} MiB by its own count, built in {:.2} s; \
         a page of 21 from it {page_us:.1} µs on average ({served} of {} served by the index)",
        index.len(),
        index.bytes() as f64 / 1048576.0,
        built.as_secs_f64(),
        rounds * KEYWORDS.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use xinqiao_domain::catalogue::{EntryDraft, OpenDraft, ShareDraft};

    #[test]
    fn every_generated_entry_is_valid_and_keywords_vary_in_selectivity() {
        let texts: Vec<String> = (0..2_000)
            .map(|i| {
                let c = content(i);
                let draft = EntryDraft {
                    name: c.name.clone(),
                    classification: c.classification.clone(),
                    summary: c.summary.clone(),
                    format: Some(c.format),
                    items: c.items.clone(),
                    share: Some(ShareDraft {
                        share_type: Some(c.share.share_type),
                        condition: String::new(),
                        channel: Some(c.share.channel),
                        exchange_kind: Some(c.share.exchange_kind),
                        legal_basis: String::new(),
                    }),
                    open: Some(OpenDraft {
                        open_type: Some(c.open.open_type),
                        condition: String::new(),
                    }),
                    update_cycle: Some(c.update_cycle),
                    related_codes: vec![],
                    maintainer: String::new(),
                };
                assert_eq!(draft.validate().expect("a valid entry"), c);
                c.search_text().to_lowercase()
            })
            .collect();
        let hits = |k: &str| texts.iter().filter(|t| t.contains(k)).count();
        assert!(hits("信息") > 1_000, "a common word");
        assert!(hits("旅行社") > 0 && hits("旅行社") < 200, "a rare one");
        assert_eq!(hits("海关"), 0, "one found nowhere");
    }
}
