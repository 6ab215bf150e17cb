//! DescribeAcls (29), CreateAcls (30), DeleteAcls (31), as Kafka's broker answers them.
//!
//! All three need an authorizer: without one they answer SECURITY_DISABLED. DescribeAcls needs
//! DESCRIBE on the cluster, the other two ALTER (CLUSTER_AUTHORIZATION_FAILED otherwise, for
//! the whole request). Enum codes Kafka does not know, or ANY/MATCH where a binding needs a
//! concrete value, answer INVALID_REQUEST for that item. Creations and deletions are controller
//! operations (`CreateAcls`, `DeleteAcls`): they are answered once the change is committed and
//! this broker's authorizer enforces it.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use strata_protocol::ErrorCode;
use strata_quorum::acl::{
    AclBinding, AclBindingFilter, AclOperation, AclPermission, PatternFilter, PatternType,
    ResourceType, ANY_CODE,
};
use strata_quorum::controller::ops::{CreateAcls, DeleteAcls, ItemResult, OpError};

use super::{merge_answers, str_bytes};
use crate::auth::{authorize, ConnectionContext, Operation, Resource};
use crate::broker::Broker;
use crate::controller::plan::refuse;

/// Kafka's messages for a broker without an authorizer (DescribeAcls; the other two).
const NO_AUTHORIZER: &str = "No Authorizer is configured on the broker";
const NO_AUTHORIZER_ALTER: &str = "No Authorizer is configured.";

/// The fields of a filter as the request carries them.
struct WireFilter<'a> {
    resource_type: i8,
    resource_name: Option<&'a StrBytes>,
    pattern_type: i8,
    principal: Option<&'a StrBytes>,
    host: Option<&'a StrBytes>,
    operation: i8,
    permission: i8,
}

/// A filter from its wire codes: ANY is `None`, an unknown code is INVALID_REQUEST.
fn filter(w: WireFilter<'_>) -> Result<AclBindingFilter, OpError> {
    fn any_or<T>(code: i8, known: Option<T>, what: &str) -> Result<Option<T>, OpError> {
        if code == ANY_CODE {
            return Ok(None);
        }
        known.map(Some).ok_or_else(|| {
            refuse(
                ErrorCode::InvalidRequest,
                format!("Unknown {what} code {code} in the filter."),
            )
        })
    }
    Ok(AclBindingFilter {
        resource_type: any_or(
            w.resource_type,
            ResourceType::from_code(w.resource_type),
            "resource type",
        )?,
        resource_name: w.resource_name.map(|s| s.to_string()),
        pattern: PatternFilter::from_code(w.pattern_type).ok_or_else(|| {
            refuse(
                ErrorCode::InvalidRequest,
                format!(
                    "Unknown pattern type code {} in the filter.",
                    w.pattern_type
                ),
            )
        })?,
        principal: w.principal.map(|s| s.to_string()),
        host: w.host.map(|s| s.to_string()),
        operation: any_or(
            w.operation,
            AclOperation::from_code(w.operation),
            "operation",
        )?,
        permission: any_or(
            w.permission,
            AclPermission::from_code(w.permission),
            "permission type",
        )?,
    })
}

/// A binding to create from its wire codes; ANY, MATCH and unknown codes are INVALID_REQUEST.
fn binding(c: &AclCreation) -> Result<AclBinding, OpError> {
    let invalid =
        |what: &str, code: i8| refuse(ErrorCode::InvalidRequest, format!("Invalid {what} {code}"));
    Ok(AclBinding {
        resource_type: ResourceType::from_code(c.resource_type)
            .ok_or_else(|| invalid("resourceType", c.resource_type))?,
        resource_name: c.resource_name.to_string(),
        pattern_type: PatternType::from_code(c.resource_pattern_type)
            .ok_or_else(|| invalid("patternType", c.resource_pattern_type))?,
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: AclOperation::from_code(c.operation)
            .ok_or_else(|| invalid("operation", c.operation))?,
        permission: AclPermission::from_code(c.permission_type)
            .ok_or_else(|| invalid("permissionType", c.permission_type))?,
    })
}

/// Why a whole ACL request is refused, if it is: without `op` on the cluster, or without an
/// authorizer (checked in Kafka's order).
fn refusal(
    broker: &Broker,
    ctx: &ConnectionContext,
    op: Operation,
    no_authorizer: &'static str,
) -> Option<(ErrorCode, &'static str)> {
    if !authorize(ctx, op, Resource::Cluster) {
        return Some((
            ErrorCode::ClusterAuthorizationFailed,
            "Cluster authorization failed.",
        ));
    }
    (!broker.authorizer.is_enabled()).then_some((ErrorCode::SecurityDisabled, no_authorizer))
}

fn error_message(code: i16, message: String) -> Option<StrBytes> {
    (code != 0).then(|| str_bytes(message))
}

pub fn describe_acls(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: DescribeAclsRequest,
) -> DescribeAclsResponse {
    let refused = |code: ErrorCode, message: &str| {
        DescribeAclsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(message)))
    };
    if let Some((code, message)) = refusal(broker, ctx, Operation::Describe, NO_AUTHORIZER) {
        return refused(code, message);
    }
    let filter = match filter(WireFilter {
        resource_type: req.resource_type_filter,
        resource_name: req.resource_name_filter.as_ref(),
        pattern_type: req.pattern_type_filter,
        principal: req.principal_filter.as_ref(),
        host: req.host_filter.as_ref(),
        operation: req.operation,
        permission: req.permission_type,
    }) {
        Ok(filter) => filter,
        Err(e) => {
            return DescribeAclsResponse::default()
                .with_error_code(e.code)
                .with_error_message(Some(str_bytes(e.message)))
        }
    };
    // Grouped by resource pattern, as Kafka answers.
    let image = broker.image();
    let mut by_resource: BTreeMap<(ResourceType, String, PatternType), Vec<AclDescription>> =
        BTreeMap::new();
    for acl in image.acls().values().filter(|a| filter.matches(a)) {
        by_resource
            .entry((
                acl.resource_type,
                acl.resource_name.clone(),
                acl.pattern_type,
            ))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(str_bytes(acl.principal.clone()))
                    .with_host(str_bytes(acl.host.clone()))
                    .with_operation(acl.operation.code())
                    .with_permission_type(acl.permission.code()),
            );
    }
    let resources = by_resource
        .into_iter()
        .map(|((kind, name, pattern), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(kind.code())
                .with_resource_name(str_bytes(name))
                .with_pattern_type(pattern.code())
                .with_acls(acls)
        })
        .collect();
    DescribeAclsResponse::default().with_resources(resources)
}

pub async fn create_acls(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: CreateAclsRequest,
) -> CreateAclsResponse {
    let all_refused = |code: ErrorCode, message: &str| {
        let results = req
            .creations
            .iter()
            .map(|_| {
                AclCreationResult::default()
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(message)))
            })
            .collect();
        CreateAclsResponse::default().with_results(results)
    };
    if let Some((code, message)) = refusal(broker, ctx, Operation::Alter, NO_AUTHORIZER_ALTER) {
        return all_refused(code, message);
    }
    let mut screened: Vec<Option<ItemResult<()>>> = Vec::with_capacity(req.creations.len());
    let mut acls = Vec::new();
    for creation in &req.creations {
        match binding(creation) {
            Ok(acl) => {
                screened.push(None);
                acls.push(acl);
            }
            Err(e) => screened.push(Some(Err(e))),
        }
    }
    let answers = match broker.submit(CreateAcls { acls }).await {
        Ok(reply) => reply.results,
        Err(error) => {
            tracing::error!(%error, "create ACLs failed");
            return all_refused(ErrorCode::UnknownServerError, &error.to_string());
        }
    };
    let results = merge_answers(screened, answers)
        .into_iter()
        .map(|result| match result {
            Ok(()) => AclCreationResult::default(),
            Err(OpError { code, message }) => AclCreationResult::default()
                .with_error_code(code)
                .with_error_message(error_message(code, message)),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

fn matching_acl(acl: AclBinding) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_resource_type(acl.resource_type.code())
        .with_resource_name(str_bytes(acl.resource_name))
        .with_pattern_type(acl.pattern_type.code())
        .with_principal(str_bytes(acl.principal))
        .with_host(str_bytes(acl.host))
        .with_operation(acl.operation.code())
        .with_permission_type(acl.permission.code())
}

fn wire_filter(f: &DeleteAclsFilter) -> WireFilter<'_> {
    WireFilter {
        resource_type: f.resource_type_filter,
        resource_name: f.resource_name_filter.as_ref(),
        pattern_type: f.pattern_type_filter,
        principal: f.principal_filter.as_ref(),
        host: f.host_filter.as_ref(),
        operation: f.operation,
        permission: f.permission_type,
    }
}

pub async fn delete_acls(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let all_refused = |code: ErrorCode, message: &str| {
        let results = req
            .filters
            .iter()
            .map(|_| {
                DeleteAclsFilterResult::default()
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(message)))
            })
            .collect();
        DeleteAclsResponse::default().with_filter_results(results)
    };
    if let Some((code, message)) = refusal(broker, ctx, Operation::Alter, NO_AUTHORIZER_ALTER) {
        return all_refused(code, message);
    }
    let mut screened: Vec<Option<ItemResult<Vec<AclBinding>>>> = Vec::new();
    let mut filters = Vec::new();
    for f in &req.filters {
        match filter(wire_filter(f)) {
            Ok(filter) => {
                screened.push(None);
                filters.push(filter);
            }
            Err(e) => screened.push(Some(Err(e))),
        }
    }
    let answers = match broker.submit(DeleteAcls { filters }).await {
        Ok(reply) => reply.results,
        Err(error) => {
            tracing::error!(%error, "delete ACLs failed");
            return all_refused(ErrorCode::UnknownServerError, &error.to_string());
        }
    };
    let results = merge_answers(screened, answers)
        .into_iter()
        .map(|result| match result {
            Ok(acls) => DeleteAclsFilterResult::default()
                .with_matching_acls(acls.into_iter().map(matching_acl).collect()),
            Err(OpError { code, message }) => DeleteAclsFilterResult::default()
                .with_error_code(code)
                .with_error_message(error_message(code, message)),
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_bindings_from_wire_codes() {
        let name = str_bytes("orders");
        let f = filter(WireFilter {
            resource_type: 2,
            resource_name: Some(&name),
            pattern_type: 2,
            principal: None,
            host: None,
            operation: 1,
            permission: 1,
        })
        .expect("valid");
        assert_eq!(f.resource_type, Some(ResourceType::Topic));
        assert_eq!(f.pattern, PatternFilter::Match);
        assert_eq!(f.operation, None);
        let unknown = filter(WireFilter {
            resource_type: 0,
            resource_name: None,
            pattern_type: 1,
            principal: None,
            host: None,
            operation: 1,
            permission: 1,
        });
        assert_eq!(
            unknown.err().map(|e| e.code),
            Some(ErrorCode::InvalidRequest.code())
        );
        let creation = AclCreation::default()
            .with_resource_type(2)
            .with_resource_name(name.clone())
            .with_resource_pattern_type(2)
            .with_principal(str_bytes("User:alice"))
            .with_host(str_bytes("*"))
            .with_operation(3)
            .with_permission_type(3);
        assert!(
            binding(&creation).is_err(),
            "MATCH is no pattern type of a binding"
        );
        let creation = creation.with_resource_pattern_type(4);
        assert_eq!(
            binding(&creation).map(|b| b.pattern_type),
            Ok(PatternType::Prefixed)
        );
        assert!(
            binding(&creation.with_operation(1)).is_err(),
            "ANY is no operation"
        );
    }
}
