"""Files of a Go module, fetched through the Go module proxy: how tests get projects' CRDs.

Nothing fetched is committed; `go mod download` caches the module in GOMODCACHE, once per
version per machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def module_dir(module: str, version: str) -> Path:
    """The unpacked module `module@version`, downloaded the first time."""
    go = shutil.which("go")
    if go is None:
        raise RuntimeError(f"{module} is fetched with `go mod download`: install Go")
    # An empty directory, so no go.mod or go.work of the caller's can interfere; the toolchain is
    # pinned to the installed one (a newer module must not make Go fetch a newer Go).
    with tempfile.TemporaryDirectory() as work:
        done = subprocess.run(
            [go, "mod", "download", "-json", f"{module}@{version}"],
            cwd=work,
            env={**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "GO111MODULE": "on"},
            capture_output=True,
            text=True,
        )
    # `go mod download -json` reports its errors in the JSON, and exits non-zero.
    info = json.loads(done.stdout) if done.stdout.strip() else {}
    if done.returncode != 0 or "Dir" not in info:
        raise RuntimeError(f"go mod download {module}@{version} failed: {info.get('Error') or done.stderr}")
    return Path(info["Dir"])
