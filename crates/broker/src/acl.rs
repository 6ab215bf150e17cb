//! The built-in authorizer: Kafka's StandardAuthorizer semantics over the ACLs in the
//! metadata image.
//!
//! ```text
//!   MetadataImage.acls (Arc<BTreeMap<id, AclBinding>>)
//!        │ Broker::publish → Authorizer::update (rebuilds only when the Arc changed)
//!        ▼
//!   AclIndex (immutable) ── per resource type: literal name → entries ("*" is one name),
//!        │                   prefix → entries, and the lengths of the prefixes present
//!        ▼ Arc swapped under a lock held only to clone or replace the Arc
//!   auth::authorize(ctx, op, resource) → Authorizer::decide → Decision
//! ```
//!
//! A decision, as Kafka's StandardAuthorizer makes it: a super user (`super.users`) is always
//! allowed; otherwise every binding whose pattern matches the resource (a literal of its name,
//! the literal `*`, a prefix of its name) is considered, and of those the ones for the
//! principal (or `User:*`) and the client's address (or `*`) whose operation covers the one
//! asked: a DENY wins at once, else an ALLOW allows; when no binding matches the resource at
//! all, `allow.everyone.if.no.acl.found` decides (default: denied), and when bindings exist but
//! none applies, the answer is denied. An ALLOW of READ, WRITE, DELETE or ALTER also allows
//! DESCRIBE, an ALLOW of ALTER_CONFIGS also DESCRIBE_CONFIGS, ALL covers everything; a DENY
//! denies only its own operation (or everything, for ALL).
//!
//! The hot path (produce, fetch) costs one `Arc` clone under a read lock and a few hash
//! lookups: the literal name, `*`, and one lookup per distinct prefix length present for the
//! resource type. Nothing scans all ACLs per request; the index is rebuilt off the request path
//! when the image's ACLs change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use strata_quorum::acl::{
    AclBinding, AclOperation, AclPermission, PatternType, ResourceType, WILDCARD_HOST,
    WILDCARD_RESOURCE,
};
use strata_quorum::MetadataImage;
use uuid::Uuid;

use crate::auth::Principal;
use crate::config::BrokerConfig;

/// Kafka's class name of the KRaft authorizer, which turns the built-in authorizer on.
pub const STANDARD_AUTHORIZER: &str = "org.apache.kafka.metadata.authorizer.StandardAuthorizer";
/// The short name Strata also accepts for it.
pub const SHORT_NAME: &str = "StandardAuthorizer";
/// The ZooKeeper-era authorizer, which needs ZooKeeper.
const ZK_AUTHORIZER: &str = "kafka.security.authorizer.AclAuthorizer";

/// The authorizer's configuration (`super.users`, `allow.everyone.if.no.acl.found`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerSettings {
    /// Principals allowed everything, whatever the ACLs say: kind → names (`User` →
    /// `admin`), so that a check needs no allocation.
    pub super_users: HashMap<String, HashSet<String>>,
    /// The answer for a resource no binding matches.
    pub allow_everyone_if_no_acl_found: bool,
}

impl AuthorizerSettings {
    /// The settings from the broker config: `None` when `authorizer.class.name` is empty (no
    /// authorizer: everything is allowed). Another class than the StandardAuthorizer, or a
    /// malformed super user, is an error naming what to do.
    pub fn from_config(config: &BrokerConfig) -> Result<Option<Self>, String> {
        let class = config.value("authorizer.class.name").unwrap_or_default();
        let class = class.trim();
        if class.is_empty() {
            return Ok(None);
        }
        if class == ZK_AUTHORIZER {
            return Err(format!(
                "authorizer.class.name={ZK_AUTHORIZER} is the ZooKeeper-based authorizer, which \
                 Strata (like Kafka in KRaft mode) does not run: use {STANDARD_AUTHORIZER}; ACLs \
                 are kept in the metadata log"
            ));
        }
        if class != STANDARD_AUTHORIZER && class != SHORT_NAME {
            return Err(format!(
                "authorizer.class.name={class} is not an authorizer Strata has: use \
                 {STANDARD_AUTHORIZER} (or {SHORT_NAME}), or leave it empty for none"
            ));
        }
        let mut super_users: HashMap<String, HashSet<String>> = HashMap::new();
        for user in config.value("super.users").unwrap_or_default().split(';') {
            let user = user.trim();
            if user.is_empty() {
                continue;
            }
            match user.split_once(':') {
                Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {
                    super_users
                        .entry(kind.to_string())
                        .or_default()
                        .insert(name.to_string());
                }
                _ => {
                    return Err(format!(
                        "super.users: {user:?} is not a principal; write Type:name separated by \
                         semicolons, e.g. User:admin;User:ops"
                    ))
                }
            }
        }
        let allow = config
            .value("allow.everyone.if.no.acl.found")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        Ok(Some(AuthorizerSettings {
            super_users,
            allow_everyone_if_no_acl_found: allow,
        }))
    }
}

/// Why a request was allowed or denied; the audit log names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// No authorizer is configured.
    NoAuthorizer,
    SuperUser,
    /// This binding decided (shared with the index: a decision allocates nothing).
    Acl(Arc<AclBinding>),
    /// No binding matches the resource: `allow.everyone.if.no.acl.found` decided.
    NoAclFound,
    /// Bindings match the resource, none for this principal, host and operation.
    NoMatchingAcl,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::NoAuthorizer => f.write_str("no authorizer"),
            Rule::SuperUser => f.write_str("super user"),
            Rule::Acl(acl) => write!(f, "ACL: {acl}"),
            Rule::NoAclFound => f.write_str("no ACL for the resource"),
            Rule::NoMatchingAcl => f.write_str("no ACL allows it"),
        }
    }
}

/// An authorization decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub rule: Rule,
}

/// Who matches an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PrincipalRule {
    /// `User:*` (any name of the kind).
    AnyOf(String),
    Exactly(String, String),
}

/// Where from an entry applies.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    Any,
    Ip(IpAddr),
    /// Not an address (Kafka compares hosts as text): matches nothing a client connects from.
    Text(String),
}

/// One binding as the index keeps it.
#[derive(Debug, Clone)]
struct Entry {
    principal: PrincipalRule,
    host: HostRule,
    operation: AclOperation,
    permission: AclPermission,
    binding: Arc<AclBinding>,
}

impl Entry {
    fn new(binding: &AclBinding) -> Self {
        let principal = match binding.principal.split_once(':') {
            Some((kind, "*")) => PrincipalRule::AnyOf(kind.to_string()),
            Some((kind, name)) => PrincipalRule::Exactly(kind.to_string(), name.to_string()),
            // Validated on creation; a binding that is not Type:name matches nobody.
            None => PrincipalRule::Exactly(String::new(), binding.principal.clone()),
        };
        let host = if binding.host == WILDCARD_HOST {
            HostRule::Any
        } else {
            match binding.host.parse::<IpAddr>() {
                Ok(ip) => HostRule::Ip(ip.to_canonical()),
                Err(_) => HostRule::Text(binding.host.clone()),
            }
        };
        Entry {
            principal,
            host,
            operation: binding.operation,
            permission: binding.permission,
            binding: Arc::new(binding.clone()),
        }
    }

    fn applies_to(&self, principal: &Principal, host: IpAddr) -> bool {
        let who = match &self.principal {
            PrincipalRule::AnyOf(kind) => *kind == principal.kind,
            PrincipalRule::Exactly(kind, name) => {
                *kind == principal.kind && *name == principal.name
            }
        };
        who && match &self.host {
            HostRule::Any => true,
            HostRule::Ip(ip) => *ip == host,
            HostRule::Text(_) => false,
        }
    }

    /// This entry's verdict on `op` for a principal and host it applies to: `None` if its
    /// operation does not cover `op`. Implications hold for ALLOW only.
    fn verdict(&self, op: AclOperation) -> Option<bool> {
        let covers = self.operation == AclOperation::All
            || self.operation == op
            || (self.permission == AclPermission::Allow
                && match op {
                    AclOperation::Describe => matches!(
                        self.operation,
                        AclOperation::Read
                            | AclOperation::Write
                            | AclOperation::Delete
                            | AclOperation::Alter
                    ),
                    AclOperation::DescribeConfigs => self.operation == AclOperation::AlterConfigs,
                    _ => false,
                });
        covers.then_some(self.permission == AclPermission::Allow)
    }
}

/// The bindings of one resource type.
#[derive(Debug, Default)]
struct TypeIndex {
    /// By literal name; the wildcard binding is under `*`.
    literal: HashMap<String, Vec<Entry>>,
    prefixed: HashMap<String, Vec<Entry>>,
    /// The byte lengths of the prefixes in `prefixed`, ascending.
    prefix_lengths: Vec<usize>,
}

impl TypeIndex {
    /// Every entry whose pattern matches the resource `name`.
    fn matching<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        let literal = self.literal.get(name).into_iter().flatten();
        let wildcard = (name != WILDCARD_RESOURCE)
            .then(|| self.literal.get(WILDCARD_RESOURCE))
            .flatten()
            .into_iter()
            .flatten();
        let prefixed = self
            .prefix_lengths
            .iter()
            .take_while(move |len| **len <= name.len())
            .filter_map(move |len| name.get(..*len))
            .filter_map(|prefix| self.prefixed.get(prefix))
            .flatten();
        literal.chain(wildcard).chain(prefixed)
    }

    fn all(&self) -> impl Iterator<Item = &Entry> {
        self.literal
            .values()
            .chain(self.prefixed.values())
            .flatten()
    }
}

/// An immutable index of the ACLs, built from the image's bindings.
#[derive(Debug, Default)]
pub struct AclIndex {
    by_type: HashMap<ResourceType, TypeIndex>,
}

impl AclIndex {
    pub fn build<'a>(bindings: impl IntoIterator<Item = &'a AclBinding>) -> Self {
        let mut by_type: HashMap<ResourceType, TypeIndex> = HashMap::new();
        for binding in bindings {
            let index = by_type.entry(binding.resource_type).or_default();
            let map = match binding.pattern_type {
                PatternType::Literal => &mut index.literal,
                PatternType::Prefixed => &mut index.prefixed,
            };
            map.entry(binding.resource_name.clone())
                .or_default()
                .push(Entry::new(binding));
        }
        for index in by_type.values_mut() {
            let mut lengths: Vec<usize> = index.prefixed.keys().map(String::len).collect();
            lengths.sort_unstable();
            lengths.dedup();
            index.prefix_lengths = lengths;
        }
        AclIndex { by_type }
    }

    /// Kafka's decision for `principal` at `host` doing `op` on the resource.
    pub fn decide(
        &self,
        settings: &AuthorizerSettings,
        principal: &Principal,
        host: IpAddr,
        op: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> Decision {
        if is_super_user(settings, principal) {
            return Decision {
                allowed: true,
                rule: Rule::SuperUser,
            };
        }
        let host = host.to_canonical();
        let mut any_for_resource = false;
        let mut allow: Option<&Entry> = None;
        if let Some(index) = self.by_type.get(&resource_type) {
            for entry in index.matching(name) {
                any_for_resource = true;
                if !entry.applies_to(principal, host) {
                    continue;
                }
                match entry.verdict(op) {
                    Some(false) => {
                        return Decision {
                            allowed: false,
                            rule: Rule::Acl(entry.binding.clone()),
                        }
                    }
                    Some(true) => allow = allow.or(Some(entry)),
                    None => {}
                }
            }
        }
        match allow {
            Some(entry) => Decision {
                allowed: true,
                rule: Rule::Acl(entry.binding.clone()),
            },
            None if !any_for_resource => Decision {
                allowed: settings.allow_everyone_if_no_acl_found,
                rule: Rule::NoAclFound,
            },
            None => Decision {
                allowed: false,
                rule: Rule::NoMatchingAcl,
            },
        }
    }

    /// Whether `principal` may do `op` on *some* resource of the type (Kafka's
    /// `authorizeByResourceType`, e.g. an idempotent producer's WRITE on any topic): an ALLOW
    /// (exactly `op` or ALL) on the `*` literal allows, a DENY on it refuses; otherwise an
    /// ALLOW whose name no DENY covers (a DENY literal of the same name, a DENY prefix of it)
    /// allows. Super users, and everyone when no binding of the type exists and
    /// `allow.everyone.if.no.acl.found` is set, are allowed.
    pub fn allows_any(
        &self,
        settings: &AuthorizerSettings,
        principal: &Principal,
        host: IpAddr,
        op: AclOperation,
        resource_type: ResourceType,
    ) -> bool {
        // As Kafka does: a resource of a name no binding names decides super users and the
        // no-ACL default (only wildcard and empty-prefix bindings can match it).
        if self
            .decide(
                settings,
                principal,
                host,
                op,
                resource_type,
                "\u{0}hardcode",
            )
            .allowed
        {
            return true;
        }
        let Some(index) = self.by_type.get(&resource_type) else {
            return false;
        };
        let host = host.to_canonical();
        let applies = |e: &Entry| {
            e.applies_to(principal, host) && (e.operation == op || e.operation == AclOperation::All)
        };
        let mut deny_literal = HashSet::new();
        let mut deny_prefixed = HashSet::new();
        for e in index.all().filter(|e| applies(e)) {
            if e.permission == AclPermission::Deny {
                let name = e.binding.resource_name.as_str();
                match e.binding.pattern_type {
                    PatternType::Literal if name == WILDCARD_RESOURCE => return false,
                    PatternType::Literal => deny_literal.insert(name),
                    PatternType::Prefixed => deny_prefixed.insert(name),
                };
            }
        }
        let mut allowed = index
            .all()
            .filter(|e| applies(e) && e.permission == AclPermission::Allow);
        allowed.any(|e| {
            let name = e.binding.resource_name.as_str();
            if e.binding.pattern_type == PatternType::Literal {
                if name == WILDCARD_RESOURCE {
                    return true;
                }
                if deny_literal.contains(name) {
                    return false;
                }
            }
            !name
                .char_indices()
                .map(|(i, c)| &name[..i + c.len_utf8()])
                .any(|prefix| deny_prefixed.contains(prefix))
        })
    }
}

fn is_super_user(settings: &AuthorizerSettings, principal: &Principal) -> bool {
    settings
        .super_users
        .get(&principal.kind)
        .is_some_and(|names| names.contains(&principal.name))
}

/// The broker's authorizer: its settings and the current index.
#[derive(Debug)]
pub struct Authorizer {
    /// `None`: no authorizer configured, everything is allowed.
    settings: Option<AuthorizerSettings>,
    index: RwLock<Arc<AclIndex>>,
    /// The image's ACL map the index was built from (compared by pointer).
    built_from: Mutex<Arc<BTreeMap<Uuid, AclBinding>>>,
}

impl Authorizer {
    pub fn new(settings: Option<AuthorizerSettings>, image: &MetadataImage) -> Self {
        let acls = image.acls().clone();
        Authorizer {
            settings,
            index: RwLock::new(Arc::new(AclIndex::build(acls.values()))),
            built_from: Mutex::new(acls),
        }
    }

    /// No authorizer: everything allowed, ACL APIs answer SECURITY_DISABLED.
    pub fn disabled() -> Self {
        Authorizer::new(None, &MetadataImage::default())
    }

    pub fn is_enabled(&self) -> bool {
        self.settings.is_some()
    }

    /// Rebuilds the index if the image's ACLs are not the ones it was built from. Called with
    /// every published image, off the request path.
    pub fn update(&self, image: &MetadataImage) {
        let mut built_from = self.built_from.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::ptr_eq(&built_from, image.acls()) {
            return;
        }
        let index = Arc::new(AclIndex::build(image.acls().values()));
        *built_from = image.acls().clone();
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = index;
    }

    fn snapshot(&self) -> Arc<AclIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The decision for one action.
    pub fn decide(
        &self,
        principal: &Principal,
        host: IpAddr,
        op: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> Decision {
        match &self.settings {
            None => Decision {
                allowed: true,
                rule: Rule::NoAuthorizer,
            },
            Some(settings) => {
                self.snapshot()
                    .decide(settings, principal, host, op, resource_type, name)
            }
        }
    }

    /// [`AclIndex::allows_any`]; everything without an authorizer.
    pub fn allows_any(
        &self,
        principal: &Principal,
        host: IpAddr,
        op: AclOperation,
        resource_type: ResourceType,
    ) -> bool {
        match &self.settings {
            None => true,
            Some(settings) => {
                self.snapshot()
                    .allows_any(settings, principal, host, op, resource_type)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AclOperation as Op;

    const HOME: &str = "10.0.0.1";

    fn host(ip: &str) -> IpAddr {
        ip.parse().expect("ip")
    }

    fn acl(
        principal: &str,
        permission: AclPermission,
        op: Op,
        kind: ResourceType,
        name: &str,
        pattern: PatternType,
    ) -> AclBinding {
        AclBinding {
            resource_type: kind,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission,
        }
    }

    fn allow(principal: &str, op: Op, name: &str) -> AclBinding {
        acl(
            principal,
            AclPermission::Allow,
            op,
            ResourceType::Topic,
            name,
            PatternType::Literal,
        )
    }

    fn deny(principal: &str, op: Op, name: &str) -> AclBinding {
        acl(
            principal,
            AclPermission::Deny,
            op,
            ResourceType::Topic,
            name,
            PatternType::Literal,
        )
    }

    struct Case {
        index: AclIndex,
        settings: AuthorizerSettings,
    }

    impl Case {
        fn new(acls: &[AclBinding]) -> Self {
            Case {
                index: AclIndex::build(acls),
                settings: AuthorizerSettings::default(),
            }
        }

        fn topic(&self, user: &str, op: Op, name: &str) -> bool {
            self.on(user, HOME, op, ResourceType::Topic, name)
        }

        fn on(&self, user: &str, from: &str, op: Op, kind: ResourceType, name: &str) -> bool {
            self.index
                .decide(
                    &self.settings,
                    &Principal::user(user),
                    host(from),
                    op,
                    kind,
                    name,
                )
                .allowed
        }
    }

    #[test]
    fn literal_bindings_match_their_name_only() {
        let case = Case::new(&[allow("User:alice", Op::Write, "orders")]);
        assert!(case.topic("alice", Op::Write, "orders"));
        assert!(
            !case.topic("alice", Op::Write, "orders2"),
            "no ACL: denied by default"
        );
        assert!(!case.topic("alice", Op::Read, "orders"));
        assert!(!case.topic("bob", Op::Write, "orders"));
        assert!(!case.on("alice", HOME, Op::Write, ResourceType::Group, "orders"));
    }

    #[test]
    fn prefixed_bindings_match_names_starting_with_them() {
        let case = Case::new(&[acl(
            "User:alice",
            AclPermission::Allow,
            Op::Read,
            ResourceType::Topic,
            "fin-",
            PatternType::Prefixed,
        )]);
        assert!(case.topic("alice", Op::Read, "fin-ledger"));
        assert!(case.topic("alice", Op::Read, "fin-"));
        assert!(!case.topic("alice", Op::Read, "fin"));
        assert!(!case.topic("alice", Op::Read, "hr-fin-ledger"));
        // A multi-byte name is cut at character boundaries only.
        assert!(!case.topic("alice", Op::Read, "fé"));
    }

    #[test]
    fn wildcards_match_every_resource_and_every_user() {
        let case = Case::new(&[allow("User:*", Op::Read, "*")]);
        assert!(case.topic("anyone", Op::Read, "whatever"));
        assert!(!case.topic("anyone", Op::Write, "whatever"));
        assert!(!case.on("anyone", HOME, Op::Read, ResourceType::Group, "g"));
        // `*` as a prefix is a plain character.
        let case = Case::new(&[acl(
            "User:alice",
            AclPermission::Allow,
            Op::Read,
            ResourceType::Topic,
            "*",
            PatternType::Prefixed,
        )]);
        assert!(!case.topic("alice", Op::Read, "orders"));
        assert!(case.topic("alice", Op::Read, "*x"));
    }

    #[test]
    fn deny_wins_over_allow() {
        let case = Case::new(&[
            allow("User:alice", Op::All, "*"),
            deny("User:alice", Op::Write, "audit"),
            acl(
                "User:*",
                AclPermission::Deny,
                Op::Read,
                ResourceType::Topic,
                "secret-",
                PatternType::Prefixed,
            ),
        ]);
        assert!(case.topic("alice", Op::Write, "orders"));
        assert!(!case.topic("alice", Op::Write, "audit"));
        assert!(case.topic("alice", Op::Read, "audit"));
        assert!(!case.topic("alice", Op::Read, "secret-plans"));
        // A DENY of READ does not deny DESCRIBE.
        assert!(case.topic("alice", Op::Describe, "secret-plans"));
        let all_denied = Case::new(&[
            allow("User:bob", Op::Read, "t"),
            deny("User:bob", Op::All, "t"),
        ]);
        assert!(!all_denied.topic("bob", Op::Read, "t"));
        assert!(!all_denied.topic("bob", Op::Describe, "t"));
    }

    #[test]
    fn allowed_operations_imply_describe() {
        for op in [Op::Read, Op::Write, Op::Delete, Op::Alter, Op::Describe] {
            let case = Case::new(&[allow("User:alice", op, "t")]);
            assert!(
                case.topic("alice", Op::Describe, "t"),
                "{op} implies DESCRIBE"
            );
        }
        for op in [
            Op::Create,
            Op::DescribeConfigs,
            Op::AlterConfigs,
            Op::ClusterAction,
        ] {
            let case = Case::new(&[allow("User:alice", op, "t")]);
            assert!(
                !case.topic("alice", Op::Describe, "t"),
                "{op} does not imply DESCRIBE"
            );
        }
        let case = Case::new(&[allow("User:alice", Op::AlterConfigs, "t")]);
        assert!(case.topic("alice", Op::DescribeConfigs, "t"));
        assert!(!case.topic("alice", Op::Alter, "t"));
        let case = Case::new(&[allow("User:alice", Op::All, "t")]);
        for op in Op::ALL_VALUES {
            assert!(case.topic("alice", *op, "t"), "ALL covers {op}");
        }
    }

    #[test]
    fn host_rules_compare_addresses() {
        let mut from_home = allow("User:alice", Op::Read, "t");
        from_home.host = HOME.into();
        let mut from_v6 = allow("User:alice", Op::Write, "t");
        from_v6.host = "0:0:0:0:0:0:0:1".into();
        let case = Case::new(&[from_home, from_v6]);
        assert!(case.topic("alice", Op::Read, "t"));
        assert!(!case.on("alice", "10.0.0.2", Op::Read, ResourceType::Topic, "t"));
        // An IPv4 client on a dual-stack socket is the IPv4 address.
        assert!(case.on(
            "alice",
            "::ffff:10.0.0.1",
            Op::Read,
            ResourceType::Topic,
            "t"
        ));
        // Java's long form and Rust's short form are the same address.
        assert!(case.on("alice", "::1", Op::Write, ResourceType::Topic, "t"));
    }

    #[test]
    fn super_users_are_allowed_everything() {
        let mut case = Case::new(&[deny("User:admin", Op::All, "*")]);
        case.settings.super_users = [(
            "User".to_string(),
            ["admin".to_string(), "ANONYMOUS".to_string()].into(),
        )]
        .into();
        assert!(case.topic("admin", Op::Write, "t"));
        assert!(case.topic("ANONYMOUS", Op::Delete, "t"));
        assert!(case.on(
            "admin",
            HOME,
            Op::ClusterAction,
            ResourceType::Cluster,
            "kafka-cluster"
        ));
        assert!(!case.topic("alice", Op::Write, "t"));
    }

    #[test]
    fn no_acl_found_follows_the_setting() {
        let mut case = Case::new(&[allow("User:alice", Op::Read, "t")]);
        assert!(!case.topic("bob", Op::Read, "other"));
        case.settings.allow_everyone_if_no_acl_found = true;
        assert!(case.topic("bob", Op::Read, "other"), "no ACL names 'other'");
        assert!(
            !case.topic("bob", Op::Read, "t"),
            "ACLs exist for 't', none for bob"
        );
        let decision = case.index.decide(
            &case.settings,
            &Principal::user("bob"),
            host(HOME),
            Op::Read,
            ResourceType::Topic,
            "t",
        );
        assert_eq!(decision.rule, Rule::NoMatchingAcl);
    }

    #[test]
    fn any_resource_of_a_type_as_kafka_decides_it() {
        let allows_any = |acls: &[AclBinding]| {
            AclIndex::build(acls).allows_any(
                &AuthorizerSettings::default(),
                &Principal::user("alice"),
                host(HOME),
                Op::Write,
                ResourceType::Topic,
            )
        };
        assert!(!allows_any(&[]));
        assert!(allows_any(&[allow("User:alice", Op::Write, "t")]));
        assert!(
            !allows_any(&[allow("User:alice", Op::Read, "t")]),
            "no implication"
        );
        assert!(!allows_any(&[
            allow("User:alice", Op::Write, "t"),
            deny("User:alice", Op::Write, "t")
        ]));
        assert!(!allows_any(&[
            allow("User:alice", Op::Write, "fin-a"),
            acl(
                "User:alice",
                AclPermission::Deny,
                Op::Write,
                ResourceType::Topic,
                "fin",
                PatternType::Prefixed
            ),
        ]));
        assert!(!allows_any(&[
            allow("User:alice", Op::Write, "t"),
            deny("User:*", Op::All, "*"),
        ]));
        assert!(allows_any(&[
            allow("User:alice", Op::Write, "a"),
            deny("User:alice", Op::Write, "b"),
        ]));
    }

    /// The cost of a decision with many ACLs (run by hand: `cargo test --release -p
    /// strata-broker decision_cost -- --ignored --nocapture`): 10 000 literal and 1 000
    /// prefixed topic ACLs of other users, the checked one among them.
    #[test]
    #[ignore]
    fn decision_cost() {
        let mut acls: Vec<AclBinding> = (0..10_000)
            .map(|i| allow(&format!("User:u{i}"), Op::Write, &format!("topic-{i}")))
            .collect();
        acls.extend((0..1_000).map(|i| {
            acl(
                &format!("User:p{i}"),
                AclPermission::Allow,
                Op::Read,
                ResourceType::Topic,
                &format!("team-{i}-"),
                PatternType::Prefixed,
            )
        }));
        acls.push(allow("User:alice", Op::Write, "orders"));
        let mut image = MetadataImage::default();
        for a in &acls {
            image.apply(&strata_quorum::MetadataRecord::Acl {
                id: Uuid::new_v4(),
                acl: a.clone(),
            });
        }
        let authorizer = Authorizer::new(Some(AuthorizerSettings::default()), &image);
        let alice = Principal::user("alice");
        let rounds = 1_000_000;
        let start = std::time::Instant::now();
        let mut allowed = 0;
        for _ in 0..rounds {
            allowed += usize::from(
                authorizer
                    .decide(&alice, host(HOME), Op::Write, ResourceType::Topic, "orders")
                    .allowed,
            );
        }
        let per_call = start.elapsed() / rounds;
        assert_eq!(allowed, rounds as usize);
        println!("{} ACLs: {per_call:?} per decision", acls.len());
    }

    fn config(settings: &[(&str, &str)]) -> BrokerConfig {
        let set = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        BrokerConfig::from_map(set).expect("config").0
    }

    #[test]
    fn settings_come_from_kafkas_keys() {
        assert_eq!(AuthorizerSettings::from_config(&config(&[])), Ok(None));
        let on = AuthorizerSettings::from_config(&config(&[
            ("authorizer.class.name", STANDARD_AUTHORIZER),
            ("super.users", "User:admin; User:ANONYMOUS;"),
        ]))
        .expect("valid")
        .expect("on");
        assert_eq!(on.super_users["User"].len(), 2);
        assert!(on.super_users["User"].contains("ANONYMOUS"));
        assert!(!on.allow_everyone_if_no_acl_found);
        let short = AuthorizerSettings::from_config(&config(&[
            ("authorizer.class.name", SHORT_NAME),
            ("allow.everyone.if.no.acl.found", "true"),
        ]))
        .expect("valid")
        .expect("on");
        assert!(short.allow_everyone_if_no_acl_found);
        let zk = AuthorizerSettings::from_config(&config(&[(
            "authorizer.class.name",
            "kafka.security.authorizer.AclAuthorizer",
        )]))
        .expect_err("refused");
        assert!(
            zk.contains("ZooKeeper") && zk.contains(STANDARD_AUTHORIZER),
            "{zk}"
        );
        assert!(AuthorizerSettings::from_config(&config(&[(
            "authorizer.class.name",
            "com.example.Custom"
        )]))
        .is_err());
        assert!(AuthorizerSettings::from_config(&config(&[
            ("authorizer.class.name", SHORT_NAME),
            ("super.users", "admin"),
        ]))
        .is_err());
    }

    #[test]
    fn the_index_follows_the_image() {
        use strata_quorum::MetadataRecord;
        let mut image = MetadataImage::default();
        let authorizer = Authorizer::new(Some(AuthorizerSettings::default()), &image);
        let alice = Principal::user("alice");
        let may_write = |a: &Authorizer| {
            a.decide(&alice, host(HOME), Op::Write, ResourceType::Topic, "t")
                .allowed
        };
        assert!(!may_write(&authorizer));
        let id = Uuid::new_v4();
        image.apply(&MetadataRecord::Acl {
            id,
            acl: allow("User:alice", Op::Write, "t"),
        });
        authorizer.update(&image);
        assert!(may_write(&authorizer));
        image.apply(&MetadataRecord::RemoveAcl { id });
        authorizer.update(&image);
        assert!(!may_write(&authorizer));
        assert!(may_write(&Authorizer::disabled()));
    }
}
