//! Reads by id: the stored vectors of entity ids, and the live entity ids of
//! one segment.

use std::collections::HashMap;

use super::{meta_err, Collection, Engine, SEARCHABLE};
use crate::node::segment::SegmentVectors;
use crate::status::{MilvusError, MilvusResult};
use crate::validate;

impl Engine {
    /// Stored vectors of `ids` (None where an id is not found), searching the
    /// given partition or the whole collection.
    pub(super) async fn vectors_by_id(
        &self,
        c: &Collection,
        ids: &[i64],
        partition_tag: Option<&str>,
    ) -> MilvusResult<Vec<Option<crate::wire::RowRecord>>> {
        let tables = match partition_tag {
            Some(tag) => vec![self.partition_table(c.name(), tag).await?],
            None => self.table_ids(c).await?,
        };
        let files = self
            .meta
            .files_of(&tables, &SEARCHABLE)
            .await
            .map_err(meta_err)?;
        let mut out: Vec<Option<crate::wire::RowRecord>> = vec![None; ids.len()];
        let wanted: HashMap<i64, Vec<usize>> =
            ids.iter()
                .enumerate()
                .fold(HashMap::new(), |mut m, (i, id)| {
                    m.entry(*id).or_default().push(i);
                    m
                });
        for f in files {
            let seg = self.load(&f).await?;
            for (row, id) in seg.ids.iter().enumerate() {
                let Some(slots) = wanted.get(id) else {
                    continue;
                };
                if seg.deleted.is_deleted(row) {
                    continue;
                }
                let record = match &seg.vectors {
                    SegmentVectors::Float { dim, data } => crate::wire::RowRecord {
                        float_data: data[row * dim..(row + 1) * dim].to_vec(),
                        binary_data: Default::default(),
                    },
                    SegmentVectors::Binary { dim_bits, data } => {
                        let w = dim_bits / 8;
                        crate::wire::RowRecord {
                            float_data: Vec::new(),
                            binary_data: bytes::Bytes::copy_from_slice(
                                &data[row * w..(row + 1) * w],
                            ),
                        }
                    }
                };
                for slot in slots {
                    out[*slot] = Some(record.clone());
                }
            }
        }
        Ok(out)
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
        let found = self.vectors_by_id(&c, ids, tag.as_deref()).await?;
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
