//! Access control lists as Kafka models them: a binding is a resource pattern (type, name,
//! LITERAL or PREFIXED) and an entry (principal, host, operation, ALLOW or DENY). Bindings are
//! metadata: [`crate::MetadataRecord::Acl`] creates one, [`crate::MetadataRecord::RemoveAcl`]
//! removes it, and the image holds the current set. Filters ([`AclBindingFilter`]) select
//! bindings for DescribeAcls and DeleteAcls with Kafka's ANY and MATCH semantics.
//!
//! Every enum carries Kafka's wire code (`code`/`from_code`), because the admin APIs send
//! them as int8; in records they are written by name (`"TOPIC"`, `"PREFIXED"`), so a record
//! reads the same whatever numbering a later version uses. Matching a request against the
//! bindings lives with the broker (`strata_broker::acl`); this module is only the data.

use serde::{Deserialize, Serialize};

/// The name of the one CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// The resource name that matches every resource of its type (in a LITERAL binding).
pub const WILDCARD_RESOURCE: &str = "*";

/// The host that matches every client address.
pub const WILDCARD_HOST: &str = "*";

/// Declares a closed enum with Kafka's wire codes and names.
macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $code:literal, $text:literal;)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant,)*
        }

        impl $name {
            /// Every value, in code order.
            pub const ALL_VALUES: &'static [$name] = &[$($name::$variant,)*];

            /// Kafka's wire code.
            pub fn code(self) -> i8 {
                match self { $($name::$variant => $code,)* }
            }

            /// The value of a wire code; `None` for UNKNOWN, ANY and codes Kafka does not know.
            pub fn from_code(code: i8) -> Option<Self> {
                match code { $($code => Some($name::$variant),)* _ => None }
            }

            /// Kafka's name (`TOPIC`, `DESCRIBE_CONFIGS`).
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }

            /// The value of a name, case-insensitive, `-` read as `_` (`describe-configs`).
            pub fn parse(text: &str) -> Option<Self> {
                let wanted = text.trim().replace('-', "_").to_ascii_uppercase();
                $name::ALL_VALUES.iter().copied().find(|v| v.name() == wanted)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

/// The wire code of ANY in every filter enum.
pub const ANY_CODE: i8 = 1;
/// The wire code of MATCH (pattern type filters only).
pub const MATCH_CODE: i8 = 2;

wire_enum! {
    /// What a binding protects.
    ResourceType {
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
        DelegationToken = 6, "DELEGATION_TOKEN";
        User = 7, "USER";
    }
}

wire_enum! {
    /// How a binding's resource name is matched.
    PatternType {
        /// The name exactly, or every resource when the name is `*`.
        Literal = 3, "LITERAL";
        /// Every resource whose name starts with the name.
        Prefixed = 4, "PREFIXED";
    }
}

wire_enum! {
    /// What a principal does to a resource. `All` in a binding covers every operation.
    AclOperation {
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        CreateTokens = 13, "CREATE_TOKENS";
        DescribeTokens = 14, "DESCRIBE_TOKENS";
    }
}

wire_enum! {
    /// Whether a binding allows or denies. DENY wins over ALLOW.
    AclPermission {
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
}

/// One ACL: who may (or may not) do what to which resources from where.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    /// `Type:name`, e.g. `User:alice`; `User:*` is every user.
    pub principal: String,
    /// A client IP address, or `*`.
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

/// Why a binding cannot be created (Kafka answers INVALID_REQUEST with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidAcl(pub String);

impl AclBinding {
    /// Kafka's checks of a new binding, beyond the enums being known: a name, the cluster's
    /// one name, a principal of the form `Type:name`.
    pub fn validate(&self) -> Result<(), InvalidAcl> {
        if self.resource_name.is_empty() {
            return Err(InvalidAcl("Resource name should not be empty".into()));
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_NAME {
            return Err(InvalidAcl(format!(
                "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
            )));
        }
        match self.principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => {
                return Err(InvalidAcl(format!(
                    "Invalid principal {:?}: expected Type:name, e.g. User:alice",
                    self.principal
                )))
            }
        }
        if self.host.is_empty() {
            return Err(InvalidAcl(
                "Host should not be empty (use * for any host)".into(),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for AclBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} from host {} on {}:{}:{} ({})",
            self.principal,
            match self.permission {
                AclPermission::Allow => "is allowed",
                AclPermission::Deny => "is denied",
            },
            self.host,
            self.resource_type,
            self.pattern_type,
            self.resource_name,
            self.operation,
        )
    }
}

/// How a filter selects pattern types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatternFilter {
    /// Any pattern type; the name (if given) compared exactly.
    Any,
    /// Every binding that would apply to a resource of the given name: literal bindings of
    /// that name or `*`, prefixed bindings whose name is a prefix of it.
    Match,
    /// Bindings of this pattern type only.
    Only(PatternType),
}

impl PatternFilter {
    pub fn code(self) -> i8 {
        match self {
            PatternFilter::Any => ANY_CODE,
            PatternFilter::Match => MATCH_CODE,
            PatternFilter::Only(p) => p.code(),
        }
    }

    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            ANY_CODE => Some(PatternFilter::Any),
            MATCH_CODE => Some(PatternFilter::Match),
            other => PatternType::from_code(other).map(PatternFilter::Only),
        }
    }
}

/// Selects bindings; `None` in a field is ANY (or a null name, principal, host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclBindingFilter {
    pub resource_type: Option<ResourceType>,
    pub resource_name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<AclOperation>,
    pub permission: Option<AclPermission>,
}

impl AclBindingFilter {
    /// The filter that selects every binding.
    pub fn any() -> Self {
        AclBindingFilter {
            resource_type: None,
            resource_name: None,
            pattern: PatternFilter::Any,
            principal: None,
            host: None,
            operation: None,
            permission: None,
        }
    }

    /// Whether `binding` is selected, with Kafka's semantics.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        self.matches_pattern(binding)
            && self
                .principal
                .as_ref()
                .is_none_or(|p| *p == binding.principal)
            && self.host.as_ref().is_none_or(|h| *h == binding.host)
            && self.operation.is_none_or(|o| o == binding.operation)
            && self.permission.is_none_or(|p| p == binding.permission)
    }

    fn matches_pattern(&self, binding: &AclBinding) -> bool {
        if self
            .resource_type
            .is_some_and(|t| t != binding.resource_type)
        {
            return false;
        }
        if let PatternFilter::Only(p) = self.pattern {
            if p != binding.pattern_type {
                return false;
            }
        }
        let Some(name) = &self.resource_name else {
            return true;
        };
        match self.pattern {
            PatternFilter::Any | PatternFilter::Only(_) => *name == binding.resource_name,
            PatternFilter::Match => match binding.pattern_type {
                PatternType::Literal => {
                    *name == binding.resource_name || binding.resource_name == WILDCARD_RESOURCE
                }
                PatternType::Prefixed => name.starts_with(&binding.resource_name),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(kind: ResourceType, name: &str, pattern: PatternType) -> AclBinding {
        AclBinding {
            resource_type: kind,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: AclOperation::Read,
            permission: AclPermission::Allow,
        }
    }

    #[test]
    fn codes_and_names_are_kafkas() {
        assert_eq!(ResourceType::Topic.code(), 2);
        assert_eq!(ResourceType::from_code(7), Some(ResourceType::User));
        assert_eq!(
            ResourceType::from_code(1),
            None,
            "ANY is not a resource type"
        );
        assert_eq!(AclOperation::IdempotentWrite.code(), 12);
        assert_eq!(
            AclOperation::parse("describe-configs"),
            Some(AclOperation::DescribeConfigs)
        );
        assert_eq!(AclPermission::from_code(3), Some(AclPermission::Allow));
        assert_eq!(PatternFilter::from_code(2), Some(PatternFilter::Match));
        assert_eq!(PatternFilter::from_code(0), None);
        let json = serde_json::to_string(&binding(
            ResourceType::TransactionalId,
            "t",
            PatternType::Prefixed,
        ))
        .expect("encode");
        assert!(
            json.contains("\"TRANSACTIONAL_ID\"") && json.contains("\"PREFIXED\""),
            "{json}"
        );
    }

    #[test]
    fn filters_match_as_kafka_does() {
        let literal = binding(ResourceType::Topic, "orders", PatternType::Literal);
        let wildcard = binding(ResourceType::Topic, "*", PatternType::Literal);
        let prefixed = binding(ResourceType::Topic, "ord", PatternType::Prefixed);
        let group = binding(ResourceType::Group, "orders", PatternType::Literal);
        let all = [&literal, &wildcard, &prefixed, &group];
        let select = |f: &AclBindingFilter| -> Vec<&AclBinding> {
            all.iter().copied().filter(|b| f.matches(b)).collect()
        };
        assert_eq!(select(&AclBindingFilter::any()).len(), 4);
        let mut f = AclBindingFilter::any();
        f.resource_type = Some(ResourceType::Topic);
        f.resource_name = Some("orders".into());
        assert_eq!(select(&f), vec![&literal], "ANY compares names exactly");
        f.pattern = PatternFilter::Match;
        assert_eq!(select(&f), vec![&literal, &wildcard, &prefixed]);
        f.pattern = PatternFilter::Only(PatternType::Prefixed);
        assert!(select(&f).is_empty(), "prefixed 'orders' does not exist");
        f.resource_name = None;
        assert_eq!(select(&f), vec![&prefixed]);
        let mut f = AclBindingFilter::any();
        f.principal = Some("User:bob".into());
        assert!(select(&f).is_empty());
        f.principal = Some("User:alice".into());
        f.operation = Some(AclOperation::Read);
        f.permission = Some(AclPermission::Deny);
        assert!(select(&f).is_empty());
    }

    #[test]
    fn bindings_are_validated() {
        let ok = binding(ResourceType::Topic, "t", PatternType::Literal);
        assert!(ok.validate().is_ok());
        let mut b = ok.clone();
        b.resource_name.clear();
        assert!(b.validate().is_err());
        let mut b = ok.clone();
        b.resource_type = ResourceType::Cluster;
        assert!(b.validate().is_err());
        b.resource_name = CLUSTER_NAME.into();
        assert!(b.validate().is_ok());
        let mut b = ok.clone();
        b.principal = "alice".into();
        assert!(b.validate().is_err());
    }
}
