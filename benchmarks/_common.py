"""Helpers shared by the benchmark scripts: memory probes, one-subprocess-per-measurement, tables.

Peak memory on CPU is the kernel's resident-set high-water mark (VmHWM in /proc/self/status), reset on
demand by writing "5" to /proc/self/clear_refs (Linux >= 4.0). Where that reset is not possible, the
probe falls back to getrusage's ru_maxrss, which is only meaningful in a fresh process (hence one
subprocess per measurement everywhere).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

MIB = 1024 * 1024
REPO = Path(__file__).resolve().parent.parent
# Full-size recipes name Hub tokenizers, which are not here offline; their benchmarks fall back to the bundled
# tiny tokenizer (queries and prompts tokenize differently; the model's size and image tokens are the same).
TINY_TOKENIZER = {"tokenizer": "colllava:assets/tiny_tokenizer", "image_token_id": 3}
RESULT_MARK = "@@BENCH_RESULT@@ "

# Offline by default: a benchmark must never wait on the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ---- CPU memory -------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    """Current resident set size."""
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no /proc: best effort


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS; False where that is not supported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return False
    hwm, rss = _status_kib("VmHWM"), _status_kib("VmRSS")
    return hwm is not None and rss is not None and hwm <= rss + 1024  # reset took effect (1 MiB slack)


def peak_rss_bytes() -> int:
    """Peak RSS since the last successful `reset_peak_rss` (else since the process started)."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class MemoryProbe:
    """Peak memory of a region: CUDA allocator stats on a GPU, the process's peak RSS on CPU."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.method = "torch.cuda.max_memory_allocated" if self.cuda else "peak RSS (VmHWM)"
        self.baseline = 0

    def start(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated()
        else:
            if not reset_peak_rss():
                self.method = "ru_maxrss (peak since process start; HWM reset unsupported)"
            self.baseline = rss_bytes()

    def stop(self) -> dict[str, float]:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
            extra = {"reserved_peak_mib": torch.cuda.max_memory_reserved() / MIB}
        else:
            peak, extra = peak_rss_bytes(), {}
        return {"baseline_mib": self.baseline / MIB, "peak_mib": peak / MIB,
                "delta_mib": (peak - self.baseline) / MIB, "memory_method": self.method, **extra}


# ---- one subprocess per measurement ----------------------------------------------------------------------


def emit(result: dict) -> None:
    """Worker side: hand a result back to the parent (one marked JSON line on stdout)."""
    print(RESULT_MARK + json.dumps(result), flush=True)


def run_worker(script: Path, worker_args: list[str], *, env: dict[str, str] | None = None,
               timeout: float | None = None) -> dict:
    """Run `script --_worker ...` in a fresh interpreter; stream its output, return its emitted result."""
    cmd = [sys.executable, str(script), *worker_args]
    merged = {**os.environ, **(env or {})}
    with tempfile.TemporaryFile(mode="w+") as captured:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=merged,
                                bufsize=1)
        result = None
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(RESULT_MARK):
                result = json.loads(line[len(RESULT_MARK):])
            else:
                captured.write(line)
                sys.stderr.write("    | " + line)
        rc = proc.wait(timeout=timeout)
    if rc != 0 or result is None:
        return {"error": f"worker exited with status {rc} (see its output above)", "returncode": rc}
    return result


# ---- output ----------------------------------------------------------------------------------------------


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A plain-text table; columns are (key, header, format spec)."""
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        line = []
        for key, _, spec in columns:
            value = row.get(key)
            if value is None:
                line.append("-")
            elif isinstance(value, (int, float)) and spec:
                line.append(format(value, spec))
            else:
                line.append(str(value))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    out = []
    for index, line in enumerate(cells):
        out.append("  ".join(c.rjust(w) if index and i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))))
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def environment() -> dict[str, str]:
    import platform

    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "threads": str(torch.get_num_threads()), "cpus": str(os.cpu_count()),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}
