//! Prometheus metrics: one global recorder per process, rendered at `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets (seconds) from 100 µs to 30 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Installs the recorder once; later calls return the same handle.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    // Histograms buffer raw samples until upkeep folds them into buckets:
                    // without it, memory grows with every request when nobody scrapes.
                    let upkeep = handle.clone();
                    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    });
                    if let Err(err) = spawned {
                        tracing::warn!(error = %err, "metrics upkeep thread not started");
                    }
                    Some(handle)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "metrics recorder not installed");
                    None
                }
            }
        })
        .clone()
}

/// Whether [`install`] has put the recorder in place (metric handles taken before that record nothing).
pub(crate) fn installed() -> bool {
    HANDLE.get().is_some_and(Option::is_some)
}

/// The Prometheus text exposition of every metric recorded in this process.
pub async fn render() -> impl axum::response::IntoResponse {
    let body = install().map(|h| h.render()).unwrap_or_default();
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
