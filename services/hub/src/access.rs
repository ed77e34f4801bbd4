//! AccessService: access requests and their answers, grants and their revocation, error reports.
//! Each handler reads as its rule: authenticate, authorise, validate, store, answer.

use std::sync::Arc;

use chrono::NaiveDate;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use xinqiao_domain::access::{
    self as rules, AccessApplication, AccessGrant, AccessRequest, Approval, ErrorReport, GrantState, RecordShape,
    ReportState, RequestState, china_day,
};
use xinqiao_domain::exchange::DatasetKind;
use xinqiao_domain::identity::Caller;
use xinqiao_domain::masking::MaskRule;
use xinqiao_domain::workdays::Calendar;
use xinqiao_domain::{Error, Result, paging, text};
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::access_service_server::AccessService;
use xinqiao_store::{GrantFilter, ReportFilter, RequestFilter, Store};

use crate::audit::CallNote;
use crate::auth::Authenticator;
use crate::config::AccessRules;
use crate::convert::{self, timestamp};
use crate::exchange::{ReadRequest, authorise_read};
use crate::federation::relay::{self, HubRoute, Relay, qualify};
use crate::paging::{decode, next_token};
use crate::registry::Registry;
use crate::status::answer;

const REQUESTS: &str = "requests";
const GRANTS: &str = "grants";
const REPORTS: &str = "reports";

/// Tells live streams on this hub that a grant was revoked, so that they re-check at once (other
/// hub nodes re-check on their own within seconds).
#[derive(Clone)]
pub struct Revocations(Arc<watch::Sender<u64>>);

impl Default for Revocations {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

impl Revocations {
    pub fn notify(&self) {
        self.0.send_modify(|n| *n += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

pub struct AccessApi {
    store: Arc<dyn Store>,
    auth: Authenticator,
    registry: Registry,
    rules: AccessRules,
    calendar: Calendar,
    revocations: Revocations,
    /// Applications for datasets held on other hubs, relayed there (跨级交换).
    relay: Option<Relay>,
}

fn date(field: &str, value: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| Error::invalid(field, "must be a date written YYYY-MM-DD"))
}

fn masks(field: &str, masks: &[pb::FieldMask]) -> Result<Vec<(String, MaskRule)>> {
    masks
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let rule = MaskRule::parse(&m.rule).ok_or_else(|| {
                Error::invalid(
                    format!("{field}[{i}].rule"),
                    format!(
                        "'{}' is not a masking rule: use resident_id, mobile, name or keep:FIRST:LAST",
                        text::shorten(&m.rule, 40)
                    ),
                )
            })?;
            Ok((m.field.clone(), rule))
        })
        .collect()
}

fn masks_api(masks: &[(String, MaskRule)]) -> Vec<pb::FieldMask> {
    masks
        .iter()
        .map(|(field, rule)| pb::FieldMask {
            field: field.clone(),
            rule: rule.as_text(),
        })
        .collect()
}

fn request_api(r: AccessRequest) -> pb::AccessRequest {
    let overdue = r.is_overdue(crate::clock::now());
    pb::AccessRequest {
        request_id: r.id,
        application: Some(pb::AccessApplication {
            dataset: r.application.dataset,
            purpose: r.application.purpose,
            scope: r.application.scope,
            fields: r.application.fields,
            period_from: r.application.period_from.to_string(),
            period_until: r.application.period_until.to_string(),
            business_system: r.application.business_system,
            operations: r.application.operations,
        }),
        provider_code: r.provider_code,
        applicant_code: r.applicant_code,
        state: convert::request_state_api(r.state),
        submitted_at: Some(timestamp(r.submitted_at)),
        due_on: r.due_on.to_string(),
        overdue,
        answered_at: r.answered_at.map(timestamp),
        answered_by: r.answered_by,
        reason: r.reason,
        grant_id: r.grant_id.unwrap_or_default(),
    }
}

fn grant_api(g: AccessGrant) -> pb::AccessGrant {
    let state = match g.state(crate::clock::now()) {
        GrantState::Active => pb::GrantState::Active,
        GrantState::Expired => pb::GrantState::Expired,
        GrantState::Revoked => pb::GrantState::Revoked,
    } as i32;
    pb::AccessGrant {
        grant_id: g.id,
        request_id: g.request_id,
        dataset: g.dataset,
        provider_code: g.provider_code,
        grantee_code: g.grantee_code,
        purpose: g.purpose,
        business_system: g.business_system,
        masks: masks_api(&g.masks),
        fields: g.fields,
        granted_at: Some(timestamp(g.granted_at)),
        granted_by: g.granted_by,
        expires_at: Some(timestamp(g.expires_at)),
        state,
        revoked_at: g.revoked_at.map(timestamp),
        revoked_by: g.revoked_by,
        revoke_reason: g.revoke_reason,
        operations: g.operations,
    }
}

fn report_api(r: ErrorReport) -> pb::ErrorReport {
    pb::ErrorReport {
        report_id: r.id,
        dataset: r.dataset,
        provider_code: r.provider_code,
        reporter_code: r.reporter_code,
        sequence: r.sequence,
        key: r.key.into_bytes(),
        description: r.description,
        state: convert::report_state_api(r.state),
        reported_at: Some(timestamp(r.reported_at)),
        resolved_at: r.resolved_at.map(timestamp),
        resolved_by: r.resolved_by,
        resolution: r.resolution,
        corrected_sequence: r.corrected_sequence,
    }
}

/// A request held on hub `origin`, as the hubs above it name it (see `relay::qualify`).
fn request_from(origin: &str, mut r: pb::AccessRequest) -> pb::AccessRequest {
    r.request_id = qualify(origin, &r.request_id);
    r.grant_id = qualify(origin, &r.grant_id);
    if let Some(a) = r.application.as_mut() {
        a.dataset = qualify(origin, &a.dataset);
    }
    r
}

fn grant_from(origin: &str, mut g: pb::AccessGrant) -> pb::AccessGrant {
    g.grant_id = qualify(origin, &g.grant_id);
    g.request_id = qualify(origin, &g.request_id);
    g.dataset = qualify(origin, &g.dataset);
    g
}

fn report_from(origin: &str, mut r: pb::ErrorReport) -> pb::ErrorReport {
    r.report_id = qualify(origin, &r.report_id);
    r.dataset = qualify(origin, &r.dataset);
    r
}

/// Whose items a list shows: the admin may list everybody's; a department only its own side(s).
struct Sides {
    mine_as_first: Option<String>,
    mine_as_second: Option<String>,
    either: Option<String>,
}

fn sides(caller: &Caller, party: i32) -> Result<Sides> {
    let party =
        pb::Party::try_from(party).map_err(|_| Error::invalid("party", format!("{party} is not a known party")))?;
    let me = caller.department().map(str::to_string);
    Ok(match (me, party) {
        // The admin sees every department's; "as applicant" means nothing for it.
        (None, pb::Party::Unspecified) => Sides {
            mine_as_first: None,
            mine_as_second: None,
            either: None,
        },
        (None, _) => {
            return Err(Error::invalid("party", "the admin is no party: list without one"));
        }
        (Some(me), pb::Party::Unspecified) => Sides {
            mine_as_first: None,
            mine_as_second: None,
            either: Some(me),
        },
        (Some(me), pb::Party::Applicant) => Sides {
            mine_as_first: Some(me),
            mine_as_second: None,
            either: None,
        },
        (Some(me), pb::Party::Provider) => Sides {
            mine_as_first: None,
            mine_as_second: Some(me),
            either: None,
        },
    })
}

fn note_route(note: &CallNote, route: &HubRoute) {
    note.detail("relayed_to", route.peer.division_code.clone());
    note.detail("origin_hub", route.origin_hub.clone());
}

fn optional(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl AccessApi {
    pub fn new(
        store: Arc<dyn Store>,
        auth: Authenticator,
        registry: Registry,
        rules: AccessRules,
        revocations: Revocations,
    ) -> Self {
        Self {
            auth,
            calendar: rules.calendar(),
            store,
            registry,
            rules,
            revocations,
            relay: None,
        }
    }

    /// Relays applications for datasets aggregated from child hubs (see `federation::relay`).
    pub fn relay(mut self, relay: Option<Relay>) -> Self {
        self.relay = relay;
        self
    }

    /// The fields and key of what an entry shares, for checking what is requested and granted:
    /// a dataset's records, or an interface's answers (the top-level properties of its
    /// operations' response schemas; a grant's fields and masks shape every answer).
    async fn shape(&self, dataset: &str) -> Result<RecordShape> {
        let Some(dataset) = self.store.get_dataset(dataset).await? else {
            let interface = self
                .store
                .get_interface(dataset)
                .await?
                .ok_or_else(|| Error::NotFound(format!("dataset {dataset}")))?;
            let mut properties: Vec<String> = Vec::new();
            for operation in &interface.spec.operations {
                let schema = &operation.response_schema;
                let registered = self.registry.resolve(&schema.subject, schema.version, true).await?;
                let document: serde_json::Value = serde_json::from_str(&registered.content)
                    .map_err(|e| Error::Internal(format!("stored schema {}: {e}", schema.subject)))?;
                for name in document
                    .get("properties")
                    .and_then(serde_json::Value::as_object)
                    .into_iter()
                    .flat_map(|p| p.keys())
                {
                    if !properties.contains(name) {
                        properties.push(name.clone());
                    }
                }
            }
            let shape = RecordShape {
                kind: DatasetKind::Table,
                properties,
                key: Vec::new(),
                operations: interface.spec.operations.iter().map(|o| o.name.clone()).collect(),
            };
            return Ok(shape);
        };
        let properties = match (&dataset.kind, &dataset.schema) {
            (DatasetKind::Table, Some(schema)) => {
                let registered = self.registry.resolve(&schema.subject, schema.version, true).await?;
                let document: serde_json::Value = serde_json::from_str(&registered.content)
                    .map_err(|e| Error::Internal(format!("stored schema {}: {e}", schema.subject)))?;
                document
                    .get("properties")
                    .and_then(serde_json::Value::as_object)
                    .map(|p| p.keys().cloned().collect())
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let shape = RecordShape {
            kind: dataset.kind,
            properties,
            key: dataset.key.clone(),
            operations: Vec::new(),
        };
        Ok(shape)
    }

    /// Where a follow-up of `id` goes when another hub holds it (`<hub>:<id>`): the relay, the
    /// route and the id as the peer knows it. Noted in this hub's trail.
    async fn far(&self, id: &str, note: &CallNote) -> Result<Option<(&Relay, HubRoute, String)>> {
        let Some(relay) = &self.relay else { return Ok(None) };
        let Some((route, id)) = relay.route_id(id).await? else {
            return Ok(None);
        };
        note_route(note, &route);
        Ok(Some((relay, route, id)))
    }

    /// Where a list of what hub `hub` holds goes, when it is another hub.
    async fn far_hub(&self, hub: &str, note: &CallNote) -> Result<Option<(&Relay, HubRoute)>> {
        let Some(relay) = &self.relay else {
            return match hub {
                "" => Ok(None),
                other => Err(Error::NotFound(format!(
                    "hub {}: this hub takes no part in federation",
                    text::shorten(other, 20)
                ))),
            };
        };
        let Some(route) = relay.route_hub(hub).await? else {
            return Ok(None);
        };
        note_route(note, &route);
        Ok(Some((relay, route)))
    }

    /// An id as this hub stores it: its own hub's name taken off. One naming another hub is
    /// answered there, by its provider (answers are never relayed).
    fn local<'a>(&self, what: &str, id: &'a str) -> Result<&'a str> {
        match xinqiao_domain::federation::split_origin(id) {
            (Some(origin), local) if self.relay.as_ref().is_some_and(|r| r.division() == origin) => Ok(local),
            (Some(origin), _) => Err(Error::FailedPrecondition(format!(
                "{what} {} is held on hub {origin}: it is answered there, by its provider",
                text::shorten(id, 64)
            ))),
            (None, _) => Ok(id),
        }
    }

    async fn request(&self, caller: &Caller, id: &str) -> Result<AccessRequest> {
        let id = self.local("access request", id)?;
        let request = self.store.get_request(id).await?;
        let request = request.ok_or_else(|| Error::NotFound(format!("access request {}", text::shorten(id, 64))))?;
        rules::read_request(caller, &request)?;
        Ok(request)
    }

    async fn grant(&self, caller: &Caller, id: &str) -> Result<AccessGrant> {
        let id = self.local("grant", id)?;
        let grant = self.store.get_grant(id).await?;
        let grant = grant.ok_or_else(|| Error::NotFound(format!("grant {}", text::shorten(id, 64))))?;
        rules::read_grant(caller, &grant)?;
        Ok(grant)
    }

    async fn report(&self, caller: &Caller, id: &str) -> Result<ErrorReport> {
        let id = self.local("error report", id)?;
        let report = self.store.get_report(id).await?;
        let report = report.ok_or_else(|| Error::NotFound(format!("error report {}", text::shorten(id, 64))))?;
        rules::read_report(caller, &report)?;
        Ok(report)
    }

    async fn last_sequence(&self, dataset: &str) -> Result<u64> {
        let found = self.store.get_dataset(dataset).await?;
        Ok(found.map(|d| d.last_sequence).unwrap_or(0))
    }
}

#[tonic::async_trait]
impl AccessService for AccessApi {
    async fn request_access(
        &self,
        request: Request<pb::RequestAccessRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let (caller, relayed) = self.auth.reader(&request).await?;
            let a = request
                .into_inner()
                .application
                .ok_or_else(|| Error::invalid("application", "is required"))?;
            // A dataset held on another hub: applied for there, answered by its provider there.
            if let Some(relay) = &self.relay
                && let Some(route) = relay.route(&a.dataset).await?
            {
                note.about(&route.entry.resource_code, &route.entry.provider_code);
                note.detail("relayed_to", route.peer.division_code.clone());
                note.detail("origin_hub", route.origin_hub.clone());
                let application = pb::AccessApplication {
                    dataset: route.dataset.clone(),
                    ..a
                };
                let message = pb::RequestAccessRequest {
                    application: Some(application),
                };
                let request = relay.request(&caller, relayed.as_ref(), message, true)?;
                let mut client = relay.access(&route)?;
                let call = client.request_access(request);
                let stored = relay::answered(&route.peer.division_code, call).await?;
                let stored = request_from(&route.origin_hub, stored);
                note.detail("request", stored.request_id.clone());
                return Ok(stored);
            }
            let entry = crate::directory::visible_entry(self.store.as_ref(), &caller, &a.dataset)
                .await
                .map_err(|e| match e {
                    Error::NotFound(_) => Error::NotFound(format!("dataset {}", text::shorten(&a.dataset, 64))),
                    other => other,
                })?;
            note.about(&entry.resource_code, &entry.provider_code);
            let shape = self.shape(&entry.resource_code).await?;
            let application = AccessApplication {
                dataset: entry.resource_code.clone(),
                purpose: a.purpose.trim().to_string(),
                scope: a.scope.trim().to_string(),
                fields: a.fields,
                period_from: date("period_from", &a.period_from)?,
                period_until: date("period_until", &a.period_until)?,
                business_system: a.business_system.trim().to_string(),
                operations: a.operations,
            };
            let now = crate::clock::now();
            let today = china_day(now);
            let applicant = rules::apply(&caller, &entry, &shape, &application, today)?;
            let stored = self
                .store
                .create_request(&AccessRequest {
                    id: new_id(),
                    application,
                    provider_code: entry.provider_code.clone(),
                    applicant_code: applicant,
                    state: RequestState::Pending,
                    submitted_at: now,
                    due_on: self.calendar.deadline(today, self.rules.answer_within_workdays),
                    answered_at: None,
                    answered_by: String::new(),
                    reason: String::new(),
                    grant_id: None,
                })
                .await?;
            note.detail("request", stored.id.clone());
            note.detail("purpose", stored.application.purpose.clone());
            note.detail("fields", stored.application.fields.clone());
            Ok(request_api(stored))
        })
        .await
    }

    async fn approve_request(
        &self,
        request: Request<pb::ApproveRequestRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.into_inner();
            let mut pending = self.request(&caller, &r.request_id).await?;
            note.about(&pending.id, &pending.provider_code);
            let shape = self.shape(&pending.application.dataset).await?;
            let approval = Approval {
                fields: r.fields,
                masks: masks("masks", &r.masks)?,
                expires_at: convert::time("expires_at", r.expires_at)?,
                note: r.note.trim().to_string(),
                operations: r.operations,
            };
            let now = crate::clock::now();
            let terms = rules::approve(&caller, &pending, &shape, &approval, now)?;
            let grant = AccessGrant {
                id: new_id(),
                request_id: pending.id.clone(),
                dataset: pending.application.dataset.clone(),
                provider_code: pending.provider_code.clone(),
                grantee_code: pending.applicant_code.clone(),
                purpose: pending.application.purpose.clone(),
                business_system: pending.application.business_system.clone(),
                fields: terms.fields,
                masks: terms.masks,
                operations: terms.operations,
                granted_at: now,
                granted_by: caller.actor(),
                expires_at: terms.expires_at,
                revoked_at: None,
                revoked_by: String::new(),
                revoke_reason: String::new(),
            };
            pending.state = RequestState::Approved;
            pending.answered_at = Some(now);
            pending.answered_by = caller.actor();
            pending.reason = approval.note;
            pending.grant_id = Some(grant.id.clone());
            let settled = self.store.settle_request(&pending, Some(&grant)).await?;
            note.detail("grant", grant.id.clone());
            note.detail("grantee", grant.grantee_code.clone());
            note.detail("fields", grant.fields.clone());
            if !grant.operations.is_empty() {
                note.detail("operations", grant.operations.clone());
            }
            note.detail(
                "masks",
                masks_api(&grant.masks)
                    .into_iter()
                    .map(|m| format!("{}={}", m.field, m.rule))
                    .collect::<Vec<_>>(),
            );
            note.detail("expires_at", grant.expires_at.to_rfc3339());
            Ok(request_api(settled))
        })
        .await
    }

    async fn reject_request(
        &self,
        request: Request<pb::RejectRequestRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.into_inner();
            let mut pending = self.request(&caller, &r.request_id).await?;
            note.about(&pending.id, &pending.provider_code);
            let reason = r.reason.trim().to_string();
            rules::reject(&caller, &pending, &reason)?;
            pending.state = RequestState::Rejected;
            pending.answered_at = Some(crate::clock::now());
            pending.answered_by = caller.actor();
            pending.reason = reason.clone();
            let settled = self.store.settle_request(&pending, None).await?;
            note.detail("reason", reason);
            Ok(request_api(settled))
        })
        .await
    }

    async fn withdraw_request(
        &self,
        request: Request<pb::WithdrawRequestRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let (caller, relayed) = self.auth.reader(&request).await?;
            // A request made on another hub through this one is withdrawn there.
            if let Some((relay, route, id)) = self.far(&request.get_ref().request_id, &note).await? {
                let message = pb::WithdrawRequestRequest { request_id: id };
                let mut client = relay.access_at(&route.peer)?;
                let call = client.withdraw_request(relay.request(&caller, relayed.as_ref(), message, true)?);
                let withdrawn = relay::answered(&route.peer.division_code, call).await?;
                return Ok(request_from(&route.origin_hub, withdrawn));
            }
            let mut pending = self.request(&caller, &request.get_ref().request_id).await?;
            note.about(&pending.id, &pending.provider_code);
            rules::withdraw(&caller, &pending)?;
            pending.state = RequestState::Withdrawn;
            pending.answered_at = Some(crate::clock::now());
            pending.answered_by = caller.actor();
            Ok(request_api(self.store.settle_request(&pending, None).await?))
        })
        .await
    }

    async fn get_request(
        &self,
        request: Request<pb::GetRequestRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let (caller, relayed) = self.auth.reader(&request).await?;
            if let Some((relay, route, id)) = self.far(&request.get_ref().request_id, &note).await? {
                let message = pb::GetRequestRequest { request_id: id };
                let mut client = relay.access_at(&route.peer)?;
                let call = client.get_request(relay.request(&caller, relayed.as_ref(), message, true)?);
                let found = relay::answered(&route.peer.division_code, call).await?;
                return Ok(request_from(&route.origin_hub, found));
            }
            Ok(request_api(self.request(&caller, &request.get_ref().request_id).await?))
        })
        .await
    }

    async fn list_requests(
        &self,
        request: Request<pb::ListRequestsRequest>,
    ) -> Result<Response<pb::ListRequestsResponse>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let (caller, relayed) = self.auth.reader(&request).await?;
            let r = request.get_ref();
            // A department's requests on another hub, listed there as it would list them itself.
            if let Some((relay, route)) = self.far_hub(&r.hub, &note).await? {
                let message = pb::ListRequestsRequest {
                    hub: route.hub(),
                    dataset: route.name(&r.dataset),
                    ..r.clone()
                };
                let mut client = relay.access_at(&route.peer)?;
                let call = client.list_requests(relay.request(&caller, relayed.as_ref(), message, true)?);
                let mut page = relay::answered(&route.peer.division_code, call).await?;
                page.requests = page
                    .requests
                    .into_iter()
                    .map(|x| request_from(&route.origin_hub, x))
                    .collect();
                return Ok(page);
            }
            let limit = paging::page_size(r.page_size)?;
            let after = decode(REQUESTS, &r.page_token)?;
            let sides = sides(&caller, r.party)?;
            let filter = RequestFilter {
                applicant: sides.mine_as_first,
                provider: sides.mine_as_second,
                party: sides.either,
                dataset: optional(&r.dataset),
                state: convert::filter_enum("state", r.state, convert::request_state)?,
                due_before: r.overdue.then(|| china_day(crate::clock::now())),
            };
            let mut page = self.store.list_requests(&filter, after.as_deref(), limit + 1).await?;
            let next_page_token = next_token(REQUESTS, &mut page, limit, |r| &r.id);
            Ok(pb::ListRequestsResponse {
                requests: page.into_iter().map(request_api).collect(),
                next_page_token,
            })
        })
        .await
    }

    async fn get_grant(&self, request: Request<pb::GetGrantRequest>) -> Result<Response<pb::AccessGrant>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let (caller, relayed) = self.auth.reader(&request).await?;
            if let Some((relay, route, id)) = self.far(&request.get_ref().grant_id, &note).await? {
                let message = pb::GetGrantRequest { grant_id: id };
                let mut client = relay.access_at(&route.peer)?;
                let call = client.get_grant(relay.request(&caller, relayed.as_ref(), message, true)?);
                let found = relay::answered(&route.peer.division_code, call).await?;
                return Ok(grant_from(&route.origin_hub, found));
            }
            Ok(grant_api(self.grant(&caller, &request.get_ref().grant_id).await?))
        })
        .await
    }

    async fn list_grants(
        &self,
        request: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let (caller, relayed) = self.auth.reader(&request).await?;
            let r = request.get_ref();
            if let Some((relay, route)) = self.far_hub(&r.hub, &note).await? {
                let message = pb::ListGrantsRequest {
                    hub: route.hub(),
                    dataset: route.name(&r.dataset),
                    ..r.clone()
                };
                let mut client = relay.access_at(&route.peer)?;
                let call = client.list_grants(relay.request(&caller, relayed.as_ref(), message, true)?);
                let mut page = relay::answered(&route.peer.division_code, call).await?;
                page.grants = page
                    .grants
                    .into_iter()
                    .map(|g| grant_from(&route.origin_hub, g))
                    .collect();
                return Ok(page);
            }
            let limit = paging::page_size(r.page_size)?;
            let after = decode(GRANTS, &r.page_token)?;
            let sides = sides(&caller, r.party)?;
            let filter = GrantFilter {
                grantee: sides.mine_as_first,
                provider: sides.mine_as_second,
                party: sides.either,
                dataset: optional(&r.dataset),
                active_at: r.active_only.then(crate::clock::now),
            };
            let mut page = self.store.list_grants(&filter, after.as_deref(), limit + 1).await?;
            let next_page_token = next_token(GRANTS, &mut page, limit, |g| &g.id);
            Ok(pb::ListGrantsResponse {
                grants: page.into_iter().map(grant_api).collect(),
                next_page_token,
            })
        })
        .await
    }

    async fn revoke_grant(
        &self,
        request: Request<pb::RevokeGrantRequest>,
    ) -> Result<Response<pb::AccessGrant>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.into_inner();
            let grant = self.grant(&caller, &r.grant_id).await?;
            note.about(&grant.id, &grant.provider_code);
            let reason = r.reason.trim().to_string();
            rules::revoke(&caller, &grant, &reason)?;
            let revoked = self
                .store
                .revoke_grant(&grant.id, &caller.actor(), &reason, crate::clock::now())
                .await?;
            // Live streams under this grant on this hub end now; other hubs see it on their next check.
            self.revocations.notify();
            note.detail("dataset", revoked.dataset.clone());
            note.detail("grantee", revoked.grantee_code.clone());
            note.detail("reason", reason);
            Ok(grant_api(revoked))
        })
        .await
    }

    async fn report_error(
        &self,
        request: Request<pb::ReportErrorRequest>,
    ) -> Result<Response<pb::ErrorReport>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let (caller, relayed) = self.auth.reader(&request).await?;
            let r = request.into_inner();
            // A record held on another hub: reported there, resolved there by its provider.
            if let Some(relay) = &self.relay
                && let Some(route) = relay.route(&r.dataset).await?
            {
                note.about(&route.entry.resource_code, &route.entry.provider_code);
                note.detail("relayed_to", route.peer.division_code.clone());
                note.detail("origin_hub", route.origin_hub.clone());
                note.detail("sequence", r.sequence);
                let message = pb::ReportErrorRequest {
                    dataset: route.dataset.clone(),
                    ..r
                };
                let mut client = relay.access(&route)?;
                let call = client.report_error(relay.request(&caller, relayed.as_ref(), message, true)?);
                let stored = relay::answered(&route.peer.division_code, call).await?;
                let stored = report_from(&route.origin_hub, stored);
                note.detail("report", stored.report_id.clone());
                return Ok(stored);
            }
            // Reporting reads nothing, but only a department that may read the records reports on them.
            let read = ReadRequest::right_only(&r.dataset);
            let (entry, dataset, basis) = authorise_read(self.store.as_ref(), &caller, &read, Some(&note)).await?;
            let key = String::from_utf8(r.key).map_err(|_| Error::invalid("key", "is not UTF-8"))?;
            let description = r.description.trim().to_string();
            rules::report(
                &caller,
                &basis,
                r.sequence,
                &key,
                &dataset.key,
                dataset.last_sequence,
                &description,
            )?;
            let stored = self
                .store
                .create_report(&ErrorReport {
                    id: new_id(),
                    dataset: dataset.id.clone(),
                    provider_code: entry.provider_code.clone(),
                    reporter_code: caller.actor(),
                    sequence: r.sequence,
                    key,
                    description,
                    state: ReportState::Open,
                    reported_at: crate::clock::now(),
                    resolved_at: None,
                    resolved_by: String::new(),
                    resolution: String::new(),
                    corrected_sequence: 0,
                })
                .await?;
            note.detail("report", stored.id.clone());
            note.detail("sequence", stored.sequence);
            Ok(report_api(stored))
        })
        .await
    }

    async fn resolve_report(
        &self,
        request: Request<pb::ResolveReportRequest>,
    ) -> Result<Response<pb::ErrorReport>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.into_inner();
            let mut report = self.report(&caller, &r.report_id).await?;
            note.about(&report.id, &report.provider_code);
            let resolution = convert::report_state(r.resolution)
                .ok_or_else(|| Error::invalid("resolution", "must be CORRECTED or REJECTED"))?;
            let reason = r.reason.trim().to_string();
            let last = self.last_sequence(&report.dataset).await?;
            rules::resolve(&caller, &report, resolution, &reason, r.corrected_sequence, last)?;
            report.state = resolution;
            report.resolved_at = Some(crate::clock::now());
            report.resolved_by = caller.actor();
            report.resolution = reason;
            report.corrected_sequence = r.corrected_sequence;
            let resolved = self.store.resolve_report(&report).await?;
            note.detail("resolution", resolution.as_str());
            Ok(report_api(resolved))
        })
        .await
    }

    async fn get_report(&self, request: Request<pb::GetReportRequest>) -> Result<Response<pb::ErrorReport>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let (caller, relayed) = self.auth.reader(&request).await?;
            if let Some((relay, route, id)) = self.far(&request.get_ref().report_id, &note).await? {
                let message = pb::GetReportRequest { report_id: id };
                let mut client = relay.access_at(&route.peer)?;
                let call = client.get_report(relay.request(&caller, relayed.as_ref(), message, true)?);
                let found = relay::answered(&route.peer.division_code, call).await?;
                return Ok(report_from(&route.origin_hub, found));
            }
            Ok(report_api(self.report(&caller, &request.get_ref().report_id).await?))
        })
        .await
    }

    async fn list_reports(
        &self,
        request: Request<pb::ListReportsRequest>,
    ) -> Result<Response<pb::ListReportsResponse>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let (caller, relayed) = self.auth.reader(&request).await?;
            let r = request.get_ref();
            if let Some((relay, route)) = self.far_hub(&r.hub, &note).await? {
                let message = pb::ListReportsRequest {
                    hub: route.hub(),
                    dataset: route.name(&r.dataset),
                    ..r.clone()
                };
                let mut client = relay.access_at(&route.peer)?;
                let call = client.list_reports(relay.request(&caller, relayed.as_ref(), message, true)?);
                let mut page = relay::answered(&route.peer.division_code, call).await?;
                page.reports = page
                    .reports
                    .into_iter()
                    .map(|x| report_from(&route.origin_hub, x))
                    .collect();
                return Ok(page);
            }
            let limit = paging::page_size(r.page_size)?;
            let after = decode(REPORTS, &r.page_token)?;
            let sides = sides(&caller, r.party)?;
            let filter = ReportFilter {
                reporter: sides.mine_as_first,
                provider: sides.mine_as_second,
                party: sides.either,
                dataset: optional(&r.dataset),
                state: convert::filter_enum("state", r.state, convert::report_state)?,
            };
            let mut page = self.store.list_reports(&filter, after.as_deref(), limit + 1).await?;
            let next_page_token = next_token(REPORTS, &mut page, limit, |r| &r.id);
            Ok(pb::ListReportsResponse {
                reports: page.into_iter().map(report_api).collect(),
                next_page_token,
            })
        })
        .await
    }
}
