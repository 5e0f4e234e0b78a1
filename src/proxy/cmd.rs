//! `Cmd`: the commands the proxy answers itself (`status`, `route
//! <collection>`, which explains a search's plan, `conn_stats`, per-backend state), `version` from the first
//! node that answers, and every other command forwarded to the writable node.

use super::cluster::Cluster;
use super::forward::client_call;
use super::route::{self, RoutePlan};
use crate::status::{MilvusError, MilvusResult};
use crate::validate;
use crate::wire::{Command, StringReply};

/// What a `Cmd` text asks of the proxy.
#[derive(Debug, PartialEq, Eq)]
enum ProxyCommand<'a> {
    /// `status`: the proxy is up.
    Status,
    /// `route <collection>`: explain how a search of the collection is routed.
    Route(&'a str),
    /// `version`: the cluster's Milvus version.
    Version,
    /// `conn_stats`: per-backend state and counters as JSON.
    ConnStats,
    /// Anything else: for the writable node.
    Forward,
}

/// Reads a `Cmd` text (surrounding blanks ignored).
fn parse(cmd: &str) -> MilvusResult<ProxyCommand<'_>> {
    let text = cmd.trim();
    if text == "status" {
        return Ok(ProxyCommand::Status);
    }
    if let Some(name) = text.strip_prefix("route") {
        let name = name.trim();
        if name.is_empty() {
            return Err(MilvusError::illegal_argument("usage: route <collection>"));
        }
        return Ok(ProxyCommand::Route(name));
    }
    if text == "version" {
        return Ok(ProxyCommand::Version);
    }
    if text == "conn_stats" {
        return Ok(ProxyCommand::ConnStats);
    }
    Ok(ProxyCommand::Forward)
}

fn text_reply(text: String) -> StringReply {
    StringReply {
        status: None,
        string_reply: text,
    }
}

impl Cluster {
    pub async fn cmd(&self, cmd: String) -> MilvusResult<StringReply> {
        match parse(&cmd)? {
            ProxyCommand::Status => Ok(text_reply("OK".into())),
            ProxyCommand::Route(name) => Ok(text_reply(self.explain_route(name).await?)),
            ProxyCommand::Version => self.version(cmd).await,
            ProxyCommand::ConnStats => {
                // Files owned are counted on a snapshot as fresh as a search's.
                let snapshot = match self.topology.fresh().await {
                    Ok(snapshot) => snapshot,
                    Err(_) => self.topology.current(),
                };
                let stats = super::admin::conn_stats(&self.backends, &snapshot);
                Ok(text_reply(stats.to_string()))
            }
            ProxyCommand::Forward => {
                self.to_writer("Cmd", Command { cmd }, client_call!(cmd))
                    .await
            }
        }
    }

    /// The writer's version; if it is down, any read node's, so clients can
    /// still connect and search.
    async fn version(&self, cmd: String) -> MilvusResult<StringReply> {
        let mut last_err = None;
        for b in std::iter::once(&self.backends.writable).chain(&self.backends.readonly) {
            let request = Command { cmd: cmd.clone() };
            match b
                .call("Cmd", self.request_timeout, |mut c| async move {
                    c.cmd(request).await
                })
                .await
            {
                Ok(reply) => return Ok(reply),
                Err(e) => last_err = Some(e.to_milvus()),
            }
        }
        Err(last_err.unwrap_or_else(|| MilvusError::unexpected("no backend configured")))
    }

    /// `Cmd("route <collection>")`: which files a full search reads and which node gets each.
    async fn explain_route(&self, name: &str) -> MilvusResult<String> {
        validate::collection_name(name)?;
        let view = self.view(name).await?;
        let files = route::select_files(&view, &[])?;
        let snapshot_age_ms = self.topology.age().map(|a| a.as_millis() as u64);
        let (target, plan) = if self.backends.readonly.is_empty() {
            ("writable", RoutePlan::default())
        } else {
            (
                "readonly",
                route::plan(&self.backends.ring, &files, self.healthy())?,
            )
        };
        let nodes: serde_json::Map<String, serde_json::Value> = plan
            .assignments
            .iter()
            .map(|(n, ids)| (n.clone(), serde_json::json!(ids)))
            .collect();
        Ok(serde_json::json!({
            "collection": name,
            "metric": view.metric.name(),
            "dimension": view.root.dimension,
            "partitions": view.partitions.iter().map(|p| &p.partition_tag).collect::<Vec<_>>(),
            "files": files.len(),
            "rows": files.iter().map(|(_, r)| r).sum::<i64>(),
            "search_target": target,
            "nodes": nodes,
            "unhealthy": self.backends.readonly.iter().filter(|b| !b.is_healthy()).map(|b| &b.addr).collect::<Vec<_>>(),
            "snapshot_age_ms": snapshot_age_ms,
        })
        .to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ErrorCode;

    #[test]
    fn parses_the_commands_the_proxy_answers_itself() {
        assert_eq!(parse("status").unwrap(), ProxyCommand::Status);
        assert_eq!(parse("  status\n").unwrap(), ProxyCommand::Status);
        assert_eq!(parse("version").unwrap(), ProxyCommand::Version);
        assert_eq!(parse("route  c1 ").unwrap(), ProxyCommand::Route("c1"));
        assert_eq!(parse("route").unwrap_err().code, ErrorCode::IllegalArgument);
        assert_eq!(
            parse(" route  ").unwrap_err().code,
            ErrorCode::IllegalArgument
        );
        assert_eq!(parse("conn_stats").unwrap(), ProxyCommand::ConnStats);
        assert_eq!(parse("mode").unwrap(), ProxyCommand::Forward);
        assert_eq!(parse("statuses").unwrap(), ProxyCommand::Forward);
    }
}
