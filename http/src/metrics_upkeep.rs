//! The upkeep of a Prometheus recorder: recorded latencies are folded into its histograms on a
//! schedule, so that a process nobody scrapes does not keep every sample.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;

/// How often the recorder's samples are folded into its histograms.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Runs the recorder's upkeep every [`UPKEEP_INTERVAL`] on a thread of its own (the recorder
/// may be installed outside any async runtime, as in the stdio proxy).
pub fn keep_up(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep; histograms are folded at each scrape");
    }
}
