//! The hub as a gRPC server: health checking, server reflection (v1 and v1alpha) and a graceful
//! stop.

use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::{v1, v1alpha};
use xinqiao_tests::v1 as pb;
use xinqiao_tests::*;

const DIRECTORY_SERVICE: &str = "xinqiao.v1.DirectoryService";

on_each_backend!(
    health_reports_serving,
    reflection_v1_lists_the_services,
    reflection_v1alpha_lists_the_services,
    stop_is_graceful_and_final,
    health_turns_not_serving_as_the_hub_stops
);

async fn health_reports_serving(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut health = HealthClient::new(hub.admin_channel().await);
    for service in ["", DIRECTORY_SERVICE] {
        let answer = ok(health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await);
        assert_eq!(answer.status, ServingStatus::Serving as i32, "service {service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await;
    refused(unknown, tonic::Code::NotFound);
    // Health is behind mutual TLS like everything else.
    let mut anonymous = HealthClient::new(hub.channel_without_certificate());
    assert!(
        anonymous
            .check(HealthCheckRequest { service: String::new() })
            .await
            .is_err()
    );
    hub.finish().await;
}

async fn reflection_v1_lists_the_services(backend: Backend) {
    use v1::server_reflection_client::ServerReflectionClient;
    use v1::server_reflection_request::MessageRequest;
    use v1::server_reflection_response::MessageResponse;

    let hub = TestHub::start_on(backend).await;
    let mut client = ServerReflectionClient::new(hub.admin_channel().await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ok(client.server_reflection_info(tokio_stream::iter([request])).await);
    let answer = answers
        .message()
        .await
        .expect("a reflection answer")
        .expect("the stream has an answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("expected a service list, got {:?}", answer.message_response)
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [DIRECTORY_SERVICE, "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{expected} is not in {names:?}");
    }

    // The directory's descriptors are there to be fetched, as grpcurl does.
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(DIRECTORY_SERVICE.into())),
    };
    let mut answers = ok(client.server_reflection_info(tokio_stream::iter([request])).await);
    let answer = answers
        .message()
        .await
        .expect("a reflection answer")
        .expect("the stream has an answer");
    let Some(MessageResponse::FileDescriptorResponse(files)) = answer.message_response else {
        panic!("expected file descriptors, got {:?}", answer.message_response)
    };
    assert!(!files.file_descriptor_proto.is_empty());
    hub.finish().await;
}

async fn reflection_v1alpha_lists_the_services(backend: Backend) {
    use v1alpha::server_reflection_client::ServerReflectionClient;
    use v1alpha::server_reflection_request::MessageRequest;
    use v1alpha::server_reflection_response::MessageResponse;

    let hub = TestHub::start_on(backend).await;
    let mut client = ServerReflectionClient::new(hub.admin_channel().await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ok(client.server_reflection_info(tokio_stream::iter([request])).await);
    let answer = answers
        .message()
        .await
        .expect("a reflection answer")
        .expect("the stream has an answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("expected a service list, got {:?}", answer.message_response)
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [DIRECTORY_SERVICE, "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{expected} is not in {names:?}");
    }
    hub.finish().await;
}

async fn stop_is_graceful_and_final(backend: Backend) {
    let mut hub = TestHub::start_on(backend).await;
    let addr = hub.addr;
    let url = hub.url();
    let pki = hub.pki_dir();
    let mut samr = hub.dept(SAMR).await;
    ok(samr
        .create_entry(create(content("企业登记信息", "102001", "营业执照")))
        .await);

    // A connected client does not hold the stop up.
    let stopped = tokio::time::timeout(Duration::from_secs(10), hub.stop()).await;
    match stopped {
        Ok(result) => result.expect("the hub stops gracefully"),
        Err(_) => panic!("stop did not return within 10 s while a client was connected"),
    }

    // The open connection gets no more answers,
    assert!(
        samr.who_am_i(pb::WhoAmIRequest {}).await.is_err(),
        "a stopped hub answered"
    );
    // nothing listens on the port any more,
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the port still accepts connections"
    );
    // and a new client with a valid certificate cannot connect.
    let identity = xinqiao_hub::tls::ClientIdentity {
        ca: xinqiao_hub::pki::ca_cert_path(&pki),
        cert: xinqiao_hub::pki::department_files(&pki, SAMR).cert,
        key: xinqiao_hub::pki::department_files(&pki, SAMR).key,
    };
    assert!(xinqiao_hub::tls::connect(&url, &identity).await.is_err());
}

async fn health_turns_not_serving_as_the_hub_stops(backend: Backend) {
    let mut hub = TestHub::start_on(backend).await;
    let mut health = HealthClient::new(hub.admin_channel().await);
    let mut statuses = ok(health.watch(HealthCheckRequest { service: String::new() }).await);
    let first = statuses.message().await.expect("a status").expect("a first status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    // A load balancer watching health hears of the stop before the connection goes.
    let heard = async move {
        let next = statuses.message().await;
        drop(statuses);
        next
    };
    let (stopped, heard) = tokio::join!(tokio::time::timeout(Duration::from_secs(10), hub.stop()), heard);
    stopped.expect("the stop is not held up").expect("a graceful stop");
    let heard = heard.expect("the watch answers").expect("a status before the end");
    assert_eq!(heard.status, ServingStatus::NotServing as i32);
}
