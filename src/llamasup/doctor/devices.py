"""Doctor checks of GPU devices: what a binary can offload to (``--list-devices``), whether the
profile asks for offload it cannot do, the vendor tools on the host, and device memory against
``server.memory_budget``.

The budget is read defensively from whatever the profile holds: a plain size (bytes or
``"20GiB"``) or a mapping of device name (as ``--list-devices`` prints it, or ``host`` for
system memory) to a size. :func:`device_budget_checks` is the per-device comparison, kept
separate so the per-device budget work can call it with its own parsed mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from llamasup.core.units import format_bytes, parse_size
from llamasup.doctor.result import CheckResult
from llamasup.errors import LlamasupError, RuntimeInstallError
from llamasup.profiles.types import Profiles
from llamasup.runtime.devices import Device
from llamasup.runtime.locate import Backend
from llamasup.runtime.toolchains import AutoChoice, GpuProbe, find_toolchain
from llamasup.spec.resolve import resolve

HOST = "host"
MEMINFO = Path("/proc/meminfo")

#: the offload flags as the spec spells them (canonical) and their LLAMA_ARG_* twins
OFFLOAD_FLAGS = ("--n-gpu-layers", "--device", "--tensor-split", "--main-gpu")
OFFLOAD_ENV = {
    "LLAMA_ARG_N_GPU_LAYERS": "--n-gpu-layers",
    "LLAMA_ARG_DEVICE": "--device",
    "LLAMA_ARG_TENSOR_SPLIT": "--tensor-split",
    "LLAMA_ARG_MAIN_GPU": "--main-gpu",
}
#: ``-ngl`` values that ask for nothing on a build without GPUs: 0, and ``auto`` (the
#: default, "as many layers as fit the devices there are"); ``--device none`` is the CPU
_NO_OFFLOAD = {"--n-gpu-layers": {"0", "auto"}, "--device": {"none"}}


def _sizes(device: Device) -> str:
    return f"{format_bytes(device.free)} free of {format_bytes(device.total)}"


def describe_devices(devices: Sequence[Device]) -> str:
    return "; ".join(f"{d.name}: {d.description}, {_sizes(d)}" for d in devices)


# -- what the binary lists ---------------------------------------------------------------------


def check_devices(
    binary: Path, devices: Sequence[Device] | None, build: str | None, label: str = "devices"
) -> CheckResult:
    built = f" (built with {build})" if build else ""
    if devices is None:
        return CheckResult(
            label,
            "warn",
            f"`{binary} --list-devices` fails or prints no device list{built}; GPU offload "
            "and device memory are not checked",
            f"run `{binary} --list-devices` to see why (an old or foreign build may lack it)",
        )
    gpus = [device for device in devices if device.offloads]
    others = [device for device in devices if not device.offloads]
    extra = f"; also {', '.join(d.name for d in others)}, which hold no layers" if others else ""
    if not gpus:
        return CheckResult(label, "ok", f"none: a CPU-only build{built}{extra}")
    return CheckResult(label, "ok", f"{describe_devices(gpus)}{built}{extra}")


# -- what the profile asks for -----------------------------------------------------------------


def offload_request(args: Sequence[str], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings in a sidecar's argv (and LLAMA_ARG_* environment) that ask for GPU work.

    ``-ngl N`` other than 0 or ``auto``, ``--device`` other than ``none``, any
    ``--tensor-split`` or ``--main-gpu``; flag (canonical spelling) → value.
    """
    found: dict[str, str] = {}
    for name, flag in OFFLOAD_ENV.items():
        if env and name in env:
            found[flag] = env[name]
    index = 0
    while index < len(args):
        token = args[index]
        flag, equals, inline = token.partition("=")
        if flag in OFFLOAD_FLAGS:
            if equals:
                found[flag] = inline
            elif index + 1 < len(args):
                found[flag] = args[index + 1]
                index += 1
        index += 1
    return {
        flag: value
        for flag, value in found.items()
        if value.strip().lower() not in _NO_OFFLOAD.get(flag, set())
    }


def offload_requests(profiles: Profiles, model_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """What each model, and each agent on top of it, asks for: ``model`` or ``model@agent`` →
    its offload settings (an agent is listed only when it changes its model's)."""
    requests: dict[str, dict[str, str]] = {}
    for model_id in model_ids:
        own: dict[str, str] = {}
        for agent in [None, *profiles.agents]:
            try:
                spec = resolve(profiles, model_id, agent).spec
            except LlamasupError:  # an agent that does not apply to this model
                continue
            asked = offload_request(spec.args, dict(spec.env))
            if agent is None:
                own = asked
                if asked:
                    requests[model_id] = asked
            elif asked and asked != own:
                requests[f"{model_id}@{agent}"] = asked
    return requests


def _shown_requests(requests: Mapping[str, Mapping[str, str]], limit: int = 5) -> str:
    items = sorted(requests.items())
    shown = "; ".join(
        f"{target}: {' '.join(f'{flag} {value}' for flag, value in flags.items())}"
        for target, flags in items[:limit]
    )
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _named_devices(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def check_offload(
    binary: Path,
    devices: Sequence[Device],
    requests: Mapping[str, Mapping[str, str]],
    *,
    source: str,
    auto: AutoChoice | None = None,
    label: str = "gpu offload",
) -> CheckResult:
    """Can ``binary`` do the offload these sidecars (``model`` or ``model@agent``) ask for?

    ``source`` is where the binary was found (``cache``, ``PATH``...); ``auto`` what
    ``--backend auto`` would build here, to name the backend in the fix.
    """
    if not requests:
        return CheckResult(label, "ok", "no model asks for GPU offload")
    gpus = [device for device in devices if device.offloads]
    if not gpus:
        known = auto is not None and auto.backend != "cpu"
        backend = auto.backend if auto is not None and known else "cuda"
        others = "" if known else " (or rocm, vulkan, metal: your GPU's)"
        then = (
            ""
            if source == "cache"
            else f", then point server.binary (or LLAMA_SERVER_BIN) at the path it prints, "
            f"since this one comes from {source}"
        )
        return CheckResult(
            label,
            "FAIL",
            f"{binary} lists no GPU (a CPU-only build), but these ask for GPU offload: "
            f"{_shown_requests(requests)}. llama-server ignores -ngl on such a build and runs "
            "on the CPU, and exits on a --device it does not have",
            f"build a GPU backend: `llamasup runtime install --backend {backend}`{others}{then}; "
            "or run these on the CPU: set -ngl 0 and drop --device, --tensor-split and "
            "--main-gpu",
        )
    listed = {device.name for device in devices}
    unknown = {
        target: names
        for target, flags in requests.items()
        if (names := [n for n in _named_devices(flags.get("--device", "")) if n not in listed])
    }
    if unknown:
        shown = "; ".join(f"{t}: {', '.join(n)}" for t, n in sorted(unknown.items())[:5])
        return CheckResult(
            label,
            "FAIL",
            f"--device names what {binary} does not list ({shown}): llama-server exits with "
            "`invalid device`",
            f"use a device it lists: {', '.join(sorted(listed))} (`{binary} --list-devices`)",
        )
    return CheckResult(
        label, "ok", f"{len(requests)} sidecar(s) offload to {', '.join(d.name for d in gpus)}"
    )


# -- the host's GPU tools ----------------------------------------------------------------------


def check_gpu_tools(
    environ: Mapping[str, str], probes: Sequence[GpuProbe], auto: AutoChoice, *, host_os: str
) -> CheckResult:
    """Vendor tools and toolkits: informational, never required (a GPU works without them)."""
    toolkits = []
    backends: tuple[Backend, ...] = ("cuda", "rocm", "vulkan")
    for backend in (*backends, "metal") if host_os == "darwin" else backends:
        try:
            found = find_toolchain(backend, environ, host_os=host_os).found
        except RuntimeInstallError:
            found = "none"
        toolkits.append(f"{backend}: {found}")
    detail = (
        f"{', '.join(probe.describe() for probe in probes)}; toolkits: {', '.join(toolkits)}; "
        f"`llamasup runtime install --backend auto` would build {auto.backend}"
    )
    return CheckResult("gpu tools", "ok", detail)


# -- memory budgets ----------------------------------------------------------------------------


def host_memory(meminfo: Path = MEMINFO) -> Device | None:
    """System memory as a device named ``host`` (MemTotal, MemAvailable), where Linux says."""
    try:
        text = meminfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    values = {
        match[1]: int(match[2]) * 1024
        for match in re.finditer(r"^(MemTotal|MemAvailable):\s+(\d+) kB", text, re.MULTILINE)
    }
    if "MemTotal" not in values or "MemAvailable" not in values:
        return None
    return Device(HOST, "system memory", values["MemTotal"], values["MemAvailable"])


def budgets_from_profile(raw: object) -> tuple[int | None, dict[str, int]]:
    """``server.memory_budget`` as (a plain size, per-device sizes), whatever form it has.

    An int or a size string is plain; a mapping is per device (entries that are no size are
    left out). Anything else, or None, is no budget.
    """
    if raw is None or isinstance(raw, bool):
        return None, {}
    if isinstance(raw, int | str):
        try:
            return parse_size(raw), {}
        except ValueError:
            return None, {}
    if isinstance(raw, Mapping):
        budgets: dict[str, int] = {}
        for name, value in raw.items():
            try:
                budgets[str(name)] = parse_size(value)
            except ValueError:
                continue
        return None, budgets
    return None, {}


def device_budget_checks(
    devices: Sequence[Device], budgets: Mapping[str, int], *, host: Device | None = None
) -> list[CheckResult]:
    """Each device's budget against that device's free memory (``host``: system memory).

    A budget over what is free is a warning (free memory moves; what fits the budget may not
    fit the device); a budget for a device no binary lists is a failure, since nothing could
    ever be placed there.
    """
    by_name = {device.name: device for device in devices}
    if host is not None:
        by_name.setdefault(HOST, host)
    results = []
    for name, budget in budgets.items():
        label = f"memory budget {name}"
        device = by_name.get(name)
        if device is None and name == HOST:
            results.append(CheckResult(label, "ok", "system memory unknown here: not compared"))
        elif device is None:
            listed = ", ".join(d.name for d in devices) or "none"
            results.append(
                CheckResult(
                    label,
                    "FAIL",
                    f"server.memory_budget names {name}, which no llama-server here lists "
                    f"(devices: {listed})",
                    f"use a name `llama-server --list-devices` prints, or {HOST} for system memory",
                )
            )
        elif budget > device.free:
            results.append(
                CheckResult(
                    label,
                    "warn",
                    f"{format_bytes(budget)} is more than {name}'s {_sizes(device)} "
                    f"({device.description}): what fits the budget may not fit the device",
                    f"lower server.memory_budget.{name}, or free memory on {name}",
                )
            )
        else:
            results.append(
                CheckResult(label, "ok", f"{format_bytes(budget)} within {name}'s {_sizes(device)}")
            )
    return results


def plain_budget_check(
    budget: int, devices: Sequence[Device], *, host: Device | None = None
) -> CheckResult:
    """One size for everything: against the GPUs' free memory together, or, with no GPU, the
    system's available memory."""
    label = "memory budget"
    gpus = [device for device in devices if device.offloads]
    if gpus:
        free = sum(device.free for device in gpus)
        where = f"the {format_bytes(free)} free on {', '.join(d.name for d in gpus)}"
        names = ", ".join(f"{d.name}: ..." for d in gpus)
        fix = (
            "lower server.memory_budget, or give each device its own budget "
            f"({{{names}, {HOST}: ...}})"
        )
    elif host is not None:
        free = host.free
        where = f"the {format_bytes(free)} of system memory available"
        fix = "lower server.memory_budget, or free memory on this host"
    else:
        return CheckResult(label, "ok", f"{format_bytes(budget)}; free memory unknown here")
    if budget > free:
        return CheckResult(
            label,
            "warn",
            f"{format_bytes(budget)} is more than {where}: what fits the budget may not fit",
            fix,
        )
    return CheckResult(label, "ok", f"{format_bytes(budget)} within {where}")


def check_memory_budget(
    raw: object, devices: Sequence[Device] | None, *, host: Device | None = None
) -> list[CheckResult]:
    """``server.memory_budget`` (``raw``, in whatever form the profile holds it) against the
    devices the binaries listed (None: none could list) and system memory."""
    plain, per_device = budgets_from_profile(raw)
    if per_device:
        if devices is None:
            return [
                CheckResult(
                    "memory budget",
                    "warn",
                    "per-device budgets not compared: no llama-server here listed its devices",
                    "see the devices check above",
                )
            ]
        return device_budget_checks(devices, per_device, host=host)
    if plain is None:
        return []
    return [plain_budget_check(plain, devices or (), host=host)]
