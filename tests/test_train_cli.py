"""`vlzoo train` / `vlzoo validate` / `vlzoo schema` through the CLI, in process.

1. A table of bad run configs: each must make both `validate` and `train` exit 2 with one `vlzoo: error:` line
   naming the offending field path, and `train` must reject it before any training work (no model built, no
   data loaded, nothing written to output.dir).
2. `vlzoo schema` is valid JSON and forbids unknown keys in every section.
3. The shipped example configs validate offline.
4. A YAML config cannot import or run code.
5. A short end-to-end quick start run, its output folder, reloading it, and output-folder safety.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from vlzoo.cli import main

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
FAST_S = 5.0  # a rejected config must come back well within this (imports are warmed up first)

# A valid, small run config; every bad case is one mutation of it. output.dir is filled in per test.
BASE: dict[str, Any] = {
    "model": {"name": "colllava_tiny"},
    "lora": {"components": {"language_model": "lora", "heads": "full"}, "r": 4, "alpha": 8},
    "data": {
        "train": {"kind": "synthetic", "synthetic": {"pages": 8, "seed": 0, "split": "train"}},
        "eval": {"kind": "synthetic", "synthetic": {"pages": 4, "seed": 1, "split": "eval"}},
    },
    "loss": {"name": "colbert_ce", "params": {"temperature": 0.02}},
    "optim": {"lr": 1.0e-3, "per_device_batch_size": 4, "max_steps": 1},
    "eval": {"batch_size": 4},
    "output": {"dir": "PLACEHOLDER"},
    "logging": {"interval": 1},
}


# ---- helpers ---------------------------------------------------------------------------------------------


class TrainingStarted(Exception):
    """Raised by the traps below: `train` went on to real work with a config it should have rejected."""


@pytest.fixture(scope="module", autouse=True)
def warm_imports():
    """Import what `validate`/`train` import lazily, so per-case timings measure the checks, not imports."""
    import transformers.trainer_utils  # noqa: F401

    import vlzoo
    import vlzoo_core.model.builder  # noqa: F401
    import vlzoo_core.data.sources  # noqa: F401
    import vlzoo_core.training.run  # noqa: F401
    import vlzoo_core.training.trainer  # noqa: F401

    vlzoo.registry()


@pytest.fixture
def no_training(monkeypatch):
    """Make building the real model, loading data or creating a Trainer fail loudly (and record it)."""
    import vlzoo_core.model.builder
    import vlzoo_core.data.sources
    import vlzoo_core.training.trainer

    calls: list[str] = []

    def trap(name: str) -> Callable[..., Any]:
        def raiser(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise TrainingStarted(name)

        return raiser

    monkeypatch.setattr(vlzoo_core.model.builder, "build_retriever", trap("build_retriever"))
    monkeypatch.setattr(vlzoo_core.data.sources, "load_source", trap("load_source"))
    monkeypatch.setattr(vlzoo_core.training.trainer, "RetrievalTrainer", trap("RetrievalTrainer"))
    return calls


def run_cli(capsys, *argv: str) -> tuple[int, str, str, float]:
    """Run `vlzoo ARGV` in process: (exit code, stdout, stderr, seconds). An escaping exception is a failure:
    from a shell it would print a Traceback instead of one `vlzoo: error:` line."""
    capsys.readouterr()
    start = time.perf_counter()
    try:
        code = main(list(argv))
    except TrainingStarted as exc:
        pytest.fail(f"`vlzoo {' '.join(argv)}` started training work ({exc}) instead of rejecting the config")
    except SystemExit as exc:  # argparse
        code = exc.code
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"`vlzoo {' '.join(argv)}` raised {type(exc).__name__}: {exc} (a Traceback, not a usage error)")
    elapsed = time.perf_counter() - start
    captured = capsys.readouterr()
    return code, captured.out, captured.err, elapsed


def assert_usage_error(code: int, err: str, expect: tuple[str, ...], what: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2, f"{what}: exit code {code}, expected 2; stderr: {err!r}"
    assert "Traceback" not in err, f"{what}: {err}"
    assert len(lines) == 1, f"{what}: expected exactly one stderr line, got {lines!r}"
    assert lines[0].startswith("vlzoo: error:"), f"{what}: {lines[0]!r}"
    for fragment in expect:
        assert fragment in lines[0], f"{what}: {fragment!r} not in {lines[0]!r}"
    return lines[0]


def base_config(tmp_path: Path) -> dict[str, Any]:
    config = copy.deepcopy(BASE)
    config["output"]["dir"] = str(tmp_path / "out")
    return config


def write_config(path: Path, config: dict[str, Any] | str) -> Path:
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def snapshot(folder: Path) -> dict[str, bytes] | None:
    """Every file below `folder` with its contents (None: the folder does not exist)."""
    if not folder.exists():
        return None
    if folder.is_file():
        return {"": folder.read_bytes()}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_parquet(path: Path, columns: dict[str, list[Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), str(path))


# ---- 1. bad configs --------------------------------------------------------------------------------------


Setup = Callable[[dict[str, Any], Path], "dict[str, Any] | str | None"]


@dataclass(frozen=True)
class Bad:
    setup: Setup  # mutates the base config (may create files in tmp_path); returns the config, raw YAML or None
    expect: tuple[str, ...]  # fragments the error line must contain (the field path first)
    commands: tuple[str, ...] = ("validate", "train")
    extra: tuple[str, ...] = ()  # extra CLI arguments, before the config path


def _set(*path_and_value: Any) -> Setup:
    """setup that sets config[a][b]... = value (creating nothing else)."""
    *path, value = path_and_value

    def setup(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return config

    return setup


def _pop(*path: str) -> Setup:
    def setup(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
        node = config
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1])
        return config

    return setup


def _rename_top(old: str, new: str) -> Setup:
    def setup(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
        config[new] = config.pop(old)
        return config

    return setup


def _raw(text: str) -> Setup:
    return lambda config, tmp_path: text


def _parquet_with_typo_column(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    write_parquet(tmp_path / "pages.parquet", {"query": ["a red circle", "a blue square"],
                                               "page": ["a.png", "b.png"]})
    # relative to the config file's folder
    config["data"]["train"] = {"kind": "parquet", "path": "pages.parquet", "columns": {"query": "qeury", "image": "page"}}
    return config


def _parquet_other_names(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    write_parquet(tmp_path / "pages.parquet", {"question": ["a red circle"], "image": ["a.png"]})
    config["data"]["train"] = {"kind": "parquet", "path": "pages.parquet"}
    return config


def _foreign_output(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work\n")
    return config


def _empty_output(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "out").mkdir()
    return config


def _output_is_a_file(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "out").write_text("not a folder\n")
    return config


def _tensorboard_installed() -> bool:
    return any(importlib.util.find_spec(name) is not None for name in ("tensorboard", "tensorboardX"))


BAD_CONFIGS = [
    # --- schema: keys, types, ranges, literals
    pytest.param(Bad(_rename_top("optim", "optimm"), ("optimm", "unknown field", "did you mean 'optim'")),
                 id="typo-top-level-key-optimm"),
    pytest.param(Bad(_set("optim", "lrr", 1e-3), ("optim.lrr", "unknown field", "did you mean 'lr'")),
                 id="typo-nested-key-optim.lrr"),
    pytest.param(Bad(_set("data", "eval", "synthetic", "pagse", 4),
                     ("data.eval.synthetic.pagse", "did you mean 'pages'")),
                 id="typo-deep-key-data.eval.synthetic.pagse"),
    pytest.param(Bad(_set("data", "train", "columns", {"qurey": "query"}),
                     ("data.train.columns.qurey", "did you mean 'query'")),
                 id="typo-key-data.train.columns.qurey"),
    pytest.param(Bad(_set("optim", "per_device_batch_size", "eight"), ("optim.per_device_batch_size", "integer")),
                 id="wrong-type-batch-size-eight"),
    pytest.param(Bad(_set("optim", "lr", -1e-4), ("optim.lr", "greater than 0")), id="negative-lr"),
    pytest.param(Bad(_set("lora", "r", 0), ("lora.r", "greater than 0")), id="lora-r-zero"),
    pytest.param(Bad(_set("optim", "precision", "fp8"), ("optim.precision", "fp32")), id="unknown-precision"),
    pytest.param(Bad(_set("optim", "optimizer", "sgd"), ("optim.optimizer", "adamw_torch")), id="unknown-optimizer"),
    pytest.param(Bad(_set("optim", "optimizer", "adamw_8bit"), ("optim.optimizer", "needs bitsandbytes")),
                 id="8bit-optimizer-without-bitsandbytes"),
    pytest.param(Bad(_set("eval", "metrics", ["ndcg@5", "bleu@3"]),
                     ("eval.metrics", "unknown metric 'bleu@3'", "ndcg@K")), id="unknown-eval-metric"),
    pytest.param(Bad(_pop("optim", "max_steps"), ("optim", "epochs", "max_steps")), id="neither-epochs-nor-max-steps"),
    pytest.param(Bad(_set("lora", "components", "visiontower", "lora"), ("lora.components", "vision_tower")),
                 id="unknown-lora-component"),
    # --- registered names
    pytest.param(Bad(_set("model", "name", "colllava_tinny"),
                     ("model.name", "unknown model 'colllava_tinny'", "did you mean", "'colllava_tiny'")),
                 id="unknown-model-name"),
    pytest.param(Bad(lambda c, t: c, ("model.name", "unknown model 'colllav'", "did you mean", "'colllava'"),
                     extra=("--model", "colllav")),
                 id="unknown-model-from-cli-flag"),
    pytest.param(Bad(_set("loss", "name", "colbert_cee"), ("loss.name", "unknown loss", "did you mean 'colbert_ce'")),
                 id="unknown-loss-name"),
    pytest.param(Bad(_set("loss", "params", {"temperature": -1}), ("loss.params.temperature",)),
                 id="bad-loss-param"),
    pytest.param(Bad(_set("lora", {"rules": "colllava_defualt"}),
                     ("lora.rules", "unknown LoRA rule set", "did you mean 'colllava_default'")),
                 id="unknown-lora-rule-set"),
    pytest.param(Bad(_set("lora", "rules", "colllava_default"), ("lora:", "'rules'", "'components'")),
                 id="lora-rules-and-components"),
    pytest.param(Bad(_set("lora", "components", {"vision_tower": "frozen", "heads": "frozen"}),
                     ("lora:", "frozen")),
                 id="all-components-frozen"),
    pytest.param(Bad(_set("model", "weights", "pretrained"), ("model.weights", "no pretrained weights")),
                 id="pretrained-weights-for-random-init-model"),
    # --- loss vs model vs data
    pytest.param(Bad(_set("loss", {"name": "colbert_negative_ce"}),
                     ("data.train.columns.negatives", "colbert_negative_ce")),
                 id="negatives-loss-without-negatives-column"),
    pytest.param(Bad(_set("loss", {"name": "bi_ce"}), ("loss.name", "'bi_ce'", "multi-vector")),
                 id="single-vector-loss-for-multi-vector-model"),
    # --- data sources
    pytest.param(Bad(_parquet_with_typo_column, ("data.train.columns.query", "'qeury'", "did you mean 'query'")),
                 id="parquet-missing-column-typo"),
    pytest.param(Bad(_parquet_other_names, ("data.train.columns.query", "did you mean 'question'")),
                 id="parquet-missing-column-other-name"),
    pytest.param(Bad(_set("data", "train", {"kind": "parquet", "path": "missing.parquet"}),
                     ("data.train.path", "missing.parquet")),
                 id="missing-data-file"),
    pytest.param(Bad(_set("data", "train", {"kind": "parquet"}), ("data.train", "needs 'path'")),
                 id="parquet-without-path"),
    pytest.param(Bad(_set("data", "train", "path", "pages.parquet"), ("data.train", "no 'path'")),
                 id="synthetic-with-path"),
    pytest.param(Bad(_set("data", "eval", "synthetic", "pages", 500), ("data.eval.synthetic.pages", "160")),
                 id="synthetic-eval-pages-over-held-out-pairs"),
    pytest.param(Bad(_set("data", "train", "columns", {"query": "qeury"}),
                     ("data.train.columns.query", "did you mean 'query'")),
                 id="synthetic-missing-column"),
    pytest.param(Bad(_set("optim", "per_device_batch_size", 16), ("optim.per_device_batch_size", "8 rows")),
                 id="batch-larger-than-training-data"),
    pytest.param(Bad(_set("logging", "report_to", ["tensorboard"]), ("logging.report_to", "tensorboard")),
                 marks=pytest.mark.skipif(_tensorboard_installed(), reason="tensorboard is installed: config is fine"),
                 id="report-to-uninstalled-tensorboard"),
    # --- the file itself
    pytest.param(Bad(_raw("model: {name: colllava_tiny\noptim: [lr\n"), ("config.yaml", "not valid YAML")),
                 id="yaml-syntax-error"),
    pytest.param(Bad(lambda c, t: None, ("does_not_exist.yaml", "cannot read")), id="config-file-missing"),
    pytest.param(Bad(_raw("- model\n- data\n"), ("config.yaml", "expected a mapping")), id="yaml-is-a-list"),
    pytest.param(Bad(_raw(""), ("config.yaml", "expected a mapping")), id="yaml-is-empty"),
    # --- output folder (train only: validate does not look at it)
    pytest.param(Bad(_empty_output, ("--resume", "no checkpoint"), commands=("train",), extra=("--resume",)),
                 id="resume-without-checkpoint"),
    pytest.param(Bad(lambda c, t: c, ("--resume", "no checkpoint"), commands=("train",), extra=("--resume",)),
                 id="resume-output-dir-missing"),
    pytest.param(Bad(_foreign_output, ("output.dir", "not empty"), commands=("train",)),
                 id="output-dir-non-empty-foreign"),
    pytest.param(Bad(_foreign_output, ("output.dir", "not a vlzoo run"), commands=("train",), extra=("--overwrite",)),
                 id="output-dir-foreign-with-overwrite"),
    pytest.param(Bad(_output_is_a_file, ("output.dir",), commands=("train",)), id="output-dir-is-a-file"),
]


def test_base_config_is_valid(tmp_path, capsys):
    """The cases below are mutations of a config that validates, so each fails for its own reason."""
    path = write_config(tmp_path / "config.yaml", base_config(tmp_path))
    code, out, err, _ = run_cli(capsys, "validate", str(path))
    assert code == 0, err
    assert out.strip().endswith(": OK")


def test_bad_config_table_is_large_enough():
    assert len(BAD_CONFIGS) >= 16
    assert len({p.id for p in BAD_CONFIGS}) == len(BAD_CONFIGS)


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_a_one_line_usage_error(case: Bad, tmp_path, capsys, no_training):
    config = case.setup(base_config(tmp_path), tmp_path)
    path = tmp_path / ("does_not_exist.yaml" if config is None else "config.yaml")
    if config is not None:
        write_config(path, config)
    output = tmp_path / "out"
    before = snapshot(output)

    problems = []  # both commands are always run, so a failure reports what each of them did
    for command in case.commands:
        try:
            code, _, err, elapsed = run_cli(capsys, command, *case.extra, str(path))
            assert_usage_error(code, err, case.expect, f"vlzoo {command}")
            assert elapsed < FAST_S, f"vlzoo {command} took {elapsed:.1f}s to reject the config"
            assert snapshot(output) == before, f"vlzoo {command} changed {output} while rejecting the config"
        except (AssertionError, pytest.fail.Exception) as exc:
            problems.append(str(exc).splitlines()[0])
    assert not problems, "\n".join(problems)
    assert no_training == []


def test_rejected_foreign_folder_is_left_alone_with_overwrite(tmp_path, capsys, no_training):
    """--overwrite only ever deletes a folder holding an earlier vlzoo run."""
    config = _foreign_output(base_config(tmp_path), tmp_path)
    (tmp_path / "out" / "data").mkdir()
    (tmp_path / "out" / "data" / "results.csv").write_text("1,2,3\n")
    before = snapshot(tmp_path / "out")
    path = write_config(tmp_path / "config.yaml", config)
    code, _, err, _ = run_cli(capsys, "train", "--overwrite", str(path))
    assert_usage_error(code, err, ("output.dir",), "vlzoo train --overwrite")
    assert snapshot(tmp_path / "out") == before


# ---- 2. schema -------------------------------------------------------------------------------------------


def test_schema_is_json_and_forbids_unknown_keys(capsys):
    code, out, err, _ = run_cli(capsys, "schema")
    assert code == 0, err
    schema = json.loads(out)
    assert {"model", "lora", "data", "loss", "optim", "eval", "output", "logging"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    objects = {name: node for name, node in schema.get("$defs", {}).items() if "properties" in node}
    expected = {"ModelSection", "LoraSection", "DataSection", "DataSource", "Columns", "SyntheticSource",
                "LossSection", "OptimSection", "EvalSection", "OutputSection", "LoggingSection"}
    assert expected <= set(objects), sorted(objects)
    for name, node in objects.items():
        assert node.get("additionalProperties") is False, f"{name} accepts unknown keys"
    # nested field types point at those definitions
    assert "OptimSection" in json.dumps(schema["properties"]["optim"])
    assert "Columns" in json.dumps(objects["DataSource"]["properties"]["columns"])


# ---- 3. the shipped examples -----------------------------------------------------------------------------


def _adapted(out: str) -> tuple[int, int]:
    match = re.search(r"^lora: (\d+) adapted, (\d+) fully trained modules", out, re.MULTILINE)
    assert match, out
    return int(match.group(1)), int(match.group(2))


def test_validate_quickstart_example(capsys):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    code, out, err, _ = run_cli(capsys, "validate", str(EXAMPLES / "quickstart.yaml"))
    assert code == 0, err
    # vision_tower, projector and heads trained fully; 2 LM layers x 7 Linear layers (q k v o gate up down) get LoRA
    assert _adapted(out) == (14, 3)
    assert "model: colllava_tiny" in out
    assert out.strip().endswith("quickstart.yaml: OK")


def test_validate_interleave_example_offline(capsys):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    code, out, err, _ = run_cli(capsys, "validate", str(EXAMPLES / "colllava_interleave.yaml"))
    assert code == 0, err
    # colllava_default on the 24-layer Qwen2: q k v o in every layer = 96, plus the projector's 2 Linear
    # layers and the 2 heads
    assert _adapted(out)[0] == 100
    assert "model: colllava_interleave (weights: pretrained)" in out
    assert "not checked (offline" in out  # the Hub was not contacted
    assert out.strip().endswith("colllava_interleave.yaml: OK")


# ---- 4. a YAML config cannot run code --------------------------------------------------------------------


@pytest.fixture
def no_system(monkeypatch):
    calls: list[Any] = []
    monkeypatch.setattr(os, "system", lambda *args, **kwargs: calls.append(args) or 0)
    return calls


@pytest.mark.parametrize(
    "text",
    [
        'model: !!python/object/apply:os.system ["echo hacked"]\n',
        'model: {name: colllava_tiny}\noptim: !!python/object/apply:os.system ["touch {marker}"]\n',
        "model: !!python/name:os.system\n",
        "model: !!python/object/new:os.system [\"touch {marker}\"]\n",
    ],
    ids=["apply-echo", "apply-touch", "python-name", "object-new"],
)
def test_python_yaml_tags_are_invalid_yaml(text, tmp_path, capsys, no_system, no_training):
    marker = tmp_path / "hacked"
    path = write_config(tmp_path / "config.yaml", text.replace("{marker}", str(marker)))
    for command in ("validate", "train"):
        code, out, err, _ = run_cli(capsys, command, str(path))
        assert_usage_error(code, err, ("config.yaml", "not valid YAML"), f"vlzoo {command}")
        assert "hacked" not in out
    assert not marker.exists()
    assert no_system == []


INJECTION_SITES = [
    pytest.param((), "_component_", "_component_", id="root"),
    pytest.param(("model",), "_target_", "model._target_", id="model"),
    pytest.param(("lora",), "_target_", "lora._target_", id="lora"),
    pytest.param(("data",), "_target_", "data._target_", id="data"),
    pytest.param(("data", "train"), "_component_", "data.train._component_", id="data.train"),
    pytest.param(("data", "train", "columns"), "_target_", "data.train.columns._target_", id="data.train.columns"),
    pytest.param(("data", "eval", "synthetic"), "_target_", "data.eval.synthetic._target_", id="data.eval.synthetic"),
    pytest.param(("loss",), "_component_", "loss._component_", id="loss"),
    pytest.param(("loss", "params"), "_component_", "loss.params._component_", id="loss.params"),
    pytest.param(("optim",), "_target_", "optim._target_", id="optim"),
    pytest.param(("eval",), "_target_", "eval._target_", id="eval"),
    pytest.param(("output",), "_target_", "output._target_", id="output"),
    pytest.param(("logging",), "_target_", "logging._target_", id="logging"),
    pytest.param(("model", "overrides"), "_target_", "model.overrides._target_", id="model.overrides"),
    pytest.param(("model", "overrides", "encoder", "config"), "_target_",
                 "model.overrides.encoder.config._target_", id="model.overrides.encoder.config"),
]


@pytest.mark.parametrize(("where", "key", "field_path"), INJECTION_SITES)
def test_target_style_keys_are_unknown_fields(where, key, field_path, tmp_path, capsys, no_system, no_training):
    config = base_config(tmp_path)
    node = config
    for part in where:
        node = node.setdefault(part, {})
    node[key] = "os.system"
    path = write_config(tmp_path / "config.yaml", config)
    for command in ("validate", "train"):
        code, _, err, _ = run_cli(capsys, command, str(path))
        assert_usage_error(code, err, (field_path, "unknown field"), f"vlzoo {command}")
    assert no_system == []
    assert not (tmp_path / "out").exists()


# ---- 5. the quick start, end to end ----------------------------------------------------------------------

QUICK = {"train_pages": 128, "eval_pages": 32, "max_steps": 20, "batch": 8, "log_interval": 10}


def quickstart_config(output: Path) -> dict[str, Any]:
    config = yaml.safe_load((EXAMPLES / "quickstart.yaml").read_text(encoding="utf-8"))
    config["data"]["train"]["synthetic"]["pages"] = QUICK["train_pages"]
    config["data"]["eval"]["synthetic"]["pages"] = QUICK["eval_pages"]
    config["optim"]["max_steps"] = QUICK["max_steps"]
    config["optim"]["per_device_batch_size"] = QUICK["batch"]
    config["logging"]["interval"] = QUICK["log_interval"]
    config["output"]["dir"] = str(output)
    return config


@dataclass
class QuickRun:
    code: int
    config: dict[str, Any]
    path: Path
    output: Path


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> QuickRun:
    root = tmp_path_factory.mktemp("quickstart")
    output = root / "run"
    config = quickstart_config(output)
    path = write_config(root / "quickstart.yaml", config)
    code = main(["train", "--model", "colllava_tiny", str(path)])
    return QuickRun(code, config, path, output)


def test_quickstart_trains_and_writes_its_output_folder(quick_run):
    from vlzoo_core.training.run_config import load_run_config

    assert quick_run.code == 0
    out = quick_run.output
    for name in ("run_config.yaml", "metrics.json", "trained_modules.safetensors", "vlzoo_config.json"):
        assert (out / name).is_file(), name
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "processor").is_dir() and any((out / "processor").iterdir())

    resolved = load_run_config(out / "run_config.yaml")
    assert resolved.model.name == "colllava_tiny"
    assert resolved.optim.max_steps == QUICK["max_steps"]
    assert resolved.optim.per_device_batch_size == QUICK["batch"]
    assert resolved.data.train.synthetic.pages == QUICK["train_pages"]
    assert resolved.data.eval.synthetic.pages == QUICK["eval_pages"]
    assert resolved.logging.interval == QUICK["log_interval"]
    assert resolved.lora.components == {"vision_tower": "full", "projector": "full", "language_model": "lora",
                                        "heads": "full"}
    assert resolved.output.dir == out

    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    for phase in ("before", "after"):
        assert isinstance(metrics[phase], dict), phase
        assert 0.0 <= metrics[phase]["ndcg@5"] <= 1.0, metrics[phase]
    assert metrics["skipped_rows"] == 0


def test_quickstart_output_reloads_and_reproduces_its_metric(quick_run):
    import vlzoo
    from vlzoo_core.data.synthetic import synthetic_dataset
    from vlzoo_core.training.evaluation import EvalSet, evaluate_retriever
    from vlzoo_core.training.run_config import SyntheticSource

    assert quick_run.code == 0
    after = json.loads((quick_run.output / "metrics.json").read_text(encoding="utf-8"))["after"]["ndcg@5"]
    retriever = vlzoo.load(quick_run.output).eval()
    options = SyntheticSource(**quick_run.config["data"]["eval"]["synthetic"])
    assert options.pages == QUICK["eval_pages"]
    dataset = synthetic_dataset(options)
    eval_set = EvalSet.from_rows(list(dataset["query"]), list(dataset["image"]))
    recomputed = evaluate_retriever(retriever, eval_set, ["ndcg@5"], batch_size=quick_run.config["eval"]["batch_size"],
                                    progress=False)["ndcg@5"]
    assert recomputed == pytest.approx(after, abs=1e-4)


def test_rerun_into_the_same_folder_is_refused(quick_run, capsys):
    assert quick_run.code == 0
    before = snapshot(quick_run.output)
    code, _, err, elapsed = run_cli(capsys, "train", "--model", "colllava_tiny", str(quick_run.path))
    assert_usage_error(code, err, ("output.dir", "not empty", "--overwrite"), "second vlzoo train")
    assert elapsed < FAST_S
    assert snapshot(quick_run.output) == before  # no silent data loss


def test_overwrite_replaces_an_earlier_run(quick_run, tmp_path, capsys):
    assert quick_run.code == 0
    output = tmp_path / "run"
    shutil.copytree(quick_run.output, output)
    (output / "stale.txt").write_text("from the earlier run\n")
    config = quickstart_config(output)  # a much shorter run, so the replacement is visible
    config["data"]["train"]["synthetic"]["pages"] = 8
    config["data"].pop("eval")
    config["optim"].update(max_steps=1, per_device_batch_size=4, warmup_steps=0)
    path = write_config(tmp_path / "short.yaml", config)

    code, _, err, _ = run_cli(capsys, "train", str(path))
    assert_usage_error(code, err, ("output.dir", "--overwrite"), "vlzoo train without --overwrite")
    assert (output / "stale.txt").exists()

    code, out, err, _ = run_cli(capsys, "train", "--overwrite", str(path))
    assert code == 0, err
    assert f"saved to {output}" in out
    assert not (output / "stale.txt").exists()
    metrics = json.loads((output / "metrics.json").read_text(encoding="utf-8"))
    assert "before" not in metrics and "after" not in metrics  # the earlier run's metrics are gone
    assert yaml.safe_load((output / "run_config.yaml").read_text(encoding="utf-8"))["optim"]["max_steps"] == 1
