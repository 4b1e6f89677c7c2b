"""Where and how long: the stamp every benchmark writes beside its numbers."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path


def machine_info() -> dict:
    """The machine, OS, Python and (if importable) JAX backend and devices."""
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
    try:
        import jax

        info["jax"] = jax.__version__
        info["backend"] = jax.default_backend()
        info["devices"] = [str(d) for d in jax.devices()]
    except Exception:  # provenance must never break a benchmark
        pass
    return info


def write_provenance(out_dir: str | Path, seconds: float, command: str, **extra) -> Path:
    """Write ``provenance.json`` (machine, command, wall seconds, extras) into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "provenance.json"
    record = {"command": command, "wall_seconds": round(float(seconds), 3), **extra,
              "machine": machine_info()}
    from layernas.run_dir import write_atomic

    write_atomic(path, json.dumps(record, indent=2, default=str) + "\n")
    return path
