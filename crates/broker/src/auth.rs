//! Who is asking, and the one place where every request is authorized.
//!
//! Every connection carries a [`Principal`], set once when the connection is established: on
//! a PLAINTEXT listener, and on an SSL listener without a client certificate, it is
//! `User:ANONYMOUS`; with a client certificate it is `User:<name>`, the name mapped from the
//! certificate's subject by `ssl.principal.mapping.rules` ([`crate::tls`]). SASL, when it
//! comes, replaces it after authentication. Handlers call [`authorize`] for each resource
//! they touch, so that ACLs, when they arrive, are checked here and nowhere else.

use std::net::SocketAddr;

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
