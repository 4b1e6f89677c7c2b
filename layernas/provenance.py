"""Where and how long: the stamp every benchmark writes beside its numbers."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

from layernas.errors import first_line


def machine_info() -> dict:
    """The machine, OS, Python and, when JAX is already imported, its backend and devices.

    JAX is never imported here: a table search must not pay for it (or need it), and a
    run that never imported JAX did not use its devices.
    """
    info = {
        "host": platform.node(),
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    jax = sys.modules.get("jax")
    if jax is None:
        return info
    try:
        info["jax"] = jax.__version__
        info["backend"] = jax.default_backend()
        info["devices"] = [str(d) for d in jax.devices()]
    except Exception:  # provenance must never break a benchmark
        pass
    return info


def write_provenance(out_dir: str | Path, seconds: float, command: str, **extra) -> Path:
    """Write ``provenance.json`` (machine, command, wall seconds, extras) into out_dir,
    atomically (a kill leaves the old file or the new one).

    Raises:
      OSError: naming the file (a full disk, a read-only folder).
    """

    out = Path(out_dir)
    path = out / "provenance.json"
    record = {"command": command, "wall_seconds": round(float(seconds), 3), **extra,
              "machine": machine_info()}
    from layernas.run_dir import write_atomic

    try:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(record, indent=2, default=str) + "\n")
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or first_line(e)}") from None
    return path
