//! The gRPC services called in process: the console's requests go through the same tower layers
//! as a call from the network (metrics, audit, status corrections) and reach the same handlers,
//! with the signed-in identity where a verified certificate's would be.

use std::convert::Infallible;

use tonic::body::Body;
use tonic::codegen::http;
use tower::util::BoxCloneSyncService;
use xinqiao_domain::identity::Principal;
use xinqiao_proto::v1::access_service_client::AccessServiceClient;
use xinqiao_proto::v1::audit_service_client::AuditServiceClient;
use xinqiao_proto::v1::directory_service_client::DirectoryServiceClient;
use xinqiao_proto::v1::evaluation_service_client::EvaluationServiceClient;
use xinqiao_proto::v1::exchange_service_client::ExchangeServiceClient;

use crate::tls::PeerInfo;

/// The hub's gRPC services behind its layers, as one service.
pub type InProcessService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

/// A client of the hub's own services for the console.
#[derive(Clone)]
pub struct InProcess {
    service: InProcessService,
}

impl InProcess {
    pub fn new(service: InProcessService) -> InProcess {
        InProcess { service }
    }

    pub(crate) fn directory(&self) -> DirectoryServiceClient<InProcessService> {
        DirectoryServiceClient::new(self.service.clone())
    }

    pub(crate) fn access(&self) -> AccessServiceClient<InProcessService> {
        AccessServiceClient::new(self.service.clone())
    }

    pub(crate) fn exchange(&self) -> ExchangeServiceClient<InProcessService> {
        ExchangeServiceClient::new(self.service.clone())
    }

    pub(crate) fn audit(&self) -> AuditServiceClient<InProcessService> {
        AuditServiceClient::new(self.service.clone())
    }

    pub(crate) fn evaluation(&self) -> EvaluationServiceClient<InProcessService> {
        EvaluationServiceClient::new(self.service.clone())
    }
}

/// A request as `principal` makes it from `remote`: the identity travels as a verified
/// certificate's does, so authentication, authorisation and the audit trail treat it alike.
pub(crate) fn as_caller<T>(message: T, principal: &Principal, remote: std::net::SocketAddr) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(PeerInfo {
        remote,
        principal: Some(principal.clone()),
    });
    // The trail says the call came through the console (`"via": "console"`).
    request.extensions_mut().insert(crate::audit::Via("console"));
    request
}
