"""The request log: one line per request with route, model@agent, status, times, tokens and
sidecar key, as text or JSON lines, or off; it reaches /logs beside llamasup's own lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from service_helpers import chat, fake_profile, running_service, write_model_files

pytestmark = pytest.mark.anyio


def _root(tmp_path: Path, fake_bin: Path, mode: str) -> Path:
    write_model_files(tmp_path, ["alpha"])
    root = tmp_path / "profiles"
    root.mkdir()
    (root / "p.yaml").write_text(
        fake_profile(
            fake_bin, tmp_path / "state", {"alpha": ""}, server_extra=f"request_log: {mode}"
        )
    )
    return root


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "llamasup.requests"]


async def test_text_lines_name_the_request_its_tokens_and_sidecar(
    tmp_path: Path, fake_server_bin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="llamasup.requests")
    async with running_service(_root(tmp_path, fake_server_bin, "text"), watch=False) as running:
        await chat(running.client, "alpha", max_tokens=3)
        missing = await running.client.post(
            "/v1/chat/completions", json={"model": "nope", "messages": []}
        )
        assert missing.status_code == 404
        key = running.service.supervisor.statuses()[0].key
        lines = _lines(caplog)
        assert len(lines) == 2
        ok, refused = lines
        assert ok.startswith("/v1/chat/completions alpha 200 ")
        assert f"sidecar {key}" in ok
        assert "tokens " in ok and "->3 " in ok, ok
        assert " 404 " in refused and refused.endswith("error model_not_found")
        logs = (await running.client.get("/logs")).text
        assert "llamasup.requests: /v1/chat/completions alpha 200" in logs


async def test_json_lines_and_off(
    tmp_path: Path, fake_server_bin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="llamasup.requests")
    root = _root(tmp_path, fake_server_bin, "json")
    async with running_service(root, watch=False) as running:
        await chat(running.client, "alpha", max_tokens=2)
        (line,) = _lines(caplog)
        record = json.loads(line)
        assert (record["model"], record["status"], record["tokens_out"]) == ("alpha", 200, 2)
        assert record["sidecar"] and record["streamed"] is False
    caplog.clear()
    text = (root / "p.yaml").read_text()
    (root / "p.yaml").write_text(text.replace("request_log: json", "request_log: off"))
    async with running_service(root, watch=False) as running:
        await chat(running.client, "alpha")
        assert _lines(caplog) == []
