"""edge-bench --host: a real OpenSSH server started on a loopback port with throwaway keys is the "remote" device;
the merged report, failure rows (unreachable, no edgekit, another version), the copy-once cache and the
remote device record are checked against it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_png

BIN = Path(sys.executable).parent
SSHD = "/usr/sbin/sshd"
PYTHON = str(BIN / "python")
FAST = ("--runs", "3", "--warmup", "1")


def _why_no_sshd() -> str | None:
    if not Path(SSHD).is_file():
        return f"{SSHD} is missing (apt install openssh-server)"
    if not (shutil.which("ssh") and shutil.which("scp") and shutil.which("ssh-keygen")):
        return "ssh, scp or ssh-keygen is missing (apt install openssh-client)"
    if os.geteuid() != 0:
        return "sshd on a loopback port as the test's own user needs root here"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1:<free port> taking only a throwaway key; yields (host, ssh_config, home): the
    sessions' HOME is a throwaway folder too (the key's environment= option), so the model cache lands there."""
    if _why_no_sshd() is not None:
        pytest.skip(_why_no_sshd())
    d = tmp_path_factory.mktemp("sshd")
    home = d / "home"
    home.mkdir()
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    key = (d / "user_key.pub").read_text().strip()
    (d / "authorized_keys").write_text(f'environment="HOME={home}" {key}\n')
    port = _free_port()
    (d / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {d / 'host_key'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"PidFile {d / 'sshd.pid'}\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitUserEnvironment HOME\n"
        "Subsystem sftp internal-sftp\n")
    (d / "ssh_config").write_text(
        f"Host 127.0.0.1\n  IdentityFile {d / 'user_key'}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {d / 'known_hosts'}\n  StrictHostKeyChecking accept-new\n  LogLevel ERROR\n"
        )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=subprocess.DEVNULL,
                            stderr=open(d / "sshd.log", "w"))
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not start: {(d / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.1)
    yield f"root@127.0.0.1:{port}", d / "ssh_config", home
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    for name, colour in (("r", (230, 0, 0)), ("g", (0, 230, 0)), ("b", (0, 0, 230))):
        for i in range(3):
            write_png(root / name / f"{i}.png", colour=colour)
    return root


def bench(*args, timeout=180):
    return subprocess.run([str(BIN / "edge-bench"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def _identity(row: dict) -> tuple:
    return (row["model"], row["format"], row["backend"], row["threads"], row["size_bytes"], row["status"],
            row.get("accuracy"), row.get("top1_agreement"))


def test_loopback_host_gives_the_rows_of_a_local_run_and_a_merged_report(sshd, rgb_onnx, colour_data, tmp_path):
    host, config, home = sshd
    closed = f"root@127.0.0.1:{_free_port()}"
    out = tmp_path / "fleet"
    r = bench(rgb_onnx, *FAST, "--data", colour_data, "--host", "localhost", "--host", host, "--host", closed,
              "--remote-python", PYTHON, "--ssh-config", config, "--out", out)
    assert r.returncode == 0, r.stderr  # a host that failed does not fail the run
    assert "Traceback" not in r.stderr
    doc = json.loads((out / "bench.json").read_text())
    local = [row for row in doc["rows"] if row["device"] == "localhost"]
    there = [row for row in doc["rows"] if row["device"] == host]
    assert len(local) == 1 and [_identity(x) for x in there] == [_identity(x) for x in local]
    plain = bench(rgb_onnx, *FAST, "--data", colour_data, "--out", tmp_path / "plain")  # no --host at all
    assert plain.returncode == 0, plain.stderr
    assert [_identity(x) for x in json.loads((tmp_path / "plain" / "bench.json").read_text())["rows"]] == \
        [_identity(x) for x in there]
    assert there[0]["accuracy"] == 1.0 and there[0]["path"] == str(rgb_onnx)
    assert there[0]["latency_ms"]["runs"] == 3
    failed = [row for row in doc["rows"] if row["device"] == closed]
    assert len(failed) == 1 and failed[0]["status"] == "error" and "cannot connect" in failed[0]["error"]
    assert [h["status"] for h in doc["hosts"]] == ["ok", "ok", "error"]
    # the failure is one line on the console, and a row in every report
    assert sum(closed in ln and "not measured" in ln for ln in r.stderr.splitlines()) >= 1
    csv = (out / "bench.csv").read_text().splitlines()
    assert csv[0].startswith("device,model") and len(csv) == 4
    assert any(ln.startswith(f"{host},rgb.onnx,") for ln in csv)
    html = (out / "bench.html").read_text()
    assert host in html and "localhost" in html and "connect" in html
    # the remote device record: the host's environment, and its device state before and after
    envs = {e["device"]: e for e in doc["environments"]}
    assert set(envs) == {"localhost", host}
    assert envs[host]["environment"]["packages"]["edgekit"] == envs["localhost"]["environment"]["packages"]["edgekit"]
    assert set(envs[host]["device_before"]) >= {"governor", "temperature_c", "throttled"}
    assert "state before -> after its run" in (out / "bench.md").read_text() and "device state" in html
    # the model went into the host's cache once, under its SHA-256
    cached = list((home / ".cache" / "edgekit" / "bench").iterdir())
    assert any(p.name.endswith(".onnx") and len(p.name) == 64 + 5 for p in cached)
    assert any(p.name.startswith("data-") and p.is_dir() for p in cached)
    assert not any(p.name.startswith("incoming-") for p in cached)


def test_a_second_run_copies_nothing(sshd, rgb_onnx, tmp_path):
    host, config, _ = sshd
    args = (rgb_onnx, *FAST, "--host", host, "--remote-python", PYTHON, "--ssh-config", config)
    bench(*args)
    again = bench(*args)
    assert again.returncode == 0, again.stderr
    assert "already in its cache" in again.stderr and "copying" not in again.stderr
    assert f"rgb.onnx ({host}" in again.stdout


def test_a_cached_model_changed_on_the_host_is_never_measured_under_its_name(sshd, rgb_onnx, tmp_path):
    host, config, home = sshd
    args = (rgb_onnx, *FAST, "--host", host, "--remote-python", PYTHON, "--ssh-config", config)
    assert bench(*args).returncode == 0
    for blob in (home / ".cache" / "edgekit" / "bench").glob("*.onnx"):
        blob.write_bytes(blob.read_bytes()[:-10] + b"0123456789")  # same size, other bytes
    changed = bench(*args)
    assert "changed on this host since it was copied" in changed.stdout + changed.stderr
    assert f"rgb.onnx ({host}" not in changed.stdout  # no row measured from the changed file
    again = bench(*args)  # the changed copy was removed: this run copies it afresh and measures
    assert again.returncode == 0 and f"rgb.onnx ({host}" in again.stdout


def test_a_python_without_edgekit_gets_a_row(sshd, rgb_onnx, tmp_path):
    host, config, _ = sshd
    plain = shutil.which("python3", path="/usr/bin:/bin")
    if plain is None or subprocess.run([plain, "-c", "import edgekit"], capture_output=True,
                                       cwd=tmp_path).returncode == 0:
        pytest.skip("no system python3 without edgekit here")
    r = bench(rgb_onnx, *FAST, "--host", host, "--remote-python", plain, "--ssh-config", config,
              "--out", tmp_path / "o")
    assert r.returncode == 1 and "Traceback" not in r.stderr  # no host produced results
    assert "edgekit is not installed" in r.stderr and "no host could be measured" in r.stderr
    assert not (tmp_path / "o").exists()


def test_a_missing_python_and_another_edgekit_version_get_rows(sshd, rgb_onnx, tmp_path):
    host, config, _ = sshd
    fake = tmp_path / "old" / "edgekit"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("__version__ = '0.0.1'\n")
    wrapper = tmp_path / "python-old-edgekit"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={fake.parent} exec {PYTHON} \"$@\"\n")
    wrapper.chmod(0o755)
    r = bench(rgb_onnx, *FAST, "--host", host, "--host", "localhost", "--remote-python", wrapper,
              "--ssh-config", config, "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    assert "edgekit 0.0.1 there" in r.stderr
    doc = json.loads((tmp_path / "o" / "bench.json").read_text())
    assert [(row["device"], row["status"]) for row in doc["rows"]] == [(host, "error"), ("localhost", "ok")]
    r = bench(rgb_onnx, *FAST, "--host", host, "--remote-python", tmp_path / "nowhere" / "python",
              "--ssh-config", config)
    assert r.returncode == 1 and "no Python at" in r.stderr and "Traceback" not in r.stderr


def test_bad_host_options_are_refused_before_anything_runs(rgb_onnx, tmp_path):
    (tmp_path / "empty").mkdir()
    for args, message in ((("--host=-oProxyCommand=x",), "expected user@host"),
                          (("--host", "localhost", "--data", str(tmp_path / "empty")), "no class subfolders"),
                          (("--host", "pi@nowhere.invalid", "--data", str(tmp_path / "empty")), "no class subfolders"),
                          (("--host", "pi@pi5:99999"), "not in 1..65535"),
                          (("--host", "localhost", "--host", "localhost"), "given twice"),
                          (("--host", "localhost", "--merge", "x.json"), "not both"),
                          (("--remote-python", "python3"), "need --host"),
                          (("--host", "localhost", "--ssh-option=-x"), "--ssh-option")):
        r = bench(rgb_onnx, *args)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


@pytest.mark.parametrize("text", ["a;touch${IFS}x", "a$(id)@h", "`id`@h", "pi@pi 5", "pi@h'x", 'pi@h"x', "pi@h|x",
                                  "-oProxyCommand=x", "pi@", "@h"])
def test_a_host_with_a_shell_character_or_a_space_is_refused(text):
    from edgekit.bench.ssh import Host
    from edgekit.limits import OptionError

    with pytest.raises(OptionError, match="expected user@host"):
        Host.parse(text)


@pytest.mark.parametrize("option", ["Port=2222\rx", "Port=22\nProxyCommand=x", "Port=\x1b[2J"])
def test_an_ssh_option_with_a_control_character_is_refused(option):
    from edgekit.bench.ssh import SshOptions
    from edgekit.limits import OptionError

    with pytest.raises(OptionError, match="--ssh-option"):
        SshOptions(options=(option,))


def test_a_host_that_floods_its_output_is_stopped_not_buffered(monkeypatch):
    """Found by a review: --remote-python /usr/bin/yes filled this side's memory until the connect timeout."""
    from edgekit.bench import ssh

    monkeypatch.setattr(ssh, "MAX_OUTPUT_BYTES", 1 << 20)
    with pytest.raises(ssh.HostError, match="sent more than 1 MB of output"):
        ssh.run([sys.executable, "-c", "import sys\nwhile True: sys.stdout.write('y' * 65536)"], "probe", timeout=60)
    logged: list[str] = []
    done = ssh.run([sys.executable, "-c", "import sys\nfor i in range(500): print(i, file=sys.stderr)\nprint('ok')"],
                   "probe", timeout=60, log=logged.append)
    assert done.stdout == "ok\n" and done.stderr.splitlines()[-1] == "499"  # the last lines are kept
    assert len(logged) == ssh.MAX_STDERR_LINES and "not shown" in logged[-1]


def test_host_text_and_remote_words():
    from edgekit.bench.ssh import Host, SshOptions, remote_word, scp_command, ssh_command

    h = Host.parse("pi@[fe80::1]:2222")
    assert (h.user, h.name, h.port) == ("pi", "fe80::1", 2222) and h.scp_target("/x") == "pi@[fe80::1]:/x"
    assert Host.parse("pi5.local").destination() == "pi5.local" and Host.parse("localhost").local
    assert remote_word("~/venv/bin/python") == '"$HOME"/venv/bin/python'
    assert remote_word("a b;rm -rf x") == "'a b;rm -rf x'"
    cmd = ssh_command(Host.parse("pi@pi5:22"), SshOptions(options=("BatchMode=no",)), ["python3", "-"])
    assert cmd.index("BatchMode=yes") < cmd.index("BatchMode=no")  # ssh keeps the first: never a prompt
    assert cmd[-3:] == ["--", "pi@pi5", "python3 -"] and ["-p", "22"] == cmd[cmd.index("-p"):cmd.index("-p") + 2]
    assert scp_command(Host.parse("pi5:2200"), SshOptions(), ["m.tflite"], "/c/in")[-2:] == ["m.tflite", "pi5:/c/in/"]


def _processes_with_home(home: Path) -> list[int]:
    """Processes whose environment has HOME=home: the sessions of the test's sshd and what they started."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"HOME={home}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_a_host_past_its_timeout_gets_a_row_and_its_processes_end(sshd, rgb_onnx, tmp_path):
    host, config, home = sshd
    r = bench(rgb_onnx, "--runs", "3", "--min-seconds", "600", "--host", host, "--remote-python", PYTHON,
              "--ssh-config", config, "--host-timeout", "10", timeout=90)  # 10 s: a busy machine starts slowly
    assert "[" + host + "] measuring rgb.onnx" in r.stderr, r.stderr
    assert r.returncode == 1 and "the run there timed out after 10 s" in r.stderr, r.stderr
    deadline = time.monotonic() + 10
    while _processes_with_home(home) and time.monotonic() < deadline:  # the host's worker ends with the connection
        time.sleep(0.2)
    assert _processes_with_home(home) == []


def test_parallel_hosts_are_all_measured_and_keep_their_order(sshd, rgb_onnx, tmp_path):
    host, config, _ = sshd
    alias = host.removeprefix("root@")  # the same sshd, reached a second way: two hosts measured at once
    r = bench(rgb_onnx, *FAST, "--host", "localhost", "--host", host, "--host", alias, "--parallel-hosts",
              "--remote-python", PYTHON, "--ssh-config", config, "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "o" / "bench.json").read_text())
    assert [(row["device"], row["status"]) for row in doc["rows"]] == [("localhost", "ok"), (host, "ok"),
                                                                      (alias, "ok")]
    lines = r.stderr.splitlines()
    first_local = next(i for i, ln in enumerate(lines) if ln.startswith("localhost: measuring"))
    assert all(i < first_local for i, ln in enumerate(lines) if ln.startswith(f"{alias}: "))  # localhost last


def test_the_device_state_of_each_host_before_and_after_is_reported():
    from edgekit.bench.fleet import failure_row, telemetry_line
    from edgekit.bench.report import device_state_table, render_markdown

    pi = {"governor": "ondemand", "cpu0_mhz": 1500, "temperature_c": 45.0, "throttled": "throttled=0x0"}
    hot = {**pi, "cpu0_mhz": 1000, "temperature_c": 81.5, "throttled": "throttled=0x20002"}
    env = {"cpu": "Cortex-A76", "cpu_count": 4, "packages": {}}
    doc = {"merged": True, "environment": env, "rows": [failure_row("pi@pi4", "cannot connect (refused)")],
           "environments": [{"device": "pi@pi5", "environment": env, "device_before": pi, "device_after": hot}]}
    headers, rows = device_state_table(doc)
    assert headers == ["device", "governor", "cpu0_mhz", "temperature_c", "throttled"]
    assert rows == [["pi@pi5", "ondemand", "1500 -> 1000", "45.0 -> 81.5", "throttled=0x0 -> throttled=0x20002"]]
    md = render_markdown(doc)
    assert "| pi@pi4 | all models |" in md and "not measured on pi@pi4: cannot connect (refused)" in md
    line = telemetry_line("pi@pi5", {"device_before": pi, "device_after": hot})
    assert line == ("pi@pi5: governor ondemand; cpu0_mhz 1500 MHz -> 1000 MHz; temperature_c 45.0 °C -> 81.5 °C; "
                    "throttled throttled=0x0 -> throttled=0x20002")


def test_the_host_needs_no_tensorflow(sshd, rgb_onnx, tmp_path):
    """The host's Python cannot import TensorFlow or Keras (a sitecustomize refuses them): still measured."""
    host, config, _ = sshd
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\nclass _No:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'):\n"
        "            raise ImportError('no TensorFlow on this host')\n"
        "sys.meta_path.insert(0, _No())\n")
    wrapper = tmp_path / "python-without-tf"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={site} exec {PYTHON} \"$@\"\n")
    wrapper.chmod(0o755)
    assert subprocess.run([wrapper, "-c", "import tensorflow"], capture_output=True).returncode != 0
    r = bench(rgb_onnx, *FAST, "--host", host, "--remote-python", wrapper, "--ssh-config", config)
    assert r.returncode == 0, r.stderr
    assert f"rgb.onnx ({host}, onnxruntime" in r.stdout
