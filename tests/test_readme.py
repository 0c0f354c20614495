"""The README is executable documentation: its quick start runs, and CI runs exactly its commands."""

from __future__ import annotations

import re
import sys
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


def test_index_and_eval_quick_starts(tmp_path):
    """The README's train -> index -> search and train -> eval walk-throughs, command by command, offline: the
    held-out page comes back at rank 1, and the eval scores the trained run, then finds its corpus cached."""
    import json
    import shlex
    import subprocess

    from tests.helpers import subprocess_env, vlzoo_script

    train = next(line for block in _code_blocks("bash") for line in block.splitlines()
                 if line.startswith("vlzoo train"))
    commands, eval_commands = (
        [line.split("#")[0].strip() for line in re.search(r"```bash\n(.*?)```", README.split(marker, 1)[1], re.S)
         .group(1).splitlines() if line.strip()]
        for marker in ("<!-- index-quickstart -->", "<!-- eval-quickstart -->"))
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {**subprocess_env(), "VLZOO_CACHE": str(tmp_path / "cache")}

    def run(command: str, *extra: str) -> str:
        argv = shlex.split(command)
        argv = [vlzoo_script(), *argv[1:]] if argv[0] == "vlzoo" else [sys.executable, *argv[1:]]
        done = subprocess.run([*argv, *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, f"{command}: {done.stderr[-2000:]}"
        return done.stdout

    run(train, "--output", "runs/quickstart")  # the README's command, writing into this test's folder
    queries = {}
    for line in run(commands[0]).splitlines():  # "page   3: cyan circle and green letter K"
        number, query = line.split(":", 1)
        queries[query.strip()] = int(number.split()[1])
    run(commands[1])
    search = commands[2]
    query = shlex.split(search)[3]
    assert query in queries
    results = json.loads(run(search, "--json"))[0]["results"]
    assert results[0]["source"] == "held-out.pdf" and results[0]["page"] == queries[query]
    printed = run(search).splitlines()
    assert printed[1].split()[0] == "1" and printed[1].split()[-1] == str(queries[query])
    every = json.loads(run(f"vlzoo search runs/held-out-index -k 1 --json {shlex.join(queries)}"))
    at_rank_1 = sum(row["results"][0]["page"] == queries[row["query"]] for row in every)
    assert at_rank_1 >= 14, f"{at_rank_1} of {len(queries)} held-out pages at rank 1"  # 16 of 16 when written

    run(eval_commands[0])
    first = json.loads(run(eval_commands[1], "--json"))["tasks"][0]
    assert first["vlzoo"]["encoded_pages"] == 128 and first["scores"]["test"][0]["queries"] == 128
    assert first["scores"]["test"][0]["ndcg_at_5"] >= 0.8, first["scores"]["test"][0]
    again = run(eval_commands[1]).splitlines()  # the table: the last column says how many pages were encoded
    assert again[0].split()[-1] == "encoded" and again[2].split()[-1] == "0", again
    pooled = json.loads(run(eval_commands[2], "--json"))["tasks"][0]
    assert pooled["vlzoo"]["pool_factor"] == 3 and pooled["vlzoo"]["index"] != first["vlzoo"]["index"]
    assert pooled["scores"]["test"][0]["ndcg_at_5"] >= 0.7
    assert json.loads((tmp_path / "results" / "runs_quickstart" / "results.json").read_text())["tasks"][0][
        "vlzoo"]["pool_factor"] == 3  # the last command's results, where the README says
