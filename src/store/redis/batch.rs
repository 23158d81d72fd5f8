//! Appends from many tasks, written to Redis as pipelines.
//!
//! One `XADD` per request costs a write on our side and a read on Redis's, per command: at a few
//! hundred thousand appends a second that, not Redis's work, is the limit (compare
//! `redis-benchmark -P 1` with `-P 16`). Appends go to one task instead, which sends whatever has
//! queued up as one pipeline. A few pipelines may be in flight at once; while they are, new
//! appends wait in the queue and leave together in the next one, so batches grow with the load
//! and an append alone still leaves at once.
//!
//! Each command in a pipeline succeeds or fails on its own (`ignore_errors`), as it would sent
//! alone; a transport error or timeout fails the whole batch, which, as for one command, may or
//! may not have been stored.

use std::sync::Arc;

use redis::aio::ConnectionManager;
use redis::{Cmd, RedisResult, Value};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Pipelines in flight at once.
const IN_FLIGHT: usize = 4;
/// Most commands in one pipeline.
const MAX_BATCH: usize = 512;

struct Job {
    cmd: Cmd,
    reply: oneshot::Sender<RedisResult<Value>>,
}

/// The queue in front of the batching task; the task ends when this is dropped.
pub(super) struct Batcher {
    tx: mpsc::UnboundedSender<Job>,
}

impl Batcher {
    /// Starts the batching task on `conn`. Must be called inside a Tokio runtime.
    pub fn start(conn: ConnectionManager) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, conn));
        Batcher { tx }
    }

    /// Sends `cmd` with the next pipeline and returns its reply.
    pub async fn send(&self, cmd: Cmd) -> RedisResult<Value> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { cmd, reply })
            .map_err(|_| gone("the batching task has stopped"))?;
        answer
            .await
            .unwrap_or_else(|_| Err(gone("the batching task dropped the command")))
    }
}

fn gone(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "append not sent", what.to_string()))
}

async fn run(mut rx: mpsc::UnboundedReceiver<Job>, conn: ConnectionManager) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waiting for a free slot is what lets the next batch fill up.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut conn = conn.clone();
        tokio::spawn(async move {
            send(&mut conn, batch).await;
            drop(permit);
        });
    }
}

async fn send(conn: &mut ConnectionManager, mut batch: Vec<Job>) {
    if batch.len() == 1 {
        let job = batch.pop().expect("one job");
        let _ = job.reply.send(job.cmd.query_async(conn).await);
        return;
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let replies: Vec<_> = batch
        .into_iter()
        .map(|job| {
            pipe.add_command(job.cmd);
            job.reply
        })
        .collect();
    match pipe.query_async::<Vec<RedisResult<Value>>>(conn).await {
        Ok(results) if results.len() == replies.len() => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Ok(results) => {
            let e = redis::RedisError::from((
                redis::ErrorKind::Client,
                "pipeline reply of the wrong length",
                format!("{} replies to {} commands", results.len(), replies.len()),
            ));
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
