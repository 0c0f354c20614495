"""The `vlzoo` command line: in process with capsys, plus real subprocesses for exit codes and imports."""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys

import pytest

import vlzoo
from vlzoo.cli import main
from tests.helpers import make_fake_distribution, run_process, vlzoo_script
from vlzoo_core.registry import ENV_DISABLE_AUTOLOAD, ENV_ONLY_PLUGINS


@pytest.fixture
def fresh_registry(monkeypatch):
    """`vlzoo.registry()` is rebuilt from the real environment (entry points + registry.toml); restored after."""
    monkeypatch.delenv(ENV_DISABLE_AUTOLOAD, raising=False)
    monkeypatch.delenv(ENV_ONLY_PLUGINS, raising=False)
    monkeypatch.setattr(vlzoo, "_registry", None)


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


DUPLICATE_PLUGIN_SOURCE = '''
from vlzoo_core import hookimpl


@hookimpl
def vlzoo_register(register):
    register.recipe({
        "name": "colllava",
        "description": "a recipe that shadows the catalog's alias",
        "encoder": {"name": "siglip"},
        "projector": {"name": "llava_mlp"},
        "backbone": {"name": "qwen2"},
        "query_head": {"name": "multi_vector", "module": "custom_text_proj"},
        "document_head": {"name": "multi_vector", "module": "image_proj"},
        "processor": {"name": "llava"},
    })
'''

BROKEN_PLUGIN_SOURCE = 'raise RuntimeError("fake cli plugin exploded at import")\n'


# ---- list / info / plugins in process ---------------------------------------------------------------------


def test_list_shows_catalog_models(fresh_registry, capsys):
    code, out, err = run_main(capsys, "list")
    assert code == 0
    assert err == ""
    lines = out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == sorted(names)
    assert {"colllava_interleave", "colllava_tiny"} <= set(names)
    interleave = lines[names.index("colllava_interleave")]
    assert "(alias: colllava)" in interleave
    assert "LLaVA-Interleave" in interleave
    assert "alias" not in lines[names.index("colllava_tiny")]


def test_list_glob_filters(fresh_registry, capsys):
    code, out, _ = run_main(capsys, "list", "colllava_t*")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["colllava_tiny"]

    code, out, _ = run_main(capsys, "list", "colllava")  # matched through the alias
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["colllava_interleave"]


def test_list_without_match_exits_1(fresh_registry, capsys):
    code, out, err = run_main(capsys, "list", "nothing_like_this*")
    assert code == 1
    assert out == ""
    assert err.strip() == "no model matches 'nothing_like_this*'"


def test_info_unknown_name_one_line_with_suggestion(fresh_registry, capsys):
    code, out, err = run_main(capsys, "info", "colllav")
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vlzoo: error:")
    assert "did you mean" in lines[0]
    assert "'colllava'" in lines[0]
    assert "Traceback" not in err


def test_info_shows_recipe_through_alias(fresh_registry, capsys):
    code, out, err = run_main(capsys, "info", "colllava")
    assert code == 0
    assert err == ""
    lines = out.splitlines()
    assert lines[0].startswith("colllava_interleave: ")
    fields = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in lines[1:]}
    assert fields["aliases"] == "colllava"
    assert fields["registered by"] == "registry.toml"
    assert fields["weights"] == "llava-hf/llava-interleave-qwen-0.5b-hf"
    assert fields["LoRA rules"] == "colllava_default"
    assert fields["document path"] == "language_model"
    assert fields["encoder"].startswith("siglip [colllava]")
    assert json.loads(fields["encoder"].split("]", 1)[1])["hidden_size"] == 1152
    assert fields["backbone"].startswith("qwen2 [colllava]")
    assert fields["query_head"].startswith("multi_vector as custom_text_proj [vlzoo_core]")
    assert fields["document_head"].startswith("multi_vector as image_proj [vlzoo_core]")
    assert fields["processor"].startswith("llava [colllava]")


def test_info_tiny_has_no_weights_source(fresh_registry, capsys):
    code, out, _ = run_main(capsys, "info", "colllava_tiny")
    assert code == 0
    assert "weights:       (random init only)" in out
    assert "aliases:       -" in out


def test_plugins_lists_colllava_with_version(fresh_registry, capsys):
    code, out, err = run_main(capsys, "plugins")
    assert code == 0
    assert err == ""
    lines = {line.split()[0]: line for line in out.splitlines() if not line.startswith(" ")}
    assert "colllava" in lines and "vlzoo_core" in lines
    assert re.search(r"\(vlzoo 0\.1\.0\)", lines["colllava"]), lines["colllava"]
    assert importlib.metadata.version("vlzoo") == "0.1.0"
    assert "hooks: vlzoo_register" in lines["colllava"]
    registered = next(p for p in vlzoo.registry().plugins if p.name == "colllava").registered
    assert "encoder:siglip" in registered
    assert f"{len(registered)} registrations" in lines["colllava"]
    assert "ERROR" not in out
    assert "(built in)" in lines["vlzoo_core"]


def test_plugins_verbose_lists_registrations(fresh_registry, capsys):
    code, out, _ = run_main(capsys, "plugins", "-v")
    assert code == 0
    items = [line.strip() for line in out.splitlines() if line.startswith("    ")]
    assert "encoder:siglip" in items
    assert "lora:colllava_default" in items
    assert "head:multi_vector" in items


# ---- lora --------------------------------------------------------------------------------------------------


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def analytic_lora_parameters() -> tuple[int, dict[str, int]]:
    """r * (in + out) per adapted Linear, from the recipe's architecture numbers."""
    reg = vlzoo.registry()
    recipe = reg.recipe("colllava_interleave")
    rules = reg.rule_set(recipe.lora)
    backbone, encoder = recipe.backbone.config, recipe.encoder.config
    hidden, layers = backbone["hidden_size"], backbone["num_hidden_layers"]
    heads, kv_heads = backbone["num_attention_heads"], backbone["num_key_value_heads"]
    vision = encoder["hidden_size"]
    dims = (recipe.query_head.config["dim"], recipe.document_head.config["dim"])
    r = rules.r
    # the architecture the brief describes; guards against the catalog changing under the test
    assert (hidden, layers, heads, kv_heads, vision, dims, r) == (1024, 24, 16, 16, 1152, (128, 128), 32)

    kv_out = kv_heads * (hidden // heads)
    attention = layers * r * ((hidden + hidden) + (hidden + kv_out) * 2 + (hidden + hidden))
    projector = r * (vision + hidden) + r * (hidden + hidden)
    head_params = sum(r * (hidden + dim) for dim in dims)
    parts = {"lm_attention": attention, "projector": projector, "heads": head_params}
    return sum(parts.values()), parts


def test_lora_colllava_interleave_counts(fresh_registry, capsys):
    code, out, err = run_main(capsys, "lora", "colllava_interleave")
    assert code == 0, err
    assert err == ""

    per_rule = dict(re.findall(r"^rule '(\w+)' \(lora, .*/\): (\d+) modules$", out, re.MULTILINE))
    assert {k: int(v) for k, v in per_rule.items()} == {"lm_attention": 96, "projector": 2, "heads": 2}

    adapted = re.search(r"^adapted modules: (\d+) \(LoRA\), (\d+) \(fully trained\)$", out, re.MULTILINE)
    assert adapted, out
    assert (int(adapted[1]), int(adapted[2])) == (100, 0)

    trainable_match = re.search(r"^trainable parameters: ([\d,]+) of ([\d,]+) \(([\d.]+)%\)$", out, re.MULTILINE)
    assert trainable_match, out
    trainable, total = _number(trainable_match[1]), _number(trainable_match[2])

    analytic_match = re.search(r"^analytic r\*\(in\+out\) sum: ([\d,]+) \((\w+)\)$", out, re.MULTILINE)
    assert analytic_match, out
    printed_analytic = _number(analytic_match[1])
    assert analytic_match[2] == "matches"

    expected, parts = analytic_lora_parameters()
    assert parts == {"lm_attention": 96 * 32 * 2048, "projector": 32 * (1152 + 1024) + 32 * 2048,
                     "heads": 2 * 32 * (1024 + 128)}
    assert trainable == printed_analytic == expected
    assert 0 < trainable < total
    assert float(trainable_match[3]) == pytest.approx(100 * trainable / total, abs=1e-3)


def test_lora_unknown_rule_set_exits_2(fresh_registry, capsys):
    code, out, err = run_main(capsys, "lora", "colllava_tiny", "--rules", "colllava_defalt")
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert "did you mean" in err and "'colllava_default'" in err


def test_lora_unknown_model_exits_2(fresh_registry, capsys):
    code, _, err = run_main(capsys, "lora", "colllava_tinny")
    assert code == 2
    assert "did you mean" in err and "'colllava_tiny'" in err


# ---- help ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, expected",
    [
        pytest.param(["--help"], ["usage: vlzoo", "list", "info", "plugins", "lora"], id="top"),
        pytest.param(["lora", "--help"], ["usage: vlzoo lora", "--rules", "--verbose", "meta device"], id="lora"),
        pytest.param(["list", "-h"], ["usage: vlzoo list", "GLOB"], id="list"),
    ],
)
def test_help_exits_0_and_prints_usage(capsys, argv, expected):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for fragment in expected:
        assert fragment in out


def test_missing_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "usage: vlzoo" in capsys.readouterr().err


# ---- real subprocesses ---------------------------------------------------------------------------------


def test_console_script_help_and_unknown_name(tmp_path):
    script = vlzoo_script()
    for argv in (["--help"], ["lora", "--help"]):
        result = run_process([script, *argv], tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage: vlzoo")
        assert result.stderr == ""

    result = run_process([script, "info", "colllav"], tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "did you mean" in lines[0] and "'colllava'" in lines[0]
    assert "Traceback" not in result.stderr


def test_python_m_vlzoo_list(tmp_path):
    result = run_process([sys.executable, "-m", "vlzoo", "list"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "colllava_interleave" in result.stdout and "(alias: colllava)" in result.stdout
    assert "colllava_tiny" in result.stdout
    assert result.stderr == ""

    result = run_process([sys.executable, "-m", "vlzoo", "info", "colllav"], tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_duplicate_registration_fails_list_with_one_line(tmp_path):
    site = tmp_path / "site"
    make_fake_distribution(site, "shadow_plugin", DUPLICATE_PLUGIN_SOURCE)
    result = run_process([vlzoo_script(), "list"], tmp_path, extra_path=site)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vlzoo: error:")
    assert "'colllava'" in lines[0]
    assert "registry.toml" in lines[0]
    assert "shadow_plugin" in lines[0]


def test_plugin_failing_at_import_is_listed_and_others_work(tmp_path):
    site = tmp_path / "site"
    make_fake_distribution(site, "exploding_plugin", BROKEN_PLUGIN_SOURCE)
    script = vlzoo_script()

    result = run_process([script, "plugins"], tmp_path, extra_path=site)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    broken = lines["exploding_plugin"]
    assert "(fake-cli-plugin 0.2)" in broken
    assert "ERROR: import failed: RuntimeError: fake cli plugin exploded at import" in broken
    assert "ERROR" not in lines["colllava"] and "(vlzoo 0.1.0)" in lines["colllava"]

    result = run_process([script, "list"], tmp_path, extra_path=site)
    assert result.returncode == 0, result.stderr
    assert "colllava_interleave" in result.stdout and "colllava_tiny" in result.stdout
    assert "Traceback" not in result.stderr

    result = run_process([script, "info", "colllava"], tmp_path, extra_path=site)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("colllava_interleave:")
    assert "Traceback" not in result.stderr


def _imported_modules(importtime_stderr: str) -> list[str]:
    names = []
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.append(line.rsplit("|", 1)[1].strip())
    return names


@pytest.mark.parametrize("command", [["list"], ["info", "colllava"], ["plugins"]])
def test_cli_listing_never_imports_torch(tmp_path, command):
    code = f"from vlzoo.cli import main; main({command!r})"
    result = run_process([sys.executable, "-X", "importtime", "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    modules = _imported_modules(result.stderr)
    # the parse works: the modules we know are imported are there. (Modules loaded through
    # importlib.import_module, such as the entry point `colllava.plugin` itself, are not logged by
    # -X importtime, but what they import is: colllava.configs proves the plugin was loaded.)
    for known in ("vlzoo.cli", "vlzoo_core.registry", "colllava.configs"):
        assert known in modules
    torch_modules = [m for m in modules if m == "torch" or m.startswith("torch.")]
    assert torch_modules == []


def test_sys_modules_has_no_torch_after_list(tmp_path):
    code = (
        "import json, sys\n"
        "from vlzoo.cli import main\n"
        "rc = main(['list'])\n"
        "torch_mods = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print('RESULT ' + json.dumps({'rc': rc, 'torch': torch_mods, 'cli': 'vlzoo.cli' in sys.modules}))\n"
    )
    result = run_process([sys.executable, "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    marker = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(marker) == 1
    report = json.loads(marker[0][len("RESULT "):])
    assert report == {"rc": 0, "torch": [], "cli": True}
    assert "colllava_interleave" in result.stdout
