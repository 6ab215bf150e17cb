//! ACL admin calls: DescribeAcls, CreateAcls, DeleteAcls.
//!
//! Bindings and filters are carried with Kafka's wire codes (resource type 2 = TOPIC, pattern
//! type 3 = LITERAL, operation 4 = WRITE, permission 3 = ALLOW; 1 is ANY in a filter and 2
//! MATCH for a pattern type), so the client knows nothing of any broker's model; `names` maps
//! Kafka's names to codes for programs that take them from people.

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::*;

use crate::client::{sb, Client};
use crate::error::{check, Error, Result};

/// One ACL binding, with Kafka's wire codes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Acl {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission: i8,
}

/// Selects bindings; `None` strings match anything, codes may be ANY (1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: i8,
    pub resource_name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

/// Kafka's names of the wire codes.
pub mod names {
    /// ANY, in every filter enum.
    pub const ANY: i8 = 1;
    /// MATCH, in a pattern type filter.
    pub const MATCH: i8 = 2;

    const RESOURCE_TYPES: &[(&str, i8)] = &[
        ("TOPIC", 2),
        ("GROUP", 3),
        ("CLUSTER", 4),
        ("TRANSACTIONAL_ID", 5),
        ("DELEGATION_TOKEN", 6),
        ("USER", 7),
    ];
    const PATTERN_TYPES: &[(&str, i8)] =
        &[("ANY", 1), ("MATCH", 2), ("LITERAL", 3), ("PREFIXED", 4)];
    const OPERATIONS: &[(&str, i8)] = &[
        ("ALL", 2),
        ("READ", 3),
        ("WRITE", 4),
        ("CREATE", 5),
        ("DELETE", 6),
        ("ALTER", 7),
        ("DESCRIBE", 8),
        ("CLUSTER_ACTION", 9),
        ("DESCRIBE_CONFIGS", 10),
        ("ALTER_CONFIGS", 11),
        ("IDEMPOTENT_WRITE", 12),
        ("CREATE_TOKENS", 13),
        ("DESCRIBE_TOKENS", 14),
    ];
    const PERMISSIONS: &[(&str, i8)] = &[("DENY", 2), ("ALLOW", 3)];

    fn code(table: &[(&str, i8)], name: &str) -> Option<i8> {
        let wanted = name.trim().replace('-', "_").to_ascii_uppercase();
        table.iter().find(|(n, _)| *n == wanted).map(|(_, c)| *c)
    }

    fn name(table: &[(&'static str, i8)], code: i8) -> String {
        table
            .iter()
            .find(|(_, c)| *c == code)
            .map_or_else(|| format!("UNKNOWN({code})"), |(n, _)| n.to_string())
    }

    pub fn resource_type(name: &str) -> Option<i8> {
        code(RESOURCE_TYPES, name)
    }
    pub fn pattern_type(name: &str) -> Option<i8> {
        code(PATTERN_TYPES, name)
    }
    /// An operation's code (`read`, `describe-configs`).
    pub fn operation(name: &str) -> Option<i8> {
        code(OPERATIONS, name)
    }
    /// Every operation name, for messages.
    pub fn operations() -> Vec<&'static str> {
        OPERATIONS.iter().map(|(n, _)| *n).collect()
    }
    pub fn resource_type_name(code: i8) -> String {
        name(RESOURCE_TYPES, code)
    }
    pub fn pattern_type_name(code: i8) -> String {
        name(PATTERN_TYPES, code)
    }
    pub fn operation_name(code: i8) -> String {
        name(OPERATIONS, code)
    }
    pub fn permission_name(code: i8) -> String {
        name(PERMISSIONS, code)
    }
}

impl AclFilter {
    /// The filter that selects every binding.
    pub fn any() -> Self {
        AclFilter {
            resource_type: names::ANY,
            resource_name: None,
            pattern_type: names::ANY,
            principal: None,
            host: None,
            operation: names::ANY,
            permission: names::ANY,
        }
    }

    /// The filter that selects exactly this binding.
    pub fn exactly(acl: &Acl) -> Self {
        AclFilter {
            resource_type: acl.resource_type,
            resource_name: Some(acl.resource_name.clone()),
            pattern_type: acl.pattern_type,
            principal: Some(acl.principal.clone()),
            host: Some(acl.host.clone()),
            operation: acl.operation,
            permission: acl.permission,
        }
    }
}

impl Client {
    /// The bindings `filter` selects.
    pub async fn describe_acls(&self, filter: &AclFilter) -> Result<Vec<Acl>> {
        let response = self
            .send_any(3, |_| {
                DescribeAclsRequest::default()
                    .with_resource_type_filter(filter.resource_type)
                    .with_resource_name_filter(filter.resource_name.as_deref().map(sb))
                    .with_pattern_type_filter(filter.pattern_type)
                    .with_principal_filter(filter.principal.as_deref().map(sb))
                    .with_host_filter(filter.host.as_deref().map(sb))
                    .with_operation(filter.operation)
                    .with_permission_type(filter.permission)
            })
            .await?;
        check(
            || "describing ACLs".to_string(),
            response.error_code,
            response.error_message.map(|m| m.to_string()),
        )?;
        let mut out = Vec::new();
        for r in response.resources {
            for a in r.acls {
                out.push(Acl {
                    resource_type: r.resource_type,
                    resource_name: r.resource_name.to_string(),
                    pattern_type: r.pattern_type,
                    principal: a.principal.to_string(),
                    host: a.host.to_string(),
                    operation: a.operation,
                    permission: a.permission_type,
                });
            }
        }
        out.sort();
        Ok(out)
    }

    /// Creates bindings; one result per binding, in order.
    pub async fn create_acls(&self, acls: &[Acl]) -> Result<Vec<Result<()>>> {
        let response = self
            .send_any(3, |_| {
                CreateAclsRequest::default().with_creations(
                    acls.iter()
                        .map(|a| {
                            AclCreation::default()
                                .with_resource_type(a.resource_type)
                                .with_resource_name(sb(&a.resource_name))
                                .with_resource_pattern_type(a.pattern_type)
                                .with_principal(sb(&a.principal))
                                .with_host(sb(&a.host))
                                .with_operation(a.operation)
                                .with_permission_type(a.permission)
                        })
                        .collect(),
                )
            })
            .await?;
        if response.results.len() != acls.len() {
            return Err(Error::Protocol(format!(
                "CreateAcls answered {} results for {} bindings",
                response.results.len(),
                acls.len()
            )));
        }
        Ok(response
            .results
            .into_iter()
            .map(|r| {
                check(
                    || "creating an ACL".to_string(),
                    r.error_code,
                    r.error_message.map(|m| m.to_string()),
                )
            })
            .collect())
    }

    /// Deletes the bindings each filter selects; per filter, the deleted bindings.
    pub async fn delete_acls(&self, filters: &[AclFilter]) -> Result<Vec<Result<Vec<Acl>>>> {
        let response = self
            .send_any(3, |_| {
                DeleteAclsRequest::default().with_filters(
                    filters
                        .iter()
                        .map(|f| {
                            DeleteAclsFilter::default()
                                .with_resource_type_filter(f.resource_type)
                                .with_resource_name_filter(f.resource_name.as_deref().map(sb))
                                .with_pattern_type_filter(f.pattern_type)
                                .with_principal_filter(f.principal.as_deref().map(sb))
                                .with_host_filter(f.host.as_deref().map(sb))
                                .with_operation(f.operation)
                                .with_permission_type(f.permission)
                        })
                        .collect(),
                )
            })
            .await?;
        Ok(response
            .filter_results
            .into_iter()
            .map(|r| {
                check(
                    || "deleting ACLs".to_string(),
                    r.error_code,
                    r.error_message.map(|m| m.to_string()),
                )?;
                Ok(r.matching_acls
                    .into_iter()
                    .map(|m| Acl {
                        resource_type: m.resource_type,
                        resource_name: m.resource_name.to_string(),
                        pattern_type: m.pattern_type,
                        principal: m.principal.to_string(),
                        host: m.host.to_string(),
                        operation: m.operation,
                        permission: m.permission_type,
                    })
                    .collect())
            })
            .collect())
    }
}
