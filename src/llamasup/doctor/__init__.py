"""``llamasup doctor``: checks of a host against a profile set, each returning a CheckResult.

Every check is a function of its inputs (a profile value, a path, the environment) that looks
at the machine and returns what it saw; none changes anything except ``check_state_dir``,
which creates the state directory as ``serve`` would. Printing lives in ``cli_doctor``.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from llamasup.doctor.devices import (
    budgets_from_profile,
    check_devices,
    check_gpu_tools,
    check_memory_budget,
    check_offload,
    device_budget_checks,
    host_memory,
    offload_requests,
    plain_budget_check,
)
from llamasup.doctor.result import CheckResult, Status
from llamasup.errors import LlamasupError, ProfileError, RuntimeNotFoundError
from llamasup.flags.helptext import TableDrift, parse_help, table_drift
from llamasup.flags.table import TABLE
from llamasup.profiles.load import load_profiles
from llamasup.profiles.types import ModelConfig, Profiles, ServerConfig
from llamasup.runtime.devices import Device, build_info, list_devices
from llamasup.runtime.locate import (
    LLAMA_CPP_BUILD,
    ResolvedBinary,
    binary_version,
    resolve_binary,
)
from llamasup.runtime.toolchains import AutoChoice, choose_backend, probe_gpus
from llamasup.sidecars.ports import port_is_free
from llamasup.spec.childenv import child_environment
from llamasup.spec.resolve import resolve

__all__ = [
    "CheckResult",
    "Status",
    "budgets_from_profile",
    "check_binaries",
    "check_binary",
    "check_command",
    "check_devices",
    "check_flag_table",
    "check_gpu_tools",
    "check_listen",
    "check_memory_budget",
    "check_model",
    "check_offload",
    "check_ports",
    "check_state_dir",
    "check_system_config",
    "device_budget_checks",
    "plain_budget_check",
    "run_checks",
]

GGUF_MAGIC = b"GGUF"
#: llama-server (b11434, common/arg.cpp) applies this file before env and flags, to every
#: program of llama.cpp; unlike the per-user file it cannot be redirected per process
SYSTEM_CONFIG = Path("/etc/llama.cpp/config.ini")
HELP_TIMEOUT = 10.0
EXTRA_PORT_PROBES = 16
SHOWN_FLAGS = 12


def run_checks(
    path: Path, environ: Mapping[str, str], *, system_config: Path = SYSTEM_CONFIG
) -> list[CheckResult]:
    """Every check, in the order a person would fix things. Checks that need the profile
    set are skipped when it does not load; the others still run."""
    results, profiles = check_profiles(path, environ)
    server = profiles.server if profiles is not None else None
    probes = probe_gpus(environ)
    auto = choose_backend(environ, probes=probes)
    checked, devices = _check_binaries(profiles, environ, auto)
    results += checked
    results.append(check_gpu_tools(environ, probes, auto, host_os=sys.platform))
    if server is not None:
        results += check_memory_budget(server.memory_budget, devices, host=host_memory())
    if profiles is not None and server is not None:
        for model in profiles.models.values():
            results.append(
                check_command(model, server, environ) if model.is_command else check_model(model)
            )
        results.append(check_ports(*server.ports, needed=server.max_sidecars or 1))
        results.append(check_listen(server.listen_host, server.listen_port))
        results.append(check_state_dir(server.state_dir))
    results.append(check_system_config(system_config))
    return results


# -- profiles ----------------------------------------------------------------------------------


def check_profiles(
    path: Path, environ: Mapping[str, str]
) -> tuple[list[CheckResult], Profiles | None]:
    try:
        profiles = load_profiles(path, environ)
    except ProfileError as exc:
        shown = "; ".join(str(issue) for issue in exc.issues[:3])
        more = f" (and {len(exc.issues) - 3} more)" if len(exc.issues) > 3 else ""
        fix = f"run `llamasup validate {path}` for every problem with its file:line"
        return [CheckResult("profiles", "FAIL", f"{shown}{more}", fix)], None
    detail = (
        f"{path} is valid: {len(profiles.files)} file(s), {len(profiles.models)} model(s), "
        f"{len(profiles.agents)} agent(s), revision {profiles.revision}"
    )
    return [CheckResult("profiles", "ok", detail)], profiles


# -- llama-server binaries -----------------------------------------------------------------------


def check_binaries(
    profiles: Profiles | None, environ: Mapping[str, str], *, auto: AutoChoice | None = None
) -> list[CheckResult]:
    """The server-wide binary, then each other binary a llama-server model configures: found,
    its version and flags, its devices, and the GPU offload its models ask of it."""
    return _check_binaries(profiles, environ, auto)[0]


def _check_binaries(
    profiles: Profiles | None, environ: Mapping[str, str], auto: AutoChoice | None
) -> tuple[list[CheckResult], list[Device] | None]:
    """The checks, and every device the binaries listed (None when none could list)."""
    wanted: dict[str | None, list[str]] = {}
    server_binary = profiles.server.binary if profiles is not None else None
    wanted[server_binary] = []
    for model in profiles.models.values() if profiles is not None else ():
        if not model.is_command:
            wanted.setdefault(model.binary or server_binary, []).append(model.id)
    results: list[CheckResult] = []
    devices: dict[str, Device] | None = None
    # the environment a sidecar gets: CUDA_VISIBLE_DEVICES and the like change what it sees
    profile_env = dict(profiles.server.env) if profiles is not None else {}
    child_env = child_environment(environ, profile_env, None)
    for configured, models in wanted.items():
        suffix = "" if configured == server_binary else f" for {', '.join(models)}"
        resolved, checked = _check_binary(configured, environ, f"binary{suffix}")
        results += checked
        if resolved is None:
            continue
        found = resolved.path
        table, drift = _flag_table(found, f"flag table{suffix}")
        results.append(table)
        if drift and drift.missing and profiles is not None and models:
            results.append(
                check_flags_in_use(found, drift, profiles, models, f"flags in use{suffix}")
            )
        listed = list_devices(found, env=child_env)
        results.append(check_devices(found, listed, build_info(found), f"devices{suffix}"))
        if listed is None:
            continue
        devices = {**{d.name: d for d in listed}, **(devices or {})}
        if profiles is not None and models:
            requests = offload_requests(profiles, models)
            label = f"gpu offload{suffix}"
            source = resolved.source
            results.append(
                check_offload(found, listed, requests, source=source, auto=auto, label=label)
            )
    return results, None if devices is None else list(devices.values())


def check_binary(
    configured: str | None, environ: Mapping[str, str], label: str = "binary"
) -> tuple[Path | None, list[CheckResult]]:
    """Can the binary be found, and is it the llama.cpp build the flag table describes?"""
    resolved, results = _check_binary(configured, environ, label)
    return (resolved.path if resolved is not None else None), results


def _check_binary(
    configured: str | None, environ: Mapping[str, str], label: str
) -> tuple[ResolvedBinary | None, list[CheckResult]]:
    try:
        resolved = resolve_binary(configured, environ)
    except RuntimeNotFoundError as exc:
        fix = (
            "run `llamasup runtime install`, set LLAMA_SERVER_BIN, or point server.binary "
            "at a llama-server"
        )
        if configured:
            fix = f"fix `binary: {configured}` in the profile, or remove it to use the default"
        return None, [CheckResult(label, "FAIL", str(exc), fix)]
    found = CheckResult(label, "ok", f"{resolved.path} (from {resolved.source})")
    version = binary_version(resolved.path)
    if version is None:
        failed = CheckResult(
            f"{label} version",
            "FAIL",
            f"{resolved.path} --version fails or does not answer",
            f"run `{resolved.path} --version` to see why (missing libraries, wrong CPU, or "
            "a GPU build without its driver)",
        )
        return None, [found, failed]
    if not version.startswith(f"b{LLAMA_CPP_BUILD}-"):
        differs = CheckResult(
            f"{label} version",
            "warn",
            f"{version}; llamasup's flag table describes b{LLAMA_CPP_BUILD}",
            "see the flag table check below for what differs, or use the tested build "
            "(`llamasup runtime install`)",
        )
        return resolved, [found, differs]
    return resolved, [found, CheckResult(f"{label} version", "ok", version)]


def check_flag_table(binary: Path, label: str = "flag table") -> CheckResult:
    """Does the binary's ``--help`` list the flags llamasup's table models, no more, no less?"""
    return _flag_table(binary, label)[0]


def _flag_table(binary: Path, label: str) -> tuple[CheckResult, TableDrift | None]:
    try:
        answer = subprocess.run(
            [str(binary), "--help"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=HELP_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return CheckResult(label, "warn", f"cannot run {binary} --help: {exc}"), None
    entries = parse_help(answer.stdout or answer.stderr)
    if answer.returncode != 0 or not entries:
        detail = f"{binary} --help (exit {answer.returncode}) lists no flags; not compared"
        return CheckResult(label, "warn", detail, "is it a llama-server?"), None
    drift = table_drift(entries, TABLE)
    if not drift:
        ok = CheckResult(label, "ok", f"the table and --help agree ({len(entries)} entries)")
        return ok, drift
    parts = []
    if drift.unmodelled:
        parts.append(f"the binary has flags the table does not model: {_some(drift.unmodelled)}")
    if drift.missing:
        parts.append(f"the table has flags the binary lacks: {_some(drift.missing)}")
    if drift.arity:
        parts.append(f"value vs switch disagrees for: {_some(drift.arity)}")
    fix = (
        "profiles can use only modelled flags, and a flag the binary lacks makes its "
        f"sidecar exit; use llama.cpp b{LLAMA_CPP_BUILD} (`llamasup runtime install`) or a "
        "llamasup release for this build"
    )
    return CheckResult(label, "warn", "; ".join(parts), fix), drift


def check_flags_in_use(
    binary: Path, drift: TableDrift, profiles: Profiles, model_ids: list[str], label: str
) -> CheckResult:
    """Does any model (with any agent) run a flag this binary does not have?"""
    lacking = set(drift.missing)
    uses: dict[str, set[str]] = {}
    for model_id in model_ids:
        own: set[str] = set()
        for agent in [None, *profiles.agents]:
            try:
                args = resolve(profiles, model_id, agent).spec.args
            except LlamasupError:  # an agent that does not apply to this model
                continue
            # an agent is listed for what it adds to its model's own missing flags
            found = {arg for arg in args if arg in lacking} - own
            if agent is None:
                own = found
            if found:
                uses[model_id if agent is None else f"{model_id}@{agent}"] = found
    if not uses:
        return CheckResult(label, "ok", f"every flag the models use exists in {binary.name}")
    shown = "; ".join(f"{t}: {' '.join(sorted(f))}" for t, f in sorted(uses.items())[:5])
    more = f" (+{len(uses) - 5} more)" if len(uses) > 5 else ""
    return CheckResult(
        label,
        "FAIL",
        f"{binary} does not have flags these would start with: {shown}{more}",
        f"use llama.cpp b{LLAMA_CPP_BUILD} (`llamasup runtime install`), or change those args "
        "to what this build accepts (see its --help)",
    )


def _some(names: tuple[str, ...]) -> str:
    shown = " ".join(names[:SHOWN_FLAGS])
    return shown if len(names) <= SHOWN_FLAGS else f"{shown} (+{len(names) - SHOWN_FLAGS} more)"


# -- models ------------------------------------------------------------------------------------


def check_model(model: ModelConfig) -> CheckResult:
    """A llama-server model's GGUF: there, readable, and a GGUF file."""
    label = f"model {model.id}"
    if model.path is None:
        return CheckResult(label, "ok", "no local file: the model source is in its args")
    where = f"models.{model.id}.path ({model.source})"
    try:
        with model.path.open("rb") as handle:
            head = handle.read(len(GGUF_MAGIC))
    except FileNotFoundError:
        return CheckResult(
            label, "FAIL", f"{model.path} does not exist", f"put the GGUF there or fix {where}"
        )
    except IsADirectoryError:
        return CheckResult(
            label, "FAIL", f"{model.path} is a directory", f"name the .gguf file in {where}"
        )
    except OSError as exc:
        return CheckResult(
            label,
            "FAIL",
            f"{model.path} cannot be read: {exc.strerror or exc}",
            "let the user running llamasup read it (chmod/chown)",
        )
    if head != GGUF_MAGIC:
        return CheckResult(
            label,
            "FAIL",
            f"{model.path} is not a GGUF file (starts with {head!r}, not {GGUF_MAGIC!r}); "
            "llama-server would exit with a model loading error",
            f"convert it to GGUF, or name the right file in {where}",
        )
    size = model.path.stat().st_size
    return CheckResult(label, "ok", f"{model.path} (GGUF, {size / 2**20:.1f} MiB)")


def check_command(
    model: ModelConfig, server: ServerConfig, environ: Mapping[str, str]
) -> CheckResult:
    """A command model's program: an executable path, or a name on the PATH it will get."""
    label = f"command {model.id}"
    assert model.command is not None
    program = model.command[0]
    fix = f"install {program} or fix models.{model.id}.command ({model.source})"
    if os.sep in program:
        path = Path(program).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return CheckResult(label, "ok", str(path))
        return CheckResult(label, "FAIL", f"{path} is not an executable file", fix)
    # the child is spawned with the profile's environment, so its PATH decides the lookup
    search = {**environ, **dict(server.env), **dict(model.env)}.get("PATH", os.defpath)
    found = shutil.which(program, path=search)
    if found is None:
        return CheckResult(label, "FAIL", f"{program!r} is not on PATH ({search})", fix)
    return CheckResult(label, "ok", found)


# -- network -----------------------------------------------------------------------------------


def check_ports(first: int, last: int, *, needed: int = 1) -> CheckResult:
    """Bind-probe the start of the sidecar range (on loopback, where sidecars listen)."""
    label = "sidecar ports"
    size = last - first + 1
    needed = max(1, min(needed, size))
    probes = min(size, needed + EXTRA_PORT_PROBES)
    free = probed = 0
    for port in range(first, first + probes):
        probed += 1
        free += port_is_free("127.0.0.1", port)
        if free >= needed:
            break
    detail = f"{first}-{last}: {free} of {probed} probed port(s) free on 127.0.0.1"
    fix = "choose another server.ports range, or stop what listens there (`ss -ltnp`)"
    if free == 0:
        return CheckResult(label, "FAIL", detail, fix)
    if free < needed:
        return CheckResult(label, "warn", f"{detail}; {needed} sidecar(s) may run at once", fix)
    return CheckResult(label, "ok", detail)


def check_listen(host: str, port: int) -> CheckResult:
    """Can the front bind its address? In use usually means llamasup already runs."""
    label = "listen"
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return CheckResult(
            label,
            "FAIL",
            f"{shown}: {exc.strerror}",
            "use an address of this host in server.listen",
        )
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        if sys.platform != "win32":
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return CheckResult(
                    label,
                    "warn",
                    f"{shown} is in use: is llamasup already running?",
                    "stop the other process, or give server.listen another port",
                )
            return CheckResult(
                label,
                "FAIL",
                f"cannot bind {shown}: {exc.strerror or exc}",
                "use an address of this host and a port this user may bind in server.listen",
            )
    return CheckResult(label, "ok", f"{shown} can be bound")


# -- files -------------------------------------------------------------------------------------


def check_state_dir(path: Path) -> CheckResult:
    """The sidecar logs go here; create it if missing, as ``serve`` will, and write a file."""
    label = "state dir"
    fix = "make it writable for this user, or set server.state_dir"
    existed = path.is_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as exc:
        return CheckResult(label, "FAIL", f"{path} is not writable: {exc.strerror or exc}", fix)
    return CheckResult(label, "ok", f"{path} is writable" + ("" if existed else " (created)"))


def check_system_config(path: Path = SYSTEM_CONFIG) -> CheckResult:
    label = "llama.cpp config.ini"
    if not path.exists():
        return CheckResult(label, "ok", f"{path} absent")
    return CheckResult(
        label,
        "warn",
        f"{path} exists: every llama-server applies it before its flags, so any setting the "
        "profile does not override comes from there (llamasup hides the per-user "
        "config.ini from sidecars, but cannot hide this one)",
        "move its settings into the profile (server.base_args) and remove the file",
    )
