"""--mqtt: predictions to an MQTT broker, with paho-mqtt (the extra ``edgekit[mqtt]``, imported only here, when
--mqtt is given), and Home Assistant's MQTT discovery (--homeassistant).

Topics under the base topic T (T/camN/... for source N when there are several sources):

- ``T/state``: one JSON message per change of the top label (or ``rate`` a second): label, score, the top k,
  fps, the source, the frame number and an ISO 8601 timestamp;
- ``T/snapshot``: the frame as a JPEG, sent when anything publishes to ``T/snapshot/get`` (and, with
  --homeassistant, at each label change, so that the camera entity shows what changed);
- ``T/availability`` (retained): "online" once connected, "offline" on a clean stop, and "offline" from the
  broker as the last will when the process dies or loses the network.

The frame loop never waits on the network: it only appends to a bounded queue (the oldest message is dropped
and counted when the broker is away). A sender thread hands queued messages to paho while connected, and
paho's own network thread (loop_start) connects, reconnects with backoff (1 s doubling to 30 s) and writes.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from datetime import datetime, timezone

from edgekit.runtime.camera._mqtt_options import MqttOptions, node_id

QUEUE_SIZE = 256  # messages waiting for the broker; older ones are dropped (and counted) first
DISCOVERY_PREFIX = "homeassistant"


def discovery_configs(options: MqttOptions, sources: list[str], model: str, version: str) -> list[tuple[str, dict]]:
    """Home Assistant's MQTT discovery messages (topic, config): per source, a sensor (the label, with the score,
    the top k and fps as attributes) and a camera (the snapshot topic), all on one device."""
    node = node_id(options.topic)
    device = {"identifiers": [f"edgekit_{node}"], "name": f"edge-camera {options.topic}", "model": model,
              "manufacturer": "edgekit", "sw_version": version}
    availability = [{"topic": options.availability_topic, "payload_available": "online",
                     "payload_not_available": "offline"}]
    origin = {"name": "edgekit", "sw_version": version}
    configs = []
    for i, _source in enumerate(sources):
        prefix = options.prefix(i, len(sources))
        camera = "" if len(sources) == 1 else f"camera {i} "
        configs.append((f"{DISCOVERY_PREFIX}/sensor/{node}/cam{i}_label/config", {
            "name": f"{camera}label".capitalize(), "unique_id": f"{node}_cam{i}_label", "icon": "mdi:eye",
            "state_topic": f"{prefix}/state", "value_template": "{{ value_json.label }}",
            "json_attributes_topic": f"{prefix}/state",
            "json_attributes_template": "{{ {'score': value_json.score, 'predictions': value_json.predictions, "
                                        "'fps': value_json.fps, 'source': value_json.source} | tojson }}",
            "availability": availability, "device": device, "origin": origin}))
        configs.append((f"{DISCOVERY_PREFIX}/camera/{node}/cam{i}_snapshot/config", {
            "name": f"{camera}snapshot".capitalize(), "unique_id": f"{node}_cam{i}_snapshot",
            "topic": f"{prefix}/snapshot", "availability": availability, "device": device, "origin": origin}))
    return configs


class MqttPublisher:
    """Publishes the records of ``sources`` (their shown names) to the broker of ``options``.

    ``frame(index, frame, record)`` is all the frame loop calls; it never blocks on the network."""

    def __init__(self, options: MqttOptions, sources: list[str], *, model: str = "", log=print,
                 queue_size: int = QUEUE_SIZE):
        from edgekit._version import __version__
        from edgekit.lazy import require

        mqtt = require("paho.mqtt.client", extra="mqtt")
        self.options, self.sources, self.log = options, list(sources), log
        self.count = len(self.sources)
        self._prefixes = [options.prefix(i, self.count) for i in range(self.count)]
        self._discovery = discovery_configs(options, self.sources, model, __version__) if options.homeassistant else []
        self._cond = threading.Condition()
        self._queue: deque = deque()
        self._queue_size = queue_size
        self._closing = False
        self.connected = False
        self.dropped = 0  # messages dropped because the queue was full (the broker away or slow)
        self.sent = 0
        self.connects = 0
        self._said_down = False
        self._want_snapshot = [False] * self.count
        self._last_label: list = [object()] * self.count
        self._next_time = [float("-inf")] * self.count  # --mqtt-rate: when the next message is due
        self._client = self._make_client(mqtt)
        self._sender = threading.Thread(target=self._send_loop, name="edgekit-mqtt-send", daemon=True)
        self._sender.start()
        self._client.connect_async(options.host, options.port, keepalive=30)
        self._client.loop_start()
        log(f"edge-camera: MQTT {options.url}: publishing to {self._prefixes[0]}/state"
            + (f" (and {self.count - 1} more sources)" if self.count > 1 else "")
            + (f"; Home Assistant discovery under {DISCOVERY_PREFIX}/" if options.homeassistant else ""))

    def _make_client(self, mqtt):
        o = self.options
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=o.client_id, clean_session=True)
        if o.username is not None:
            client.username_pw_set(o.username, o.password)
        if o.tls:
            import ssl

            client.tls_set(cert_reqs=ssl.CERT_NONE if o.insecure else ssl.CERT_REQUIRED)
            client.tls_insecure_set(o.insecure)
        client.will_set(o.availability_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    # paho's network thread
    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            self._down(f"the broker refused the connection ({reason_code})")
            return
        client.publish(self.options.availability_topic, "online", qos=1, retain=True)
        for topic, config in self._discovery:
            client.publish(topic, json.dumps(config), qos=1, retain=True)
        for prefix in self._prefixes:
            client.subscribe(f"{prefix}/snapshot/get", qos=0)
        with self._cond:
            self.connected = True
            self.connects += 1
            self._cond.notify_all()
        if self._said_down or self.connects > 1:
            self.log(f"edge-camera: MQTT {self.options.url}: connected again")
        self._said_down = False

    def _on_connect_fail(self, _client, _userdata) -> None:
        if self._said_down:
            self._down("cannot reach the broker")  # said once already: no probe on every retry
            return
        self._down(self._tls_problem() or "cannot reach the broker")

    def _tls_problem(self) -> str | None:
        """Why a TLS broker that answers was not accepted (paho says only that the connection failed, and an
        untrusted certificate looks like a network fault): one handshake of our own, on the first failure."""
        o = self.options
        if not o.tls or o.insecure:
            return None
        import socket
        import ssl

        try:
            with socket.create_connection((o.host, o.port), timeout=3) as sock, \
                    ssl.create_default_context().wrap_socket(sock, server_hostname=o.host):
                return None
        except ssl.SSLCertVerificationError as exc:
            return (f"the broker's TLS certificate is not trusted ({exc.verify_message}): install its CA in the "
                    "system's store, or --mqtt-insecure to skip the check")
        except (OSError, ValueError):
            return None

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        if not self._closing:
            self._down(f"disconnected ({reason_code})")

    def _down(self, why: str) -> None:
        with self._cond:
            self.connected = False
        if not self._said_down and not self._closing:
            self._said_down = True
            self.log(f"edge-camera: MQTT {self.options.url}: {why}; retrying with backoff (frames go on, "
                     f"up to {self._queue_size} messages wait)")

    def _on_message(self, _client, _userdata, message) -> None:
        for i, prefix in enumerate(self._prefixes):
            if message.topic == f"{prefix}/snapshot/get":
                self._want_snapshot[i] = True

    # the frame loop's side
    def _put(self, topic: str, payload, *, retain: bool = False) -> None:
        with self._cond:
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append((topic, payload, retain))
            self._cond.notify_all()

    def frame(self, index: int, frame, record: dict, now: float) -> None:
        """Queue what this frame of source ``index`` publishes: its state when the top label changed (or the
        rate allows), a snapshot when one was asked for (or, for Home Assistant, with a label change)."""
        prefix = self._prefixes[index]
        label = record.get("label")
        rate = self.options.rate
        changed = label != self._last_label[index]
        due = now >= self._next_time[index] if rate else changed
        if due:
            if rate:  # on a grid of 1/rate, so that frames just slower than the rate are all sent
                late = now - self._next_time[index] >= 1.0 / rate
                self._next_time[index] = now + 1.0 / rate if late else self._next_time[index] + 1.0 / rate
            state = {"source": self.sources[index], "camera": index, "label": label, "score": record.get("score"),
                     "predictions": record.get("predictions", []), "fps": record.get("fps"),
                     "frame": record.get("frame"),
                     "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
            for key in ("file", "box"):
                if key in record:
                    state[key] = record[key]
            self._put(f"{prefix}/state", json.dumps(state))
        self._last_label[index] = label
        if self._want_snapshot[index] or (changed and self.options.homeassistant):
            self._want_snapshot[index] = False
            jpeg = _jpeg(frame)
            if jpeg is not None:
                self._put(f"{prefix}/snapshot", jpeg)

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not (self._closing or (self.connected and self._queue)):
                    self._cond.wait(0.5)
                if not (self.connected and self._queue):
                    return
                topic, payload, retain = self._queue.popleft()
            info = self._client.publish(topic, payload, qos=0, retain=retain)
            if info.rc == 0:
                self.sent += 1
            else:
                self.dropped += 1

    def close(self, timeout: float = 3.0) -> None:
        """Send what is queued (while connected, for up to ``timeout`` seconds), say "offline" (retained), then
        disconnect."""
        import time

        deadline = time.monotonic() + timeout
        with self._cond:  # while connected, or still trying for the first time (not when the broker is away)
            while (self.connected or not (self.connects or self._said_down)) and self._queue \
                    and time.monotonic() < deadline:
                self._cond.wait(0.05)
            self._closing = True
            self._cond.notify_all()
        self._sender.join(timeout=max(0.1, deadline - time.monotonic()))
        with self._cond:  # what never reached the broker counts as dropped
            self.dropped += len(self._queue)
            self._queue.clear()
        try:
            if self.connected:
                info = self._client.publish(self.options.availability_topic, "offline", qos=1, retain=True)
                info.wait_for_publish(timeout=max(0.5, deadline - time.monotonic()))
        except (RuntimeError, ValueError):  # the connection went away meanwhile: the broker sends the will
            pass
        finally:
            self._client.disconnect()
            self._client.loop_stop()

    def describe(self) -> str:
        return f"MQTT: {self.sent} messages sent, {self.dropped} dropped"


def _jpeg(frame, quality: int = 80) -> bytes | None:
    from edgekit.pixels import opencv

    cv2 = opencv()
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes() if ok else None
