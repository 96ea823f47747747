"""--mqtt's options: the broker URL (mqtt://[user[:password]@]host[:port]/topic, or mqtts:// for TLS with the
system's CA store) parsed into a frozen dataclass that checks itself. Pure text rules: paho is not needed here.

The password never appears in a message, a repr or a log line (``shown_url``). It may also come from the
environment variable EDGE_CAMERA_MQTT_PASSWORD (what a systemd unit's EnvironmentFile sets), so that it is
not on the command line, which other users can see in the process list.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from edgekit.errors import EdgekitError

PASSWORD_ENV = "EDGE_CAMERA_MQTT_PASSWORD"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
MAX_RATE = 1000.0  # messages per second per source
_TOPIC_LEVEL = re.compile(r"[A-Za-z0-9._~-]{1,64}")


def _fail(problem: str):
    raise EdgekitError(f"--mqtt: {problem} (expected mqtt://[user:password@]host[:port]/topic or mqtts://...)")


def node_id(topic: str, limit: int = 64) -> str:
    """Home Assistant's node id for a base topic: letters, digits and _ only, at most ``limit`` characters, and
    one per topic. A topic that is already such a name is its own id; any other gets the first 8 hex digits of
    its SHA-1 (edge/cam-1 -> edge_cam_1_<8 hex>), so that edge/cam-1, edge/cam.1 and edge_cam_1 (or two long
    topics with one beginning) never share a device, an entity or an MQTT client id."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", topic)
    if safe == topic and len(topic) <= limit:
        return topic
    return f"{safe[:limit - 9]}_{hashlib.sha1(topic.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class MqttOptions:
    """Where and how edge-camera publishes: ``host``, ``port``, ``topic`` (the base topic), TLS, credentials,
    ``rate`` (None: a message when the top label changes; N: N messages a second per source) and
    ``homeassistant`` (retained discovery configs)."""

    host: str
    topic: str
    port: int | None = None
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    rate: float | None = None
    homeassistant: bool = False
    insecure: bool = False  # mqtts:// without checking the broker's certificate (tests, self-signed brokers)
    client_id: str | None = None

    def __post_init__(self):
        from edgekit.limits import check_number

        if not isinstance(self.host, str) or not re.fullmatch(r"[A-Za-z0-9._:-]{1,253}", self.host):
            _fail(f"bad host {self.host!r}")
        port = DEFAULT_PORTS["mqtts" if self.tls else "mqtt"] if self.port is None else self.port
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            _fail(f"port must be 1..65535, got {port!r}")
        object.__setattr__(self, "port", port)
        levels = self.topic.split("/") if isinstance(self.topic, str) else [""]
        if not all(_TOPIC_LEVEL.fullmatch(level) for level in levels) or len(levels) > 8:
            _fail(f"the topic {self.topic!r} must be 1 to 8 levels of letters, digits and . _ ~ - "
                  "separated by / (no wildcards), e.g. mqtt://broker/home/shelf-camera")
        if self.rate is not None:
            object.__setattr__(self, "rate", check_number(self.rate, "--mqtt-rate", low=0, high=MAX_RATE,
                                                          low_open=True))
        for name in ("username", "password"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.isprintable() or len(value) > 512):
                _fail(f"the {name} must be printable text of at most 512 characters")
        if self.password is not None and self.username is None:
            _fail("a password needs a user name: mqtt://user:password@host/topic")
        if self.insecure and not self.tls:
            raise EdgekitError("--mqtt-insecure applies to mqtts:// URLs only")
        if self.client_id is None:
            # the process id too: two edge-cameras on one host and topic (the service and a test run) with one
            # client id knock each other off the broker, once a second, for as long as both run
            object.__setattr__(self, "client_id", f"edge-camera-{node_id(socket.gethostname(), 20)}-"
                                                  f"{node_id(self.topic, 20)}-{os.getpid()}")

    @classmethod
    def parse(cls, url: str, *, password: str | None = None, **options) -> MqttOptions:
        """From a URL; ``password`` (e.g. from EDGE_CAMERA_MQTT_PASSWORD) is used when the URL has none."""
        if not isinstance(url, str) or not url.isprintable():
            _fail("not a printable URL")
        if "#" in url or "?" in url:  # urlsplit drops an empty one: mqtt://host/a/# would publish to "a"
            _fail(f"{shown_url(url)}: no # or ? (# and + are subscription wildcards, not topics to publish to; "
                  "in a password, write them as %23 and %3F)")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            _fail(f"{shown_url(url)}: {exc}")
        if parts.scheme.lower() not in DEFAULT_PORTS:
            _fail(f"{shown_url(url)}: the scheme must be mqtt:// or mqtts://")
        if not parts.hostname:
            _fail(f"{shown_url(url)}: no host")
        topic = parts.path.strip("/")
        if not topic:
            _fail(f"{shown_url(url)}: no topic, e.g. mqtt://{parts.hostname}/edge-camera/shelf")
        user = unquote(parts.username) if parts.username else None
        if parts.password is not None and user is None:  # mqtt://:pw@host/t connected anonymously, pw dropped
            _fail(f"{shown_url(url)}: a password needs a user name: mqtt://user:password@host/topic")
        pw = unquote(parts.password) if parts.password is not None else password
        return cls(host=parts.hostname, topic=topic, port=port, tls=parts.scheme.lower() == "mqtts",
                   username=user, password=pw if user else None, **options)

    @property
    def url(self) -> str:
        """The URL without the password, for messages."""
        user = f"{self.username}:***@" if self.password else f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}/{self.topic}"

    @property
    def availability_topic(self) -> str:
        return f"{self.topic}/availability"

    def prefix(self, index: int, count: int) -> str:
        """The topic under which source ``index`` of ``count`` publishes: the base topic for one source,
        base/camN for several."""
        return self.topic if count == 1 else f"{self.topic}/cam{index}"


def without_password(url: str, mask: str | None = "***") -> str:
    """``url`` with the password in its user info replaced by ``mask`` (removed, with its colon, when None). The
    user info ends at the LAST @ of the URL (topics hold none), so a password holding an unencoded @, #, ? or /
    is covered whole, even where urlsplit would cut it."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)$", url, re.S)
    if not m:
        return url
    scheme, rest = m.groups()
    userinfo, at, rest = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{user}{':' + mask if mask is not None else ''}@{rest}"


def shown_url(url: str, limit: int = 200) -> str:
    """A URL for a message: its password replaced by ***, cut to ``limit`` characters."""
    text = without_password(str(url))
    if len(text) > limit:
        text = text[:limit] + f"... ({len(text):,} characters)"
    return text if text.isprintable() else repr(text)
