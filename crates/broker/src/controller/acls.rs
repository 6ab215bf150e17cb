//! Plans of the ACL operations: bindings in, `Acl`/`RemoveAcl` records out. Pure functions of
//! the image, like the rest of [`super::plan`].
//!
//! Creating a binding equal to one that exists writes nothing and answers success, and a
//! binding several filters of one DeleteAcls select is removed once (each filter still
//! reports it), as Kafka's controller does. One operation writes at most
//! [`MAX_ACL_RECORDS_PER_OP`] records, so a careless filter cannot build an unbounded commit.

use std::collections::{BTreeSet, HashSet};

use strata_protocol::ErrorCode;
use strata_quorum::acl::AclBinding;
use strata_quorum::controller::ops::{
    CreateAcls, CreateAclsReply, DeleteAcls, DeleteAclsReply, ItemResult,
};
use strata_quorum::{MetadataImage, MetadataRecord};
use uuid::Uuid;

use super::plan::refuse;

/// Kafka's bound on the records of one user operation.
pub const MAX_ACL_RECORDS_PER_OP: usize = 10_000;

/// CreateAcls: an `Acl` record per new, valid binding.
pub fn create_acls(
    image: &MetadataImage,
    op: &CreateAcls,
) -> (Vec<MetadataRecord>, CreateAclsReply) {
    let mut existing: HashSet<&AclBinding> = image.acls().values().collect();
    let mut records = Vec::new();
    let mut results = Vec::with_capacity(op.acls.len());
    for acl in &op.acls {
        let result: ItemResult<()> = match acl.validate() {
            Err(invalid) => Err(refuse(ErrorCode::InvalidRequest, invalid.0)),
            Ok(()) if existing.contains(acl) => Ok(()),
            Ok(()) if records.len() >= MAX_ACL_RECORDS_PER_OP => Err(refuse(
                ErrorCode::InvalidRequest,
                format!("Cannot create more than {MAX_ACL_RECORDS_PER_OP} ACLs in one request."),
            )),
            Ok(()) => {
                existing.insert(acl);
                records.push(MetadataRecord::Acl {
                    id: new_acl_id(image),
                    acl: acl.clone(),
                });
                Ok(())
            }
        };
        results.push(result);
    }
    (records, CreateAclsReply { results })
}

/// A random id no current ACL has.
fn new_acl_id(image: &MetadataImage) -> Uuid {
    loop {
        let id = Uuid::new_v4();
        if !image.acls().contains_key(&id) {
            return id;
        }
    }
}

/// DeleteAcls: a `RemoveAcl` record per binding any filter selects. Too many matches refuse
/// the filter that went over the bound (its bindings stay).
pub fn delete_acls(
    image: &MetadataImage,
    op: &DeleteAcls,
) -> (Vec<MetadataRecord>, DeleteAclsReply) {
    let mut removed: BTreeSet<Uuid> = BTreeSet::new();
    let mut results = Vec::with_capacity(op.filters.len());
    for filter in &op.filters {
        let selected: Vec<(&Uuid, &AclBinding)> = image
            .acls()
            .iter()
            .filter(|(_, acl)| filter.matches(acl))
            .collect();
        let new = selected
            .iter()
            .filter(|(id, _)| !removed.contains(id))
            .count();
        if removed.len() + new > MAX_ACL_RECORDS_PER_OP {
            results.push(Err(refuse(
                ErrorCode::InvalidRequest,
                format!("Cannot remove more than {MAX_ACL_RECORDS_PER_OP} ACLs in one request."),
            )));
            continue;
        }
        removed.extend(selected.iter().map(|(id, _)| **id));
        results.push(Ok(selected
            .into_iter()
            .map(|(_, acl)| acl.clone())
            .collect()));
    }
    let records = removed
        .into_iter()
        .map(|id| MetadataRecord::RemoveAcl { id })
        .collect();
    (records, DeleteAclsReply { results })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_quorum::acl::{
        AclBindingFilter, AclOperation, AclPermission, PatternType, ResourceType,
    };

    fn acl(name: &str, principal: &str) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: name.into(),
            pattern_type: PatternType::Literal,
            principal: principal.into(),
            host: "*".into(),
            operation: AclOperation::Read,
            permission: AclPermission::Allow,
        }
    }

    fn applied(image: &mut MetadataImage, records: &[MetadataRecord]) {
        for r in records {
            image.apply(r);
        }
    }

    #[test]
    fn creation_validates_and_skips_duplicates() {
        let mut image = MetadataImage::default();
        let op = CreateAcls {
            acls: vec![
                acl("a", "User:alice"),
                acl("", "User:alice"),
                acl("a", "alice"),
                acl("a", "User:alice"),
            ],
        };
        let (records, reply) = create_acls(&image, &op);
        assert_eq!(
            records.len(),
            1,
            "the duplicate in the request is written once"
        );
        let codes: Vec<i16> = reply
            .results
            .iter()
            .map(|r| r.as_ref().err().map_or(0, |e| e.code))
            .collect();
        assert_eq!(codes, vec![0, 42, 42, 0]);
        applied(&mut image, &records);
        let (records, reply) = create_acls(
            &image,
            &CreateAcls {
                acls: vec![acl("a", "User:alice")],
            },
        );
        assert!(
            records.is_empty(),
            "an existing binding is not written again"
        );
        assert!(reply.results[0].is_ok());
    }

    #[test]
    fn deletion_reports_per_filter_and_removes_once() {
        let mut image = MetadataImage::default();
        let (records, _) = create_acls(
            &image,
            &CreateAcls {
                acls: vec![
                    acl("a", "User:alice"),
                    acl("b", "User:alice"),
                    acl("a", "User:bob"),
                ],
            },
        );
        applied(&mut image, &records);
        let mut alice = AclBindingFilter::any();
        alice.principal = Some("User:alice".into());
        let mut topic_a = AclBindingFilter::any();
        topic_a.resource_name = Some("a".into());
        let (records, reply) = delete_acls(
            &image,
            &DeleteAcls {
                filters: vec![alice, topic_a],
            },
        );
        assert_eq!(records.len(), 3);
        let counts: Vec<usize> = reply
            .results
            .iter()
            .map(|r| r.as_ref().map_or(usize::MAX, Vec::len))
            .collect();
        assert_eq!(counts, vec![2, 2]);
        applied(&mut image, &records);
        assert!(image.acls().is_empty());
    }
}
