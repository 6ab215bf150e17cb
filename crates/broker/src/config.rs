//! Broker and topic configuration, under Kafka's property names.
//!
//! [`BrokerConfig`] is built from a properties file and `--set` overrides. Every key Strata
//! knows is in [`BROKER_CONFIGS`] with its type and Kafka's default; an unknown key is kept
//! (and warned about by the caller), a bad value stops start-up with an error naming key and
//! value. Topic configs ([`TOPIC_CONFIGS`]) resolve in Kafka's order: the topic's own override,
//! then the broker's dynamic config, then the static broker config (through the topic config's
//! broker synonyms, e.g. `retention.ms` ← `log.retention.ms` ← `log.retention.minutes` ←
//! `log.retention.hours`), then Kafka's default.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The type of a config value, as DescribeConfigs reports it (Kafka's `ConfigType` numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean,
    String,
    Int,
    Short,
    Long,
    Double,
    List,
    Class,
    Password,
}

impl ConfigType {
    /// Kafka's wire number for the type (DescribeConfigs v3+).
    pub fn wire(self) -> i8 {
        match self {
            ConfigType::Boolean => 1,
            ConfigType::String => 2,
            ConfigType::Int => 3,
            ConfigType::Short => 4,
            ConfigType::Long => 5,
            ConfigType::Double => 6,
            ConfigType::List => 7,
            ConfigType::Class => 8,
            ConfigType::Password => 9,
        }
    }
}

/// One known config key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConfigDef {
    pub name: &'static str,
    pub kind: ConfigType,
    /// Kafka's default, as text; `None` is Kafka's null.
    pub default: Option<&'static str>,
    /// Allowed values for enumerated string configs; empty means any.
    pub allowed: &'static [&'static str],
    /// Lowest value allowed for numbers.
    pub min: Option<i64>,
    pub doc: &'static str,
    /// Can be changed at runtime with AlterConfigs on the broker resource.
    pub dynamic: bool,
}

const fn def(
    name: &'static str,
    kind: ConfigType,
    default: Option<&'static str>,
    doc: &'static str,
) -> ConfigDef {
    ConfigDef {
        name,
        kind,
        default,
        allowed: &[],
        min: None,
        doc,
        dynamic: false,
    }
}

const fn num(
    name: &'static str,
    kind: ConfigType,
    default: &'static str,
    min: i64,
    doc: &'static str,
) -> ConfigDef {
    ConfigDef {
        name,
        kind,
        default: Some(default),
        allowed: &[],
        min: Some(min),
        doc,
        dynamic: false,
    }
}

const fn dynamic(mut d: ConfigDef) -> ConfigDef {
    d.dynamic = true;
    d
}

const fn one_of(mut d: ConfigDef, allowed: &'static [&'static str]) -> ConfigDef {
    d.allowed = allowed;
    d
}

use ConfigType as T;

const COMPRESSION_TYPES: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];
const TIMESTAMP_TYPES: &[&str] = &["CreateTime", "LogAppendTime"];
const LONG_MAX: &str = "9223372036854775807";

/// Kafka's default `listener.security.protocol.map`.
const DEFAULT_PROTOCOL_MAP: &str =
    "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL";

/// Strata's own switch: acknowledge acks=all produce requests only after an fsync.
pub const FSYNC_BEFORE_ACK: &str = "strata.fsync.before.ack";
/// Strata's bound on a TLS handshake.
pub const SSL_HANDSHAKE_TIMEOUT_MS: &str = "strata.ssl.handshake.timeout.ms";
/// Strata's polling interval for changed certificate files.
pub const SSL_RELOAD_INTERVAL_MS: &str = "strata.ssl.reload.interval.ms";
/// Strata's limit of failed SASL authentications per user and per host within a window.
pub const SASL_MAX_FAILED_ATTEMPTS: &str = "strata.sasl.max.failed.attempts";
/// The window of [`SASL_MAX_FAILED_ATTEMPTS`].
pub const SASL_FAILED_ATTEMPTS_WINDOW_MS: &str = "strata.sasl.failed.attempts.window.ms";
/// The prefix of listener-scoped keys: `listener.name.<lowercase name>.ssl.keystore.location`.
pub const LISTENER_PREFIX: &str = "listener.name.";

/// Broker configs Strata knows, with Kafka's defaults.
pub static BROKER_CONFIGS: &[ConfigDef] = &[
    def("listeners", T::List, Some("PLAINTEXT://localhost:9092"), "Comma-separated listener URIs NAME://host:port. A host of 'localhost' binds both loopback addresses."),
    def("advertised.listeners", T::List, None, "Listener addresses given to clients in metadata; defaults to 'listeners'."),
    def("listener.security.protocol.map", T::String, Some(DEFAULT_PROTOCOL_MAP), "Security protocol of each listener name (NAME:PROTOCOL,...): PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."),
    def("log.dirs", T::String, None, "Data directory (one). Defaults to log.dir."),
    def("log.dir", T::String, Some("./strata-data"), "Data directory used when log.dirs is not set."),
    num("node.id", T::Int, "1", 0, "This broker's node id."),
    num("broker.id", T::Int, "-1", -1, "Older name of node.id; when set, it must equal node.id."),
    one_of(def("process.roles", T::List, Some("broker,controller"), "Roles of this node: broker, controller, or both (KRaft combined mode; a single node is both)."), &["broker", "controller"]),
    dynamic(num("num.partitions", T::Int, "1", 1, "Default number of partitions of new topics.")),
    num("default.replication.factor", T::Short, "1", 1, "Default replication factor of new topics."),
    def("auto.create.topics.enable", T::Boolean, Some("true"), "Create a topic when a client asks for its metadata."),
    dynamic(num("log.segment.bytes", T::Int, "1073741824", 14, "Maximum size of one log segment.")),
    dynamic(num("log.roll.ms", T::Long, "604800000", 1, "Roll a segment after this time (overrides log.roll.hours).")),
    num("log.roll.hours", T::Int, "168", 1, "Roll a segment after this many hours."),
    dynamic(num("log.roll.jitter.ms", T::Long, "0", 0, "Random jitter subtracted from the roll time.")),
    dynamic(num("message.max.bytes", T::Int, "1048588", 0, "Largest record batch the broker accepts.")),
    num("socket.request.max.bytes", T::Int, "104857600", 1, "Largest request frame the broker reads."),
    num("socket.send.buffer.bytes", T::Int, "102400", -1, "SO_SNDBUF of client connections; -1 is the OS default. Applied only when set (unset keeps the OS's automatic sizing)."),
    num("socket.receive.buffer.bytes", T::Int, "102400", -1, "SO_RCVBUF of client connections; -1 is the OS default. Applied only when set (unset keeps the OS's automatic sizing)."),
    num("max.connections", T::Int, "2147483647", 0, "Most client connections the broker holds; more are closed at once."),
    num("max.connections.per.ip", T::Int, "2147483647", 0, "Most connections from one address; more are closed at once."),
    def("max.connections.per.ip.overrides", T::String, Some(""), "Per-address limits overriding max.connections.per.ip: ip:count,..."),
    num("connections.max.idle.ms", T::Long, "600000", 1, "Close a connection that sent nothing and is owed nothing for this long."),
    num("quota.window.num", T::Int, "11", 1, "Samples client quota rates are measured over."),
    num("quota.window.size.seconds", T::Int, "1", 1, "Length of one client quota sample, in seconds."),
    dynamic(num("log.flush.interval.messages", T::Long, LONG_MAX, 1, "Fsync a partition after this many messages.")),
    dynamic(def("log.flush.interval.ms", T::Long, None, "Fsync a partition after this long (ms).")),
    num("log.flush.scheduler.interval.ms", T::Long, LONG_MAX, 0, "How often the flusher checks log.flush.interval.ms."),
    num("log.flush.offset.checkpoint.interval.ms", T::Int, "60000", 0, "How often the recovery-point and high-watermark checkpoints are written."),
    def(FSYNC_BEFORE_ACK, T::Boolean, Some("true"), "Strata: acknowledge acks=all produce requests only after the data is fsynced (group commit). false gives Kafka's page-cache behaviour."),
    num("strata.fsync.parallelism", T::Int, "16", 1, "Strata: fsyncs of different partitions the flusher runs at once (1: one after another)."),
    dynamic(num("log.retention.ms", T::Long, "604800000", -1, "Delete data older than this (overrides minutes and hours).")),
    num("log.retention.minutes", T::Int, "10080", -1, "Retention in minutes (overrides hours)."),
    num("log.retention.hours", T::Int, "168", -1, "Retention in hours."),
    dynamic(num("log.retention.bytes", T::Long, "-1", -1, "Largest partition size before old segments are deleted.")),
    num("log.retention.check.interval.ms", T::Long, "300000", 1, "How often retention is enforced."),
    dynamic(one_of(def("log.cleanup.policy", T::List, Some("delete"), "Default cleanup policy of topics."), &["delete", "compact"])),
    dynamic(num("log.index.interval.bytes", T::Int, "4096", 0, "Bytes between sparse index entries.")),
    dynamic(num("log.index.size.max.bytes", T::Int, "10485760", 4, "Largest offset index.")),
    dynamic(num("log.segment.delete.delay.ms", T::Long, "60000", 0, "Delay before a deleted segment's file is removed.")),
    def("log.cleaner.enable", T::Boolean, Some("true"), "Run the log cleaner (compaction)."),
    dynamic(num("log.cleaner.backoff.ms", T::Long, "15000", 0, "Pause between log cleaner passes.")),
    dynamic(num("log.cleaner.threads", T::Int, "1", 0, "Log cleaner workers, each cleaning a different partition (read at start-up).")),
    dynamic(num("log.cleaner.dedupe.buffer.size", T::Long, "134217728", 0, "Memory for the cleaner's key map.")),
    dynamic(def("log.cleaner.io.max.bytes.per.second", T::Double, Some("1.7976931348623157E308"), "I/O limit of the cleaner.")),
    dynamic(num("log.cleaner.delete.retention.ms", T::Long, "86400000", 0, "How long tombstones are kept.")),
    dynamic(num("log.cleaner.min.compaction.lag.ms", T::Long, "0", 0, "Minimum age of a record before compaction.")),
    dynamic(num("log.cleaner.max.compaction.lag.ms", T::Long, LONG_MAX, 1, "Maximum time a record stays uncompacted.")),
    dynamic(def("log.cleaner.min.cleanable.ratio", T::Double, Some("0.5"), "Dirty ratio that makes a log eligible for cleaning.")),
    dynamic(def("log.preallocate", T::Boolean, Some("false"), "Preallocate segment files.")),
    dynamic(one_of(def("log.message.timestamp.type", T::String, Some("CreateTime"), "Default timestamp type of topics."), TIMESTAMP_TYPES)),
    dynamic(num("log.message.timestamp.before.max.ms", T::Long, LONG_MAX, 0, "Largest allowed age of a record's timestamp.")),
    dynamic(num("log.message.timestamp.after.max.ms", T::Long, "3600000", 0, "Largest allowed time a record's timestamp may be ahead.")),
    dynamic(one_of(def("compression.type", T::String, Some("producer"), "Default compression of topics."), COMPRESSION_TYPES)),
    dynamic(num("compression.gzip.level", T::Int, "-1", -1, "gzip level used when the broker compresses.")),
    dynamic(num("compression.lz4.level", T::Int, "9", 1, "lz4 level used when the broker compresses.")),
    dynamic(num("compression.zstd.level", T::Int, "3", -131072, "zstd level used when the broker compresses.")),
    dynamic(num("min.insync.replicas", T::Int, "1", 1, "Replicas that must acknowledge an acks=all write.")),
    dynamic(def("unclean.leader.election.enable", T::Boolean, Some("false"), "Allow out-of-sync replicas to become leader.")),
    num("offsets.topic.num.partitions", T::Int, "50", 1, "Partitions of __consumer_offsets."),
    num("offsets.topic.replication.factor", T::Short, "3", 1, "Replication factor of __consumer_offsets. Unset: 3, capped at the number of brokers (one on a single node)."),
    num("offsets.retention.minutes", T::Int, "10080", 1, "How long offsets of empty groups are kept."),
    num("offset.metadata.max.bytes", T::Int, "4096", 0, "Longest metadata string of a committed offset."),
    num("group.initial.rebalance.delay.ms", T::Int, "3000", 0, "Delay of the first rebalance of a new group."),
    num("group.min.session.timeout.ms", T::Int, "6000", 0, "Smallest session timeout a member may ask for."),
    num("group.max.session.timeout.ms", T::Int, "1800000", 0, "Largest session timeout a member may ask for."),
    num("group.consumer.session.timeout.ms", T::Int, "45000", 1, "Session timeout of consumer-protocol (KIP-848) members."),
    num("group.consumer.heartbeat.interval.ms", T::Int, "5000", 1, "Heartbeat interval given to consumer-protocol (KIP-848) members."),
    num("group.consumer.max.size", T::Int, "2147483647", 1, "Most members of a consumer-protocol group."),
    def("console.enable", T::Boolean, Some("true"), "Strata: serve the HTTP console, its REST API and /metrics on console.listener."),
    def("console.listener", T::String, Some("127.0.0.1:8080"), "Strata: host:port of the HTTP console (port 0 picks a free one; localhost binds both loopbacks). An explicitly set address that cannot be bound stops start-up; the default one only warns."),
    def("console.allowed.hosts", T::List, Some(""), "Strata: Host header names the console accepts besides IP literals, localhost and the console.listener host (protection against DNS rebinding)."),
    num("console.max.connections", T::Int, "64", 1, "Strata: open HTTP connections the console accepts at once."),
    num("console.history.interval.ms", T::Long, "10000", 100, "Strata: how often the console samples produce rates and group lag for its charts."),
    def("console.auth.required", T::Boolean, Some("false"), "Strata: require a login (a SASL user's password) for the console, its API and /metrics even without SASL listeners; with a SASL listener it is always required."),
    num("console.request.max.bytes", T::Int, "2097152", 1, "Strata: largest request body the console accepts (larger ones get 413)."),
    num("strata.lag.window.commits", T::Int, "10", 1, "Strata: commits kept per group partition for lag evaluation (Burrow's intervals)."),
    num("strata.lag.min.commit.distance.ms", T::Long, "1000", 0, "Strata: a commit closer than this to the newest kept one replaces it in the lag window."),
    num("strata.lag.stop.floor.ms", T::Long, "30000", 0, "Strata: least window span the lag evaluation's STOP rule compares the last commit's age with."),
    num("transaction.state.log.num.partitions", T::Int, "50", 1, "Partitions of __transaction_state."),
    num("transaction.state.log.replication.factor", T::Short, "3", 1, "Replication factor of __transaction_state. Unset: 3, capped at the number of brokers (one on a single node)."),
    num("transaction.state.log.min.isr", T::Int, "2", 1, "min.insync.replicas of __transaction_state."),
    num("transaction.max.timeout.ms", T::Int, "900000", 1, "Largest transaction timeout a producer may ask for."),
    num("transaction.abort.timed.out.transaction.cleanup.interval.ms", T::Int, "10000", 1, "How often open transactions are checked against their timeout."),
    num("transaction.remove.expired.transaction.cleanup.interval.ms", T::Int, "3600000", 1, "How often idle transactional ids are expired."),
    num("transactional.id.expiration.ms", T::Int, "604800000", 1, "Transactional ids idle this long (no transaction in progress) are forgotten."),
    num("producer.id.expiration.ms", T::Int, "86400000", 1, "Producer state idle this long is dropped from a partition."),
    num("request.timeout.ms", T::Int, "30000", 0, "Timeout of internal requests."),
    num("queued.max.requests", T::Int, "500", 1, "Requests read and not yet handled, broker-wide, before connections stop reading (also caps each connection's pending responses)."),
    num("num.network.threads", T::Int, "3", 1, "Accepted for compatibility; Strata uses its async runtime."),
    num("num.io.threads", T::Int, "8", 1, "Accepted for compatibility; Strata uses its async runtime."),
    num("num.recovery.threads.per.data.dir", T::Int, "2", 1, "Accepted for compatibility; logs are recovered on one thread."),
    def("controller.listener.names", T::List, None, "Listeners of the controller quorum: bound, but they serve no client requests (the quorum is local to the single node)."),
    def("controller.quorum.voters", T::List, None, "The controller quorum as id@host:port,...; with a single node it may name only this node."),
    def("controller.quorum.bootstrap.servers", T::List, None, "Controller addresses (KIP-853); with a single node, this node's controller listener."),
    num("broker.session.timeout.ms", T::Int, "9000", 1, "How long the active controller waits for a broker's heartbeat before fencing it: its partitions' leaderships move to another in-sync replica, or the partitions go offline."),
    num("broker.heartbeat.interval.ms", T::Int, "2000", 1, "How often a broker sends its heartbeat to the active controller."),
    def("auto.leader.rebalance.enable", T::Boolean, Some("true"), "The active controller moves leaderships back to each partition's preferred replica (the first) when a broker's share of its preferred partitions led elsewhere passes leader.imbalance.per.broker.percentage."),
    num("leader.imbalance.check.interval.seconds", T::Long, "300", 1, "How often the active controller checks the leaders' balance."),
    num("leader.imbalance.per.broker.percentage", T::Int, "10", 0, "The share (%) of a broker's preferred partitions led elsewhere above which their leaderships are moved back."),
    def("controlled.shutdown.enable", T::Boolean, Some("true"), "On SIGTERM, move this broker's leaderships to other in-sync replicas (it is fenced at once) before it stops."),
    num("controlled.shutdown.timeout.ms", T::Long, "30000", 0, "How long a controlled shutdown waits for the controller before the broker stops anyway."),
    num("replica.lag.time.max.ms", T::Long, "30000", 0, "How long a follower may go without catching up with its leader's log before the leader drops it from the ISR."),
    num("replica.fetch.max.bytes", T::Int, "1048576", 0, "Bytes a follower asks for per partition in one fetch from its leader (at least one batch is always returned)."),
    num("replica.fetch.response.max.bytes", T::Int, "10485760", 0, "Bytes a follower accepts in one fetch response from its leader."),
    num("replica.fetch.wait.max.ms", T::Int, "500", 0, "How long a follower's fetch waits at the leader for new records."),
    num("replica.fetch.min.bytes", T::Int, "1", 1, "Bytes a follower's fetch waits for at the leader before it is answered."),
    num("replica.fetch.backoff.ms", T::Int, "1000", 0, "How long a follower waits after its leader could not be reached or refused a partition."),
    num("controller.quorum.election.timeout.ms", T::Int, "1000", 1, "The shortest election timeout of the metadata quorum (Raft); the longest is twice it and the leader's heartbeat a fifth of it. A single voter elects itself at once at start-up."),
    def("inter.broker.listener.name", T::String, None, "Listener brokers use among themselves (replication, transaction markers), secured as that listener is; must be a client listener (single node: not used)."),
    def("security.inter.broker.protocol", T::String, Some("PLAINTEXT"), "Without inter.broker.listener.name, brokers use the listener of this name among themselves (single node: not used)."),
    num("share.coordinator.state.topic.replication.factor", T::Short, "3", 1, "Accepted for compatibility; share groups are not implemented."),
    num("share.coordinator.state.topic.min.isr", T::Short, "2", 1, "Accepted for compatibility; share groups are not implemented."),
    def("broker.rack", T::String, None, "Rack of this broker: replicas are spread over racks, and with replica.selector.class consumers in this rack may fetch from it."),
    one_of(def("replica.selector.class", T::String, None, "KIP-392: with org.apache.kafka.common.replica.RackAwareReplicaSelector, a leader tells a consumer that sends its client.rack to fetch from an in-sync replica in that rack."), &[RACK_AWARE_SELECTOR]),
    // TLS (SSL listeners). Each can also be set for one listener as
    // listener.name.<lowercase listener name>.<key>, which wins over the plain key.
    def("ssl.keystore.type", T::String, Some("JKS"), "Format of the keystore: PEM (the only one Strata reads; JKS and PKCS12 must be converted, see docs/security.md)."),
    def("ssl.keystore.location", T::String, None, "PEM file holding the listener's private key (unencrypted) and its certificate chain, leaf first. Re-read when it changes."),
    def("ssl.keystore.password", T::Password, None, "Not used with PEM keystores (Kafka refuses it there too)."),
    def("ssl.keystore.key", T::Password, None, "The private key in PEM, inline (instead of ssl.keystore.location)."),
    def("ssl.keystore.certificate.chain", T::Password, None, "The certificate chain in PEM, inline (instead of ssl.keystore.location)."),
    def("ssl.key.password", T::Password, None, "Password of an encrypted PEM private key: not supported, decrypt the key (docs/security.md)."),
    def("ssl.truststore.type", T::String, Some("JKS"), "Format of the truststore: PEM (the only one Strata reads)."),
    def("ssl.truststore.location", T::String, None, "PEM file of the CA certificates that client certificates must chain to (mutual TLS). Re-read when it changes."),
    def("ssl.truststore.password", T::Password, None, "Not used with PEM truststores (Kafka refuses it there too)."),
    def("ssl.truststore.certificates", T::Password, None, "The trusted CA certificates in PEM, inline (instead of ssl.truststore.location)."),
    one_of(def("ssl.client.auth", T::String, Some("none"), "Client certificates: required (mutual TLS), requested (verified when presented) or none."), &["required", "requested", "none"]),
    def("ssl.principal.mapping.rules", T::String, Some("DEFAULT"), "Rules mapping a client certificate's subject (RFC 2253) to the user name: RULE:pattern/replacement/[LU],...,DEFAULT."),
    def("ssl.enabled.protocols", T::List, Some("TLSv1.2,TLSv1.3"), "TLS versions served: TLSv1.2 and/or TLSv1.3 (older versions are not offered)."),
    def("ssl.cipher.suites", T::List, Some(""), "Cipher suites offered (IANA names); empty offers every suite of the TLS library."),
    def("ssl.protocol", T::String, Some("TLSv1.3"), "Accepted for compatibility; ssl.enabled.protocols chooses the versions."),
    def("ssl.endpoint.identification.algorithm", T::String, Some("https"), "Host name verification of the broker's TLS connections to other brokers; empty turns it off (the certificate must still chain to the truststore)."),
    def("ssl.keymanager.algorithm", T::String, Some("SunX509"), "Accepted for compatibility (a Java setting)."),
    def("ssl.trustmanager.algorithm", T::String, Some("PKIX"), "Accepted for compatibility (a Java setting)."),
    def("ssl.secure.random.implementation", T::String, None, "Accepted for compatibility (a Java setting)."),
    num(SSL_HANDSHAKE_TIMEOUT_MS, T::Long, "10000", 1, "Strata: a TLS handshake not finished in this time closes the connection."),
    num(SSL_RELOAD_INTERVAL_MS, T::Long, "5000", 0, "Strata: how often keystore and truststore files are checked for changes and re-read (0: only on SIGHUP)."),
    // SASL (SASL_PLAINTEXT and SASL_SSL listeners). sasl.enabled.mechanisms and
    // sasl.jaas.config can be set per listener: listener.name.<l>.sasl.enabled.mechanisms and
    // listener.name.<l>.<mechanism in lower case>.sasl.jaas.config.
    def("sasl.enabled.mechanisms", T::List, Some("GSSAPI"), "SASL mechanisms offered on SASL listeners: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER (GSSAPI is accepted in the list but not served)."),
    def("sasl.mechanism.inter.broker.protocol", T::String, Some("GSSAPI"), "SASL mechanism brokers log in to each other with (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512), as the username/password of the inter-broker listener's login module; a single node makes no inter-broker connections."),
    def("sasl.jaas.config", T::Password, None, "JAAS login module for SASL: PlainLoginModule with user_<name>=\"password\" options (PLAIN users), or ScramLoginModule (the inter-broker identity)."),
    def("sasl.server.callback.handler.class", T::String, None, "OAUTHBEARER token validation (usually scoped: listener.name.<l>.oauthbearer.sasl.server.callback.handler.class): unset, unsigned tokens (Kafka's development default); org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler, tokens signed with a key of sasl.oauthbearer.jwks.endpoint.url."),
    def("sasl.oauthbearer.jwks.endpoint.url", T::String, None, "The JSON Web Key Set that signed OAUTHBEARER tokens are checked against: a file: URL (file:///etc/strata/jwks.json). Re-read on refresh and when a token names a key id it lacks."),
    num("sasl.oauthbearer.jwks.endpoint.refresh.ms", T::Long, "3600000", 0, "How often the JWKS file is re-read."),
    num("sasl.oauthbearer.jwks.endpoint.retry.backoff.ms", T::Long, "100", 0, "The least time between two re-reads of the JWKS file for a key id it lacks."),
    num("sasl.oauthbearer.jwks.endpoint.retry.backoff.max.ms", T::Long, "10000", 0, "Accepted for compatibility (re-reads of a file need no growing backoff)."),
    def("sasl.oauthbearer.expected.audience", T::List, None, "Audiences (aud) a signed OAUTHBEARER token must name one of; unset, not checked."),
    def("sasl.oauthbearer.expected.issuer", T::String, None, "The issuer (iss) a signed OAUTHBEARER token must name; unset, not checked."),
    def("sasl.oauthbearer.sub.claim.name", T::String, Some("sub"), "The claim holding the principal's name in signed OAUTHBEARER tokens."),
    def("sasl.oauthbearer.scope.claim.name", T::String, Some("scope"), "The claim holding the scope in signed OAUTHBEARER tokens."),
    num("sasl.oauthbearer.clock.skew.seconds", T::Int, "30", 0, "Clock difference tolerated when checking exp and iat of signed OAUTHBEARER tokens."),
    def("sasl.oauthbearer.token.endpoint.url", T::String, None, "Accepted for compatibility (the token endpoint of a broker's own logins; a single node makes none)."),
    def("sasl.login.callback.handler.class", T::String, None, "Accepted for compatibility (a Java class for a broker's own logins; a single node makes none)."),
    num("connections.max.reauth.ms", T::Long, "0", 0, "Lifetime of a SASL session (KIP-368): clients re-authenticate before it ends; a connection whose session ended is closed on its next request. 0: sessions do not expire."),
    num("connection.failed.authentication.delay.ms", T::Int, "100", 0, "Delay before the answer to a failed SASL authentication (and the close that follows)."),
    num(SASL_MAX_FAILED_ATTEMPTS, T::Int, "0", 0, "Strata: failed SASL authentications allowed per user and per client address within strata.sasl.failed.attempts.window.ms; more are refused without checking the password until the window ends. 0 (default): no limit."),
    num(SASL_FAILED_ATTEMPTS_WINDOW_MS, T::Long, "60000", 1, "Strata: the window of strata.sasl.max.failed.attempts."),
    def("cluster.id", T::String, None, "Cluster id to format a new data directory with."),
    // Authorization (docs/security.md).
    def("authorizer.class.name", T::String, Some(""), "org.apache.kafka.metadata.authorizer.StandardAuthorizer (or StandardAuthorizer) checks every request against the ACLs; empty: no authorizer, everything is allowed."),
    def("super.users", T::String, None, "Principals allowed everything whatever the ACLs say, separated by semicolons: User:admin;User:ops."),
    def("allow.everyone.if.no.acl.found", T::Boolean, Some("false"), "With the authorizer on: allow an action on a resource no ACL matches (false: deny it)."),
];

/// A topic config and where its default comes from on the broker.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    pub def: ConfigDef,
    /// Broker keys that supply the default, most specific first, each with the factor that
    /// converts its unit to the topic config's unit (hours → ms is 3 600 000).
    pub synonyms: &'static [(&'static str, i64)],
}

const fn topic(def: ConfigDef, synonyms: &'static [(&'static str, i64)]) -> TopicConfigDef {
    TopicConfigDef { def, synonyms }
}

/// Topic configs Strata knows, with Kafka's defaults and their broker synonyms.
pub static TOPIC_CONFIGS: &[TopicConfigDef] = &[
    topic(
        one_of(
            def(
                "cleanup.policy",
                T::List,
                Some("delete"),
                "delete or compact or both.",
            ),
            &["delete", "compact"],
        ),
        &[("log.cleanup.policy", 1)],
    ),
    topic(
        one_of(
            def(
                "compression.type",
                T::String,
                Some("producer"),
                "Final compression of the topic's batches.",
            ),
            COMPRESSION_TYPES,
        ),
        &[("compression.type", 1)],
    ),
    topic(
        num("compression.gzip.level", T::Int, "-1", -1, "gzip level."),
        &[("compression.gzip.level", 1)],
    ),
    topic(
        num("compression.lz4.level", T::Int, "9", 1, "lz4 level."),
        &[("compression.lz4.level", 1)],
    ),
    topic(
        num(
            "compression.zstd.level",
            T::Int,
            "3",
            -131072,
            "zstd level.",
        ),
        &[("compression.zstd.level", 1)],
    ),
    topic(
        num(
            "delete.retention.ms",
            T::Long,
            "86400000",
            0,
            "How long tombstones are kept.",
        ),
        &[("log.cleaner.delete.retention.ms", 1)],
    ),
    topic(
        num(
            "file.delete.delay.ms",
            T::Long,
            "60000",
            0,
            "Delay before a deleted file is removed.",
        ),
        &[("log.segment.delete.delay.ms", 1)],
    ),
    topic(
        num(
            "flush.messages",
            T::Long,
            LONG_MAX,
            1,
            "Fsync after this many messages.",
        ),
        &[("log.flush.interval.messages", 1)],
    ),
    topic(
        num("flush.ms", T::Long, LONG_MAX, 0, "Fsync after this long."),
        &[("log.flush.interval.ms", 1)],
    ),
    topic(
        def(
            "follower.replication.throttled.replicas",
            T::List,
            Some(""),
            "Throttled follower replicas.",
        ),
        &[],
    ),
    topic(
        num(
            "index.interval.bytes",
            T::Int,
            "4096",
            0,
            "Bytes between sparse index entries.",
        ),
        &[("log.index.interval.bytes", 1)],
    ),
    topic(
        def(
            "leader.replication.throttled.replicas",
            T::List,
            Some(""),
            "Throttled leader replicas.",
        ),
        &[],
    ),
    topic(
        num(
            "max.compaction.lag.ms",
            T::Long,
            LONG_MAX,
            1,
            "Maximum time a record stays uncompacted.",
        ),
        &[("log.cleaner.max.compaction.lag.ms", 1)],
    ),
    topic(
        num(
            "max.message.bytes",
            T::Int,
            "1048588",
            0,
            "Largest record batch accepted.",
        ),
        &[("message.max.bytes", 1)],
    ),
    topic(
        num(
            "message.timestamp.after.max.ms",
            T::Long,
            "3600000",
            0,
            "Largest time a timestamp may be ahead of the broker.",
        ),
        &[("log.message.timestamp.after.max.ms", 1)],
    ),
    topic(
        num(
            "message.timestamp.before.max.ms",
            T::Long,
            LONG_MAX,
            0,
            "Largest age of a timestamp.",
        ),
        &[("log.message.timestamp.before.max.ms", 1)],
    ),
    topic(
        one_of(
            def(
                "message.timestamp.type",
                T::String,
                Some("CreateTime"),
                "CreateTime or LogAppendTime.",
            ),
            TIMESTAMP_TYPES,
        ),
        &[("log.message.timestamp.type", 1)],
    ),
    topic(
        def(
            "min.cleanable.dirty.ratio",
            T::Double,
            Some("0.5"),
            "Dirty ratio that makes the log eligible for cleaning.",
        ),
        &[("log.cleaner.min.cleanable.ratio", 1)],
    ),
    topic(
        num(
            "min.compaction.lag.ms",
            T::Long,
            "0",
            0,
            "Minimum age of a record before compaction.",
        ),
        &[("log.cleaner.min.compaction.lag.ms", 1)],
    ),
    topic(
        num(
            "min.insync.replicas",
            T::Int,
            "1",
            1,
            "Replicas that must acknowledge an acks=all write.",
        ),
        &[("min.insync.replicas", 1)],
    ),
    topic(
        def(
            "preallocate",
            T::Boolean,
            Some("false"),
            "Preallocate segment files.",
        ),
        &[("log.preallocate", 1)],
    ),
    topic(
        num(
            "retention.bytes",
            T::Long,
            "-1",
            -1,
            "Largest partition size before old segments are deleted.",
        ),
        &[("log.retention.bytes", 1)],
    ),
    topic(
        num(
            "retention.ms",
            T::Long,
            "604800000",
            -1,
            "Delete data older than this.",
        ),
        &[
            ("log.retention.ms", 1),
            ("log.retention.minutes", 60_000),
            ("log.retention.hours", 3_600_000),
        ],
    ),
    topic(
        num(
            "segment.bytes",
            T::Int,
            "1073741824",
            14,
            "Size of one log segment.",
        ),
        &[("log.segment.bytes", 1)],
    ),
    topic(
        num(
            "segment.index.bytes",
            T::Int,
            "10485760",
            4,
            "Largest offset index.",
        ),
        &[("log.index.size.max.bytes", 1)],
    ),
    topic(
        num(
            "segment.jitter.ms",
            T::Long,
            "0",
            0,
            "Random jitter subtracted from segment.ms.",
        ),
        &[("log.roll.jitter.ms", 1)],
    ),
    topic(
        num(
            "segment.ms",
            T::Long,
            "604800000",
            1,
            "Roll a segment after this long.",
        ),
        &[("log.roll.ms", 1), ("log.roll.hours", 3_600_000)],
    ),
    topic(
        def(
            "unclean.leader.election.enable",
            T::Boolean,
            Some("false"),
            "Allow out-of-sync replicas to become leader.",
        ),
        &[("unclean.leader.election.enable", 1)],
    ),
];

pub fn broker_config_def(name: &str) -> Option<&'static ConfigDef> {
    BROKER_CONFIGS.iter().find(|d| d.name == name)
}

/// A listener-scoped key, `listener.name.<listener>.<key>`: the listener name (lowercase, as
/// Kafka writes it) and the definition of `<key>`. The TLS keys (`ssl.*`), the SASL keys
/// (`sasl.*`) and the per-mechanism JAAS line (`<mechanism>.sasl.jaas.config`) can be scoped.
pub fn listener_scoped_def(name: &str) -> Option<(&str, &'static ConfigDef)> {
    let rest = name.strip_prefix(LISTENER_PREFIX)?;
    let (listener, key) = rest.split_once('.')?;
    if listener.is_empty() {
        return None;
    }
    if key.starts_with("ssl.") || key.starts_with("sasl.") {
        return Some((listener, broker_config_def(key)?));
    }
    // <mechanism>.sasl.jaas.config and the OAUTHBEARER keys
    // (oauthbearer.sasl.server.callback.handler.class, oauthbearer.sasl.oauthbearer.*).
    let (mechanism, key) = key.split_once('.')?;
    (!mechanism.is_empty() && key.starts_with("sasl."))
        .then(|| broker_config_def(key).map(|d| (listener, d)))
        .flatten()
}

pub fn topic_config_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.def.name == name)
}

/// A value that does not fit its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?} for configuration {key}: {reason}")]
pub struct InvalidConfig {
    pub key: String,
    pub value: String,
    pub reason: String,
}

/// Checks `value` against `def`'s type, range and allowed values.
pub fn validate_value(def: &ConfigDef, value: &str) -> Result<(), InvalidConfig> {
    let bad = |reason: String| InvalidConfig {
        key: def.name.to_string(),
        value: value.to_string(),
        reason,
    };
    let trimmed = value.trim();
    match def.kind {
        T::Boolean => {
            if !trimmed.eq_ignore_ascii_case("true") && !trimmed.eq_ignore_ascii_case("false") {
                return Err(bad("expected true or false".into()));
            }
        }
        T::Int | T::Short | T::Long => {
            let n: i64 = trimmed
                .parse()
                .map_err(|_| bad("expected an integer".into()))?;
            let (lo, hi) = match def.kind {
                T::Int => (i64::from(i32::MIN), i64::from(i32::MAX)),
                T::Short => (i64::from(i16::MIN), i64::from(i16::MAX)),
                _ => (i64::MIN, i64::MAX),
            };
            if n < lo || n > hi {
                return Err(bad(format!("out of range for {:?}", def.kind)));
            }
            if let Some(min) = def.min {
                if n < min {
                    return Err(bad(format!("must be at least {min}")));
                }
            }
        }
        T::Double => {
            let x: f64 = trimmed
                .parse()
                .map_err(|_| bad("expected a number".into()))?;
            if !x.is_finite() {
                return Err(bad("expected a finite number".into()));
            }
        }
        T::List => {
            if !def.allowed.is_empty() {
                for item in trimmed.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if !def.allowed.contains(&item) {
                        return Err(bad(format!("expected a list of {:?}", def.allowed)));
                    }
                }
            }
        }
        T::String | T::Class | T::Password => {
            if !def.allowed.is_empty() && !def.allowed.contains(&trimmed) {
                return Err(bad(format!("expected one of {:?}", def.allowed)));
            }
        }
    }
    Ok(())
}

/// Where a listener's connections come from and how they are secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub security_protocol: String,
    pub host: String,
    pub port: u16,
}

fn parse_listeners(key: &str, value: &str) -> Result<Vec<Listener>, InvalidConfig> {
    let bad = |reason: &str| InvalidConfig {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let mut listeners = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, addr) = item
            .split_once("://")
            .ok_or_else(|| bad("expected NAME://host:port"))?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| bad("expected NAME://host:port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().map_err(|_| bad("port must be 0-65535"))?;
        if name.is_empty() {
            return Err(bad("listener name is empty"));
        }
        if listeners.iter().any(|l: &Listener| l.name == name) {
            return Err(bad(&format!("listener name {name} appears twice")));
        }
        listeners.push(Listener {
            name: name.to_string(),
            // Filled in from listener.security.protocol.map by the caller.
            security_protocol: String::new(),
            host: host.to_string(),
            port,
        });
    }
    if listeners.is_empty() {
        return Err(bad("at least one listener is needed"));
    }
    Ok(listeners)
}

/// Keys Strata accepts (so a Kafka `server.properties` starts it unchanged) that have no
/// effect yet. When any is set, start-up names them in one WARN line.
pub const NOT_IN_EFFECT: &[&str] = &[
    "num.network.threads",
    "num.io.threads",
    "num.recovery.threads.per.data.dir",
    "request.timeout.ms",
    "share.coordinator.state.topic.replication.factor",
    "share.coordinator.state.topic.min.isr",
    "log.roll.jitter.ms",
    "log.index.size.max.bytes",
    "log.segment.delete.delay.ms",
    "log.preallocate",
    "log.flush.scheduler.interval.ms",
    "ssl.protocol",
    "ssl.keymanager.algorithm",
    "ssl.trustmanager.algorithm",
    "ssl.secure.random.implementation",
    "sasl.oauthbearer.token.endpoint.url",
    "sasl.login.callback.handler.class",
];

/// Topic configs accepted (with Kafka's defaults, listed by DescribeConfigs) that have no
/// effect yet; a topic created or altered with one of them is named in a WARN line, and so
/// are existing topics with them at start-up.
pub const TOPIC_NOT_IN_EFFECT: &[&str] = &[
    "file.delete.delay.ms",
    "follower.replication.throttled.replicas",
    "leader.replication.throttled.replicas",
    "preallocate",
    "segment.index.bytes",
    "segment.jitter.ms",
];

/// The keys of `configs` that are accepted but not in effect ([`TOPIC_NOT_IN_EFFECT`]).
pub fn topic_configs_not_in_effect<'a>(
    configs: impl IntoIterator<Item = &'a String>,
) -> Vec<&'a str> {
    configs
        .into_iter()
        .map(String::as_str)
        .filter(|k| TOPIC_NOT_IN_EFFECT.contains(k))
        .collect()
}

/// The key and value that set `key` for `listener`: the listener-scoped key
/// (`listener.name.<lowercase listener>.<key>`) wins over the plain one; unset, Kafka's default
/// (under the plain key's name).
pub fn listener_setting(
    set: &BTreeMap<String, String>,
    listener: &str,
    key: &str,
) -> Option<(String, String)> {
    let scoped = format!("{LISTENER_PREFIX}{}.{key}", listener.to_ascii_lowercase());
    if let Some(v) = set.get(&scoped) {
        return Some((scoped, v.clone()));
    }
    set.get(key)
        .cloned()
        .or_else(|| broker_config_def(key).and_then(|d| d.default.map(str::to_string)))
        .map(|v| (key.to_string(), v))
}

/// Whether a properties line continues on the next: it ends in an odd number of backslashes.
fn ends_in_continuation(line: &str) -> bool {
    line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// A logical properties line's key and (still escaped) value: the key ends at the first
/// unescaped `=`, `:` or blank; blanks and one `=` or `:` separate it from the value.
fn split_property(line: &str) -> (&str, &str) {
    let mut escaped = false;
    let mut key_end = line.len();
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '=' || c == ':' || c.is_whitespace() {
            key_end = i;
            break;
        }
    }
    let rest = line[key_end..].trim_start();
    let rest = rest.strip_prefix(['=', ':']).map_or(rest, str::trim_start);
    (&line[..key_end], rest)
}

/// Java's properties escapes: `\t` `\n` `\r` `\f`, `\uXXXX`, and `\c` for any other `c`.
fn unescape_property(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 4)
                    .ok_or_else(|| format!("malformed \\uXXXX escape \\u{hex}"))?;
                out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

/// Parses `listener.security.protocol.map` (`NAME:PROTOCOL,...`).
fn parse_protocol_map(value: &str) -> Result<BTreeMap<String, String>, InvalidConfig> {
    let mut map = BTreeMap::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, protocol) = item.split_once(':').ok_or_else(|| InvalidConfig {
            key: "listener.security.protocol.map".into(),
            value: value.to_string(),
            reason: format!("expected NAME:PROTOCOL entries, got {item:?}"),
        })?;
        let protocol = protocol.trim().to_ascii_uppercase();
        if !["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"].contains(&protocol.as_str()) {
            return Err(InvalidConfig {
                key: "listener.security.protocol.map".into(),
                value: value.to_string(),
                reason: format!(
                    "unknown security protocol {protocol} (expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)"
                ),
            });
        }
        map.insert(name.trim().to_string(), protocol);
    }
    Ok(map)
}

/// Gives each listener its security protocol from the map; refuses names the map lacks and
/// protocols not served yet.
fn assign_protocols(
    key: &str,
    listeners: &mut [Listener],
    map: &BTreeMap<String, String>,
) -> Result<(), InvalidConfig> {
    for l in listeners.iter_mut() {
        let protocol = map.get(&l.name).ok_or_else(|| InvalidConfig {
            key: key.into(),
            value: l.name.clone(),
            reason: format!(
                "listener {} has no security protocol: add {}:PLAINTEXT to listener.security.protocol.map",
                l.name, l.name
            ),
        })?;
        l.security_protocol = protocol.clone();
    }
    Ok(())
}

/// Checks what a single node can be: both broker and controller, and the only voter of its
/// controller quorum.
/// The roles `process.roles` gives this node (both when it is not set: a single node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

fn parse_roles(set: &BTreeMap<String, String>) -> Result<Roles, InvalidConfig> {
    let Some(value) = set.get("process.roles") else {
        return Ok(Roles {
            broker: true,
            controller: true,
        });
    };
    let mut roles = Roles {
        broker: false,
        controller: false,
    };
    for role in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match role {
            "broker" => roles.broker = true,
            "controller" => roles.controller = true,
            other => {
                return Err(InvalidConfig {
                    key: "process.roles".into(),
                    value: value.clone(),
                    reason: format!("{other:?} is not a role: broker, controller or both"),
                })
            }
        }
    }
    if !roles.broker && !roles.controller {
        return Err(InvalidConfig {
            key: "process.roles".into(),
            value: value.clone(),
            reason: "names no role: broker, controller or both".into(),
        });
    }
    Ok(roles)
}

/// Checks that the roles, the quorum and the listeners fit together
/// (`docs/design/cluster.md` §1).
fn check_roles(
    set: &BTreeMap<String, String>,
    roles: Roles,
    node_id: i32,
    listeners: &[Listener],
    controller_listener_names: &[String],
) -> Result<(), InvalidConfig> {
    let bad = |key: &str, value: &str, reason: String| InvalidConfig {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };
    if let Some(broker_id) = set.get("broker.id") {
        if broker_id
            .trim()
            .parse::<i32>()
            .ok()
            .is_some_and(|b| b >= 0 && b != node_id)
        {
            return Err(bad(
                "broker.id",
                broker_id,
                format!("must equal node.id ({node_id}) when both are set"),
            ));
        }
    }
    if let Some(voters) = set.get("controller.quorum.voters") {
        let mut ids = Vec::new();
        for voter in voters.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let id = voter
                .split_once('@')
                .and_then(|(id, addr)| addr.rsplit_once(':').and(id.trim().parse::<i32>().ok()))
                .ok_or_else(|| {
                    bad(
                        "controller.quorum.voters",
                        voters,
                        format!("expected id@host:port entries, got {voter:?}"),
                    )
                })?;
            if ids.contains(&id) {
                return Err(bad(
                    "controller.quorum.voters",
                    voters,
                    format!("names node {id} twice"),
                ));
            }
            ids.push(id);
        }
        if roles.controller && !ids.contains(&node_id) {
            return Err(bad(
                "controller.quorum.voters",
                voters,
                format!(
                    "does not name this node ({node_id}), whose process.roles include controller; add {node_id}@host:port, the address of this node's controller listener"
                ),
            ));
        }
        if !roles.controller && ids.contains(&node_id) {
            return Err(bad(
                "controller.quorum.voters",
                voters,
                format!(
                    "names this node ({node_id}), whose process.roles do not include controller; a broker-only node needs a node.id of its own"
                ),
            ));
        }
        if ids.len() > 1 && controller_listener_names.is_empty() {
            return Err(bad(
                "controller.listener.names",
                "",
                "a quorum of several voters needs the controller listener the others reach this node on (controller.listener.names and a listener of that name)".into(),
            ));
        }
    }
    if !roles.controller
        && !set.contains_key("controller.quorum.voters")
        && !set.contains_key("controller.quorum.bootstrap.servers")
    {
        return Err(bad(
            "controller.quorum.voters",
            "",
            "a broker-only node follows the controllers: set controller.quorum.voters (or controller.quorum.bootstrap.servers) to their controller listeners".into(),
        ));
    }
    for name in controller_listener_names {
        let listening = listeners.iter().any(|l| &l.name == name);
        if roles.controller && !listening {
            return Err(bad(
                "controller.listener.names",
                name,
                format!("{name} is not one of the listeners; a controller must listen on its controller listener"),
            ));
        }
        if !roles.controller && listening {
            return Err(bad(
                "listeners",
                &set.get("listeners").cloned().unwrap_or_default(),
                format!("{name} is a controller listener, and this node's process.roles do not include controller (it reaches the controllers on theirs)"),
            ));
        }
    }
    if !roles.broker {
        if let Some(l) = listeners
            .iter()
            .find(|l| !controller_listener_names.contains(&l.name))
        {
            return Err(bad(
                "listeners",
                &set.get("listeners").cloned().unwrap_or_default(),
                format!("{} is not a controller listener, and a controller-only node serves no clients (process.roles=controller)", l.name),
            ));
        }
        return Ok(());
    }
    if listeners
        .iter()
        .all(|l| controller_listener_names.contains(&l.name))
    {
        return Err(bad(
            "listeners",
            &set.get("listeners").cloned().unwrap_or_default(),
            "every listener is a controller listener; clients need at least one other listener"
                .into(),
        ));
    }
    if let Some(name) = set.get("inter.broker.listener.name") {
        let name = name.trim();
        if controller_listener_names.iter().any(|c| c == name)
            || !listeners.iter().any(|l| l.name == name)
        {
            return Err(bad(
                "inter.broker.listener.name",
                name,
                "must name one of the listeners that is not a controller listener".into(),
            ));
        }
    }
    Ok(())
}

/// A configuration of node 1 with `settings` on top of the defaults, for unit tests.
#[cfg(test)]
pub(crate) fn test_config(settings: &[(&str, &str)]) -> BrokerConfig {
    let set = [
        ("log.dirs", "/nonexistent/strata-unit-test"),
        ("node.id", "1"),
    ]
    .iter()
    .chain(settings)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    BrokerConfig::from_map(set).expect("config").0
}

/// The one replica selector Strata recognises (`replica.selector.class`, KIP-392).
pub const RACK_AWARE_SELECTOR: &str = "org.apache.kafka.common.replica.RackAwareReplicaSelector";

/// The broker's static configuration: what was set, on top of [`BROKER_CONFIGS`] defaults.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `process.roles`.
    pub roles: Roles,
    /// Keys set in the file or with `--set`, known or not.
    pub set: BTreeMap<String, String>,
    /// Every listener, controller listeners included (all are bound).
    pub listeners: Vec<Listener>,
    /// Client listeners' advertised addresses (controller listeners never appear here).
    pub advertised_listeners: Vec<Listener>,
    /// The TLS settings of each SSL client listener, by listener name (files not read yet:
    /// `crate::tls::ListenerTls::load` reads them).
    pub tls: BTreeMap<String, crate::tls::TlsSettings>,
    /// The SASL settings of each SASL_PLAINTEXT or SASL_SSL client listener, by listener name.
    pub sasl: BTreeMap<String, std::sync::Arc<crate::sasl::SaslSettings>>,
    /// SCRAM credentials to write with the first metadata records (`strata serve
    /// --add-scram`, Kafka's `kafka-storage.sh format --add-scram`); ignored once formatted.
    pub add_scram: Vec<crate::sasl::AddScram>,
    /// `sasl.mechanism.inter.broker.protocol`, what this broker logs in to others with (a single node makes
    /// no inter-broker connections).
    pub sasl_inter_broker_mechanism: String,
    /// `controller.listener.names`: bound, but they serve no client requests.
    pub controller_listener_names: Vec<String>,
    pub connections_max_idle: std::time::Duration,
    pub queued_max_requests: usize,
    /// `quota.window.num` and `quota.window.size.seconds`: how client quota rates are measured.
    pub quota_windows: crate::quota::throttle::WindowConfig,
    pub data_dir: PathBuf,
    pub node_id: i32,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics: bool,
    pub message_max_bytes: i32,
    pub socket_request_max_bytes: usize,
    pub fsync_before_ack: bool,
    pub flush_interval_messages: i64,
    pub flush_interval_ms: Option<i64>,
}

impl BrokerConfig {
    /// Parses a properties file's text as `java.util.Properties.load` does: `key=value`,
    /// `key: value` or `key value`; `#` and `!` comment lines; a line ending in a backslash
    /// continues on the next (whose leading blanks are dropped), which is how Kafka files
    /// carry inline PEM keys; `\t`, `\n`, `\uXXXX` and `\<char>` escapes. Values are trimmed.
    pub fn parse_properties(text: &str) -> Result<BTreeMap<String, String>, InvalidConfig> {
        let mut map = BTreeMap::new();
        let mut lines = text.lines().enumerate();
        while let Some((n, raw)) = lines.next() {
            let mut line = raw.trim_start().to_string();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            while ends_in_continuation(&line) {
                line.pop();
                match lines.next() {
                    Some((_, next)) => line.push_str(next.trim_start()),
                    None => break,
                }
            }
            let (key, value) = split_property(&line);
            let bad = |reason: String| InvalidConfig {
                key: format!("line {}", n + 1),
                value: raw.to_string(),
                reason,
            };
            let key = unescape_property(key).map_err(bad)?;
            let value = unescape_property(value).map_err(bad)?;
            map.insert(key, value.trim().to_string());
        }
        Ok(map)
    }

    /// Builds the config from set keys. Returns the config and the unknown keys (for the
    /// caller to warn about).
    pub fn from_map(set: BTreeMap<String, String>) -> Result<(Self, Vec<String>), InvalidConfig> {
        let mut unknown = Vec::new();
        for (key, value) in &set {
            let def = broker_config_def(key).or_else(|| listener_scoped_def(key).map(|(_, d)| d));
            match def {
                Some(def) => validate_value(def, value).map_err(|e| InvalidConfig {
                    key: key.clone(),
                    ..e
                })?,
                None => unknown.push(key.clone()),
            }
        }
        let get = |key: &str| -> String {
            set.get(key)
                .cloned()
                .or_else(|| broker_config_def(key).and_then(|d| d.default.map(str::to_string)))
                .unwrap_or_default()
        };
        let int = |key: &str| -> i64 { get(key).trim().parse().unwrap_or(0) };
        let protocol_map = parse_protocol_map(&get("listener.security.protocol.map"))?;
        let mut listeners = parse_listeners("listeners", &get("listeners"))?;
        assign_protocols("listeners", &mut listeners, &protocol_map)?;
        let controller_listener_names: Vec<String> = get("controller.listener.names")
            .split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        let node_id = int("node.id") as i32;
        let roles = parse_roles(&set)?;
        check_roles(&set, roles, node_id, &listeners, &controller_listener_names)?;
        let is_client = |l: &Listener| !controller_listener_names.contains(&l.name);
        // Each client listener is advertised at its advertised.listeners address, or at its
        // own address when advertised.listeners leaves it out (as Kafka does).
        let advertised = match set.get("advertised.listeners") {
            Some(v) => parse_listeners("advertised.listeners", v)?,
            None => Vec::new(),
        };
        for a in &advertised {
            if !listeners.iter().any(|l| l.name == a.name) {
                return Err(InvalidConfig {
                    key: "advertised.listeners".into(),
                    value: get("advertised.listeners"),
                    reason: format!("{} is not one of the listeners", a.name),
                });
            }
        }
        let advertised_listeners: Vec<Listener> = listeners
            .iter()
            .filter(|l| is_client(l))
            .map(|l| {
                let mut a = advertised
                    .iter()
                    .find(|a| a.name == l.name)
                    .cloned()
                    .unwrap_or_else(|| l.clone());
                a.security_protocol = l.security_protocol.clone();
                a
            })
            .collect();
        let mut tls = BTreeMap::new();
        let mut sasl = BTreeMap::new();
        for l in listeners.iter().filter(|l| is_client(l)) {
            if l.security_protocol == "SSL" || l.security_protocol == "SASL_SSL" {
                let settings = crate::tls::TlsSettings::resolve(&set, &l.name)?;
                tls.insert(l.name.clone(), settings);
            }
            if l.security_protocol.starts_with("SASL_") {
                let settings = crate::sasl::SaslSettings::resolve(&set, &l.name)?;
                sasl.insert(l.name.clone(), std::sync::Arc::new(settings));
            }
        }
        let data_dir = set
            .get("log.dirs")
            .map(|v| v.split(',').next().unwrap_or_default().trim().to_string())
            .unwrap_or_else(|| get("log.dir"));
        if data_dir.is_empty() {
            return Err(InvalidConfig {
                key: "log.dirs".into(),
                value: data_dir,
                reason: "must name a directory".into(),
            });
        }
        let config = BrokerConfig {
            roles,
            listeners,
            advertised_listeners,
            tls,
            sasl,
            add_scram: Vec::new(),
            sasl_inter_broker_mechanism: get("sasl.mechanism.inter.broker.protocol")
                .trim()
                .to_string(),
            controller_listener_names,
            connections_max_idle: std::time::Duration::from_millis(
                int("connections.max.idle.ms").max(1) as u64,
            ),
            queued_max_requests: int("queued.max.requests").clamp(1, 1 << 20) as usize,
            quota_windows: crate::quota::throttle::WindowConfig {
                num: int("quota.window.num").clamp(1, 1 << 16) as usize,
                size_ms: int("quota.window.size.seconds").clamp(1, 1 << 30) as u64 * 1000,
            },
            data_dir: PathBuf::from(data_dir),
            node_id,
            num_partitions: int("num.partitions") as i32,
            default_replication_factor: int("default.replication.factor") as i16,
            auto_create_topics: get("auto.create.topics.enable").eq_ignore_ascii_case("true"),
            message_max_bytes: int("message.max.bytes") as i32,
            socket_request_max_bytes: int("socket.request.max.bytes") as usize,
            fsync_before_ack: get(FSYNC_BEFORE_ACK).eq_ignore_ascii_case("true"),
            flush_interval_messages: int("log.flush.interval.messages"),
            flush_interval_ms: set
                .get("log.flush.interval.ms")
                .and_then(|v| v.trim().parse().ok()),
            set,
        };
        Ok((config, unknown))
    }

    /// The value of a broker key: set, or Kafka's default.
    pub fn value(&self, key: &str) -> Option<String> {
        self.set
            .get(key)
            .cloned()
            .or_else(|| broker_config_def(key).and_then(|d| d.default.map(str::to_string)))
    }

    /// [`Self::value`] parsed as a `T` (surrounding spaces ignored); `None` if absent or
    /// unparsable.
    pub fn parsed<T: std::str::FromStr>(&self, key: &str) -> Option<T> {
        self.value(key).and_then(|v| v.trim().parse().ok())
    }

    /// The listener advertised for connections that arrived on listener `name` (a client
    /// listener; the first client listener otherwise).
    pub fn advertised_for(&self, name: &str) -> &Listener {
        self.advertised_listeners
            .iter()
            .find(|l| l.name == name)
            .unwrap_or(&self.advertised_listeners[0])
    }

    /// Whether connections on listener `name` belong to the controller quorum.
    pub fn is_controller_listener(&self, name: &str) -> bool {
        self.controller_listener_names.iter().any(|n| n == name)
    }

    /// Keys that were set and are accepted but have no effect yet ([`NOT_IN_EFFECT`]).
    pub fn set_but_not_in_effect(&self) -> Vec<String> {
        self.set
            .keys()
            .filter(|k| {
                let key = listener_scoped_def(k).map_or(k.as_str(), |(_, d)| d.name);
                NOT_IN_EFFECT.contains(&key)
            })
            .cloned()
            .collect()
    }

    /// The value of a listener-scoped key for `listener`: `listener.name.<listener>.<key>`
    /// when set, else `<key>` when set, else Kafka's default.
    pub fn listener_value(&self, listener: &str, key: &str) -> Option<String> {
        listener_setting(&self.set, listener, key).map(|(_, v)| v)
    }
}

/// Where an effective config value came from (Kafka's `ConfigSource` numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    TopicConfig = 1,
    DynamicBrokerConfig = 2,
    DynamicDefaultBrokerConfig = 3,
    StaticBrokerConfig = 4,
    DefaultConfig = 5,
}

/// One resolved value with its synonyms chain, as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedConfig {
    pub name: &'static str,
    pub value: Option<String>,
    pub source: ConfigSource,
    /// Every place that supplies a value, most specific first: (name, value, source).
    pub synonyms: Vec<(String, Option<String>, ConfigSource)>,
    pub def: ConfigDef,
}

/// The layers a topic config is resolved through.
pub struct ConfigLayers<'a> {
    pub topic: &'a BTreeMap<String, String>,
    pub dynamic_broker: Option<&'a BTreeMap<String, String>>,
    pub dynamic_default: Option<&'a BTreeMap<String, String>>,
    pub static_broker: &'a BTreeMap<String, String>,
}

fn scale(value: &str, factor: i64) -> String {
    if factor == 1 {
        return value.to_string();
    }
    match value.trim().parse::<i64>() {
        Ok(n) if n < 0 => n.to_string(),
        Ok(n) => n.saturating_mul(factor).to_string(),
        Err(_) => value.to_string(),
    }
}

/// Resolves one topic config through the layers.
pub fn resolve_topic_config(def: &TopicConfigDef, layers: &ConfigLayers) -> ResolvedConfig {
    let mut synonyms = Vec::new();
    if let Some(v) = layers.topic.get(def.def.name) {
        synonyms.push((
            def.def.name.to_string(),
            Some(v.clone()),
            ConfigSource::TopicConfig,
        ));
    }
    let broker_layers = [
        (layers.dynamic_broker, ConfigSource::DynamicBrokerConfig),
        (
            layers.dynamic_default,
            ConfigSource::DynamicDefaultBrokerConfig,
        ),
        (Some(layers.static_broker), ConfigSource::StaticBrokerConfig),
    ];
    for (layer, source) in broker_layers {
        let Some(layer) = layer else { continue };
        for (key, _) in def.synonyms {
            if let Some(v) = layer.get(*key) {
                synonyms.push((key.to_string(), Some(v.clone()), source));
            }
        }
    }
    let first_synonym = def.synonyms.first().map(|(k, _)| *k);
    let default_name = first_synonym.unwrap_or(def.def.name);
    let default_value = first_synonym
        .and_then(broker_config_def)
        .and_then(|d| d.default)
        .or(def.def.default)
        .map(str::to_string);
    synonyms.push((
        default_name.to_string(),
        default_value,
        ConfigSource::DefaultConfig,
    ));
    let (value, source) = match synonyms.first() {
        Some((key, value, source)) => {
            let factor = def
                .synonyms
                .iter()
                .find(|(k, _)| k == key)
                .map_or(1, |(_, f)| *f);
            let value = if *source == ConfigSource::TopicConfig {
                value.clone()
            } else {
                value.as_deref().map(|v| scale(v, factor))
            };
            (value, *source)
        }
        None => (
            def.def.default.map(str::to_string),
            ConfigSource::DefaultConfig,
        ),
    };
    ResolvedConfig {
        name: def.def.name,
        value,
        source,
        synonyms,
        def: def.def,
    }
}

/// The effective topic configs a partition log needs, resolved once per config change.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSettings {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub index_interval_bytes: u32,
    pub max_message_bytes: usize,
    pub log_append_time: bool,
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    pub flush_messages: i64,
    pub flush_ms: i64,
    pub compact: bool,
    /// `cleanup.policy` includes `delete`: retention applies.
    pub delete: bool,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub delete_retention_ms: i64,
    pub min_compaction_lag_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    pub max_compaction_lag_ms: i64,
    /// `min.insync.replicas`: acks=all produce needs at least this many in-sync replicas.
    pub min_insync_replicas: usize,
    /// `compression.type`: `None` keeps the producer's codec.
    pub compression: Option<strata_protocol::batch::Compression>,
    /// The level for that codec (`compression.<codec>.level`), if it has one.
    pub compression_level: Option<i32>,
}

impl TopicSettings {
    pub fn resolve(layers: &ConfigLayers) -> Self {
        let get = |name: &str| -> String {
            let def = topic_config_def(name).expect("known topic config");
            resolve_topic_config(def, layers).value.unwrap_or_default()
        };
        let long = |name: &str| -> i64 { get(name).trim().parse().unwrap_or(i64::MAX) };
        TopicSettings {
            segment_bytes: long("segment.bytes").max(14) as u64,
            segment_ms: long("segment.ms").max(1),
            index_interval_bytes: long("index.interval.bytes").clamp(0, i64::from(u32::MAX)) as u32,
            max_message_bytes: long("max.message.bytes").max(0) as usize,
            log_append_time: get("message.timestamp.type") == "LogAppendTime",
            timestamp_before_max_ms: long("message.timestamp.before.max.ms"),
            timestamp_after_max_ms: long("message.timestamp.after.max.ms"),
            flush_messages: long("flush.messages"),
            flush_ms: long("flush.ms"),
            compact: get("cleanup.policy")
                .split(',')
                .any(|p| p.trim() == "compact"),
            delete: get("cleanup.policy")
                .split(',')
                .any(|p| p.trim() == "delete"),
            retention_ms: get("retention.ms").trim().parse().unwrap_or(-1),
            retention_bytes: get("retention.bytes").trim().parse().unwrap_or(-1),
            delete_retention_ms: long("delete.retention.ms"),
            min_compaction_lag_ms: long("min.compaction.lag.ms"),
            min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio")
                .trim()
                .parse()
                .unwrap_or(0.5),
            max_compaction_lag_ms: long("max.compaction.lag.ms"),
            min_insync_replicas: long("min.insync.replicas").clamp(1, i64::from(i32::MAX)) as usize,
            compression: {
                use strata_protocol::batch::Compression as C;
                match get("compression.type").trim() {
                    "uncompressed" => Some(C::None),
                    "gzip" => Some(C::Gzip),
                    "snappy" => Some(C::Snappy),
                    "lz4" => Some(C::Lz4),
                    "zstd" => Some(C::Zstd),
                    _ => None,
                }
            },
            compression_level: match get("compression.type").trim() {
                "gzip" => get("compression.gzip.level").trim().parse().ok(),
                "lz4" => get("compression.lz4.level").trim().parse().ok(),
                "zstd" => get("compression.zstd.level").trim().parse().ok(),
                _ => None,
            },
        }
    }
}

/// Set keys from `(key, value)` pairs, for tests.
#[cfg(test)]
pub(crate) fn properties(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        properties(pairs)
    }

    #[test]
    fn defaults_are_kafkas() {
        let (c, unknown) = BrokerConfig::from_map(BTreeMap::new()).expect("defaults");
        assert!(unknown.is_empty());
        assert_eq!(c.listeners[0].port, 9092);
        assert_eq!(c.listeners[0].host, "localhost");
        assert_eq!(c.data_dir, PathBuf::from("./strata-data"));
        assert_eq!(c.message_max_bytes, 1_048_588);
        assert!(c.fsync_before_ack);
        assert!(c.auto_create_topics);
    }

    #[test]
    fn bad_value_names_key_and_value() {
        let err = BrokerConfig::from_map(map(&[("num.partitions", "lots")])).expect_err("bad");
        assert_eq!(err.key, "num.partitions");
        assert_eq!(err.value, "lots");
        let err = BrokerConfig::from_map(map(&[("num.partitions", "0")])).expect_err("bad");
        assert!(err.reason.contains("at least 1"), "{err}");
        let err = BrokerConfig::from_map(map(&[("listeners", "nonsense")])).expect_err("bad");
        assert_eq!(err.key, "listeners");
    }

    #[test]
    fn quota_windows_are_kafkas_keys() {
        use crate::quota::throttle::WindowConfig;
        let (c, _) = BrokerConfig::from_map(BTreeMap::new()).expect("defaults");
        assert_eq!(c.quota_windows, WindowConfig::default());
        assert_eq!((c.quota_windows.num, c.quota_windows.size_ms), (11, 1000));
        let (c, _) = BrokerConfig::from_map(map(&[
            ("quota.window.num", "3"),
            ("quota.window.size.seconds", "2"),
        ]))
        .expect("valid");
        assert_eq!((c.quota_windows.num, c.quota_windows.size_ms), (3, 2000));
        // Kafka's validation: each at least 1, an int.
        for (key, value) in [
            ("quota.window.num", "0"),
            ("quota.window.size.seconds", "0"),
            ("quota.window.num", "many"),
            ("quota.window.size.seconds", "4294967296"),
        ] {
            let err = BrokerConfig::from_map(map(&[(key, value)])).expect_err("invalid");
            assert_eq!((err.key.as_str(), err.value.as_str()), (key, value));
        }
    }

    #[test]
    fn unknown_keys_are_reported() {
        let (_, unknown) =
            BrokerConfig::from_map(map(&[("no.such.key", "1")])).expect("unknown is fine");
        assert_eq!(unknown, vec!["no.such.key".to_string()]);
    }

    #[test]
    fn properties_file_syntax() {
        let m =
            BrokerConfig::parse_properties("# c\n! c\n\na=1\nb : two\n c= x=y \n").expect("parses");
        assert_eq!(m, map(&[("a", "1"), ("b", "two"), ("c", "x=y")]));
        // The rest of java.util.Properties: blank separators, a key alone, escapes, and
        // continuation lines (Kafka's way of writing inline PEM), a comment never continuing.
        let text = "d value of d\nalone\ne\\:f=1\ntab=a\\tb\\u0041\\\\\n\
                    # not continued \\\nkey=-----BEGIN CERTIFICATE----- \\\n   \
                    MIIB \\\n  -----END CERTIFICATE-----\nlast=x\\\n";
        let m = BrokerConfig::parse_properties(text).expect("parses");
        assert_eq!(
            m,
            map(&[
                ("d", "value of d"),
                ("alone", ""),
                ("e:f", "1"),
                ("tab", "a\tbA\\"),
                (
                    "key",
                    "-----BEGIN CERTIFICATE----- MIIB -----END CERTIFICATE-----"
                ),
                ("last", "x"),
            ])
        );
        let err = BrokerConfig::parse_properties("a=\\u00zz").expect_err("bad escape");
        assert_eq!(err.key, "line 1");
    }

    #[test]
    fn topic_config_resolution_order() {
        let empty = BTreeMap::new();
        let static_broker = map(&[("log.retention.hours", "1")]);
        let layers = ConfigLayers {
            topic: &empty,
            dynamic_broker: None,
            dynamic_default: None,
            static_broker: &static_broker,
        };
        let def = topic_config_def("retention.ms").expect("known");
        let r = resolve_topic_config(def, &layers);
        assert_eq!(r.value.as_deref(), Some("3600000"));
        assert_eq!(r.source, ConfigSource::StaticBrokerConfig);
        let topic = map(&[("retention.ms", "5")]);
        let layers = ConfigLayers {
            topic: &topic,
            ..layers
        };
        let r = resolve_topic_config(def, &layers);
        assert_eq!(r.value.as_deref(), Some("5"));
        assert_eq!(r.source, ConfigSource::TopicConfig);
        assert_eq!(r.synonyms.len(), 3);
        let layers = ConfigLayers {
            topic: &empty,
            dynamic_broker: None,
            dynamic_default: None,
            static_broker: &empty,
        };
        let r = resolve_topic_config(def, &layers);
        assert_eq!(r.value.as_deref(), Some("604800000"));
        assert_eq!(r.source, ConfigSource::DefaultConfig);
    }

    /// The server.properties of a one-node Kafka 4.x in KRaft combined mode.
    const KRAFT_FILE: &str = "process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
listeners=CLIENT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093
advertised.listeners=CLIENT://127.0.0.1:9092
controller.listener.names=CONTROLLER
inter.broker.listener.name=CLIENT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,CLIENT:PLAINTEXT
num.network.threads=3
num.io.threads=8
socket.send.buffer.bytes=102400
socket.receive.buffer.bytes=102400
socket.request.max.bytes=104857600
log.dirs=/some/dir
num.partitions=1
num.recovery.threads.per.data.dir=1
offsets.topic.replication.factor=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
log.retention.hours=168
log.segment.bytes=1073741824
log.retention.check.interval.ms=300000
";

    fn kraft(changes: &[(&str, &str)]) -> Result<BrokerConfig, InvalidConfig> {
        let mut m = BrokerConfig::parse_properties(KRAFT_FILE).expect("parses");
        for (k, v) in changes {
            m.insert(k.to_string(), v.to_string());
        }
        BrokerConfig::from_map(m).map(|(c, _)| c)
    }

    #[test]
    fn kafkas_kraft_single_node_file_is_accepted_unchanged() {
        let mut m = BrokerConfig::parse_properties(KRAFT_FILE).expect("parses");
        let (c, unknown) = BrokerConfig::from_map(m.clone()).expect("accepted");
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(c.listeners.len(), 2);
        assert!(c.is_controller_listener("CONTROLLER"));
        assert_eq!(c.advertised_listeners.len(), 1);
        assert_eq!(c.advertised_for("CLIENT").port, 9092);
        assert_eq!(c.advertised_for("CONTROLLER").port, 9092);
        assert_eq!(c.data_dir, PathBuf::from("/some/dir"));
        let ignored = c.set_but_not_in_effect();
        assert!(
            ignored.contains(&"num.io.threads".to_string()),
            "{ignored:?}"
        );
        assert!(!ignored.contains(&"socket.send.buffer.bytes".to_string()));
        // Kafka 4.0's own default file: PLAINTEXT/CONTROLLER on every interface, the
        // controller advertised too, the quorum given by bootstrap servers.
        m.remove("controller.quorum.voters");
        m.insert(
            "controller.quorum.bootstrap.servers".into(),
            "localhost:9093".into(),
        );
        m.insert(
            "listeners".into(),
            "PLAINTEXT://:9092,CONTROLLER://:9093".into(),
        );
        m.insert(
            "advertised.listeners".into(),
            "PLAINTEXT://localhost:9092,CONTROLLER://localhost:9093".into(),
        );
        m.insert("inter.broker.listener.name".into(), "PLAINTEXT".into());
        m.insert(
            "listener.security.protocol.map".into(),
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL".into(),
        );
        let (c, unknown) = BrokerConfig::from_map(m).expect("accepted");
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(c.advertised_listeners.len(), 1);
        assert_eq!(c.advertised_for("PLAINTEXT").host, "localhost");
    }

    #[test]
    fn what_a_single_node_cannot_be_is_explained() {
        kraft(&[("process.roles", "controller, broker")]).expect("either order");
        let err = kraft(&[("process.roles", "zookeeper")]).expect_err("no such role");
        assert_eq!(err.key, "process.roles");
        // A broker-only node: not a voter, reaches the controllers on their listener.
        let broker_only = [
            ("process.roles", "broker"),
            ("node.id", "4"),
            ("listeners", "CLIENT://127.0.0.1:9092"),
        ];
        let c = kraft(&broker_only).expect("a broker-only node");
        assert!(c.roles.broker && !c.roles.controller);
        let err = kraft(&[("process.roles", "broker")]).expect_err("a voter's id");
        assert_eq!(err.key, "controller.quorum.voters");
        let err = kraft(&[("process.roles", "broker"), ("node.id", "4")])
            .expect_err("listens on the controller listener");
        assert_eq!(err.key, "listeners");
        // A controller-only node: its controller listener and nothing else.
        let controller_only = [
            ("process.roles", "controller"),
            ("listeners", "CONTROLLER://127.0.0.1:9093"),
            ("advertised.listeners", "CONTROLLER://127.0.0.1:9093"),
        ];
        let c = kraft(&controller_only).expect("a controller-only node");
        assert!(!c.roles.broker && c.roles.controller);
        let err = kraft(&[
            ("process.roles", "controller"),
            ("advertised.listeners", "CONTROLLER://127.0.0.1:9093"),
        ])
        .expect_err("a client listener");
        assert_eq!(err.key, "listeners");
        kraft(&[("controller.quorum.voters", "1@a:9093,2@b:9093,3@c:9093")])
            .expect("a quorum of three voters");
        let err = kraft(&[("controller.quorum.voters", "1@a:9093,1@b:9093")]).expect_err("twice");
        assert!(err.reason.contains("twice"), "{err}");
        let err = kraft(&[("node.id", "2")]).expect_err("not a voter");
        assert_eq!(err.key, "controller.quorum.voters");
        // A SASL listener needs a mechanism Strata serves (Kafka's default is GSSAPI).
        let err = kraft(&[(
            "listener.security.protocol.map",
            "CONTROLLER:PLAINTEXT,CLIENT:SASL_PLAINTEXT",
        )])
        .expect_err("sasl without mechanisms");
        assert!(err.reason.contains("GSSAPI"), "{err}");
        let c = kraft(&[
            (
                "listener.security.protocol.map",
                "CONTROLLER:PLAINTEXT,CLIENT:SASL_PLAINTEXT",
            ),
            ("sasl.enabled.mechanisms", "SCRAM-SHA-512"),
        ])
        .expect("a SCRAM listener");
        assert_eq!(c.sasl["CLIENT"].mechanism_names(), vec!["SCRAM-SHA-512"]);
        assert_eq!(c.sasl_inter_broker_mechanism, "GSSAPI");
        assert!(
            listener_scoped_def("listener.name.client.scram-sha-256.sasl.jaas.config")
                .is_some_and(|(l, d)| l == "client" && d.kind == ConfigType::Password)
        );
        assert!(listener_scoped_def("listener.name.client.sasl.enabled.mechanisms").is_some());
        assert!(listener_scoped_def("listener.name.client.plain.sasl.other").is_none());
        let err = kraft(&[("listener.security.protocol.map", "CONTROLLER:PLAINTEXT")])
            .expect_err("no protocol for CLIENT");
        assert!(err.reason.contains("CLIENT:PLAINTEXT"), "{err}");
        let err = kraft(&[("inter.broker.listener.name", "CONTROLLER")]).expect_err("ctl");
        assert_eq!(err.key, "inter.broker.listener.name");
        let err = kraft(&[("listeners", "CONTROLLER://127.0.0.1:9093")]).expect_err("no client");
        assert_eq!(err.key, "listeners");
        let err = kraft(&[("broker.id", "5")]).expect_err("broker.id");
        assert_eq!(err.key, "broker.id");
        // A listener named after no protocol is fine when the map names it.
        let c = kraft(&[]).expect("accepted");
        assert_eq!(c.listeners[0].security_protocol, "PLAINTEXT");
    }

    #[test]
    fn ssl_listeners_with_kafkas_keys() {
        let c = kraft(&[
            (
                "listener.security.protocol.map",
                "CONTROLLER:PLAINTEXT,CLIENT:SSL",
            ),
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.location", "/etc/kafka/server.pem"),
            ("listener.name.client.ssl.client.auth", "required"),
            ("ssl.truststore.type", "PEM"),
            ("ssl.truststore.location", "/etc/kafka/ca.pem"),
            ("ssl.endpoint.identification.algorithm", ""),
            (
                "listener.name.client.ssl.endpoint.identification.algorithm",
                "",
            ),
            ("listener.name.client.ssl.keymanager.algorithm", "SunX509"),
        ])
        .expect("accepted");
        let tls = &c.tls["CLIENT"];
        assert_eq!(tls.client_auth, crate::tls::ClientAuth::Required);
        assert_eq!(c.listeners[0].security_protocol, "SSL");
        assert_eq!(
            c.listener_value("CLIENT", "ssl.client.auth").as_deref(),
            Some("required")
        );
        assert_eq!(
            c.listener_value("OTHER", "ssl.client.auth").as_deref(),
            Some("none")
        );
        // The controller listener is never served, so it needs no TLS settings.
        assert!(!c.tls.contains_key("CONTROLLER"));
        let ignored = c.set_but_not_in_effect();
        assert!(
            ignored.contains(&"listener.name.client.ssl.keymanager.algorithm".into()),
            "{ignored:?}"
        );
        // In effect: how this broker checks the names of other brokers' certificates.
        assert!(
            !ignored.contains(&"listener.name.client.ssl.endpoint.identification.algorithm".into()),
            "{ignored:?}"
        );
        // Listener-scoped keys are known keys, checked like the plain ones.
        let mut m = BrokerConfig::parse_properties(KRAFT_FILE).expect("parses");
        m.insert(
            "listener.name.client.ssl.keystore.type".into(),
            "PEM".into(),
        );
        let (_, unknown) = BrokerConfig::from_map(m.clone()).expect("accepted");
        assert!(unknown.is_empty(), "{unknown:?}");
        m.insert(
            "listener.name.client.ssl.client.auth".into(),
            "always".into(),
        );
        let err = BrokerConfig::from_map(m).expect_err("bad value");
        assert_eq!(err.key, "listener.name.client.ssl.client.auth");
        assert!(listener_scoped_def("listener.name.client.num.partitions").is_none());
    }

    #[test]
    fn topic_keys_without_effect_are_named() {
        let configs = map(&[("preallocate", "true"), ("retention.ms", "5")]);
        assert_eq!(
            topic_configs_not_in_effect(configs.keys()),
            vec!["preallocate"]
        );
        for key in TOPIC_NOT_IN_EFFECT.iter().chain(NOT_IN_EFFECT) {
            assert!(
                topic_config_def(key).is_some() || broker_config_def(key).is_some(),
                "{key} is not an accepted key"
            );
        }
    }
}
