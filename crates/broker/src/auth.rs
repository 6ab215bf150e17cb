//! Who is asking, and the one place where every request is authorized.
//!
//! Every connection carries a [`Principal`]; today every listener is PLAINTEXT and every
//! principal is `User:ANONYMOUS`. Handlers call [`authorize`] for each resource they touch,
//! so that ACLs, when they arrive, are checked here and nowhere else.

use std::net::SocketAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub kind: String,
    pub name: String,
}

impl Principal {
    pub fn anonymous() -> Self {
        Principal {
            kind: "User".into(),
            name: "ANONYMOUS".into(),
        }
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
}

/// Kafka's ACL operations, as far as requests need them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    DescribeConfigs,
    AlterConfigs,
}

/// Kafka's ACL resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    Topic(&'a str),
    Cluster,
    Group(&'a str),
    TransactionalId(&'a str),
}

/// Whether `ctx`'s principal may perform `op` on `resource`. No ACLs exist yet: everything is
/// allowed, as in a Kafka cluster without an authorizer.
pub fn authorize(ctx: &ConnectionContext, op: Operation, resource: Resource<'_>) -> bool {
    let _ = (ctx, op, resource);
    true
}
