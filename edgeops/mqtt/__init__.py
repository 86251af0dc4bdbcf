"""The MQTT link shared by the agent and the fleet manager.

* :class:`Link` — the interface (connect, publish with a broker acknowledgement, subscribe,
  last will, connection callbacks); both sides take one, so unit tests pass a fake.
* :class:`PahoLink` — on a real broker with paho-mqtt 2.x (imported when first used).
* :class:`FakeBroker` / :class:`FakeLink` — in memory, for unit tests.
* :class:`MqttSettings` — how to reach the broker; :func:`parse_mqtt_url`.
* :func:`publish_bundle` / :class:`BundleFetcher` — a bundle as retained chunks, fetched
  with resume after reconnects.

Transport failures raise :class:`~edgeops.errors.TransportError`; malformed topics and
messages :class:`~edgeops.errors.ProtocolError`.
"""

from edgeops.mqtt.bundles import BundleFetcher, fetch_bundle, publish_bundle, unpublish_bundle
from edgeops.mqtt.fake import FakeBroker, FakeLink
from edgeops.mqtt.link import (
    Ack,
    ConnectCallback,
    DisconnectCallback,
    EventAck,
    Link,
    Message,
    MessageHandler,
    PublishHandle,
)
from edgeops.mqtt.paho import PahoLink
from edgeops.mqtt.settings import Backoff, MqttSettings, TlsSettings, Will, parse_mqtt_url

__all__ = [
    "Ack",
    "Backoff",
    "BundleFetcher",
    "ConnectCallback",
    "DisconnectCallback",
    "EventAck",
    "FakeBroker",
    "FakeLink",
    "Link",
    "Message",
    "MessageHandler",
    "MqttSettings",
    "PahoLink",
    "PublishHandle",
    "TlsSettings",
    "Will",
    "fetch_bundle",
    "parse_mqtt_url",
    "publish_bundle",
    "unpublish_bundle",
]
