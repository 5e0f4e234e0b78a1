//! TLS with rustls (ring provider) from PEM files that are re-read when they
//! change: on the client listener (`listener`, `[tls]`) and from the proxy to
//! its backends (`backend`, `[backend_tls]`). This file holds what both use:
//! reading PEM certificates and a configuration rebuilt when its files'
//! modification times move (a broken new file is logged and the previous
//! configuration kept).

pub mod backend;
pub mod listener;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::RootCertStore;

pub use backend::{BackendTls, BackendTlsFiles};
pub use listener::{incoming, server_config, ReloadingConfig, TlsConnection, TlsFiles};

/// The crypto provider of every TLS configuration here: ring (no C
/// toolchain step, unlike aws-lc).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file; an error (naming `what` and the path)
/// when it cannot be read or holds none.
fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))
}

/// The CA certificates of a PEM file as a root store.
fn roots(path: &Path, what: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, what)? {
        roots
            .add(cert)
            .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// PEM files that make one rustls configuration.
pub trait CertificateFiles: Send + Sync + 'static {
    type Config: Send + Sync + 'static;

    /// Every file the configuration is read from.
    fn paths(&self) -> Vec<&PathBuf>;

    /// Reads the files into a configuration.
    fn build(&self) -> Result<Self::Config, String>;

    /// What the configuration is for, in log lines.
    fn purpose(&self) -> &'static str;
}

/// The modification times of `files`, to notice a change.
fn stamps<F: CertificateFiles>(files: &F) -> Vec<Option<SystemTime>> {
    files
        .paths()
        .into_iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// A configuration and the modification times of the files it was read from.
type Stamped<C> = (Arc<C>, Vec<Option<SystemTime>>);

/// The current configuration of some files, rebuilt when they change.
pub struct Reloading<F: CertificateFiles> {
    files: F,
    current: RwLock<Stamped<F::Config>>,
}

impl<F: CertificateFiles> Reloading<F> {
    /// Reads the files once; an error here stops the start.
    pub fn load(files: F) -> Result<Arc<Self>, String> {
        let stamps = stamps(&files);
        let config = Arc::new(files.build()?);
        Ok(Arc::new(Self {
            files,
            current: RwLock::new((config, stamps)),
        }))
    }

    /// The configuration in effect.
    pub fn current(&self) -> Arc<F::Config> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.0.clone()
    }

    /// Rebuilds the configuration when a file's modification time moved.
    /// Returns whether it was replaced; a broken file keeps the old one.
    pub fn reload_if_changed(&self) -> bool {
        let stamps = stamps(&self.files);
        {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            if current.1 == stamps {
                return false;
            }
        }
        let purpose = self.files.purpose();
        match self.files.build() {
            Ok(config) => {
                let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
                *current = (Arc::new(config), stamps);
                tracing::info!(purpose, "TLS certificate files changed; reloaded");
                true
            }
            Err(e) => {
                // Remember the stamps: the same broken files are not retried
                // (and logged) every period.
                let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
                current.1 = stamps;
                tracing::error!(purpose, error = %e, "TLS files changed but cannot be used; keeping the previous ones");
                false
            }
        }
    }

    /// Checks the files every `period` until aborted.
    pub fn spawn_reloader(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period.max(Duration::from_millis(100)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.reload_if_changed();
            }
        })
    }
}

/// Blank (whitespace-only) config values mean "not set".
fn set(value: &str) -> Option<PathBuf> {
    (!value.trim().is_empty()).then(|| PathBuf::from(value))
}
