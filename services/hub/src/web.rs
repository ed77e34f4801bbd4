//! The HTTP edge on the hub's own port: the same mutual-TLS connection and identity as gRPC, for
//! clients that speak plain HTTP+JSON. Each route calls the gRPC handler it stands for, so the
//! rules, the statuses and the audit trail are the same; only the framing differs. A gRPC status
//! becomes an HTTP status and a JSON body `{"code", "message"}`.
//!
//! - `POST /interfaces/<resource code>/<operation>`: InterfaceService.Invoke. The body is the
//!   JSON request; the purpose (用途) comes in the `X-Xinqiao-Purpose` header (UTF-8) or the
//!   `purpose` query parameter, a grant in `X-Xinqiao-Grant` or `grant_id`.
//! - `GET /catalog.jsonld`: DirectoryService.ExportCatalog, the published catalogue as DCAT-AP
//!   JSON-LD, for harvesters that speak HTTP.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http_body_util::{BodyExt, Limited};
use tonic::Code;
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::directory_service_server::DirectoryService;
use xinqiao_proto::v1::interface_service_server::InterfaceService;

use crate::audit::{AuditLog, CallNote, code_name};
use crate::directory::DirectoryApi;
use crate::interface::InterfaceApi;
use crate::tls::PeerInfo;

/// A request body larger than this is refused before it is read whole.
const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct Web {
    pub directory: Arc<DirectoryApi>,
    pub interfaces: Arc<InterfaceApi>,
    pub audit: AuditLog,
}

/// The routes of the HTTP edge.
pub fn routes(web: Web) -> axum::Router {
    axum::Router::new()
        .route("/interfaces/{*path}", axum::routing::post(invoke))
        .route("/catalog.jsonld", axum::routing::get(catalog))
        .with_state(web)
}

/// The HTTP status that says what a gRPC status says.
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::FailedPrecondition => 412,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

fn json_response(status: u16, body: String, request_id: &str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Ok(id) = http::HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", id);
    }
    response
}

fn refusal(status: &tonic::Status, request_id: &str) -> Response {
    let body = serde_json::json!({"code": code_name(status.code()), "message": status.message()}).to_string();
    let mut response = json_response(http_status(status.code()), body, request_id);
    if status.code() == Code::ResourceExhausted {
        use tonic_types::StatusExt;
        if let Some(delay) = status.get_details_retry_info().and_then(|r| r.retry_delay) {
            let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
            if let Ok(value) = http::HeaderValue::from_str(&seconds.max(1).to_string()) {
                response.headers_mut().insert(http::header::RETRY_AFTER, value);
            }
        }
    }
    response
}

/// A header as UTF-8 text (a purpose in Chinese travels as raw UTF-8 bytes).
fn header_text(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|v| String::from_utf8(v.as_bytes().to_vec()).ok())
}

/// A query parameter, percent-decoded.
fn query_param(request: &Request, name: &str) -> Option<String> {
    request.uri().query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&high), Some(&low)) => hex(high).zip(hex(low)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The catalogue as DCAT-AP JSON-LD. A lookup, as on the gRPC edge: only a refusal is audited.
async fn catalog(State(web): State<Web>, request: Request) -> Response {
    let request_id = uuid::Uuid::now_v7().to_string();
    let peer = request.extensions().get::<PeerInfo>().cloned();
    let note = CallNote::for_call(peer.as_ref(), "ExportCatalog", &request_id);
    note.detail("via", "http");
    let mut call = tonic::Request::new(pb::ExportCatalogRequest {
        format: pb::CatalogFormat::DcatJsonld as i32,
    });
    if let Some(peer) = peer {
        call.extensions_mut().insert(peer);
    }
    match web.directory.export_catalog(call).await {
        Ok(answer) => {
            let answer = answer.into_inner();
            let mut response = json_response(200, answer.document, &request_id);
            if let Ok(media) = http::HeaderValue::from_str(&answer.media_type) {
                response.headers_mut().insert(http::header::CONTENT_TYPE, media);
            }
            response
        }
        Err(status) => {
            if matches!(status.code(), Code::PermissionDenied | Code::Unauthenticated) {
                note.detail("message", xinqiao_domain::text::shorten(status.message(), 300));
                if let Err(e) = web.audit.record(note.event(code_name(status.code()))).await {
                    return refusal(&crate::status::to_status(e), &request_id);
                }
            }
            refusal(&status, &request_id)
        }
    }
}

async fn invoke(State(web): State<Web>, request: Request) -> Response {
    let request_id = uuid::Uuid::now_v7().to_string();
    let peer = request.extensions().get::<PeerInfo>().cloned();
    let note = CallNote::for_call(peer.as_ref(), "Invoke", &request_id);
    note.detail("via", "http");
    let path = request.uri().path().strip_prefix("/interfaces/").unwrap_or_default();
    let path = percent_decode(path);
    let (code, operation) = path.rsplit_once('/').unwrap_or((path.as_str(), ""));
    let (code, operation) = (code.to_string(), operation.to_string());
    let purpose = header_text(&request, "x-xinqiao-purpose")
        .or_else(|| query_param(&request, "purpose"))
        .unwrap_or_default();
    let grant_id = header_text(&request, "x-xinqiao-grant")
        .or_else(|| query_param(&request, "grant_id"))
        .unwrap_or_default();
    let answer = match Limited::new(request.into_body(), MAX_BODY_BYTES).collect().await {
        Err(_) => Err(tonic::Status::resource_exhausted(format!(
            "the request body is larger than {MAX_BODY_BYTES} bytes, or broke off"
        ))),
        Ok(body) => match String::from_utf8(body.to_bytes().to_vec()) {
            Err(_) => Err(tonic::Status::invalid_argument(
                "request_json: the body is not UTF-8 text",
            )),
            Ok(request_json) => {
                let mut call = tonic::Request::new(pb::InvokeRequest {
                    code,
                    operation,
                    request_json,
                    purpose,
                    grant_id,
                });
                if let Some(peer) = peer {
                    call.extensions_mut().insert(peer);
                }
                call.extensions_mut().insert(note.clone());
                web.interfaces.invoke(call).await.map(tonic::Response::into_inner)
            }
        },
    };
    let code = answer.as_ref().map_or_else(tonic::Status::code, |_| Code::Ok);
    if let Err(status) = &answer {
        note.detail("message", xinqiao_domain::text::shorten(status.message(), 300));
    }
    // Nothing leaves the hub unaudited, as on the gRPC edge.
    if let Err(e) = web.audit.record(note.event(code_name(code))).await {
        return refusal(&crate::status::to_status(e), &request_id);
    }
    match answer {
        Ok(response) => json_response(200, response.response_json, &request_id),
        Err(status) => refusal(&status, &request_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_reads_utf8_and_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decode("%E7%A4%BE%E4%BF%9D+x"), "社保 x");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("101%2F000001"), "101/000001");
    }

    #[test]
    fn every_grpc_code_has_an_http_status() {
        assert_eq!(http_status(Code::PermissionDenied), 403);
        assert_eq!(http_status(Code::ResourceExhausted), 429);
        assert_eq!(http_status(Code::DeadlineExceeded), 504);
        assert_eq!(http_status(Code::Unavailable), 503);
        assert_eq!(http_status(Code::InvalidArgument), 400);
    }
}
