"""Who may ask --serve for the view: the address it listens on, the Host names it answers (the DNS-rebinding
guard) and the token. Pure rules on text, checked before anything listens; ``_server`` applies them to every
request (see its docstring)."""

from __future__ import annotations

import ipaddress
import re
import socket
import string

from edgekit.errors import EdgekitError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("", "0.0.0.0", "::")
TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-._~")  # URL-, header- and cookie-safe
TOKEN_MIN, TOKEN_MAX = 8, 512
_HOST_RE = re.compile(r"[A-Za-z0-9._%:-]{1,253}")


def parse_address(text: str) -> tuple[str, int]:
    """'8080' -> ('127.0.0.1', 8080); 'HOST:PORT' and '[IPv6]:PORT' as given (0.0.0.0 only when asked for)."""
    usage = f"--serve {text!r}: expected PORT or HOST:PORT, e.g. 8080, 0.0.0.0:8080 or [::1]:8080"
    if not isinstance(text, str):
        raise EdgekitError(usage)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":") or ":" not in host:
            raise EdgekitError(usage)
        port = rest[1:]
    else:
        host, _, port = text.rpartition(":")
        if ":" in host:
            raise EdgekitError(f"--serve {text!r}: write an IPv6 address in brackets, e.g. [::1]:8080")
    host = host or "127.0.0.1"
    if not (port.isascii() and port.isdigit()) or not _HOST_RE.fullmatch(host):
        raise EdgekitError(usage)
    number = int(port)
    if not 0 <= number <= 65535:
        raise EdgekitError(f"--serve {text!r}: port must be 0..65535")
    return host, number


def _normal(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


def host_of(value: str | None) -> str | None:
    """The host named by a Host header ('name', 'name:port', '[v6]:port'), lower-case; None when malformed."""
    if not value or not value.isascii():
        return None
    value = value.strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not (rest[0] == ":" and (rest[1:] == "" or rest[1:].isdigit()))):
            return None
    elif value.count(":") == 1:
        host, port = value.split(":")
        if port and not port.isdigit():
            return None
    else:
        host = value  # a name, or a bare IPv6 address (not valid HTTP, but it can only match itself)
    host = _normal(host)
    return host if host and _HOST_RE.fullmatch(host) else None


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    if _normal(host) == "localhost":
        return True
    try:
        return ipaddress.ip_address(_normal(host)).is_loopback
    except ValueError:
        return False


def check_allowed_hosts(hosts) -> tuple[str, ...]:
    """--allow-host values: host names or IP addresses (a port, if given, is ignored), normalized."""
    if hosts is None:
        return ()
    if isinstance(hosts, str):
        hosts = (hosts,)
    out = []
    for h in hosts:
        name = host_of(h) if isinstance(h, str) else None
        if name is None:
            raise EdgekitError(f"--allow-host {h!r}: expected a host name or IP address, e.g. pi.local or "
                               "192.168.1.20")
        if name not in out:
            out.append(name)
    return tuple(out)


def check_token(token) -> str | None:
    """--token: None, or TOKEN_MIN..TOKEN_MAX characters from A-Z a-z 0-9 - . _ ~ (safe in a URL, a header
    and a cookie without escaping)."""
    if token is None:
        return None
    hint = "e.g. from: python3 -c 'import secrets; print(secrets.token_urlsafe())'"
    if not isinstance(token, str) or not TOKEN_MIN <= len(token) <= TOKEN_MAX:
        raise EdgekitError(f"--token: use {TOKEN_MIN} to {TOKEN_MAX} characters, {hint}")
    if not set(token) <= TOKEN_CHARS:
        raise EdgekitError(f"--token: use only letters, digits and - . _ ~, {hint}")
    return token


def check_listen_address(host, port) -> bool:
    """Refuse a host or port nothing can listen on; whether ``host`` is a wildcard address (0.0.0.0, ::)."""
    if not isinstance(host, str) or not _HOST_RE.fullmatch(_normal(host) or "0.0.0.0"):
        raise EdgekitError(f"--serve: bad host {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise EdgekitError(f"--serve: port must be 0..65535, got {port!r}")
    return _normal(host) in WILDCARDS or host == "::"


def answered_hosts(host: str, wildcard: bool, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """The Host names a server on ``host`` answers: the loopback names, the address it listens on (on a wildcard
    address: this machine's hostname and hostname.local), and the ``allowed`` ones (already checked)."""
    names = list(LOOPBACK_NAMES)
    if wildcard:
        me = socket.gethostname().lower().rstrip(".")
        names += [me, f"{me.split('.', 1)[0]}.local"] if me else []
    else:
        names.append(_normal(host))
    names += allowed
    return tuple(dict.fromkeys(n for n in names if n))
