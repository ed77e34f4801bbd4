//! Conversions between the API's messages and the domain's types.

use chrono::{DateTime, Utc};
pub use prost_types::Timestamp;
use xinqiao_domain::access::{ReportState, RequestState};
use xinqiao_domain::catalogue as d;
use xinqiao_domain::compatibility::CompatibilityMode;
use xinqiao_domain::department::{Department, DepartmentProfile};
use xinqiao_domain::exchange::{DatasetKind, Standing};
use xinqiao_domain::lifecycle::EntryState;
use xinqiao_proto::v1 as pb;
use xinqiao_store::EntryVersionRecord;

pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A time a caller sent, or INVALID_ARGUMENT naming `field` when it is no valid instant.
pub fn time(field: &str, t: Option<Timestamp>) -> xinqiao_domain::Result<Option<DateTime<Utc>>> {
    t.map(|t| {
        u32::try_from(t.nanos)
            .ok()
            .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
            .ok_or_else(|| xinqiao_domain::Error::invalid(field, "is not a valid time"))
    })
    .transpose()
}

pub fn department(d: Department) -> pb::Department {
    pb::Department {
        code: d.profile.code,
        name: d.profile.name,
        division_code: d.profile.division_code,
        contact: d.profile.contact,
        active: d.active,
        created_at: Some(timestamp(d.created_at)),
        updated_at: Some(timestamp(d.updated_at)),
    }
}

pub fn profile(code: String, name: String, division_code: String, contact: String) -> DepartmentProfile {
    DepartmentProfile {
        code,
        name,
        division_code,
        contact,
    }
}

/// Maps each API enumeration to its domain code and back. Unspecified and unknown numbers map
/// to `None`, which validation reports as missing.
macro_rules! enum_map {
    ($to_domain:ident, $to_api:ident, $api:ty, $domain:ty, { $($a:ident <=> $d:ident),+ $(,)? }) => {
        pub fn $to_domain(value: i32) -> Option<$domain> {
            match <$api>::try_from(value).ok()? {
                $(<$api>::$a => Some(<$domain>::$d),)+
                _ => None,
            }
        }

        pub fn $to_api(value: $domain) -> i32 {
            match value { $(<$domain>::$d => <$api>::$a as i32,)+ }
        }
    };
}

enum_map!(share_type, share_type_api, pb::ShareType, d::ShareType, {
    Unconditional <=> Unconditional, Conditional <=> Conditional, NotShared <=> NotShared,
});
enum_map!(open_type, open_type_api, pb::OpenType, d::OpenType, {
    Unconditional <=> Unconditional, Conditional <=> Conditional, NotOpen <=> NotOpen,
});
enum_map!(update_cycle, update_cycle_api, pb::UpdateCycle, d::UpdateCycle, {
    Realtime <=> Realtime, Daily <=> Daily, Weekly <=> Weekly, Monthly <=> Monthly, Quarterly <=> Quarterly,
    HalfYearly <=> HalfYearly, Yearly <=> Yearly, Other <=> Other,
});
enum_map!(resource_format, resource_format_api, pb::ResourceFormat, d::ResourceFormat, {
    ElectronicFile <=> ElectronicFile, Spreadsheet <=> Spreadsheet, Database <=> Database, Image <=> Image,
    StreamingMedia <=> StreamingMedia, SelfDescribing <=> SelfDescribing, ServiceInterface <=> ServiceInterface,
});
enum_map!(share_channel, share_channel_api, pb::ShareChannel, d::ShareChannel, {
    Platform <=> Platform, Mail <=> Mail, Media <=> Media,
});
enum_map!(exchange_kind, exchange_kind_api, pb::ExchangeKind, d::ExchangeKind, {
    Table <=> Table, Interface <=> Interface, File <=> File,
});
enum_map!(entry_state, entry_state_api, pb::EntryState, EntryState, {
    Draft <=> Draft, PendingReview <=> PendingReview, Published <=> Published, Returned <=> Returned,
    Withdrawn <=> Withdrawn,
});

enum_map!(compatibility_mode, compatibility_mode_api, pb::CompatibilityMode, CompatibilityMode, {
    Backward <=> Backward, Forward <=> Forward, Full <=> Full, BackwardTransitive <=> BackwardTransitive,
    ForwardTransitive <=> ForwardTransitive, FullTransitive <=> FullTransitive, None <=> None,
});
enum_map!(dataset_kind, dataset_kind_api, pb::DatasetKind, DatasetKind, {
    Table <=> Table, File <=> File,
});
enum_map!(standing, standing_api, pb::Standing, Standing, {
    Owner <=> Owner, Open <=> Open, Granted <=> Granted, Requestable <=> Requestable, NotShared <=> NotShared,
});
enum_map!(request_state, request_state_api, pb::RequestState, RequestState, {
    Pending <=> Pending, Approved <=> Approved, Rejected <=> Rejected, Withdrawn <=> Withdrawn,
});
enum_map!(report_state, report_state_api, pb::ReportState, ReportState, {
    Open <=> Open, Corrected <=> Corrected, Rejected <=> Rejected,
});

pub fn draft(c: pb::EntryContent) -> d::EntryDraft {
    d::EntryDraft {
        name: c.name,
        classification: c.classification,
        summary: c.summary,
        format: resource_format(c.format),
        items: c
            .items
            .into_iter()
            .map(|i| d::DataItem {
                name: i.name,
                data_type: i.data_type,
                length: i.length,
                sensitive: i.sensitive,
                description: i.description,
            })
            .collect(),
        share: c.share.map(|s| d::ShareDraft {
            share_type: share_type(s.share_type),
            condition: s.condition,
            channel: share_channel(s.channel),
            exchange_kind: exchange_kind(s.exchange_kind),
            legal_basis: s.legal_basis,
        }),
        open: c.open.map(|o| d::OpenDraft {
            open_type: open_type(o.open_type),
            condition: o.condition,
        }),
        update_cycle: update_cycle(c.update_cycle),
        related_codes: c.related_codes,
        maintainer: c.maintainer,
    }
}

pub fn content(c: d::EntryContent) -> pb::EntryContent {
    pb::EntryContent {
        name: c.name,
        classification: c.classification,
        summary: c.summary,
        format: resource_format_api(c.format),
        items: c
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
        share: Some(pb::ShareAttributes {
            share_type: share_type_api(c.share.share_type),
            condition: c.share.condition,
            channel: share_channel_api(c.share.channel),
            exchange_kind: exchange_kind_api(c.share.exchange_kind),
            legal_basis: c.share.legal_basis,
        }),
        open: Some(pb::OpenAttributes {
            open_type: open_type_api(c.open.open_type),
            condition: c.open.condition,
        }),
        update_cycle: update_cycle_api(c.update_cycle),
        related_codes: c.related_codes,
        maintainer: c.maintainer,
    }
}

pub fn entry(e: d::CatalogEntry) -> pb::CatalogEntry {
    pb::CatalogEntry {
        resource_code: e.resource_code,
        provider_code: e.provider_code,
        provider_name: e.provider_name,
        content: Some(content(e.content)),
        state: entry_state_api(e.state),
        version: e.version,
        state_reason: e.state_reason,
        published_at: e.published_at.map(timestamp),
        updated_at: Some(timestamp(e.updated_at)),
        created_at: Some(timestamp(e.created_at)),
        origin_hub: String::new(),
        via_hub: String::new(),
    }
}

/// An entry aggregated from a child hub (目录汇聚), marked with the hub that holds it.
pub fn federated_entry(e: xinqiao_domain::federation::FederatedEntry) -> pb::CatalogEntry {
    pb::CatalogEntry {
        origin_hub: e.origin_hub,
        via_hub: e.via_hub,
        ..entry(e.entry)
    }
}

pub fn version(v: EntryVersionRecord) -> pb::EntryVersion {
    pb::EntryVersion {
        version: v.version,
        state: entry_state_api(v.state),
        action: v.change.action.as_str().to_string(),
        actor: v.change.actor,
        reason: v.change.reason,
        changed_at: Some(timestamp(v.change.at)),
    }
}

/// A filter enumeration: 0 means "any"; an unknown number is an error, not "any".
pub fn filter_enum<T>(field: &str, value: i32, map: fn(i32) -> Option<T>) -> xinqiao_domain::Result<Option<T>> {
    if value == 0 {
        return Ok(None);
    }
    map(value)
        .map(Some)
        .ok_or_else(|| xinqiao_domain::Error::invalid(field, format!("{value} is not a known value")))
}

pub fn filter(r: &pb::SearchEntriesRequest) -> xinqiao_domain::Result<d::EntryFilter> {
    Ok(d::EntryFilter {
        keyword: r.keyword.trim().to_string(),
        classification_prefix: r.classification_prefix.clone(),
        provider_code: r.provider_code.clone(),
        share_type: filter_enum("share_type", r.share_type, share_type)?,
        open_type: filter_enum("open_type", r.open_type, open_type)?,
        update_cycle: filter_enum("update_cycle", r.update_cycle, update_cycle)?,
        format: filter_enum("format", r.format, resource_format)?,
        state: filter_enum("state", r.state, entry_state)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_domain_code_has_an_api_number_and_back() {
        for &t in d::ShareType::ALL {
            assert_eq!(share_type(share_type_api(t)), Some(t));
        }
        for &c in d::UpdateCycle::ALL {
            assert_eq!(update_cycle(update_cycle_api(c)), Some(c));
        }
        for &f in d::ResourceFormat::ALL {
            assert_eq!(resource_format(resource_format_api(f)), Some(f));
        }
        for &s in EntryState::ALL {
            assert_eq!(entry_state(entry_state_api(s)), Some(s));
        }
        for m in CompatibilityMode::ALL {
            assert_eq!(compatibility_mode(compatibility_mode_api(m)), Some(m));
        }
        for k in [DatasetKind::Table, DatasetKind::File] {
            assert_eq!(dataset_kind(dataset_kind_api(k)), Some(k));
        }
        assert_eq!(standing(standing_api(Standing::Granted)), Some(Standing::Granted));
        assert_eq!(share_type(0), None);
        assert_eq!(share_type(99), None);
    }
}
