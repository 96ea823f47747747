"""edge-bench --host: the same models measured on several devices over SSH, one host after another, into one
merged report (the --merge tables and plots, with a device column).

For each host: a probe (the host's Python, its edgekit version, which files its cache holds), one scp of the
models (and --data images) the cache lacks, named by their SHA-256 so that each is copied once, then
``edgekit.bench.remote.serve`` runs edge-bench's own engine there, a fresh worker process per model, and sends
back the host's bench.json with its environment and device state (governor, throttling, temperature) before and
after. A host that cannot be measured gets one row saying why; the others are still measured. ``localhost`` is
measured here, without SSH. With ``parallel``, the remote hosts are measured at once (each still measures
one model at a time, and this machine only waits on ssh meanwhile), then localhost."""

from __future__ import annotations

import json
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.bench import remote
from edgekit.bench.ssh import CONNECTING, Host, HostError, SshOptions, check_clients, run, scp_command, ssh_command
from edgekit.bench.suite import BenchOptions
from edgekit.errors import EdgekitError
from edgekit.limits import OptionError, check_number

NOT_MEASURED = "all models"  # the model column of a host's failure row
COPY_BYTES_PER_S = 250_000  # the slowest link the copy timeout allows for (plus a minute)


class NoHostMeasured(EdgekitError):
    """Not one host produced results (each one's reason was said as it failed)."""

    exit_code = 1


@dataclass(frozen=True)
class FleetOptions:
    """The hosts (``user@host[:port]`` or ``localhost``), the Python to run on them, how to reach them, how long
    the measuring on one host may take (default: the per-model worker timeout for every run, plus two minutes),
    and whether the remote hosts are measured at once."""

    hosts: tuple[str, ...]
    remote_python: str = "python3"
    ssh: SshOptions = field(default_factory=SshOptions)
    host_timeout: float | None = None
    parallel: bool = False  # the remote hosts at once; this machine (localhost) after them, never meanwhile

    def __post_init__(self) -> None:
        hosts = (self.hosts,) if isinstance(self.hosts, str) else tuple(self.hosts)
        if not hosts:
            raise OptionError("hosts (--host): give one or more hosts")
        parsed = tuple(h if isinstance(h, Host) else Host.parse(h) for h in hosts)
        seen = [h.text for h in parsed]
        dup = next((h for h in seen if seen.count(h) > 1), None)
        if dup:
            raise OptionError(f"--host {dup!r} is given twice")
        object.__setattr__(self, "hosts", parsed)
        if not isinstance(self.remote_python, str) or not self.remote_python.strip() or "\n" in self.remote_python:
            raise OptionError(f"--remote-python {self.remote_python!r}: expected the path of the hosts' Python")
        if not isinstance(self.ssh, SshOptions):
            raise OptionError(f"ssh: expected SshOptions, got {self.ssh!r}")
        if not isinstance(self.parallel, bool):
            raise OptionError(f"parallel (--parallel-hosts): expected True or False, got {self.parallel!r}")
        if self.host_timeout is not None:
            object.__setattr__(self, "host_timeout", check_number(
                self.host_timeout, "host_timeout (--host-timeout)", low=0, high=30 * 86_400, low_open=True))

    @property
    def remote(self) -> bool:
        return any(not h.local for h in self.hosts)


@dataclass
class _Staged:
    """What every host needs, hashed once: each model as <sha256>.<suffix>, the --data images chosen (the same
    class-balanced subset edge-bench picks here) as data-<sha256>/, links in a local folder for scp."""

    folder: Path
    models: list[dict]  # {"path", "name", "blob"}
    data: str | None  # the data-<sha256> folder name
    files: dict[str, Path]  # cache name -> the local link scp copies from

    @classmethod
    def make(cls, paths: list[Path], options: BenchOptions, folder: Path) -> _Staged:
        files, models = {}, []
        for p in paths:
            blob = f"{remote.sha256_file(p)}{p.suffix.lower()}"
            models.append({"path": str(p), "name": p.name, "blob": blob})
            if blob not in files:
                files[blob] = folder / blob
                files[blob].symlink_to(p.resolve())
        data = None
        if options.data is not None:
            from edgekit.bench.suite import _data_images
            from edgekit.data.localization import is_box_dataset

            if is_box_dataset(options.data):
                raise EdgekitError(f"{options.data}: a box dataset cannot be sent to --host devices yet; run "
                                   "edge-bench --data on each device and combine the runs with --merge")
            images, truth, classes = _data_images(options.data, options.max_images)
            tree = folder / "data"
            for c in classes:
                (tree / c).mkdir(parents=True)
            for p, i in zip(images, truth, strict=True):
                (tree / classes[i] / p.name).symlink_to(p.resolve())
            data = f"data-{remote.sha256_folder(tree)}"
            files[data] = tree.rename(folder / data)
        return cls(folder, models, data, files)

    def size(self, names: list[str]) -> int:
        return sum(q.stat().st_size for n in names for q in ([self.files[n]] if self.files[n].is_file()
                                                              else self.files[n].rglob("*")) if q.is_file())


def run_fleet(models: list[str | Path], options: BenchOptions, fleet: FleetOptions, *,
              log: Callable[[str], None] = print) -> dict:
    """Every model measured on every host; the merged bench.json document. NoHostMeasured if no host could be."""
    from edgekit.bench.results import merge_results
    from edgekit.bench.suite import _data_images, check_models, run_bench
    from edgekit.data.localization import is_box_dataset

    paths = check_models(models)
    if fleet.remote:
        check_clients()  # and the remote hosts' --data is checked as it is staged, before any host
    elif options.data is not None and not is_box_dataset(options.data):
        _data_images(options.data, options.max_images)  # a bad --data is the command's error, not each host's
    docs, failures = {}, {}

    def one(host: Host, staged: _Staged | None) -> None:
        log(f"{host.text}: measuring {len(paths)} model{'s' if len(paths) != 1 else ''}")
        try:
            doc = run_bench(paths, options, log=log) if host.local else \
                _measure_host(host, staged, options, fleet, log)
        except EdgekitError as exc:
            failures[host.text] = failure_row(host.text, str(exc))
            log(f"{host.text}: not measured: {exc}")
            return
        docs[host.text] = doc
        log(telemetry_line(host.text, doc))

    with tempfile.TemporaryDirectory(prefix="edge-bench-fleet-") as tmp:
        staged = _Staged.make(paths, options, Path(tmp)) if fleet.remote else None
        if fleet.parallel:  # the remote hosts at once (each measures one model at a time), then this machine
            from concurrent.futures import ThreadPoolExecutor

            away = [h for h in fleet.hosts if not h.local]
            with ThreadPoolExecutor(max_workers=len(away) or 1) as pool:
                list(pool.map(lambda h: one(h, staged), away))
        for host in fleet.hosts:
            if host.local or not fleet.parallel:
                one(host, staged)
    if not docs:
        raise NoHostMeasured(f"no host could be measured ({len(failures)} tried; each one's reason is above)")
    merged = merge_results(list(docs.values()), list(docs), names=list(docs))
    rows = merged["rows"]
    merged["rows"] = [r for h in fleet.hosts for r in ([failures[h.text]] if h.text in failures else
                                                       [r for r in rows if r["device"] == h.text])]
    merged["hosts"] = [{"host": h.text, "status": "error" if h.text in failures else "ok",
                        "error": failures[h.text]["error"] if h.text in failures else None} for h in fleet.hosts]
    merged["options"] = docs[next(iter(docs))].get("options")
    merged["data"] = next((d["data"] for d in docs.values() if d.get("data")), None)
    merged["end_to_end_images"] = next(iter(docs.values())).get("end_to_end_images")
    return merged


def failure_row(host: str, reason: str) -> dict:
    """A host that produced no results: one row saying why (bench.json's schema: a model, a status, a size)."""
    return {"path": None, "model": NOT_MEASURED, "format": "", "size_bytes": 0, "backend": None, "threads": None,
            "status": "error", "error": f"not measured on {host}: {reason}", "device": host, "accuracy": None,
            "top1_agreement": None, "reference": None, "not_measured": True}


def telemetry_line(host: str, doc: dict) -> str:
    """The host's governor, temperature and throttling before -> after, in one line."""
    before, after = doc.get("device_before") or {}, doc.get("device_after") or {}
    parts = []
    for key, unit in (("governor", ""), ("cpu0_mhz", " MHz"), ("temperature_c", " °C"), ("throttled", "")):
        b, a = before.get(key), after.get(key)
        if b is not None or a is not None:
            parts.append(f"{key} {b if b is not None else '-'}{unit}" + (f" -> {a}{unit}" if a != b else ""))
    return f"{host}: " + ("; ".join(parts) if parts else "no governor, temperature or throttling to read")


def _remote_timeout(paths: list[Path], options: BenchOptions, fleet: FleetOptions) -> float:
    if fleet.host_timeout is not None:
        return fleet.host_timeout
    from edgekit.bench.suite import _runs_for

    return 120 + options.timeout * sum(len(_runs_for(Path(m), options)) for m in paths)


def _probe(host: Host, staged: _Staged, fleet: FleetOptions, incoming: str) -> dict:
    """The host's Python and edgekit version (refusing another version), and which cached files it has."""
    from edgekit import __version__

    python = fleet.remote_python
    arg = {"cache": remote.CACHE, "want": list(staged.files), "incoming": incoming}
    done = run(ssh_command(host, fleet.ssh, [python, "-", json.dumps(arg)]), CONNECTING,
               timeout=fleet.ssh.connect_timeout + 60, stdin=remote.PROBE.encode())
    found = remote.tagged(done.stdout, remote.PROBE_TAG)
    if found is None:
        from edgekit.bench.ssh import last_line

        why = last_line(done.stderr)
        if done.returncode == 127 or "not found" in why or "No such file" in why:
            raise HostError(f"no Python at {python} there (name the host's Python with --remote-python)")
        raise HostError(f"{python} failed there (exit {done.returncode}: {why or 'no output'})")
    probe = json.loads(found)
    if probe["edgekit"] is None:
        raise HostError(f"edgekit is not installed for {python} there ({probe['problem']}); pip install edgekit "
                        "there, or name the Python that has it with --remote-python")
    if probe["edgekit"] != __version__:
        raise HostError(f"edgekit {probe['edgekit']} there, {__version__} here: install the same version on both")
    return probe


def _measure_host(host: Host, staged: _Staged, options: BenchOptions, fleet: FleetOptions,
                  log: Callable[[str], None]) -> dict:
    """Probe, copy what the cache lacks, measure there; the host's bench.json document, checked."""
    from edgekit.bench.results import check_results

    incoming = f"incoming-{secrets.token_hex(6)}"
    probe = _probe(host, staged, fleet, incoming)
    cache = probe["cache"]
    send = [n for n in staged.files if n not in probe["have"]]
    if send:
        size = staged.size(send)
        log(f"{host.text}: copying {len(send)} file{'s' if len(send) != 1 else ''} ({size / 1e6:.1f} MB) "
            f"to {cache}")
        copied = run(scp_command(host, fleet.ssh, [str(staged.files[n]) for n in send], f"{cache}/{incoming}"),
                     "copying the models", timeout=60 + fleet.ssh.connect_timeout + size / COPY_BYTES_PER_S)
        if copied.returncode != 0:
            from edgekit.bench.ssh import last_line

            raise HostError(f"copying the models failed ({last_line(copied.stderr) or copied.returncode})")
    else:
        log(f"{host.text}: every file is already in its cache ({cache})")
    spec = {"cache": cache, "incoming": incoming, "models": staged.models, "data": staged.data,
            "options": {**{k: v for k, v in vars(options).items() if k != "data"},
                        "max_images": 0 if staged.data else options.max_images}}
    timeout = _remote_timeout([Path(m["path"]) for m in staged.models], options, fleet)
    done = run(ssh_command(host, fleet.ssh, [fleet.remote_python, "-c", remote.SERVE_COMMAND,
                                             remote.encode_spec(spec)]),
               "the run there", timeout=timeout, log=lambda line: log(f"  [{host.text}] {line}"))
    error = remote.tagged(done.stdout, remote.ERROR_TAG)
    if error is not None:
        raise HostError(error)
    found = remote.tagged(done.stdout, remote.RESULT_TAG)
    if found is None:
        from edgekit.bench.ssh import last_line

        raise HostError(f"the run there died (exit {done.returncode}: {last_line(done.stderr) or 'no output'})")
    try:
        doc = check_results(json.loads(found), f"{host.text}'s bench.json")
    except ValueError as exc:
        raise HostError(f"its bench.json is not JSON ({exc})") from None
    if options.data is not None:  # say where the images came from here, not the host's cache
        doc["options"]["data"], doc["options"]["max_images"] = str(options.data), options.max_images
        doc["data"]["source"] = str(options.data)
    return doc
