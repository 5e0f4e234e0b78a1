//! The node's live `server_config`: the table `Cmd("get_config ...")` reads
//! and `Cmd("set_config ...")` changes, seeded with what the node really runs
//! with, and the changes that reach the running node: the auto-flush period
//! (`storage.auto_flush_interval`, 0 disables auto-flush) and the segment
//! cache bound (`cache.cache_size`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::server_config::{parse_bytes, ConfigCommand, ServerConfig};
use super::{Engine, NodeOptions, Role};
use crate::status::MilvusResult;

pub struct RuntimeConfig {
    table: Mutex<ServerConfig>,
    flush_period: watch::Sender<Duration>,
    engine: Arc<Engine>,
}

/// Whole seconds of the auto-flush period as `auto_flush_interval` reports
/// it; a sub-second period (tests) is reported as 1, never as 0 (disabled).
fn flush_seconds(period: Duration) -> u64 {
    if period.is_zero() {
        0
    } else {
        period.as_secs_f64().ceil().max(1.0) as u64
    }
}

impl RuntimeConfig {
    /// Milvus' defaults overlaid with the node's own settings.
    pub fn new(opts: &NodeOptions, listen: std::net::SocketAddr, engine: Arc<Engine>) -> Self {
        let mut table = ServerConfig::default();
        let role = match opts.role {
            Role::Writable => "rw",
            Role::ReadOnly => "ro",
        };
        table.seed("cluster", "enable", "true");
        table.seed("cluster", "role", role);
        table.seed(
            "general",
            "meta_uri",
            &crate::meta::redacted(&opts.meta_uri),
        );
        table.seed("network", "bind.address", &listen.ip().to_string());
        table.seed("network", "bind.port", &listen.port().to_string());
        table.seed("storage", "path", &opts.data_dir.display().to_string());
        table.seed(
            "storage",
            "auto_flush_interval",
            &flush_seconds(opts.flush_interval).to_string(),
        );
        table.seed("cache", "cache_size", &opts.cache_bytes.to_string());
        let (flush_period, _) = watch::channel(opts.flush_interval);
        Self {
            table: Mutex::new(table),
            flush_period,
            engine,
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, ServerConfig> {
        // Every mutation is a single insert: a poisoned lock is still consistent.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The auto-flush period as it changes.
    pub fn flush_period(&self) -> watch::Receiver<Duration> {
        self.flush_period.subscribe()
    }

    /// Runs a config command; the reply text is the value (get) or empty (set).
    pub fn run(&self, command: ConfigCommand) -> MilvusResult<String> {
        match command {
            ConfigCommand::GetAll => Ok(self.table().to_json()),
            ConfigCommand::Get { parent, child } => self.table().get(&parent, &child),
            ConfigCommand::Set {
                parent,
                child,
                value,
            } => {
                self.table().set(&parent, &child, &value)?;
                self.apply(&parent, &child, &value);
                Ok(String::new())
            }
        }
    }

    /// Makes a stored (already checked) value take effect.
    fn apply(&self, parent: &str, child: &str, value: &str) {
        match (parent, child) {
            ("storage", "auto_flush_interval") => {
                if let Ok(seconds) = value.parse::<u64>() {
                    tracing::info!(seconds, "auto_flush_interval changed");
                    self.flush_period.send_replace(Duration::from_secs(seconds));
                }
            }
            ("cache", "cache_size") => {
                if let Ok(bytes) = parse_bytes(value) {
                    tracing::info!(bytes, "cache_size changed");
                    self.engine.set_cache_capacity(bytes.max(0) as u64);
                }
            }
            _ => {}
        }
    }
}

/// Flushes the insert buffer every period; a zero period disables auto-flush
/// until it changes. A change restarts the wait with the new period.
pub fn auto_flush_task(
    engine: Arc<Engine>,
    mut period: watch::Receiver<Duration>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let current = *period.borrow_and_update();
            if current.is_zero() {
                if period.changed().await.is_err() {
                    return;
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(current.max(Duration::from_millis(10))) => engine.auto_flush().await,
                changed = period.changed() => if changed.is_err() { return; },
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_period_is_reported_in_whole_seconds() {
        assert_eq!(flush_seconds(Duration::ZERO), 0);
        assert_eq!(flush_seconds(Duration::from_millis(100)), 1);
        assert_eq!(flush_seconds(Duration::from_secs(1)), 1);
        assert_eq!(flush_seconds(Duration::from_millis(2500)), 3);
    }
}
