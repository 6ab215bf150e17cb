//! ISR changes asked by partition leaders (KIP-497; `docs/design/cluster.md` §3.5, §4.3).
//!
//! A leader proposes a new ISR when a replica outside it catches up (from the fetch that
//! shows it, [`crate::partition::Partition::on_follower_fetch`]) or when an ISR member has not
//! caught up for `replica.lag.time.max.ms` (checked every half of it, as Kafka does). The
//! proposal goes to the active controller as an `AlterPartition` operation (forwarded when
//! another node leads the quorum); the controller checks it against the partition's leader
//! and partition epochs and the brokers' states and writes the new `Partition` record. The
//! leader adopts the new ISR when its metadata publisher applies that record, like every
//! other replica; the answer only settles the proposal so that the next one may follow.

use std::sync::Arc;
use std::time::Duration;

use strata_quorum::controller::ops::AlterPartition;

use crate::broker::Broker;
use crate::partition::IsrProposal;

/// How long a leader waits after a refused or failed proposal before it may propose again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Sends `proposal` to the controller in the background.
pub fn send(broker: &Arc<Broker>, proposal: IsrProposal) {
    let broker = broker.clone();
    tokio::spawn(async move {
        let op = AlterPartition {
            broker_id: broker.node_id(),
            topic_id: proposal.topic_id,
            partition: proposal.partition,
            leader_epoch: proposal.leader_epoch,
            partition_epoch: proposal.partition_epoch,
            new_isr: proposal.isr.clone(),
        };
        let answer = broker.submit(op).await;
        let partition = broker
            .partitions
            .get(&proposal.topic_id, proposal.partition);
        // A change that completed a reassignment may have removed this replica already.
        let topic = broker
            .image()
            .topic_by_id(&proposal.topic_id)
            .map(|t| t.name.clone())
            .unwrap_or_default();
        match &answer {
            Ok(reply) => match &reply.result {
                Ok(isr) => {
                    tracing::info!(%topic, partition = proposal.partition, ?isr, "ISR changed")
                }
                Err(refused) => {
                    tracing::info!(%topic, partition = proposal.partition, proposed = ?proposal.isr, code = refused.code, message = %refused.message, "the controller refused an ISR change")
                }
            },
            Err(error) => {
                tracing::warn!(%topic, partition = proposal.partition, proposed = ?proposal.isr, %error, "could not ask the controller for an ISR change")
            }
        }
        if !matches!(&answer, Ok(reply) if reply.result.is_ok()) {
            // Not again at the next fetch: a refused replica (fenced, say) fetches often.
            tokio::time::sleep(RETRY_AFTER).await;
        }
        if let Some(p) = partition {
            p.isr_proposal_settled(proposal.leader_epoch);
        }
    });
}

/// Every half of `replica.lag.time.max.ms`: each partition this broker leads proposes to
/// drop the ISR members that have not caught up for that long.
pub fn start_expiry(broker: &Arc<Broker>) {
    let max_lag = Duration::from_millis(
        broker
            .config
            .parsed::<u64>("replica.lag.time.max.ms")
            .unwrap_or(30_000)
            .max(10),
    );
    let weak = Arc::downgrade(broker);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(max_lag / 2);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(broker) = weak.upgrade() else { return };
            let now = std::time::Instant::now();
            for p in broker.partitions.all() {
                if let Some(proposal) = p.propose_isr_shrink(now, max_lag) {
                    tracing::info!(topic = %p.topic, partition = p.index, proposed = ?proposal.isr, "ISR members behind for replica.lag.time.max.ms; proposing to drop them");
                    send(&broker, proposal);
                }
            }
        }
    });
}
