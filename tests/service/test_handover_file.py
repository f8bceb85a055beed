"""The hand-over file: atomic, owner-only, versioned, and read back exactly."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from llamasup.service import handover_file
from llamasup.service.handover_file import Handover, HandoverFileError, SidecarRecord
from llamasup.sidecars.handover import ProcessHandle
from llamasup.sidecars.procfs import start_time


def sample(owner_pid: int = 4242, owner_start: str = "777") -> Handover:
    process = ProcessHandle(
        pid=31337,
        start_time="12345",
        port=8500,
        pipes={1: 7, 2: 8},
        partial={2: b"\xffhalf"},
        auth_key="k3y",
        started_at=1.5,
        ready_at=2.5,
        restarts=3,
    )
    record = SidecarRecord(
        key="abcd",
        model="gemma",
        agent="coder",
        agent_flags=("--top-k 3",),
        agents=("coder", "writer"),
        kind="llama-server",
        health_path="/health",
        argv=("llama-server", "--model", "/m.gguf"),
        last_used=9.0,
        process=process,
    )
    return Handover(
        owner_pid=owner_pid,
        owner_start=owner_start,
        owner_version="0.1.0",
        state_dir="/var/lib/llamasup",
        written_at=100.0,
        requested_monotonic=50.0,
        restarts=2,
        listen_fds=(5, 6),
        connection_fds=(9,),
        sidecars=(record,),
    )


def test_written_atomically_for_the_owner_only_and_read_back(tmp_path: Path) -> None:
    path = handover_file.path_in(tmp_path / "state")
    handover_file.write(path, sample())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the sidecars' keys
    assert [p.name for p in path.parent.iterdir()] == [handover_file.FILE_NAME]  # no scratch
    assert handover_file.read(path) == sample()
    doc = json.loads(path.read_text())
    assert (doc["kind"], doc["version"]) == ("llamasup-handover", 1)
    record = doc["sidecars"][0]
    assert (record["pid"], record["pgid"], record["start_time"]) == (31337, 31337, "12345")
    # rewritten in place, still owner-only
    handover_file.write(path, sample(owner_pid=1))
    assert handover_file.read(path).owner_pid == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "is not JSON"),
        ("[]", "not a llamasup hand-over file"),
        (
            '{"kind": "llamasup-handover", "version": 2}',
            "has version 2; this llamasup reads version 1",
        ),
        ('{"kind": "llamasup-handover", "version": 1}', "is malformed: KeyError"),
    ],
)
def test_what_cannot_be_used_is_refused_with_the_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "handover.json"
    path.write_text(text)
    with pytest.raises(HandoverFileError, match=message):
        handover_file.read(path)


def test_unknown_fields_are_ignored_so_a_later_version_may_add_some(tmp_path: Path) -> None:
    path = tmp_path / "handover.json"
    handover_file.write(path, sample())
    doc = json.loads(path.read_text())
    doc["future"] = {"anything": 1}
    doc["sidecars"][0]["future"] = True
    path.write_text(json.dumps(doc))
    assert handover_file.read(path) == sample()


def test_only_the_process_that_wrote_it_owns_its_descriptors() -> None:
    me = os.getpid()
    mine = start_time(me)
    assert mine is not None
    assert handover_file.written_here(sample(me, mine))
    assert not handover_file.written_here(sample(me, "0"))  # our pid, another process
    assert not handover_file.written_here(sample(me + 1, mine))
