"""A running process's memory, from /proc/<pid>/status (Linux)."""

from __future__ import annotations

MB = 1024 * 1024


def status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status, e.g. VmHWM (peak resident set) or VmRSS."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name == field:
                return int(value.split()[0])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def peak_rss(pid: int) -> int:
    """The process's peak resident set size so far, in bytes."""
    return status_kib(pid, "VmHWM") * 1024
