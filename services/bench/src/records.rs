//! Deterministic legal-entity records (schemas/legal-entity.json) of about 1 KiB each, with valid
//! GB 32100 check characters. Record `i` is the same in every run and for every contender.

use xinqiao_domain::identifiers::uscc_check_char;
use xinqiao_proto::v1 as pb;

/// The size a record is padded to, in bytes of JSON text.
pub const TARGET_BYTES: usize = 1024;

const SURNAMES: &[&str] = &["张", "王", "李", "赵", "刘", "陈", "杨", "黄", "周", "吴"];
const GIVEN: &[&str] = &["伟", "芳", "娜", "敏", "静", "强", "磊", "洋", "艳", "勇", "军", "杰"];
const TRADES: &[&str] = &[
    "科技",
    "物流",
    "餐饮",
    "商贸",
    "建设",
    "医药",
    "文化",
    "信息技术",
    "农业",
    "制造",
];
const STATUSES: &[&str] = &["存续", "在业", "存续", "存续", "迁入", "停业"];
const DISTRICTS: &[&str] = &["上城区", "拱墅区", "西湖区", "滨江区", "萧山区", "余杭区"];
const ROADS: &[&str] = &["文三路", "天目山路", "解放路", "延安路", "江南大道", "莫干山路"];
const SCOPE: &[&str] = &[
    "技术开发、技术咨询、技术服务、技术转让；",
    "软件开发；信息系统集成服务；数据处理和存储支持服务；",
    "货物进出口；技术进出口；国内贸易代理；",
    "食品经营（销售预包装食品）；日用百货销售；",
    "道路货物运输（不含危险货物）；普通货物仓储服务；",
    "企业管理咨询；市场营销策划；会议及展览服务；",
    "建筑工程施工；市政设施管理；园林绿化工程施工；",
    "第二类医疗器械销售；药品零售；保健食品销售；",
    "农产品的生产、销售、加工、运输、贮藏及其他相关服务；",
    "广告设计、代理；广告制作；图文设计制作；",
];

/// The 统一社会信用代码 of record `i`: 企业 (9) 1, division 330100, a 9-digit organisation part
/// from `i`, and its check character.
pub fn uscc(i: u64) -> String {
    let first17 = format!("91330100{:09}", i % 1_000_000_000);
    let check = uscc_check_char(&first17).expect("17 characters of the code alphabet");
    format!("{first17}{check}")
}

/// The record's key as the hub stores it: the key values as a JSON array.
pub fn key(i: u64) -> String {
    format!("[\"{}\"]", uscc(i))
}

/// Record `i` as JSON text of about [`TARGET_BYTES`] bytes.
pub fn record(i: u64) -> String {
    // A cheap deterministic mix, so neighbouring records differ in more than their index.
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ i;
    let pick = |list: &[&'static str], salt: u32| list[((h >> (salt * 5)) as usize) % list.len()];
    let name = format!("杭州示范{}{}有限公司{i}", pick(TRADES, 1), pick(TRADES, 2));
    let person = format!("{}{}{}", pick(SURNAMES, 3), pick(GIVEN, 4), pick(GIVEN, 5));
    let established = format!("{}-{:02}-{:02}", 1990 + h % 34, 1 + (h >> 8) % 12, 1 + (h >> 12) % 28);
    let address = format!(
        "浙江省杭州市{}{}{}号{}幢{}室",
        pick(DISTRICTS, 6),
        pick(ROADS, 7),
        1 + (h >> 20) % 999,
        1 + (h >> 30) % 20,
        100 + (h >> 36) % 1900
    );
    let capital = (h >> 40) % 100_000;
    let mut scope = String::new();
    let head = format!(
        "{{\"uscc\":\"{}\",\"name\":\"{name}\",\"legal_representative\":\"{person}\",\"registered_capital\":{capital},\
         \"established_on\":\"{established}\",\"registration_authority\":\"杭州市市场监督管理局\",\"status\":\"{}\",\
         \"address\":\"{address}\",\"business_scope\":\"",
        uscc(i),
        pick(STATUSES, 9),
    );
    let tail = "（依法须经批准的项目，经相关部门批准后方可开展经营活动）\"}";
    let mut n = (h % SCOPE.len() as u64) as usize;
    while head.len() + scope.len() + tail.len() < TARGET_BYTES {
        let phrase = SCOPE[n % SCOPE.len()];
        if head.len() + scope.len() + phrase.len() + tail.len() > TARGET_BYTES {
            // Pad the last few bytes with ASCII so every record lands on the target.
            let left = TARGET_BYTES - head.len() - scope.len() - tail.len();
            scope.extend(std::iter::repeat_n('.', left));
            break;
        }
        scope.push_str(phrase);
        n += 1;
    }
    let mut text = head;
    text.push_str(&scope);
    text.push_str(tail);
    text
}

/// The catalogue entry the benchmark's and the load program's `legal-entity` table datasets are
/// opened on: the register's five items, shared unconditionally, updated daily.
pub fn legal_entity_entry(name: String, summary: &str) -> pb::EntryContent {
    let item = |name: &str, data_type: &str, length: u32| pb::DataItem {
        name: name.into(),
        data_type: data_type.into(),
        length,
        sensitive: false,
        description: String::new(),
    };
    pb::EntryContent {
        name,
        classification: "102001".into(),
        summary: summary.into(),
        format: pb::ResourceFormat::Database as i32,
        items: vec![
            item("统一社会信用代码", "字符型", 18),
            item("名称", "字符型", 200),
            item("法定代表人", "字符型", 50),
            item("成立日期", "日期型", 8),
            item("经营状态", "字符型", 20),
        ],
        share: Some(pb::ShareAttributes {
            share_type: pb::ShareType::Unconditional as i32,
            condition: String::new(),
            channel: pb::ShareChannel::Platform as i32,
            exchange_kind: pb::ExchangeKind::Table as i32,
            legal_basis: String::new(),
        }),
        open: Some(pb::OpenAttributes {
            open_type: pb::OpenType::NotOpen as i32,
            condition: String::new(),
        }),
        update_cycle: pb::UpdateCycle::Daily as i32,
        related_codes: vec![],
        maintainer: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_valid_json_of_the_target_size_with_valid_codes() {
        for i in [0, 1, 2, 499, 100_000, 9_999_999, 123_456_789] {
            let text = record(i);
            let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(text.len(), TARGET_BYTES, "{text}");
            let code = value["uscc"].as_str().expect("uscc");
            assert_eq!(xinqiao_domain::identifiers::validate_uscc(code), Ok(()));
            assert_eq!(key(i), serde_json::to_string(&[code]).expect("key"));
            assert_eq!(record(i), text, "deterministic");
        }
        assert_ne!(uscc(1), uscc(2));
    }
}
