//! What waits in the gateway, as gauges read when they change or on a timer: the inbox's
//! forwarding backlog (pending messages, the oldest one's age, dead letters), the widget long
//! polls held open, and each replied message's accept-to-reply time per channel (the
//! end-to-end figure the runbook pages on).
//!
//! The inbox figures come from one query every `GATEWAY_BACKLOG_REPORT_SECONDS` (15 s by
//! default, so a 30-second scrape always sees a recent value), on the partial indexes of
//! pending and dead-lettered rows: its cost follows the backlog, not the inbox's size; until
//! the first reading they are 0. The polls are counted at scrape time.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use sqlx::PgPool;
use xin_runtime::HttpMetrics;

use crate::polls::Polls;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    pub channel: String,
}

/// The gateway's backlog and latency metrics.
#[derive(Clone)]
pub struct Backlog {
    /// `gateway_inbox_pending`.
    pub pending: Gauge,
    /// `gateway_inbox_oldest_pending_age_seconds`.
    pub oldest: Gauge<f64, AtomicU64>,
    /// `gateway_inbox_dead_letters`.
    pub dead: Gauge,
    /// `gateway_accept_to_reply_seconds{channel}`.
    pub accept_to_reply: Family<ChannelLabel, Histogram>,
}

/// Open widget polls, counted when scraped.
#[derive(Debug)]
struct OpenPolls(Polls);

impl Collector for OpenPolls {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let open = ConstGauge::new(self.0.open_now() as i64);
        let metric = encoder.encode_descriptor(
            "gateway_widget_polls_open",
            "Widget long polls held open now (at most 256 per gateway)",
            None,
            MetricType::Gauge,
        )?;
        open.encode(metric)
    }
}

/// Unregistered metrics (for a worker whose figures no registry serves).
impl Default for Backlog {
    fn default() -> Self {
        Backlog {
            pending: Gauge::default(),
            oldest: Gauge::default(),
            dead: Gauge::default(),
            accept_to_reply: Family::new_with_constructor(|| {
                Histogram::new([
                    0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
                ])
            }),
        }
    }
}

impl Backlog {
    /// Registers the metrics in `http`'s registry, the open polls of `polls` among them.
    pub fn register(http: &HttpMetrics, polls: &Polls) -> Self {
        let b = Backlog::default();
        let mut reg = http.registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.register(
            "gateway_inbox_pending",
            "Accepted messages not yet replied to nor set aside (the forwarding backlog)",
            b.pending.clone(),
        );
        reg.register(
            "gateway_inbox_oldest_pending_age_seconds",
            "Age of the oldest accepted message not yet replied to (0 when none)",
            b.oldest.clone(),
        );
        reg.register(
            "gateway_inbox_dead_letters",
            "Messages set aside after their last forwarding attempt failed",
            b.dead.clone(),
        );
        reg.register(
            "gateway_accept_to_reply_seconds",
            "From a message's accept to its reply sent through the provider, by channel",
            b.accept_to_reply.clone(),
        );
        reg.register_collector(Box::new(OpenPolls(polls.clone())));
        drop(reg);
        b
    }

    /// Reads the inbox's backlog once into the gauges.
    pub async fn refresh(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let (pending, oldest, dead): (i64, f64, i64) = sqlx::query_as(
            "SELECT
               (SELECT count(*) FROM gateway_inbox WHERE replied_at IS NULL AND failed_at IS NULL),
               (SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(received_at)), 0)::float8
                  FROM gateway_inbox WHERE replied_at IS NULL AND failed_at IS NULL),
               (SELECT count(*) FROM gateway_inbox WHERE failed_at IS NOT NULL)",
        )
        .fetch_one(pool)
        .await?;
        self.pending.set(pending);
        self.oldest.set(oldest.max(0.0));
        self.dead.set(dead);
        Ok(())
    }

    /// Refreshes the gauges every `every` until the task is dropped; a failed read is logged
    /// (once per run of failures) and the gauges keep their last values.
    pub async fn report(self, pool: PgPool, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            match self.refresh(&pool).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot read the inbox's backlog; the gauges keep their last values");
                }
                Err(_) => {}
            }
        }
    }

    /// Records a replied message's accept-to-reply time.
    pub fn replied(&self, channel: &str, seconds: f64) {
        self.accept_to_reply
            .get_or_create(&ChannelLabel {
                channel: channel.to_string(),
            })
            .observe(seconds.max(0.0));
    }
}
