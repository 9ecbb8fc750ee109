"""The CPU's instruction-set flags, read from ``/proc/cpuinfo`` (Linux)."""

from __future__ import annotations

from pathlib import Path


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags: x86's ``flags`` line, or Arm's ``Features`` line.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo``; default: read it (no flags where there is
            none, as on macOS and Windows).

    Returns:
        The flags of the first processor listed, e.g. ``{"avx2", "fma", ...}``.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()
