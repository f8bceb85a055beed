"""``write_set``: an applied profile set reaches the disk whole, or not at all."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


#: every os function write_set calls that a crash can cut short
CRASH_POINTS = ("open", "fsync", "close", "chmod", "link", "replace", "unlink")
APPLIED = {"00-server.yaml": "server: new\n", "30-new.yaml": "new\n"}


def _calls_of_one_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often a whole apply of CRASHING_APPLY's set calls each of CRASH_POINTS."""
    root = tmp_path / "counted"
    root.mkdir()
    for name in ("00-server.yaml", "10-beta.yaml", "20-gamma.yaml"):
        (root / name).write_text("old\n")
    counts = dict.fromkeys(CRASH_POINTS, 0)
    for name in CRASH_POINTS:
        real = getattr(os, name)

        def counting(*args: object, _name: str = name, _real: Any = real, **kwargs: object) -> Any:
            counts[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, counting)
    write_set(
        [(root / "00-server.yaml", "server: new\n"), (root / "30-new.yaml", "new\n")],
        [root / "10-beta.yaml", root / "20-gamma.yaml"],
        journal_dir=root,
    )
    monkeypatch.undo()
    return counts


def test_a_crash_at_any_step_is_recovered_without_leftovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL at every call an apply makes: ``recover`` leaves the set as it was before, or
    (once the journal says the apply was complete) as applied, and no hidden file behind:
    no journal, no staged ``.tmp``, no ``.bak``."""
    counts = _calls_of_one_apply(tmp_path, monkeypatch)
    assert counts["replace"] >= 4 and counts["unlink"] >= 4, counts
    before = {"00-server.yaml": "server: old\n", "10-beta.yaml": "beta: old\n"}
    before["20-gamma.yaml"] = "gamma: old\n"
    outcomes: dict[str, int] = {}
    for function in CRASH_POINTS:
        for at in range(1, counts[function] + 1):
            root = tmp_path / f"{function}-{at}"
            root.mkdir()
            for name, text in before.items():
                (root / name).write_text(text)
            crashed = subprocess.run(
                [sys.executable, "-c", CRASHING_APPLY, str(root), function, str(at)],
                capture_output=True,
                text=True,
                check=False,
            )
            where = f"a crash at {function} #{at}"
            assert crashed.returncode == 9, (where, crashed.stderr)
            journal = root / JOURNAL_NAME
            phase = json.loads(journal.read_text()).get("phase") if journal.exists() else None
            message = recover(root)
            recovered = _snapshot(root)  # hidden files included: none may be left
            if phase is None:  # cut short before its journal was in place, or after it went
                assert recovered in (before, APPLIED), (where, recovered)
            else:
                assert recovered == (APPLIED if phase == "committed" else before), where
            if phase == "committing":
                assert message is not None and "rolled back" in message, where
            assert recover(root) is None, where
            outcomes[str(phase)] = outcomes.get(str(phase), 0) + 1
    # the sweep met every phase: before the journal, and each of its three
    assert set(outcomes) == {"None", "staging", "committing", "committed"}, outcomes


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


def test_scratch_files_no_journal_names_are_removed_at_recovery(profiles: Path) -> None:
    """What interrupted applies of an older llamasup left (its journal came after the scratch
    files and went before they did): removed at the next start; nothing else is."""
    before = _snapshot(profiles)
    left = [
        ".00-server.yaml.k7hx3tk0.tmp",
        ".10-beta.yaml.o5nlc3u_.bak",
        ".gone.yml.1234abcd.bak",
        "..llamasup-apply.journal.a7coa0om.tmp",
    ]
    kept = {".00-server.yaml.swp": "an editor's\n", ".notes.yaml.bak": "mine\n"}
    for name in left:
        (profiles / name).write_text("old scratch\n")
    for name, text in kept.items():
        (profiles / name).write_text(text)
    message = recover(profiles)
    assert message == "removed 4 scratch file(s) left by interrupted applies"
    assert _snapshot(profiles) == {**before, **kept}
    assert recover(profiles) is None


def test_beside_a_single_profile_file_only_its_scratch_files_are_removed(tmp_path: Path) -> None:
    """A single profile file is often kept in a busy directory (a home): only that file's
    scratch files, and the journal's, are taken for an apply's."""
    (tmp_path / "llamasup.yaml").write_text("x\n")
    ours = [".llamasup.yaml.0a1b2c3d.tmp", "..llamasup-apply.journal.0a1b2c3d.tmp"]
    theirs = [".other.yaml.0a1b2c3d.bak"]
    for name in ours + theirs:
        (tmp_path / name).write_text("scratch\n")
    assert recover(tmp_path, profile_file="llamasup.yaml") is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == [*theirs, "llamasup.yaml"]


def test_recovery_with_nothing_to_do_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A served directory that is read-only (a Kubernetes ConfigMap) must not stop serve."""
    (tmp_path / "p.yaml").write_text("models: {}\n")

    def read_only(self: Path, missing_ok: bool = False) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "unlink", read_only)
    assert recover(tmp_path) is None
