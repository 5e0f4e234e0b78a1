//! `Cmd`: the commands the proxy answers itself (`status`, `route
//! <collection>`, which explains a search's plan, `conn_stats`, per-backend
//! state), `version` from the first node that answers, `set_config` sent to
//! every node (each Milvus node has its own configuration), and every other
//! command (`get_config` included) forwarded to the writable node.

use super::cluster::Cluster;
use super::forward::client_call;
use super::route::{self, RoutePlan};
use crate::status::{MilvusError, MilvusResult};
use crate::validate;
use crate::wire::{Command, ErrorCode, StringReply};

/// What a `Cmd` text asks of the proxy.
#[derive(Debug, PartialEq, Eq)]
enum ProxyCommand<'a> {
    /// `status`: the proxy is up.
    Status,
    /// `route <collection>`: explain how a search of the collection is routed.
    Route(&'a str),
    /// `version`: the cluster's Milvus version.
    Version,
    /// `set_config ...`: for every node.
    SetConfig,
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
    // Milvus recognises config commands by their first 10 characters.
    if text.starts_with("set_config") {
        return Ok(ProxyCommand::SetConfig);
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
            ProxyCommand::SetConfig => self.set_config_everywhere(cmd).await,
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

    /// `set_config` on the writer and every read-only node, in parallel.
    /// The answer is the writer's; if any node refused or could not be
    /// reached, an error naming it (nodes that accepted keep the value:
    /// Milvus has no way to take a `set_config` back).
    async fn set_config_everywhere(&self, cmd: String) -> MilvusResult<StringReply> {
        let nodes: Vec<_> = std::iter::once(&self.backends.writable)
            .chain(&self.backends.readonly)
            .collect();
        let calls = nodes.iter().map(|b| {
            let request = Command { cmd: cmd.clone() };
            b.call("Cmd", self.request_timeout, |mut c| async move {
                c.cmd(request).await
            })
        });
        let results = futures::future::join_all(calls).await;
        let mut writer_reply = None;
        let mut refusals = Vec::new();
        for (i, (b, result)) in nodes.iter().zip(results).enumerate() {
            let role = if i == 0 { "writable" } else { "read-only" };
            let failure = match result {
                Err(e) => Some(e.to_milvus()),
                Ok(reply) => match reply.status.as_ref().filter(|s| s.error_code != 0) {
                    Some(s) => Some(MilvusError::new(
                        ErrorCode::try_from(s.error_code).unwrap_or(ErrorCode::UnexpectedError),
                        s.reason.clone(),
                    )),
                    None => {
                        if i == 0 {
                            writer_reply = Some(reply);
                        }
                        None
                    }
                },
            };
            if let Some(e) = failure {
                refusals.push((format!("{role} node {}", b.addr), e));
            }
        }
        match (writer_reply, refusals.first()) {
            (Some(reply), None) => Ok(reply),
            (_, Some((_, first))) => {
                let all: Vec<String> = refusals
                    .iter()
                    .map(|(node, e)| format!("{node}: {}", e.reason))
                    .collect();
                Err(MilvusError::new(
                    first.code,
                    format!(
                        "set_config refused by {}; nodes not listed applied it",
                        all.join("; ")
                    ),
                ))
            }
            (None, None) => Err(MilvusError::unexpected("no writable node configured")),
        }
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
                route::plan(&self.backends.ring, &files, self.healthy())
                    .map_err(|e| self.explain_unplaced(e))?,
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
        assert_eq!(
            parse("set_config storage.auto_flush_interval 2").unwrap(),
            ProxyCommand::SetConfig
        );
        // A malformed one is still every node's to refuse, as Milvus would.
        assert_eq!(parse("set_config").unwrap(), ProxyCommand::SetConfig);
        assert_eq!(
            parse("get_config storage.auto_flush_interval").unwrap(),
            ProxyCommand::Forward
        );
    }
}
