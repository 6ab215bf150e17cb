//! `strata users`: SCRAM users (DescribeUserScramCredentials, AlterUserScramCredentials).
//! The password is salted on this side; the broker stores only derived keys.

use serde_json::json;
use strata_client::{ScramAlteration, ScramMechanism};

use super::table::Table;
use super::{print_json, Common};

#[derive(clap::Subcommand, Debug)]
pub enum UsersCommand {
    /// List users with SCRAM credentials and their mechanisms
    ///
    /// Examples:
    ///   strata users list
    #[command(verbatim_doc_comment)]
    List,
    /// Show one user's SCRAM credentials (mechanisms and iterations, never keys)
    ///
    /// Examples:
    ///   strata users describe alice
    #[command(verbatim_doc_comment)]
    Describe { user: String },
    /// Create a SCRAM credential (refused if the user already has one for that mechanism)
    ///
    /// Examples:
    ///   strata users create alice --password alice-secret
    ///   strata users create alice --mechanism SCRAM-SHA-512 --password-file pw.txt --iterations 8192
    #[command(verbatim_doc_comment)]
    Create(SetArgs),
    /// Set a SCRAM credential (create or replace: a new password or iteration count)
    ///
    /// Examples:
    ///   strata users alter alice --password new-secret
    #[command(verbatim_doc_comment)]
    Alter(SetArgs),
    /// Delete a user's SCRAM credential for one mechanism (or all of them)
    ///
    /// Examples:
    ///   strata users delete alice --mechanism SCRAM-SHA-256
    ///   strata users delete alice
    #[command(verbatim_doc_comment)]
    Delete {
        user: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512; every mechanism the user has when left out.
        #[arg(long, value_parser = parse_mechanism)]
        mechanism: Option<ScramMechanism>,
    },
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("secret").required(true).args(["password", "password_file"])))]
pub struct SetArgs {
    user: String,
    /// SCRAM-SHA-256 (default) or SCRAM-SHA-512.
    #[arg(long, value_parser = parse_mechanism, default_value = "SCRAM-SHA-256")]
    mechanism: ScramMechanism,
    /// The password (visible in the process list: prefer --password-file).
    #[arg(long)]
    password: Option<String>,
    /// A file whose first line is the password.
    #[arg(long, value_name = "FILE")]
    password_file: Option<std::path::PathBuf>,
    /// PBKDF2 iterations, 4096 to 16384 (the broker refuses others).
    #[arg(long, default_value_t = 4096)]
    iterations: i32,
}

fn parse_mechanism(s: &str) -> Result<ScramMechanism, String> {
    ScramMechanism::from_name(&s.to_ascii_uppercase())
        .ok_or_else(|| format!("{s}: expected SCRAM-SHA-256 or SCRAM-SHA-512"))
}

impl SetArgs {
    fn password(&self) -> anyhow::Result<String> {
        if let Some(p) = &self.password {
            return Ok(p.clone());
        }
        let path = self.password_file.as_ref().expect("clap requires one");
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let line = text.lines().next().unwrap_or_default().to_string();
        anyhow::ensure!(!line.is_empty(), "{} holds no password", path.display());
        Ok(line)
    }
}

pub async fn run(common: &Common, command: UsersCommand) -> anyhow::Result<()> {
    let client = common.connect().await?;
    match command {
        UsersCommand::List => {
            let users = client.describe_user_scram_credentials(None).await?;
            let mut rows = Vec::new();
            for (user, result) in users {
                rows.push((user, result?));
            }
            if common.json() {
                print_json(&json!(rows
                    .iter()
                    .map(|(u, creds)| json!({"user": u, "credentials": creds_json(creds)}))
                    .collect::<Vec<_>>()));
                return Ok(());
            }
            let mut table = Table::new(&["USER", "MECHANISMS"]);
            for (user, creds) in rows {
                let names: Vec<String> = creds
                    .iter()
                    .map(|c| format!("{} ({} iterations)", c.mechanism, c.iterations))
                    .collect();
                table.row(vec![user, names.join(", ")]);
            }
            table.print();
            Ok(())
        }
        UsersCommand::Describe { user } => {
            let creds = describe_one(&client, &user).await?;
            if common.json() {
                print_json(&json!({"user": user, "credentials": creds_json(&creds)}));
                return Ok(());
            }
            let mut table = Table::new(&["MECHANISM", "ITERATIONS"]);
            for c in creds {
                table.row(vec![c.mechanism.to_string(), c.iterations.to_string()]);
            }
            table.print();
            Ok(())
        }
        UsersCommand::Create(a) => {
            let existing = describe_one(&client, &a.user).await.unwrap_or_default();
            anyhow::ensure!(
                !existing.iter().any(|c| c.mechanism == a.mechanism),
                "user {} already has a {} credential; use `strata users alter` to change it",
                a.user,
                a.mechanism
            );
            set(common, &client, &a, "created").await
        }
        UsersCommand::Alter(a) => set(common, &client, &a, "altered").await,
        UsersCommand::Delete { user, mechanism } => {
            let mechanisms = match mechanism {
                Some(m) => vec![m],
                None => describe_one(&client, &user)
                    .await?
                    .into_iter()
                    .map(|c| c.mechanism)
                    .collect(),
            };
            // One request per mechanism: a user named twice in one request is refused.
            for mechanism in &mechanisms {
                let alteration = ScramAlteration::Delete {
                    user: user.clone(),
                    mechanism: *mechanism,
                };
                for (_, result) in client.alter_user_scram_credentials(&[alteration]).await? {
                    result?;
                }
            }
            let names: Vec<String> = mechanisms.iter().map(|m| m.to_string()).collect();
            if common.json() {
                print_json(&json!({"user": user, "deleted": names}));
            } else {
                println!("deleted the {} credential(s) of {user}", names.join(", "));
            }
            Ok(())
        }
    }
}

async fn describe_one(
    client: &strata_client::Client,
    user: &str,
) -> anyhow::Result<Vec<strata_client::ScramCredentialInfo>> {
    let answers = client
        .describe_user_scram_credentials(Some(&[user.to_string()]))
        .await?;
    let (_, result) = answers
        .into_iter()
        .find(|(u, _)| u == user)
        .ok_or_else(|| anyhow::anyhow!("the broker did not answer for user {user}"))?;
    Ok(result?)
}

async fn set(
    common: &Common,
    client: &strata_client::Client,
    a: &SetArgs,
    done: &str,
) -> anyhow::Result<()> {
    let alteration = ScramAlteration::Upsert {
        user: a.user.clone(),
        mechanism: a.mechanism,
        iterations: a.iterations,
        password: a.password()?,
    };
    for (_, result) in client.alter_user_scram_credentials(&[alteration]).await? {
        result?;
    }
    if common.json() {
        print_json(
            &json!({"user": a.user, "mechanism": a.mechanism.name(), "iterations": a.iterations}),
        );
    } else {
        println!(
            "{done} the {} credential of {} ({} iterations)",
            a.mechanism, a.user, a.iterations
        );
    }
    Ok(())
}

fn creds_json(creds: &[strata_client::ScramCredentialInfo]) -> serde_json::Value {
    json!(creds
        .iter()
        .map(|c| json!({"mechanism": c.mechanism.name(), "iterations": c.iterations}))
        .collect::<Vec<_>>())
}
