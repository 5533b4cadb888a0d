//! A Kafka topic receiver (librdkafka's in-process mock cluster): every routed transition is
//! one message keyed `rule/entity`, in order per alert, with the `webhook-id` header.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::webhook_support::{route, transition};
use citybrain_connectors::dispatch::{
    Dispatcher, KafkaConnection, KafkaKey, KafkaReceiverSettings, ReceiverKind, ReceiverSettings,
    Submitted,
};
use citybrain_model::TransitionState::{Firing, Resolved};
use citybrain_tests::MockKafka;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};

const T0: u64 = 1_795_910_400_000;

#[test]
fn transitions_become_keyed_messages_with_the_webhook_id_header() {
    let kafka = MockKafka::new(&[("dispatch.alerts", 1)]);
    let dir = tempfile::tempdir().unwrap();
    let mut s = citybrain_connectors::dispatch::DispatchSettings::new(dir.path());
    s.kafka = Some(KafkaConnection {
        brokers: kafka.brokers.clone(),
        properties: Vec::new(),
    });
    s.receivers.push(ReceiverSettings::new(
        "bus",
        ReceiverKind::Kafka(KafkaReceiverSettings {
            topic: "dispatch.alerts".into(),
            key: KafkaKey::Alert,
            timeout: Duration::from_secs(5),
        }),
    ));
    s.routes.push(route(&["domain = \"mine\""], &["bus"]));
    let dispatcher = Dispatcher::start(s, &prometheus::Registry::new()).unwrap();
    let a = transition("ch4-alarm", "s1", Firing, T0);
    let b = transition("ch4-alarm", "s2", Firing, T0 + 1);
    let a_resolved = transition("ch4-alarm", "s1", Resolved, T0 + 2);
    for t in [&a, &b, &a_resolved] {
        assert_eq!(dispatcher.submit(t).unwrap(), Submitted::Queued(1));
    }
    assert!(dispatcher.wait_idle(Duration::from_secs(15)));
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();

    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", "webhook-kafka-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition_offset("dispatch.alerts", 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&list).unwrap();
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 3 && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let value: serde_json::Value =
                serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            let headers = m.headers().unwrap();
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            got.push((
                key,
                value["id"].as_str().unwrap_or_default().to_string(),
                header("webhook-id"),
                header("citybrain-id"),
            ));
        }
    }
    let expect = |t: &citybrain_model::AlertTransition| {
        (
            format!("{}/{}", t.rule, t.entity),
            t.id.clone(),
            Some(t.id.clone()),
            Some(t.id.clone()),
        )
    };
    // s1's firing strictly before its resolved; s2 anywhere.
    let mut sorted = got.clone();
    sorted.sort();
    let mut expected = vec![expect(&a), expect(&b), expect(&a_resolved)];
    expected.sort();
    assert_eq!(sorted, expected);
    let pos = |id: &str| got.iter().position(|g| g.1 == id).unwrap();
    assert!(pos(&a.id) < pos(&a_resolved.id));
}
