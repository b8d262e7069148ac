//! Where things live in Redis: kombu's layout (queue lists per priority step, the ack-emulation
//! hash and index, binding sets, the restore lock) and fastq's own additions (a set of tags per
//! consumer and two dead-letter lists). Celery and fastq interoperate only because these match
//! kombu's byte for byte.

/// kombu's `Channel.sep`, between a queue name and its priority step.
pub const SEP: &str = "\x06\x16";
/// kombu's default `priority_steps`: a message of priority p waits in the list of the largest
/// step ≤ p, and lower steps are served first.
pub const PRIORITY_STEPS: [u8; 4] = [0, 3, 6, 9];
const MAX_PRIORITY: i64 = 9;

/// A member of `_kombu.binding.<exchange>` (see [`KeyLayout::binding`]): `routing_key SEP
/// pattern SEP queue`; the pattern is a regex for topic exchanges and empty otherwise.
pub fn binding_member(routing_key: &str, pattern: &str, queue: &str) -> String {
    format!("{routing_key}{SEP}{pattern}{SEP}{queue}")
}

/// Clamps a message priority to kombu's range 0–9.
pub fn clamp_priority(priority: i64) -> i64 {
    priority.clamp(0, MAX_PRIORITY)
}

/// The step a message of `priority` is queued under (kombu's `Channel.priority`).
pub fn priority_step(priority: i64) -> u8 {
    let p = clamp_priority(priority);
    PRIORITY_STEPS
        .iter()
        .copied()
        .rev()
        .find(|&step| i64::from(step) <= p)
        .unwrap_or(0)
}

/// One queue list in the order a consumer polls them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKey {
    pub key: String,
    /// The queue's name as the user wrote it: no priority suffix, no key prefix.
    pub queue: String,
    pub step: u8,
}

/// Every key fastq touches, with kombu's `global_keyprefix` applied.
///
/// On a Redis Cluster (fastq's own layout, not kombu's) every key of one queue carries the
/// queue's name as its hash tag, so one queue lives in one slot and the claim and restore
/// scripts touch one node: the lists `prefix{queue}` and `prefix{queue} SEP step`, and, in the
/// layout [`scoped`](Self::scoped) to that queue, `prefix{queue}unacked`,
/// `prefix{queue}unacked_index`, `prefix{queue}fastq.consumer.<id>`, `prefix{queue}fastq.delayed`
/// and the rest. Queues spread over the cluster by their names' slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    prefix: String,
    cluster: bool,
    /// On a cluster, the queue whose hash tag the ack-emulation keys carry.
    scope: Option<String>,
}

/// Why a prefix or queue name cannot be used on a Redis Cluster: a brace in it would change
/// the hash tag, and with it the slot, of some of the queue's keys.
pub fn cluster_name_problem(what: &str, name: &str) -> Option<String> {
    (name.contains('{') || name.contains('}')).then(|| {
        format!(
            "the {what} {name:?} contains a brace: on a Redis Cluster fastq puts each queue's \
             keys in one slot with the hash tag {{queue}}, which braces in names would break"
        )
    })
}

impl KeyLayout {
    pub fn new(global_keyprefix: &str) -> Self {
        KeyLayout {
            prefix: global_keyprefix.to_owned(),
            cluster: false,
            scope: None,
        }
    }

    /// The Redis Cluster layout: queue keys hash-tagged by queue (see the type's doc).
    pub fn cluster(global_keyprefix: &str) -> Self {
        KeyLayout {
            cluster: true,
            ..Self::new(global_keyprefix)
        }
    }

    /// On a cluster, the layout whose ack-emulation keys (`unacked`, the consumer sets, the
    /// delayed set...) are `queue`'s, in its slot; a plain layout is returned unchanged.
    pub fn scoped(&self, queue: &str) -> Self {
        KeyLayout {
            scope: self.cluster.then(|| queue.to_owned()),
            ..self.clone()
        }
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The queue this layout is scoped to (on a cluster).
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// A key in the slot of the scoped queue, to route commands by (on a cluster).
    pub fn route(&self) -> Option<String> {
        self.scope.as_deref().map(|q| self.queue(q, 0))
    }

    fn key(&self, name: &str) -> String {
        match &self.scope {
            Some(q) => format!("{}{{{q}}}{name}", self.prefix),
            None => format!("{}{name}", self.prefix),
        }
    }

    /// kombu's `_q_for_pri`: `queue` for step 0, `queue + SEP + step` otherwise (on a
    /// cluster, `{queue}` instead of `queue`).
    pub fn queue(&self, queue: &str, step: u8) -> String {
        let base = if self.cluster {
            format!("{}{{{queue}}}", self.prefix)
        } else {
            format!("{}{queue}", self.prefix)
        };
        if step == 0 {
            base
        } else {
            format!("{base}{SEP}{step}")
        }
    }

    /// The list a message of `priority` for `queue` goes to.
    pub fn queue_for_priority(&self, queue: &str, priority: i64) -> String {
        self.queue(queue, priority_step(priority))
    }

    /// The lists of every priority step of `queue`, step 0 first.
    pub fn queue_keys(&self, queue: &str) -> Vec<String> {
        PRIORITY_STEPS
            .iter()
            .map(|&step| self.queue(queue, step))
            .collect()
    }

    /// kombu's BRPOP order: every queue at step 0, then every queue at step 3, and so on.
    pub fn consume_order(&self, queues: &[String]) -> Vec<QueueKey> {
        PRIORITY_STEPS
            .iter()
            .flat_map(|&step| {
                queues.iter().map(move |q| QueueKey {
                    key: self.queue(q, step),
                    queue: q.clone(),
                    step,
                })
            })
            .collect()
    }

    /// HASH tag → `[envelope, exchange, routing_key]`.
    pub fn unacked(&self) -> String {
        self.key("unacked")
    }

    /// ZSET tag scored by the unix time it was delivered.
    pub fn unacked_index(&self) -> String {
        self.key("unacked_index")
    }

    /// The lock kombu's `restore_visible` takes (redis-py `Lock`, `SET NX PX`).
    pub fn unacked_mutex(&self) -> String {
        self.key("unacked_mutex")
    }

    /// SET of `routing_key SEP pattern SEP queue` for an exchange.
    pub fn binding(&self, exchange: &str) -> String {
        self.key(&format!("_kombu.binding.{exchange}"))
    }

    /// SET of the tags one fastq consumer holds, so a dead consumer's tags can be found without
    /// waiting for the visibility timeout.
    pub fn consumer(&self, consumer_id: &str) -> String {
        self.key(&format!("fastq.consumer.{consumer_id}"))
    }

    /// LIST of envelopes that could not be read well enough to record them as unacknowledged.
    pub fn malformed(&self) -> String {
        self.key("fastq.malformed")
    }

    /// ZSET of deferred ETA messages scored by their due time (unix seconds), members
    /// `queue key (without the prefix) NUL envelope`.
    pub fn delayed(&self) -> String {
        self.key("fastq.delayed")
    }

    /// LIST of the `unacked` entries of messages that killed their workers too often, newest
    /// first.
    pub fn quarantine(&self) -> String {
        self.key("fastq.quarantine")
    }

    /// LIST of `unacked` entries that could not be put back on a queue (unreadable, or no queue
    /// bound for their exchange and routing key); kombu would drop these.
    pub fn unrestorable(&self) -> String {
        self.key("fastq.unrestorable")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_maps_to_the_largest_step_not_above_it() {
        let steps: Vec<u8> = (-2..=12).map(priority_step).collect();
        assert_eq!(steps, [0, 0, 0, 0, 0, 3, 3, 3, 6, 6, 6, 9, 9, 9, 9]);
    }

    #[test]
    fn queue_keys_match_kombu() {
        let keys = KeyLayout::new("");
        assert_eq!(keys.queue("celery", 0), "celery");
        assert_eq!(keys.queue("celery", 3), "celery\x06\x163");
        assert_eq!(keys.queue_for_priority("celery", 8), "celery\x06\x166");
        let prefixed = KeyLayout::new("pfx:");
        assert_eq!(prefixed.queue("celery", 9), "pfx:celery\x06\x169");
        assert_eq!(prefixed.queue("celery", 0), "pfx:celery");
        assert_eq!(prefixed.unacked(), "pfx:unacked");
        assert_eq!(prefixed.unacked_index(), "pfx:unacked_index");
        assert_eq!(prefixed.unacked_mutex(), "pfx:unacked_mutex");
        assert_eq!(prefixed.binding("celery"), "pfx:_kombu.binding.celery");
        assert_eq!(prefixed.consumer("w1"), "pfx:fastq.consumer.w1");
        assert_eq!(prefixed.malformed(), "pfx:fastq.malformed");
        assert_eq!(prefixed.delayed(), "pfx:fastq.delayed");
        assert_eq!(prefixed.quarantine(), "pfx:fastq.quarantine");
        assert_eq!(
            prefixed.queue_keys("q"),
            [
                "pfx:q",
                "pfx:q\x06\x163",
                "pfx:q\x06\x166",
                "pfx:q\x06\x169"
            ]
        );
        assert_eq!(
            binding_member("celery", "", "celery"),
            "celery\x06\x16\x06\x16celery"
        );
    }

    #[test]
    fn cluster_keys_of_a_queue_share_its_hash_tag() {
        let keys = KeyLayout::cluster("p.");
        assert_eq!(keys.queue("celery", 0), "p.{celery}");
        assert_eq!(keys.queue("celery", 3), "p.{celery}\x06\x163");
        let q = keys.scoped("celery");
        assert_eq!(q.unacked(), "p.{celery}unacked");
        assert_eq!(q.unacked_index(), "p.{celery}unacked_index");
        assert_eq!(q.consumer("w1"), "p.{celery}fastq.consumer.w1");
        assert_eq!(q.delayed(), "p.{celery}fastq.delayed");
        assert_eq!(q.route().as_deref(), Some("p.{celery}"));
        assert_eq!(KeyLayout::new("p.").scoped("celery").unacked(), "p.unacked");
        assert!(cluster_name_problem("queue", "a{b").is_some());
        assert!(cluster_name_problem("queue", "ab").is_none());
    }

    #[test]
    fn consume_order_is_steps_outer_queues_inner() {
        let keys = KeyLayout::new("p.");
        let order: Vec<String> = keys
            .consume_order(&["a".into(), "b".into()])
            .into_iter()
            .map(|k| k.key)
            .collect();
        assert_eq!(
            order,
            [
                "p.a",
                "p.b",
                "p.a\x06\x163",
                "p.b\x06\x163",
                "p.a\x06\x166",
                "p.b\x06\x166",
                "p.a\x06\x169",
                "p.b\x06\x169"
            ]
        );
    }
}
