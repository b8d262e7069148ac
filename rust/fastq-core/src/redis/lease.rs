//! Lease renewal: a live worker keeps the `unacked_index` scores of the messages its consumers
//! hold fresh, so a task running longer than the visibility timeout is not restored and run
//! again by another worker (Celery's long-standing Redis pain). A dead worker stops renewing,
//! and its messages come back after the visibility timeout as before.

use super::connection::{BrokerError, BrokerResult, Connector, COMMAND_TIMEOUT};
use super::scripts::Scripts;

/// A consumer's set lives this many visibility timeouts past its last renewal or claim, and at
/// least `MIN_SET_TTL` seconds: long enough for a live worker never to lose it, short enough
/// that a worker killed outright leaves nothing behind for long.
const SET_TTL_TIMEOUTS: f64 = 3.0;
const MIN_SET_TTL: f64 = 10.0;

/// The TTL, in whole seconds, of a consumer's set for `visibility_timeout`.
pub fn consumer_set_ttl(visibility_timeout: f64) -> u64 {
    (visibility_timeout * SET_TTL_TIMEOUTS)
        .max(MIN_SET_TTL)
        .min(u32::MAX as f64)
        .ceil() as u64
}

/// Renews the leases of every message the consumers `consumer_ids` hold; returns how many.
pub fn renew_leases(
    url: &str,
    consumer_ids: &[String],
    visibility_timeout: f64,
    global_keyprefix: &str,
) -> BrokerResult<usize> {
    if !(visibility_timeout.is_finite() && visibility_timeout > 0.0) {
        return Err(BrokerError::Config(format!(
            "visibility_timeout must be a positive number of seconds, got {visibility_timeout}"
        )));
    }
    let ids: Vec<&String> = consumer_ids.iter().filter(|id| !id.is_empty()).collect();
    if ids.is_empty() {
        return Ok(0);
    }
    let mut conn = Connector::new(url, "fastq-lease")?;
    let base = super::consumer::layout(&conn, global_keyprefix)?;
    let scripts = Scripts::new();
    // On a cluster each queue has its own index and sets: one renewal per queue holding any.
    let layouts = super::consumer::scoped_layouts(&mut conn, &base, "fastq.consumer.*")?;
    let mut renewed = 0;
    for keys in layouts {
        let mut invocation = scripts.renew.prepare_invoke();
        invocation.key(keys.unacked_index());
        for id in &ids {
            invocation.key(keys.consumer(id));
        }
        invocation
            .arg(super::consumer::unix_now().to_string())
            .arg(consumer_set_ttl(visibility_timeout));
        let route = keys.route();
        renewed += conn.run_at(route.as_deref(), COMMAND_TIMEOUT, |c| {
            invocation.invoke::<usize>(c)
        })?;
    }
    conn.close();
    Ok(renewed)
}
