//! Bad input through the broker: every kind of broken message lands in quarantine with a clear
//! `_dq_reason`, control records are counted, and the counts prove nothing else was lost.

use serde_json::{Value, json};

use crate::process_scenarios::{Flow, Message, delete, field, insert, totals, update};

const ORDERS: &str = r#"
tables:
  - name: orders
    topic: {topic}
    primary_key: id
    schema:
      - {name: id, type: integer, nullable: false}
      - {name: amount, type: double}
      - {name: note, type: string}
"#;

/// A DMS data record envelope around `data`, for hand-made broken messages.
fn envelope(table: &str, operation: &str, data: Value) -> Value {
    json!({
        "data": data,
        "metadata": {
            "timestamp": "2026-03-01T09:00:00.000000Z",
            "record-type": "data",
            "operation": operation,
            "partition-key-type": "primary-key",
            "schema-name": "public",
            "table-name": table,
            "transaction-id": 7
        }
    })
}

#[tokio::test]
async fn every_bad_message_is_quarantined_with_its_reason_and_nothing_is_lost() {
    let flow = Flow::new(ORDERS, 1).await;
    // A row from an earlier batch, deleted among the bad messages.
    flow.produce(&[insert(
        json!({"id": 0, "amount": 1.0, "note": "z"}),
        "2026-03-01T08:00:00Z",
    )])
    .await;
    flow.process().await;
    // The batch under test starts at offset 1; `at(i)` is the offset of its message `i`.
    let at = |i: i64| i + 1;
    let good = flow.message(&insert(
        json!({"id": 1, "amount": 5.0, "note": "a"}),
        "2026-03-01T09:00:00Z",
    ));
    let valid_text = String::from_utf8(good.value.clone().unwrap_or_default()).unwrap_or_default();
    let huge_note = "x".repeat(5 * 1024 * 1024);
    let huge = envelope(
        "orders",
        "insert",
        json!({"id": 50, "amount": 1.0, "note": huge_note}),
    )
    .to_string();
    let control = json!({
        "control": {"table-def": {"columns": {}}},
        "metadata": {"timestamp": "2026-03-01T09:00:00.000000Z", "record-type": "control",
                     "operation": "create-table", "partition-key-type": "task-id",
                     "schema-name": "public", "table-name": "orders"}
    });
    let messages = vec![
        good,
        Message::raw("2", "not json at all"),
        Message::raw("3", &valid_text[..valid_text.len() / 2]),
        Message::raw(
            "4",
            json!({"metadata": envelope("orders", "insert", json!({}))["metadata"]}).to_string(),
        ),
        Message::raw(
            "5",
            envelope(
                "orders",
                "insert",
                json!({"id": 5, "amount": "abc", "note": "b"}),
            )
            .to_string(),
        ),
        Message::raw(
            "6",
            envelope(
                "orders",
                "upsert",
                json!({"id": 6, "amount": 1.0, "note": "c"}),
            )
            .to_string(),
        ),
        Message::raw("orders", control.to_string()),
        Message::raw(
            "8",
            envelope("invoices", "insert", json!({"id": 8, "amount": 1.0})).to_string(),
        ),
        Message::raw("9", Vec::new()),
        Message {
            key: Some(b"10".to_vec()),
            value: None,
            partition: None,
        },
        Message::raw("50", huge.clone()),
        Message::raw("11", b"{\"data\": \xff\xfe}".to_vec()),
        flow.message(&insert(
            json!({"id": 2, "amount": 7.0, "note": "d"}),
            "2026-03-01T09:00:01Z",
        )),
        flow.message(&delete(json!({"id": 0}), "2026-03-01T09:00:02Z")),
        flow.message(&update(
            json!({"id": 2, "amount": 8.0, "note": "e"}),
            "2026-03-01T09:00:03Z",
        )),
    ];
    let positions =
        crate::process_scenarios::produce(&flow.bootstrap, &flow.topic, &messages).await;
    assert_eq!(
        positions.last().map(|p| p.1),
        Some(at(14)),
        "every message was accepted by the broker"
    );
    let summary = flow.process().await;

    let t = totals(&summary, "orders");
    assert_eq!(summary.records, 15);
    assert_eq!(
        (
            t.events,
            t.loaded,
            t.deletes,
            t.control_records,
            t.quarantined,
            t.malformed
        ),
        (15, 3, 1, 1, 10, 10),
        "{summary:?}"
    );
    assert_eq!(
        t.events,
        t.loaded + t.deletes + t.control_records + t.quarantined,
        "every message is accounted for"
    );

    let rows = flow
        .quarantine("_offset, _dq_reason, _raw, _operation")
        .await;
    assert_eq!(
        field(&rows, "_offset"),
        [1, 2, 3, 4, 5, 7, 8, 9, 10, 11].map(|i| json!(at(i))),
        "one quarantine row per bad message, none for the control record"
    );
    let reason = |offset: i64| -> String {
        rows.iter()
            .find(|r| r["_offset"] == json!(at(offset)))
            .and_then(|r| r["_dq_reason"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let topic = &flow.topic;
    assert!(
        reason(1).starts_with("malformed: not JSON: "),
        "{}",
        reason(1)
    );
    assert!(
        reason(2).starts_with("malformed: truncated JSON: input ends early at line 1"),
        "{}",
        reason(2)
    );
    assert_eq!(reason(3), "malformed: no 'data' object in a data record");
    assert!(
        reason(4).starts_with("malformed: column 'amount': "),
        "{}",
        reason(4)
    );
    assert!(
        reason(4).contains("\"abc\""),
        "names the value: {}",
        reason(4)
    );
    assert_eq!(reason(5), "malformed: unknown operation \"upsert\"");
    assert_eq!(
        reason(7),
        format!(
            "malformed: message for table 'invoices' arrived on topic '{topic}' of table 'orders'"
        )
    );
    assert_eq!(reason(8), "malformed: message value is empty");
    assert_eq!(
        reason(9),
        "malformed: message has no value (a Kafka tombstone)"
    );
    assert_eq!(
        reason(10),
        format!(
            "malformed: payload of {} bytes exceeds the limit of 1048576 bytes",
            huge.len()
        )
    );
    assert!(
        reason(11).starts_with("malformed: payload is not valid UTF-8"),
        "{}",
        reason(11)
    );

    let raw = |offset: i64| {
        rows.iter()
            .find(|r| r["_offset"] == json!(at(offset)))
            .map(|r| r["_raw"].clone())
    };
    assert_eq!(
        raw(1),
        Some(json!("not json at all")),
        "the raw payload is kept"
    );
    let big = raw(10)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    assert!(
        big.len() < 70 * 1024 && big.starts_with(&huge[..1000]) && big.contains("truncated"),
        "a huge payload is kept truncated ({} bytes kept)",
        big.len()
    );
    assert_eq!(
        rows.iter()
            .find(|r| r["_offset"] == json!(at(4)))
            .map(|r| r["_operation"].clone()),
        Some(json!("INSERT")),
        "the operation is kept when the envelope tells it"
    );

    assert_eq!(
        flow.versions("id, amount")
            .await
            .iter()
            .map(|r| json!([r["id"], r["amount"], r["_is_current"]]))
            .collect::<Vec<_>>(),
        [
            json!([0, 1.0, false]),
            json!([1, 5.0, true]),
            json!([2, 8.0, true])
        ],
        "the good messages around the bad ones are all applied"
    );
    flow.assert_invariants().await;
}
