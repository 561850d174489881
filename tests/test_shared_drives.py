"""Drive folders on the cluster's shared filesystem (hub.runtimes.shared_drives).

The hub makes ROOT/<drive name> for the runtime's user before Swarm bind-mounts it on
whichever node runs the runtime. These rules keep one user's folder out of another's
reach, and never make a drive on the hub's own disk by mistake.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from kernelhub.runtimes.shared_drives import (
    DriveOwner,
    SharedDriveError,
    check_drive_root,
    prepare_shared_drive,
    shared_drive_path,
)

OWNER = DriveOwner(uid=1000, gid=1000)


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        ("kernelhub-drive-alice", True),
        ("kernelhub-drive-a-2db", True),  # dockerspawner's escape of "a-b"
        ("x", True),
        ("..", False),
        (".", False),
        (".hidden", False),
        ("a/b", False),
        ("../bob", False),
        ("", False),
        ("a\x00b", False),
        ("a\nb", False),
        ("x" * 256, False),
    ],
)
def test_a_drive_folder_name_is_one_plain_path_segment(name: str, accepted: bool) -> None:
    if accepted:
        assert shared_drive_path("/srv/drives", name) == f"/srv/drives/{name}"
    else:
        with pytest.raises(SharedDriveError, match="not a plain folder name"):
            shared_drive_path("/srv/drives", name)


@pytest.mark.parametrize(
    ("root", "problem"),
    [("drives", "absolute"), ("/srv/../etc", "'..'"), ("/srv/./drives", "'..'"), ("", "absolute")],
)
def test_the_drive_root_is_an_absolute_path_without_dot_segments(root: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_drive_root(root)


def test_a_new_drive_folder_belongs_to_the_runtime_user_alone(tmp_path: Path) -> None:
    path = prepare_shared_drive(str(tmp_path), "kernelhub-drive-alice", OWNER)
    info = Path(path).stat()
    assert (info.st_uid, info.st_gid, oct(info.st_mode & 0o7777)) == (1000, 1000, "0o700")
    # the same call again changes nothing and keeps the user's files
    (Path(path) / "notes.txt").write_text("kept")
    assert prepare_shared_drive(str(tmp_path), "kernelhub-drive-alice", OWNER) == path
    assert (Path(path) / "notes.txt").read_text() == "kept"


def test_an_existing_folder_opened_up_is_closed_again(tmp_path: Path) -> None:
    folder = tmp_path / "kernelhub-drive-alice"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    prepare_shared_drive(str(tmp_path), folder.name, OWNER)
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert folder.stat().st_uid == 1000


def test_a_symlink_in_place_of_a_drive_is_never_followed(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "drives", tmp_path / "etc"
    root.mkdir()
    elsewhere.mkdir()
    (root / "kernelhub-drive-alice").symlink_to(elsewhere)
    before = elsewhere.stat()
    with pytest.raises(SharedDriveError, match="is not a folder"):
        prepare_shared_drive(str(root), "kernelhub-drive-alice", OWNER)
    after = elsewhere.stat()
    assert (after.st_uid, after.st_mode) == (before.st_uid, before.st_mode)


def test_a_file_in_place_of_a_drive_is_refused(tmp_path: Path) -> None:
    (tmp_path / "kernelhub-drive-alice").write_text("not a folder")
    with pytest.raises(SharedDriveError, match="is not a folder"):
        prepare_shared_drive(str(tmp_path), "kernelhub-drive-alice", OWNER)


def test_a_root_that_is_not_mounted_is_an_error_not_a_new_folder(tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted"
    with pytest.raises(SharedDriveError, match="not a folder on the hub") as refused:
        prepare_shared_drive(str(missing), "kernelhub-drive-alice", OWNER)
    assert "mount the cluster's shared filesystem" in str(refused.value)
    assert not missing.exists()


def test_a_hub_that_cannot_give_the_folder_away_says_how_and_leaves_nothing() -> None:
    # the hub as an unprivileged user (uid 65534) on a filesystem that squashes nothing;
    # a folder it can reach (pytest's tmp_path is private to root)
    base = Path(tempfile.mkdtemp(prefix="kernelhub-shared-drives-"))
    base.chmod(0o755)
    root = base / "drives"
    root.mkdir()
    os.chown(root, 65534, 65534)
    script = (
        "from kernelhub.runtimes.shared_drives import *\n"
        "OWNER = DriveOwner(1000, 1000)\n"
        "try:\n"
        f"    prepare_shared_drive({str(root)!r}, 'kernelhub-drive-alice', OWNER)\n"
        "except SharedDriveError as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        assert result.returncode == 0, result.stderr
        assert "cannot give drive folder" in result.stdout
        assert "all_squash,anonuid=1000,anongid=1000" in result.stdout
        assert list(root.iterdir()) == []  # the folder it made is gone again
    finally:
        shutil.rmtree(base)
