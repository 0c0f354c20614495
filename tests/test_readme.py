"""The README is executable documentation: its quick start runs, and CI runs exactly its commands."""

from __future__ import annotations

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_quick_start_runs_end_to_end(tmp_path, monkeypatch, capsys):
    block = README.split("<!-- quickstart -->", 1)[1]
    code = re.search(r"```python\n(.*?)```", block, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README quick start", "exec"), namespace)

    queries, documents, scores = namespace["queries"], namespace["documents"], namespace["scores"]
    assert queries.shape[0] == 3 and queries.shape[-1] == 128
    assert documents.shape[0] == 2 and documents.shape[-1] == 128
    assert scores.shape == (3, 2)
    assert "torch.Size([3," in capsys.readouterr().out
    reloaded = namespace["reloaded"]
    assert torch.equal(reloaded.embed_images(namespace["pages"]), documents)
    assert (tmp_path / "my-retriever" / "model.safetensors").exists()


def test_ci_runs_the_readme_commands():
    install, test = (block.strip() for block in _code_blocks("bash")[:2])
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert install in ci, f"README install command {install!r} is not what .ci/run runs"
    assert test in ci, f"README test command {test!r} is not what .ci/run runs"
