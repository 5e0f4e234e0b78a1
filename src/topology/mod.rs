//! The proxy's view of the cluster's metadata: which collections exist, their
//! schema, partitions and searchable segment files. Read from the Milvus
//! metadata database into an immutable snapshot, refreshed in the background
//! and on demand (single-flight), and invalidated at once when a write passes
//! through this proxy, so searches never run SQL of their own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::meta::{CollectionRow, FileRow, Fingerprint, MetaStore};
use crate::status::{MilvusError, MilvusResult};
use crate::telemetry::Metrics;
use crate::types::{EngineType, MetricType};

/// One root collection with its partitions and searchable files.
#[derive(Debug)]
pub struct CollectionView {
    pub root: CollectionRow,
    pub metric: MetricType,
    pub engine: EngineType,
    /// Partition rows (tag, table id and the rest), oldest first.
    pub partitions: Vec<CollectionRow>,
    /// RAW, TO_INDEX and INDEX files of the root and every partition.
    pub files: Vec<FileRow>,
}

impl CollectionView {
    pub fn name(&self) -> &str {
        &self.root.table_id
    }

    /// `(tag, table_id)` of each partition, the form partition selection takes.
    pub fn partition_pairs(&self) -> Vec<(String, String)> {
        self.partitions
            .iter()
            .map(|p| (p.partition_tag.clone(), p.table_id.clone()))
            .collect()
    }
}

/// An immutable picture of the metadata at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub collections: HashMap<String, Arc<CollectionView>>,
    /// Which invalidation generation this snapshot already reflects.
    generation: u64,
    /// The metadata digest taken just before the rows were read.
    fingerprint: Option<Fingerprint>,
    /// False only for the empty placeholder before the first load.
    loaded: bool,
}

impl Snapshot {
    /// Groups table rows and file rows into collection views. Rows whose
    /// metric is unknown are skipped (they cannot be searched correctly).
    pub fn build(tables: Vec<CollectionRow>, files: Vec<FileRow>) -> Snapshot {
        let mut roots: HashMap<String, CollectionView> = HashMap::new();
        let mut owner_of: HashMap<String, String> = HashMap::new();
        let (root_rows, partition_rows): (Vec<_>, Vec<_>) =
            tables.into_iter().partition(|t| !t.is_partition());
        for root in root_rows {
            let Some(metric) = MetricType::from_i32(root.metric_type) else {
                tracing::warn!(collection = %root.table_id, metric = root.metric_type, "unknown metric type; collection ignored");
                continue;
            };
            let engine = EngineType::from_i32(root.engine_type).unwrap_or(EngineType::Flat);
            owner_of.insert(root.table_id.clone(), root.table_id.clone());
            roots.insert(
                root.table_id.clone(),
                CollectionView {
                    root,
                    metric,
                    engine,
                    partitions: Vec::new(),
                    files: Vec::new(),
                },
            );
        }
        for p in partition_rows {
            if let Some(view) = roots.get_mut(&p.owner_table) {
                owner_of.insert(p.table_id.clone(), p.owner_table.clone());
                view.partitions.push(p);
            }
        }
        for f in files {
            if let Some(view) = owner_of.get(&f.table_id).and_then(|o| roots.get_mut(o)) {
                view.files.push(f);
            }
        }
        Snapshot {
            collections: roots.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
            generation: 0,
            fingerprint: None,
            loaded: true,
        }
    }

    pub fn collection(&self, name: &str) -> Option<&Arc<CollectionView>> {
        self.collections.get(name)
    }

    /// False until the first successful load.
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }
}

/// The shared, refreshable snapshot.
pub struct Topology {
    meta: MetaStore,
    metrics: Arc<Metrics>,
    current: RwLock<Arc<Snapshot>>,
    /// Bumped by every invalidation; a snapshot is fresh when its generation
    /// is at least the value seen when it was requested.
    wanted: AtomicU64,
    /// Single-flight: one load at a time; waiters reuse its result.
    loading: Mutex<()>,
    /// When the current snapshot was last known to match the database.
    verified_at: std::sync::Mutex<Option<Instant>>,
}

impl Topology {
    pub fn new(meta: MetaStore, metrics: Arc<Metrics>) -> Self {
        Self {
            meta,
            metrics,
            current: RwLock::new(Arc::new(Snapshot::default())),
            wanted: AtomicU64::new(1),
            loading: Mutex::new(()),
            verified_at: std::sync::Mutex::new(None),
        }
    }

    /// Time since the snapshot was last known to match the database (None
    /// before the first load).
    pub fn age(&self) -> Option<Duration> {
        let at = *self.verified_at.lock().unwrap_or_else(|p| p.into_inner());
        at.map(|t| t.elapsed())
    }

    fn mark_verified(&self, at: Instant) {
        *self.verified_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(at);
        self.metrics.set_topology_age(0.0);
    }

    /// The latest snapshot, whatever its age.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Marks the snapshot stale: the next `fresh()` reloads. Called after a
    /// write RPC for any collection passed through the proxy.
    pub fn invalidate(&self) {
        self.wanted.fetch_add(1, Ordering::SeqCst);
    }

    /// A snapshot that reflects every invalidation made before this call.
    pub async fn fresh(&self) -> MilvusResult<Arc<Snapshot>> {
        let want = self.wanted.load(Ordering::SeqCst);
        let snap = self.current();
        if snap.generation >= want {
            return Ok(snap);
        }
        let _guard = self.loading.lock().await;
        let snap = self.current();
        if snap.generation >= want {
            return Ok(snap); // someone else loaded while we waited
        }
        self.load_locked().await
    }

    /// The background refresh: re-reads the rows only when the metadata's
    /// fingerprint moved (one small query per tick otherwise), or when an
    /// invalidation is pending.
    pub async fn refresh(&self) -> MilvusResult<Arc<Snapshot>> {
        let _guard = self.loading.lock().await;
        let current = self.current();
        if current.loaded && current.generation >= self.wanted.load(Ordering::SeqCst) {
            let checked_at = Instant::now();
            match self.meta.fingerprint().await {
                Ok(fp) if Some(fp) == current.fingerprint => {
                    self.mark_verified(checked_at);
                    return Ok(current);
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "metadata fingerprint failed; reloading"),
            }
        }
        self.load_locked().await
    }

    /// A fresh snapshot that is forced to be re-read from the database: used
    /// when a collection is missing from the current one (it may have been
    /// created through another proxy replica a moment ago).
    pub async fn reload(&self) -> MilvusResult<Arc<Snapshot>> {
        self.invalidate();
        self.fresh().await
    }

    async fn load_locked(&self) -> MilvusResult<Arc<Snapshot>> {
        let generation = self.wanted.load(Ordering::SeqCst);
        let started = Instant::now();
        let loaded = async {
            // Digest first: a change during the reads makes the next check
            // differ and reload again, never the other way round.
            let fingerprint = self.meta.fingerprint().await?;
            let tables = self.meta.all_tables().await?;
            let files = self.meta.all_searchable_files().await?;
            Ok::<_, sqlx::Error>((fingerprint, tables, files))
        }
        .await;
        self.metrics
            .observe_topology_refresh(started.elapsed().as_secs_f64(), loaded.is_ok());
        let (fingerprint, tables, files) = loaded.map_err(|e| {
            tracing::warn!(error = %e, "topology refresh failed");
            MilvusError::meta(format!("cannot read the cluster metadata: {e}"))
        })?;
        let mut snap = Snapshot::build(tables, files);
        snap.generation = generation;
        snap.fingerprint = Some(fingerprint);
        let snap = Arc::new(snap);
        match self.current.write() {
            Ok(mut cur) => *cur = snap.clone(),
            Err(p) => *p.into_inner() = snap.clone(),
        }
        self.mark_verified(started);
        Ok(snap)
    }

    /// Refreshes every `period` until the task is aborted.
    pub fn spawn_refresher(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let _ = me.refresh().await;
                if let Some(age) = me.age() {
                    me.metrics.set_topology_age(age.as_secs_f64());
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::fixtures::{file, table as row};

    fn table(name: &str, owner: &str, tag: &str, metric: i32) -> CollectionRow {
        CollectionRow {
            metric_type: metric,
            ..row(0, name, owner, tag)
        }
    }

    #[test]
    fn groups_partitions_and_files_under_their_root() {
        let snap = Snapshot::build(
            vec![
                table("a", "", "", 1),
                table("123", "a", "p1", 1),
                table("b", "", "", 2),
                table("bad", "", "", 99),
                table("orphan", "gone", "x", 1),
            ],
            vec![
                file(1, "a", 5),
                file(2, "123", 5),
                file(3, "b", 5),
                file(4, "gone", 5),
            ],
        );
        let a = snap.collection("a").unwrap();
        assert_eq!(a.partitions.len(), 1);
        assert_eq!(a.files.iter().map(|f| f.id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(snap.collection("b").unwrap().metric, MetricType::Ip);
        assert!(snap.collection("bad").is_none());
        assert!(
            snap.collection("123").is_none(),
            "a partition is not a collection"
        );
        assert_eq!(snap.collections.len(), 2);
    }
}
