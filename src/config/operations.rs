//! The settings of the operating features: `[reload]` (live
//! reconfiguration) and `[discovery]` (where read-only nodes come from), and
//! their checks. `[server] drain_delay` lives with the server settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[reload]`: re-reading the configuration file while serving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadConfig {
    /// How often the file is checked for a change (mtime and content hash);
    /// zero disables the check (SIGHUP still reloads).
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch_interval: Duration::from_secs(2),
        }
    }
}

/// Where the read-only nodes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryMode {
    /// `backends.readonly`.
    #[default]
    Static,
    /// Kubernetes EndpointSlices (needs the `kube` cargo feature).
    Kubernetes,
}

/// `[discovery]`: read-only nodes from Kubernetes instead of the static list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    pub mode: DiscoveryMode,
    /// Namespace of the EndpointSlices.
    pub namespace: String,
    /// Label selector of the EndpointSlices, e.g. `kubernetes.io/service-name=milvus-ro`.
    pub label_selector: String,
    /// The endpoint port: its name (e.g. `grpc`) or number (e.g. `19530`).
    pub port: String,
    /// How often the EndpointSlices are listed.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// API server URL; empty = in cluster (`https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`).
    pub api_server: String,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            mode: DiscoveryMode::Static,
            namespace: "default".to_string(),
            label_selector: String::new(),
            port: "19530".to_string(),
            poll_interval: Duration::from_secs(5),
            api_server: String::new(),
        }
    }
}

/// The problems of `[discovery]` (`[reload]` has none: zero disables it).
pub(super) fn check_discovery(discovery: &DiscoveryConfig) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    if discovery.mode != DiscoveryMode::Kubernetes {
        return errors;
    }
    if !cfg!(feature = "kube") {
        errors.push(ConfigError::new(
            "discovery.mode",
            "\"kubernetes\" needs a mishards built with `--features kube`".to_string(),
        ));
    }
    if discovery.namespace.trim().is_empty() {
        errors.push(ConfigError::new(
            "discovery.namespace",
            "required".to_string(),
        ));
    }
    if discovery.label_selector.trim().is_empty() {
        errors.push(ConfigError::new(
            "discovery.label_selector",
            "required: e.g. \"kubernetes.io/service-name=milvus-ro\"".to_string(),
        ));
    }
    if discovery.port.trim().is_empty() || discovery.port.trim() == "0" {
        errors.push(ConfigError::new(
            "discovery.port",
            "required: the endpoint port's name or number".to_string(),
        ));
    }
    if discovery.poll_interval.is_zero() {
        errors.push(ConfigError::new(
            "discovery.poll_interval",
            "must be greater than 0".to_string(),
        ));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_discovery_needs_nothing_and_kubernetes_needs_a_selector() {
        assert!(check_discovery(&DiscoveryConfig::default()).is_empty());
        let k8s = DiscoveryConfig {
            mode: DiscoveryMode::Kubernetes,
            label_selector: String::new(),
            poll_interval: Duration::ZERO,
            ..DiscoveryConfig::default()
        };
        let keys: Vec<String> = check_discovery(&k8s)
            .iter()
            .map(|e| e.key.clone())
            .collect();
        assert!(keys.contains(&"discovery.label_selector".to_string()));
        assert!(keys.contains(&"discovery.poll_interval".to_string()));
        assert_eq!(
            keys.contains(&"discovery.mode".to_string()),
            !cfg!(feature = "kube")
        );
    }
}
