"""Doctor checks of the llama-server binaries a profile set runs: found, their version, their
``--help`` against llamasup's flag table, the flags models would start them with, and their
devices with the GPU offload their models ask for (:mod:`llamasup.doctor.devices`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

from llamasup.doctor.devices import check_devices, check_offload, offload_requests
from llamasup.doctor.result import CheckResult
from llamasup.doctor.threads import check_threads
from llamasup.errors import LlamasupError, RuntimeNotFoundError
from llamasup.flags.helptext import TableDrift, parse_help, table_drift
from llamasup.flags.table import TABLE
from llamasup.profiles.types import Profiles
from llamasup.runtime.devices import Device, build_info, list_devices
from llamasup.runtime.locate import (
    LLAMA_CPP_BUILD,
    ResolvedBinary,
    binary_version,
    resolve_binary,
)
from llamasup.runtime.toolchains import AutoChoice
from llamasup.spec.childenv import child_environment
from llamasup.spec.resolve import resolve

HELP_TIMEOUT = 10.0
SHOWN_FLAGS = 12


def check_binaries(
    profiles: Profiles | None, environ: Mapping[str, str], *, auto: AutoChoice | None = None
) -> list[CheckResult]:
    """The server-wide binary, then each other binary a llama-server model configures: found,
    its version and flags, its devices, and the GPU offload its models ask of it."""
    return binary_checks(profiles, environ, auto)[0]


def binary_checks(
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
            gpu = any(device.offloads for device in listed)
            results.append(check_threads(profiles, models, gpu=gpu, label=f"threads{suffix}"))
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
