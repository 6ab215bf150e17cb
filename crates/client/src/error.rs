//! The client's error type: every message says what failed and, where it can, what to do.

use kafka_protocol::ResponseError;

/// Everything a client call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No bootstrap server answered.
    #[error("cannot reach any bootstrap server ({servers}): {reason}; check that the cluster is running and that the bootstrap server address is right")]
    NoBroker { servers: String, reason: String },
    /// A connection failed or closed mid-request.
    #[error("connection to {addr} failed: {reason}")]
    Connection { addr: String, reason: String },
    /// No answer within the request timeout.
    #[error("{api} request to {addr} timed out after {ms} ms")]
    Timeout { api: String, addr: String, ms: u128 },
    /// The broker answered with an error code.
    #[error("{context}: {}{}", describe(*.code), .message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kafka {
        context: String,
        code: ResponseError,
        message: Option<String>,
    },
    /// The broker does not serve an API (or any version this client speaks).
    #[error("the broker does not support {0}")]
    Unsupported(String),
    /// A response or record batch that could not be decoded, or a request that could not be encoded.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A bad argument from the caller.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// A broker error from a wire code (which must not be 0).
    pub fn kafka(context: impl Into<String>, code: i16, message: Option<String>) -> Self {
        Error::Kafka {
            context: context.into(),
            code: ResponseError::try_from_code(code).unwrap_or(ResponseError::Unknown(code)),
            message: message.filter(|m| !m.is_empty()),
        }
    }

    /// The broker error code, if this is one.
    pub fn code(&self) -> Option<ResponseError> {
        match self {
            Error::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether trying again (after refreshing metadata) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Kafka { code, .. } => code.is_retriable(),
            Error::Connection { .. } | Error::Timeout { .. } => true,
            _ => false,
        }
    }
}

/// `Ok(())` for code 0, else the error.
pub fn check(context: impl FnOnce() -> String, code: i16, message: Option<String>) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::kafka(context(), code, message))
    }
}

/// A short human description of a broker error code, with a hint for the common ones.
fn describe(code: ResponseError) -> String {
    let hint = match code {
        ResponseError::UnknownTopicOrPartition => "the topic or partition does not exist",
        ResponseError::TopicAlreadyExists => "the topic already exists",
        ResponseError::InvalidTopicException => "the topic name is not valid",
        ResponseError::InvalidPartitions => "the partition count is not valid",
        ResponseError::InvalidReplicationFactor => "the replication factor is not valid",
        ResponseError::GroupIdNotFound => "the group does not exist",
        ResponseError::NonEmptyGroup => "the group still has active members; stop them first",
        ResponseError::InvalidConfig => "a configuration value is not valid",
        ResponseError::PolicyViolation => "the request violates a broker policy",
        ResponseError::CoordinatorNotAvailable => "the group coordinator is not available yet",
        ResponseError::NotCoordinator => "the broker is not the group's coordinator",
        ResponseError::NotLeaderOrFollower => "the broker is not the partition's leader",
        ResponseError::RecordListTooLarge | ResponseError::MessageTooLarge => {
            "the record is larger than the broker accepts"
        }
        ResponseError::TopicAuthorizationFailed
        | ResponseError::GroupAuthorizationFailed
        | ResponseError::ClusterAuthorizationFailed => "not authorized",
        ResponseError::UnsupportedVersion => "the broker does not support this request version",
        ResponseError::InvalidRequest => "the broker rejected the request as invalid",
        _ => "",
    };
    if hint.is_empty() {
        format!("{code:?}")
    } else {
        format!("{hint} ({code:?})")
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
