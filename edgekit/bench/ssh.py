"""The SSH side of edge-bench --host: the system's OpenSSH ``ssh`` and ``scp``, with the user's ~/.ssh/config and
agent. BatchMode is always on, so nothing ever prompts: a host that would ask for a password fails at once with
ssh's own one-line reason. No password is asked for, accepted or stored."""

from __future__ import annotations

import collections
import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass

from edgekit.errors import EdgekitError
from edgekit.limits import OptionError, check_number

LOCALHOST = "localhost"  # --host localhost: measured here, without SSH
CONNECTING = "connecting"  # run()'s ``what`` for the first command on a host: exit 255 there means no connection
# user names and host names as ssh_config and DNS write them: no shell metacharacter, quote or control character
# reaches ssh (which would refuse them, but edgekit does not rely on that)
_DESTINATION = re.compile(r"^(?:(?P<user>[A-Za-z0-9_][A-Za-z0-9_.+-]*)@)?"
                          r"(?:\[(?P<v6>[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?)\]|(?P<name>[A-Za-z0-9_][A-Za-z0-9_.-]*))"
                          r"(?::(?P<port>\d{1,5}))?$")
MAX_OUTPUT_BYTES = 64 << 20  # a remote run's results (its rows and samples) are a few MB at most
MAX_STDERR_LINES = 200  # the host's messages passed on (and the last ones kept for the reason of a failure)
MAX_LINE_BYTES = 1 << 16
_OPTION = re.compile(r"^[A-Za-z][A-Za-z0-9]*(=| )\S.*$")


class HostError(EdgekitError):
    """One host could not be measured (unreachable, no edgekit, another version, a timeout): its row says why."""


@dataclass(frozen=True)
class Host:
    """One --host: ``[user@]host[:port]`` (``[user@][v6addr][:port]`` for IPv6), or ``localhost``."""

    text: str
    user: str | None = None
    name: str = ""
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> Host:
        text = str(text).strip()
        if text == LOCALHOST:
            return cls(text, name=LOCALHOST)
        m = _DESTINATION.match(text)
        if not m or text.startswith("-"):
            raise OptionError(f"--host {text!r}: expected user@host[:port] (or localhost)")
        port = int(m["port"]) if m["port"] else None
        if port is not None and not 1 <= port <= 65535:
            raise OptionError(f"--host {text!r}: port {port} is not in 1..65535")
        return cls(text, m["user"], m["v6"] or m["name"], port)

    @property
    def local(self) -> bool:
        return self.text == LOCALHOST

    def destination(self) -> str:
        """What ssh takes (the port goes to -p)."""
        return f"{self.user}@{self.name}" if self.user else self.name

    def scp_target(self, path: str) -> str:
        host = f"[{self.name}]" if ":" in self.name else self.name
        return f"{self.user + '@' if self.user else ''}{host}:{path}"


@dataclass(frozen=True)
class SshOptions:
    """How to reach the hosts: an ssh_config file (-F), extra ``-o Key=Value`` options, the connect timeout."""

    config: str | None = None
    options: tuple[str, ...] = ()
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        opts = (self.options,) if isinstance(self.options, str) else tuple(self.options)
        for o in opts:
            if not isinstance(o, str) or not _OPTION.match(o) or not o.isprintable():  # \r, \n, escapes
                raise OptionError(f"--ssh-option {o!r}: expected an ssh_config option like ConnectTimeout=5")
        object.__setattr__(self, "options", opts)
        object.__setattr__(self, "connect_timeout", check_number(
            self.connect_timeout, "connect_timeout (--connect-timeout)", low=0, high=3600, low_open=True))
        if self.config is not None:
            from pathlib import Path

            if not Path(self.config).is_file():
                raise OptionError(f"--ssh-config {self.config}: no such file")

    def common(self) -> list[str]:
        """The options ssh and scp share. ssh keeps the first value it is given for an option, so BatchMode=yes
        comes first (it cannot be turned off), then the user's options, then edgekit's defaults."""
        args = ["-o", "BatchMode=yes"]
        if self.config:
            args += ["-F", self.config]
        for o in self.options:
            args += ["-o", o]
        return [*args, "-o", f"ConnectTimeout={max(1, round(self.connect_timeout))}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]


def check_clients() -> None:
    for exe in ("ssh", "scp"):
        if shutil.which(exe) is None:
            raise EdgekitError(f"--host needs the OpenSSH client ({exe} is not on PATH; apt install openssh-client)")


def remote_word(word: str) -> str:
    """One word of a remote command line, quoted for the remote shell; a leading ``~/`` still means the remote
    home (``~/venv/bin/python``)."""
    if word.startswith("~/"):
        return '"$HOME"/' + shlex.quote(word[2:])
    return shlex.quote(word)


def ssh_command(host: Host, ssh: SshOptions, words: list[str]) -> list[str]:
    port = ["-p", str(host.port)] if host.port else []
    return ["ssh", *ssh.common(), *port, "--", host.destination(), " ".join(remote_word(w) for w in words)]


def scp_command(host: Host, ssh: SshOptions, sources: list[str], remote_dir: str) -> list[str]:
    port = ["-P", str(host.port)] if host.port else []
    return ["scp", "-q", "-r", *ssh.common(), *port, "--", *sources, host.scp_target(remote_dir.rstrip("/") + "/")]


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str


def run(cmd: list[str], what: str, *, timeout: float, stdin: bytes | None = None,
        log: Callable[[str], None] | None = None) -> Finished:
    """Run ``cmd`` (ssh or scp), each stderr line passed to ``log`` as it comes; HostError on a timeout or when
    the connection itself failed (exit 255). stdin stays open until the command ends, so that the remote side
    sees end-of-file, and stops, when this side goes away."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out: list[bytes] = []
    err: collections.deque[str] = collections.deque(maxlen=MAX_STDERR_LINES)  # the last lines: their reason
    flooded = threading.Event()

    def read_err() -> None:
        said = 0
        for raw in iter(lambda: proc.stderr.readline(MAX_LINE_BYTES), b""):  # a line without end stays bounded
            line = raw.decode("utf-8", "replace").rstrip()
            err.append(line)
            if log and line.strip() and said < MAX_STDERR_LINES:
                said += 1
                log(line if said < MAX_STDERR_LINES else "(the host's further messages are not shown)")

    def read_out() -> None:  # as it comes: a ControlPersist master may hold the pipe open after ssh exits
        total = 0
        for chunk in iter(lambda: proc.stdout.read1(1 << 16), b""):
            total += len(chunk)
            if total > MAX_OUTPUT_BYTES:  # a host that is not edgekit's (or is hostile) fills this side's memory
                flooded.set()
                proc.kill()
                return
            out.append(chunk)

    readers = [threading.Thread(target=read_out, daemon=True), threading.Thread(target=read_err, daemon=True)]
    for t in readers:
        t.start()
    try:
        if stdin is not None:
            try:
                proc.stdin.write(stdin)
                proc.stdin.close()  # a script read to its end (python -)
            except BrokenPipeError:  # ssh already gave up (its exit status and stderr say why)
                pass
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise HostError(f"{what} timed out after {timeout:g} s") from None
    except BaseException:  # Ctrl-C: the remote run ends with the connection
        proc.kill()
        proc.wait()
        raise
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:  # unsent script bytes: the probe's failure is said from ssh's exit status
            pass
        for t in readers:
            t.join(timeout=5)
    stderr = "\n".join(err)
    if flooded.is_set():
        raise HostError(f"{what}: the host sent more than {MAX_OUTPUT_BYTES >> 20} MB of output, far more than "
                        "edgekit's measurements (is its --remote-python edgekit's?)")
    if proc.returncode == 255:  # ssh's own failure, or the remote command killed by a signal
        raise HostError(f"{'cannot connect' if what == CONNECTING else what + ' failed'} "
                        f"({last_line(stderr) or 'ssh exit 255'})")
    return Finished(proc.returncode, b"".join(out).decode("utf-8", "replace"), stderr)


def last_line(text: str, limit: int = 200) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:limit] if lines else ""
