"""Helpers for the import tests: run an importer, load its output, read argv and warnings."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from e2e.serve_process import serving

from llamasup.migrate.draft import Draft
from llamasup.migrate.emit import render_directory, render_single, validate
from llamasup.migrate.llama_swap.convert import import_swap
from llamasup.profiles.types import Profiles
from llamasup.spec.resolve import resolve

SWAP_FIXTURES = Path(__file__).parents[1] / "fixtures" / "llama-swap"


@dataclass
class Imported:
    draft: Draft
    files: dict[str, str]
    profiles: Profiles

    def argv(self, model: str, agent: str | None = None) -> list[str]:
        """binary + args of the sidecar (llamasup appends --host/--port when it spawns it)."""
        spec = resolve(self.profiles, model, agent).spec
        return [spec.binary, *spec.args]

    def request_defaults(self, model: str, agent: str) -> dict[str, Any]:
        return dict(resolve(self.profiles, model, agent).request_defaults)

    def warning(self, path: str) -> str:
        """The message of the one warning recorded at ``path``."""
        found = [w.message for w in self.draft.warnings if w.path == path]
        listing = "\n".join(str(w) for w in self.draft.warnings)
        assert len(found) == 1, f"expected one warning at {path!r}, warnings:\n{listing}"
        return found[0]

    @property
    def warning_paths(self) -> list[str]:
        return [w.path for w in self.draft.warnings]

    @property
    def text(self) -> str:
        return "\n".join(self.files.values())


def import_swap_text(
    text: str,
    directory: Path,
    environ: Mapping[str, str] | None = None,
    *,
    layout: str = "single",
    listen: str | None = None,
) -> Imported:
    env = dict(environ or {})
    draft = import_swap(text, source="config.yaml", environ=env, anchor=directory, listen=listen)
    files = render_directory(draft) if layout == "dir" else render_single(draft)
    return Imported(draft, files, validate(files, directory, env))


def import_swap_fixture(
    name: str, directory: Path, environ: Mapping[str, str] | None = None, **kwargs: Any
) -> Imported:
    return import_swap_text((SWAP_FIXTURES / name).read_text("utf-8"), directory, environ, **kwargs)


def serve_and_chat_via_llamasup(
    profile_path: Path, model: str, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Serve ``profile_path`` with ``llamasup serve`` (a real process on a free loopback
    port, ``environ`` added to this process's environment for the profile's ``${env.X}``),
    send one chat completion for ``model`` through the ``openai`` client, stop the server
    (exit 0, no sidecar left) and return the response as a dict."""
    with serving(profile_path, environ={**os.environ, **(environ or {})}) as served:
        client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=8
        )
        served.status()  # the sidecar's pid, checked to be gone after the stop
        assert served.seen_pids, "a sidecar answered, yet status lists no process"
    return reply.model_dump()
