//! The evaluator (评价方): reads every department's scorecard and the ranking, and nothing else.

use tonic::Code;
use xinqiao_hub::pki;
use xinqiao_proto::v1::access_service_client::AccessServiceClient;
use xinqiao_proto::v1::audit_service_client::AuditServiceClient;
use xinqiao_proto::v1::directory_service_client::DirectoryServiceClient;
use xinqiao_proto::v1::evaluation_service_client::EvaluationServiceClient;
use xinqiao_proto::v1::exchange_service_client::ExchangeServiceClient;
use xinqiao_tests::*;

on_each_backend!(an_evaluator_reads_every_scorecard_and_nothing_else);

async fn an_evaluator_reads_every_scorecard_and_nothing_else(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let channel = hub.channel(pki::evaluator_files(&hub.pki_dir())).await;

    let mut directory = DirectoryServiceClient::new(channel.clone());
    let me = ok(directory.who_am_i(v1::WhoAmIRequest {}).await);
    assert_eq!(
        me.identity,
        Some(v1::who_am_i_response::Identity::Evaluator(pki::DEV_EVALUATOR.into()))
    );

    let mut evaluation = EvaluationServiceClient::new(channel.clone());
    let ranking = ok(evaluation.get_ranking(v1::GetRankingRequest::default()).await);
    assert_eq!(ranking.departments.len(), 3, "the three sample departments");
    for place in &ranking.departments {
        let card = place.scorecard.as_ref().expect("an evaluator sees every scorecard");
        assert_eq!(card.department, place.department);
    }
    let card = ok(evaluation
        .get_scorecard(v1::GetScorecardRequest {
            department: SAMR.into(),
            ..Default::default()
        })
        .await);
    assert_eq!(card.department, SAMR);
    // An evaluator has no department of its own to default to.
    invalid(
        evaluation.get_scorecard(v1::GetScorecardRequest::default()).await,
        &["department"],
    );

    // Everything else is closed to it.
    refused(directory.search_entries(keyword("")).await, Code::PermissionDenied);
    refused(
        directory.list_departments(v1::ListDepartmentsRequest::default()).await,
        Code::PermissionDenied,
    );
    let mut exchange = ExchangeServiceClient::new(channel.clone());
    refused(
        exchange.list_datasets(v1::ListDatasetsRequest::default()).await,
        Code::PermissionDenied,
    );
    refused(
        exchange.fetch(fetch("101001/000001", 0, 10)).await,
        Code::PermissionDenied,
    );
    let mut access = AccessServiceClient::new(channel.clone());
    refused(
        access.list_requests(v1::ListRequestsRequest::default()).await,
        Code::PermissionDenied,
    );
    let mut audit = AuditServiceClient::new(channel);
    refused(
        audit.list_events(v1::ListEventsRequest::default()).await,
        Code::PermissionDenied,
    );
    refused(
        audit.verify_chain(v1::VerifyChainRequest::default()).await,
        Code::PermissionDenied,
    );

    // Its refusals are audited under its own name.
    let mut admin_audit = AuditServiceClient::new(hub.admin_channel().await);
    let events = ok(admin_audit
        .list_events(v1::ListEventsRequest {
            actor: format!("evaluator:{}", pki::DEV_EVALUATOR),
            page_size: 100,
            ..Default::default()
        })
        .await);
    assert!(
        events
            .events
            .iter()
            .any(|e| e.action == "ListRequests" && e.outcome == "PERMISSION_DENIED"),
        "{:?}",
        events.events
    );
    hub.finish().await;
}
