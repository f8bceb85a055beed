"""``llamasup doctor``: checks of a host against a profile set, each returning a CheckResult.

Every check is a function of its inputs (a profile value, a path, the environment) that looks
at the machine and returns what it saw; none changes anything except ``check_state_dir``,
which creates the state directory as ``serve`` would. Printing lives in ``cli_doctor``.

The binary checks live in :mod:`llamasup.doctor.binaries`, the device and memory checks in
:mod:`llamasup.doctor.devices`; this module runs them all in order, with the model, network
and file checks.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from llamasup.doctor.binaries import (
    binary_checks,
    check_binaries,
    check_binary,
    check_flag_table,
    check_flags_in_use,
)
from llamasup.doctor.devices import (
    budgets_from_profile,
    check_devices,
    check_gpu_tools,
    check_memory_budget,
    check_offload,
    device_budget_checks,
    host_memory,
    plain_budget_check,
)
from llamasup.doctor.result import CheckResult, Status
from llamasup.errors import ProfileError
from llamasup.profiles.load import load_profiles
from llamasup.profiles.types import ModelConfig, Profiles, ServerConfig
from llamasup.runtime.toolchains import choose_backend, probe_gpus
from llamasup.sidecars.ports import port_is_free

__all__ = [
    "CheckResult",
    "Status",
    "budgets_from_profile",
    "check_binaries",
    "check_binary",
    "check_command",
    "check_devices",
    "check_flag_table",
    "check_flags_in_use",
    "check_gpu_tools",
    "check_listen",
    "check_memory_budget",
    "check_model",
    "check_offload",
    "check_ports",
    "check_profiles",
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
EXTRA_PORT_PROBES = 16


def run_checks(
    path: Path, environ: Mapping[str, str], *, system_config: Path = SYSTEM_CONFIG
) -> list[CheckResult]:
    """Every check, in the order a person would fix things. Checks that need the profile
    set are skipped when it does not load; the others still run."""
    results, profiles = check_profiles(path, environ)
    server = profiles.server if profiles is not None else None
    probes = probe_gpus(environ)
    auto = choose_backend(environ, probes=probes)
    checked, devices = binary_checks(profiles, environ, auto)
    results += checked
    results.append(check_gpu_tools(environ, probes, auto, host_os=sys.platform))
    if server is not None:
        budget = dict(server.device_budgets) or server.memory_budget
        results += check_memory_budget(budget, devices, host=host_memory())
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
