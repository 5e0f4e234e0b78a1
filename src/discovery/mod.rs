//! Where the read-only nodes come from when not from `backends.readonly`:
//! Kubernetes EndpointSlices (`kubernetes`, behind the `kube` cargo
//! feature). A discovered change is applied like a live reload: nodes join
//! the ring, removed ones drain.

#[cfg(feature = "kube")]
pub mod kubernetes;

use std::sync::Arc;

use crate::config::{DiscoveryConfig, DiscoveryMode};

/// Where discovered read-only nodes go: the proxy applies them like a live
/// reload (`proxy::reload::Reconfigurer`). A trait, so discovery does not
/// depend on the proxy.
pub trait NodeSink: Send + Sync + 'static {
    /// Makes `readonly` the read-only nodes in effect.
    fn apply_discovered(&self, readonly: Vec<String>) -> anyhow::Result<()>;
}

/// Starts the discovery `config` asks for, if any.
pub fn spawn(
    config: &DiscoveryConfig,
    reconfigurer: Arc<dyn NodeSink>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    match config.mode {
        DiscoveryMode::Static => Ok(None),
        #[cfg(feature = "kube")]
        DiscoveryMode::Kubernetes => {
            let client = kubernetes::KubeClient::new(config)?;
            Ok(Some(kubernetes::spawn_poller(
                client,
                config.clone(),
                reconfigurer,
            )))
        }
        #[cfg(not(feature = "kube"))]
        DiscoveryMode::Kubernetes => {
            let _ = reconfigurer;
            anyhow::bail!(
                "discovery.mode = \"kubernetes\" needs a mishards built with `--features kube`"
            )
        }
    }
}
