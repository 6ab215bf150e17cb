//! DescribeUserScramCredentials (API 50) and AlterUserScramCredentials (API 51): SCRAM users
//! as Kafka's admin clients manage them (`kafka-configs.sh --alter --add-config
//! 'SCRAM-SHA-256=[password=...]'`, `AdminClient.alter_user_scram_credentials`).
//!
//! Describe reads the metadata image (mechanisms and iterations, never keys); Alter is
//! authorized here (ALTER on the cluster, as Kafka checks) and submitted to the controller
//! as an `AlterUserScramCredentials` operation, planned in `crate::controller::scram`.

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use strata_protocol::ErrorCode;
use strata_quorum::controller::ops::{AlterUserScramCredentials, ScramDeletion, ScramUpsertion};

use super::str_bytes;
use crate::auth::{authorize, ConnectionContext, Operation, Resource};
use crate::broker::Broker;

pub fn describe_user_scram_credentials(
    broker: &Broker,
    ctx: &ConnectionContext,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if !authorize(ctx, Operation::Describe, Resource::Cluster) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
            .with_error_message(Some(str_bytes("Not authorized.")));
    }
    let image = broker.image();
    // Null or empty: every user with a credential. Otherwise each named user once, in the
    // order named; a user named twice is answered DUPLICATE_RESOURCE.
    let users: Vec<(String, bool)> = match req.users.filter(|u| !u.is_empty()) {
        None => image
            .scram_users()
            .map(|(u, _)| (u.clone(), false))
            .collect(),
        Some(named) => {
            let names: Vec<String> = named.iter().map(|u| u.name.to_string()).collect();
            let mut seen = BTreeSet::new();
            let mut twice = BTreeSet::new();
            for n in &names {
                if !seen.insert(n.as_str()) {
                    twice.insert(n.as_str());
                }
            }
            let mut out = Vec::new();
            let mut done = BTreeSet::new();
            for n in &names {
                if done.insert(n.as_str()) {
                    out.push((n.clone(), twice.contains(n.as_str())));
                }
            }
            out
        }
    };
    let results = users
        .into_iter()
        .map(|(user, duplicate)| {
            let result = DescribeUserScramCredentialsResult::default().with_user(str_bytes(&user));
            if duplicate {
                return result
                    .with_error_code(ErrorCode::DuplicateResource.code())
                    .with_error_message(Some(str_bytes(format!(
                        "Cannot describe SCRAM credentials for the same user twice in a single request: {user}"
                    ))));
            }
            let infos: Vec<CredentialInfo> = image
                .scram_users()
                .find(|(u, _)| **u == user)
                .map(|(_, creds)| {
                    creds
                        .iter()
                        .map(|(mechanism, c)| {
                            CredentialInfo::default()
                                .with_mechanism(*mechanism)
                                .with_iterations(c.iterations)
                        })
                        .collect()
                })
                .unwrap_or_default();
            if infos.is_empty() {
                result
                    .with_error_code(ErrorCode::ResourceNotFound.code())
                    .with_error_message(Some(str_bytes(format!(
                        "Attempt to describe a user credential that does not exist: {user}"
                    ))))
            } else {
                result.with_credential_infos(infos)
            }
        })
        .collect();
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

pub async fn alter_user_scram_credentials(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let result = |user: &str, code: i16, message: Option<String>| {
        AlterUserScramCredentialsResult::default()
            .with_user(str_bytes(user))
            .with_error_code(code)
            .with_error_message(message.map(str_bytes))
    };
    let users = req
        .deletions
        .iter()
        .map(|d| d.name.to_string())
        .chain(req.upsertions.iter().map(|u| u.name.to_string()));
    if !authorize(ctx, Operation::Alter, Resource::Cluster) {
        let mut seen = BTreeSet::new();
        return AlterUserScramCredentialsResponse::default().with_results(
            users
                .filter(|u| seen.insert(u.clone()))
                .map(|u| {
                    result(
                        &u,
                        ErrorCode::ClusterAuthorizationFailed.code(),
                        Some("Not authorized.".into()),
                    )
                })
                .collect(),
        );
    }
    let op = AlterUserScramCredentials {
        deletions: req
            .deletions
            .iter()
            .map(|d| ScramDeletion {
                name: d.name.to_string(),
                mechanism: d.mechanism,
            })
            .collect(),
        upsertions: req
            .upsertions
            .iter()
            .map(|u| ScramUpsertion {
                name: u.name.to_string(),
                mechanism: u.mechanism,
                iterations: u.iterations,
                salt: u.salt.to_vec(),
                salted_password: u.salted_password.to_vec(),
            })
            .collect(),
    };
    match broker.submit(op).await {
        Ok(reply) => AlterUserScramCredentialsResponse::default().with_results(
            reply
                .results
                .into_iter()
                .map(|(user, r)| match r {
                    Ok(()) => result(&user, 0, None),
                    Err(e) => result(&user, e.code, Some(e.message)),
                })
                .collect(),
        ),
        Err(error) => {
            tracing::error!(%error, "altering SCRAM credentials failed");
            let mut seen = BTreeSet::new();
            AlterUserScramCredentialsResponse::default().with_results(
                users
                    .filter(|u| seen.insert(u.clone()))
                    .map(|u| {
                        result(
                            &u,
                            ErrorCode::UnknownServerError.code(),
                            Some(error.to_string()),
                        )
                    })
                    .collect(),
            )
        }
    }
}
