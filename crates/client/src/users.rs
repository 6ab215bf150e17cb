//! SCRAM users: DescribeUserScramCredentials and AlterUserScramCredentials, as Kafka's admin
//! clients call them. The password never leaves this client: it is salted here (PBKDF2 with
//! a new random salt) and the broker receives the salt and the salted password.

use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
};
use strata_sasl::scram::{random_salt, ScramMechanism};

use crate::client::{sb, Client};
use crate::error::{Error, Result};

/// One of a user's SCRAM credentials, as described (mechanism and iterations only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScramCredentialInfo {
    pub mechanism: ScramMechanism,
    pub iterations: i32,
}

/// A change to one user's SCRAM credentials.
#[derive(Clone)]
pub enum ScramAlteration {
    /// Set (create or replace) the credential for `mechanism`.
    Upsert {
        user: String,
        mechanism: ScramMechanism,
        iterations: i32,
        password: String,
    },
    /// Delete the credential for `mechanism`.
    Delete {
        user: String,
        mechanism: ScramMechanism,
    },
}

impl std::fmt::Debug for ScramAlteration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScramAlteration::Upsert {
                user,
                mechanism,
                iterations,
                ..
            } => write!(f, "Upsert({user}, {mechanism}, {iterations} iterations)"),
            ScramAlteration::Delete { user, mechanism } => write!(f, "Delete({user}, {mechanism})"),
        }
    }
}

impl Client {
    /// The SCRAM credentials of `users` (every user with one when `None`), per user.
    pub async fn describe_user_scram_credentials(
        &self,
        users: Option<&[String]>,
    ) -> Result<Vec<(String, Result<Vec<ScramCredentialInfo>>)>> {
        let response = self
            .send_any(0, |_| {
                DescribeUserScramCredentialsRequest::default().with_users(users.map(|u| {
                    u.iter()
                        .map(|n| UserName::default().with_name(sb(n)))
                        .collect()
                }))
            })
            .await?;
        if response.error_code != 0 {
            return Err(Error::kafka(
                "describing SCRAM users",
                response.error_code,
                response.error_message.map(|m| m.to_string()),
            ));
        }
        Ok(response
            .results
            .into_iter()
            .map(|r| {
                let user = r.user.to_string();
                let result = if r.error_code != 0 {
                    Err(Error::kafka(
                        format!("describing SCRAM user {user:?}"),
                        r.error_code,
                        r.error_message.map(|m| m.to_string()),
                    ))
                } else {
                    Ok(r.credential_infos
                        .iter()
                        .filter_map(|c| {
                            ScramMechanism::from_wire(c.mechanism).map(|mechanism| {
                                ScramCredentialInfo {
                                    mechanism,
                                    iterations: c.iterations,
                                }
                            })
                        })
                        .collect())
                };
                (user, result)
            })
            .collect())
    }

    /// Applies `alterations` in one request; the result per user named.
    pub async fn alter_user_scram_credentials(
        &self,
        alterations: &[ScramAlteration],
    ) -> Result<Vec<(String, Result<()>)>> {
        let mut deletions = Vec::new();
        let mut upsertions = Vec::new();
        for a in alterations {
            match a {
                ScramAlteration::Delete { user, mechanism } => deletions.push(
                    ScramCredentialDeletion::default()
                        .with_name(sb(user))
                        .with_mechanism(mechanism.wire()),
                ),
                ScramAlteration::Upsert {
                    user,
                    mechanism,
                    iterations,
                    password,
                } => {
                    let salt = random_salt();
                    let salted = mechanism.salted_password(
                        password.as_bytes(),
                        &salt,
                        u32::try_from(*iterations).map_err(|_| {
                            Error::Invalid(format!("iterations must be positive, not {iterations}"))
                        })?,
                    );
                    upsertions.push(
                        ScramCredentialUpsertion::default()
                            .with_name(sb(user))
                            .with_mechanism(mechanism.wire())
                            .with_iterations(*iterations)
                            .with_salt(salt.into())
                            .with_salted_password(salted.into()),
                    );
                }
            }
        }
        let request = AlterUserScramCredentialsRequest::default()
            .with_deletions(deletions)
            .with_upsertions(upsertions);
        let response = self.send_any(0, |_| request.clone()).await?;
        Ok(response
            .results
            .into_iter()
            .map(|r| {
                let user = r.user.to_string();
                let result = if r.error_code == 0 {
                    Ok(())
                } else {
                    Err(Error::kafka(
                        format!("altering SCRAM user {user:?}"),
                        r.error_code,
                        r.error_message.map(|m| m.to_string()),
                    ))
                };
                (user, result)
            })
            .collect())
    }
}
