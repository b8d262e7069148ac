//! The worker's Redis consumer: a prefetch window of deliveries, claimed from kombu's queue lists
//! and recorded as unacknowledged in one atomic step, acked, rejected or restored.
//!
//! Synchronous on purpose: no runtime and no threads, so the prefork supervisor can fork freely
//! and each child builds its own consumer (the connection opens on first use).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::{Connection, RedisResult};

use super::connection::{is_wrong_type, BrokerError, BrokerResult, Connector, COMMAND_TIMEOUT};
use super::delivery::Delivery;
use super::keys::{cluster_name_problem, KeyLayout, QueueKey};
use super::restore::{restore_tags, End, HeldBack, RestoreReport};
use super::scripts::Scripts;
use crate::codec::Accept;

/// Envelopes kept in `fastq.malformed` at most; the oldest are trimmed, so a flood of garbage
/// cannot fill Redis.
const MALFORMED_CAP: usize = 10_000;
/// Released tags remembered (see `RedisConsumer::release`): far more than a supervisor acks
/// between two of its reads, so none of them is ever taken for an orphan.
const RELEASED_KEPT: usize = 65_536;
/// Below this a fetch does not block: `BRPOP … 0` would wait forever.
const MIN_BLOCK: Duration = Duration::from_millis(1);
/// kombu's `unacked_mutex_expire`.
const RESTORE_LOCK_MS: u64 = 300_000;

/// One claim script result: the 1-based index of the list it came from, its tag (empty when it
/// could not be recorded) and the envelope.
type Claimed = (usize, Vec<u8>, Vec<u8>);

/// The claim script's reply: the claimed envelopes, the lists that refused their `RPOP` (a key
/// of another type: 1-based index, Redis's error), how many lists were looked at to the end.
type ClaimReply = (Vec<Claimed>, Vec<(usize, String)>, usize);

/// A change in whether a queue's list can be read: `reason` is Redis's refusal of its key, or
/// `None` once the key reads as a list (or nothing) again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRefusal {
    pub queue: String,
    pub key: String,
    pub reason: Option<String>,
}

/// What a consumer needs; the binding builds it from the Python arguments.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub url: String,
    pub queues: Vec<String>,
    pub accept: Vec<String>,
    pub prefetch: usize,
    pub consumer_id: String,
    pub global_keyprefix: String,
    /// Seconds; how long a message may stay unacknowledged before `restore_visible` restores it.
    pub visibility_timeout: f64,
}

/// The keys one claim script covers: every queue on a single Redis; on a cluster, one queue
/// (its slot), with its own `unacked`, index, consumer set and malformed list.
struct Group {
    keys: KeyLayout,
    order: Vec<QueueKey>,
    consumer_key: String,
    /// A key of the group's slot (on a cluster).
    route: Option<String>,
    /// Lists whose key holds another type (1-based index in `order`): the claim skips them as
    /// it goes (and says so), the blocking pop leaves them out (Redis would refuse the whole
    /// `BRPOP`). Known from the last claim that looked at them.
    refused: HashSet<usize>,
}

/// How long a consumer of queues in several slots blocks on one of them before it looks at the
/// next (a cluster: one blocking pop cannot span slots).
const GROUP_BLOCK: Duration = Duration::from_millis(50);
/// How long a fetch waits when every list it would block on refuses (a key of another type).
const REFUSED_NAP: Duration = Duration::from_millis(100);

pub struct RedisConsumer {
    conn: Connector,
    scripts: Scripts,
    groups: Vec<Group>,
    /// The group the next fetch starts with (round robin over a cluster's queues).
    cursor: usize,
    accept: Accept,
    prefetch: usize,
    visibility_timeout: f64,
    /// Tags delivered and not yet acked, rejected or restored, with their delivery sequence (so
    /// a restore can put them back in the order they were taken) and their group.
    in_flight: HashMap<String, (u64, usize)>,
    sequence: u64,
    /// An envelope a blocking pop took whose claim has not completed (the connection broke in
    /// between), with its group and list index: it is claimed first on the next fetch, so only
    /// the death of this process between the pop and the claim can lose it — the one
    /// non-atomic step, see `fetch`.
    popped: Option<(usize, usize, Vec<u8>)>,
    /// Acks written by `ack_unread` whose replies are not read yet. A later reply on the same
    /// connection proves Redis processed them; if the connection dies first they may be lost
    /// (written into a socket the server had already closed), so they move to `pending_acks`.
    unconfirmed: Vec<String>,
    /// Acks the worker decided that Redis may not have, with their group: sent again
    /// (HDEL/ZREM/SREM, idempotent) before anything else on the next connection. Never raised
    /// into the task loop.
    pending_acks: HashMap<String, usize>,
    /// Rejects with requeue that failed on a dead connection; replayed like `pending_acks`
    /// (the move back is a compare-and-set, so a replay of one that did happen does nothing).
    pending_requeues: Vec<(String, usize)>,
    /// A connection died since the last reconcile: a claim's reply may have been lost, leaving
    /// messages recorded in this consumer's set that nobody here knows of.
    broken: bool,
    /// Tags the prefork supervisor acknowledges for this consumer (`release`), newest last:
    /// still in this consumer's set until it does, and never to be restored from there.
    released: VecDeque<String>,
    released_set: HashSet<String>,
    /// Queues that began or stopped refusing, not yet taken by `take_refusals`.
    refusals: Vec<QueueRefusal>,
    /// Requeued messages left in `unacked` (`RestoreReport::held_back`), not yet taken by
    /// `take_held_back`.
    held_back: Vec<HeldBack>,
}

impl RedisConsumer {
    /// Checks the configuration; does not connect.
    pub fn new(config: ConsumerConfig) -> BrokerResult<Self> {
        if config.queues.is_empty() || config.queues.iter().any(String::is_empty) {
            return Err(BrokerError::Config(
                "a consumer needs at least one queue, and queue names cannot be empty".into(),
            ));
        }
        if config.prefetch == 0 {
            return Err(BrokerError::Config(
                "prefetch must be at least 1: it is how many messages the consumer may hold".into(),
            ));
        }
        if config.consumer_id.is_empty() {
            return Err(BrokerError::Config(
                "consumer_id cannot be empty: it names the set of tags this consumer holds".into(),
            ));
        }
        if !(config.visibility_timeout.is_finite() && config.visibility_timeout > 0.0) {
            return Err(BrokerError::Config(format!(
                "visibility_timeout must be a positive number of seconds, got {}",
                config.visibility_timeout
            )));
        }
        let accept = Accept::new(&config.accept).map_err(|e| BrokerError::Config(e.to_string()))?;
        let conn = Connector::new(
            &config.url,
            &format!("fastq-consumer:{}", config.consumer_id),
        )?;
        let keys = layout(&conn, &config.global_keyprefix)?;
        let group = |keys: KeyLayout, queues: &[String]| Group {
            order: keys.consume_order(queues),
            consumer_key: keys.consumer(&config.consumer_id),
            route: keys.route(),
            keys,
            refused: HashSet::new(),
        };
        let groups = if keys.is_cluster() {
            let mut groups: Vec<Group> = Vec::new();
            for queue in &config.queues {
                if let Some(problem) = cluster_name_problem("queue name", queue) {
                    return Err(BrokerError::Config(problem));
                }
                if groups.iter().all(|g| g.keys.scope() != Some(queue)) {
                    groups.push(group(keys.scoped(queue), std::slice::from_ref(queue)));
                }
            }
            groups
        } else {
            vec![group(keys, &config.queues)]
        };
        Ok(RedisConsumer {
            conn,
            scripts: Scripts::new(),
            groups,
            cursor: 0,
            accept,
            prefetch: config.prefetch,
            visibility_timeout: config.visibility_timeout,
            in_flight: HashMap::new(),
            sequence: 0,
            popped: None,
            unconfirmed: Vec::new(),
            pending_acks: HashMap::new(),
            pending_requeues: Vec::new(),
            broken: false,
            released: VecDeque::new(),
            released_set: HashSet::new(),
            refusals: Vec::new(),
            held_back: Vec::new(),
        })
    }

    /// Up to `prefetch - in_flight` deliveries; none, without any I/O, when the window is full.
    ///
    /// The claim script pops and records a batch atomically. When it finds nothing, this blocks
    /// in `BRPOP` over every list (in consume order) for up to `timeout`, then claims the popped
    /// envelope together with a top-up batch. That idle → busy pop is the only step where a
    /// message is in neither a list nor `unacked`: if this process dies between the BRPOP reply
    /// and the claim (one round trip), the message is lost, as it is in kombu. If instead the
    /// connection breaks there, the envelope is kept here and claimed by the next fetch; and if
    /// a claim's reply is lost, what it recorded is in `unacked` and in this consumer's set, so
    /// `restore_unacked`/`restore_consumer` bring it back.
    ///
    /// On a cluster each queue (slot) has its own claim: the fetch claims from the queues in
    /// turn, starting one further each time, until the window is full; when all are empty it
    /// blocks on one queue for at most `GROUP_BLOCK` (all of `timeout` with a single queue).
    ///
    /// After a dropped connection the first fetch that reaches Redis again first replays the
    /// acks and requeues the worker decided meanwhile, then claims, then returns to the head of
    /// their queues the messages this consumer's set holds that nobody here knows of (a claim
    /// whose reply was lost): the window is whole again and nothing waits for the visibility
    /// timeout.
    pub fn fetch(&mut self, timeout: Duration) -> BrokerResult<Vec<Delivery>> {
        self.replay()?;
        let window = self.prefetch.saturating_sub(self.in_flight.len());
        if window == 0 {
            self.reconcile()?;
            return Ok(Vec::new());
        }
        let n = self.groups.len();
        // A popped envelope is claimed first, by its own group.
        let start = self.popped.as_ref().map_or(self.cursor, |p| p.0);
        self.cursor = (start + 1) % n;
        let mut claimed: Vec<(usize, Claimed)> = Vec::new();
        for g in (0..n).map(|i| (start + i) % n) {
            let want = window - claimed.len();
            if want == 0 {
                break;
            }
            match self.claim(g, want) {
                Ok(got) => claimed.extend(got.into_iter().map(|c| (g, c))),
                Err(e) if claimed.is_empty() => return Err(e),
                // What was claimed is delivered; the error is the next fetch's.
                Err(_) => break,
            }
        }
        if claimed.is_empty() && timeout >= MIN_BLOCK && !self.broken {
            let block = if n == 1 {
                timeout
            } else {
                timeout.min(GROUP_BLOCK)
            };
            if let Some((index, raw)) = self.block(start, block)? {
                self.popped = Some((start, index, raw));
                claimed = self
                    .claim(start, window)?
                    .into_iter()
                    .map(|c| (start, c))
                    .collect();
            }
        }
        let mut deliveries = Vec::with_capacity(claimed.len());
        for (g, (index, tag, raw)) in claimed {
            let group = &self.groups[g];
            let queue = group
                .order
                .get(index.wrapping_sub(1))
                .map(|k| k.queue.clone())
                .unwrap_or_default();
            let tag = String::from_utf8_lossy(&tag).into_owned();
            if !tag.is_empty() {
                self.sequence += 1;
                self.in_flight.insert(tag.clone(), (self.sequence, g));
            }
            let malformed = group.keys.malformed();
            deliveries.push(Delivery::decode(raw, tag, queue, &self.accept, &malformed));
        }
        // After the claim, so a claim replayed with the popped envelope is in `in_flight`.
        // Claimed deliveries are never dropped for a failed reconcile: it stays due, and the
        // error is the next fetch's to raise.
        match self.reconcile() {
            Err(e) if deliveries.is_empty() => Err(e),
            _ => Ok(deliveries),
        }
    }

    /// The groups `tag` may belong to: its own if known, else every one (an ack of an unknown
    /// tag is harmless where the tag is not).
    fn groups_of(&self, tag: &str) -> Vec<usize> {
        match self.in_flight.get(tag) {
            Some(&(_, g)) => vec![g],
            None => (0..self.groups.len()).collect(),
        }
    }

    /// HDEL/ZREM/SREM of `tags` in group `g`, in one round trip.
    fn forget(&mut self, g: usize, tags: &[&String]) -> BrokerResult<()> {
        let group = &self.groups[g];
        let (unacked, index) = (group.keys.unacked(), group.keys.unacked_index());
        let set = &group.consumer_key;
        let result = match &group.route {
            // One script, not a MULTI: see `scripts::FORGET`.
            Some(route) => {
                let mut invocation = self.scripts.forget.prepare_invoke();
                invocation.key(&unacked).key(&index).key(set).arg(tags);
                self.conn.run_at(Some(route), COMMAND_TIMEOUT, |c| {
                    invocation.invoke::<i64>(c).map(|_| ())
                })
            }
            None => self.conn.run(|c| forget(c, &unacked, &index, set, tags)),
        };
        self.after(&result);
        result
    }

    /// Sends again the acks and requeues a dead connection may have lost.
    fn replay(&mut self) -> BrokerResult<()> {
        if !self.pending_acks.is_empty() {
            let pending: Vec<(String, usize)> = self
                .pending_acks
                .iter()
                .map(|(t, g)| (t.clone(), *g))
                .collect();
            for g in 0..self.groups.len() {
                let tags: Vec<&String> = pending
                    .iter()
                    .filter(|(_, tg)| *tg == g || *tg == usize::MAX)
                    .map(|(t, _)| t)
                    .collect();
                if !tags.is_empty() {
                    self.forget(g, &tags)?;
                }
            }
            self.pending_acks.clear();
        }
        if !self.pending_requeues.is_empty() {
            let requeues = self.pending_requeues.clone();
            for g in 0..self.groups.len() {
                let tags: Vec<String> = requeues
                    .iter()
                    .filter(|(_, tg)| *tg == g)
                    .map(|(t, _)| t.clone())
                    .collect();
                if !tags.is_empty() {
                    self.requeue(g, &tags)?;
                }
            }
            self.pending_requeues.clear();
        }
        Ok(())
    }

    /// After a dropped connection: puts back what this consumer's sets hold and nobody here
    /// knows of, so it is served again now instead of after the visibility timeout.
    fn reconcile(&mut self) -> BrokerResult<()> {
        if !self.broken {
            return Ok(());
        }
        for g in 0..self.groups.len() {
            let set = self.groups[g].consumer_key.clone();
            let route = self.groups[g].route.clone();
            let result = self.conn.run_at(route.as_deref(), COMMAND_TIMEOUT, |c| {
                ::redis::cmd("SMEMBERS").arg(&set).query::<Vec<String>>(c)
            });
            self.after(&result);
            let orphans: Vec<String> = result?
                .into_iter()
                .filter(|t| {
                    !self.in_flight.contains_key(t)
                        && !self.released_set.contains(t)
                        && !self.pending_acks.contains_key(t)
                        && !self.unconfirmed.contains(t)
                        && !self.pending_requeues.iter().any(|(r, _)| r == t)
                })
                .collect();
            if !orphans.is_empty() {
                let result = restore_tags(
                    &mut self.conn,
                    &self.scripts,
                    &self.groups[g].keys,
                    &orphans,
                    Some(&set),
                    End::Head,
                );
                self.after(&result);
                result?;
            }
        }
        self.broken = false;
        Ok(())
    }

    /// Books the outcome of a call on the connection: a reply proves the acks written before
    /// it were processed; any failure drops the connection, so they may be lost.
    fn after<T>(&mut self, result: &BrokerResult<T>) {
        match result {
            Ok(_) => self.unconfirmed.clear(),
            Err(_) => self.lost(),
        }
    }

    /// The connection died: acks written on it unconfirmed are to be sent again (only a single
    /// Redis writes unread acks: group 0).
    fn lost(&mut self) {
        for tag in self.unconfirmed.drain(..) {
            self.pending_acks.insert(tag, 0);
        }
        self.broken = true;
    }

    /// Whether calls should queue their acks instead of reaching for Redis: the connection
    /// died and the next fetch (which reconnects, backing off) has not restored it yet.
    fn deferring(&self) -> bool {
        self.broken || !self.pending_acks.is_empty() || !self.pending_requeues.is_empty()
    }

    /// Rejects with requeue: to the back of their queues, marked redelivered.
    fn requeue(&mut self, g: usize, tags: &[String]) -> BrokerResult<()> {
        let set = self.groups[g].consumer_key.clone();
        let result = restore_tags(
            &mut self.conn,
            &self.scripts,
            &self.groups[g].keys,
            tags,
            Some(&set),
            End::Back,
        );
        self.after(&result);
        self.held_back.extend(result?.held_back);
        Ok(())
    }

    /// Runs group `g`'s claim script for up to `want` envelopes, the popped one first if it is
    /// this group's.
    fn claim(&mut self, g: usize, want: usize) -> BrokerResult<Vec<Claimed>> {
        let group = &self.groups[g];
        let mut invocation = self.scripts.claim.prepare_invoke();
        for k in &group.order {
            invocation.key(&k.key);
        }
        invocation
            .key(group.keys.unacked())
            .key(group.keys.unacked_index())
            .key(&group.consumer_key)
            .key(group.keys.malformed())
            .arg(want)
            .arg(unix_now().to_string())
            .arg(MALFORMED_CAP)
            .arg(super::lease::consumer_set_ttl(self.visibility_timeout));
        let with_popped = matches!(&self.popped, Some((pg, _, _)) if *pg == g);
        if let Some((_, index, raw)) = self.popped.as_ref().filter(|_| with_popped) {
            invocation.arg(*index).arg(raw);
        }
        let result = self
            .conn
            .run_at(group.route.as_deref(), COMMAND_TIMEOUT, |c| {
                invocation.invoke(c)
            });
        self.after(&result);
        let (claimed, refused, visited): ClaimReply = result?;
        if with_popped {
            self.popped = None;
        }
        self.note_refused(g, &refused, visited);
        Ok(claimed)
    }

    /// Records which of group `g`'s lists refused in a claim that looked at the first
    /// `visited`, and what changed.
    fn note_refused(&mut self, g: usize, refused: &[(usize, String)], visited: usize) {
        let group = &mut self.groups[g];
        for (index, reason) in refused {
            if group.refused.insert(*index) {
                if let Some(list) = group.order.get(index.wrapping_sub(1)) {
                    self.refusals.push(QueueRefusal {
                        queue: list.queue.clone(),
                        key: list.key.clone(),
                        reason: Some(reason.clone()),
                    });
                }
            }
        }
        let cleared: Vec<usize> = group
            .refused
            .iter()
            .copied()
            .filter(|i| *i <= visited && !refused.iter().any(|(r, _)| r == i))
            .collect();
        for index in cleared {
            group.refused.remove(&index);
            if let Some(list) = group.order.get(index.wrapping_sub(1)) {
                self.refusals.push(QueueRefusal {
                    queue: list.queue.clone(),
                    key: list.key.clone(),
                    reason: None,
                });
            }
        }
    }

    /// The queues that began or stopped refusing since the last call, in order.
    pub fn take_refusals(&mut self) -> Vec<QueueRefusal> {
        std::mem::take(&mut self.refusals)
    }

    /// The requeued messages a queue key of another type held back since the last call.
    pub fn take_held_back(&mut self) -> Vec<HeldBack> {
        std::mem::take(&mut self.held_back)
    }

    /// BRPOP over group `g`'s lists; the 1-based index of the list and the envelope, or `None`
    /// on timeout. Lists that refuse are left out; with none left it only waits (`REFUSED_NAP`
    /// at most). A list that
    /// began refusing since the last claim fails the pop: `None`, and the next claim names it.
    fn block(&mut self, g: usize, timeout: Duration) -> BrokerResult<Option<(usize, Vec<u8>)>> {
        let group = &self.groups[g];
        let mut cmd = ::redis::cmd("BRPOP");
        let mut listed = 0;
        for (i, k) in group.order.iter().enumerate() {
            if !group.refused.contains(&(i + 1)) {
                cmd.arg(&k.key);
                listed += 1;
            }
        }
        if listed == 0 {
            // Nothing to block on: a short nap, so the caller's loop (a warm stop, say) is not
            // held for the whole fetch timeout; the next fetch's claim looks at the lists again.
            std::thread::sleep(timeout.min(REFUSED_NAP));
            return Ok(None);
        }
        cmd.arg(format!("{:.3}", timeout.as_secs_f64()));
        let result = self
            .conn
            .run_at(group.route.as_deref(), timeout + COMMAND_TIMEOUT, |c| {
                cmd.query(c)
            });
        self.after(&result);
        let popped: Option<(String, Vec<u8>)> = match result {
            Err(BrokerError::Command { reason, .. }) if is_wrong_type(&reason) => None,
            other => other?,
        };
        let order = &self.groups[g].order;
        Ok(popped.map(|(key, raw)| {
            let index = order.iter().position(|k| k.key == key).map_or(0, |i| i + 1);
            (index, raw)
        }))
    }

    /// Acknowledges `tags` in one round trip per group (kombu: `ZREM unacked_index` + `HDEL
    /// unacked`).
    ///
    /// On a dropped connection the acks are kept and sent again by the next fetch, and this
    /// returns `Ok`: the worker's decision stands, its window is free again, and the task loop
    /// never has to remember what Redis did not hear. Only a command Redis refused is raised.
    pub fn ack(&mut self, tags: &[String]) -> BrokerResult<()> {
        let tags: Vec<&String> = tags.iter().filter(|t| !t.is_empty()).collect();
        if tags.is_empty() {
            return Ok(());
        }
        if self.deferring() {
            self.keep_pending(&tags);
            return Ok(());
        }
        let mut by_group: Vec<Vec<&String>> = vec![Vec::new(); self.groups.len()];
        for tag in &tags {
            for g in self.groups_of(tag) {
                by_group[g].push(tag);
            }
        }
        for (g, group_tags) in by_group.iter().enumerate() {
            if group_tags.is_empty() {
                continue;
            }
            match self.forget(g, group_tags) {
                Ok(()) => {}
                Err(e) if e.is_connection() => {
                    self.keep_pending(&tags);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        for tag in tags {
            self.in_flight.remove(tag);
        }
        Ok(())
    }

    /// Acks to send when the connection is back; out of the window now.
    fn keep_pending(&mut self, tags: &[&String]) {
        for tag in tags {
            let group = match self.in_flight.remove(*tag) {
                Some((_, g)) => g,
                // Unknown here (acked twice?): sent to every group.
                None if self.groups.len() > 1 => usize::MAX,
                None => 0,
            };
            self.pending_acks.entry((*tag).clone()).or_insert(group);
        }
    }

    /// Without `requeue`, the same as `ack`. With it, the message goes to the *back* of its
    /// queue marked redelivered, as kombu's reject does, atomically.
    pub fn reject(&mut self, tag: &str, requeue: bool) -> BrokerResult<()> {
        if tag.is_empty() {
            return Ok(());
        }
        let tags = [tag.to_owned()];
        if !requeue {
            return self.ack(&tags);
        }
        let groups = self.groups_of(tag);
        // As `ack`: on a dropped connection the requeue waits for the next fetch.
        if self.deferring() {
            self.in_flight.remove(tag);
            for g in groups {
                self.pending_requeues.push((tag.to_owned(), g));
            }
            return Ok(());
        }
        for (i, &g) in groups.iter().enumerate() {
            match self.requeue(g, &tags) {
                Ok(()) => {}
                Err(e) if e.is_connection() => {
                    self.in_flight.remove(tag);
                    for &g in &groups[i..] {
                        self.pending_requeues.push((tag.to_owned(), g));
                    }
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        self.in_flight.remove(tag);
        Ok(())
    }

    /// Warm shutdown: every tag this consumer holds (by its Redis sets, so also what an earlier
    /// run under the same id left) goes back to the head of its queue, the first taken served
    /// first again.
    pub fn restore_unacked(&mut self) -> BrokerResult<RestoreReport> {
        // Never connected: Redis holds nothing of this consumer's, and a broker that cannot be
        // reached must not hold up a warm stop for another connect timeout.
        if !self.conn.ever_connected()
            && self.in_flight.is_empty()
            && self.pending_acks.is_empty()
            && self.pending_requeues.is_empty()
        {
            return Ok(RestoreReport::default());
        }
        // Acked tags are in the set until their acks are replayed: never restore those.
        self.replay()?;
        let mut report = RestoreReport::default();
        for g in 0..self.groups.len() {
            let set = self.groups[g].consumer_key.clone();
            let route = self.groups[g].route.clone();
            let result = self.conn.run_at(route.as_deref(), COMMAND_TIMEOUT, |c| {
                ::redis::cmd("SMEMBERS").arg(&set).query(c)
            });
            self.after(&result);
            let mut tags: Vec<String> = result?;
            // Released tags are the supervisor's to acknowledge (it read their start reports).
            tags.retain(|t| !self.released_set.contains(t));
            for (tag, &(_, tg)) in &self.in_flight {
                if tg == g && !tags.contains(tag) {
                    tags.push(tag.clone());
                }
            }
            // RPUSH puts the last pushed at the head: push the latest taken first. Tags from
            // an earlier run (unknown sequence) go deepest.
            tags.sort_by_key(|t| {
                std::cmp::Reverse(self.in_flight.get(t).map_or(u64::MAX, |&(seq, _)| seq))
            });
            let result = restore_tags(
                &mut self.conn,
                &self.scripts,
                &self.groups[g].keys,
                &tags,
                Some(&set),
                End::Head,
            );
            self.after(&result);
            report += result?;
        }
        self.in_flight.clear();
        self.broken = false;
        Ok(report)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub fn prefetch(&self) -> usize {
        self.prefetch
    }

    /// A new window for the next fetches (at least 1). A smaller one than what is in flight
    /// only stops fetching until enough is acked: nothing held is given back.
    pub fn set_prefetch(&mut self, prefetch: usize) {
        self.prefetch = prefetch.max(1);
    }

    pub fn visibility_timeout(&self) -> f64 {
        self.visibility_timeout
    }

    pub fn queues(&self) -> impl Iterator<Item = &str> {
        self.groups
            .iter()
            .flat_map(|g| g.order.iter())
            .filter(|k| k.step == 0)
            .map(|k| k.queue.as_str())
    }

    /// The URL with its password hidden.
    pub fn url(&self) -> &str {
        self.conn.url()
    }

    /// Acknowledges `tags` without waiting for the reply: for early acks, written before the
    /// task runs (so a task that kills its worker is not redelivered, as in Celery) at no round
    /// trip's cost. The tags stay unconfirmed until a later reply on the same connection; if it
    /// dies first they are sent again on the next (see `unconfirmed`). On a cluster, an `ack`.
    pub fn ack_unread(&mut self, tags: &[String]) -> BrokerResult<()> {
        if self.conn.is_cluster() {
            return self.ack(tags);
        }
        let tags: Vec<&String> = tags.iter().filter(|t| !t.is_empty()).collect();
        if tags.is_empty() {
            return Ok(());
        }
        let group = &self.groups[0];
        let packed = forget_pipeline(
            &group.keys.unacked(),
            &group.keys.unacked_index(),
            &group.consumer_key,
            &tags,
        )
        .get_packed_pipeline();
        if self.deferring() {
            self.keep_pending(&tags);
            return Ok(());
        }
        // MULTI, three commands, EXEC: five replies.
        match self.conn.send_unread(&packed, 5) {
            Ok(()) => {
                for tag in tags {
                    self.in_flight.remove(tag);
                    self.unconfirmed.push(tag.clone());
                }
                Ok(())
            }
            Err(e) if e.is_connection() => {
                self.lost();
                self.keep_pending(&tags);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Forgets `tags` here without telling Redis: the prefork supervisor acknowledges them for
    /// this consumer, batched with other children's (`Settler`), from the start reports it
    /// reads anyway. Their prefetch slots are free at once; until the supervisor's ack lands
    /// they stay in this consumer's set, so neither a reconcile nor a warm shutdown may take
    /// them for messages to restore. Not on a cluster (see `is_cluster`): there the supervisor
    /// would not know each tag's queue, and the child acks itself.
    pub fn release(&mut self, tags: &[String]) {
        for tag in tags.iter().filter(|t| !t.is_empty()) {
            self.in_flight.remove(tag);
            if self.released_set.insert(tag.clone()) {
                self.released.push_back(tag.clone());
            }
        }
        while self.released.len() > RELEASED_KEPT {
            if let Some(old) = self.released.pop_front() {
                self.released_set.remove(&old);
            }
        }
    }

    /// Drops the connection; a later call opens a new one. Held tags stay held.
    pub fn close(&mut self) {
        self.conn.close();
    }
}

/// The key layout for the connector's server: hash-tagged by queue on a cluster.
pub(super) fn layout(conn: &Connector, global_keyprefix: &str) -> BrokerResult<KeyLayout> {
    if !conn.is_cluster() {
        return Ok(KeyLayout::new(global_keyprefix));
    }
    match cluster_name_problem("global_keyprefix", global_keyprefix) {
        Some(problem) => Err(BrokerError::Config(problem)),
        None => Ok(KeyLayout::cluster(global_keyprefix)),
    }
}

fn forget(
    c: &mut Connection,
    unacked: &str,
    index: &str,
    set: &str,
    tags: &[&String],
) -> RedisResult<()> {
    forget_pipeline(unacked, index, set, tags).query(c)
}

fn forget_pipeline(unacked: &str, index: &str, set: &str, tags: &[&String]) -> ::redis::Pipeline {
    let mut pipe = ::redis::pipe();
    pipe.atomic()
        .cmd("HDEL")
        .arg(unacked)
        .arg(tags)
        .ignore()
        .cmd("ZREM")
        .arg(index)
        .arg(tags)
        .ignore()
        .cmd("SREM")
        .arg(set)
        .arg(tags)
        .ignore();
    pipe
}

/// Puts back every tag a consumer (typically a dead prefork child) held, to the head of its
/// queue; the supervisor calls this when a child exits. On a cluster the consumer's sets (one
/// per queue) are found with `SCAN` on every master.
pub fn restore_consumer(
    url: &str,
    consumer_id: &str,
    global_keyprefix: &str,
) -> BrokerResult<RestoreReport> {
    if consumer_id.is_empty() {
        return Err(BrokerError::Config("consumer_id cannot be empty".into()));
    }
    let mut conn = Connector::new(url, "fastq-restore")?;
    let base = layout(&conn, global_keyprefix)?;
    let scripts = Scripts::new();
    let mut report = RestoreReport::default();
    for keys in scoped_layouts(
        &mut conn,
        &base,
        &glob_escape(&format!("fastq.consumer.{consumer_id}")),
    )? {
        let set = keys.consumer(consumer_id);
        let route = keys.route();
        let tags: Vec<String> = conn.run_at(route.as_deref(), COMMAND_TIMEOUT, |c| {
            ::redis::cmd("SMEMBERS").arg(&set).query(c)
        })?;
        report += restore_tags(&mut conn, &scripts, &keys, &tags, Some(&set), End::Head)?;
    }
    Ok(report)
}

/// The layouts to work on: `base` on a single Redis; on a cluster, `base` scoped to every
/// queue that has a key matching `prefix{queue}<name>` (`name` a `SCAN MATCH` glob; `SCAN`
/// on every master).
pub(super) fn scoped_layouts(
    conn: &mut Connector,
    base: &KeyLayout,
    name: &str,
) -> BrokerResult<Vec<KeyLayout>> {
    if !base.is_cluster() {
        return Ok(vec![base.clone()]);
    }
    let head = base.queue("", 0); // `prefix{}`
    let prefix = &head[..head.len() - 2];
    let pattern = format!("{}{{*}}{name}", glob_escape(prefix));
    let mut queues: Vec<String> = Vec::new();
    for master in conn.masters()? {
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = conn.run_on(&master, |c| {
                ::redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)
            })?;
            for key in keys {
                let queue = key
                    .get(prefix.len() + 1..)
                    .and_then(|rest| rest.split_once('}'))
                    .map(|(q, _)| q.to_owned());
                if let Some(q) = queue.filter(|q| !q.is_empty() && !queues.contains(q)) {
                    queues.push(q);
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(queues.iter().map(|q| base.scoped(q)).collect())
}

/// `text` with the glob characters of `SCAN MATCH` escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// kombu's `QoS.restore_visible`: under kombu's `unacked_mutex` lock, restores every message
/// unacknowledged for longer than `visibility_timeout` seconds, whoever holds it. Returns an
/// empty report when another process holds the lock. On a cluster, queue by queue (each has
/// its own `unacked_index` and lock), found with `SCAN` on every master.
pub fn restore_visible(
    url: &str,
    visibility_timeout: f64,
    global_keyprefix: &str,
) -> BrokerResult<RestoreReport> {
    if !(visibility_timeout.is_finite() && visibility_timeout >= 0.0) {
        return Err(BrokerError::Config(format!(
            "visibility_timeout must be a non-negative number of seconds, got {visibility_timeout}"
        )));
    }
    let mut conn = Connector::new(url, "fastq-restore")?;
    let base = layout(&conn, global_keyprefix)?;
    let scripts = Scripts::new();
    let mut report = RestoreReport::default();
    for keys in scoped_layouts(&mut conn, &base, "unacked_index")? {
        report += restore_visible_in(&mut conn, &scripts, &keys, visibility_timeout)?;
    }
    Ok(report)
}

fn restore_visible_in(
    conn: &mut Connector,
    scripts: &Scripts,
    keys: &KeyLayout,
    visibility_timeout: f64,
) -> BrokerResult<RestoreReport> {
    let route = keys.route();
    let route = route.as_deref();
    let mutex = keys.unacked_mutex();
    let token = uuid::Uuid::new_v4().simple().to_string();
    let locked: Option<String> = conn.run_at(route, COMMAND_TIMEOUT, |c| {
        ::redis::cmd("SET")
            .arg(&mutex)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(RESTORE_LOCK_MS)
            .query(c)
    })?;
    if locked.is_none() {
        return Ok(RestoreReport::default());
    }
    let result = (|| {
        let ceiling = unix_now() - visibility_timeout;
        let mut tags: Vec<String> = conn.run_at(route, COMMAND_TIMEOUT, |c| {
            ::redis::cmd("ZRANGEBYSCORE")
                .arg(keys.unacked_index())
                .arg("-inf")
                .arg(ceiling.to_string())
                .query(c)
        })?;
        // Newest first, as kombu does, so the oldest ends up at the head of its queue.
        tags.reverse();
        restore_tags(conn, scripts, keys, &tags, None, End::Head)
    })();
    // The lock expires by itself; failing to release it early only delays the next restore.
    let _ = conn.run_at(route, COMMAND_TIMEOUT, |c| {
        scripts.unlock.key(&mutex).arg(&token).invoke::<i64>(c)
    });
    result
}

/// Unix time in seconds, as kombu scores `unacked_index` (`time.time()`).
pub(super) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
