"""edge-camera as a systemd service: --systemd-unit NAME prints a unit that runs exactly the command line it was
given (minus the service options), --install-service NAME writes it, --uninstall-service NAME removes it.

- The unit runs the venv's own edge-camera by its absolute path, in the folder the command was given in (so
  relative paths mean the same), restarts on failure, and starts after the network is online.
- As root (sudo included) it is a system unit in /etc/systemd/system, run as the invoking user (User=, from
  SUDO_USER); otherwise a user unit in ~/.config/systemd/user, for ``systemctl --user``.
- Secrets (--token, an MQTT password) are never on the unit's command line (which anyone can read with
  ``systemctl cat``): they go to an EnvironmentFile readable by its owner only, as EDGE_CAMERA_TOKEN and
  EDGE_CAMERA_MQTT_PASSWORD, which edge-camera reads.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.errors import EdgekitError, InputFileError, OutputExistsError

SERVICE_OPTIONS = ("--systemd-unit", "--install-service", "--uninstall-service")
TOKEN_ENV = "EDGE_CAMERA_TOKEN"
MQTT_PASSWORD_ENV = "EDGE_CAMERA_MQTT_PASSWORD"
_NAME = re.compile(r"[A-Za-z0-9_.@:-]{1,200}")
_BARE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def check_name(name: str) -> str:
    """A unit name, without the .service suffix."""
    base = name[: -len(".service")] if isinstance(name, str) and name.endswith(".service") else name
    if not isinstance(base, str) or not _NAME.fullmatch(base) or base.startswith(("-", ".")):
        raise EdgekitError(f"service name {name!r}: use letters, digits and _ . @ : -, e.g. edge-camera")
    return base


def quote(arg: str) -> str:
    """One argument of ExecStart=, as systemd reads it back: % and $ doubled (no specifier, no variable), and
    double quotes (with \\ and \" escaped) around anything that is not a plain word."""
    if not arg.isprintable() or "\t" in arg:
        raise EdgekitError(f"the argument {arg!r} has a control character; a unit's command line cannot hold it")
    arg = arg.replace("%", "%%").replace("$", "$$")
    if _BARE.fullmatch(arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Service:
    """What the unit runs: ``args`` (edge-camera's arguments, without secrets), ``secrets`` (environment
    variables for the EnvironmentFile), ``system`` (a system unit, else a user unit), ``user`` (User= of a system
    unit), the working folder and the executable."""

    name: str
    args: tuple[str, ...]
    system: bool
    user: str | None = None
    workdir: str = field(default_factory=os.getcwd)
    executable: tuple[str, ...] = ()
    secrets: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "name", check_name(self.name))
        if not self.executable:
            object.__setattr__(self, "executable", edge_camera_command())

    def unit_path(self, home: Path | None = None) -> Path:
        return self.unit_dir(home) / f"{self.name}.service"

    def unit_dir(self, home: Path | None = None) -> Path:
        if self.system:
            return Path("/etc/systemd/system")
        return _config_home(home) / "systemd" / "user"

    def env_path(self, home: Path | None = None) -> Path:
        base = Path("/etc/edgekit") if self.system else _config_home(home) / "edgekit"
        return base / f"{self.name}.env"

    def unit(self, home: Path | None = None) -> str:
        """The unit file's text."""
        command = " ".join(quote(a) for a in (*self.executable, *self.args))
        lines = ["# written by edge-camera --systemd-unit; edit the command line by running that again",
                 "[Unit]", f"Description=edge-camera {self.name}", "Wants=network-online.target",
                 "After=network-online.target", "", "[Service]", "Type=simple"]
        if self.system and self.user:
            lines.append(f"User={self.user}")
        lines.append(f"WorkingDirectory={_escape_path(self.workdir)}")
        if self.secrets:
            lines.append(f"EnvironmentFile={_escape_path(str(self.env_path(home)))}")
        lines += ["Environment=PYTHONUNBUFFERED=1", f"ExecStart={command}", "Restart=on-failure", "RestartSec=5",
                  "", "[Install]", f"WantedBy={'multi-user.target' if self.system else 'default.target'}", ""]
        return "\n".join(lines)

    def env_text(self) -> str:
        return "".join(f"{k}={_env_value(v)}\n" for k, v in sorted(self.secrets.items()))

    def systemctl(self) -> str:
        return "systemctl" if self.system else "systemctl --user"


def _resolve(name: str, options: dict[str, bool]) -> str | None:
    """The option ``name`` stands for: itself, or the one option it is a prefix of (argparse's abbreviations)."""
    if name in options:
        return name
    matches = [o for o in options if o.startswith(name)]
    return matches[0] if len(matches) == 1 else None


def _split_password(url: str) -> tuple[str, str | None]:
    """(the URL without its password, the password or None)."""
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return url, None
    if password is None:
        return url, None
    from edgekit.runtime.camera._mqtt_options import without_password

    return without_password(url, None), unquote(password)


def service_args(argv: list[str], options: dict[str, bool], environ=None) -> tuple[tuple[str, ...], dict]:
    """(edge-camera's arguments for the unit, its secrets): ``argv`` without the service options, --force (kept
    with --record, which a restart would otherwise refuse), --token and the MQTT password, which become
    EDGE_CAMERA_TOKEN and EDGE_CAMERA_MQTT_PASSWORD (also taken from ``environ`` when set there).
    ``options``: every long option of the parser, and whether it takes a value."""
    environ = os.environ if environ is None else environ
    out: list[str] = []
    secrets: dict[str, str] = {}
    seen: set[str] = set()
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--":
            out += argv[i - 1:]
            break
        name, eq, value = token.partition("=")
        full = _resolve(name, options) if token.startswith("--") else None
        if full is None:
            out.append(token)
            continue
        if options[full] and not eq:
            value, i = (argv[i] if i < len(argv) else ""), i + 1
        seen.add(full)
        if full in (*SERVICE_OPTIONS, "--force"):
            continue
        if full == "--token":
            secrets[TOKEN_ENV] = value
            continue
        if full == "--mqtt":
            value, password = _split_password(value)
            if password is not None:
                secrets[MQTT_PASSWORD_ENV] = password
        out += [full, value] if options[full] else [full]
    if "--force" in seen and "--record" in seen:
        out.append("--force")
    if "--serve" in seen and TOKEN_ENV not in secrets and environ.get(TOKEN_ENV):
        secrets[TOKEN_ENV] = environ[TOKEN_ENV]
    if "--mqtt" in seen and MQTT_PASSWORD_ENV not in secrets and environ.get(MQTT_PASSWORD_ENV):
        secrets[MQTT_PASSWORD_ENV] = environ[MQTT_PASSWORD_ENV]
    return tuple(out), secrets


def _env_value(value: str) -> str:
    if not value.isprintable():
        raise EdgekitError("a secret with a control character cannot go into an EnvironmentFile")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _escape_path(path: str) -> str:
    if not path.isprintable():
        raise EdgekitError(f"{path!r}: a unit cannot name a path with a control character")
    return path.replace("%", "%%")


def _config_home(home: Path | None) -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if home is None and xdg and os.path.isabs(xdg):
        return Path(xdg)
    return (home or Path.home()) / ".config"


def edge_camera_command() -> tuple[str, ...]:
    """This venv's edge-camera by its absolute path (not resolved: a venv's python is a link to the system's),
    else this Python running the module."""
    exe = Path(sys.executable).parent / "edge-camera"
    if exe.is_file() and os.access(exe, os.X_OK):
        return (str(exe.absolute()),)
    return (str(Path(sys.executable).absolute()), "-m", "edgekit.cli.camera")


def invoking_user() -> str:
    """Who ran the command: SUDO_USER under sudo, else the current user."""
    import pwd

    sudo = os.environ.get("SUDO_USER")
    if os.geteuid() == 0 and sudo and sudo != "root":
        return sudo
    return pwd.getpwuid(os.geteuid()).pw_name


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only (0600 from the start), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def install(service: Service, *, force: bool = False, home: Path | None = None, log=print) -> Path:
    """Write the unit (and the EnvironmentFile, when there are secrets); refuse to replace either without
    ``force``. Says where, and what to run next."""
    from edgekit.fileio import write_text

    path, env = service.unit_path(home), service.env_path(home)
    for p in (path, env) if service.secrets else (path,):
        if (p.exists() or p.is_symlink()) and not force:
            raise OutputExistsError(p)
    try:
        if service.secrets:
            _write_private(env, service.env_text())
        write_text(path, service.unit(home), force=True)
        if not service.secrets and (env.exists() or env.is_symlink()):
            env.unlink()  # a replaced unit with no secrets must not leave the old one's secrets on disk
    except PermissionError as exc:
        raise InputFileError(exc.filename or path, "permission denied (a system unit needs root: sudo)") from None
    kind = "a system unit (/etc/systemd/system)" if service.system else "a user unit (systemctl --user)"
    log(f"edge-camera: wrote {path}: {kind}" + (f"; its secrets in {env} (mode 600)" if service.secrets else ""))
    log(f"edge-camera: start it now and at every boot: {service.systemctl()} enable --now {service.name}"
        + ("" if service.system else "; and, to start at boot before you log in: loginctl enable-linger"))
    return path


def uninstall(name: str, *, system: bool, home: Path | None = None, log=print) -> list[Path]:
    """Remove the unit and its EnvironmentFile; an error when there is no such unit."""
    service = Service(name, (), system, executable=("edge-camera",))
    unit = service.unit_path(home)
    if not (unit.is_file() or unit.is_symlink()):
        raise InputFileError(unit, "no such unit; nothing was removed")
    # what `systemctl enable` made: links to the unit in the .wants folders (a dangling one would stay behind)
    links = [p for p in unit.parent.glob(f"*.wants/{unit.name}") if p.is_symlink()]
    removed = []
    for p in (unit, service.env_path(home), *links):
        if p.is_file() or p.is_symlink():
            p.unlink()
            removed.append(p)
    log(f"edge-camera: removed {', '.join(map(str, removed))}; if it is running, stop it: {service.systemctl()} "
        f"stop {service.name}; then {service.systemctl()} daemon-reload")
    return removed
