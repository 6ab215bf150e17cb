//! The pure plan of AlterUserScramCredentials, with Kafka's rules (its controller's SCRAM
//! manager): a user named twice in one request (in deletions, upsertions or both) gets
//! DUPLICATE_RESOURCE and none of its changes; an empty name or iterations outside
//! 4096..=16384 UNACCEPTABLE_CREDENTIAL; an unknown mechanism UNSUPPORTED_SASL_MECHANISM;
//! deleting a credential that does not exist RESOURCE_NOT_FOUND. The records carry the salt,
//! StoredKey and ServerKey derived from the salted password, never the salted password.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use strata_protocol::ErrorCode;
use strata_quorum::controller::ops::{
    AlterUserScramCredentials, AlterUserScramCredentialsReply, OpError, ScramDeletion,
    ScramUpsertion,
};
use strata_quorum::{MetadataImage, MetadataRecord};
use strata_sasl::scram::{ScramCredential, ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS};

use super::plan::refuse;

const TWICE: &str = "A user credential cannot be altered twice in the same request";

fn check_name_and_mechanism(name: &str, mechanism: i8) -> Result<ScramMechanism, OpError> {
    if name.is_empty() {
        return Err(refuse(
            ErrorCode::UnacceptableCredential,
            "Username must not be empty",
        ));
    }
    ScramMechanism::from_wire(mechanism).ok_or_else(|| {
        refuse(
            ErrorCode::UnsupportedSaslMechanism,
            "Unknown SCRAM mechanism",
        )
    })
}

fn check_deletion(image: &MetadataImage, d: &ScramDeletion) -> Result<(), OpError> {
    check_name_and_mechanism(&d.name, d.mechanism)?;
    if image.scram_credential(&d.name, d.mechanism).is_none() {
        return Err(refuse(
            ErrorCode::ResourceNotFound,
            "Attempt to delete a user credential that does not exist",
        ));
    }
    Ok(())
}

fn check_upsertion(u: &ScramUpsertion) -> Result<ScramMechanism, OpError> {
    let mechanism = check_name_and_mechanism(&u.name, u.mechanism)?;
    if u.iterations < MIN_ITERATIONS {
        return Err(refuse(
            ErrorCode::UnacceptableCredential,
            "Too few iterations",
        ));
    }
    if u.iterations > MAX_ITERATIONS {
        return Err(refuse(
            ErrorCode::UnacceptableCredential,
            "Too many iterations",
        ));
    }
    if u.salt.is_empty() || u.salted_password.is_empty() {
        return Err(refuse(
            ErrorCode::UnacceptableCredential,
            "The salt and the salted password must not be empty",
        ));
    }
    Ok(mechanism)
}

/// What the request does to one user.
enum Change<'a> {
    Delete(&'a ScramDeletion),
    Upsert(&'a ScramUpsertion, ScramMechanism),
    Refused(OpError),
}

pub fn alter_user_scram_credentials(
    image: &MetadataImage,
    op: &AlterUserScramCredentials,
) -> (Vec<MetadataRecord>, AlterUserScramCredentialsReply) {
    // Per user, in the order users first appear; a second mention refuses the user.
    let mut changes: Vec<(String, Change)> = Vec::new();
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    let mentions = op
        .deletions
        .iter()
        .map(|d| (d.name.as_str(), Some(d), None))
        .chain(
            op.upsertions
                .iter()
                .map(|u| (u.name.as_str(), None, Some(u))),
        );
    for (name, deletion, upsertion) in mentions {
        if let Some(&i) = index.get(name) {
            if !matches!(changes[i].1, Change::Refused(_)) {
                changes[i].1 = Change::Refused(refuse(ErrorCode::DuplicateResource, TWICE));
            }
            continue;
        }
        let change = match (deletion, upsertion) {
            (Some(d), _) => match check_deletion(image, d) {
                Ok(()) => Change::Delete(d),
                Err(e) => Change::Refused(e),
            },
            (None, Some(u)) => match check_upsertion(u) {
                Ok(m) => Change::Upsert(u, m),
                Err(e) => Change::Refused(e),
            },
            (None, None) => continue,
        };
        index.insert(name, changes.len());
        changes.push((name.to_string(), change));
    }
    let mut records = Vec::new();
    let results = changes
        .into_iter()
        .map(|(name, change)| {
            let result = match change {
                Change::Refused(e) => Err(e),
                Change::Delete(d) => {
                    records.push(MetadataRecord::RemoveUserScramCredential {
                        name: d.name.clone(),
                        mechanism: d.mechanism,
                    });
                    Ok(())
                }
                Change::Upsert(u, mechanism) => {
                    let c = ScramCredential::from_salted_password(
                        mechanism,
                        &u.salted_password,
                        &u.salt,
                        u.iterations,
                    );
                    records.push(MetadataRecord::UserScramCredential {
                        name: u.name.clone(),
                        mechanism: u.mechanism,
                        salt: B64.encode(&c.salt),
                        stored_key: B64.encode(&c.stored_key),
                        server_key: B64.encode(&c.server_key),
                        iterations: c.iterations,
                    });
                    Ok(())
                }
            };
            (name, result)
        })
        .collect();
    (records, AlterUserScramCredentialsReply { results })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(name: &str, mechanism: i8, iterations: i32) -> ScramUpsertion {
        let m = ScramMechanism::from_wire(mechanism).unwrap_or(ScramMechanism::Sha256);
        ScramUpsertion {
            name: name.into(),
            mechanism,
            iterations,
            salt: b"salt".to_vec(),
            salted_password: m.salted_password(b"pw", b"salt", 4096),
        }
    }

    fn delete(name: &str, mechanism: i8) -> ScramDeletion {
        ScramDeletion {
            name: name.into(),
            mechanism,
        }
    }

    fn codes(reply: &AlterUserScramCredentialsReply) -> Vec<(String, i16)> {
        reply
            .results
            .iter()
            .map(|(n, r)| (n.clone(), r.as_ref().map_or_else(|e| e.code, |()| 0)))
            .collect()
    }

    #[test]
    fn upserts_record_derived_keys_and_the_image_verifies_the_password() {
        let op = AlterUserScramCredentials {
            deletions: vec![],
            upsertions: vec![upsert("alice", 1, 4096), upsert("bob", 2, 8192)],
        };
        let (records, reply) = alter_user_scram_credentials(&MetadataImage::default(), &op);
        assert_eq!(codes(&reply), vec![("alice".into(), 0), ("bob".into(), 0)]);
        let mut image = MetadataImage::default();
        for r in &records {
            image.apply(r);
        }
        let stored = image.scram_credential("alice", 1).expect("stored");
        let m = ScramMechanism::Sha256;
        let expected = ScramCredential::from_salted_password(
            m,
            &m.salted_password(b"pw", b"salt", 4096),
            b"salt",
            4096,
        );
        assert_eq!(stored.stored_key, expected.stored_key);
        assert_eq!(stored.server_key, expected.server_key);
        assert_eq!(
            image.scram_credential("bob", 2).map(|c| c.iterations),
            Some(8192)
        );
        // Nothing of the salted password is in the records.
        let json = serde_json::to_string(&records).expect("json");
        assert!(
            !json.contains(&B64.encode(&op.upsertions[0].salted_password)),
            "{json}"
        );
    }

    #[test]
    fn kafkas_refusals() {
        let mut image = MetadataImage::default();
        let (records, _) = alter_user_scram_credentials(
            &image,
            &AlterUserScramCredentials {
                deletions: vec![],
                upsertions: vec![upsert("carol", 1, 4096)],
            },
        );
        for r in &records {
            image.apply(r);
        }
        let op = AlterUserScramCredentials {
            deletions: vec![
                delete("ghost", 1),
                delete("carol", 2),
                delete("twice", 1),
                delete("", 1),
                delete("x", 9),
            ],
            upsertions: vec![
                upsert("twice", 1, 4096),
                upsert("few", 1, 4095),
                upsert("many", 2, 16385),
                upsert("dup", 1, 4096),
                upsert("dup", 2, 4096),
                upsert("ok", 2, 16384),
            ],
        };
        let (records, reply) = alter_user_scram_credentials(&image, &op);
        let c = |e: ErrorCode| e.code();
        assert_eq!(
            codes(&reply),
            vec![
                ("ghost".into(), c(ErrorCode::ResourceNotFound)),
                ("carol".into(), c(ErrorCode::ResourceNotFound)),
                // Refused at its first mention already: the first error stays, as in Kafka.
                ("twice".into(), c(ErrorCode::ResourceNotFound)),
                ("".into(), c(ErrorCode::UnacceptableCredential)),
                ("x".into(), c(ErrorCode::UnsupportedSaslMechanism)),
                ("few".into(), c(ErrorCode::UnacceptableCredential)),
                ("many".into(), c(ErrorCode::UnacceptableCredential)),
                ("dup".into(), c(ErrorCode::DuplicateResource)),
                ("ok".into(), 0),
            ]
        );
        assert_eq!(records.len(), 1, "only ok's credential");
        let (records, reply) = alter_user_scram_credentials(
            &image,
            &AlterUserScramCredentials {
                deletions: vec![delete("carol", 1)],
                upsertions: vec![],
            },
        );
        assert_eq!(codes(&reply), vec![("carol".into(), 0)]);
        image.apply(&records[0]);
        assert!(image.scram_credential("carol", 1).is_none());
    }
}
