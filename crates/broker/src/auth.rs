//! Who is asking, and the one place where every request is authorized.
//!
//! Every connection carries a [`Principal`], set once when the connection is established: on
//! a PLAINTEXT listener, and on an SSL listener without a client certificate, it is
//! `User:ANONYMOUS`; with a client certificate it is `User:<name>`, the name mapped from the
//! certificate's subject by `ssl.principal.mapping.rules` ([`crate::tls`]). SASL, when it
//! comes, replaces it after authentication. Handlers call [`authorize`] for each resource
//! they touch, so ACLs are checked here and nowhere else: [`authorize`] asks the connection's
//! [`crate::acl::Authorizer`] (everything allowed when none is configured) and writes a denial
//! to the audit log (target `strata::audit`, INFO), naming the principal, the client's
//! address, the operation, the resource and the API. Checks that only filter what a listing
//! shows ([`authorize_quiet`]: Metadata of all topics, ListGroups) log their denials at DEBUG,
//! as Kafka does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI16, Ordering};
use std::sync::Arc;

use kafka_protocol::messages::ApiKey;
use strata_quorum::acl::{ResourceType, CLUSTER_NAME};

use crate::acl::Authorizer;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub kind: String,
    pub name: String,
}

impl Principal {
    pub fn anonymous() -> Self {
        Principal::user("ANONYMOUS")
    }

    /// A `User:` principal, the kind every Kafka authentication produces.
    pub fn user(name: impl Into<String>) -> Self {
        Principal {
            kind: "User".into(),
            name: name.into(),
        }
    }
}

/// Kafka's text form, `User:alice`, as ACLs and logs show it.
impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

/// What a connection knows about its peer.
#[derive(Debug, Clone)]
pub struct ConnectionContext {
    pub peer: SocketAddr,
    /// The listener name the connection arrived on (its advertised address is answered in
    /// metadata).
    pub listener: String,
    pub principal: Principal,
    /// Unique per connection for the broker's lifetime; what connection-bound state (fetch
    /// sessions) is tied to.
    pub connection_id: u64,
    /// The broker's authorizer, which [`authorize`] asks.
    pub authorizer: Arc<Authorizer>,
    /// The API of the request being handled, for the audit log.
    pub api: CurrentApi,
}

/// The API key of the request a connection is handling. A connection handles one request at
/// a time, so one slot per connection suffices; atomic so that the context stays `Sync`.
#[derive(Debug, Default)]
pub struct CurrentApi(AtomicI16);

impl CurrentApi {
    pub fn set(&self, api: ApiKey) {
        self.0.store(api as i16, Ordering::Relaxed);
    }

    /// The API's name (`Produce`), or its key when unknown.
    pub fn name(&self) -> String {
        let key = self.0.load(Ordering::Relaxed);
        ApiKey::try_from(key).map_or_else(|_| key.to_string(), |api| format!("{api:?}"))
    }
}

impl Clone for CurrentApi {
    fn clone(&self) -> Self {
        CurrentApi(AtomicI16::new(self.0.load(Ordering::Relaxed)))
    }
}

/// Kafka's ACL operations (the same type the ACLs are written with).
pub use strata_quorum::acl::AclOperation as Operation;

/// Kafka's ACL resources, as handlers name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    Topic(&'a str),
    Cluster,
    Group(&'a str),
    TransactionalId(&'a str),
}

impl Resource<'_> {
    /// The ACL resource type and name.
    pub fn parts(&self) -> (ResourceType, &str) {
        match *self {
            Resource::Topic(name) => (ResourceType::Topic, name),
            Resource::Cluster => (ResourceType::Cluster, CLUSTER_NAME),
            Resource::Group(name) => (ResourceType::Group, name),
            Resource::TransactionalId(name) => (ResourceType::TransactionalId, name),
        }
    }
}

/// Whether `ctx`'s principal may perform `op` on `resource`; a denial is written to the audit
/// log. Without an authorizer, everything is allowed.
pub fn authorize(ctx: &ConnectionContext, op: Operation, resource: Resource<'_>) -> bool {
    check(ctx, op, resource, true)
}

/// [`authorize`] for checks that only filter a listing (Kafka's `logIfDenied = false`): a
/// denial is logged at DEBUG, not in the audit log.
pub fn authorize_quiet(ctx: &ConnectionContext, op: Operation, resource: Resource<'_>) -> bool {
    check(ctx, op, resource, false)
}

/// Whether `ctx`'s principal may perform `op` on some resource of the type (Kafka's
/// `authorizeByResourceType`; see [`crate::acl::AclIndex::allows_any`]). Not audited: it is
/// one of two ways to pass a check, the caller audits the other.
pub fn authorize_any(ctx: &ConnectionContext, op: Operation, resource_type: ResourceType) -> bool {
    ctx.authorizer
        .allows_any(&ctx.principal, ctx.peer.ip(), op, resource_type)
}

fn check(ctx: &ConnectionContext, op: Operation, resource: Resource<'_>, audit: bool) -> bool {
    if !ctx.authorizer.is_enabled() {
        return true;
    }
    let (resource_type, name) = resource.parts();
    let decision = ctx
        .authorizer
        .decide(&ctx.principal, ctx.peer.ip(), op, resource_type, name);
    if !decision.allowed {
        let host = ctx.peer.ip().to_canonical();
        let api = ctx.api.name();
        // One line per denial, the same fields at either level.
        macro_rules! denied {
            ($level:ident, $message:literal) => {
                tracing::$level!(
                    target: "strata::audit",
                    principal = %ctx.principal,
                    %host,
                    operation = %op,
                    resource_type = %resource_type,
                    resource_name = %name,
                    %api,
                    rule = %decision.rule,
                    $message
                )
            };
        }
        if audit {
            denied!(info, "denied");
        } else {
            denied!(debug, "denied (filtered from a listing)");
        }
    }
    decision.allowed
}

/// The operations Kafka reports as authorized for a topic.
pub const TOPIC_OPERATIONS: &[Operation] = &[
    Operation::Read,
    Operation::Write,
    Operation::Create,
    Operation::Delete,
    Operation::Alter,
    Operation::Describe,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
];

/// The operations Kafka reports as authorized for the cluster.
pub const CLUSTER_OPERATIONS: &[Operation] = &[
    Operation::Create,
    Operation::Alter,
    Operation::Describe,
    Operation::ClusterAction,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
    Operation::IdempotentWrite,
];

/// The operations Kafka reports as authorized for a group.
pub const GROUP_OPERATIONS: &[Operation] =
    &[Operation::Read, Operation::Describe, Operation::Delete];

/// The bit set (bit = Kafka's operation code) of `ops` the principal may perform on
/// `resource`, as Metadata, DescribeCluster and DescribeGroups report it when asked. Quiet:
/// this reports, it refuses nothing.
pub fn authorized_operations(
    ctx: &ConnectionContext,
    resource: Resource<'_>,
    ops: &[Operation],
) -> i32 {
    ops.iter()
        .filter(|op| authorize_quiet(ctx, **op, resource))
        .fold(0, |bits, op| bits | (1 << op.code()))
}
