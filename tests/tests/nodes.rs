//! Two hub nodes over one store: what one node changes, the other sees — the department cache's
//! promise (`hub::cache`): at once on the node that made the change, within a second elsewhere.

use std::time::{Duration, Instant};

use tonic::Code;
use xinqiao_hub::pki;
use xinqiao_hub::tls::{ClientIdentity, connect};
use xinqiao_proto::v1::directory_service_client::DirectoryServiceClient;
use xinqiao_tests::*;

on_each_backend!(a_deactivation_reaches_the_other_node_within_the_cache_period);

async fn a_deactivation_reaches_the_other_node_within_the_cache_period(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let other = hub.second_node().await;
    let files = pki::department_files(&hub.pki_dir(), SAMR);
    let identity = ClientIdentity {
        ca: pki::ca_cert_path(&hub.pki_dir()),
        cert: files.cert,
        key: files.key,
    };
    let channel = connect(&format!("https://127.0.0.1:{}", other.addr.port()), &identity)
        .await
        .expect("the second node accepts the department");
    let mut on_other = DirectoryServiceClient::new(channel);
    let mut on_first = hub.dept(SAMR).await;

    // Both nodes now hold the department as active.
    ok(on_first.who_am_i(v1::WhoAmIRequest {}).await);
    ok(on_other.who_am_i(v1::WhoAmIRequest {}).await);

    let mut admin = hub.admin().await;
    ok(admin
        .deactivate_department(v1::DeactivateDepartmentRequest {
            code: SAMR.into(),
            reason: "机构撤并".into(),
        })
        .await);
    let deactivated = Instant::now();

    // The node that made the change refuses at once.
    refused(on_first.who_am_i(v1::WhoAmIRequest {}).await, Code::PermissionDenied);

    // The other node, once its copy is older than the cache period.
    loop {
        match on_other.who_am_i(v1::WhoAmIRequest {}).await {
            Err(status) => {
                assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
                break;
            }
            Ok(_) => {
                assert!(
                    deactivated.elapsed() < xinqiao_hub::cache::FRESH_FOR + Duration::from_secs(2),
                    "the other node still admits the department {:?} after its deactivation",
                    deactivated.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    other.stop().await.expect("the second node stops");
    hub.finish().await;
}
