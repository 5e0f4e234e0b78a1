//! Reads by id: the stored vectors of entity ids, and the live entity ids of
//! one segment.

use std::collections::{HashMap, HashSet};

use super::{meta_err, Collection, Engine};
use crate::node::segment::SegmentVectors;
use crate::status::{MilvusError, MilvusResult};
use crate::types::FileType;
use crate::validate;

impl Engine {
    /// Stored vectors of `ids` (None where an id is not found), searching the
    /// given partition or the whole collection. Like Milvus
    /// (`GetVectorsByIdHelper`): files are read in metadata order, and in each
    /// file only the first row holding an id counts (if that row is deleted,
    /// the id is looked for in the next file). `Ok(None)` when there is no
    /// file to read at all.
    pub(super) async fn vectors_by_id(
        &self,
        c: &Collection,
        ids: &[i64],
        partition_tag: Option<&str>,
    ) -> MilvusResult<Option<Vec<Option<crate::wire::RowRecord>>>> {
        let tables = match partition_tag {
            Some(tag) => vec![self.partition_table(c.name(), tag).await?],
            None => self.table_ids(c).await?,
        };
        let files = self
            .meta
            .files_of(&tables, &HOLDS_RAW_VECTORS)
            .await
            .map_err(meta_err)?;
        if files.is_empty() {
            return Ok(None);
        }
        let mut out: Vec<Option<crate::wire::RowRecord>> = vec![None; ids.len()];
        for f in files {
            let missing: HashSet<i64> = ids
                .iter()
                .zip(&out)
                .filter(|(_, found)| found.is_none())
                .map(|(id, _)| *id)
                .collect();
            if missing.is_empty() {
                break;
            }
            let seg = self.load(&f).await?;
            let rows = first_rows(&seg.ids, &missing);
            for (slot, id) in ids.iter().enumerate() {
                if out[slot].is_some() {
                    continue;
                }
                let Some(&row) = rows.get(id) else {
                    continue;
                };
                if seg.deleted.is_deleted(row) {
                    continue;
                }
                out[slot] = Some(row_record(&seg.vectors, row));
            }
        }
        Ok(Some(out))
    }

    pub async fn get_vectors_by_id(
        &self,
        name: &str,
        ids: &[i64],
        partition_tag: &str,
    ) -> MilvusResult<Vec<crate::wire::RowRecord>> {
        let c = self.collection(name).await?;
        validate::get_by_id_count(ids.len())?;
        let tag = if partition_tag.is_empty() {
            None
        } else {
            Some(validate::partition_tag(partition_tag)?)
        };
        let Some(found) = self.vectors_by_id(&c, ids, tag.as_deref()).await? else {
            // Milvus: DB_NOT_FOUND, which the wire maps to code 1.
            return Err(MilvusError::unexpected("Collection or partition is empty"));
        };
        Ok(found.into_iter().map(Option::unwrap_or_default).collect())
    }

    pub async fn get_vector_ids(&self, name: &str, segment_name: &str) -> MilvusResult<Vec<i64>> {
        let c = self.collection(name).await?;
        let tables = self.table_ids(&c).await?;
        let files = self
            .meta
            .files_of_segment(&tables, segment_name)
            .await
            .map_err(meta_err)?;
        let Some(f) = files.first() else {
            return Err(MilvusError::unexpected(format!(
                "Segment {segment_name} does not exist in collection {name}"
            )));
        };
        let seg = self.load(f).await?;
        Ok(seg
            .ids
            .iter()
            .enumerate()
            .filter(|(row, _)| !seg.deleted.is_deleted(*row))
            .map(|(_, id)| *id)
            .collect())
    }
}

/// Files GetVectorsByID reads (Milvus: RAW, TO_INDEX and BACKUP, the raw
/// data an index was built from).
const HOLDS_RAW_VECTORS: [FileType; 3] = [FileType::Raw, FileType::ToIndex, FileType::Backup];

/// The first row of each wanted id in a segment's id column.
fn first_rows(segment_ids: &[i64], wanted: &HashSet<i64>) -> HashMap<i64, usize> {
    let mut rows = HashMap::with_capacity(wanted.len());
    for (row, id) in segment_ids.iter().enumerate() {
        if wanted.contains(id) {
            rows.entry(*id).or_insert(row);
        }
    }
    rows
}

/// One stored vector as a wire record.
fn row_record(vectors: &SegmentVectors, row: usize) -> crate::wire::RowRecord {
    match vectors {
        SegmentVectors::Float { dim, data } => crate::wire::RowRecord {
            float_data: data[row * dim..(row + 1) * dim].to_vec(),
            binary_data: Default::default(),
        },
        SegmentVectors::Binary { dim_bits, data } => {
            let w = dim_bits / 8;
            crate::wire::RowRecord {
                float_data: Vec::new(),
                binary_data: bytes::Bytes::copy_from_slice(&data[row * w..(row + 1) * w]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_rows_keeps_the_first_occurrence_of_each_id() {
        let wanted: HashSet<i64> = [7, 9, 42].into_iter().collect();
        let rows = first_rows(&[5, 7, 9, 7, 9, 1], &wanted);
        assert_eq!(rows.get(&7), Some(&1));
        assert_eq!(rows.get(&9), Some(&2));
        assert_eq!(rows.get(&42), None);
        assert_eq!(rows.len(), 2);
    }
}
