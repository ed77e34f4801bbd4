//! `SearchEntriesResponse` (directory.proto), written by hand rather than generated, so that a
//! server can answer with entries it holds encoded already.
//!
//! A search answers the same few hundred entries thousands of times a second. Building each as a
//! message, copying it out of a cache and encoding it again was the largest part of a search's
//! cost on the hub (B5 in the README's Performance section). The wire format is the generated one exactly:
//! an encoded `CatalogEntry` and an embedded one are the same bytes on the wire (a
//! length-delimited field 1), so clients, other languages and reflection see no difference.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use super::CatalogEntry;

#[derive(Clone, PartialEq, Default, Debug)]
pub struct SearchEntriesResponse {
    /// Ordered by resource code. A decoded response holds every entry here.
    pub entries: Vec<CatalogEntry>,
    pub next_page_token: String,
    /// Entries already encoded as `CatalogEntry` messages, sent after `entries` as field 1 too.
    /// Only a server fills this; read a response built in the same process with [`Self::decoded`].
    pub encoded_entries: Vec<Bytes>,
}

impl SearchEntriesResponse {
    /// An answer of entries encoded already, in order.
    pub fn encoded(encoded_entries: Vec<Bytes>, next_page_token: String) -> Self {
        Self {
            entries: Vec::new(),
            next_page_token,
            encoded_entries,
        }
    }

    /// The same answer with every entry in `entries`, the encoded ones decoded: for a caller in
    /// the server's own process (the console), which reads the response off no wire.
    pub fn decoded(mut self) -> Result<Self, DecodeError> {
        for bytes in std::mem::take(&mut self.encoded_entries) {
            self.entries.push(CatalogEntry::decode(bytes)?);
        }
        Ok(self)
    }
}

/// Field 1: `repeated CatalogEntry entries`; field 2: `string next_page_token`.
const ENTRIES: u32 = 1;
const NEXT_PAGE_TOKEN: u32 = 2;

impl Message for SearchEntriesResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encoding::message::encode_repeated(ENTRIES, &self.entries, buf);
        for bytes in &self.encoded_entries {
            encoding::bytes::encode(ENTRIES, bytes, buf);
        }
        if !self.next_page_token.is_empty() {
            encoding::string::encode(NEXT_PAGE_TOKEN, &self.next_page_token, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let merged = match tag {
            ENTRIES => encoding::message::merge_repeated(wire_type, &mut self.entries, buf, ctx),
            NEXT_PAGE_TOKEN => encoding::string::merge(wire_type, &mut self.next_page_token, buf, ctx),
            _ => return encoding::skip_field(wire_type, tag, buf, ctx),
        };
        merged.map_err(|mut e| {
            let field = if tag == ENTRIES { "entries" } else { "next_page_token" };
            e.push("SearchEntriesResponse", field);
            e
        })
    }

    fn encoded_len(&self) -> usize {
        let encoded: usize = self
            .encoded_entries
            .iter()
            .map(|bytes| encoding::bytes::encoded_len(ENTRIES, bytes))
            .sum();
        let token = if self.next_page_token.is_empty() {
            0
        } else {
            encoding::string::encoded_len(NEXT_PAGE_TOKEN, &self.next_page_token)
        };
        encoding::message::encoded_len_repeated(ENTRIES, &self.entries) + encoded + token
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.next_page_token.clear();
        self.encoded_entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{DataItem, EntryContent};

    fn entry(code: &str) -> CatalogEntry {
        CatalogEntry {
            resource_code: code.into(),
            provider_name: "市场监督管理局".into(),
            version: 3,
            content: Some(EntryContent {
                name: "企业登记信息".into(),
                items: vec![DataItem {
                    name: "统一社会信用代码".into(),
                    length: 18,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn encoded_entries_are_the_bytes_of_embedded_ones() {
        let (a, b) = (entry("101/000001"), entry("101/000002"));
        let built = SearchEntriesResponse {
            entries: vec![a.clone(), b.clone()],
            next_page_token: "next".into(),
            encoded_entries: Vec::new(),
        };
        let shared = SearchEntriesResponse::encoded(
            vec![Bytes::from(a.encode_to_vec()), Bytes::from(b.encode_to_vec())],
            "next".into(),
        );
        let wire = shared.encode_to_vec();
        assert_eq!(wire, built.encode_to_vec());
        assert_eq!(wire.len(), shared.encoded_len());
        let decoded = SearchEntriesResponse::decode(&wire[..]).unwrap();
        assert_eq!(decoded.entries, vec![a.clone(), b.clone()]);
        assert_eq!(decoded.next_page_token, "next");
        assert!(decoded.encoded_entries.is_empty());
        assert_eq!(shared.decoded().unwrap(), decoded);
    }

    #[test]
    fn an_empty_answer_is_empty_on_the_wire() {
        assert!(SearchEntriesResponse::default().encode_to_vec().is_empty());
        assert_eq!(SearchEntriesResponse::default().encoded_len(), 0);
    }

    #[test]
    fn a_broken_entry_is_a_decode_error_naming_the_field() {
        let mut wire =
            SearchEntriesResponse::encoded(vec![Bytes::from(entry("101/000001").encode_to_vec())], String::new())
                .encode_to_vec();
        wire.truncate(wire.len() - 3);
        let error = SearchEntriesResponse::decode(&wire[..]).unwrap_err();
        assert!(error.to_string().contains("SearchEntriesResponse.entries"), "{error}");
        let garbage = SearchEntriesResponse::encoded(vec![Bytes::from_static(&[0xff, 0xff])], String::new());
        assert!(garbage.decoded().is_err());
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut wire = SearchEntriesResponse::encoded(Vec::new(), "t".into()).encode_to_vec();
        encoding::uint64::encode(9, &7, &mut wire);
        let decoded = SearchEntriesResponse::decode(&wire[..]).unwrap();
        assert_eq!(decoded.next_page_token, "t");
    }
}
