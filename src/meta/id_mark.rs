//! The proxy's one write to a group's metadata: the mark of a spread
//! collection whose ids the proxy generates (`shard::id_mode::FLAG_PROXY_IDS`),
//! ORed into its root row's `Tables.flag` so Milvus' own bits stay, and the
//! fresh read of that flag an insert decides its id mode from.

use sqlx::Row;

use super::{MetaResult, MetaStore};
use crate::types::TABLE_STATE_TO_DELETE;

impl MetaStore {
    /// The `Tables.flag` of the live root row of `collection`, read now.
    pub async fn root_flag(&self, collection: &str) -> MetaResult<Option<i64>> {
        let row = sqlx::query(
            "SELECT flag FROM Tables WHERE table_id = ? AND owner_table = '' AND state <> ?",
        )
        .bind(collection)
        .bind(TABLE_STATE_TO_DELETE)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get("flag")).transpose()
    }

    /// ORs `bits` into the flag of the live root row of `collection`;
    /// false when there is no such row.
    pub async fn mark_root_flag(&self, collection: &str, bits: i64) -> MetaResult<bool> {
        let done = sqlx::query(
            "UPDATE Tables SET flag = flag | ? WHERE table_id = ? AND owner_table = '' AND state <> ?",
        )
        .bind(bits)
        .bind(collection)
        .bind(TABLE_STATE_TO_DELETE)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::fixtures::{self, on_scratch_mysql, on_sqlite};
    use crate::shard::id_mode::FLAG_PROXY_IDS;
    use crate::types::FLAG_USER_IDS;

    async fn the_mark_keeps_milvus_bits(store: &MetaStore) {
        let mut root = fixtures::table(0, "marked", "", "");
        root.flag = FLAG_USER_IDS;
        store.insert_table(&root).await.unwrap();
        store
            .insert_table(&fixtures::table(0, "p1", "marked", "t"))
            .await
            .unwrap();
        assert!(store
            .mark_root_flag("marked", FLAG_PROXY_IDS)
            .await
            .unwrap());
        assert_eq!(
            store.root_flag("marked").await.unwrap(),
            Some(FLAG_PROXY_IDS | FLAG_USER_IDS)
        );
        // Marking twice changes nothing; partitions are never marked.
        assert!(store
            .mark_root_flag("marked", FLAG_PROXY_IDS)
            .await
            .unwrap());
        assert_eq!(store.table("p1").await.unwrap().map(|t| t.flag), Some(0));
        assert!(!store
            .mark_root_flag("missing", FLAG_PROXY_IDS)
            .await
            .unwrap());
        assert_eq!(store.root_flag("missing").await.unwrap(), None);
        assert_eq!(store.root_flag("p1").await.unwrap(), None, "not a root");
    }

    #[tokio::test]
    async fn mark_on_sqlite() {
        on_sqlite(|store| async move { the_mark_keeps_milvus_bits(&store).await }).await;
    }

    #[tokio::test]
    async fn mark_on_mysql() {
        on_scratch_mysql("mark_on_mysql", "mishards_mark", |store| async move {
            the_mark_keeps_milvus_bits(&store).await
        })
        .await;
    }
}
