//! Plan of AlterClientQuotas: entity changes in, `ClientQuota` records out. Pure, like the
//! rest of [`super::plan`].
//!
//! Validation follows Kafka's controller: keys are the quota names Kafka defines for user and
//! client-id entities (`Invalid configuration key` otherwise); byte rates are whole numbers;
//! no value is negative, NaN or infinite; a key appears once per entity. All of these answer
//! INVALID_REQUEST, and an entity's changes are all-or-nothing. (The entity itself, built from
//! the wire's components, is validated by the handler: a [`QuotaEntity`] cannot hold a
//! duplicate or unknown component.)

use std::collections::BTreeSet;

use strata_protocol::ErrorCode;
use strata_quorum::controller::ops::{
    AlterClientQuotas, AlterClientQuotasReply, ItemResult, QuotaAlteration,
};
use strata_quorum::quota::{
    QuotaEntity, CONSUMER_BYTE_RATE, CONTROLLER_MUTATION_RATE, PRODUCER_BYTE_RATE,
    REQUEST_PERCENTAGE,
};
use strata_quorum::{MetadataImage, MetadataRecord};

use super::plan::refuse;

/// Whether a key's values must be whole numbers (Kafka's LONG quota configs).
fn is_whole_number_key(key: &str) -> Option<bool> {
    match key {
        PRODUCER_BYTE_RATE | CONSUMER_BYTE_RATE => Some(true),
        REQUEST_PERCENTAGE | CONTROLLER_MUTATION_RATE => Some(false),
        _ => None,
    }
}

/// Checks one entity's changes.
fn validate(alteration: &QuotaAlteration) -> ItemResult<()> {
    let invalid = |message: String| Err(refuse(ErrorCode::InvalidRequest, message));
    if alteration.entity
        == (QuotaEntity {
            user: None,
            client_id: None,
        })
    {
        return invalid("Invalid empty client quota entity".into());
    }
    let mut seen = BTreeSet::new();
    for (key, value) in &alteration.ops {
        let Some(whole) = is_whole_number_key(key) else {
            return invalid(format!("Invalid configuration key {key}"));
        };
        if !seen.insert(key.as_str()) {
            return invalid(format!("Duplicate quota key {key} in one entity"));
        }
        let Some(value) = value else { continue };
        let v = value.0;
        if !v.is_finite() || v < 0.0 {
            return invalid(format!(
                "Illegal value {v} for quota {key}: must be a non-negative number"
            ));
        }
        if whole && (v.fract() != 0.0 || v > i64::MAX as f64) {
            return invalid(format!("Configuration {key} must be a Long value"));
        }
    }
    Ok(())
}

/// AlterClientQuotas: a `ClientQuota` record per change of a valid entity (none when
/// `validate_only`). Removing a key that is not set writes nothing.
pub fn alter_client_quotas(
    image: &MetadataImage,
    op: &AlterClientQuotas,
) -> (Vec<MetadataRecord>, AlterClientQuotasReply) {
    let mut records = Vec::new();
    let mut results = Vec::with_capacity(op.entries.len());
    for alteration in &op.entries {
        let result = validate(alteration);
        if result.is_ok() && !op.validate_only {
            let current = image.client_quotas().get(&alteration.entity);
            for (key, value) in &alteration.ops {
                let is_set = current.is_some_and(|keys| keys.contains_key(key));
                if value.is_none() && !is_set {
                    continue;
                }
                records.push(MetadataRecord::ClientQuota {
                    entity: alteration.entity.clone(),
                    key: key.clone(),
                    value: *value,
                });
            }
        }
        results.push(result);
    }
    (records, AlterClientQuotasReply { results })
}

#[cfg(test)]
mod tests {
    use strata_quorum::quota::{QuotaName, QuotaValue};

    use super::*;

    fn entry(ops: Vec<(&str, Option<f64>)>) -> QuotaAlteration {
        QuotaAlteration {
            entity: QuotaEntity {
                user: None,
                client_id: Some(QuotaName::Name("app".into())),
            },
            ops: ops
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.map(QuotaValue)))
                .collect(),
        }
    }

    fn code(result: &ItemResult<()>) -> i16 {
        result.as_ref().err().map_or(0, |e| e.code)
    }

    #[test]
    fn valid_changes_become_records_and_invalid_ones_nothing() {
        let invalid = ErrorCode::InvalidRequest.code();
        let op = AlterClientQuotas {
            entries: vec![
                entry(vec![
                    (PRODUCER_BYTE_RATE, Some(1024.0)),
                    (REQUEST_PERCENTAGE, Some(12.5)),
                ]),
                entry(vec![("bogus_rate", Some(1.0))]),
                entry(vec![(CONSUMER_BYTE_RATE, Some(-1.0))]),
                entry(vec![(CONSUMER_BYTE_RATE, Some(1.5))]),
                entry(vec![(CONSUMER_BYTE_RATE, Some(f64::NAN))]),
                entry(vec![
                    (CONSUMER_BYTE_RATE, Some(1.0)),
                    (CONSUMER_BYTE_RATE, None),
                ]),
                QuotaAlteration {
                    entity: QuotaEntity {
                        user: None,
                        client_id: None,
                    },
                    ops: vec![],
                },
                entry(vec![(CONSUMER_BYTE_RATE, None)]),
            ],
            validate_only: false,
        };
        let image = MetadataImage::default();
        let (records, reply) = alter_client_quotas(&image, &op);
        let codes: Vec<i16> = reply.results.iter().map(code).collect();
        assert_eq!(
            codes,
            vec![0, invalid, invalid, invalid, invalid, invalid, invalid, 0]
        );
        assert_eq!(records.len(), 2, "removing an unset key writes nothing");
        let (records, reply) = alter_client_quotas(
            &image,
            &AlterClientQuotas {
                validate_only: true,
                ..op
            },
        );
        assert!(records.is_empty());
        assert_eq!(code(&reply.results[0]), 0);
    }

    #[test]
    fn removal_of_a_set_key_is_recorded() {
        let mut image = MetadataImage::default();
        let set = AlterClientQuotas {
            entries: vec![entry(vec![(PRODUCER_BYTE_RATE, Some(10.0))])],
            validate_only: false,
        };
        for r in alter_client_quotas(&image, &set).0 {
            image.apply(&r);
        }
        let remove = AlterClientQuotas {
            entries: vec![entry(vec![(PRODUCER_BYTE_RATE, None)])],
            validate_only: false,
        };
        let (records, _) = alter_client_quotas(&image, &remove);
        for r in &records {
            image.apply(r);
        }
        assert_eq!(records.len(), 1);
        assert!(image.client_quotas().is_empty());
    }
}
