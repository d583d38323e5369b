"""Small tmpfs mounts for the tests that fill a disk: mounted fresh (the test skips,
saying why, where mounting is refused: it needs root, or CAP_SYS_ADMIN in a container)
and unmounted after, even while a store's thread or a server still holds a file."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

__all__ = ["mount_tmpfs", "unmount"]


def mount_tmpfs(mnt: Path, options: str) -> None:
    """Mount a tmpfs with ``options`` (``size=...`` and the like) on the directory
    ``mnt``, or skip the test, saying why."""
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("no mount command: cannot mount a tmpfs to fill")
    done = subprocess.run([mount, "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN): "
                    f"{(done.stderr or done.stdout).strip()}")


def unmount(mnt: Path) -> None:
    """Unmount ``mnt``: retried for five seconds (a store's thread may hold a file a
    moment longer), then lazily (detached now, freed when the last file closes)."""
    for _ in range(50):
        if subprocess.run(["umount", str(mnt)], capture_output=True,
                          check=False).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
