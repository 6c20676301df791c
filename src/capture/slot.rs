//! The logical replication slot: whether to resume it or (re)create it with a fresh snapshot,
//! and how far behind it is.

use tokio_postgres::Client;

use super::error::{CaptureError, Result};
use super::source::{PgTarget, query_err};
use super::state::SnapshotMarker;
use crate::pg::TlsSettings;

/// A row of `pg_replication_slots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotRow {
    pub plugin: Option<String>,
    pub database: Option<String>,
    pub active_pid: Option<i32>,
    pub confirmed_flush_lsn: Option<String>,
}

/// What to do with the slot at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotPlan {
    /// The slot exists and its snapshot was delivered: stream from its confirmed LSN.
    Resume,
    /// Create the slot (dropping a leftover one first) and deliver a snapshot from it.
    Snapshot { drop_existing: bool },
}

/// Slot names are lower-case letters, digits and underscores, at most 63 bytes.
pub(crate) fn validate_slot_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(CaptureError::InvalidName {
            what: "replication slot",
            name: name.to_string(),
            expected: "1 to 63 lower-case letters, digits or underscores",
        })
    }
}

pub(crate) async fn inspect(client: &Client, slot: &str) -> Result<Option<SlotRow>> {
    let row = client
        .query_opt(
            "SELECT plugin::text, database::text, active_pid, confirmed_flush_lsn::text \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(query_err(format!("looking up replication slot {slot}")))?;
    Ok(row.map(|r| SlotRow {
        plugin: r.get(0),
        database: r.get(1),
        active_pid: r.get(2),
        confirmed_flush_lsn: r.get(3),
    }))
}

/// Decides between resuming and re-snapshotting. Only a slot whose snapshot is recorded as
/// complete is resumed; a slot left by a crash mid-snapshot (or whose marker was lost) is
/// recreated, so the snapshot is redone from a fresh consistent point instead of leaving a gap.
pub(crate) fn plan(
    slot: &str,
    database: &str,
    existing: Option<&SlotRow>,
    marker: Option<&SnapshotMarker>,
) -> Result<SlotPlan> {
    let Some(existing) = existing else {
        return Ok(SlotPlan::Snapshot {
            drop_existing: false,
        });
    };
    let found_db = existing.database.as_deref().unwrap_or("(physical)");
    let found_plugin = existing.plugin.as_deref().unwrap_or("(physical)");
    if found_db != database || found_plugin != "pgoutput" {
        return Err(CaptureError::ForeignSlot {
            slot: slot.to_string(),
            found: format!("database {found_db} with plugin {found_plugin}"),
            expected: format!("database {database} with plugin pgoutput"),
        });
    }
    if let Some(pid) = existing.active_pid {
        return Err(CaptureError::SlotInUse {
            slot: slot.to_string(),
            pid,
        });
    }
    let resumable = marker.is_some_and(|m| {
        m.complete && m.slot == slot && m.database == database && !slot_older_than(existing, m)
    });
    Ok(if resumable {
        SlotPlan::Resume
    } else {
        SlotPlan::Snapshot {
            drop_existing: true,
        }
    })
}

/// A slot confirmed before the marker's consistent point cannot be the slot the marker speaks
/// of (confirmed_flush only moves forward from the consistent point): it was recreated.
fn slot_older_than(existing: &SlotRow, marker: &SnapshotMarker) -> bool {
    let parse = |s: &str| pg_walstream::parse_lsn(s).ok();
    match (
        existing.confirmed_flush_lsn.as_deref().and_then(parse),
        parse(&marker.consistent_point),
    ) {
        (Some(confirmed), Some(point)) => confirmed < point,
        _ => true,
    }
}

pub(crate) async fn drop_slot(client: &Client, slot: &str) -> Result<()> {
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .map_err(query_err(format!("dropping replication slot {slot}")))?;
    Ok(())
}

/// How far a capture slot is behind, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotLag {
    /// WAL the server keeps for this slot: current WAL position minus the slot's restart LSN.
    pub retained_wal_bytes: u64,
    /// The last position capture confirmed (every change before it is in Kafka), `X/Y` form.
    pub confirmed_flush_lsn: Option<String>,
    /// Whether a capture process is connected to the slot.
    pub active: bool,
}

/// Reads the lag of `slot` in the database of `pg_url` (TLS as the URL says).
/// [`CaptureError::SlotMissing`] when the slot does not exist (capture never ran, or was torn
/// down).
pub async fn slot_lag(pg_url: &str, slot: &str) -> Result<SlotLag> {
    let target = PgTarget::parse(pg_url, &TlsSettings::default())?;
    let client = target.connect().await?;
    let row = client
        .query_opt(
            "SELECT active, confirmed_flush_lsn::text, \
                    COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::int8 \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(query_err(format!(
            "reading the lag of replication slot {slot}"
        )))?
        .ok_or_else(|| CaptureError::SlotMissing {
            slot: slot.to_string(),
        })?;
    let retained: i64 = row.get(2);
    Ok(SlotLag {
        active: row.get(0),
        confirmed_flush_lsn: row.get(1),
        retained_wal_bytes: u64::try_from(retained).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot_row(confirmed: &str) -> SlotRow {
        SlotRow {
            plugin: Some("pgoutput".into()),
            database: Some("etldb".into()),
            active_pid: None,
            confirmed_flush_lsn: Some(confirmed.into()),
        }
    }

    fn marker(point: &str, complete: bool) -> SnapshotMarker {
        SnapshotMarker {
            slot: "dqetl_demo".into(),
            database: "etldb".into(),
            consistent_point: point.into(),
            complete,
        }
    }

    #[test]
    fn no_slot_means_a_fresh_snapshot() {
        let decided = plan("dqetl_demo", "etldb", None, Some(&marker("0/100", true))).unwrap();
        assert_eq!(
            decided,
            SlotPlan::Snapshot {
                drop_existing: false
            }
        );
    }

    #[test]
    fn a_slot_with_a_completed_snapshot_resumes() {
        let row = slot_row("0/2000");
        let decided = plan(
            "dqetl_demo",
            "etldb",
            Some(&row),
            Some(&marker("0/100", true)),
        )
        .unwrap();
        assert_eq!(decided, SlotPlan::Resume);
    }

    #[test]
    fn a_slot_left_mid_snapshot_is_recreated() {
        let row = slot_row("0/100");
        let decided = plan(
            "dqetl_demo",
            "etldb",
            Some(&row),
            Some(&marker("0/100", false)),
        )
        .unwrap();
        assert_eq!(
            decided,
            SlotPlan::Snapshot {
                drop_existing: true
            }
        );
        let decided = plan("dqetl_demo", "etldb", Some(&row), None).unwrap();
        assert_eq!(
            decided,
            SlotPlan::Snapshot {
                drop_existing: true
            }
        );
    }

    #[test]
    fn a_slot_older_than_the_marker_is_not_the_marked_slot() {
        let row = slot_row("0/50");
        let decided = plan(
            "dqetl_demo",
            "etldb",
            Some(&row),
            Some(&marker("1/0", true)),
        )
        .unwrap();
        assert_eq!(
            decided,
            SlotPlan::Snapshot {
                drop_existing: true
            }
        );
    }

    #[test]
    fn a_slot_of_another_database_or_plugin_is_never_touched() {
        let mut row = slot_row("0/100");
        row.database = Some("other".into());
        let err = plan("dqetl_demo", "etldb", Some(&row), None).unwrap_err();
        assert!(matches!(err, CaptureError::ForeignSlot { .. }), "{err}");
        let mut row = slot_row("0/100");
        row.plugin = Some("wal2json".into());
        let err = plan("dqetl_demo", "etldb", Some(&row), None).unwrap_err();
        assert!(err.to_string().contains("wal2json"), "{err}");
    }

    #[test]
    fn an_active_slot_is_reported_as_in_use() {
        let mut row = slot_row("0/100");
        row.active_pid = Some(4242);
        let err = plan(
            "dqetl_demo",
            "etldb",
            Some(&row),
            Some(&marker("0/100", true)),
        )
        .unwrap_err();
        assert!(matches!(err, CaptureError::SlotInUse { pid: 4242, .. }));
        assert!(err.is_retryable());
    }

    #[test]
    fn slot_names_are_checked() {
        assert!(validate_slot_name("dqetl_my_stack2").is_ok());
        assert!(validate_slot_name("dqetl-my-stack").is_err());
        assert!(validate_slot_name("").is_err());
        assert!(validate_slot_name(&"a".repeat(64)).is_err());
    }
}
