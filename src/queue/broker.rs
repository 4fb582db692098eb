//! One connection to RabbitMQ with a publisher-confirm channel, as every command uses it: connect,
//! declare the topology, publish with confirms, read queue depths.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::topology::Topology;
use crate::error::{Classify, ErrorClass};

/// A failure talking to RabbitMQ. Every one of them is transient: the broker or the network
/// may come back, and the message stays where it was.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot connect to RabbitMQ at {url}: {source}")]
    Connect { url: String, source: lapin::Error },
    #[error("RabbitMQ refused to {what}: {source}")]
    Amqp { what: String, source: lapin::Error },
    #[error("RabbitMQ did not confirm the message published to {target}")]
    Nacked { target: String },
    #[error(
        "RabbitMQ had no queue for the message published to {target}; is the topology declared?"
    )]
    Unroutable { target: String },
    #[error(
        "queue {queue} was declared by an earlier mbprov with other arguments (topology version 1); \
         stop every worker of this prefix and run `mbprov migrate-topology`"
    )]
    OutdatedTopology { queue: String },
    #[error("another `mbprov dlq` command is reading {queue}; run one at a time")]
    Busy { queue: String },
    #[error("{0}")]
    Refused(String),
}

impl Classify for QueueError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

/// RabbitMQ's answer to a redeclare with other arguments, or a delete of a queue that is not
/// empty (`if_empty`): 406 PRECONDITION_FAILED, which also closes the channel.
pub fn is_precondition_failed(e: &lapin::Error) -> bool {
    soft_error(e) == Some(AMQPSoftError::PRECONDITIONFAILED)
}

/// A queue that does not exist (404 NOT_FOUND on a passive declare; closes the channel).
pub fn is_not_found(e: &lapin::Error) -> bool {
    soft_error(e) == Some(AMQPSoftError::NOTFOUND)
}

/// Another connection holds the queue (an exclusive consumer): 403 ACCESS_REFUSED or 405
/// RESOURCE_LOCKED, depending on the operation.
pub fn is_locked(e: &lapin::Error) -> bool {
    matches!(
        soft_error(e),
        Some(AMQPSoftError::ACCESSREFUSED | AMQPSoftError::RESOURCELOCKED)
    )
}

fn soft_error(e: &lapin::Error) -> Option<AMQPSoftError> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(soft) => Some(soft.clone()),
            AMQPErrorKind::Hard(_) => None,
        },
        _ => None,
    }
}

/// The URL without its password, for messages and logs.
pub fn redacted(amqp_url: &str) -> String {
    match url::Url::parse(amqp_url) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<unparsable AMQP URL>".into(),
    }
}

/// Opens a connection, refusing to leak the password into the error. The name shows in the
/// RabbitMQ management UI (and `rabbitmqctl list_connections user_provided_name`).
pub async fn connect(amqp_url: &str, name: &str) -> Result<Connection, QueueError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(amqp_url, properties)
        .await
        .map_err(|source| QueueError::Connect {
            url: redacted(amqp_url),
            source,
        })
}

/// A channel in confirm mode: every publish on it is acknowledged by the broker.
pub async fn confirm_channel(connection: &Connection) -> Result<Channel, QueueError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|source| amqp("open a channel", source))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|source| amqp("enable publisher confirms", source))?;
    Ok(channel)
}

pub(crate) fn amqp(what: &str, source: lapin::Error) -> QueueError {
    QueueError::Amqp {
        what: what.to_owned(),
        source,
    }
}

/// Publishes one message and waits until the broker has it (`mandatory`, so a message no queue
/// takes is an error rather than silently dropped). Only after `Ok` may the caller acknowledge
/// the message this one replaces.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), QueueError> {
    publish_started(channel, exchange, routing_key, body, properties)
        .await?
        .confirmed()
        .await
}

/// A message handed to the broker whose confirm has not been read yet: several can be in flight
/// on one channel, which is how `dlq` moves thousands of messages without a round trip each.
pub struct InFlight {
    confirm: lapin::PublisherConfirm,
    target: String,
}

/// Sends one message (`mandatory`) without waiting for its confirm; see [`InFlight::confirmed`].
pub async fn publish_started(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<InFlight, QueueError> {
    let target = format!("exchange {exchange:?} with routing key {routing_key:?}");
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            body,
            properties,
        )
        .await
        .map_err(|source| amqp(&format!("publish to {target}"), source))?;
    Ok(InFlight { confirm, target })
}

impl InFlight {
    /// Waits until the broker has the message: acknowledged and routed to a queue.
    pub async fn confirmed(self) -> Result<(), QueueError> {
        let target = self.target;
        let confirm = self
            .confirm
            .await
            .map_err(|source| amqp(&format!("confirm the publish to {target}"), source))?;
        if !confirm.is_ack() {
            return Err(QueueError::Nacked { target });
        }
        if confirm.take_message().is_some() {
            return Err(QueueError::Unroutable { target });
        }
        Ok(())
    }
}

/// Every property of `p` with `headers` in place of its headers, except `user_id`: RabbitMQ
/// refuses a `user_id` that is not the publishing connection's user. For moving a message
/// between queues unchanged.
pub fn same_properties(p: &BasicProperties, headers: lapin::types::FieldTable) -> BasicProperties {
    let copy = same_properties_but_expiration(p, headers);
    match p.expiration() {
        Some(v) => copy.with_expiration(v.clone()),
        None => copy,
    }
}

/// [`same_properties`] without `expiration`: for a message that must not expire where it goes.
pub fn same_properties_but_expiration(
    p: &BasicProperties,
    headers: lapin::types::FieldTable,
) -> BasicProperties {
    let mut copy = BasicProperties::default().with_headers(headers);
    if let Some(v) = p.content_type() {
        copy = copy.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        copy = copy.with_content_encoding(v.clone());
    }
    if let Some(v) = p.delivery_mode() {
        copy = copy.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        copy = copy.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        copy = copy.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        copy = copy.with_reply_to(v.clone());
    }
    if let Some(v) = p.message_id() {
        copy = copy.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        copy = copy.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        copy = copy.with_type(v.clone());
    }
    if let Some(v) = p.app_id() {
        copy = copy.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        copy = copy.with_cluster_id(v.clone());
    }
    copy
}

/// One queue's depth, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    pub name: String,
    pub messages: u32,
    pub consumers: u32,
}

/// A connection for the short-lived commands (`publish`, `dlq`, `status`), with the topology
/// declared.
pub struct Broker {
    connection: Connection,
    channel: Channel,
    topology: Topology,
}

impl Broker {
    /// Connects without declaring anything: for `migrate-topology`, which must look at what an
    /// earlier version declared before it declares anything itself.
    pub async fn connect_undeclared(
        amqp_url: &str,
        topology: Topology,
    ) -> Result<Self, QueueError> {
        let name = format!("mbprov migrate {}", topology.work_exchange());
        let connection = connect(amqp_url, &name).await?;
        let channel = confirm_channel(&connection).await?;
        Ok(Self {
            connection,
            channel,
            topology,
        })
    }

    /// Connects and declares the topology, as every command that touches the broker must.
    pub async fn connect(amqp_url: &str, topology: Topology) -> Result<Self, QueueError> {
        let name = format!("mbprov {}", topology.work_exchange());
        let connection = connect(amqp_url, &name).await?;
        let channel = confirm_channel(&connection).await?;
        if let Err(e) = topology.declare(&channel).await {
            let _ = connection.close(200, "bye".into()).await;
            return Err(e);
        }
        Ok(Self {
            connection,
            channel,
            topology,
        })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Another channel on the same connection (for a consumer, or a probe that may close it).
    pub async fn open_channel(&self) -> Result<Channel, QueueError> {
        self.connection
            .create_channel()
            .await
            .map_err(|source| amqp("open a channel", source))
    }

    /// Another channel in confirm mode, for publishing.
    pub async fn open_confirm_channel(&self) -> Result<Channel, QueueError> {
        confirm_channel(&self.connection).await
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), QueueError> {
        publish_confirmed(&self.channel, exchange, routing_key, body, properties).await
    }

    /// Depth and consumers of every queue of the topology (passive declares: nothing changes).
    pub async fn queue_stats(&self) -> Result<Vec<QueueStats>, QueueError> {
        let mut stats = Vec::new();
        for name in self.topology.queues() {
            let passive = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            let queue = self
                .channel
                .queue_declare(name.clone().into(), passive, FieldTable::default())
                .await
                .map_err(|source| amqp(&format!("inspect queue {name}"), source))?;
            stats.push(QueueStats {
                name,
                messages: queue.message_count(),
                consumers: queue.consumer_count(),
            });
        }
        Ok(stats)
    }

    /// Consumers of the work queue: how many workers are taking jobs right now.
    pub async fn consumer_count(&self) -> Result<u32, QueueError> {
        let stats = self.queue_stats().await?;
        Ok(stats.first().map_or(0, |s| s.consumers))
    }

    /// Closes cleanly; anything read but not acknowledged goes back to its queue.
    pub async fn close(self) {
        let _ = self.channel.close(200, "bye".into()).await;
        let _ = self.connection.close(200, "bye".into()).await;
    }
}
