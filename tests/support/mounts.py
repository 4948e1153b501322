"""Commands run in a mount namespace of their own, where a test may mount what it needs.

Root may mount there (a read-only bind, a small tmpfs) without touching the host's mounts;
the namespace, and whatever was mounted in it, ends with the command.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest


def in_own_mounts(script: str, *arguments: str) -> list[str]:
    """`sh -c script` with `arguments` as "$1"..., in a mount namespace of its own."""
    return ["unshare", "-m", "sh", "-c", script, "sh", *arguments]


def skip_unless_mounting(script: str, *arguments: str) -> None:
    """Skip the test where `script` cannot run in a namespace of its own, as in a container
    without CAP_SYS_ADMIN."""
    probe = in_own_mounts(script, *arguments)
    if shutil.which("unshare") is None or subprocess.run(probe, check=False).returncode:
        pytest.skip("no private mount namespace here (unshare -m needs CAP_SYS_ADMIN)")
