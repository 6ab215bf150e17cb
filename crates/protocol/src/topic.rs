//! Kafka's rules for topic names.

/// Longest legal topic name (Kafka's `Topic.MAX_NAME_LENGTH`).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Why a topic name is refused; answered as INVALID_TOPIC_EXCEPTION.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    #[error("topic name is empty")]
    Empty,
    #[error("topic name cannot be \".\" or \"..\"")]
    Dots,
    #[error("topic name is {0} characters long; the limit is 249")]
    TooLong(usize),
    #[error(
        "topic name {0:?} contains characters other than ASCII alphanumerics, '.', '_' and '-'"
    )]
    IllegalCharacter(String),
}

/// Checks a topic name against Kafka's rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, and not
/// `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), TopicNameError> {
    if name.is_empty() {
        return Err(TopicNameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(TopicNameError::Dots);
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(TopicNameError::TooLong(name.len()));
    }
    let legal = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-';
    if !name.chars().all(legal) {
        return Err(TopicNameError::IllegalCharacter(name.to_string()));
    }
    Ok(())
}

/// The name with `.` replaced by `_`: two topics whose names map to the same string collide in
/// metric names, so Kafka refuses to create the second one.
pub fn collision_key(name: &str) -> String {
    name.replace('.', "_")
}

/// Internal topics that clients see flagged `is_internal`.
pub fn is_internal(name: &str) -> bool {
    name == "__consumer_offsets" || name == "__transaction_state"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_rules() {
        assert!(validate_topic_name("orders").is_ok());
        assert!(validate_topic_name("a.b_c-D9").is_ok());
        assert_eq!(validate_topic_name(""), Err(TopicNameError::Empty));
        assert_eq!(validate_topic_name("."), Err(TopicNameError::Dots));
        assert_eq!(validate_topic_name(".."), Err(TopicNameError::Dots));
        assert!(validate_topic_name("...").is_ok());
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
        assert_eq!(
            validate_topic_name(&"x".repeat(250)),
            Err(TopicNameError::TooLong(250))
        );
        assert!(validate_topic_name("bad name!").is_err());
        assert!(validate_topic_name("é").is_err());
        assert_eq!(collision_key("a.b"), collision_key("a_b"));
    }
}
