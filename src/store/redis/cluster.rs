//! Redis Cluster: which `--redis` values mean a cluster, the cluster command connection, and
//! where the masters are.
//!
//! A value names a cluster when it lists more than one seed (comma-separated), when a seed uses
//! the `redis+cluster://` (or `rediss+cluster://`) scheme, or when the one server it names reports
//! `cluster_enabled:1`. Seeds after the first may be bare `host:port`: they take the first seed's
//! scheme and credentials (`redis+cluster://:pw@h1:7000,h2:7001,h3:7002`).
//!
//! Every command goes through one redis-rs [`ClusterConnection`]: it routes each single-key command
//! (and each single-key script, and each `MULTI` on one key) to the master owning the key's slot
//! and follows `MOVED`/`ASK`. It keeps one multiplexed connection per node of the slot map.

use std::time::Duration;

use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Value};

use crate::store::StoreError;

/// The seeds of a `--redis` value, and whether it names a cluster.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Seeds {
    /// Plain `redis://` / `rediss://` / `unix://` URLs.
    pub urls: Vec<String>,
    /// True with several seeds or a `+cluster` scheme.
    pub cluster: bool,
}

impl Seeds {
    /// Splits a `--redis` value into seed URLs.
    pub fn parse(value: &str) -> Result<Seeds, StoreError> {
        let items: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let Some(first) = items.first() else {
            return Err(config_error("no Redis URL given", value.to_string()));
        };
        let mut cluster = items.len() > 1;
        let mut strip = |url: &str| -> String {
            match url.split_once("://") {
                Some((scheme, rest)) => match scheme.strip_suffix("+cluster") {
                    Some(plain) => {
                        cluster = true;
                        format!("{plain}://{rest}")
                    }
                    None => url.to_string(),
                },
                None => format!("redis://{url}"),
            }
        };
        let first = strip(first);
        // What a bare `host:port` seed borrows from the first: `scheme://` and `user:pw@`.
        let (scheme, rest) = first.split_once("://").unwrap_or(("redis", &first));
        let authority = rest.split('/').next().unwrap_or_default();
        let userinfo = authority
            .rsplit_once('@')
            .map(|(u, _)| format!("{u}@"))
            .unwrap_or_default();
        let mut urls = vec![first.clone()];
        for item in &items[1..] {
            if item.contains("://") {
                urls.push(strip(item));
            } else {
                urls.push(format!("{scheme}://{userinfo}{item}"));
            }
        }
        Ok(Seeds { urls, cluster })
    }
}

/// A configuration error, as the [`redis::RedisError`] that [`StoreError::Redis`] carries.
pub(super) fn config_error(what: &'static str, detail: String) -> StoreError {
    StoreError::Redis(redis::RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        what,
        detail,
    )))
}

/// True when the server behind `conn` is a cluster node (`INFO cluster` says `cluster_enabled:1`).
/// A server that refuses `INFO` counts as a plain one.
pub(super) async fn is_cluster_node(conn: &mut impl redis::aio::ConnectionLike) -> bool {
    match redis::cmd("INFO")
        .arg("cluster")
        .query_async::<String>(conn)
        .await
    {
        Ok(info) => info.lines().any(|l| l.trim() == "cluster_enabled:1"),
        Err(_) => false,
    }
}

/// Opens the cluster command connection from the seeds, with `timeout` on every response and
/// connection attempt (redis-rs would otherwise use its defaults), and returns it with the first
/// seed's connection info (the template for reaching single nodes).
pub(super) async fn connect(
    urls: &[String],
    timeout: Duration,
) -> Result<(ClusterConnection, ConnectionInfo), StoreError> {
    let infos = urls
        .iter()
        .map(|u| u.as_str().into_connection_info())
        .collect::<Result<Vec<ConnectionInfo>, _>>()?;
    let template = infos[0].clone();
    let client = ClusterClientBuilder::new(infos)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        // Room for one redirect or reconnect after a slot moved or a node failed over.
        .overall_response_timeout(Some(timeout * 2))
        .retries(3)
        .build()?;
    let conn = client.get_async_connection().await?;
    Ok((conn, template))
}

/// One master of the cluster: `host:port`, and how to open a connection to it alone.
pub(super) struct Master {
    pub addr: String,
    pub info: ConnectionInfo,
}

/// The masters that own slots now, from `CLUSTER SLOTS` (each slot range lists its master first).
pub(super) async fn masters(
    conn: &mut ClusterConnection,
    template: &ConnectionInfo,
) -> Result<Vec<Master>, StoreError> {
    let reply: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    let seed_host = match template.addr() {
        ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host.clone(),
        _ => "127.0.0.1".to_string(),
    };
    let mut out: Vec<Master> = Vec::new();
    for (host, port) in parse_slot_masters(reply, &seed_host)? {
        let addr = format!("{host}:{port}");
        if out.iter().any(|m| m.addr == addr) {
            continue;
        }
        let node = match template.addr() {
            ConnectionAddr::TcpTls {
                insecure, tls_params, ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        out.push(Master {
            addr,
            info: template.clone().set_addr(node),
        });
    }
    out.sort_by(|a, b| a.addr.cmp(&b.addr));
    Ok(out)
}

/// The `(host, port)` of the first node of every `CLUSTER SLOTS` range. A node that does not know
/// its own address reports `""` (or `?`): it is the seed's host.
fn parse_slot_masters(reply: Value, seed_host: &str) -> Result<Vec<(String, u16)>, StoreError> {
    let bad = || config_error("unexpected CLUSTER SLOTS reply", String::new());
    let Value::Array(ranges) = reply else {
        return Err(bad());
    };
    let mut out = Vec::new();
    for range in ranges {
        let Value::Array(parts) = range else {
            return Err(bad());
        };
        let Some(Value::Array(node)) = parts.get(2) else {
            return Err(bad());
        };
        let host = match node.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => return Err(bad()),
        };
        let port = match node.get(1) {
            Some(Value::Int(p)) => u16::try_from(*p).map_err(|_| bad())?,
            _ => return Err(bad()),
        };
        let host = if host.is_empty() || host == "?" {
            seed_host.to_string()
        } else {
            host
        };
        out.push((host, port));
    }
    if out.is_empty() {
        return Err(config_error(
            "the Redis Cluster has no slots assigned",
            String::new(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(v: &str) -> (Vec<String>, bool) {
        let s = Seeds::parse(v).unwrap();
        (s.urls, s.cluster)
    }

    #[test]
    fn one_plain_url_is_not_a_cluster() {
        assert_eq!(
            seeds("redis://127.0.0.1:6379/2"),
            (vec!["redis://127.0.0.1:6379/2".into()], false)
        );
        assert_eq!(
            seeds("unix:///tmp/r.sock"),
            (vec!["unix:///tmp/r.sock".into()], false)
        );
    }

    #[test]
    fn several_seeds_or_the_cluster_scheme_are_a_cluster() {
        assert_eq!(
            seeds("redis://a:7000, redis://b:7001"),
            (vec!["redis://a:7000".into(), "redis://b:7001".into()], true)
        );
        assert_eq!(
            seeds("redis+cluster://a:7000"),
            (vec!["redis://a:7000".into()], true)
        );
        assert_eq!(
            seeds("rediss+cluster://u:pw@a:7000,b:7001,redis://c:7002"),
            (
                vec![
                    "rediss://u:pw@a:7000".into(),
                    "rediss://u:pw@b:7001".into(),
                    "redis://c:7002".into()
                ],
                true
            )
        );
        assert!(Seeds::parse(" , ").is_err());
    }

    #[test]
    fn slot_masters_are_the_first_node_of_each_range() {
        let node = |h: &str, p: i64| {
            Value::Array(vec![
                Value::BulkString(h.as_bytes().to_vec()),
                Value::Int(p),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
                node("10.0.0.4", 7003),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node("", 7001)]),
        ]);
        assert_eq!(
            parse_slot_masters(reply, "seed").unwrap(),
            [("10.0.0.1".to_string(), 7000), ("seed".to_string(), 7001)]
        );
        assert!(parse_slot_masters(Value::Array(vec![]), "seed").is_err());
    }
}
