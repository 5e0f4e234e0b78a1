//! Live reconfiguration: the configuration file is re-read on SIGHUP and
//! when its content changes (a periodic content-hash check), and the keys
//! that can change while serving are applied at once: the writable node,
//! the read-only nodes (or the list found by discovery), the ring's virtual
//! nodes, `backends.search_writer_fallback`, the topology refresh interval
//! and the log level. Other changed
//! keys are logged as needing a restart. An invalid file is rejected with a
//! log line and the configuration in effect stays.
//!
//! Over shard groups the same live keys apply to each group (its writable
//! and read-only nodes), and `[placement]` changes live when it moves no
//! existing collection. A change that would move one (a pin to another
//! group, another default, a group added or removed while spread
//! collections exist) is refused naming the collections: their rows would
//! stay where the new rules no longer look. A changed group list that moves
//! nothing needs a restart.
//!
//! The file is polled rather than watched with `notify`: a Kubernetes
//! ConfigMap update swaps a symlinked directory, which inotify watches on
//! the file miss, and hashing a few-kB file every couple of seconds costs
//! nothing; it also needs no extra thread or dependency.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::groups::placement_of;
use crate::backend::live::{BackendsChange, LiveBackends};
use crate::config::Config;
use crate::shard::placement::{moved_collections, Placement};
use crate::telemetry::Metrics;

/// Sets the log filter (a `tracing-subscriber` reload handle behind it).
pub type LogLevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The result of one reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// Applied; the backend changes, and the changed keys that need a restart.
    Applied {
        change: BackendsChange,
        needs_restart: Vec<String>,
    },
    /// Refused; the reason. The configuration in effect did not change.
    Rejected(String),
}

/// The configuration in effect with the live keys of `new` applied, and
/// the other keys of `new` that differ (they need a restart).
pub fn merge_live_keys(effective: &Config, new: &Config) -> (Config, Vec<String>) {
    let mut next = effective.clone();
    next.backends.writable = new.backends.writable.clone();
    next.backends.readonly = new.backends.readonly.clone();
    next.backends.virtual_nodes = new.backends.virtual_nodes;
    next.backends.search_writer_fallback = new.backends.search_writer_fallback;
    next.topology.refresh_interval = new.topology.refresh_interval;
    next.log.level = new.log.level.clone();
    (next.clone(), changed_keys(&next, new))
}

/// The `section.key`s whose values differ between `a` and `b`.
fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    let (Ok(toml::Value::Table(a)), Ok(toml::Value::Table(b))) =
        (toml::Value::try_from(a), toml::Value::try_from(b))
    else {
        return vec!["(unreadable configuration)".to_string()];
    };
    let mut keys = Vec::new();
    for (section, values) in &a {
        let (Some(values), Some(other)) = (
            values.as_table(),
            b.get(section).and_then(toml::Value::as_table),
        ) else {
            continue;
        };
        for (key, value) in values {
            if other.get(key) != Some(value) {
                keys.push(format!("{section}.{key}"));
            }
        }
    }
    keys
}

/// One shard group's nodes, changed by reloads.
pub struct LiveGroup {
    pub name: String,
    pub live: Arc<LiveBackends>,
}

/// What a reload over shard groups needs beyond each group's nodes: the
/// placement the service routes by, and the collections that exist now.
pub struct LivePlacement {
    pub current: Arc<ArcSwap<Placement>>,
    /// The collections of every group's metadata snapshot, or the name of a
    /// group that has none loaded (then nothing can be checked).
    pub existing: Box<dyn Fn() -> Result<Vec<String>, String> + Send + Sync>,
}

/// Applies configuration changes to a running proxy.
pub struct Reconfigurer {
    path: Option<PathBuf>,
    effective: Mutex<Config>,
    /// The read-only nodes found by discovery, when it is on.
    discovered: Mutex<Option<Vec<String>>>,
    live: Arc<LiveBackends>,
    /// Over shard groups: every group (the first is also `live`) and the placement.
    shards: Option<(Vec<LiveGroup>, LivePlacement)>,
    metrics: Arc<Metrics>,
    log_level: Option<LogLevelSetter>,
    refresh_interval: watch::Sender<Duration>,
    last_hash: Mutex<Option<u64>>,
}

impl Reconfigurer {
    pub fn new(
        path: Option<PathBuf>,
        config: Config,
        live: Arc<LiveBackends>,
        metrics: Arc<Metrics>,
        log_level: Option<LogLevelSetter>,
    ) -> Arc<Self> {
        let (refresh_interval, _) = watch::channel(config.topology.refresh_interval);
        let last_hash = path.as_ref().and_then(|p| file_hash(p).ok());
        Arc::new(Self {
            path,
            effective: Mutex::new(config),
            discovered: Mutex::new(None),
            live,
            shards: None,
            metrics,
            log_level,
            refresh_interval,
            last_hash: Mutex::new(last_hash),
        })
    }

    /// A reconfigurer of a proxy over shard groups (`groups` in the order of
    /// `config.groups`, at least one).
    pub fn over_groups(
        path: Option<PathBuf>,
        config: Config,
        groups: Vec<LiveGroup>,
        placement: LivePlacement,
        metrics: Arc<Metrics>,
        log_level: Option<LogLevelSetter>,
    ) -> anyhow::Result<Arc<Self>> {
        let first = groups
            .first()
            .map(|g| g.live.clone())
            .ok_or_else(|| anyhow::anyhow!("no shard group configured"))?;
        let me = Self::new(path, config, first, metrics, log_level);
        let mut me = Arc::into_inner(me)
            .ok_or_else(|| anyhow::anyhow!("reconfigurer shared before it was made"))?;
        me.shards = Some((groups, placement));
        Ok(Arc::new(me))
    }

    /// The configuration in effect (with discovered read-only nodes, if any).
    pub fn effective(&self) -> Config {
        let mut config = lock(&self.effective).clone();
        if let Some(found) = lock(&self.discovered).clone() {
            config.backends.readonly = found;
        }
        config
    }

    /// The topology refresh interval, following reloads.
    pub fn refresh_interval(&self) -> watch::Receiver<Duration> {
        self.refresh_interval.subscribe()
    }

    /// Re-reads the configuration file and applies it.
    pub fn reload_file(&self) -> ReloadOutcome {
        let Some(path) = &self.path else {
            return self.rejected("no configuration file to reload".to_string());
        };
        if let Ok(hash) = file_hash(path) {
            *lock(&self.last_hash) = Some(hash);
        }
        match Config::load(path) {
            Ok(config) => self.apply(config),
            Err(errors) => {
                let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
                self.rejected(format!("{}: {}", path.display(), text.join("; ")))
            }
        }
    }

    /// Applies `new` (already parsed): its live keys now, the others reported.
    pub fn apply(&self, new: Config) -> ReloadOutcome {
        let errors = new.validate();
        if !errors.is_empty() {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return self.rejected(text.join("; "));
        }
        let mut effective = lock(&self.effective);
        if let Some((groups, placement)) = &self.shards {
            return match self.apply_grouped(&mut effective, new, groups, placement) {
                Ok(outcome) => outcome,
                Err(reason) => self.rejected(reason),
            };
        }
        let (next, needs_restart) = merge_live_keys(&effective, &new);
        let readonly = lock(&self.discovered)
            .clone()
            .unwrap_or_else(|| next.backends.readonly.clone());
        if next.log.level != effective.log.level {
            if let Some(set) = &self.log_level {
                if let Err(e) = set(&next.log.level) {
                    return self.rejected(format!("log.level: {e}"));
                }
            }
        }
        let change = match self.live.apply(&next, &readonly) {
            Ok(change) => change,
            Err(e) => return self.rejected(format!("backends: {e:#}")),
        };
        self.refresh_interval
            .send_replace(next.topology.refresh_interval);
        *effective = next;
        self.applied(change, needs_restart)
    }

    fn applied(&self, change: BackendsChange, needs_restart: Vec<String>) -> ReloadOutcome {
        self.metrics.ops.count_reload("applied");
        tracing::info!(
            added = ?change.added,
            removed = ?change.removed,
            writable = ?change.writable,
            "configuration reloaded"
        );
        if !needs_restart.is_empty() {
            tracing::warn!(keys = ?needs_restart, "changed configuration keys need a restart; the old values stay in effect");
        }
        ReloadOutcome::Applied {
            change,
            needs_restart,
        }
    }

    /// [`Self::apply`] over shard groups: refuses a placement that moves an
    /// existing collection, then applies each group's live keys.
    fn apply_grouped(
        &self,
        effective: &mut Config,
        new: Config,
        groups: &[LiveGroup],
        placement: &LivePlacement,
    ) -> Result<ReloadOutcome, String> {
        if new.groups.is_empty() {
            return Err("the new configuration has no [[groups]]: switching to the \
                        single-cluster form needs a restart (and moves every spread collection)"
                .to_string());
        }
        let old_placement = placement.current.load_full();
        let new_names: Vec<String> = new.groups.iter().map(|g| g.name.clone()).collect();
        let new_placement = placement_of(&new.placement, new_names);
        let same = |a: &Placement, b: &Placement| {
            let sorted = |p: &Placement| {
                let mut names = p.groups.clone();
                names.sort();
                names
            };
            sorted(a) == sorted(b) && a.default == b.default && a.pinned == b.pinned
        };
        if !same(&old_placement, &new_placement) {
            let existing = (placement.existing)().map_err(|why| {
                format!("placement: cannot check which collections the change would move: {why}")
            })?;
            let moved = moved_collections(
                existing.iter().map(String::as_str),
                &old_placement,
                &new_placement,
            );
            if !moved.is_empty() {
                let list: Vec<String> = moved
                    .iter()
                    .map(|m| {
                        format!(
                            "{} ({} -> {})",
                            m.collection,
                            m.from.join(","),
                            m.to.join(",")
                        )
                    })
                    .collect();
                return Err(format!(
                    "placement: the change would move existing collections to other shard groups, \
                     leaving their rows where the new rules no longer look: {}; \
                     keep their placement (pin them to where they are) or drop them first",
                    list.join("; ")
                ));
            }
        }
        let (mut next, _) = merge_live_keys(effective, &new);
        let key = |g: &crate::config::GroupConfig| (g.name.clone(), g.meta_uri.clone());
        let mut served: Vec<_> = effective.groups.iter().map(key).collect();
        let mut wanted: Vec<_> = new.groups.iter().map(key).collect();
        served.sort();
        wanted.sort();
        if served == wanted {
            // Same groups: each keeps its place, with the new nodes, and the
            // placement (over the served order) changes live.
            for group in &mut next.groups {
                if let Some(updated) = new.groups.iter().find(|g| g.name == group.name) {
                    group.writable = updated.writable.clone();
                    group.readonly = updated.readonly.clone();
                }
            }
            next.placement = new.placement.clone();
        }
        let mut needs_restart = changed_keys(&next, &new);
        if served != wanted {
            needs_restart.push("groups".to_string());
        }
        // Check every group's nodes before changing any.
        let narrowed: Vec<(&LiveGroup, Config)> = groups
            .iter()
            .filter_map(|live| {
                let group = next.groups.iter().find(|g| g.name == live.name)?;
                Some((live, next.for_group(group)))
            })
            .collect();
        for (live, config) in &narrowed {
            let errors = config.validate();
            if !errors.is_empty() {
                let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
                return Err(format!("group {}: {}", live.name, text.join("; ")));
            }
        }
        if next.log.level != effective.log.level {
            if let Some(set) = &self.log_level {
                set(&next.log.level).map_err(|e| format!("log.level: {e}"))?;
            }
        }
        let mut change = BackendsChange::default();
        for (live, config) in &narrowed {
            for node in std::iter::once(&config.backends.writable).chain(&config.backends.readonly)
            {
                self.metrics.backend_groups.assign(node, &live.name);
            }
            let applied = live
                .live
                .apply(config, &config.backends.readonly)
                .map_err(|e| format!("group {}: backends: {e:#}", live.name))?;
            change.absorb(applied);
        }
        let order: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
        placement
            .current
            .store(Arc::new(placement_of(&next.placement, order)));
        self.refresh_interval
            .send_replace(next.topology.refresh_interval);
        *effective = next;
        Ok(self.applied(change, needs_restart))
    }

    /// Replaces the read-only nodes with those found by discovery.
    pub fn set_discovered(&self, readonly: Vec<String>) -> anyhow::Result<BackendsChange> {
        let effective = lock(&self.effective);
        let change = self.live.apply(&effective, &readonly)?;
        *lock(&self.discovered) = Some(readonly);
        if !change.is_empty() {
            tracing::info!(added = ?change.added, removed = ?change.removed, "discovered read-only nodes changed");
        }
        Ok(change)
    }

    fn rejected(&self, reason: String) -> ReloadOutcome {
        self.metrics.ops.count_reload("rejected");
        tracing::error!(%reason, "configuration reload rejected; the configuration in effect stays");
        ReloadOutcome::Rejected(reason)
    }

    /// Reloads whenever the file's content changes, checked every `period`.
    pub fn spawn_watch(self: &Arc<Self>, period: Duration) -> Option<tokio::task::JoinHandle<()>> {
        let path = self.path.clone()?;
        if period.is_zero() {
            return None;
        }
        let me = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Ok(hash) = file_hash(&path) else {
                    continue; // mid-replace or gone: keep the config in effect
                };
                if *lock(&me.last_hash) != Some(hash) {
                    tracing::info!(path = %path.display(), "configuration file changed");
                    let _ = me.reload_file();
                }
            }
        }))
    }
}

fn file_hash(path: &std::path::Path) -> std::io::Result<u64> {
    let bytes = std::fs::read(path)?;
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    Ok(hasher.finish())
}

/// Locks a mutex, recovering it if a panicking thread poisoned it (the
/// values inside are replaced whole, never left half-written).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl crate::discovery::NodeSink for Reconfigurer {
    fn apply_discovered(&self, readonly: Vec<String>) -> anyhow::Result<()> {
        self.set_discovered(readonly).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_keys_apply_and_the_others_need_a_restart() {
        let mut old = Config::default();
        old.backends.writable = "10.0.0.1:19530".into();
        let mut new = old.clone();
        new.backends.writable = "10.0.0.9:19530".into();
        new.backends.readonly = vec!["10.0.0.2:19530".into()];
        new.log.level = "debug".into();
        new.backends.search_writer_fallback = true;
        new.server.listen = "0.0.0.0:19531".into();
        new.meta.max_connections = 3;
        let (next, restart) = merge_live_keys(&old, &new);
        assert_eq!(next.backends.writable, "10.0.0.9:19530");
        assert_eq!(next.backends.readonly, new.backends.readonly);
        assert_eq!(next.log.level, "debug");
        assert!(next.backends.search_writer_fallback);
        assert_eq!(next.server.listen, old.server.listen);
        assert_eq!(restart, vec!["meta.max_connections", "server.listen"]);
        assert!(merge_live_keys(&old, &old).1.is_empty());
    }
}
