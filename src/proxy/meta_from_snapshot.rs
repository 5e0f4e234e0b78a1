//! Answers to metadata reads from the topology snapshot, used only when the
//! writable node cannot be reached: searches already work without it, and
//! with these the usual client flow (has/describe/count/show, then search)
//! keeps working while the writer is down. Each answer is what Milvus itself
//! computes from the same metadata rows. Each takes the RPC's request, as
//! `Cluster::read_meta` passes it.

use crate::partition;
use crate::status::{MilvusError, MilvusResult};
use crate::topology::{CollectionView, Snapshot};
use crate::types::DEFAULT_PARTITION_TAG;
use crate::validate;
use crate::wire::{
    BoolReply, CollectionName, CollectionNameList, CollectionRowCount, CollectionSchema, Command,
    IndexParam, KeyValuePair, PartitionList, PartitionParam,
};

fn view<'a>(snap: &'a Snapshot, name: &str) -> MilvusResult<&'a CollectionView> {
    validate::collection_name(name)?;
    snap.collection(name)
        .map(|v| v.as_ref())
        .ok_or_else(|| MilvusError::collection_not_exists(name))
}

pub fn has_collection(snap: &Snapshot, r: &CollectionName) -> MilvusResult<BoolReply> {
    let name = r.collection_name.as_str();
    validate::collection_name(name)?;
    Ok(BoolReply {
        status: None,
        bool_reply: snap.collection(name).is_some(),
    })
}

pub fn describe_collection(snap: &Snapshot, r: &CollectionName) -> MilvusResult<CollectionSchema> {
    let v = view(snap, &r.collection_name)?;
    Ok(CollectionSchema {
        status: None,
        collection_name: v.root.table_id.clone(),
        dimension: v.root.dimension,
        index_file_size: v.root.index_file_size >> 20, // bytes in the metadata, MB on the wire
        metric_type: v.root.metric_type,
        extra_params: Vec::new(),
    })
}

/// Milvus counts `row_count` over the searchable files of the root and every partition.
pub fn count_collection(snap: &Snapshot, r: &CollectionName) -> MilvusResult<CollectionRowCount> {
    let v = view(snap, &r.collection_name)?;
    Ok(CollectionRowCount {
        status: None,
        collection_row_count: v.files.iter().map(|f| f.row_count).sum(),
    })
}

/// Root collections, oldest first (the order of their `Tables` rows).
pub fn show_collections(snap: &Snapshot, _: &Command) -> MilvusResult<CollectionNameList> {
    let mut roots: Vec<&CollectionView> = snap.collections.values().map(|v| v.as_ref()).collect();
    roots.sort_by_key(|v| v.root.id);
    Ok(CollectionNameList {
        status: None,
        collection_names: roots.iter().map(|v| v.root.table_id.clone()).collect(),
    })
}

/// `_default` first, then the partition tags, as Milvus lists them.
pub fn show_partitions(snap: &Snapshot, r: &CollectionName) -> MilvusResult<PartitionList> {
    let v = view(snap, &r.collection_name)?;
    let mut tags = vec![DEFAULT_PARTITION_TAG.to_string()];
    tags.extend(v.partitions.iter().map(|p| p.partition_tag.clone()));
    Ok(PartitionList {
        status: None,
        partition_tag_array: tags,
    })
}

pub fn has_partition(snap: &Snapshot, r: &PartitionParam) -> MilvusResult<BoolReply> {
    let v = view(snap, &r.collection_name)?;
    Ok(BoolReply {
        status: None,
        bool_reply: partition::has_tag(
            v.partitions.iter().map(|p| p.partition_tag.as_str()),
            &r.tag,
        ),
    })
}

pub fn describe_index(snap: &Snapshot, r: &CollectionName) -> MilvusResult<IndexParam> {
    let v = view(snap, &r.collection_name)?;
    Ok(IndexParam {
        status: None,
        collection_name: r.collection_name.clone(),
        index_type: v.engine.reported() as i32,
        extra_params: vec![KeyValuePair {
            key: "params".into(),
            value: v.root.index_params.clone(),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::fixtures::{file, table};
    use crate::meta::CollectionRow;

    /// A binary (HAMMING, dim 16, BIN_IDMAP) collection row, 256 MB files.
    fn row(id: i64, table_id: &str, owner: &str, tag: &str) -> CollectionRow {
        CollectionRow {
            dimension: 16,
            index_file_size: 256 << 20,
            engine_type: 9, // BIN_IDMAP, reported as FLAT
            metric_type: 3,
            ..table(id, table_id, owner, tag)
        }
    }
    use crate::wire::ErrorCode;

    fn name(collection_name: &str) -> CollectionName {
        CollectionName {
            collection_name: collection_name.into(),
        }
    }

    fn partition(collection_name: &str, tag: &str) -> PartitionParam {
        PartitionParam {
            collection_name: collection_name.into(),
            tag: tag.into(),
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot::build(
            vec![
                row(2, "b", "", ""),
                row(1, "a", "", ""),
                row(3, "77", "a", "p1"),
            ],
            vec![file(1, "a", 10), file(2, "77", 5), file(3, "b", 1)],
        )
    }

    #[test]
    fn answers_like_milvus_from_the_rows() {
        let s = snapshot();
        assert!(has_collection(&s, &name("a")).unwrap().bool_reply);
        // A partition's internal numeric name is not a collection name.
        assert_eq!(
            has_collection(&s, &name("77")).unwrap_err().code,
            ErrorCode::IllegalCollectionName
        );
        assert!(!has_collection(&s, &name("zzz")).unwrap().bool_reply);
        let d = describe_collection(&s, &name("a")).unwrap();
        assert_eq!(
            (d.dimension, d.index_file_size, d.metric_type),
            (16, 256, 3)
        );
        assert_eq!(
            count_collection(&s, &name("a"))
                .unwrap()
                .collection_row_count,
            15
        );
        assert_eq!(
            show_collections(&s, &Command::default())
                .unwrap()
                .collection_names,
            vec!["a", "b"]
        );
        assert_eq!(
            show_partitions(&s, &name("a")).unwrap().partition_tag_array,
            vec!["_default", "p1"]
        );
        assert!(
            has_partition(&s, &partition("a", " p1 "))
                .unwrap()
                .bool_reply
        );
        assert!(
            has_partition(&s, &partition("a", "_default"))
                .unwrap()
                .bool_reply
        );
        assert!(!has_partition(&s, &partition("a", "p2")).unwrap().bool_reply);
        // Only the collection name is validated: odd tags are just absent.
        for odd in ["", "  ", &"t".repeat(300)] {
            assert!(!has_partition(&s, &partition("a", odd)).unwrap().bool_reply);
        }
        assert_eq!(describe_index(&s, &name("a")).unwrap().index_type, 1);
    }

    #[test]
    fn errors_like_milvus() {
        let s = snapshot();
        assert_eq!(
            describe_collection(&s, &name("missing")).unwrap_err().code,
            ErrorCode::CollectionNotExists
        );
        assert_eq!(
            count_collection(&s, &name("1bad")).unwrap_err().code,
            ErrorCode::IllegalCollectionName
        );
    }
}
