"""edge-camera --mqtt --homeassistant against a real Home Assistant, not a schema copied into a test.

.ci/run installs Home Assistant 2024.1 (the last release that runs on Python 3.11) in .ha-venv from
tools/homeassistant/requirements.txt. The test starts it with its MQTT integration on a real mosquitto on
loopback, runs edge-camera on a clip, and reads what Home Assistant made of the discovery messages from its own
recorder database: the entities it created, the states and attributes it took from edge-camera's messages, and
"unavailable" once edge-camera stops (the availability topic). Without Home Assistant or mosquitto it skips,
saying why."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_camera import _video
from tests.test_mqtt import Broker, _free_port, _need_broker

BIN = Path(sys.executable).parent
HASS = Path(os.environ.get("EDGEKIT_HASS") or ROOT / ".ha-venv" / "bin" / "hass")
READY = "Subscribing to homeassistant/+/+/config"  # the MQTT integration is connected and listening for discovery


def _config(folder: Path, broker_port: int) -> Path:
    """A minimal Home Assistant configuration: HTTP on a free loopback port, the recorder committing every
    second, and the MQTT integration as the config entry its setup flow would store."""
    (folder / ".storage").mkdir(parents=True)
    (folder / "configuration.yaml").write_text(
        "homeassistant:\n  name: edgekit-test\n  latitude: 0\n  longitude: 0\n  elevation: 0\n"
        "  unit_system: metric\n  time_zone: UTC\n  currency: EUR\n  country: NL\n"
        f"http:\n  server_host: 127.0.0.1\n  server_port: {_free_port()}\n"
        "recorder:\n  commit_interval: 1\n"
        "logger:\n  default: warning\n  logs:\n    homeassistant.components.mqtt.client: debug\n"
        "    homeassistant.components.mqtt.discovery: info\n")
    entry = {"entry_id": "edgekittest0000000000000000mqtt", "version": 1, "minor_version": 1, "domain": "mqtt",
             "title": "127.0.0.1", "data": {"broker": "127.0.0.1", "port": broker_port, "discovery": True},
             "options": {}, "pref_disable_new_entities": False, "pref_disable_polling": False, "source": "user",
             "unique_id": None, "disabled_by": None}
    (folder / ".storage" / "core.config_entries").write_text(json.dumps(
        {"version": 1, "minor_version": 1, "key": "core.config_entries", "data": {"entries": [entry]}}))
    return folder


def _wait_for(predicate, what: str, log: Path, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"Home Assistant: {what} within {timeout:g} s; its log ends:\n"
                         + log.read_text(errors="replace")[-3000:])


def _states(db: Path) -> list[tuple[str, str, dict]]:
    """(entity_id, state, attributes) of every recorded state of edge-camera's entities, oldest first."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            rows = con.execute(
                "SELECT m.entity_id, s.state, a.shared_attrs FROM states s "
                "JOIN states_meta m ON s.metadata_id = m.metadata_id "
                "LEFT JOIN state_attributes a ON s.attributes_id = a.attributes_id "
                "WHERE m.entity_id LIKE '%edge_camera%' ORDER BY s.state_id").fetchall()
    except sqlite3.OperationalError:  # the recorder has not created its tables yet
        return []
    return [(e, s, json.loads(a) if a else {}) for e, s, a in rows]


def test_home_assistant_discovers_the_camera_and_records_its_labels(rgb_onnx, tmp_path):
    if not HASS.is_file():
        pytest.skip(f"Home Assistant is not installed at {HASS} (.ci/run installs it: python3.11 -m venv .ha-venv "
                    "&& .ha-venv/bin/pip install --no-deps -r tools/homeassistant/requirements.txt)")
    _need_broker()
    broker = Broker(tmp_path)
    config = _config(tmp_path / "ha", broker.port)
    log = tmp_path / "hass.log"
    with open(log, "wb") as out:
        hass = subprocess.Popen([str(HASS), "-c", str(config), "--skip-pip"], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: hass.poll() is not None or READY in log.read_text(errors="replace"),
                  "the MQTT integration did not connect", log)
        assert hass.poll() is None, log.read_text(errors="replace")[-3000:]
        labels = _video(tmp_path / "clip.avi", n=90)
        cam = subprocess.run([str(BIN / "edge-camera"), str(rgb_onnx), "--source", str(tmp_path / "clip.avi"),
                              "--realtime", "--headless", "--homeassistant",
                              "--mqtt", f"mqtt://127.0.0.1:{broker.port}/edge/shelf"],
                             capture_output=True, text=True, timeout=300)
        assert cam.returncode == 0, cam.stderr
        db = config / "home-assistant_v2.db"
        # edge-camera's clean stop publishes "offline": Home Assistant marks both entities unavailable
        states = _wait_for(lambda: (s := _states(db)) and s[-1][1] == "unavailable" and
                           any(st in labels for _e, st, _a in s) and s, "no states recorded for edge-camera", log)
    finally:
        hass.send_signal(signal.SIGTERM)
        try:
            hass.wait(timeout=60)
        except subprocess.TimeoutExpired:
            hass.kill()
        broker.stop()
    entities = {e for e, _s, _a in states}
    sensors = [e for e in entities if e.startswith("sensor.")]
    cameras = [e for e in entities if e.startswith("camera.")]
    assert len(sensors) == 1 and len(cameras) == 1, entities
    shown = [(s, a) for e, s, a in states if e == sensors[0] and s in labels]
    # the label is the state; the score, the top k, fps and the source are its attributes
    assert {s for s, _a in shown} == set(labels), shown
    for state, attrs in shown:
        assert attrs["predictions"][0]["label"] == state and attrs["score"] == attrs["predictions"][0]["score"]
        assert 0 < attrs["score"] <= 1 and attrs["fps"] >= 0 and attrs["source"].endswith("clip.avi")
    assert all(s in ("unavailable", "unknown", "idle") for e, s, _a in states if e == cameras[0])
    assert {s for e, s, _a in states if e == cameras[0]} >= {"idle", "unavailable"}  # was available, then not
    text = log.read_text(errors="replace")
    assert "Found new component: sensor" in text and "Found new component: camera" in text
    errors = [ln for ln in text.splitlines() if " ERROR " in ln and "mqtt" in ln.lower()]
    assert not errors, errors
