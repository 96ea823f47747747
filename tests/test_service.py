"""edge-camera as a systemd service: the unit generated for a command line (exactly), the quoting of odd
arguments, secrets kept out of the unit, install/uninstall of a user unit, and `systemd-analyze verify` on
the unit edge-camera prints (where systemd-analyze can run here)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.errors import EdgekitError, InputFileError, OutputExistsError
from edgekit.runtime.camera import Service, install_service, service_args, uninstall_service
from edgekit.runtime.camera._service import quote

BIN = Path(sys.executable).parent
OPTIONS = {"--source": True, "--serve": True, "--token": True, "--mqtt": True, "--force": False, "--record": True,
           "--headless": False, "--systemd-unit": True, "--install-service": True, "--uninstall-service": True,
           "--homeassistant": False, "--mqtt-rate": True, "--mqtt-insecure": False}

EXPECTED = """\
# written by edge-camera --systemd-unit; edit the command line by running that again
[Unit]
Description=edge-camera shelf
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
User=pi
WorkingDirectory=/home/pi/cam 100%%
EnvironmentFile=/etc/edgekit/shelf.env
Environment=PYTHONUNBUFFERED=1
ExecStart=/home/pi/venv/bin/edge-camera model.tflite --source picamera --source "my clip.mp4" --serve 0.0.0.0:8080 \
--mqtt mqtt://cam@broker.local/home/shelf --homeassistant
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
"""


def test_the_unit_for_a_command_line_is_exactly_this():
    argv = ["model.tflite", "--source", "picamera", "--source=my clip.mp4", "--serve", "0.0.0.0:8080", "--token",
            "abcdefgh123", "--mqtt", "mqtt://cam:pa%2Fss@broker.local/home/shelf", "--homea", "--install", "shelf",
            "--force"]
    args, secrets = service_args(argv, OPTIONS, environ={})
    assert args == ("model.tflite", "--source", "picamera", "--source", "my clip.mp4", "--serve", "0.0.0.0:8080",
                    "--mqtt", "mqtt://cam@broker.local/home/shelf", "--homeassistant")
    assert secrets == {"EDGE_CAMERA_TOKEN": "abcdefgh123", "EDGE_CAMERA_MQTT_PASSWORD": "pa/ss"}
    service = Service("shelf.service", args, True, user="pi", workdir="/home/pi/cam 100%",
                      executable=("/home/pi/venv/bin/edge-camera",), secrets=secrets)
    assert service.unit() == EXPECTED
    assert "abcdefgh123" not in repr(service) and service.env_text() == (
        "# written by edge-camera --install-service shelf: its secrets, readable by their owner only\n"
        'EDGE_CAMERA_MQTT_PASSWORD="pa/ss"\nEDGE_CAMERA_TOKEN="abcdefgh123"\n')
    user = Service("shelf", args, False, user="pi", workdir="/w", executable=("/v/bin/edge-camera",))
    text = user.unit(home=Path("/home/pi"))
    assert "User=" not in text and "WantedBy=default.target" in text and "EnvironmentFile" not in text
    assert user.unit_path(Path("/home/pi")) == Path("/home/pi/.config/systemd/user/shelf.service")


def test_force_and_secrets_from_the_environment():
    args, secrets = service_args(["m.onnx", "--record", "out.mp4", "--force", "--serve", "8080", "--mqtt",
                                  "mqtt://u@b/t"], OPTIONS,
                                 environ={"EDGE_CAMERA_TOKEN": "fromenv123", "EDGE_CAMERA_MQTT_PASSWORD": "pw"})
    assert args[-1] == "--force"  # kept with --record: a restart must be able to replace the recording
    assert secrets == {"EDGE_CAMERA_TOKEN": "fromenv123", "EDGE_CAMERA_MQTT_PASSWORD": "pw"}
    args, secrets = service_args(["m.onnx", "--force", "--", "--source"], OPTIONS, environ={"EDGE_CAMERA_TOKEN": "x"})
    assert args == ("m.onnx", "--", "--source") and secrets == {}


def test_quoting_of_odd_arguments():
    assert quote("plain/path-1.mp4") == "plain/path-1.mp4"
    assert quote("a b") == '"a b"' and quote("50%") == "50%%" and quote("$HOME") == '"$$HOME"'
    assert quote('say "hi" \\ now') == '"say \\"hi\\" \\\\ now"' and quote("") == '""' and quote("it's") == '"it\'s"'
    for bad in ("a\nb", "tab\there", "\x1b[31m"):
        with pytest.raises(EdgekitError, match="control character"):
            quote(bad)
    with pytest.raises(EdgekitError, match="service name"):
        Service("../evil", (), False, executable=("x",))


def test_install_and_uninstall_a_user_unit(tmp_path):
    home = tmp_path / "home"
    log: list[str] = []
    service = Service("cam", ("m.onnx", "--serve", "8080"), False, workdir=str(tmp_path),
                      executable=("/v/bin/edge-camera",), secrets={"EDGE_CAMERA_TOKEN": "abcdefgh123"})
    path = install_service(service, home=home, log=log.append)
    assert path == home / ".config/systemd/user/cam.service" and path.read_text() == service.unit(home)
    env = home / ".config/edgekit/cam.env"
    assert env.read_text().endswith('\nEDGE_CAMERA_TOKEN="abcdefgh123"\n') and stat.S_IMODE(env.stat().st_mode) == 0o600
    assert f"EnvironmentFile={env}" in path.read_text() and "abcdefgh123" not in path.read_text()
    assert "a user unit (systemctl --user)" in log[0] and "abcdefgh123" not in " ".join(log)
    assert "systemctl --user enable --now cam" in log[1]
    with pytest.raises(OutputExistsError, match=r"cam\.service: already exists"):
        install_service(service, home=home, log=log.append)
    install_service(service, force=True, home=home, log=log.append)
    wants = path.parent / "default.target.wants"  # as `systemctl --user enable` leaves it
    wants.mkdir()
    (wants / "cam.service").symlink_to(path)
    removed = uninstall_service("cam", system=False, home=home, log=log.append)
    assert set(removed) == {path, env, wants / "cam.service"} and not path.exists() and not env.exists()
    with pytest.raises(InputFileError, match="no such unit"):
        uninstall_service("cam", system=False, home=home, log=log.append)


def test_a_unit_reinstalled_without_secrets_leaves_none_of_the_old_ones(tmp_path):
    home = tmp_path / "home"
    kw = dict(workdir=str(tmp_path), executable=("/v/bin/edge-camera",))
    install_service(Service("cam", ("m.onnx", "--serve", "8080"), False, secrets={"EDGE_CAMERA_TOKEN": "abcdefgh123"},
                            **kw), home=home, log=lambda m: None)
    env = home / ".config/edgekit/cam.env"
    assert env.exists()
    path = install_service(Service("cam", ("m.onnx", "--serve", "8080"), False, **kw), force=True, home=home,
                           log=lambda m: None)
    assert not env.exists() and "EnvironmentFile" not in path.read_text()


def test_units_and_files_edge_camera_did_not_write_are_never_replaced_or_removed(tmp_path):
    """Found by a review: --uninstall-service removed any unit of the name (sshd's alias, say), and
    --install-service --force replaced one, or shadowed a package's unit of the same name."""
    home = tmp_path / "home"
    kw = dict(workdir=str(tmp_path), executable=("/v/bin/edge-camera",))
    units = home / ".config/systemd/user"
    units.mkdir(parents=True)
    foreign = units / "cam.service"
    foreign.write_text("[Service]\nExecStart=/bin/true\n")
    wants = units / "default.target.wants"
    wants.mkdir()
    (wants / "cam.service").symlink_to(foreign)
    env = home / ".config/edgekit/cam.env"
    env.parent.mkdir(parents=True)
    env.write_text("KEEP=1\n")
    with pytest.raises(InputFileError, match="was not written by edge-camera; nothing was removed"):
        uninstall_service("cam", system=False, home=home, log=lambda m: None)
    with pytest.raises(InputFileError, match="was not written by edge-camera; --force never replaces it"):
        install_service(Service("cam", ("m.onnx",), False, **kw), force=True, home=home, log=lambda m: None)
    assert foreign.read_text().startswith("[Service]") and (wants / "cam.service").is_symlink()
    # edge-camera's own unit beside someone's file of secrets: the unit goes, their file stays
    foreign.unlink()
    install_service(Service("cam", ("m.onnx",), False, **kw), home=home, log=lambda m: None)
    assert env.read_text() == "KEEP=1\n"
    with pytest.raises(InputFileError, match=r"cam\.env: was not written by edge-camera"):
        install_service(Service("cam", ("m.onnx",), False, secrets={"EDGE_CAMERA_TOKEN": "abcdefgh123"}, **kw),
                        force=True, home=home, log=lambda m: None)
    log: list[str] = []
    assert uninstall_service("cam", system=False, home=home, log=log.append) == [units / "cam.service",
                                                                                  wants / "cam.service"]
    assert env.read_text() == "KEEP=1\n" and "left" in log[0]
    # a unit a package installed under the name: ours would take its place at the next boot
    vendor = home / ".local/share/systemd/user/cam.service"
    vendor.parent.mkdir(parents=True)
    vendor.write_text("[Service]\nExecStart=/bin/true\n")
    with pytest.raises(InputFileError, match=r"would replace the unit .*cam\.service that is already installed"):
        install_service(Service("cam", ("m.onnx",), False, **kw), force=True, home=home, log=lambda m: None)
    assert not (units / "cam.service").exists()


@pytest.mark.parametrize("name", ["@", "cam@", "@cam", "@.service"])
def test_template_unit_names_are_refused(name):
    with pytest.raises(EdgekitError, match="not a template"):
        Service(name, (), False, executable=("/v/bin/edge-camera",))


def _analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package)")
    return exe


def _verify(exe: str, unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, timeout=60)


def test_systemd_analyze_verify_accepts_the_printed_unit(rgb_onnx, tmp_path):
    exe = _analyze()
    probe = tmp_path / "edgekit-probe.service"
    probe.write_text(f"[Service]\nExecStart={shutil.which('true')}\n")
    r = _verify(exe, probe)
    if r.returncode != 0:
        pytest.skip(f"systemd-analyze verify does not work here: {(r.stderr or r.stdout).strip()[:200]}")
    odd = tmp_path / "odd 50% \"dir\""
    odd.mkdir()
    r = subprocess.run([str(BIN / "edge-camera"), str(rgb_onnx), "--source", str(odd), "--headless", "--top-k", "2",
                        "--systemd-unit", "edge-cam"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    unit = tmp_path / "edge-cam.service"
    unit.write_text(r.stdout)
    assert f"ExecStart={BIN / 'edge-camera'} {rgb_onnx} --source " in r.stdout
    assert '"' + str(odd).replace("%", "%%").replace('"', '\\"') + '"' in r.stdout
    assert f"WorkingDirectory={tmp_path}" in r.stdout
    if os.geteuid() == 0:
        assert "User=" in r.stdout and "WantedBy=multi-user.target" in r.stdout
    r = _verify(exe, unit)
    assert r.returncode == 0, r.stderr
    broken = tmp_path / "broken.service"  # the check can fail: a missing executable is reported
    broken.write_text(unit.read_text().replace(str(BIN / "edge-camera"), "/nonexistent/edge-camera"))
    assert _verify(exe, broken).returncode != 0


def test_the_command_line_checks_everything_first_and_never_prints_secrets(rgb_onnx, tmp_path):
    cmd = [str(BIN / "edge-camera"), str(rgb_onnx), "--source", "0"]
    r = subprocess.run([*cmd, "--serve", "8080", "--token", "abcdefgh123", "--mqtt", "mqtt://u:pw-secret@b/t",
                        "--systemd-unit", "cam"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "abcdefgh123" not in r.stdout + r.stderr and "pw-secret" not in r.stdout + r.stderr
    assert "EDGE_CAMERA_MQTT_PASSWORD, EDGE_CAMERA_TOKEN" in r.stderr
    for extra, message in ((["--systemd-unit", "bad/name"], "service name"),
                           (["--threshold", "2", "--systemd-unit", "cam"], "--threshold"),
                           (["--systemd-unit", "a", "--install-service", "b"], "not allowed with")):
        r = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and message in r.stderr, r.stderr
    r = subprocess.run([str(BIN / "edge-camera"), str(tmp_path / "missing.onnx"), "--systemd-unit", "cam"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "missing.onnx" in r.stderr and "[Unit]" not in r.stdout
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    r = subprocess.run([str(BIN / "edge-camera"), "--uninstall-service", "no-such-unit"], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 2 and "no such unit; nothing was removed" in r.stderr


def test_install_service_from_the_command_line(rgb_onnx, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("as root, --install-service writes to /etc/systemd/system (the Python API test covers it)")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    cmd = [str(BIN / "edge-camera"), str(rgb_onnx), "--source", "0", "--headless", "--install-service", "cam"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0 and "a user unit (systemctl --user)" in r.stderr, r.stderr
    assert (tmp_path / "cfg/systemd/user/cam.service").is_file()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "already exists (use --force" in r.stderr
    r = subprocess.run([str(BIN / "edge-camera"), "--uninstall-service", "cam"], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 0 and not (tmp_path / "cfg/systemd/user/cam.service").exists()
