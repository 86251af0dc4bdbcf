"""Broker settings, URL parsing and the reconnect backoff."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeops.errors import ConfigError
from edgeops.mqtt import Backoff, MqttSettings, TlsSettings, Will, parse_mqtt_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker.local", ("broker.local", 1883, False)),
        ("mqtts://broker.local", ("broker.local", 8883, True)),
        ("mqtt://10.0.0.2:1884", ("10.0.0.2", 1884, False)),
        ("mqtts://[::1]:9000", ("::1", 9000, True)),
    ],
)
def test_broker_urls(url, expected):
    assert parse_mqtt_url(url) == expected


@pytest.mark.parametrize(
    "url", ["http://x", "mqtt://", "mqtt://x:99999", "mqtt://x/path", "mqtt://u:p@x", "x:1883"]
)
def test_bad_broker_urls_are_config_errors(url):
    with pytest.raises(ConfigError, match="expected"):
        parse_mqtt_url(url)


def test_settings_from_url_choose_tls_by_scheme():
    plain = MqttSettings.from_url("mqtt://h:1", client_id="pi-1")
    assert (plain.host, plain.port, plain.tls) == ("h", 1, None)
    secure = MqttSettings.from_url("mqtts://h", client_id="pi-1")
    assert secure.tls == TlsSettings()
    with pytest.raises(ConfigError, match="use mqtts://"):
        MqttSettings.from_url("mqtt://h", client_id="pi-1", tls=TlsSettings())


def test_settings_are_validated_on_creation():
    with pytest.raises(ConfigError, match="client id"):
        MqttSettings(host="h", client_id="bad id")
    with pytest.raises(ConfigError, match="port"):
        MqttSettings(host="h", client_id="c", port=0)
    with pytest.raises(ConfigError, match="protocol"):
        MqttSettings(host="h", client_id="c", protocol="4")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="certfile and keyfile"):
        TlsSettings(certfile=Path("c.pem"))
    with pytest.raises(ConfigError, match="last will"):
        Will(topic="edgeops/v1/+/dev/x/state", payload=b"")
    assert "secret" not in repr(
        MqttSettings(host="h", client_id="c", username="u", password="secret")
    )


def test_backoff_grows_exponentially_to_its_cap_with_jitter_below_it():
    backoff = Backoff(min_delay=0.5, max_delay=8.0, jitter=0.5)
    assert [backoff.delay(n, lambda: 0.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff.delay(3, lambda: 1.0) == 2.0
    assert backoff.delay(1000, lambda: 0.5) == 6.0
    delays = {round(backoff.delay(4), 6) for _ in range(50)}
    assert len(delays) > 10
    assert all(4.0 <= d <= 8.0 for d in delays)
    with pytest.raises(ConfigError):
        Backoff(min_delay=2, max_delay=1)
