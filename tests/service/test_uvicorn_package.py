"""uvicorn with its package ``__init__`` deferred (``llamasup.service.uvicorn_package``): the
server parts import without uvicorn's command line, and everything else uvicorn offers still
works, in a fresh interpreter as a serving llamasup has it."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import llamasup.service
import uvicorn
from uvicorn.config import Config
from uvicorn.server import Server
facts = {
    "same_classes": uvicorn.Config is Config and uvicorn.Server is Server,
    "version": uvicorn.__version__,
    "command_line_before": "uvicorn.main" in sys.modules or "click" in sys.modules,
}
try:
    uvicorn.no_such_name
except AttributeError:
    facts["unknown_raises"] = True
from uvicorn import run
from uvicorn.main import run as main_run
facts["run_is_main_run"] = run is main_run
facts["server_still_same"] = uvicorn.Server is Server
print(json.dumps(facts))
"""


def test_the_server_parts_come_without_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    from importlib.metadata import version  # noqa: PLC0415

    assert facts == {
        "same_classes": True,
        "version": version("uvicorn"),
        "command_line_before": False,
        "unknown_raises": True,
        "run_is_main_run": True,
        "server_still_same": True,
    }
