//! The proxy's view of the cluster's metadata: which collections exist, their
//! schema, partitions and searchable segment files. Read from the Milvus
//! metadata database into an immutable snapshot, refreshed in the background
//! and on demand (single-flight), and invalidated at once when a write passes
//! through this proxy, so searches never run SQL of their own.
//!
//! Outages: a failed or timed-out read leaves the last snapshot in use
//! (searches go on), sets `mishards_metadata_up` to 0 and marks the status
//! stale; the refresher retries with back-off and catches up on success.
//! Misses: a name that missed lately is not read again (negative cache), and
//! miss-driven reads are rate-bounded over all names (`after_miss`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Which load of this topology made it (1 for the first, 0 for the
    /// placeholder): later snapshots have larger numbers.
    sequence: u64,
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
            sequence: 0,
        }
    }

    pub fn collection(&self, name: &str) -> Option<&Arc<CollectionView>> {
        self.collections.get(name)
    }

    /// The names of every collection in the snapshot (in no order).
    pub fn collection_names(&self) -> impl Iterator<Item = &str> {
        self.collections.keys().map(String::as_str)
    }

    /// False until the first successful load.
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    /// Which load made it: later snapshots have larger numbers.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
}

/// Miss-driven reads allowed per `negative_cache_ttl`, over all names.
const MISS_READS_PER_TTL: u32 = 10;
/// Names the negative cache holds at most.
const MAX_REMEMBERED_MISSES: usize = 10_000;

/// How the topology treats misses, slow reads and outages (`[topology]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopologySettings {
    /// A name that missed less than this long ago is answered "not found"
    /// without reading again; misses of any names read at most 10 times per it.
    pub negative_cache_ttl: Duration,
    /// Longest one snapshot read (fingerprint or full load) may take.
    pub read_timeout: Duration,
    /// Upper bound of the back-off between refresh attempts after failures.
    pub max_retry_interval: Duration,
    /// The snapshot is reported stale when it was last verified longer ago.
    pub stale_after: Duration,
}

impl Default for TopologySettings {
    fn default() -> Self {
        TopologySettings {
            negative_cache_ttl: Duration::from_secs(1),
            read_timeout: Duration::from_secs(5),
            max_retry_interval: Duration::from_secs(2),
            stale_after: Duration::from_secs(5),
        }
    }
}

impl From<&crate::config::TopologyConfig> for TopologySettings {
    /// The settings of a `[topology]` section.
    fn from(config: &crate::config::TopologyConfig) -> Self {
        TopologySettings {
            negative_cache_ttl: config.negative_cache_ttl,
            read_timeout: config.read_timeout,
            max_retry_interval: config.max_retry_interval,
            stale_after: config.stale_after,
        }
    }
}

/// Why the topology read the database, for the read counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadCause {
    /// The periodic background refresh.
    Refresh,
    /// A name missing from the snapshot.
    Miss,
    /// A write through this proxy (or a retired file) asked for a fresh snapshot.
    Invalidation,
}

impl ReadCause {
    pub fn label(self) -> &'static str {
        match self {
            ReadCause::Refresh => "refresh",
            ReadCause::Miss => "miss",
            ReadCause::Invalidation => "invalidation",
        }
    }
}

/// Metadata reads made so far, by cause: `fingerprints` (2 small queries
/// each) and full `snapshots` (the fingerprint plus 2 row queries).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadCount {
    pub fingerprints: u64,
    pub snapshots: u64,
}

impl ReadCount {
    /// SQL queries these reads sent.
    pub fn queries(&self) -> u64 {
        self.fingerprints * 2 + self.snapshots * 4
    }
}

/// The state `/readyz` reports about the metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct MetadataStatus {
    /// A snapshot was loaded at least once (searches can be planned).
    pub loaded: bool,
    /// The most recent read of the database succeeded.
    pub up: bool,
    /// Time since the snapshot was last known to match the database.
    pub age: Option<Duration>,
    /// `!up` or older than `stale_after`: searches are served from a
    /// snapshot that may miss recent changes.
    pub stale: bool,
}

/// The shared, refreshable snapshot.
pub struct Topology {
    meta: MetaStore,
    metrics: Arc<Metrics>,
    settings: TopologySettings,
    current: RwLock<Arc<Snapshot>>,
    /// Every snapshot loaded, for whoever watches the files change (`subscribe`).
    loads: tokio::sync::watch::Sender<Arc<Snapshot>>,
    /// Loads so far, numbering the snapshots.
    sequence: AtomicU64,
    /// Bumped by every invalidation; a snapshot is fresh when its generation
    /// is at least the value seen when it was requested.
    wanted: AtomicU64,
    /// Single-flight: one load at a time; waiters reuse its result.
    loading: Mutex<()>,
    /// When the current snapshot was last known to match the database.
    verified_at: std::sync::Mutex<Option<Instant>>,
    /// When a miss last made a read (successful or not): the global bound
    /// on miss-driven reads, including during an outage.
    miss_checked_at: std::sync::Mutex<Option<Instant>>,
    /// Names recently confirmed missing, and when.
    misses: std::sync::Mutex<HashMap<String, Instant>>,
    metadata_up: AtomicBool,
    reads: std::sync::Mutex<HashMap<ReadCause, ReadCount>>,
}

fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Topology {
    pub fn new(meta: MetaStore, metrics: Arc<Metrics>) -> Self {
        Self::with_settings(meta, metrics, TopologySettings::default())
    }

    pub fn with_settings(
        meta: MetaStore,
        metrics: Arc<Metrics>,
        settings: TopologySettings,
    ) -> Self {
        Self {
            meta,
            metrics,
            settings,
            current: RwLock::new(Arc::new(Snapshot::default())),
            loads: tokio::sync::watch::Sender::new(Arc::new(Snapshot::default())),
            sequence: AtomicU64::new(0),
            wanted: AtomicU64::new(1),
            loading: Mutex::new(()),
            verified_at: std::sync::Mutex::new(None),
            miss_checked_at: std::sync::Mutex::new(None),
            misses: std::sync::Mutex::new(HashMap::new()),
            metadata_up: AtomicBool::new(false),
            reads: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Time since the snapshot was last known to match the database (None
    /// before the first load).
    pub fn age(&self) -> Option<Duration> {
        locked(&self.verified_at).map(|t| t.elapsed())
    }

    /// Loaded, up, age and staleness, for `/readyz` and `Cmd`.
    pub fn status(&self) -> MetadataStatus {
        let age = self.age();
        let up = self.metadata_up.load(Ordering::SeqCst);
        MetadataStatus {
            loaded: self.current().is_loaded(),
            up,
            age,
            stale: !up || age.is_none_or(|a| a > self.settings.stale_after),
        }
    }

    /// Metadata reads made so far for `cause`.
    pub fn reads(&self, cause: ReadCause) -> ReadCount {
        locked(&self.reads).get(&cause).copied().unwrap_or_default()
    }

    fn count_read(&self, cause: ReadCause, full: bool) {
        let mut reads = locked(&self.reads);
        let count = reads.entry(cause).or_default();
        if full {
            count.snapshots += 1;
        } else {
            count.fingerprints += 1;
        }
        drop(reads);
        self.metrics
            .count_metadata_read(cause.label(), if full { "snapshot" } else { "fingerprint" });
    }

    fn read_outcome(&self, ok: bool) {
        self.metadata_up.store(ok, Ordering::SeqCst);
        self.metrics.set_metadata_up(ok);
    }

    fn mark_verified(&self, at: Instant) {
        *locked(&self.verified_at) = Some(at);
        self.metrics.set_topology_age(0.0);
    }

    /// Whether the snapshot was verified at or after `t`.
    fn verified_since(&self, t: Instant) -> bool {
        locked(&self.verified_at).is_some_and(|v| v >= t)
    }

    /// Every snapshot loaded from now on (the latest one first).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Snapshot>> {
        self.loads.subscribe()
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
        self.load_locked(ReadCause::Invalidation).await
    }

    /// The background refresh: re-reads the rows only when the metadata's
    /// fingerprint moved (one small query per tick otherwise), or when an
    /// invalidation is pending.
    pub async fn refresh(&self) -> MilvusResult<Arc<Snapshot>> {
        let _guard = self.loading.lock().await;
        let current = self.current();
        if current.loaded && current.generation >= self.wanted.load(Ordering::SeqCst) {
            match self.fingerprint_locked(ReadCause::Refresh).await {
                Ok(true) => return Ok(current),
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(error = %e.reason, "metadata fingerprint failed; reloading")
                }
            }
        }
        self.load_locked(ReadCause::Refresh).await
    }

    /// A snapshot in which `name` is looked up again after a miss (it may
    /// have been created through another proxy replica a moment ago), at a
    /// bounded cost:
    /// - a name that missed less than `negative_cache_ttl` ago is answered
    ///   from the current snapshot (negative cache, per name);
    /// - otherwise one read at a time (single-flight; waiters reuse a read
    ///   that started after they asked), a cheap fingerprint first and the
    ///   full rows only when it moved;
    /// - and at most one such read per `negative_cache_ttl / 10` whatever the
    ///   names, so a loop over random names is bounded too.
    ///
    /// So a loop on one missing name costs one fingerprint per TTL, and a
    /// name created elsewhere is found on its first search (or, under a
    /// flood of other misses, within one refresh interval).
    pub async fn after_miss(&self, name: &str) -> MilvusResult<Arc<Snapshot>> {
        let ttl = self.settings.negative_cache_ttl;
        if self.missed_recently(name, ttl) {
            return Ok(self.current());
        }
        let asked = Instant::now();
        let _guard = self.loading.lock().await;
        let snap = self.current();
        if snap.collection(name).is_some() {
            return Ok(snap);
        }
        let gap = ttl / MISS_READS_PER_TTL;
        let read_lately = locked(&self.miss_checked_at).is_some_and(|t| t.elapsed() < gap);
        if self.verified_since(asked) || read_lately {
            self.remember_miss(name);
            return Ok(snap);
        }
        *locked(&self.miss_checked_at) = Some(Instant::now());
        let snap = if snap.loaded && self.fingerprint_locked(ReadCause::Miss).await? {
            snap
        } else {
            self.load_locked(ReadCause::Miss).await?
        };
        if snap.collection(name).is_none() {
            self.remember_miss(name);
        }
        Ok(snap)
    }

    fn missed_recently(&self, name: &str, ttl: Duration) -> bool {
        locked(&self.misses)
            .get(name)
            .is_some_and(|at| at.elapsed() < ttl)
    }

    /// Records a miss; the map is bounded (expired entries go first, then all).
    fn remember_miss(&self, name: &str) {
        let ttl = self.settings.negative_cache_ttl;
        let mut misses = locked(&self.misses);
        if misses.len() >= MAX_REMEMBERED_MISSES {
            misses.retain(|_, at| at.elapsed() < ttl);
            if misses.len() >= MAX_REMEMBERED_MISSES {
                misses.clear();
            }
        }
        misses.insert(name.to_string(), Instant::now());
    }

    /// A fresh snapshot that is forced to be re-read from the database: used
    /// when a search hit a file the current snapshot still lists but the
    /// database has retired.
    pub async fn reload(&self) -> MilvusResult<Arc<Snapshot>> {
        self.invalidate();
        self.fresh().await
    }

    /// Whether the database still matches the current snapshot (one
    /// fingerprint read); marks it verified when it does.
    async fn fingerprint_locked(&self, cause: ReadCause) -> MilvusResult<bool> {
        let started = Instant::now();
        self.count_read(cause, false);
        let read = tokio::time::timeout(self.settings.read_timeout, self.meta.fingerprint()).await;
        let fingerprint = self.checked(read)?;
        let same = Some(fingerprint) == self.current().fingerprint;
        if same {
            self.mark_verified(started);
        }
        Ok(same)
    }

    /// The result of a timed read; records whether the database answered.
    fn checked<T>(
        &self,
        read: Result<Result<T, sqlx::Error>, tokio::time::error::Elapsed>,
    ) -> MilvusResult<T> {
        let result = match read {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(crate::meta::redact_uris_in(&e.to_string())),
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(self.settings.read_timeout)
            )),
        };
        self.read_outcome(result.is_ok());
        result.map_err(|e| {
            tracing::warn!(error = %e, "metadata read failed; serving the last snapshot");
            MilvusError::meta(format!("cannot read the cluster metadata: {e}"))
        })
    }

    async fn load_locked(&self, cause: ReadCause) -> MilvusResult<Arc<Snapshot>> {
        let generation = self.wanted.load(Ordering::SeqCst);
        let started = Instant::now();
        self.count_read(cause, true);
        let loaded = async {
            // Digest first: a change during the reads makes the next check
            // differ and reload again, never the other way round.
            let fingerprint = self.meta.fingerprint().await?;
            let tables = self.meta.all_tables().await?;
            let files = self.meta.all_searchable_files().await?;
            Ok::<_, sqlx::Error>((fingerprint, tables, files))
        };
        let loaded = tokio::time::timeout(self.settings.read_timeout, loaded).await;
        let ok = matches!(loaded, Ok(Ok(_)));
        self.metrics
            .observe_topology_refresh(started.elapsed().as_secs_f64(), ok);
        let (fingerprint, tables, files) = self.checked(loaded)?;
        let mut snap = Snapshot::build(tables, files);
        snap.generation = generation;
        snap.fingerprint = Some(fingerprint);
        snap.sequence = self.sequence.fetch_add(1, Ordering::SeqCst) + 1;
        let snap = Arc::new(snap);
        match self.current.write() {
            Ok(mut cur) => *cur = snap.clone(),
            Err(p) => *p.into_inner() = snap.clone(),
        }
        self.loads.send_replace(snap.clone());
        self.mark_verified(started);
        Ok(snap)
    }

    /// Refreshes every `period` until the task is aborted; after failures
    /// (database unreachable) it retries with a doubling delay up to
    /// `max_retry_interval`, serving the last snapshot meanwhile, and
    /// catches up on the first success.
    /// The longest wait between refreshes while the database does not answer.
    pub fn max_retry_interval(&self) -> Duration {
        self.settings.max_retry_interval
    }

    pub fn spawn_refresher(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let period = period.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                tokio::time::sleep(retry_delay(
                    period,
                    me.settings.max_retry_interval,
                    failures,
                ))
                .await;
                match me.refresh().await {
                    Ok(_) => failures = 0,
                    Err(_) => failures = failures.saturating_add(1),
                }
                if let Some(age) = me.age() {
                    me.metrics.set_topology_age(age.as_secs_f64());
                }
            }
        })
    }
}

/// The wait before the next refresh: `period` while the database answers,
/// then doubling with each consecutive failure, capped at `max(period, cap)`.
pub fn retry_delay(period: Duration, cap: Duration, failures: u32) -> Duration {
    let doubled = period.saturating_mul(1u32 << failures.min(16));
    doubled.min(cap.max(period))
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
    fn config_defaults_are_the_topology_defaults() {
        let config = crate::config::TopologyConfig::default();
        assert_eq!(TopologySettings::from(&config), TopologySettings::default());
    }

    #[test]
    fn retry_delay_doubles_up_to_the_cap() {
        let ms = Duration::from_millis;
        let delays: Vec<_> = (0..6).map(|f| retry_delay(ms(300), ms(2000), f)).collect();
        assert_eq!(
            delays,
            [ms(300), ms(600), ms(1200), ms(2000), ms(2000), ms(2000)]
        );
        assert_eq!(
            retry_delay(ms(5000), ms(2000), 3),
            ms(5000),
            "never faster than the period"
        );
        assert_eq!(retry_delay(ms(300), ms(2000), u32::MAX), ms(2000));
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
