"""Third-party plugins, end to end.

1. The example plugin package (`examples/vlzoo-plugin-example`, installed with
   `pip install ./examples/vlzoo-plugin-example` as CI does; skipped when it is not installed): it loads through
   its entry point and shows in `vlzoo plugins` with its version, its recipe builds, passes
   `vlzoo_core.testing`, and trains through `vlzoo train` into a folder that `vlzoo.load` reads back.
2. A plugin that raises at import is listed with its error by `vlzoo plugins`, while `vlzoo list` and
   `vlzoo train` keep working (real subprocesses, the broken distribution on PYTHONPATH).
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest
import torch
import yaml

import vlzoo
from tests.helpers import make_fake_distribution, run_process, vlzoo_script
from vlzoo.cli import main
from vlzoo_core.registry import ENV_DISABLE_AUTOLOAD, ENV_ONLY_PLUGINS

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "examples" / "quickstart.yaml"
EXAMPLE_MODEL = "example_mlp_head_tiny"


@pytest.fixture
def example(monkeypatch):
    """The installed example package; `vlzoo.registry()` rebuilt from the real entry points, restored after."""
    module = pytest.importorskip("vlzoo_plugin_example",
                                 reason="not installed: pip install ./examples/vlzoo-plugin-example")
    monkeypatch.delenv(ENV_DISABLE_AUTOLOAD, raising=False)
    monkeypatch.delenv(ENV_ONLY_PLUGINS, raising=False)
    monkeypatch.setattr(vlzoo, "_registry", None)
    return module


def small_quickstart(output: Path, **optim) -> dict:
    """examples/quickstart.yaml made small: few synthetic pages, a few steps, output in `output`."""
    config = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))
    config["data"]["train"]["synthetic"]["pages"] = 16
    config["data"]["eval"]["synthetic"]["pages"] = 8
    config["optim"].update({"max_steps": 5, "per_device_batch_size": 4, "warmup_steps": 1, **optim})
    config["eval"]["batch_size"] = 8
    config["logging"]["interval"] = 5
    config["output"]["dir"] = str(output)
    return config


def write_yaml(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


# ---- 1. the example plugin -------------------------------------------------------------------------------


def test_example_plugin_is_listed_with_its_version(example, capsys):
    assert importlib.metadata.version("vlzoo-plugin-example") == "0.1.0"
    assert main(["plugins", "-v"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("example "))
    header = lines[start]
    assert "(vlzoo-plugin-example 0.1.0)" in header
    assert "hooks: vlzoo_register" in header
    assert "ERROR" not in header
    items = []
    for line in lines[start + 1 :]:
        if not line.startswith("    "):
            break
        items.append(line.strip())
    assert items == ["head:mlp_head", "lora:example_mlp_head", "model:example_mlp_head_tiny",
                     "model:example_mlp_head_interleave", "model:example_mix_tiny"]
    assert f"{len(items)} registrations" in header

    assert main(["info", EXAMPLE_MODEL]) == 0
    info = capsys.readouterr().out
    assert "registered by: example" in info
    assert "query_head:    mlp_head as query_mlp [example]" in info
    assert "encoder:       siglip [colllava]" in info


def test_example_recipe_builds_and_embeds(example):
    from vlzoo_plugin_example.heads import MlpHead

    torch.manual_seed(0)
    model = vlzoo.build(EXAMPLE_MODEL).eval()
    assert model.recipe.plugin == "example"
    assert isinstance(model.heads["query_mlp"], MlpHead) and isinstance(model.heads["page_mlp"], MlpHead)
    queries = model.embed_queries(["red circle", "blue letter K and a green square"])
    assert queries.shape[0] == 2 and queries.shape[2] == 128
    from vlzoo_core.testing import sample_pages

    pages = model.embed_images(sample_pages()[:2])
    assert pages.shape[0] == 2 and pages.shape[2] == 128
    assert model.score(queries, pages).shape == (2, 2)


def test_example_passes_conformance(example):
    from vlzoo_core.testing import CHECKS, check_components, check_hook_module

    check_hook_module("vlzoo_plugin_example.plugin")
    report = check_components(EXAMPLE_MODEL)  # resolved in the real registry: entry points + catalog
    assert report.passed == list(CHECKS)
    assert report.lora["rule_set"] == "example_mlp_head"
    assert report.lora["matches"] == {"lm_attention": 8, "projector": 2, "mlp_heads": 2}


def test_example_trains_through_vlzoo_train_and_reloads(example, tmp_path, capsys):
    from safetensors.torch import load_file
    from transformers import set_seed

    output = tmp_path / "run"
    config = small_quickstart(output)
    # the plugin's own rule set (LoRA on LM attention and projector, MLP heads fully trained), smaller r
    config["lora"] = {"rules": "example_mlp_head", "r": 8, "alpha": 16, "dropout": 0.0}
    path = write_yaml(tmp_path / "quickstart.yaml", config)

    assert main(["train", "--model", EXAMPLE_MODEL, str(path)]) == 0
    out = capsys.readouterr().out
    assert f"saved to {output}" in out
    assert "eval before:" in out and "eval after:" in out
    saved = json.loads((output / "vlzoo_config.json").read_text(encoding="utf-8"))
    assert saved["recipe"]["name"] == EXAMPLE_MODEL and saved["recipe"]["plugin"] == "example"
    assert saved["training"]["lora"]["name"] == "example_mlp_head"
    assert (output / "adapter" / "adapter_model.safetensors").is_file()
    trained = load_file(str(output / "trained_modules.safetensors"))
    assert sorted({key.split(".")[1] for key in trained}) == ["page_mlp", "query_mlp"]

    reloaded = vlzoo.load(output).eval()
    from vlzoo_plugin_example.heads import MlpHead

    assert isinstance(reloaded.heads["query_mlp"], MlpHead)
    state = reloaded.state_dict()
    for key, value in trained.items():
        assert torch.equal(state[key], value), key

    set_seed(config["optim"]["seed"])  # what `vlzoo train` does before building: the same random init
    initial = vlzoo.build(EXAMPLE_MODEL).state_dict()
    changed = {key for key, value in state.items() if not torch.equal(value, initial[key])}
    assert any(key.startswith("heads.query_mlp.fc1.") for key in changed)  # fully trained
    assert "language_model.model.layers.0.self_attn.q_proj.weight" in changed  # LoRA, merged on load
    assert not any(key.startswith("vision_tower.") for key in changed)  # not in the rule set: frozen

    queries = reloaded.embed_queries(["red circle and blue letter K"])
    norms = queries[0].norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


# ---- 2. a plugin that fails at import --------------------------------------------------------------------

BROKEN_AT_IMPORT = 'raise ImportError("example of a plugin whose dependency is missing")\n'


def test_plugin_failing_at_import_does_not_stop_training(tmp_path):
    site = tmp_path / "site"
    make_fake_distribution(site, "broken_at_import", BROKEN_AT_IMPORT)
    script = vlzoo_script()

    result = run_process([script, "plugins"], tmp_path, extra_path=site)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert ("ERROR: import failed: ImportError: example of a plugin whose dependency is missing"
            in lines["broken_at_import"])
    assert "(fake-cli-plugin 0.2)" in lines["broken_at_import"]
    assert "ERROR" not in lines["colllava"]

    result = run_process([script, "list", "colllava*"], tmp_path, extra_path=site)
    assert result.returncode == 0, result.stderr
    assert "colllava_tiny" in result.stdout

    output = tmp_path / "run"
    config = small_quickstart(output, max_steps=2)
    config["data"].pop("eval")
    path = write_yaml(tmp_path / "quickstart.yaml", config)
    result = run_process([script, "train", "--model", "colllava_tiny", str(path)], tmp_path, extra_path=site)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"saved to {output}" in result.stdout
    assert "Traceback" not in result.stderr
    assert (output / "vlzoo_config.json").is_file() and (output / "adapter").is_dir()


def test_mixed_recipe_combines_both_built_in_plugins_and_trains(example, tmp_path, capsys):
    """example_mix_tiny: colllava's SigLIP encoder and projector, colqwen's Qwen2-VL LM, the plugin's heads."""
    from vlzoo_core.testing import CHECKS, check_components

    model = vlzoo.build("example_mix_tiny")
    registry = vlzoo.registry()
    owners = {slot: registry.component(kind, getattr(model.recipe, slot).name).plugin
              for kind, slot in (("encoder", "encoder"), ("projector", "projector"), ("backbone", "backbone"),
                                 ("head", "query_head"))}
    assert owners == {"encoder": "colllava", "projector": "colllava", "backbone": "colqwen", "query_head": "example"}
    assert check_components("example_mix_tiny").passed == list(CHECKS)

    output = tmp_path / "run"
    config = small_quickstart(output)
    config["lora"] = {"rules": "example_mlp_head", "r": 8, "alpha": 16, "dropout": 0.0}
    path = write_yaml(tmp_path / "quickstart.yaml", config)
    assert main(["train", "--model", "example_mix_tiny", str(path)]) == 0
    assert "eval after:" in capsys.readouterr().out
    assert vlzoo.load(output).recipe.name == "example_mix_tiny"
