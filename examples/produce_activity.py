"""Produce one UserActivityEvent to game.user-activity, as a game server would.

    pip install "confluent-kafka[avro,schemaregistry]"
    python3 examples/produce_activity.py <user-id> QUEST_COMPLETED --quest dragon-slayer

The schema is the project's own schemas/user-activity-event.avsc. The platform registers it
under the TopicRecordName subject `game.user-activity-rewards.events.UserActivityEvent` when
the event service starts, so the serializer runs with automatic registration off, as
production producers do: it looks the schema up, and frames the record the Confluent way
with the id it finds.
"""

import argparse
import os
import pathlib
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

TOPIC = "game.user-activity"
SCHEMA = pathlib.Path(__file__).parent.parent / "schemas" / "user-activity-event.avsc"


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (version 7, RFC 9562): 48 bits of Unix milliseconds, then random.

    Ids that grow with time keep the platform's inbox index cheap (see the README);
    Python's uuid module has uuid7() only from 3.14.
    """
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 9562 variant
    return uuid.UUID(int=value)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("user_id")
    args.add_argument(
        "activity",
        choices=["LOGIN", "QUEST_COMPLETED", "ITEM_ACQUIRED", "ITEM_USED", "LEVEL_UP"],
    )
    args.add_argument("--quest")
    args.add_argument("--item")
    args.add_argument("--count", type=int)
    args.add_argument("--level", type=int)
    args.add_argument("--brokers", default="127.0.0.1:9092")
    args.add_argument("--registry", default="http://127.0.0.1:8081/apis/ccompat/v7")
    a = args.parse_args()

    registry = SchemaRegistryClient({"url": a.registry})
    serialize = AvroSerializer(
        registry,
        SCHEMA.read_text(),
        conf={
            "subject.name.strategy": topic_record_subject,
            # Look the schema up; never register it from a game server.
            "auto.register.schemas": False,
        },
    )
    producer = Producer({
        "bootstrap.servers": a.brokers,
        "enable.idempotence": True,  # acks=all, no duplicates from producer retries
    })

    event = {
        "envelope": {
            # Unique per fact: consumers drop a second message with the same id, so a
            # game server that re-sends after a timeout must re-send the same id.
            "messageId": str(uuid7()),
            "occurredAt": int(time.time() * 1000),
            "producer": "example-game-server",
            "correlationId": None,
        },
        "userId": a.user_id,
        "activityType": a.activity,
        "questId": a.quest,
        "itemCode": a.item,
        "itemCount": a.count,
        "newLevel": a.level,
    }
    value = serialize(event, SerializationContext(TOPIC, MessageField.VALUE))
    # Keyed by user id: one player's activity stays in order on one partition.
    producer.produce(
        TOPIC,
        key=a.user_id.encode(),
        value=value,
        headers={"message-id": event["envelope"]["messageId"]},
        on_delivery=report,
    )
    producer.flush(10)


def topic_record_subject(ctx: SerializationContext, record_name: str) -> str:
    # The platform's subjects are <topic>-<record full name> (TopicRecordNameStrategy).
    return f"{ctx.topic}-{record_name}"


def report(err, msg) -> None:
    if err is not None:
        raise SystemExit(f"not delivered: {err}")
    print(f"delivered to {msg.topic()} partition {msg.partition()} offset {msg.offset()}")


if __name__ == "__main__":
    main()
