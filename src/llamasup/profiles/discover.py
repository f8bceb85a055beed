"""Where a profile set is, and what a client can read from it without loading it.

The commands that take a profile path default to the same one (``serve``, ``validate``,
``doctor``, and the control client looking for the server to talk to). A control client also
needs ``server.listen`` from a profile set that may not validate where it runs (it names a
variable only the service's unit sets): :func:`read_listen` reads just that key. Shell
completion needs the model ids and agent names: :func:`read_names` reads just those.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from llamasup.profiles.values import parse_listen

PROFILES_ENV = "LLAMASUP_PROFILES"
DEFAULT_PROFILE_DIR = "profiles"
PROFILE_SUFFIXES = (".yaml", ".yml")


def default_profile_path(environ: Mapping[str, str] | None = None) -> Path:
    """The profile set a command uses when it is given none.

    Args:
        environ: the environment to read ``$LLAMASUP_PROFILES`` from (default: the process's).

    Returns:
        ``$LLAMASUP_PROFILES``, else ``./profiles``, else ``./profiles.yaml`` if only that exists.
    """
    env = os.environ if environ is None else environ
    if env.get(PROFILES_ENV):
        return Path(env[PROFILES_ENV])
    directory = Path(DEFAULT_PROFILE_DIR)
    single = Path("profiles.yaml")
    if not directory.exists() and single.exists():
        return single
    return directory


def profile_files(path: Path) -> list[Path]:
    """The files of a profile path: the file itself, or a directory's ``*.yaml``/``*.yml``."""
    if path.is_dir():
        return sorted(
            p
            for p in path.iterdir()
            if p.suffix in PROFILE_SUFFIXES and not p.name.startswith(".") and p.is_file()
        )
    return [path]


def read_listen(path: Path) -> tuple[str, int] | None:
    """``server.listen`` as written in the YAML of a profile set, without validating it.

    Args:
        path: a profile file or directory.

    Returns:
        ``(host, port)`` of the first file that sets a literal listen address with a host;
        ``None`` when no file does (unparsable files and ``${env.X}`` values are skipped).

    Raises:
        OSError: the directory cannot be listed.
    """
    for file in profile_files(path):
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        server = data.get("server") if isinstance(data, dict) else None
        listen = server.get("listen") if isinstance(server, dict) else None
        if not isinstance(listen, str) or "$" in listen:
            continue
        try:
            host, port = parse_listen(listen)
        except ValueError:
            continue
        if host:
            return host, port
    return None


def read_names(path: Path) -> tuple[list[str], list[str]]:
    """Model ids (with their aliases) and agent names as written in a profile set, unvalidated.

    For shell completion, which must answer in a blink and never fail: files that cannot be
    read or parsed, and entries of the wrong shape, are skipped.

    Args:
        path: a profile file or directory.

    Returns:
        ``(models, agents)``, each sorted without duplicates; empty when ``path`` is missing.
    """
    models: set[str] = set()
    agents: set[str] = set()
    try:
        files = profile_files(path) if path.exists() else []
    except OSError:
        files = []
    for file in files:
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if not isinstance(data, dict):
            continue
        declared = data.get("models")
        if isinstance(declared, dict):
            for model_id, model in declared.items():
                models.add(str(model_id))
                aliases = model.get("aliases") if isinstance(model, dict) else None
                if isinstance(aliases, list):
                    models.update(str(alias) for alias in aliases)
        named = data.get("agents")
        if isinstance(named, dict):
            agents.update(str(name) for name in named)
    return sorted(models), sorted(agents)
