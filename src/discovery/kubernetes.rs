//! Read-only nodes from Kubernetes EndpointSlices (`discovery.k8s.io/v1`)
//! selected by label in one namespace: every ready endpoint address with the
//! configured port (by name or number) is a node.
//!
//! Plain HTTPS + JSON against the API server (reqwest with rustls) rather
//! than the `kube` crate, which would bring a large dependency tree for one
//! list call. The slices are listed periodically instead of watched: a
//! list of a few slices every few seconds is cheap for the API server, and
//! it needs no resourceVersion bookkeeping or handling of expired watches
//! (410 Gone); a missed change is picked up by the next list. In cluster,
//! the service account token is re-read for every list (bound tokens rotate).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use super::NodeSink;
use crate::config::DiscoveryConfig;

const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The parts of an `EndpointSliceList` discovery reads.
#[derive(Debug, Deserialize)]
pub struct EndpointSliceList {
    #[serde(default)]
    pub items: Vec<EndpointSlice>,
}

#[derive(Debug, Deserialize)]
pub struct EndpointSlice {
    #[serde(default)]
    pub endpoints: Option<Vec<Endpoint>>,
    #[serde(default)]
    pub ports: Option<Vec<EndpointPort>>,
}

#[derive(Debug, Deserialize)]
pub struct Endpoint {
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub conditions: Option<Conditions>,
}

#[derive(Debug, Deserialize)]
pub struct Conditions {
    pub ready: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct EndpointPort {
    pub name: Option<String>,
    pub port: Option<i32>,
}

/// `host:port` of every ready endpoint, sorted and distinct. `port` is a
/// port name or number; slices without that port are skipped. An unknown
/// ready condition counts as ready, as the EndpointSlice API specifies.
pub fn ready_addresses(list: &EndpointSliceList, port: &str) -> Vec<String> {
    let wanted_number: Option<i32> = port.trim().parse().ok();
    let mut found = Vec::new();
    for slice in &list.items {
        let Some(number) = slice.ports.iter().flatten().find_map(|p| {
            let matches = match wanted_number {
                Some(n) => p.port == Some(n),
                None => p.name.as_deref() == Some(port.trim()),
            };
            if matches {
                p.port
            } else {
                None
            }
        }) else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !ready {
                continue;
            }
            for address in &endpoint.addresses {
                if address.contains(':') {
                    found.push(format!("[{address}]:{number}"));
                } else {
                    found.push(format!("{address}:{number}"));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Lists EndpointSlices from the API server.
pub struct KubeClient {
    http: reqwest::Client,
    url: url::Url,
    token_file: Option<std::path::PathBuf>,
}

impl KubeClient {
    /// The client of `config.api_server`, or in cluster when it is empty.
    pub fn new(config: &DiscoveryConfig) -> anyhow::Result<KubeClient> {
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .use_rustls_tls();
        let dir = Path::new(SERVICE_ACCOUNT_DIR);
        let base = if config.api_server.trim().is_empty() {
            let host = std::env::var("KUBERNETES_SERVICE_HOST")
                .context("discovery: KUBERNETES_SERVICE_HOST is not set (not in a cluster?); set discovery.api_server")?;
            let port =
                std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".to_string());
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            let ca = std::fs::read(dir.join("ca.crt"))
                .with_context(|| format!("discovery: cannot read {}/ca.crt", dir.display()))?;
            http = http.add_root_certificate(
                reqwest::Certificate::from_pem(&ca).context("discovery: bad ca.crt")?,
            );
            format!("https://{host}:{port}")
        } else {
            config.api_server.trim().trim_end_matches('/').to_string()
        };
        let token_file = Some(dir.join("token")).filter(|p| p.exists());
        let mut url = url::Url::parse(&format!(
            "{base}/apis/discovery.k8s.io/v1/namespaces/{}/endpointslices",
            config.namespace.trim()
        ))
        .context("discovery: bad API server URL")?;
        url.query_pairs_mut()
            .append_pair("labelSelector", config.label_selector.trim());
        Ok(KubeClient {
            http: http.build().context("discovery: HTTP client")?,
            url,
            token_file,
        })
    }

    pub async fn list(&self) -> anyhow::Result<EndpointSliceList> {
        let mut request = self.http.get(self.url.clone());
        if let Some(file) = &self.token_file {
            let token = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            request = request.bearer_auth(token.trim());
        }
        let response = request.send().await.context("EndpointSlice list")?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            anyhow::bail!("EndpointSlice list answered {status}: {}", body.trim());
        }
        response
            .json::<EndpointSliceList>()
            .await
            .context("EndpointSlice list: unreadable JSON")
    }
}

/// Lists the slices every `poll_interval` and applies the ready addresses.
/// A failed list keeps the nodes in effect.
pub fn spawn_poller(
    client: KubeClient,
    config: DiscoveryConfig,
    reconfigurer: Arc<dyn NodeSink>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(config.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<Vec<String>> = None;
        loop {
            tick.tick().await;
            let found = match client.list().await {
                Ok(list) => ready_addresses(&list, &config.port),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "discovery failed; keeping the nodes in effect");
                    continue;
                }
            };
            if last.as_ref() == Some(&found) {
                continue;
            }
            match reconfigurer.apply_discovered(found.clone()) {
                Ok(_) => last = Some(found),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "discovered nodes not applied"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn endpoint_slices_give_only_ready_endpoints_with_the_port() {
        let list: EndpointSliceList = serde_json::from_value(serde_json::json!({
            "items": [
                {"ports": [{"name": "grpc", "port": 19530}, {"name": "metrics", "port": 9091}],
                 "endpoints": [
                    {"addresses": ["10.0.0.2"], "conditions": {"ready": true}},
                    {"addresses": ["10.0.0.3"], "conditions": {"ready": false}},
                    {"addresses": ["10.0.0.4"]},
                    {"addresses": ["fd00::5"], "conditions": {"ready": true}}
                 ]},
                {"ports": [{"name": "other", "port": 8080}],
                 "endpoints": [{"addresses": ["10.0.0.9"]}]},
                {"ports": [{"name": "grpc", "port": 19530}], "endpoints": null}
            ]
        }))
        .unwrap();
        let by_name = ready_addresses(&list, "grpc");
        assert_eq!(
            by_name,
            ["10.0.0.2:19530", "10.0.0.4:19530", "[fd00::5]:19530"]
        );
        assert_eq!(ready_addresses(&list, "19530"), by_name);
        assert!(ready_addresses(&list, "nope").is_empty());
    }
}
