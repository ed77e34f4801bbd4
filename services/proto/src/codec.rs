//! The codec of every xinqiao.v1 server and client: prost's encoding, with two changes to its
//! decoding, both answered INVALID_ARGUMENT since the sender is at fault:
//! - a message that is not valid protobuf (garbage bytes, a truncated field, a `string` field
//!   holding invalid UTF-8, nesting past prost's recursion limit), which tonic-prost answers
//!   INTERNAL, telling monitors the hub is broken;
//! - a `string` field holding U+0000, at any depth. No text the hub takes may hold it (PostgreSQL
//!   cannot store it, JSON text cannot carry it raw, no identifier has it), and refusing it here
//!   keeps it out of every handler, store query and audit event.
//!
//! The status names the field in google.rpc.BadRequest details, as the hub's own validation does.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstEncoder};
use tonic_types::{ErrorDetails, StatusExt};

/// A message whose string fields the codec can search, implemented for every xinqiao.v1 message
/// by `build.rs`.
pub trait TextFields {
    /// The path of the first string field holding U+0000 (`content.items[2].name`), if any.
    fn first_nul(&self) -> Option<String>;
}

/// [`ProstCodec`], except that a message that does not decode is INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct StrictCodec<T, U> {
    prost: ProstCodec<T, U>,
}

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        Self {
            prost: ProstCodec::default(),
        }
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + TextFields + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.prost.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder {
            buffer_settings: self.prost.decoder().buffer_settings(),
            _message: PhantomData,
        }
    }
}

/// Decodes `U` as prost does, then refuses U+0000 in its strings; either failure is
/// INVALID_ARGUMENT naming the message and the field.
#[derive(Debug, Clone)]
pub struct StrictDecoder<U> {
    buffer_settings: BufferSettings,
    _message: PhantomData<U>,
}

impl<U: Message + Default + TextFields> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        strict_decode(buf).map(Some)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.buffer_settings
    }
}

/// Decodes one message of type `U`, or says why the bytes are not one the hub takes.
fn strict_decode<U: Message + Default + TextFields>(buf: impl prost::bytes::Buf) -> Result<U, Status> {
    let message = U::decode(buf).map_err(not_valid::<U>)?;
    match message.first_nul() {
        None => Ok(message),
        Some(field) => Err(refused(
            &field,
            format!(
                "field {field} of xinqiao.v1.{} holds the character U+0000, which the hub never accepts",
                message_name::<U>()
            ),
        )),
    }
}

/// INVALID_ARGUMENT with `message`, naming `field` (when known) in BadRequest details.
fn refused(field: &str, message: String) -> Status {
    let mut details = ErrorDetails::new();
    details.add_bad_request_violation(field, message.clone());
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// The status of a message of type `U` that did not decode: what prost found wrong and, when it
/// knows, the field it was in, named as the hub names fields elsewhere (`content.name`). Nothing
/// of the hub's own state is in it.
fn not_valid<U>(error: prost::DecodeError) -> Status {
    let (field, fault) = describe(&error);
    let place = if field.is_empty() {
        String::new()
    } else {
        format!(" in field {field}")
    };
    refused(
        &field,
        format!(
            "the message is not a valid xinqiao.v1.{} protobuf message{place}: {fault}",
            message_name::<U>()
        ),
    )
}

/// The field path (outermost first, `content.name`) and the fault of a decode error. prost writes
/// `failed to decode Protobuf message: EntryContent.name: CreateEntryRequest.content: <fault>`,
/// innermost field first.
fn describe(error: &prost::DecodeError) -> (String, String) {
    let text = error.to_string();
    let text = text
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(&text);
    let mut fields = Vec::new();
    let mut rest = text;
    while let Some((head, tail)) = rest.split_once(": ") {
        match head.split_once('.') {
            Some((message, field)) if is_identifier(message) && is_identifier(field) => {
                fields.push(field);
                rest = tail;
            }
            _ => break,
        }
    }
    fields.reverse();
    (fields.join("."), rest.to_string())
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The message's name without its Rust module path (`CreateEntryRequest`).
fn message_name<U>() -> &'static str {
    let full = std::any::type_name::<U>();
    full.rsplit("::").next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::v1 as pb;

    fn decode<U: Message + Default + TextFields>(bytes: &[u8]) -> Result<U, Status> {
        strict_decode(bytes)
    }

    fn violated_fields(status: &Status) -> Vec<String> {
        let bad = status.get_details_bad_request().expect("BadRequest details");
        bad.field_violations.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn valid_messages_decode() {
        let request = pb::GetDepartmentRequest {
            code: "11330100MB00010011".into(),
        };
        let decoded = decode::<pb::GetDepartmentRequest>(&request.encode_to_vec());
        assert_eq!(decoded.ok(), Some(request));
    }

    #[test]
    fn garbage_is_invalid_argument() {
        let status = decode::<pb::GetDepartmentRequest>(&[0xff, 0xff, 0xff]).expect_err("garbage");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .starts_with("the message is not a valid xinqiao.v1.GetDepartmentRequest protobuf message: "),
            "{}",
            status.message()
        );
    }

    #[test]
    fn invalid_utf8_in_a_string_field_is_invalid_argument() {
        // Field 1 (code), length-delimited, 2 bytes that are not UTF-8.
        let status = decode::<pb::GetDepartmentRequest>(&[0x0a, 0x02, 0xc3, 0x28]).expect_err("not UTF-8");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "the message is not a valid xinqiao.v1.GetDepartmentRequest protobuf message in field code: \
             invalid string value: data is not UTF-8 encoded"
        );
    }

    #[test]
    fn invalid_utf8_in_a_nested_string_field_names_the_path() {
        // CreateEntryRequest.content (field 1) holding EntryContent.name (field 1) = 0xff.
        let status = decode::<pb::CreateEntryRequest>(&[0x0a, 0x03, 0x0a, 0x01, 0xff]).expect_err("not UTF-8");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .ends_with("CreateEntryRequest protobuf message in field content.name: invalid string value: data is not UTF-8 encoded"),
            "{}",
            status.message()
        );
        assert_eq!(violated_fields(&status), ["content.name"]);
    }

    #[test]
    fn a_truncated_field_is_invalid_argument() {
        // Field 1 claims 10 bytes and carries 2.
        let status = decode::<pb::GetDepartmentRequest>(&[0x0a, 0x0a, b'a', b'b']).expect_err("truncated");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(": "), "{}", status.message());
    }

    #[test]
    fn nesting_past_the_recursion_limit_is_invalid_argument() {
        // An unknown field 15 as a group, opened 10,000 times and never closed.
        let status = decode::<pb::WhoAmIRequest>(&[0x7b; 10_000]).expect_err("too deep");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("recursion limit"), "{}", status.message());
    }

    #[test]
    fn nul_in_a_string_field_is_refused_wherever_it_is() {
        let mut content = pb::EntryContent {
            name: "企业登记信息".into(),
            items: vec![pb::DataItem::default(), pb::DataItem::default()],
            ..Default::default()
        };
        let clean = pb::CreateEntryRequest {
            content: Some(content.clone()),
        };
        assert!(decode::<pb::CreateEntryRequest>(&clean.encode_to_vec()).is_ok());

        content.items[1].description = "说明\0".into();
        let nested = pb::CreateEntryRequest { content: Some(content) };
        let status = decode::<pb::CreateEntryRequest>(&nested.encode_to_vec()).expect_err("NUL");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["content.items[1].description"]);
        assert!(status.message().contains("U+0000"), "{}", status.message());

        let repeated = pb::ApproveRequestRequest {
            fields: vec!["name".into(), "\0".into()],
            ..Default::default()
        };
        let status = decode::<pb::ApproveRequestRequest>(&repeated.encode_to_vec()).expect_err("NUL");
        assert_eq!(violated_fields(&status), ["fields[1]"]);

        let oneof = pb::WhoAmIResponse {
            identity: Some(pb::who_am_i_response::Identity::Admin("a\0".into())),
        };
        let status = decode::<pb::WhoAmIResponse>(&oneof.encode_to_vec()).expect_err("NUL");
        assert_eq!(violated_fields(&status), ["admin"]);
    }

    #[test]
    fn nul_bytes_in_a_bytes_field_are_data() {
        let chunk = pb::FileChunk {
            upload_id: "u".into(),
            offset: 0,
            data: vec![0, 0, 0],
        };
        assert_eq!(decode::<pb::FileChunk>(&chunk.encode_to_vec()).ok(), Some(chunk));
    }
}
