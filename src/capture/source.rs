//! The source database side of setup: connections, the catalog description of each configured
//! table, replica identity and the publication.

use tokio_postgres::Client;

use super::error::{CaptureError, Result};
use crate::config::spec::{ConfigSpec, TableSpec};
use crate::pg::{PgConfig, TlsSettings, split_tls_params};

/// Where the source database is. The URL never carries a password: local clusters trust
/// loopback connections, anything else takes it from `PGPASSWORD` (read by both clients).
#[derive(Debug, Clone)]
pub(crate) struct PgTarget {
    /// The URL without its TLS parameters; the replication URL adds the resolved ones back.
    url: String,
    pg: PgConfig,
}

impl PgTarget {
    /// `url`, its own `sslmode`/`sslrootcert` taken over `tls_defaults`.
    pub(crate) fn parse(url: &str, tls_defaults: &TlsSettings) -> Result<Self> {
        let (stripped, _) = split_tls_params(url).map_err(CaptureError::Url)?;
        let mut pg = PgConfig::parse(url, "the source database URL", tls_defaults)
            .map_err(CaptureError::Url)?;
        if pg.tokio().get_password().is_none()
            && let Ok(password) = std::env::var("PGPASSWORD")
        {
            pg.tokio_mut().password(password);
        }
        if pg.tokio().get_dbname().is_none() {
            return Err(CaptureError::InvalidUrl {
                reason: "the URL names no database".into(),
            });
        }
        Ok(PgTarget { url: stripped, pg })
    }

    /// `host:port/db`, for logs and errors (never the password).
    pub(crate) fn describe(&self) -> String {
        self.pg.describe()
    }

    pub(crate) fn database(&self) -> &str {
        self.pg.tokio().get_dbname().unwrap_or_default()
    }

    /// The same URL asking for a logical replication (walsender) connection, with the TLS
    /// settings in effect spelled out: pg_walstream reads them from the URL only (it
    /// understands every sslmode and sslrootcert itself).
    pub(crate) fn replication_url(&self) -> String {
        let mut params = Vec::new();
        let tls = self.pg.tls();
        if let Some(mode) = tls.mode {
            params.push(format!("sslmode={mode}"));
        }
        if let Some(root) = &tls.root_cert {
            let encoded: String = percent_encoding::percent_encode(
                root.as_os_str().as_encoded_bytes(),
                percent_encoding::NON_ALPHANUMERIC,
            )
            .collect();
            params.push(format!("sslrootcert={encoded}"));
        }
        params.push("replication=database".into());
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}{}", self.url, params.join("&"))
    }

    /// A normal connection; its driver task ends when the client is dropped.
    pub(crate) async fn connect(&self) -> Result<Client> {
        let (client, connection) =
            self.pg
                .connect()
                .await
                .map_err(|source| CaptureError::Connect {
                    target: self.describe(),
                    source,
                })?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "source connection closed");
            }
        });
        Ok(client)
    }
}

/// The cluster's system identifier: LSNs of different clusters are not comparable.
pub(crate) async fn system_identifier(client: &Client) -> Result<String> {
    let row = client
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .await
        .map_err(query_err("reading the system identifier"))?;
    row.try_get(0)
        .map_err(query_err("reading the system identifier"))
}

pub(crate) fn query_err(
    doing: impl Into<String>,
) -> impl FnOnce(tokio_postgres::Error) -> CaptureError {
    let doing = doing.into();
    move |source| CaptureError::Query { doing, source }
}

/// `"name"` with embedded quotes doubled.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One column of a source table, as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceColumn {
    pub name: String,
    pub type_oid: u32,
    /// `attstorage` is extended or external: large values live out of line (TOAST), and pgoutput
    /// sends such a value untouched by an UPDATE as "unchanged" with no data.
    pub out_of_line: bool,
}

/// A configured table, resolved against the catalog.
#[derive(Debug, Clone)]
pub(crate) struct SourceTable {
    pub spec: TableSpec,
    pub schema: String,
    /// Columns pgoutput sends (generated columns excluded), in table order.
    pub columns: Vec<SourceColumn>,
    pub key: String,
    /// `format_type` of the key column, to look a row up by the key's text.
    pub key_type: String,
    /// `pg_class.relreplident`: d(efault), f(ull), i(ndex), n(othing).
    pub replica_identity: char,
}

impl SourceTable {
    pub(crate) fn qualified(&self) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.schema),
            quote_ident(&self.spec.name)
        )
    }
}

pub(crate) async fn check_wal_level(client: &Client) -> Result<()> {
    let row = client
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(query_err("reading wal_level"))?;
    let level: String = row.get(0);
    if level != "logical" {
        return Err(CaptureError::WalLevel { found: level });
    }
    Ok(())
}

/// Describes every configured source table; a table or key column missing in the database is
/// a configuration error.
pub(crate) async fn describe_tables(
    client: &Client,
    config: &ConfigSpec,
) -> Result<Vec<SourceTable>> {
    let schema = &config.schema_name;
    let mut tables = Vec::new();
    for spec in config.source_tables() {
        let key = spec
            .primary_key
            .clone()
            .ok_or_else(|| CaptureError::NoPrimaryKey {
                table: spec.name.clone(),
            })?;
        let class = client
            .query_opt(
                "SELECT c.oid::int8, c.relreplident::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
                &[schema, &spec.name],
            )
            .await
            .map_err(query_err(format!(
                "looking up table {schema}.{}",
                spec.name
            )))?
            .ok_or_else(|| CaptureError::MissingTable {
                schema: schema.clone(),
                table: spec.name.clone(),
            })?;
        let relid: i64 = class.get(0);
        let identity: String = class.get(1);
        let rows = client
            .query(
                "SELECT a.attname::text, a.atttypid::int8, a.attstorage::text, \
                        format_type(a.atttypid, a.atttypmod) \
                 FROM pg_attribute a \
                 WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped \
                   AND a.attgenerated = '' \
                 ORDER BY a.attnum",
                &[&relid],
            )
            .await
            .map_err(query_err(format!(
                "reading the columns of {schema}.{}",
                spec.name
            )))?;
        let mut columns = Vec::with_capacity(rows.len());
        let mut key_type = None;
        for row in rows {
            let name: String = row.get(0);
            let type_oid: i64 = row.get(1);
            let storage: String = row.get(2);
            let formatted: String = row.get(3);
            if name == key {
                key_type = Some(formatted);
            }
            columns.push(SourceColumn {
                name,
                type_oid: u32::try_from(type_oid).unwrap_or_default(),
                out_of_line: matches!(storage.as_str(), "x" | "e"),
            });
        }
        let key_type = key_type.ok_or_else(|| CaptureError::MissingKeyColumn {
            schema: schema.clone(),
            table: spec.name.clone(),
            column: key.clone(),
        })?;
        for configured in &spec.columns {
            if !columns.iter().any(|c| c.name == configured.name) {
                tracing::warn!(
                    table = %spec.name, column = %configured.name,
                    "configured column is not in the source table; its value will arrive as null"
                );
            }
        }
        tables.push(SourceTable {
            spec: spec.clone(),
            schema: schema.clone(),
            columns,
            key,
            key_type,
            replica_identity: identity.chars().next().unwrap_or('d'),
        });
    }
    Ok(tables)
}

/// Replica identity policy. With the default identity (the primary key), pgoutput sends an
/// out-of-line (TOASTed) value that an UPDATE did not touch as "unchanged", with no data, and
/// the old tuple holds only the key — the value would be lost (DMS writes NULL there). With
/// `REPLICA IDENTITY FULL` the old tuple is logged with every value inlined, so capture takes
/// the unchanged value from it, exactly as of that change. So tables that can hold out-of-line
/// values (text, varchar, bytea, json, ... columns) are switched to FULL; tables without such
/// columns keep the default (a smaller WAL; deletes carry only the key, as with DMS). An
/// identity someone chose deliberately (index, full) is left alone; for those, capture falls
/// back to reading the current value by key.
pub(crate) async fn ensure_replica_identity(
    client: &Client,
    tables: &mut [SourceTable],
) -> Result<()> {
    for table in tables.iter_mut() {
        let needs_full = table.columns.iter().any(|c| c.out_of_line);
        match table.replica_identity {
            'd' if needs_full => {
                let sql = format!("ALTER TABLE {} REPLICA IDENTITY FULL", table.qualified());
                client.batch_execute(&sql).await.map_err(query_err(format!(
                    "setting REPLICA IDENTITY FULL on {}",
                    table.qualified()
                )))?;
                tracing::info!(table = %table.spec.name, "set REPLICA IDENTITY FULL so unchanged large values survive updates");
                table.replica_identity = 'f';
            }
            'n' => tracing::warn!(
                table = %table.spec.name,
                "table has REPLICA IDENTITY NOTHING: PostgreSQL rejects its updates and deletes once it is published"
            ),
            _ => {}
        }
    }
    Ok(())
}

/// Creates the publication over the configured tables, or adds the ones it is missing. Tables
/// it already publishes beyond the config are left in place (their changes are skipped).
pub(crate) async fn ensure_publication(
    client: &Client,
    name: &str,
    tables: &[SourceTable],
) -> Result<()> {
    let existing = client
        .query_opt(
            "SELECT puballtables FROM pg_publication WHERE pubname = $1",
            &[&name],
        )
        .await
        .map_err(query_err(format!("looking up publication {name}")))?;
    let exists = existing.is_some();
    let missing: Vec<&SourceTable> = match existing {
        None => tables.iter().collect(),
        Some(row) if row.get::<_, bool>(0) => Vec::new(),
        Some(_) => {
            let rows = client
                .query(
                    "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
                    &[&name],
                )
                .await
                .map_err(query_err(format!("listing the tables of publication {name}")))?;
            let published: Vec<(String, String)> =
                rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            tables
                .iter()
                .filter(|t| {
                    !published
                        .iter()
                        .any(|(s, n)| *s == t.schema && *n == t.spec.name)
                })
                .collect()
        }
    };
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing
        .iter()
        .map(|t| t.qualified())
        .collect::<Vec<_>>()
        .join(", ");
    let sql = if exists {
        format!("ALTER PUBLICATION {} ADD TABLE {list}", quote_ident(name))
    } else {
        format!("CREATE PUBLICATION {} FOR TABLE {list}", quote_ident(name))
    };
    client
        .batch_execute(&sql)
        .await
        .map_err(query_err(format!("setting up publication {name}")))?;
    tracing::info!(
        publication = name,
        added = missing.len(),
        "publication covers the configured tables"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_with_embedded_quotes_doubled() {
        assert_eq!(quote_ident("vehicle_telemetry"), "\"vehicle_telemetry\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn the_replication_url_asks_for_a_database_walsender() {
        let t = PgTarget::parse(
            "postgresql://postgres@127.0.0.1:5433/etldb",
            &TlsSettings::default(),
        )
        .unwrap();
        assert_eq!(
            t.replication_url(),
            "postgresql://postgres@127.0.0.1:5433/etldb?replication=database"
        );
        let t = PgTarget::parse(
            "postgresql://postgres@127.0.0.1:5433/etldb?sslmode=disable",
            &TlsSettings::default(),
        )
        .unwrap();
        assert_eq!(
            t.replication_url(),
            "postgresql://postgres@127.0.0.1:5433/etldb?sslmode=disable&replication=database"
        );
        assert_eq!(t.describe(), "127.0.0.1:5433/etldb");
    }

    #[test]
    fn the_replication_url_spells_out_the_tls_settings_in_effect() {
        let from_env = TlsSettings {
            mode: Some(crate::pg::SslMode::Require),
            root_cert: None,
        };
        let t = PgTarget::parse("postgresql://app@db:5432/etldb", &from_env).unwrap();
        assert_eq!(
            t.replication_url(),
            "postgresql://app@db:5432/etldb?sslmode=require&replication=database"
        );
        let t = PgTarget::parse(
            "postgresql://app@db:5432/etldb?sslrootcert=/etc/rds%20ca.pem&sslmode=verify-full&connect_timeout=5",
            &from_env,
        )
        .unwrap();
        assert_eq!(
            t.replication_url(),
            "postgresql://app@db:5432/etldb?connect_timeout=5&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Frds%20ca%2Epem&replication=database"
        );
    }

    #[test]
    fn a_url_without_a_database_is_rejected() {
        let err = PgTarget::parse(
            "postgresql://postgres@127.0.0.1:5433",
            &TlsSettings::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("names no database"), "{err}");
    }
}
