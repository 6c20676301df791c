//! The order in which source tables can be created: every foreign key target before the tables
//! that reference it, config order otherwise.

use crate::config::spec::TableSpec;

/// Indexes of the non-internal `tables` in creation order. Err holds the tables caught in a
/// foreign key cycle (they cannot be created with inline constraints).
pub fn creation_order(tables: &[TableSpec]) -> Result<Vec<usize>, Vec<usize>> {
    let sources: Vec<usize> = (0..tables.len()).filter(|&i| !tables[i].internal).collect();
    let mut placed = vec![false; tables.len()];
    let mut order = Vec::with_capacity(sources.len());
    // Kahn's algorithm, always taking the first ready table in config order: stable and O(n²),
    // which is nothing for a config's handful of tables.
    while order.len() < sources.len() {
        let ready = sources.iter().copied().find(|&i| {
            !placed[i]
                && tables[i].foreign_keys.iter().all(|fk| {
                    fk.ref_table == tables[i].name
                        || !sources
                            .iter()
                            .any(|&j| !placed[j] && tables[j].name == fk.ref_table)
                })
        });
        match ready {
            Some(i) => {
                placed[i] = true;
                order.push(i);
            }
            None => return Err(sources.into_iter().filter(|&i| !placed[i]).collect()),
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::spec::{ForeignKeySpec, Scd2Spec};

    fn table(name: &str, refs: &[&str]) -> TableSpec {
        TableSpec {
            name: name.into(),
            topic: format!("cdc-{name}"),
            delta_path: None,
            primary_key: Some("id".into()),
            internal: false,
            columns: Vec::new(),
            rules: Vec::new(),
            transforms: Vec::new(),
            checks: Vec::new(),
            anomaly_checks: Vec::new(),
            foreign_keys: refs
                .iter()
                .map(|r| ForeignKeySpec {
                    column: format!("{r}_id"),
                    ref_table: r.to_string(),
                    ref_column: "id".into(),
                })
                .collect(),
            indexes: Vec::new(),
            scd2: Scd2Spec::default(),
            mask_pii_in_quarantine: true,
        }
    }

    #[test]
    fn targets_come_first_and_the_rest_keeps_config_order() {
        let tables = [
            table("vitals", &["patients"]),
            table("notes", &[]),
            table("patients", &[]),
        ];
        assert_eq!(creation_order(&tables), Ok(vec![1, 2, 0]));
    }

    #[test]
    fn self_references_do_not_block() {
        let tables = [table("employees", &["employees"])];
        assert_eq!(creation_order(&tables), Ok(vec![0]));
    }

    #[test]
    fn cycles_are_reported_with_their_tables() {
        let tables = [table("a", &["b"]), table("b", &["a"]), table("c", &[])];
        assert_eq!(creation_order(&tables), Err(vec![0, 1]));
    }
}
