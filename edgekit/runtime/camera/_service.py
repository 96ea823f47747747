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


#: The first line of every unit edge-camera writes: only a file that starts with it is ever replaced or removed.
MARKER = "# written by edge-camera --systemd-unit"
#: Where packages install units, which a unit of the same name in /etc/systemd/system (or ~/.config/systemd/user)
#: would silently replace: naming a service "ssh" would take the SSH server off a headless Pi at the next boot.
VENDOR_UNIT_DIRS = {True: ("/run/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system",
                           "/lib/systemd/system"),
                    False: ("/etc/systemd/user", "/run/systemd/user", "/usr/local/lib/systemd/user",
                            "/usr/lib/systemd/user", "/lib/systemd/user")}
_SECRET_LINE = re.compile(r"(#.*|EDGE_CAMERA_(TOKEN|MQTT_PASSWORD)=.*)?")


def check_name(name: str) -> str:
    """A unit name, without the .service suffix."""
    base = name[: -len(".service")] if isinstance(name, str) and name.endswith(".service") else name
    if not isinstance(base, str) or not _NAME.fullmatch(base) or base.startswith(("-", ".", "@")) \
            or base.endswith("@"):
        raise EdgekitError(f"service name {name!r}: use letters, digits and _ . @ : -, e.g. edge-camera (not a "
                           "template: no @ at either end)")
    return base


def _head(path: Path, limit: int = 65536) -> str | None:
    """A regular file's text (at most ``limit`` bytes), or None for a link, anything else, or unreadable bytes."""
    try:
        if path.is_symlink() or not path.is_file():
            return None
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def written_by_edge_camera(unit: Path) -> bool:
    """Whether ``unit`` is a unit edge-camera wrote (a regular file that starts with MARKER)."""
    text = _head(unit)
    return text is not None and text.startswith(MARKER)


def _secrets_file_ours(env: Path) -> bool:
    """Whether ``env`` holds nothing but edge-camera's secrets (and comments): one it wrote, in any version."""
    text = _head(env)
    return text is not None and all(_SECRET_LINE.fullmatch(line.strip()) for line in text.splitlines())


def _vendor_unit(service: Service, home: Path | None) -> Path | None:
    """A unit of the same name that a package installed, which ours would replace."""
    dirs = [Path(d) for d in VENDOR_UNIT_DIRS[service.system]]
    if not service.system:
        dirs.insert(0, (home or Path.home()) / ".local" / "share" / "systemd" / "user")
    for d in dirs:
        p = d / f"{service.name}.service"
        if p.exists() or p.is_symlink():
            return p
    return None


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
        return (f"# written by edge-camera --install-service {self.name}: its secrets, readable by their owner only\n"
                + "".join(f"{k}={_env_value(v)}\n" for k, v in sorted(self.secrets.items())))

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
    vendor = _vendor_unit(service, home)
    if vendor is not None:
        raise InputFileError(path, f"would replace the unit {vendor} that is already installed (a unit in "
                                   f"{path.parent} takes its place at the next boot); choose another name")
    replacing = path.exists() or path.is_symlink()
    env_there = env.exists() or env.is_symlink()
    # the files this writes: the unit, and the EnvironmentFile when there are secrets
    for p, there, ours in ((path, replacing, written_by_edge_camera), (env, env_there and bool(service.secrets),
                                                                       _secrets_file_ours)):
        if not there:
            continue
        if not force:
            raise OutputExistsError(p)
        if not ours(p):  # --force replaces edge-camera's own files, never someone else's
            raise InputFileError(p, "was not written by edge-camera; --force never replaces it (choose another "
                                    "name)")
    try:
        if service.secrets:
            _write_private(env, service.env_text())
        write_text(path, service.unit(home), force=True)
        if not service.secrets and replacing and env_there and _secrets_file_ours(env):
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
    if not written_by_edge_camera(unit):
        raise InputFileError(unit, "was not written by edge-camera; nothing was removed")
    # what `systemctl enable` made: links to this unit in the .wants folders (a dangling one would stay behind)
    links = [p for p in unit.parent.glob(f"*.wants/{unit.name}")
             if p.is_symlink() and os.path.normpath(os.path.join(p.parent, os.readlink(p))) == str(unit)]
    env = service.env_path(home)
    removed = []
    for p in (unit, env, *links):
        if p == env and (env.exists() or env.is_symlink()) and not _secrets_file_ours(env):
            log(f"edge-camera: left {env}: it holds more than edge-camera's secrets")
            continue
        if p.is_file() or p.is_symlink():
            p.unlink()
            removed.append(p)
    log(f"edge-camera: removed {', '.join(map(str, removed))}; if it is running, stop it: {service.systemctl()} "
        f"stop {service.name}; then {service.systemctl()} daemon-reload")
    return removed
