"""The subcommands' arguments, and nothing heavier: what ``llamasup --help`` needs.

Building the parser must stay cheap (``--version``, ``--help``, a usage error): every module
here imports only the standard library and light llamasup modules. Each defines
``register(commands)`` for its subcommands, which name their handlers by dotted path
(:class:`LazyHandler`); a handler's module, with the service, the reconciler or httpx behind
it, is imported only when its subcommand runs. tests/cli/test_lazy_cli.py holds both promises.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class LazyHandler:
    """A subcommand's handler, named ``"package.module:function"`` and imported when called.

    ``wrapper`` (also ``"module:function"``) is applied to the function first: the control
    commands' handlers take ``(args, client)`` and ``llamasup.cli.client:connected`` opens
    the client for them.
    """

    target: str
    wrapper: str | None = None

    def __call__(self, args: argparse.Namespace) -> int:
        return self.resolve()(args)

    def resolve(self) -> Handler:
        function = _attribute(self.target)
        if self.wrapper is not None:
            function = _attribute(self.wrapper)(function)
        return cast(Handler, function)


def _attribute(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
