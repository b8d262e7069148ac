//! The prefork supervisor's acknowledgements on behalf of its children: the messages the
//! children started with an early ack (and those a dead child finished), taken out of
//! `unacked`, `unacked_index` and each child's set in one atomic round trip per batch, where a
//! child would write one transaction per task.

use super::connection::{BrokerResult, Connector};
use super::keys::KeyLayout;

pub struct Settler {
    conn: Connector,
    keys: KeyLayout,
}

impl Settler {
    /// Parses `url`; connects on the first ack.
    pub fn new(url: &str, global_keyprefix: &str) -> BrokerResult<Self> {
        let conn = Connector::new(url, "fastq-settler")?;
        if conn.is_cluster() {
            // One transaction over every child's tags cannot span a cluster's slots.
            return Err(super::connection::BrokerError::Config(
                "the supervisor does not acknowledge for its children on a Redis Cluster: they \
                 acknowledge themselves"
                    .into(),
            ));
        }
        Ok(Settler {
            conn,
            keys: KeyLayout::new(global_keyprefix),
        })
    }

    /// Acknowledges each `(consumer id, tags)`: the tags leave `unacked`, the index and that
    /// consumer's set, all in one transaction. Idempotent, so a batch whose reply was lost can
    /// be sent again.
    pub fn ack(&mut self, batch: &[(String, Vec<String>)]) -> BrokerResult<()> {
        let all: Vec<&String> = batch
            .iter()
            .flat_map(|(_, tags)| tags.iter())
            .filter(|t| !t.is_empty())
            .collect();
        if all.is_empty() {
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("HDEL")
            .arg(self.keys.unacked())
            .arg(&all)
            .ignore()
            .cmd("ZREM")
            .arg(self.keys.unacked_index())
            .arg(&all)
            .ignore();
        for (consumer_id, tags) in batch {
            let tags: Vec<&String> = tags.iter().filter(|t| !t.is_empty()).collect();
            if !consumer_id.is_empty() && !tags.is_empty() {
                pipe.cmd("SREM")
                    .arg(self.keys.consumer(consumer_id))
                    .arg(tags)
                    .ignore();
            }
        }
        // Acknowledging twice changes nothing: one a signal interrupted is sent again.
        self.conn.run_idempotent(|c| pipe.query::<()>(c))
    }

    pub fn url(&self) -> &str {
        self.conn.url()
    }

    pub fn close(&mut self) {
        self.conn.close();
    }
}
