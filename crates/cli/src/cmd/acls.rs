//! `strata acls`: list, add and remove ACLs, with the flags of Kafka's kafka-acls.sh.

use anyhow::Context;
use serde_json::json;
use strata_client::acls::names;
use strata_client::{Acl, AclFilter};

use super::table::Table;
use super::{print_json_rows, Common};

#[derive(clap::Subcommand, Debug)]
pub enum AclsCommand {
    /// List ACLs (all, or those of the given resources or principal)
    ///
    /// Examples:
    ///   strata acls list
    ///   strata acls list --topic orders
    ///   strata acls list --topic orders --resource-pattern-type match
    ///   strata acls list --principal User:alice
    #[command(verbatim_doc_comment)]
    List(ListArgs),
    /// Add ACLs: each principal x operation x resource x host
    ///
    /// Examples:
    ///   strata acls add --allow-principal User:alice --operation write --topic orders
    ///   strata acls add --allow-principal User:bob --operation read --topic orders --group billing
    ///   strata acls add --allow-principal User:etl --operation all --topic etl- --resource-pattern-type prefixed
    ///   strata acls add --deny-principal User:mallory --operation all --cluster
    ///   strata acls add --allow-principal User:app --operation write --transactional-id app-tx
    #[command(verbatim_doc_comment)]
    Add(ChangeArgs),
    /// Remove ACLs: those given by the flags, or every ACL of the resources without principals
    ///
    /// Examples:
    ///   strata acls remove --allow-principal User:alice --operation write --topic orders
    ///   strata acls remove --topic orders
    #[command(verbatim_doc_comment)]
    Remove(ChangeArgs),
}

/// The resources an ACL command is about.
#[derive(clap::Args, Debug, Default)]
pub struct Resources {
    /// A topic (repeatable); `*` is every topic.
    #[arg(long, value_name = "TOPIC")]
    topic: Vec<String>,
    /// A consumer group (repeatable); `*` is every group.
    #[arg(long, value_name = "GROUP")]
    group: Vec<String>,
    /// The cluster.
    #[arg(long)]
    cluster: bool,
    /// A transactional id (repeatable); `*` is every one.
    #[arg(long, value_name = "ID")]
    transactional_id: Vec<String>,
    /// How resource names match: literal or prefixed (add, remove); also any or match (list,
    /// remove). Default: literal, or any when listing.
    #[arg(long, value_name = "TYPE")]
    resource_pattern_type: Option<String>,
}

impl Resources {
    /// (resource type code, name) of every resource named.
    fn list(&self) -> Vec<(i8, String)> {
        let code = |n: &str| names::resource_type(n).expect("a known resource type");
        let mut out = Vec::new();
        out.extend(self.topic.iter().map(|t| (code("TOPIC"), t.clone())));
        out.extend(self.group.iter().map(|g| (code("GROUP"), g.clone())));
        if self.cluster {
            out.push((code("CLUSTER"), "kafka-cluster".to_string()));
        }
        out.extend(
            self.transactional_id
                .iter()
                .map(|t| (code("TRANSACTIONAL_ID"), t.clone())),
        );
        out
    }

    fn pattern_type(&self, default: &str, allowed: &[&str]) -> anyhow::Result<i8> {
        let name = self.resource_pattern_type.as_deref().unwrap_or(default);
        let upper = name.to_ascii_uppercase();
        if !allowed.contains(&upper.as_str()) {
            anyhow::bail!(
                "--resource-pattern-type {name} is not allowed here; use one of: {}",
                allowed.join(", ").to_lowercase()
            );
        }
        names::pattern_type(name).context("a known pattern type")
    }
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    resources: Resources,
    /// Only the ACLs of this principal (User:alice).
    #[arg(long, value_name = "PRINCIPAL")]
    principal: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct ChangeArgs {
    #[command(flatten)]
    resources: Resources,
    /// A principal to allow (User:alice; repeatable).
    #[arg(long, value_name = "PRINCIPAL")]
    allow_principal: Vec<String>,
    /// A principal to deny (repeatable). A DENY wins over every ALLOW.
    #[arg(long, value_name = "PRINCIPAL")]
    deny_principal: Vec<String>,
    /// An operation (repeatable): read, write, create, delete, alter, describe, cluster-action,
    /// describe-configs, alter-configs, idempotent-write, all.
    #[arg(long, value_name = "OPERATION")]
    operation: Vec<String>,
    /// A host the allowed principals may connect from (repeatable; default: any, `*`).
    #[arg(long, value_name = "HOST")]
    allow_host: Vec<String>,
    /// A host the denied principals are denied from (repeatable; default: any, `*`).
    #[arg(long, value_name = "HOST")]
    deny_host: Vec<String>,
}

const ALLOW: i8 = 3;
const DENY: i8 = 2;

impl ChangeArgs {
    fn operations(&self) -> anyhow::Result<Vec<i8>> {
        self.operation
            .iter()
            .map(|o| {
                names::operation(o).with_context(|| {
                    format!(
                        "unknown operation {o:?}; use one of: {}",
                        names::operations().join(", ").to_lowercase()
                    )
                })
            })
            .collect()
    }

    /// (principal, permission, host) of every entry the flags describe.
    fn entries(&self) -> Vec<(String, i8, String)> {
        let hosts = |h: &[String]| -> Vec<String> {
            if h.is_empty() {
                vec!["*".to_string()]
            } else {
                h.to_vec()
            }
        };
        let mut out = Vec::new();
        for p in &self.allow_principal {
            for h in hosts(&self.allow_host) {
                out.push((p.clone(), ALLOW, h));
            }
        }
        for p in &self.deny_principal {
            for h in hosts(&self.deny_host) {
                out.push((p.clone(), DENY, h));
            }
        }
        out
    }

    /// The bindings to add: every resource x entry x operation.
    fn bindings(&self) -> anyhow::Result<Vec<Acl>> {
        let resources = self.resources.list();
        if resources.is_empty() {
            anyhow::bail!("name a resource: --topic, --group, --cluster or --transactional-id");
        }
        if self.allow_principal.is_empty() && self.deny_principal.is_empty() {
            anyhow::bail!("name a principal: --allow-principal or --deny-principal");
        }
        let operations = self.operations()?;
        if operations.is_empty() {
            anyhow::bail!("name an operation: --operation read|write|...|all");
        }
        let pattern_type = self
            .resources
            .pattern_type("literal", &["LITERAL", "PREFIXED"])?;
        let mut out = Vec::new();
        for (resource_type, name) in &resources {
            for (principal, permission, host) in self.entries() {
                for operation in &operations {
                    out.push(Acl {
                        resource_type: *resource_type,
                        resource_name: name.clone(),
                        pattern_type,
                        principal: principal.clone(),
                        host: host.clone(),
                        operation: *operation,
                        permission,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The filters of a removal: the bindings given, or every ACL of the resources when no
    /// principal is given (as kafka-acls.sh --remove does).
    fn filters(&self) -> anyhow::Result<Vec<AclFilter>> {
        let resources = self.resources.list();
        if resources.is_empty() {
            anyhow::bail!("name a resource: --topic, --group, --cluster or --transactional-id");
        }
        let pattern_type = self
            .resources
            .pattern_type("literal", &["LITERAL", "PREFIXED", "ANY", "MATCH"])?;
        let operations = self.operations()?;
        let mut out = Vec::new();
        for (resource_type, name) in &resources {
            let base = AclFilter {
                resource_type: *resource_type,
                resource_name: Some(name.clone()),
                pattern_type,
                ..AclFilter::any()
            };
            let entries = self.entries();
            if entries.is_empty() {
                if operations.is_empty() {
                    out.push(base.clone());
                }
                for op in &operations {
                    out.push(AclFilter {
                        operation: *op,
                        ..base.clone()
                    });
                }
                continue;
            }
            for (principal, permission, host) in entries {
                let entry = AclFilter {
                    principal: Some(principal),
                    permission,
                    host: Some(host),
                    ..base.clone()
                };
                if operations.is_empty() {
                    out.push(entry.clone());
                }
                for op in &operations {
                    out.push(AclFilter {
                        operation: *op,
                        ..entry.clone()
                    });
                }
            }
        }
        Ok(out)
    }
}

fn row(acl: &Acl) -> Vec<String> {
    vec![
        acl.principal.clone(),
        names::permission_name(acl.permission),
        names::operation_name(acl.operation),
        acl.host.clone(),
        names::resource_type_name(acl.resource_type),
        names::pattern_type_name(acl.pattern_type),
        acl.resource_name.clone(),
    ]
}

fn to_json(acl: &Acl) -> serde_json::Value {
    json!({
        "principal": acl.principal,
        "permission": names::permission_name(acl.permission),
        "operation": names::operation_name(acl.operation),
        "host": acl.host,
        "resource_type": names::resource_type_name(acl.resource_type),
        "pattern_type": names::pattern_type_name(acl.pattern_type),
        "resource_name": acl.resource_name,
    })
}

fn print(common: &Common, acls: &[Acl]) {
    if common.json() {
        print_json_rows(acls.iter().map(to_json));
        return;
    }
    let mut table = Table::new(&[
        "PRINCIPAL",
        "PERMISSION",
        "OPERATION",
        "HOST",
        "RESOURCE-TYPE",
        "PATTERN",
        "NAME",
    ]);
    for acl in acls {
        table.row(row(acl));
    }
    table.print();
}

pub async fn run(common: &Common, command: AclsCommand) -> anyhow::Result<()> {
    let client = common.connect().await?;
    match command {
        AclsCommand::List(a) => {
            let pattern_type = a
                .resources
                .pattern_type("any", &["LITERAL", "PREFIXED", "ANY", "MATCH"])?;
            let resources = a.resources.list();
            let filters: Vec<AclFilter> = if resources.is_empty() {
                vec![AclFilter {
                    pattern_type,
                    principal: a.principal.clone(),
                    ..AclFilter::any()
                }]
            } else {
                resources
                    .into_iter()
                    .map(|(resource_type, name)| AclFilter {
                        resource_type,
                        resource_name: Some(name),
                        pattern_type,
                        principal: a.principal.clone(),
                        ..AclFilter::any()
                    })
                    .collect()
            };
            let mut acls = Vec::new();
            for f in &filters {
                acls.extend(client.describe_acls(f).await?);
            }
            acls.sort();
            acls.dedup();
            print(common, &acls);
        }
        AclsCommand::Add(a) => {
            let bindings = a.bindings()?;
            let results = client.create_acls(&bindings).await?;
            let mut failures = Vec::new();
            for (acl, result) in bindings.iter().zip(results) {
                match result {
                    Ok(()) => eprintln!("added: {}", row(acl).join(" ")),
                    Err(e) => failures.push(format!("{}: {e}", row(acl).join(" "))),
                }
            }
            if !failures.is_empty() {
                anyhow::bail!(
                    "{} of {} ACLs were not added:\n  {}",
                    failures.len(),
                    bindings.len(),
                    failures.join("\n  ")
                );
            }
        }
        AclsCommand::Remove(a) => {
            let filters = a.filters()?;
            let results = client.delete_acls(&filters).await?;
            let mut removed = Vec::new();
            for result in results {
                removed.extend(result?);
            }
            removed.sort();
            removed.dedup();
            if common.json() {
                print_json_rows(removed.iter().map(to_json));
            } else {
                for acl in &removed {
                    eprintln!("removed: {}", row(acl).join(" "));
                }
                eprintln!("removed {} ACL(s)", removed.len());
            }
        }
    }
    Ok(())
}
