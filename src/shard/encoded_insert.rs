//! An encoded `InsertParam` split by row owner without decoding its vectors.
//!
//! A spread insert must go row by row to the group owning each row's id, so
//! the proxy has to know the rows and the ids; it does not have to know the
//! floats. [`EncodedInsert::parse`] walks the message's top-level fields and
//! keeps each `RowRecord` as the byte range it arrived in; [`EncodedInsert::part`]
//! writes one group's `InsertParam` by copying those ranges. A 1 MB insert
//! then costs one memcpy per part instead of a float decode, a `Vec<f32>` per
//! row and an encode per part (the profile of a 2-group insert showed
//! prost's float decode, its encode and malloc/free at about a tenth of the
//! proxy's CPU).
//!
//! Written against `prost::encoding`'s key and varint helpers rather than
//! with a generated "lazy" message type: prost has no such type, and the
//! walk is the protobuf wire format's five rules.

use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{decode_key, decode_varint, encode_key, encode_varint, WireType};

/// `InsertParam`'s field numbers (proto/milvus.proto).
const COLLECTION_NAME: u32 = 1;
const ROW_RECORD: u32 = 2;
const ROW_ID: u32 = 3;
const PARTITION_TAG: u32 = 4;

/// An `InsertParam` whose rows are byte ranges of the message it came in.
#[derive(Debug)]
pub struct EncodedInsert {
    body: Bytes,
    pub collection_name: String,
    pub partition_tag: String,
    /// Each row's encoded `RowRecord` (the payload of one field-2 entry).
    rows: Vec<Range<usize>>,
    /// `row_id_array`, packed or not.
    pub ids: Vec<i64>,
    /// Every other field, whole (key included): `extra_params` and any
    /// field this proxy does not know, copied into every part unchanged.
    rest: Vec<Range<usize>>,
}

impl EncodedInsert {
    /// Walks the top-level fields of `body`; an error says what is malformed.
    pub fn parse(body: Bytes) -> Result<EncodedInsert, String> {
        let mut insert = EncodedInsert {
            body: body.clone(),
            collection_name: String::new(),
            partition_tag: String::new(),
            rows: Vec::new(),
            ids: Vec::new(),
            rest: Vec::new(),
        };
        let total = body.len();
        let mut buf = body.as_ref();
        while buf.has_remaining() {
            let field_start = total - buf.remaining();
            let (tag, wire_type) = decode_key(&mut buf).map_err(|e| e.to_string())?;
            match (tag, wire_type) {
                (COLLECTION_NAME | PARTITION_TAG, WireType::LengthDelimited) => {
                    let range = length_delimited(&mut buf, total)?;
                    let text = std::str::from_utf8(&body[range])
                        .map_err(|_| format!("field {tag} is not UTF-8"))?
                        .to_string();
                    // Protobuf: the last occurrence of a scalar field wins.
                    if tag == COLLECTION_NAME {
                        insert.collection_name = text;
                    } else {
                        insert.partition_tag = text;
                    }
                }
                (ROW_RECORD, WireType::LengthDelimited) => {
                    insert.rows.push(length_delimited(&mut buf, total)?);
                }
                (ROW_ID, WireType::LengthDelimited) => {
                    let range = length_delimited(&mut buf, total)?;
                    let mut packed = &body[range];
                    while packed.has_remaining() {
                        insert.ids.push(varint(&mut packed)? as i64);
                    }
                }
                (ROW_ID, WireType::Varint) => insert.ids.push(varint(&mut buf)? as i64),
                (_, wire_type) => {
                    skip(&mut buf, wire_type, total)?;
                    insert.rest.push(field_start..total - buf.remaining());
                }
            }
        }
        Ok(insert)
    }

    pub fn row_count(&self) -> usize {
        self.rows.len()
    }

    /// The encoded `InsertParam` of the rows at `positions`, with `ids`
    /// (one per position) as its `row_id_array`.
    pub fn part(&self, positions: &[usize], ids: &[i64]) -> Bytes {
        let rows_len: usize = positions
            .iter()
            .filter_map(|&p| self.rows.get(p))
            .map(|r| r.len() + 10)
            .sum();
        let rest_len: usize = self.rest.iter().map(Range::len).sum();
        let mut out = BytesMut::with_capacity(
            rows_len + rest_len + ids.len() * 10 + self.collection_name.len() + 64,
        );
        put_string(&mut out, COLLECTION_NAME, &self.collection_name);
        for row in positions.iter().filter_map(|&p| self.rows.get(p)) {
            encode_key(ROW_RECORD, WireType::LengthDelimited, &mut out);
            encode_varint(row.len() as u64, &mut out);
            out.put_slice(&self.body[row.clone()]);
        }
        if !ids.is_empty() {
            let mut packed = BytesMut::with_capacity(ids.len() * 10);
            for &id in ids {
                encode_varint(id as u64, &mut packed);
            }
            encode_key(ROW_ID, WireType::LengthDelimited, &mut out);
            encode_varint(packed.len() as u64, &mut out);
            out.put_slice(&packed);
        }
        put_string(&mut out, PARTITION_TAG, &self.partition_tag);
        for field in &self.rest {
            out.put_slice(&self.body[field.clone()]);
        }
        out.freeze()
    }
}

fn put_string(out: &mut BytesMut, tag: u32, text: &str) {
    if !text.is_empty() {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(text.len() as u64, out);
        out.put_slice(text.as_bytes());
    }
}

fn varint(buf: &mut &[u8]) -> Result<u64, String> {
    decode_varint(buf).map_err(|e| e.to_string())
}

/// The payload range of a length-delimited field whose length comes next.
fn length_delimited(buf: &mut &[u8], total: usize) -> Result<Range<usize>, String> {
    let len = varint(buf)?;
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= buf.remaining())
        .ok_or_else(|| "a field is longer than the message".to_string())?;
    let start = total - buf.remaining();
    buf.advance(len);
    Ok(start..start + len)
}

fn skip(buf: &mut &[u8], wire_type: WireType, total: usize) -> Result<(), String> {
    let width = match wire_type {
        WireType::Varint => return varint(buf).map(|_| ()),
        WireType::LengthDelimited => return length_delimited(buf, total).map(|_| ()),
        WireType::SixtyFourBit => 8,
        WireType::ThirtyTwoBit => 4,
        WireType::StartGroup | WireType::EndGroup => {
            return Err("protobuf groups are not part of InsertParam".to_string())
        }
    };
    if buf.remaining() < width {
        return Err("a field is longer than the message".to_string());
    }
    buf.advance(width);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::wire::{InsertParam, KeyValuePair, RowRecord};

    fn insert(rows: usize, ids: bool) -> InsertParam {
        InsertParam {
            collection_name: "spread".into(),
            row_record_array: (0..rows)
                .map(|r| RowRecord {
                    float_data: (0..4).map(|d| (r * 10 + d) as f32 * 0.5).collect(),
                    binary_data: Bytes::new(),
                })
                .collect(),
            row_id_array: if ids {
                (0..rows as i64).map(|i| i * 7 - 3).collect()
            } else {
                Vec::new()
            },
            partition_tag: "p1".into(),
            extra_params: vec![KeyValuePair {
                key: "k".into(),
                value: "v".into(),
            }],
        }
    }

    #[test]
    fn a_part_is_the_insert_of_its_rows() {
        let whole = insert(5, true);
        let encoded = EncodedInsert::parse(Bytes::from(whole.encode_to_vec())).unwrap();
        assert_eq!(encoded.collection_name, "spread");
        assert_eq!(encoded.partition_tag, "p1");
        assert_eq!(encoded.row_count(), 5);
        assert_eq!(encoded.ids, whole.row_id_array);
        let part = InsertParam::decode(encoded.part(&[1, 3], &[100, 300])).unwrap();
        assert_eq!(part.collection_name, "spread");
        assert_eq!(part.partition_tag, "p1");
        assert_eq!(part.extra_params, whole.extra_params);
        assert_eq!(part.row_id_array, vec![100, 300]);
        assert_eq!(
            part.row_record_array,
            vec![
                whole.row_record_array[1].clone(),
                whole.row_record_array[3].clone()
            ]
        );
    }

    #[test]
    fn unpacked_ids_unknown_fields_and_binary_rows_survive() {
        let mut body = BytesMut::new();
        put_string(&mut body, COLLECTION_NAME, "bin");
        let row = RowRecord {
            float_data: Vec::new(),
            binary_data: Bytes::from_static(&[0xff, 0x01]),
        }
        .encode_to_vec();
        encode_key(ROW_RECORD, WireType::LengthDelimited, &mut body);
        encode_varint(row.len() as u64, &mut body);
        body.put_slice(&row);
        encode_key(ROW_ID, WireType::Varint, &mut body);
        encode_varint(42, &mut body);
        encode_key(99, WireType::ThirtyTwoBit, &mut body);
        body.put_u32_le(7);
        let encoded = EncodedInsert::parse(body.freeze()).unwrap();
        assert_eq!(encoded.ids, vec![42]);
        let part = encoded.part(&[0], &[42]);
        let again = EncodedInsert::parse(part.clone()).unwrap();
        assert_eq!(again.rest.len(), 1, "the unknown field is kept");
        let decoded = InsertParam::decode(part).unwrap();
        assert_eq!(
            decoded.row_record_array[0].binary_data.as_ref(),
            &[0xff, 0x01]
        );
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let good = insert(3, true).encode_to_vec();
        for cut in 1..good.len() {
            // A truncated message either parses (cut between fields) or says why.
            let _ = EncodedInsert::parse(Bytes::copy_from_slice(&good[..cut]));
        }
        assert!(EncodedInsert::parse(Bytes::from_static(&[0x12, 0x7f])).is_err());
        assert!(EncodedInsert::parse(Bytes::from_static(&[0x0b])).is_err());
        assert!(EncodedInsert::parse(Bytes::from_static(&[0x0a, 0x01, 0xff])).is_err());
    }

    proptest! {
        /// Any split of any insert decodes to exactly the rows it names.
        #[test]
        fn parts_equal_the_decoded_split(
            rows in 1usize..40,
            ids in any::<bool>(),
            picks in proptest::collection::vec(any::<bool>(), 40),
            noise in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let whole = insert(rows, ids);
            let encoded = EncodedInsert::parse(Bytes::from(whole.encode_to_vec())).unwrap();
            let positions: Vec<usize> = (0..rows).filter(|r| picks[*r]).collect();
            let part_ids: Vec<i64> = positions.iter().map(|p| *p as i64 + 1000).collect();
            let part = InsertParam::decode(encoded.part(&positions, &part_ids)).unwrap();
            let expected: Vec<RowRecord> =
                positions.iter().map(|p| whole.row_record_array[*p].clone()).collect();
            prop_assert_eq!(part.row_record_array, expected);
            prop_assert_eq!(part.row_id_array, part_ids);
            // Arbitrary bytes never panic.
            let _ = EncodedInsert::parse(Bytes::from(noise));
        }
    }
}
