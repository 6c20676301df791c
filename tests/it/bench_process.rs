//! `dqetl bench process` on a small workload: every phase reports, and the processors of the
//! end-to-end and latency runs run in processes of their own whose memory is sampled.

use std::process::Command;

#[test]
fn a_small_benchmark_reports_every_phase_and_the_processor_process_memory() {
    let out = Command::new(env!("CARGO_BIN_EXE_dqetl"))
        .args(["--json", "bench", "process", "--messages", "3000"])
        .args(["--mix", "insert-heavy", "--broker-storage", "memory"])
        .args(["--latency-duration", "1s", "--rate", "2000"])
        .args(["--trigger-interval", "250ms"])
        .args(["--consumer-option", "fetch.wait.max.ms=25"])
        .args(["--partitions", "2"])
        .env("RUST_LOG", "off")
        .output()
        .expect("dqetl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");

    assert_eq!(
        report["consumer_options"],
        serde_json::json!([["fetch.wait.max.ms", "25"]])
    );
    assert_eq!(report["partitions"], 2);
    assert_eq!(report["core"]["events"], 3000);
    // The reported rate is the median of the passes, which are listed slowest first.
    let passes: Vec<f64> = report["core"]["pass_events_per_second"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    assert_eq!(
        passes.len() as u64,
        report["core"]["passes"].as_u64().unwrap_or(0)
    );
    assert!(passes.len() >= 3, "{}", report["core"]);
    assert!(passes.windows(2).all(|w| w[0] <= w[1]), "{passes:?}");
    let median = report["core"]["events_per_second"].as_f64().unwrap_or(0.0);
    assert!(
        (median - passes[passes.len() / 2]).abs() < 1e-6 * median,
        "{}",
        report["core"]
    );
    let mix = &report["mixes"][0];
    assert_eq!(mix["mix"], "insert-heavy");
    // The run fails unless the processor decoded every message; these are what it wrote.
    assert!(mix["batches"].as_u64() >= Some(1), "{mix}");
    assert!(mix["data_versions"].as_u64() > Some(0), "{mix}");
    // About 1% of the generated rows fail a range rule.
    assert!(mix["quarantined"].as_u64() > Some(0), "{mix}");
    let peak = &mix["peak"];
    let part = |name: &str| {
        peak[name]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} of the processor process: {peak}"))
    };
    let (rss, anon, file) = (part("rss_mib"), part("anon_mib"), part("file_mib"));
    assert!(anon > 0.0 && file > 0.0, "{peak}");
    assert!(
        rss >= anon && rss >= file,
        "the peak holds each part: {peak}"
    );

    assert_eq!(report["latency"]["records"], 2000);
    assert!(report["latency"]["p99_ms"].as_u64().is_some(), "{report}");
}

#[test]
fn a_consumer_option_librdkafka_refuses_stops_the_benchmark_before_it_starts() {
    let out = Command::new(env!("CARGO_BIN_EXE_dqetl"))
        .args(["bench", "process", "--broker-storage", "memory"])
        .args(["--consumer-option", "fetch.wait.max.msec=25"])
        .env("RUST_LOG", "off")
        .output()
        .expect("dqetl runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fetch.wait.max.msec") && stderr.contains("No such configuration property"),
        "{stderr}"
    );
}
