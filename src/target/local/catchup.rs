//! Waiting until the pipeline has caught up with the source: first capture has confirmed the
//! WAL up to where it stood when the wait began (every change written before is in Kafka), then
//! the processor's consumer group has committed up to the topics' end offsets of that moment
//! (every message is in the lake).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::children;
use super::console::{Reporter, StepResult};
use super::error::LocalError;
use super::kafka::{self, TopicLag};
use super::process;
use super::stack::{self, LocalState, StackDir, Worker};

const POLL: Duration = Duration::from_millis(500);

/// What to wait for.
#[derive(Debug, Clone)]
pub struct CatchUp {
    pub slot: String,
    pub group: String,
    pub topics: Vec<String>,
    /// For the whole wait (both stages).
    pub timeout: Duration,
}

/// How the wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaughtUp {
    /// Messages the processor consumed during the wait.
    pub messages: u64,
    pub waited: Duration,
}

/// Waits for capture, then for the processor. Fails with a clear message when a stage does not
/// finish before the timeout or its process stops.
pub async fn wait_caught_up(
    dir: &StackDir,
    state: &LocalState,
    target: &CatchUp,
    reporter: &mut dyn Reporter,
) -> Result<CaughtUp, LocalError> {
    let started = Instant::now();
    let deadline = started + target.timeout;

    reporter.begin("capture", "waiting for capture to confirm the WAL");
    wait_for_capture(dir, state, target, deadline, reporter)
        .await
        .inspect_err(|e| reporter.end(&StepResult::failed("capture", e.to_string())))?;
    reporter.end(&StepResult::done(
        "capture",
        format!("slot {} caught up: every change is in Kafka", target.slot),
    ));

    reporter.begin("process", "waiting for the processor");
    let messages = wait_for_processor(dir, state, target, deadline, reporter)
        .inspect_err(|e| reporter.end(&StepResult::failed("process", e.to_string())))?;
    reporter.end(&StepResult::done(
        "process",
        format!(
            "group {} caught up: consumer lag 0 ({messages} messages during the wait)",
            target.group
        ),
    ));
    Ok(CaughtUp {
        messages,
        waited: started.elapsed(),
    })
}

async fn wait_for_capture(
    dir: &StackDir,
    state: &LocalState,
    target: &CatchUp,
    deadline: Instant,
    reporter: &mut dyn Reporter,
) -> Result<(), LocalError> {
    let url = stack::pg_url(state);
    let sql = |what: &'static str| {
        let url = url.clone();
        move |source| LocalError::Sql {
            url,
            what: what.to_string(),
            source,
        }
    };
    let (client, connection) = crate::pg::connect_url(&url)
        .await
        .map_err(LocalError::connect(&url))?;
    let connection = tokio::spawn(connection);
    let result = async {
        let wal_end: String = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(sql("cannot read the current WAL position"))?
            .get(0);
        let mut first_behind: Option<u64> = None;
        loop {
            let behind: Option<i64> = client
                .query_opt(
                    "SELECT pg_wal_lsn_diff($1::text::pg_lsn, confirmed_flush_lsn)::bigint \
                     FROM pg_replication_slots WHERE slot_name = $2",
                    &[&wal_end, &target.slot],
                )
                .await
                .map_err(sql("cannot read pg_replication_slots"))?
                .and_then(|row| row.get(0));
            match behind {
                Some(bytes) if bytes <= 0 => return Ok(()),
                Some(bytes) => {
                    let bytes = u64::try_from(bytes).unwrap_or(0);
                    let total = *first_behind.get_or_insert(bytes);
                    reporter.progress(
                        "capture",
                        total.saturating_sub(bytes),
                        Some(total.max(bytes)),
                        &format!("{bytes} bytes of WAL to confirm"),
                    );
                }
                None => reporter.progress("capture", 0, None, "waiting for the replication slot"),
            }
            ensure_running(dir, state, Worker::Capture)?;
            if Instant::now() >= deadline {
                return Err(LocalError::Timeout {
                    what: "capture catching up".into(),
                    waited: target.timeout,
                    detail: format!(
                        "slot {} is {} up to WAL position {wal_end}; see {}",
                        target.slot,
                        match behind {
                            Some(bytes) => format!("{bytes} bytes short of confirming"),
                            None => "missing, so nothing is confirmed".to_string(),
                        },
                        dir.worker_log(Worker::Capture).display()
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
    .await;
    drop(client);
    let _ = connection.await;
    result
}

fn wait_for_processor(
    dir: &StackDir,
    state: &LocalState,
    target: &CatchUp,
    deadline: Instant,
    reporter: &mut dyn Reporter,
) -> Result<u64, LocalError> {
    let bootstrap = stack::bootstrap(state);
    // Everything capture delivered is below these offsets; later changes are not waited for.
    let ends: BTreeMap<(String, i32), i64> =
        kafka::consumer_lag(&bootstrap, &target.group, &target.topics)?
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| ((t.topic.clone(), p.partition), p.high))
            })
            .collect();
    let mut total: Option<u64> = None;
    loop {
        let lags = kafka::consumer_lag(&bootstrap, &target.group, &target.topics)?;
        let remaining = remaining(&lags, &ends);
        let total = *total.get_or_insert(remaining);
        reporter.progress(
            "process",
            total.saturating_sub(remaining),
            Some(total.max(remaining)),
            &format!("{remaining} messages to process"),
        );
        if remaining == 0 {
            return Ok(total);
        }
        ensure_running(dir, state, Worker::Process)?;
        if Instant::now() >= deadline {
            let behind: Vec<String> = lags
                .iter()
                .filter(|t| t.lag() > 0)
                .map(|t| format!("{} {}", t.topic, t.lag()))
                .collect();
            return Err(LocalError::Timeout {
                what: "the processor catching up".into(),
                waited: target.timeout,
                detail: format!(
                    "group {} still has {remaining} messages to commit ({}); see {}",
                    target.group,
                    behind.join(", "),
                    dir.worker_log(Worker::Process).display()
                ),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Messages below the recorded end offsets that the group has not committed.
fn remaining(lags: &[TopicLag], ends: &BTreeMap<(String, i32), i64>) -> u64 {
    lags.iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
        .map(|(t, p)| {
            let end = ends
                .get(&(t.topic.clone(), p.partition))
                .copied()
                .unwrap_or(p.high);
            let from = p.committed.unwrap_or(p.low).max(p.low);
            u64::try_from(end - from).unwrap_or(0)
        })
        .sum()
}

fn ensure_running(dir: &StackDir, state: &LocalState, worker: Worker) -> Result<(), LocalError> {
    if children::running_worker(dir, Some(state), worker).is_some() {
        return Ok(());
    }
    let log = dir.worker_log(worker);
    Err(LocalError::Stalled {
        what: format!("`dqetl {}`", worker.name()),
        detail: format!(
            "it is not running; its log {} ends with:\n{}",
            log.display(),
            process::log_tail(&log, 20)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::local::kafka::PartitionLag;

    #[test]
    fn only_messages_below_the_recorded_ends_count_as_remaining() {
        let lags = vec![TopicLag {
            topic: "cdc-a".into(),
            exists: true,
            partitions: vec![
                PartitionLag {
                    partition: 0,
                    low: 0,
                    high: 20,
                    committed: Some(10),
                },
                PartitionLag {
                    partition: 1,
                    low: 0,
                    high: 5,
                    committed: None,
                },
            ],
        }];
        let mut ends = BTreeMap::new();
        ends.insert(("cdc-a".to_string(), 0), 12);
        ends.insert(("cdc-a".to_string(), 1), 5);
        // Partition 0: 2 of the recorded 12 left (later messages are not waited for);
        // partition 1: nothing committed yet, all 5 left.
        assert_eq!(remaining(&lags, &ends), 7);
        ends.insert(("cdc-a".to_string(), 0), 8);
        assert_eq!(remaining(&lags, &ends), 5);
    }
}
