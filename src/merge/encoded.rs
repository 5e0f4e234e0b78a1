//! Top-k merging straight on encoded `TopKQueryResult` replies.
//!
//! [`EncodedHits::parse`] reads one node's reply without copying its arrays:
//! it keeps the reply's `Bytes`, checks the protobuf framing and the layout
//! (the same errors as [`TopKHits::from_wire`]) and indexes where each row's
//! packed ids start. [`merge_encoded`] merges such replies and writes the
//! result as an encoded `TopKQueryResult`, byte for byte what prost would
//! encode for `merge(..).into_wire()`, without building any `TopKHits`.
//!
//! Layout choice: ids are varints, so a row cannot be found without reading
//! every id before it. One pass at parse (eight bytes at a time: it counts
//! terminator bytes, it does not decode) records each row's start offset
//! (`nq + 1` `u32`s) and, when the reply has any, how many 10-byte varints
//! (negative ids, among them the padding id -1) each row holds. Both sit in
//! an `Arc`, so [`EncodedHits::rows`] is O(1). With them the merge decodes only
//! the ids it takes (plus one head per part and row) and skips the rest of a
//! row: a clean row (distances strictly best first, padding only at its end)
//! is recognised from its distances, which are fixed 32-bit and need no
//! index, and from the varint counts; every other row is decoded whole and
//! handled exactly as `merge` handles it.

use std::sync::Arc;

use bytes::Bytes;

use super::{
    best_head, check_layout, clean_prefix, illegal_result, packed_rank, rank_key, sort_real_hits,
    strictly_ranked_le, TopKHits, EXHAUSTED, PADDING_ID,
};
use crate::status::MilvusError;
use crate::types::Order;
use crate::wire::ErrorCode;

/// The canonical (and only) encoding of the padding id -1 as a varint.
const PADDING_VARINT: [u8; 10] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];

/// The most nested groups an unknown field may hold (prost's recursion limit).
const MAX_DEPTH: u32 = 100;

/// One node's encoded `TopKQueryResult`, parsed but not copied, restricted to a window of rows.
///
/// Cloning is cheap (reference counts), and so is [`EncodedHits::rows`].
#[derive(Clone, Debug)]
pub struct EncodedHits {
    /// The ids of every row of the reply, packed varints: a slice of the reply
    /// (or, only when the reply split them over several fields, a copy joined).
    ids: Bytes,
    /// The distances of every row, little-endian `f32`s (sliced or joined like `ids`).
    distances: Bytes,
    status: Option<WireStatus>,
    stride: usize,
    index: Arc<RowIndex>,
    /// The window: rows `first..first + count` of the reply.
    first: usize,
    count: usize,
}

/// A decoded `Status`: error code and reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct WireStatus {
    code: i32,
    reason: String,
}

/// Where each row of a reply's packed ids starts.
#[derive(Debug, Default)]
struct RowIndex {
    /// Byte offset in `ids` of row `r`'s first id; `nq + 1` entries, the last `ids.len()`.
    starts: Vec<u32>,
    /// The number of 10-byte varints in each row; empty when the reply has none.
    long: Vec<u32>,
}

impl EncodedHits {
    /// Reads an encoded `TopKQueryResult`.
    ///
    /// Fails with `ILLEGAL_SEARCH_RESULT` when the bytes are not a valid encoding (where prost
    /// would fail to decode them) or when their arrays are misaligned (where
    /// [`TopKHits::from_wire`] fails, with the same reason). Unknown fields are skipped,
    /// repeated fields may come packed, unpacked or split, and a repeated `status` merges into
    /// the first, all as protobuf has it. The status is not checked: see [`Self::error`].
    pub fn parse(reply: Bytes) -> Result<EncodedHits, MilvusError> {
        let fields = scan_reply(&reply).map_err(|e| e.into_error())?;
        let ids = fields.ids.join(&reply);
        let distances = fields.distances.join(&reply);
        let n_distances = distances.len() / 4;
        // Row boundaries are placed while validating, with the stride the distances imply;
        // when the layout is wrong the error comes from `check_layout` below.
        let stride_hint = usize::try_from(fields.row_num)
            .ok()
            .filter(|&nq| nq > 0 && n_distances.is_multiple_of(nq))
            .map(|nq| (nq, n_distances / nq));
        let scanned = scan_ids(&ids, stride_hint).map_err(|e| e.into_error())?;
        let (nq, stride) = check_layout(fields.row_num, scanned.count, n_distances)?;
        let index = if nq == 0 {
            RowIndex {
                starts: vec![0],
                long: Vec::new(),
            }
        } else {
            scanned.index
        };
        if index.starts.len() != nq + 1 {
            return Err(illegal_result(format!(
                "{nq} rows of {stride} ids could not be delimited"
            )));
        }
        Ok(EncodedHits {
            ids,
            distances,
            status: fields.status,
            stride,
            index: Arc::new(index),
            first: 0,
            count: nq,
        })
    }

    /// The reply's error code; 0 (success) when it carries no status.
    pub fn status_code(&self) -> i32 {
        self.status.as_ref().map_or(0, |s| s.code)
    }

    /// The reply's error reason; empty when it carries no status.
    pub fn reason(&self) -> &str {
        self.status.as_ref().map_or("", |s| s.reason.as_str())
    }

    /// True when the reply had a `status` field at all.
    pub fn has_status(&self) -> bool {
        self.status.is_some()
    }

    /// The node's error when its status is not success (an unknown code becomes
    /// `UNEXPECTED_ERROR`), to be returned as the caller's own.
    pub fn error(&self) -> Option<MilvusError> {
        let status = self.status.as_ref().filter(|s| s.code != 0)?;
        let code = ErrorCode::try_from(status.code).unwrap_or(ErrorCode::UnexpectedError);
        Some(MilvusError::new(code, status.reason.clone()))
    }

    /// The number of rows (queries) in the window.
    pub fn nq(&self) -> usize {
        self.count
    }

    /// The number of entries per row.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Rows `first..first + count` of this window, sharing the bytes and the row index.
    ///
    /// Out of range is clamped: `first` past the end gives no rows, `count` is cut to the rows
    /// there are. Never panics.
    pub fn rows(&self, first: usize, count: usize) -> EncodedHits {
        let first = first.min(self.count);
        let count = count.min(self.count - first);
        EncodedHits {
            first: self.first + first,
            count,
            ..self.clone()
        }
    }

    /// The window decoded into vectors ([`TopKHits::empty`] for no rows), as
    /// [`TopKHits::from_wire`] would give it.
    pub fn to_hits(&self) -> TopKHits {
        if self.count == 0 {
            return TopKHits::empty();
        }
        let len = self.count * self.stride;
        let mut hits = TopKHits {
            nq: self.count,
            stride: self.stride,
            ids: Vec::with_capacity(len),
            distances: Vec::with_capacity(len),
        };
        let start = self.row_start(self.first);
        let end = self.row_start(self.first + self.count);
        let mut reader = VarintReader::new(&self.ids, start);
        while reader.pos < end {
            match reader.next() {
                Some((value, _, _)) => hits.ids.push(value as i64),
                None => break,
            }
        }
        let base = self.first * self.stride;
        hits.distances
            .extend((base..base + len).map(|i| read_f32(&self.distances, i)));
        hits
    }

    fn row_start(&self, row: usize) -> usize {
        self.index.starts.get(row).map_or(0, |&s| s as usize)
    }

    fn long_varints(&self, row: usize) -> usize {
        self.index.long.get(row).map_or(0, |&n| n as usize)
    }

    /// The mean encoded length of the window's ids, rounded up (at least 1).
    fn bytes_per_id(&self) -> usize {
        let ids = self.count * self.stride;
        let bytes = self.row_start(self.first + self.count) - self.row_start(self.first);
        bytes.div_ceil(ids.max(1)).max(1)
    }
}

/// The distance at entry `i`, or NaN past the end (never reached on parsed replies).
fn read_f32(distances: &[u8], i: usize) -> f32 {
    match distances.get(4 * i..4 * i + 4) {
        Some(&[a, b, c, d]) => f32::from_le_bytes([a, b, c, d]),
        _ => f32::NAN,
    }
}

/// Why bytes are not a `TopKQueryResult`, and where.
#[derive(Debug)]
struct DecodeFailure {
    what: &'static str,
    at: usize,
}

impl DecodeFailure {
    fn into_error(self) -> MilvusError {
        illegal_result(format!(
            "undecodable TopKQueryResult: {} at byte {}",
            self.what, self.at
        ))
    }
}

fn fail<T>(what: &'static str, at: usize) -> Result<T, DecodeFailure> {
    Err(DecodeFailure { what, at })
}

/// The byte ranges one repeated field's values came in.
#[derive(Debug, Default)]
struct Pieces(Vec<std::ops::Range<usize>>);

impl Pieces {
    /// The values as one buffer: a slice of `reply` when they came in one piece.
    fn join(&self, reply: &Bytes) -> Bytes {
        match self.0.as_slice() {
            [] => Bytes::new(),
            [one] => reply.slice(one.clone()),
            many => {
                let mut joined = Vec::with_capacity(many.iter().map(|r| r.len()).sum());
                for range in many {
                    joined.extend_from_slice(&reply[range.clone()]);
                }
                Bytes::from(joined)
            }
        }
    }
}

#[derive(Debug, Default)]
struct ReplyFields {
    status: Option<WireStatus>,
    row_num: i64,
    ids: Pieces,
    distances: Pieces,
}

/// Reads a varint as prost does: at most 10 bytes, the 10th at most 1.
fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, DecodeFailure> {
    let start = *pos;
    let mut value = 0u64;
    for i in 0..10 {
        let Some(&byte) = buf.get(start + i) else {
            return fail("truncated varint", start);
        };
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            if i == 9 && byte >= 2 {
                return fail("varint overflows 64 bits", start);
            }
            *pos = start + i + 1;
            return Ok(value);
        }
    }
    fail("varint longer than 10 bytes", start)
}

/// Reads a field key: (field number, wire type).
fn read_key(buf: &[u8], pos: &mut usize) -> Result<(u32, u8), DecodeFailure> {
    let at = *pos;
    let key = read_varint(buf, pos)?;
    let Ok(key) = u32::try_from(key) else {
        return fail("field key out of range", at);
    };
    let wire_type = (key & 7) as u8;
    if wire_type > 5 {
        return fail("invalid wire type", at);
    }
    if key >> 3 == 0 {
        return fail("field number 0", at);
    }
    Ok((key >> 3, wire_type))
}

/// The range of `len` bytes at `pos`, advancing past them.
fn take(buf: &[u8], pos: &mut usize, len: u64) -> Result<std::ops::Range<usize>, DecodeFailure> {
    let start = *pos;
    match usize::try_from(len) {
        Ok(len) if len <= buf.len() - start => {
            *pos = start + len;
            Ok(start..start + len)
        }
        _ => fail("field runs past the end", start),
    }
}

fn take_delimited(buf: &[u8], pos: &mut usize) -> Result<std::ops::Range<usize>, DecodeFailure> {
    let len = read_varint(buf, pos)?;
    take(buf, pos, len)
}

/// Skips a field of an unknown number, groups included, as prost does.
fn skip_field(
    buf: &[u8],
    pos: &mut usize,
    wire_type: u8,
    field: u32,
    depth: u32,
) -> Result<(), DecodeFailure> {
    if depth >= MAX_DEPTH {
        return fail("groups nested too deep", *pos);
    }
    match wire_type {
        0 => read_varint(buf, pos).map(drop),
        1 => take(buf, pos, 8).map(drop),
        2 => take_delimited(buf, pos).map(drop),
        3 => loop {
            let at = *pos;
            if at >= buf.len() {
                return fail("unterminated group", at);
            }
            let (inner, inner_type) = read_key(buf, pos)?;
            if inner_type == 4 {
                if inner != field {
                    return fail("mismatched end of group", at);
                }
                return Ok(());
            }
            skip_field(buf, pos, inner_type, inner, depth + 1)?;
        },
        5 => take(buf, pos, 4).map(drop),
        _ => fail("unexpected end of group", *pos),
    }
}

fn wrong_wire_type<T>(at: usize) -> Result<T, DecodeFailure> {
    fail("wrong wire type for a known field", at)
}

/// Reads the fields of the whole reply (framing only: the ids are validated by `scan_ids`).
fn scan_reply(buf: &[u8]) -> Result<ReplyFields, DecodeFailure> {
    let mut fields = ReplyFields::default();
    let mut pos = 0;
    while pos < buf.len() {
        let at = pos;
        let (field, wire_type) = read_key(buf, &mut pos)?;
        match (field, wire_type) {
            (1, 2) => {
                let range = take_delimited(buf, &mut pos)?;
                let status = fields.status.get_or_insert_with(WireStatus::default);
                merge_status(&buf[range.clone()], range.start, status)?;
            }
            (2, 0) => fields.row_num = read_varint(buf, &mut pos)? as i64,
            (3, 2) => {
                let range = take_delimited(buf, &mut pos)?;
                if range.end > range.start && buf[range.end - 1] >= 0x80 {
                    return fail("packed ids end inside a varint", range.end - 1);
                }
                fields.ids.0.push(range);
            }
            (3, 0) => {
                let start = pos;
                read_varint(buf, &mut pos)?;
                fields.ids.0.push(start..pos);
            }
            (4, 2) => {
                let range = take_delimited(buf, &mut pos)?;
                if !range.len().is_multiple_of(4) {
                    return fail("packed distances not a whole number of floats", range.start);
                }
                fields.distances.0.push(range);
            }
            (4, 5) => {
                let range = take(buf, &mut pos, 4)?;
                fields.distances.0.push(range);
            }
            (1..=4, _) => return wrong_wire_type(at),
            _ => skip_field(buf, &mut pos, wire_type, field, 0)?,
        }
    }
    Ok(fields)
}

/// Merges one encoded `Status` (at `offset` of the reply) into `status`.
fn merge_status(buf: &[u8], offset: usize, status: &mut WireStatus) -> Result<(), DecodeFailure> {
    let relocate = |e: DecodeFailure| DecodeFailure {
        what: e.what,
        at: e.at + offset,
    };
    let mut pos = 0;
    while pos < buf.len() {
        let at = pos;
        let (field, wire_type) = read_key(buf, &mut pos).map_err(relocate)?;
        match (field, wire_type) {
            (1, 0) => status.code = read_varint(buf, &mut pos).map_err(relocate)? as i32,
            (2, 2) => {
                let range = take_delimited(buf, &mut pos).map_err(relocate)?;
                match std::str::from_utf8(&buf[range.clone()]) {
                    Ok(reason) => status.reason = reason.to_owned(),
                    Err(_) => return fail("status reason is not UTF-8", range.start + offset),
                }
            }
            (1..=2, _) => return wrong_wire_type(at + offset),
            _ => skip_field(buf, &mut pos, wire_type, field, 1).map_err(relocate)?,
        }
    }
    Ok(())
}

/// The result of validating the packed ids.
struct ScannedIds {
    count: usize,
    index: RowIndex,
}

const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// Validates packed varints (each at most 10 bytes, a 10th byte at most 1, as prost reads
/// them), counts them and, with `rows = Some((nq, stride))`, records where each row starts
/// and how many 10-byte varints it has. Eight bytes at a time: a varint ends at every byte
/// with the high bit clear, so counting ids is a popcount.
fn scan_ids(ids: &[u8], rows: Option<(usize, usize)>) -> Result<ScannedIds, DecodeFailure> {
    if ids.len() > u32::MAX as usize {
        return fail("ids too long", 0);
    }
    let (nq, stride) = rows.unwrap_or((0, 0));
    let mut index = RowIndex {
        starts: Vec::with_capacity(nq + 1),
        long: Vec::new(),
    };
    index.starts.push(0);
    if stride == 0 {
        // Every row is empty (or the layout is wrong and only the count matters).
        index.starts.resize(nq + 1, 0);
    }
    let mut count = 0usize;
    // The id count at which the current row ends; usize::MAX when rows are not tracked.
    let mut boundary = if stride == 0 { usize::MAX } else { stride };
    // Continuation bytes since the last terminator.
    let mut run = 0usize;
    let mut words = ids.chunks_exact(8);
    let mut base = 0usize;
    for chunk in &mut words {
        let Ok(word) = <[u8; 8]>::try_from(chunk).map(u64::from_le_bytes) else {
            continue;
        };
        let ends = !word & HIGH_BITS;
        if ends == 0 {
            run += 8;
            if run >= 10 {
                return fail("varint longer than 10 bytes", base + 8 - run);
            }
            base += 8;
            continue;
        }
        let first_end = (ends.trailing_zeros() / 8) as usize;
        if run + first_end >= 9 {
            if run + first_end > 9 {
                return fail("varint longer than 10 bytes", base + first_end - 9);
            }
            if chunk[first_end] >= 2 {
                return fail("varint overflows 64 bits", base + first_end - 9);
            }
            note_long(&mut index.long, count, nq, stride);
        }
        let n = ends.count_ones() as usize;
        while count + n >= boundary {
            let mut bits = ends;
            for _ in 1..boundary - count {
                bits &= bits - 1;
            }
            let end = (bits.trailing_zeros() / 8) as usize;
            index.starts.push((base + end + 1) as u32);
            boundary = if index.starts.len() > nq {
                usize::MAX
            } else {
                boundary + stride
            };
        }
        count += n;
        run = 7 - ((63 - ends.leading_zeros()) / 8) as usize;
        base += 8;
    }
    for (i, &byte) in words.remainder().iter().enumerate() {
        let at = base + i;
        if byte >= 0x80 {
            run += 1;
            if run >= 10 {
                return fail("varint longer than 10 bytes", at + 1 - run);
            }
            continue;
        }
        if run == 9 {
            if byte >= 2 {
                return fail("varint overflows 64 bits", at - 9);
            }
            note_long(&mut index.long, count, nq, stride);
        }
        run = 0;
        count += 1;
        if count == boundary {
            index.starts.push((at + 1) as u32);
            boundary = if index.starts.len() > nq {
                usize::MAX
            } else {
                boundary + stride
            };
        }
    }
    if run != 0 {
        return fail("ids end inside a varint", ids.len() - run);
    }
    Ok(ScannedIds { count, index })
}

/// Counts a 10-byte varint, the id numbered `id` (from 0), in its row.
fn note_long(long: &mut Vec<u32>, id: usize, nq: usize, stride: usize) {
    if stride == 0 {
        return;
    }
    let row = id / stride;
    if row >= nq {
        return;
    }
    if long.is_empty() {
        long.resize(nq, 0);
    }
    long[row] += 1;
}

/// Sequential reads of validated packed varints.
struct VarintReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> VarintReader<'a> {
    fn new(bytes: &'a [u8], pos: usize) -> Self {
        Self { bytes, pos }
    }

    /// The next value, its raw bytes as a little-endian word and their count when the
    /// encoding is canonical and at most 8 bytes (else a count of 0); `None` at the end.
    #[inline(always)]
    fn next(&mut self) -> Option<(u64, u64, usize)> {
        if let Some(chunk) = self.bytes.get(self.pos..self.pos + 8) {
            let word = u64::from_le_bytes(<[u8; 8]>::try_from(chunk).ok()?);
            let ends = !word & HIGH_BITS;
            if ends != 0 {
                let last_bit = ends.trailing_zeros();
                let len = (last_bit / 8 + 1) as usize;
                let raw = word & (u64::MAX >> (63 - last_bit));
                let mut x = raw & 0x7f7f_7f7f_7f7f_7f7f;
                x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
                x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
                x = (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4);
                self.pos += len;
                // Canonical: one byte, or a last byte that is not zero.
                let canonical = len == 1 || (raw >> (8 * (len - 1))) != 0;
                return Some((x, raw, if canonical { len } else { 0 }));
            }
        }
        self.next_slow()
    }

    #[cold]
    fn next_slow(&mut self) -> Option<(u64, u64, usize)> {
        if self.pos >= self.bytes.len() {
            return None;
        }
        let value = read_varint(self.bytes, &mut self.pos).ok()?;
        Some((value, 0, 0))
    }
}

/// Appends the canonical varint of `value` to `out`.
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Room before the ids for the reply's header: status (2), row_num (1 + 10), ids key and
/// length (1 + 10).
const HEADROOM: usize = 24;

/// Slack past the written ids, so an id is always stored as one 8-byte word.
const SLACK: usize = 16;

/// The merged ids, written as packed varints behind room for the header.
struct IdWriter {
    buf: Vec<u8>,
    pos: usize,
}

impl IdWriter {
    /// Room for about `estimate` bytes of ids and then `tail` bytes (the distances), zeroed
    /// lazily by the allocator: pages the reply does not reach are never touched.
    fn new(estimate: usize, tail: usize) -> Self {
        Self {
            buf: vec![0; HEADROOM + estimate + SLACK + tail],
            pos: HEADROOM,
        }
    }

    /// Makes room for `entries` more ids of at most 10 bytes each.
    fn reserve(&mut self, entries: usize) {
        let needed = self.pos + entries * 10 + SLACK;
        if needed > self.buf.len() {
            let grown = (self.buf.len() + self.buf.len() / 2).max(needed);
            self.buf.resize(grown, 0);
        }
    }

    /// Writes one id; `raw`/`raw_len` are its input bytes when canonical and at most 8.
    #[inline(always)]
    fn put(&mut self, id: i64, raw: u64, raw_len: usize) {
        if raw_len != 0 {
            if let Some(slot) = self.buf.get_mut(self.pos..self.pos + 8) {
                slot.copy_from_slice(&raw.to_le_bytes());
                self.pos += raw_len;
                return;
            }
        }
        self.put_slow(id);
    }

    #[cold]
    fn put_slow(&mut self, id: i64) {
        let mut encoded = [0u8; 10];
        let mut value = id as u64;
        let mut len = 0;
        while value >= 0x80 {
            encoded[len] = (value as u8) | 0x80;
            value >>= 7;
            len += 1;
        }
        encoded[len] = value as u8;
        self.put_bytes(&encoded[..=len]);
    }

    fn put_bytes(&mut self, bytes: &[u8]) {
        if let Some(slot) = self.buf.get_mut(self.pos..self.pos + bytes.len()) {
            slot.copy_from_slice(bytes);
            self.pos += bytes.len();
        }
    }

    /// The whole reply: header, these ids, the distances.
    fn finish(mut self, nq: usize, distances: &[u8]) -> Bytes {
        let ids_len = self.pos - HEADROOM;
        let mut header = Vec::with_capacity(HEADROOM);
        header.extend_from_slice(&[0x0a, 0x00, 0x10]);
        put_varint(&mut header, nq as u64);
        header.push(0x1a);
        put_varint(&mut header, ids_len as u64);
        let start = HEADROOM - header.len();
        self.buf[start..HEADROOM].copy_from_slice(&header);
        self.buf.truncate(self.pos);
        self.buf.reserve_exact(1 + 10 + distances.len());
        self.buf.push(0x22);
        put_varint(&mut self.buf, distances.len() as u64);
        self.buf.extend_from_slice(distances);
        Bytes::from(self.buf).slice(start..)
    }
}

/// The encoding of an empty result: status OK, nothing else (what prost writes for
/// `TopKHits::empty().into_wire()`).
fn empty_reply() -> Bytes {
    Bytes::from_static(&[0x0a, 0x00])
}

/// [`super::merge`] on encoded replies, with the result encoded: the bytes prost writes for
/// `merge(parts.to_hits(), topk, order)?.into_wire()`, the same rules and ties, the same
/// errors (a misaligned part cannot occur: `parse` rejected it). The parts' statuses are
/// not looked at: check them first. Only the ids a merged row takes are decoded.
pub fn merge_encoded(
    parts: &[EncodedHits],
    topk: usize,
    order: Order,
) -> Result<Bytes, MilvusError> {
    let parts: Vec<&EncodedHits> = parts.iter().filter(|p| p.nq() != 0).collect();
    let Some(nq) = parts.first().map(|p| p.nq()) else {
        return Ok(empty_reply());
    };
    if let Some(other) = parts.iter().find(|p| p.nq() != nq) {
        return Err(illegal_result(format!(
            "partial results disagree on the number of queries: {nq} and {}",
            other.nq()
        )));
    }
    let strides_total = parts
        .iter()
        .fold(0usize, |total, p| total.saturating_add(p.stride));
    let stride = topk.min(strides_total);
    if stride == 0 {
        return Ok(empty_reply());
    }
    let entries = nq.saturating_mul(stride);
    // The ids taken are a sample of the inputs': their mean length, plus an eighth.
    let per_id = parts.iter().map(|p| p.bytes_per_id()).max().unwrap_or(1);
    let estimate = entries.saturating_mul(per_id).saturating_add(entries / 8);
    let distances_len = entries.saturating_mul(4);
    let mut ids = IdWriter::new(estimate.min(entries.saturating_mul(10)), 11 + distances_len);
    let mut distances = Vec::with_capacity(distances_len);
    let mut merger = EncodedMerger::new(order, parts.len());
    let worst = order.worst().to_le_bytes();
    for q in 0..nq {
        ids.reserve(stride);
        let taken = merger.merge_row(&parts, q, stride, &mut ids, &mut distances);
        for _ in taken..stride {
            ids.put_bytes(&PADDING_VARINT);
            distances.extend_from_slice(&worst);
        }
    }
    Ok(ids.finish(nq, &distances))
}

/// Where one part's row is read from.
#[derive(Clone, Copy)]
enum Source {
    /// Straight from the reply: the varints at `pos`, the distance entry `dist`, `left` real
    /// hits after the head.
    Reply {
        pos: usize,
        dist: usize,
        left: usize,
    },
    /// `EncodedMerger::hits[next..end]`: the row had to be decoded (and maybe sorted).
    Decoded { next: usize, end: usize },
}

/// One part's row in the merge: its next hit (the head) and where the rest is.
#[derive(Clone, Copy)]
struct Cursor {
    source: Source,
    id: i64,
    distance: f32,
    /// The head's input bytes when canonical (see `VarintReader::next`).
    raw: u64,
    raw_len: usize,
}

/// Buffers reused over the rows of one encoded merge.
struct EncodedMerger {
    order: Order,
    cursors: Vec<Cursor>,
    /// `packed_rank` of each cursor's head, or `EXHAUSTED`.
    heads: Vec<u128>,
    /// Rows that are not clean, decoded (and sorted).
    hits: Vec<(i64, f32)>,
    row_ids: Vec<i64>,
    row_distances: Vec<f32>,
}

impl EncodedMerger {
    fn new(order: Order, parts: usize) -> Self {
        Self {
            order,
            cursors: Vec::with_capacity(parts),
            heads: Vec::with_capacity(parts),
            hits: Vec::new(),
            row_ids: Vec::new(),
            row_distances: Vec::new(),
        }
    }

    /// Writes the merged real hits of row `q` (at most `stride`) and returns how many.
    fn merge_row(
        &mut self,
        parts: &[&EncodedHits],
        q: usize,
        stride: usize,
        ids: &mut IdWriter,
        distances: &mut Vec<u8>,
    ) -> usize {
        self.cursors.clear();
        self.heads.clear();
        self.hits.clear();
        for part in parts {
            let source = self.open_row(part, part.first + q);
            let mut cursor = Cursor {
                source,
                id: PADDING_ID,
                distance: 0.0,
                raw: 0,
                raw_len: 0,
            };
            let head = self.advance(part, &mut cursor);
            self.cursors.push(cursor);
            self.heads.push(head);
        }
        let mut taken = 0;
        while taken < stride {
            let Some(best) = best_head(&self.heads) else {
                break;
            };
            let (Some(cursor), Some(part), Some(head)) = (
                self.cursors.get_mut(best),
                parts.get(best),
                self.heads.get_mut(best),
            ) else {
                break;
            };
            ids.put(cursor.id, cursor.raw, cursor.raw_len);
            distances.extend_from_slice(&cursor.distance.to_le_bytes());
            taken += 1;
            *head = Self::advance_with(self.order, &self.hits, part, cursor);
        }
        taken
    }

    /// Where row `row` of `part` is read from: the reply itself when the row is clean, else
    /// its real hits decoded into `hits` (sorted when the row was not).
    fn open_row(&mut self, part: &EncodedHits, row: usize) -> Source {
        let stride = part.stride;
        let start = part.row_start(row);
        let end = part.row_start(row + 1);
        let long = part.long_varints(row);
        let mut padding = 0;
        if long > 0 {
            // A -1 is always 10 bytes: trailing ones are the row's padding, any other 10-byte
            // varint (another -1, or a negative id) sends the row to the exact path below.
            while padding < long
                && end >= start + 10 * (padding + 1)
                && part.ids.get(end - 10 * (padding + 1)..end - 10 * padding)
                    == Some(&PADDING_VARINT[..])
            {
                padding += 1;
            }
        }
        let real = stride - padding.min(stride);
        let dist = row * stride;
        if padding == long
            && distances_strictly_ranked(
                self.order,
                &part.distances,
                dist,
                real,
                &mut self.row_distances,
            )
        {
            return Source::Reply {
                pos: start,
                dist,
                left: real,
            };
        }
        // Decoded whole and handled exactly as `merge` handles a row.
        self.row_ids.clear();
        self.row_distances.clear();
        let mut reader = VarintReader::new(&part.ids, start);
        while reader.pos < end {
            match reader.next() {
                Some((value, _, _)) => self.row_ids.push(value as i64),
                None => break,
            }
        }
        self.row_distances
            .extend((dist..dist + stride).map(|i| read_f32(&part.distances, i)));
        let first = self.hits.len();
        match clean_prefix(self.order, &self.row_ids, &self.row_distances) {
            Some(real) => self.hits.extend(
                self.row_ids[..real]
                    .iter()
                    .zip(&self.row_distances)
                    .map(|(&id, &d)| (id, d)),
            ),
            None => sort_real_hits(
                self.order,
                &self.row_ids,
                &self.row_distances,
                &mut self.hits,
            ),
        }
        Source::Decoded {
            next: first,
            end: self.hits.len(),
        }
    }

    fn advance(&self, part: &EncodedHits, cursor: &mut Cursor) -> u128 {
        Self::advance_with(self.order, &self.hits, part, cursor)
    }

    /// Moves the cursor's head to its next hit and returns that hit's rank (`EXHAUSTED` when
    /// there is none).
    #[inline(always)]
    fn advance_with(
        order: Order,
        hits: &[(i64, f32)],
        part: &EncodedHits,
        cursor: &mut Cursor,
    ) -> u128 {
        match &mut cursor.source {
            Source::Reply { pos, dist, left } => {
                if *left == 0 {
                    return EXHAUSTED;
                }
                let mut reader = VarintReader::new(&part.ids, *pos);
                let Some((value, raw, raw_len)) = reader.next() else {
                    *left = 0;
                    return EXHAUSTED;
                };
                *pos = reader.pos;
                *left -= 1;
                cursor.id = value as i64;
                cursor.raw = raw;
                cursor.raw_len = raw_len;
                cursor.distance = read_f32(&part.distances, *dist);
                *dist += 1;
            }
            Source::Decoded { next, end } => {
                if *next >= *end {
                    return EXHAUSTED;
                }
                let Some(&(id, distance)) = hits.get(*next) else {
                    return EXHAUSTED;
                };
                *next += 1;
                cursor.id = id;
                cursor.distance = distance;
                cursor.raw_len = 0;
            }
        }
        packed_rank(rank_key(order, cursor.distance), cursor.id)
    }
}

/// True when the `len` distances from entry `first` have strictly increasing rank keys: the
/// row is then sorted by the whole rank whatever its ids. `scratch` is a buffer to reuse.
fn distances_strictly_ranked(
    order: Order,
    distances: &[u8],
    first: usize,
    len: usize,
    scratch: &mut Vec<f32>,
) -> bool {
    let Some(bytes) = distances.get(4 * first..4 * (first + len)) else {
        return false;
    };
    strictly_ranked_le(order, bytes, scratch)
}

#[cfg(test)]
mod tests {
    //! `merge_encoded` and `EncodedHits` against their definition: prost's
    //! decoding of the same bytes, `TopKHits::from_wire` and `merge`.

    use super::*;
    use crate::merge::merge;
    use crate::merge::tests::{any_distance, order, split};
    use crate::wire::{Status, TopKQueryResult};
    use proptest::prelude::*;
    use prost::Message;

    /// What `merge_encoded` must write: prost's encoding of `merge` over prost's decoding.
    fn expected(replies: &[Bytes], topk: usize, order: Order) -> Result<Vec<u8>, MilvusError> {
        let parts = replies
            .iter()
            .map(|r| TopKHits::from_wire(TopKQueryResult::decode(r.clone()).unwrap()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(merge(parts, topk, order)?.into_wire().encode_to_vec())
    }

    /// Hits compared bit for bit (NaN equal to itself, -0.0 not equal to 0.0).
    fn bits(hits: &TopKHits) -> (usize, usize, Vec<i64>, Vec<u32>) {
        let distances = hits.distances.iter().map(|d| d.to_bits()).collect();
        (hits.nq, hits.stride, hits.ids.clone(), distances)
    }

    fn parsed(replies: &[Bytes]) -> Vec<EncodedHits> {
        replies
            .iter()
            .map(|r| EncodedHits::parse(r.clone()).unwrap())
            .collect()
    }

    /// Hits with the ids and distances the wire can carry: negative and huge ids (10-byte
    /// varints), the padding id inside rows, NaN, -0.0, infinities, and many ties.
    fn wide_hit_set() -> impl Strategy<Value = Vec<(i64, f32)>> {
        let id = prop_oneof![
            6 => 0i64..300,
            1 => any::<i64>(),
            1 => Just(-1i64),
            1 => -5i64..0,
        ];
        prop::collection::vec((id, any_distance()), 0..30)
    }

    /// One way among those protobuf allows to write a `TopKQueryResult`.
    #[derive(Clone, Copy, Debug)]
    struct Variant {
        ids_unpacked: bool,
        ids_split: bool,
        distances_unpacked: bool,
        status_last: bool,
        unknown_fields: bool,
        overlong_ids: bool,
    }

    fn variant() -> impl Strategy<Value = Variant> {
        (any::<[bool; 6]>()).prop_map(|b| Variant {
            ids_unpacked: b[0],
            ids_split: b[1],
            distances_unpacked: b[2],
            status_last: b[3],
            unknown_fields: b[4],
            overlong_ids: b[5],
        })
    }

    fn key(out: &mut Vec<u8>, field: u64, wire_type: u64) {
        put_varint(out, (field << 3) | wire_type);
    }

    fn id_bytes(id: i64, overlong: bool) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, id as u64);
        // A non-canonical encoding (a zero continuation byte) that prost still reads.
        if overlong && out.len() < 10 {
            let last = out.len() - 1;
            out[last] |= 0x80;
            out.push(0);
        }
        out
    }

    /// Encodes `result` as `v` says; prost decodes every variant to `result`.
    fn encode_variant(result: &TopKQueryResult, v: Variant) -> Vec<u8> {
        let mut out = Vec::new();
        let status = |out: &mut Vec<u8>| {
            if let Some(status) = &result.status {
                key(out, 1, 2);
                let body = status.encode_to_vec();
                put_varint(out, body.len() as u64);
                out.extend_from_slice(&body);
            }
        };
        if !v.status_last {
            status(&mut out);
        }
        if v.unknown_fields {
            key(&mut out, 15, 0);
            put_varint(&mut out, 12345);
            key(&mut out, 9, 2);
            put_varint(&mut out, 3);
            out.extend_from_slice(b"abc");
        }
        if result.row_num != 0 {
            key(&mut out, 2, 0);
            put_varint(&mut out, result.row_num as u64);
        }
        let ids: Vec<Vec<u8>> = result
            .ids
            .iter()
            .map(|&id| id_bytes(id, v.overlong_ids))
            .collect();
        if v.ids_unpacked {
            for id in &ids {
                key(&mut out, 3, 0);
                out.extend_from_slice(id);
            }
        } else if !ids.is_empty() {
            let cut = if v.ids_split {
                ids.len() / 2
            } else {
                ids.len()
            };
            for piece in [&ids[..cut], &ids[cut..]] {
                if piece.is_empty() {
                    continue;
                }
                let body: Vec<u8> = piece.concat();
                key(&mut out, 3, 2);
                put_varint(&mut out, body.len() as u64);
                out.extend_from_slice(&body);
            }
        }
        if v.distances_unpacked {
            for d in &result.distances {
                key(&mut out, 4, 5);
                out.extend_from_slice(&d.to_le_bytes());
            }
        } else if !result.distances.is_empty() {
            key(&mut out, 4, 2);
            put_varint(&mut out, 4 * result.distances.len() as u64);
            for d in &result.distances {
                out.extend_from_slice(&d.to_le_bytes());
            }
        }
        if v.status_last {
            status(&mut out);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The encoded merge writes exactly prost's bytes of `merge`, for any split of any
        /// hits (ties, NaN, padding inside rows, unsorted rows), either order, any topk.
        #[test]
        fn merge_encoded_writes_the_bytes_of_merge(
            queries in prop::collection::vec(wide_hit_set(), 1..5),
            assignment in prop::collection::vec(0usize..8, 1..40),
            part_count in 1usize..9,
            extra_padding in prop::collection::vec(0usize..3, 1..4),
            scramble in prop::collection::vec(prop::bool::weighted(0.2), 1..4),
            topk in 1usize..40,
            order in order(),
        ) {
            let parts = split(&queries, &assignment, part_count, &extra_padding, &scramble, order);
            let replies: Vec<Bytes> = parts
                .into_iter()
                .map(|p| Bytes::from(p.into_wire().encode_to_vec()))
                .collect();
            let want = expected(&replies, topk, order).unwrap();
            let got = merge_encoded(&parsed(&replies), topk, order).unwrap();
            prop_assert_eq!(got.as_ref(), want.as_slice());
        }

        /// The same over windows of rows (what a coalesced call hands each search).
        #[test]
        fn windows_merge_as_their_rows(
            queries in prop::collection::vec(wide_hit_set(), 1..6),
            assignment in prop::collection::vec(0usize..4, 1..30),
            first in 0usize..7,
            count in 0usize..7,
            topk in 1usize..30,
            order in order(),
        ) {
            let parts = split(&queries, &assignment, 4, &[0, 1], &[false], order);
            let windows: Vec<TopKHits> = parts
                .iter()
                .map(|p| {
                    let first = first.min(p.nq);
                    let count = count.min(p.nq - first);
                    TopKHits {
                        nq: count,
                        stride: if count == 0 { 0 } else { p.stride },
                        ids: p.ids[first * p.stride..(first + count) * p.stride].to_vec(),
                        distances: p.distances[first * p.stride..(first + count) * p.stride]
                            .to_vec(),
                    }
                })
                .collect();
            let replies: Vec<Bytes> = parts
                .into_iter()
                .map(|p| Bytes::from(p.into_wire().encode_to_vec()))
                .collect();
            let encoded: Vec<EncodedHits> =
                parsed(&replies).iter().map(|p| p.rows(first, count)).collect();
            for (window, part) in windows.iter().zip(&encoded) {
                let want = TopKHits::from_wire(window.clone().into_wire()).unwrap();
                prop_assert_eq!(bits(&part.to_hits()), bits(&want));
            }
            let want = merge(windows, topk, order).unwrap().into_wire().encode_to_vec();
            let got = merge_encoded(&encoded, topk, order).unwrap();
            prop_assert_eq!(got.as_ref(), want.as_slice());
        }

        /// Every encoding protobuf allows (unpacked, split, status last, unknown fields,
        /// overlong varints) parses to what prost decodes, and merges alike.
        #[test]
        fn every_valid_encoding_reads_as_prost_reads_it(
            hits in prop::collection::vec((prop_oneof![0i64..100, any::<i64>()], any_distance()), 0..24),
            nq in 1usize..4,
            code in 0i32..3,
            v in variant(),
            topk in 1usize..12,
            order in order(),
        ) {
            let stride = hits.len() / nq;
            let hits = &hits[..nq * stride];
            let result = TopKQueryResult {
                status: Some(Status { error_code: code, reason: format!("r{code}") }),
                row_num: if stride == 0 { 0 } else { nq as i64 },
                ids: hits.iter().map(|h| h.0).collect(),
                distances: hits.iter().map(|h| h.1).collect(),
            };
            let bytes = Bytes::from(encode_variant(&result, v));
            let decoded = TopKQueryResult::decode(bytes.clone()).unwrap();
            let parsed = EncodedHits::parse(bytes.clone()).unwrap();
            prop_assert_eq!(parsed.status_code(), code);
            prop_assert_eq!(parsed.reason(), format!("r{code}"));
            prop_assert_eq!(bits(&parsed.to_hits()), bits(&TopKHits::from_wire(decoded).unwrap()));
            let want = expected(std::slice::from_ref(&bytes), topk, order).unwrap();
            let got = merge_encoded(&[parsed], topk, order).unwrap();
            prop_assert_eq!(got.as_ref(), want.as_slice());
        }

        /// Damaged bytes: `parse` accepts exactly what prost decodes and `from_wire`
        /// accepts, reads it alike, and otherwise fails with ILLEGAL_SEARCH_RESULT (and
        /// `from_wire`'s own reason when prost did decode). Never a panic.
        #[test]
        fn damaged_replies_are_rejected_as_prost_and_from_wire_reject_them(
            hits in prop::collection::vec((prop_oneof![0i64..100, any::<i64>()], any_distance()), 1..12),
            v in variant(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
            truncate in prop::option::of(any::<prop::sample::Index>()),
        ) {
            let result = TopKQueryResult {
                status: Some(Status { error_code: 0, reason: String::new() }),
                row_num: 1,
                ids: hits.iter().map(|h| h.0).collect(),
                distances: hits.iter().map(|h| h.1).collect(),
            };
            let mut bytes = encode_variant(&result, v);
            for (at, byte, how) in edits {
                let i = at.index(bytes.len() + 1);
                match how {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ if i < bytes.len() => { bytes.remove(i); }
                    _ => {}
                }
            }
            if let Some(at) = truncate {
                bytes.truncate(at.index(bytes.len() + 1));
            }
            let bytes = Bytes::from(bytes);
            let reference = TopKQueryResult::decode(bytes.clone());
            let parsed = EncodedHits::parse(bytes.clone());
            match (reference, parsed) {
                (Ok(decoded), Ok(parsed)) => {
                    let code = decoded.status.as_ref().map_or(0, |s| s.error_code);
                    prop_assert_eq!(parsed.status_code(), code);
                    prop_assert_eq!(parsed.has_status(), decoded.status.is_some());
                    let want = TopKHits::from_wire(decoded);
                    prop_assert!(want.is_ok(), "parse accepted what from_wire refuses: {:?}", want.err());
                    if let Ok(want) = want {
                        prop_assert_eq!(bits(&parsed.to_hits()), bits(&want));
                    }
                }
                (Ok(decoded), Err(e)) => {
                    prop_assert_eq!(e.code, ErrorCode::IllegalSearchResult);
                    let why = TopKHits::from_wire(decoded);
                    prop_assert!(why.is_err(), "parse refused what prost and from_wire accept: {}", e.reason);
                    prop_assert_eq!(why.err().map(|w| w.reason), Some(e.reason));
                }
                (Err(_), Ok(_)) => prop_assert!(false, "parse accepted what prost refuses"),
                (Err(_), Err(e)) => prop_assert_eq!(e.code, ErrorCode::IllegalSearchResult),
            }
        }
    }

    #[test]
    fn nodes_disagreeing_on_nq_is_an_illegal_search_result() {
        let one = |nq: usize| {
            let hits = TopKHits {
                nq,
                stride: 1,
                ids: (0..nq as i64).collect(),
                distances: vec![1.0; nq],
            };
            EncodedHits::parse(Bytes::from(hits.into_wire().encode_to_vec())).unwrap()
        };
        let e = merge_encoded(&[one(2), one(3)], 5, Order::Ascending).unwrap_err();
        assert_eq!(e.code, ErrorCode::IllegalSearchResult);
        assert!(e.reason.contains("2 and 3"), "{}", e.reason);
    }

    #[test]
    fn no_parts_or_empty_parts_merge_to_the_empty_reply() {
        let want = TopKHits::empty().into_wire().encode_to_vec();
        assert_eq!(
            merge_encoded(&[], 10, Order::Ascending).unwrap().as_ref(),
            want
        );
        let empty = EncodedHits::parse(Bytes::from(want.clone())).unwrap();
        assert_eq!(
            merge_encoded(&[empty.clone(), empty], 10, Order::Descending)
                .unwrap()
                .as_ref(),
            want
        );
    }
}
