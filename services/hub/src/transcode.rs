//! JSON to protobuf and back, for service interfaces whose upstream speaks gRPC.
//!
//! A caller of an interface sends and receives JSON whatever the upstream speaks, so that one
//! registered request schema and one response schema govern every call, and a grant's fields and
//! masks apply to the answer the same way. For a `grpcs://` upstream the provider registers its
//! service's descriptors; the JSON request (already valid under its schema) becomes the method's
//! input message, and the output message becomes JSON by the proto3 JSON mapping, with the field
//! names of the .proto and every field present (so a schema can require a `false`).

use bytes::{Buf, BufMut, Bytes};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MethodDescriptor, SerializeOptions};
use serde_json::Value;
use xinqiao_domain::interface::{InterfaceSpec, Method, grpc_method_name};
use xinqiao_domain::{Error, FieldViolation, Result, text};

/// The unary methods of a registration's gRPC operations, resolved in its descriptors.
pub struct GrpcMethods {
    /// By operation name.
    methods: Vec<(String, MethodDescriptor)>,
}

impl GrpcMethods {
    /// Reads the descriptors and finds each GRPC operation's method: every problem is named at
    /// once, on the field that holds it.
    pub fn resolve(spec: &InterfaceSpec) -> Result<GrpcMethods> {
        let grpc: Vec<_> = spec
            .operations
            .iter()
            .enumerate()
            .filter(|(_, o)| o.method == Method::Grpc)
            .collect();
        if grpc.is_empty() {
            return Ok(GrpcMethods { methods: Vec::new() });
        }
        let pool = DescriptorPool::decode(spec.descriptor_set.as_slice()).map_err(|e| {
            Error::invalid(
                "spec.descriptor_set",
                format!(
                    "is not a FileDescriptorSet with every import included: {}",
                    text::shorten(&e.to_string(), 300)
                ),
            )
        })?;
        let mut violations = Vec::new();
        let mut methods = Vec::new();
        for (i, op) in grpc {
            let at = format!("spec.operations[{i}].path");
            let Some((service_name, method_name)) = grpc_method_name(&op.path) else {
                violations.push(FieldViolation::new(
                    at,
                    "must name a gRPC method as /package.Service/Method",
                ));
                continue;
            };
            let Some(service) = pool.get_service_by_name(service_name) else {
                violations.push(FieldViolation::new(
                    at,
                    format!("the descriptors hold no service {service_name}"),
                ));
                continue;
            };
            match service.methods().find(|m| m.name() == method_name) {
                None => violations.push(FieldViolation::new(
                    at,
                    format!("service {service_name} has no method {method_name}"),
                )),
                Some(m) if m.is_client_streaming() || m.is_server_streaming() => violations.push(FieldViolation::new(
                    at,
                    format!(
                        "{service_name}/{method_name} streams; an interface operation is one request and one answer"
                    ),
                )),
                Some(m) => methods.push((op.name.clone(), m)),
            }
        }
        if violations.is_empty() {
            Ok(GrpcMethods { methods })
        } else {
            Err(Error::InvalidArgument(violations))
        }
    }

    pub fn method(&self, operation: &str) -> Option<&MethodDescriptor> {
        self.methods.iter().find(|(name, _)| name == operation).map(|(_, m)| m)
    }
}

/// The JSON request as the method's input message, framed for gRPC (uncompressed, with its
/// length). A field the message does not have is refused, not dropped.
pub fn request_frame(method: &MethodDescriptor, request: &Value) -> Result<Bytes> {
    let message = DynamicMessage::deserialize_with_options(method.input(), request, &DeserializeOptions::new())
        .map_err(|e| {
            Error::invalid(
                "request_json",
                format!(
                    "does not fit the upstream's message {}: {}",
                    method.input().full_name(),
                    text::shorten(&e.to_string(), 200)
                ),
            )
        })?;
    let length = message.encoded_len();
    let mut frame = Vec::with_capacity(5 + length);
    frame.put_u8(0);
    frame.put_u32(u32::try_from(length).map_err(|_| Error::invalid("request_json", "is too large"))?);
    message
        .encode(&mut frame)
        .map_err(|e| Error::Internal(format!("encoding a gRPC request: {e}")))?;
    Ok(Bytes::from(frame))
}

/// The upstream's answer (one gRPC frame) as JSON, or why it is not an answer of the method.
pub fn answer_json(method: &MethodDescriptor, mut body: Bytes) -> std::result::Result<Value, String> {
    if body.len() < 5 {
        return Err(format!("{} bytes, not a gRPC message", body.len()));
    }
    let compressed = body.get_u8();
    let length = body.get_u32() as usize;
    if compressed != 0 {
        return Err("a compressed message (the hub asks for none)".into());
    }
    if length != body.len() {
        return Err(format!(
            "a message of {length} bytes announced, {} sent (one message expected)",
            body.len()
        ));
    }
    let message = DynamicMessage::decode(method.output(), body)
        .map_err(|e| format!("not a {} message: {e}", method.output().full_name()))?;
    message
        .serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new()
                .use_proto_field_name(true)
                .skip_default_fields(false),
        )
        .map_err(|e| format!("not expressible as JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use xinqiao_domain::interface::Operation;
    use xinqiao_domain::schema::SchemaRef;

    fn spec(path: &str) -> InterfaceSpec {
        InterfaceSpec {
            upstream: "grpcs://127.0.0.1:1".into(),
            upstream_ca_pem: String::new(),
            descriptor_set: xinqiao_proto::sample::DESCRIPTOR_SET.to_vec(),
            operations: vec![Operation {
                name: "verify".into(),
                method: Method::Grpc,
                path: path.into(),
                request_schema: SchemaRef {
                    subject: "q".into(),
                    version: 1,
                },
                response_schema: SchemaRef {
                    subject: "a".into(),
                    version: 1,
                },
                idempotent: true,
            }],
            timeout_ms: 1000,
            rate_per_minute: 60,
            max_concurrency: 1,
        }
    }

    const VERIFY: &str = "/xinqiao.sample.v1.IdentityCheck/Verify";

    #[test]
    fn a_request_becomes_the_methods_message_and_an_answer_becomes_json() {
        let methods = GrpcMethods::resolve(&spec(VERIFY)).expect("resolves");
        let method = methods.method("verify").expect("the operation's method");
        let frame = request_frame(
            method,
            &serde_json::json!({"id_number": "11010519491231002X", "name": "张三"}),
        )
        .expect("encodes");
        assert_eq!(frame[0], 0, "uncompressed");
        assert_eq!(
            u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize,
            frame.len() - 5
        );
        let decoded = xinqiao_proto::sample::VerifyRequest::decode(&frame[5..]).expect("the upstream reads it");
        assert_eq!(decoded.id_number, "11010519491231002X");
        assert_eq!(decoded.name, "张三");

        let answer = xinqiao_proto::sample::VerifyResponse {
            id_number: "11010519491231002X".into(),
            name: String::new(),
            r#match: false,
            mobile: "13912310020".into(),
        };
        let mut body = vec![0];
        body.extend((answer.encoded_len() as u32).to_be_bytes());
        answer.encode(&mut body).expect("encodes");
        let json = answer_json(method, Bytes::from(body)).expect("decodes");
        assert_eq!(
            json,
            serde_json::json!({"id_number": "11010519491231002X", "name": "", "match": false, "mobile": "13912310020"}),
            "every field present, named as in the .proto"
        );
    }

    #[test]
    fn what_is_not_the_methods_message_is_refused() {
        let methods = GrpcMethods::resolve(&spec(VERIFY)).expect("resolves");
        let method = methods.method("verify").expect("the operation's method");
        assert!(matches!(
            request_frame(method, &serde_json::json!({"unknown_field": 1})),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            request_frame(method, &serde_json::json!({"name": 7})),
            Err(Error::InvalidArgument(_))
        ));
        for garbage in [
            vec![],
            vec![0, 0, 0],
            vec![1, 0, 0, 0, 0],
            vec![0, 0, 0, 0, 9, 1],
            vec![0, 0, 0, 0, 2, 0xff, 0xff],
        ] {
            assert!(
                answer_json(method, Bytes::from(garbage.clone())).is_err(),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn operations_must_name_unary_methods_of_the_descriptors() {
        for (path, says) in [
            ("/xinqiao.sample.v1.Nothing/Verify", "no service"),
            ("/xinqiao.sample.v1.IdentityCheck/Delete", "no method"),
            ("/xinqiao.sample.v1.IdentityCheck/Watch", "streams"),
        ] {
            let Err(Error::InvalidArgument(v)) = GrpcMethods::resolve(&spec(path)) else {
                panic!("{path} is refused");
            };
            assert_eq!(v[0].field, "spec.operations[0].path");
            assert!(v[0].description.contains(says), "{path}: {}", v[0].description);
        }
        let mut garbage = spec(VERIFY);
        garbage.descriptor_set = vec![0xff, 0x01, 0x02];
        let Err(Error::InvalidArgument(v)) = GrpcMethods::resolve(&garbage) else {
            panic!("garbage descriptors are refused");
        };
        assert_eq!(v[0].field, "spec.descriptor_set");
    }
}
