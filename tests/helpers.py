"""Helpers shared by test modules: fake installed plugin distributions and running the vlzoo CLI, in process
or for real."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from vlzoo_core.registry import ENV_DISABLE_AUTOLOAD, ENV_ONLY_PLUGINS


def write_fake_distribution(root: Path, name: str, version: str, plugins: dict[str, str],
                            extra_entry_points: str = "") -> dict[str, str]:
    """Write an installed distribution under `root` whose `vlzoo` entry points load the given sources.

    `plugins` maps entry-point names to module source code; returns entry-point name -> (unique) module name.
    """
    modules = {entry: f"vlzoo_fake_{entry}_{uuid.uuid4().hex[:8]}" for entry in plugins}
    dist_info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    lines = "".join(f"{entry} = {module}\n" for entry, module in modules.items())
    (dist_info / "entry_points.txt").write_text(f"[vlzoo]\n{lines}{extra_entry_points}", encoding="utf-8")
    for entry, source in plugins.items():
        (root / f"{modules[entry]}.py").write_text(source, encoding="utf-8")
    return modules


def make_fake_distribution(root: Path, entry_point: str, source: str) -> str:
    """A distribution `fake-cli-plugin 0.2` with one `vlzoo` entry point; returns its module name."""
    return write_fake_distribution(root, "fake-cli-plugin", "0.2", {entry_point: source})[entry_point]


def vlzoo_script() -> str:
    candidate = Path(sys.executable).with_name("vlzoo")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("vlzoo")
    assert found, "the vlzoo console script is not installed"
    return found


def subprocess_env(extra_path: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (ENV_DISABLE_AUTOLOAD, ENV_ONLY_PLUGINS, "PYTHONPATH")}
    if extra_path is not None:
        env["PYTHONPATH"] = str(extra_path)
    return env


def run_process(args: list[str], cwd: Path, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=subprocess_env(extra_path), capture_output=True, text=True, timeout=120)


def run_in_process(capsys, *argv: object) -> tuple[int, str, str]:
    """`vlzoo ARGV` in this process: (exit code, stdout, stderr)."""
    from vlzoo.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    """The single `vlzoo: error: ...` line a usage error prints (no traceback, nothing else)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vlzoo: error: "), err
    assert "Traceback" not in err
    return lines[0]
