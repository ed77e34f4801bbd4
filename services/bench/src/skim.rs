//! B5's second search client, which reads an answer as a load generator does: it checks the
//! message's framing and counts its entries without building them.
//!
//! The first client builds every entry of every page, as an application would. On this 2-core
//! machine that work shares the CPU with the hub and is a quarter of the profile of a search
//! (README Performance, B5), although a hub's own clients spend it on their machines. Both clients
//! run, and both rows are reported.

use prost::bytes::Buf;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_prost::{ProstCodec, ProstEncoder};
use xinqiao_proto::v1 as pb;

/// What the skimming client keeps of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skimmed {
    /// The entries on the page (field 1 of SearchEntriesResponse).
    pub entries: u32,
}

/// Encodes a SearchEntriesRequest as prost does; decodes the answer as [`Skimmed`].
#[derive(Debug, Default, Clone, Copy)]
pub struct SkimCodec;

impl Codec for SkimCodec {
    type Encode = pb::SearchEntriesRequest;
    type Decode = Skimmed;
    type Encoder = ProstEncoder<pb::SearchEntriesRequest>;
    type Decoder = SkimDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<pb::SearchEntriesRequest, pb::SearchEntriesRequest>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        SkimDecoder
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SkimDecoder;

impl Decoder for SkimDecoder {
    type Item = Skimmed;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Skimmed>, Status> {
        skim(buf)
            .map(Some)
            .map_err(|e| Status::internal(format!("the answer does not decode: {e}")))
    }
}

/// Walks the top-level fields of a SearchEntriesResponse, counting the entries (each a
/// length-delimited field 1, skipped whole); any other field is skipped as protobuf says.
fn skim(buf: &mut impl Buf) -> Result<Skimmed, String> {
    let mut entries = 0;
    while buf.has_remaining() {
        let (tag, wire_type) = decode_key(buf).map_err(|e| e.to_string())?;
        if tag == 1 && wire_type == WireType::LengthDelimited {
            let len = decode_varint(buf).map_err(|e| e.to_string())?;
            if len > buf.remaining() as u64 {
                return Err("an entry runs past the end of the answer".into());
            }
            buf.advance(len as usize);
            entries += 1;
        } else {
            skip_field(wire_type, tag, buf, DecodeContext::default()).map_err(|e| e.to_string())?;
        }
    }
    Ok(Skimmed { entries })
}

/// A SearchEntries call through the skimming codec, on the same path and channel as the
/// generated client's.
pub async fn search(
    grpc: &mut tonic::client::Grpc<Channel>,
    request: pb::SearchEntriesRequest,
) -> Result<Skimmed, Status> {
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("the channel is not ready: {e}")))?;
    let path = PathAndQuery::from_static("/xinqiao.v1.DirectoryService/SearchEntries");
    let answer = grpc.unary(tonic::Request::new(request), path, SkimCodec).await?;
    Ok(answer.into_inner())
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn counts_the_entries_a_full_decode_finds() {
        let entry = |code: &str| pb::CatalogEntry {
            resource_code: code.into(),
            content: Some(pb::EntryContent {
                name: "企业登记信息".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let answer = pb::SearchEntriesResponse {
            entries: vec![entry("101/1"), entry("101/2"), entry("101/3")],
            next_page_token: "more".into(),
            encoded_entries: Vec::new(),
        };
        let wire = answer.encode_to_vec();
        assert_eq!(skim(&mut &wire[..]).unwrap(), Skimmed { entries: 3 });
        assert_eq!(skim(&mut &[][..]).unwrap(), Skimmed { entries: 0 });
    }

    #[test]
    fn a_truncated_answer_is_an_error() {
        let answer = pb::SearchEntriesResponse {
            entries: vec![
                pb::CatalogEntry::default(),
                pb::CatalogEntry {
                    resource_code: "101/000001".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let wire = answer.encode_to_vec();
        assert!(skim(&mut &wire[..wire.len() - 2]).is_err());
    }
}
