"""``write_set``: an applied profile set reaches the disk whole, or not at all."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llamasup.profiles.persist import JOURNAL_NAME, PersistError, recover, write_set


def _snapshot(directory: Path) -> dict[str, str]:
    """Every entry of ``directory`` (hidden ones included): name -> text, or -> link target."""
    out: dict[str, str] = {}
    for path in sorted(directory.iterdir()):
        if path.is_symlink():
            out[path.name] = f"-> {os.readlink(path)}"
        else:
            out[path.name] = "<dir>" if path.is_dir() else path.read_text()
    return out


@pytest.fixture
def profiles(tmp_path: Path) -> Path:
    root = tmp_path / "profiles"
    root.mkdir()
    (root / "00-server.yaml").write_text("server: old\n")
    (root / "10-beta.yaml").write_text("beta: old\n")
    (root / "20-gamma.yaml").write_text("gamma: old\n")
    return root


def _failing(real: Callable[..., None], on_call: int) -> Callable[..., None]:
    calls = 0

    def wrapper(*args: object) -> None:
        nonlocal calls
        calls += 1
        if calls == on_call:
            raise OSError(errno.EIO, "Input/output error", str(args[-1]))
        real(*args)

    return wrapper


def test_writes_replaces_and_removes(profiles: Path) -> None:
    write_set(
        [(profiles / "00-server.yaml", "server: new\n"), (profiles / "30-new.yaml", "new\n")],
        [profiles / "10-beta.yaml", profiles / "20-gamma.yaml"],
    )
    assert _snapshot(profiles) == {"00-server.yaml": "server: new\n", "30-new.yaml": "new\n"}


@pytest.mark.parametrize(
    ("function", "on_call"),
    [
        ("fsync", 2),  # the disk fills while staging the second file
        ("replace", 2),  # the second file cannot be put in place
        ("replace", 4),  # the last stale file cannot be moved away (2 installs, 2 removals)
    ],
)
def test_a_failure_at_any_step_changes_nothing(
    profiles: Path, monkeypatch: pytest.MonkeyPatch, function: str, on_call: int
) -> None:
    before = _snapshot(profiles)
    monkeypatch.setattr(os, function, _failing(getattr(os, function), on_call))
    with pytest.raises(PersistError, match=r"Input/output error.*nothing was changed"):
        write_set(
            [(profiles / "00-server.yaml", "server: new\n"), (profiles / "30-new.yaml", "n\n")],
            [profiles / "10-beta.yaml", profiles / "20-gamma.yaml"],
        )
    monkeypatch.undo()
    assert _snapshot(profiles) == before  # contents restored, no temp or backup left


def test_a_symlinked_target_is_written_through(tmp_path: Path) -> None:
    repo = tmp_path / "dotfiles"
    repo.mkdir()
    (repo / "llamasup.yaml").write_text("old\n")
    served = tmp_path / "served"
    served.mkdir()
    (served / "llamasup.yaml").symlink_to(repo / "llamasup.yaml")
    write_set([(served / "llamasup.yaml", "new\n")])
    assert (served / "llamasup.yaml").is_symlink()
    assert _snapshot(repo) == {"llamasup.yaml": "new\n"}


def test_a_target_that_is_not_a_file_is_refused(profiles: Path, tmp_path: Path) -> None:
    (profiles / "40-dir.yaml").mkdir()
    (profiles / "50-link.yaml").symlink_to(tmp_path)
    before = _snapshot(profiles)
    for name, shown in (("40-dir.yaml", "40-dir.yaml:"), ("50-link.yaml", "a link to")):
        with pytest.raises(PersistError, match=shown):
            write_set([(profiles / "00-server.yaml", "x\n"), (profiles / name, "x\n")])
    assert _snapshot(profiles) == before


def test_a_missing_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(PersistError, match="No such file or directory; nothing was changed"):
        write_set([(tmp_path / "gone" / "p.yaml", "x\n")])


def test_a_file_that_cannot_be_put_back_keeps_its_backup(
    profiles: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace
    calls: list[str] = []

    def flaky(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append(str(dst))
        # the second install fails, and so does putting the first file back
        if len(calls) in (2, 3):
            raise OSError(errno.EIO, "Input/output error", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(PersistError, match=r"could not put back .*00-server\.yaml") as raised:
        write_set(
            [(profiles / "00-server.yaml", "server: new\n"), (profiles / "10-beta.yaml", "b\n")]
        )
    monkeypatch.undo()
    after = _snapshot(profiles)
    [backup] = [name for name in after if name.endswith(".bak")]
    assert after[backup] == "server: old\n"  # the old text survives, and the error says where
    assert backup in str(raised.value)
    assert after["10-beta.yaml"] == "beta: old\n"


def test_writes_that_would_lose_text_through_links_are_refused(profiles: Path) -> None:
    (profiles / "30-link.yaml").symlink_to(profiles / "20-gamma.yaml")
    before = _snapshot(profiles)
    # through a link into a file the set drops: the written text would go with it
    with pytest.raises(PersistError, match=r"link to .*20-gamma\.yaml, which this apply removes"):
        write_set([(profiles / "30-link.yaml", "x\n")], [profiles / "20-gamma.yaml"])
    # two names of one file: one text would silently win
    with pytest.raises(PersistError, match="both are"):
        write_set([(profiles / "30-link.yaml", "x\n"), (profiles / "20-gamma.yaml", "y\n")])
    assert _snapshot(profiles) == before


def test_permissions_are_kept_and_link_loops_reported(profiles: Path) -> None:
    (profiles / "10-beta.yaml").chmod(0o640)
    write_set([(profiles / "10-beta.yaml", "b\n"), (profiles / "40-new.yaml", "n\n")])
    assert (profiles / "10-beta.yaml").stat().st_mode & 0o777 == 0o640
    assert (profiles / "40-new.yaml").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    (profiles / "50-loop.yaml").symlink_to(profiles / "50-loop.yaml")
    with pytest.raises(PersistError, match=r"50-loop\.yaml"):
        write_set([(profiles / "50-loop.yaml", "x\n")])


# --- a crash halfway: the journal, and recover() at the next start ---------------------------

CRASHING_APPLY = """
import os, sys
from pathlib import Path
from llamasup.profiles.persist import write_set

root, name, at = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
real, calls = getattr(os, name), 0

def crash_on_call(*args, **kwargs):
    global calls
    calls += 1
    if calls == at:
        os._exit(9)  # like SIGKILL: no undo, no cleanup
    return real(*args, **kwargs)

setattr(os, name, crash_on_call)
write_set(
    [(root / "00-server.yaml", "server: new\\n"), (root / "30-new.yaml", "new\\n")],
    [root / "10-beta.yaml", root / "20-gamma.yaml"],
    journal_dir=root,
)
"""


@pytest.mark.parametrize(
    ("function", "at"),
    [
        ("replace", 2),  # journal written, nothing replaced yet
        ("replace", 3),  # one file replaced
        ("replace", 5),  # both written, one stale file moved aside
        ("unlink", 2),  # every change made, the journal not yet removed
    ],
)
def test_recover_rolls_back_an_apply_cut_short_by_a_crash(
    profiles: Path, function: str, at: int
) -> None:
    before = _snapshot(profiles)
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_APPLY, str(profiles), function, str(at)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert crashed.returncode == 9, crashed.stderr
    crashed_state = _snapshot(profiles)
    assert JOURNAL_NAME in crashed_state
    visible = {name: text for name, text in crashed_state.items() if not name.startswith(".")}
    assert (visible == before) == (at == 2 and function == "replace")  # mid-change, really
    message = recover(profiles)
    assert message is not None and "rolled back" in message
    assert _snapshot(profiles) == before  # every file, and no journal, temp or backup left
    assert recover(profiles) is None


def test_a_completed_apply_leaves_no_journal(profiles: Path) -> None:
    write_set(
        [(profiles / "00-server.yaml", "s\n")], [profiles / "10-beta.yaml"], journal_dir=profiles
    )
    assert _snapshot(profiles) == {"00-server.yaml": "s\n", "20-gamma.yaml": "gamma: old\n"}
    assert recover(profiles) is None


def test_an_unreadable_journal_is_reported(profiles: Path) -> None:
    (profiles / JOURNAL_NAME).write_text("{not json")
    with pytest.raises(PersistError, match="unreadable apply journal"):
        recover(profiles)
