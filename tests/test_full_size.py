"""The full-size ColLlavaI, built on the meta device, against the seed's printed architecture.

The expected shapes are parsed from `tests/data/seed_colllavai_structure.txt` (the torch printout of the
original ColLlavaI after peft wrapping), not typed into this file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vlzoo
from vlzoo_core.model.lora import adapted_modules, apply_lora

SEED_FILE = Path(__file__).parent / "data" / "seed_colllavai_structure.txt"


# ---- the seed printout parser --------------------------------------------------------------------------


@dataclass
class SeedModule:
    path: tuple[str, ...]  # names from the ColLlavaI root; "*" stands for every item of a repeated ModuleList
    type: str
    args: str = ""
    children: dict[str, SeedModule] = field(default_factory=dict)


@dataclass
class Seed:
    root: SeedModule  # the ColLlavaI module
    repeats: dict[tuple[str, ...], int]  # ModuleList path -> number of repeated items

    def walk(self):
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())

    def node(self, *path: str) -> SeedModule:
        node = self.root
        for name in path:
            node = node.children[name]
        return node


_OPEN = re.compile(r"^(?:(?P<name>\w+)=)?(?P<type>[\w.]+)\($")
_OPEN_ITEM = re.compile(r"^\[(?P<type>[\w.]+)\($")
_LEAF = re.compile(r"^(?P<name>\w+)=(?P<type>[\w.]+)\((?P<args>.*)\),?$")
_CLOSE = re.compile(r"^\)(?P<rest>.*)$")
_REPEAT = re.compile(r"^ for _ in range\((?P<n>\d+)\)\],?$")


def parse_seed(text: str) -> Seed:
    """Parse torch's module printout into a tree; repeated `[Layer(...) for _ in range(N)]` items become '*'."""
    top = SeedModule((), "<top>")
    stack = [top]
    repeats: dict[tuple[str, ...], int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        parent = stack[-1]
        if match := _OPEN_ITEM.match(line):
            node = SeedModule(parent.path + ("*",), match["type"])
        elif match := _OPEN.match(line):
            node = SeedModule(parent.path + (match["name"] or "<root>",), match["type"])
        elif match := _LEAF.match(line):
            leaf = SeedModule(parent.path + (match["name"],), match["type"], match["args"])
            parent.children[match["name"]] = leaf
            continue
        elif match := _CLOSE.match(line):
            closed = stack.pop()
            rest = match["rest"]
            if rest not in ("", ","):
                repeat = _REPEAT.match(rest)
                assert repeat, f"line {number}: cannot parse {raw!r}"
                assert closed.path[-1] == "*"
                repeats[closed.path[:-1]] = int(repeat["n"])
            continue
        else:
            raise AssertionError(f"line {number}: cannot parse {raw!r}")
        parent.children[node.path[-1]] = node
        stack.append(node)
    assert stack == [top], "unbalanced parentheses in the seed printout"

    roots = []
    todo = [top]
    while todo:
        node = todo.pop()
        if node.type == "ColLlavaI":
            roots.append(node)
        todo.extend(node.children.values())
    assert len(roots) == 1, "the seed printout has no single ColLlavaI module"
    root = roots[0]
    depth = len(root.path)

    def rebase(node: SeedModule) -> SeedModule:
        return SeedModule(node.path[depth:], node.type, node.args,
                          {name: rebase(child) for name, child in node.children.items()})

    return Seed(rebase(root), {path[depth:]: n for path, n in repeats.items() if path[:depth] == root.path})


@pytest.fixture(scope="module")
def seed() -> Seed:
    return parse_seed(SEED_FILE.read_text(encoding="utf-8"))


# ---- seed names -> our names ----------------------------------------------------------------------------

# Seed (ColLlavaI) prefix -> retriever prefix. The heads are Linear layers in the seed and sit behind a
# `.proj` inside the retriever's head modules.
SEED_TO_OURS = [
    ("vision_tower.vision_model.", "vision_tower.model."),
    ("multi_modal_projector.", "projector."),
    ("language_model.model.", "language_model.model."),
]
SEED_HEADS = {"custom_text_proj": "heads.custom_text_proj.proj", "image_proj": "heads.image_proj.proj"}


def our_names(seed: Seed, path: tuple[str, ...]) -> list[str]:
    """Our module names for one seed module path, expanding '*' into every repeated index."""
    names = [""]
    for i, part in enumerate(path):
        if part == "*":
            count = seed.repeats[path[:i]]
            names = [f"{name}.{index}" for name in names for index in range(count)]
        else:
            names = [f"{name}.{part}" if name else part for name in names]
    result = []
    for name in names:
        if name in SEED_HEADS:
            result.append(SEED_HEADS[name])
            continue
        for source, target in SEED_TO_OURS:
            if (name + ".").startswith(source):
                result.append(target + name[len(source):])
                break
        else:
            raise AssertionError(f"seed module {name!r} has no counterpart in the retriever")
    return result


def parse_linear(args: str) -> tuple[int, int, bool]:
    match = re.fullmatch(r"(\d+), (\d+)(?:, bias=(True|False))?", args)
    assert match, args
    return int(match[1]), int(match[2]), match[3] != "False"


def effective(node: SeedModule) -> SeedModule:
    """A peft `lora.Linear` prints its original layer as `base_layer`."""
    return node.children["base_layer"] if node.type == "lora.Linear" else node


ACTIVATIONS = {
    "PytorchGELUTanh": lambda x: F.gelu(x, approximate="tanh"),
    "GELUTanh": lambda x: F.gelu(x, approximate="tanh"),
    "GELUActivation": F.gelu,
    "SiLU": F.silu,
}


# ---- the model --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_model():
    model = vlzoo.build("colllava_interleave", device="meta")
    assert model.device.type == "meta"
    return model


def seed_modules(seed: Seed, *types: str) -> list[SeedModule]:
    """Seed modules of the given types, outside the LM head and outside peft's own wrapper internals."""
    found = []
    for node in seed.walk():
        inside_lora = any(node.path[:i] and seed_type(seed, node.path[:i]) == "lora.Linear"
                          for i in range(1, len(node.path)))
        if inside_lora or node.path[:2] == ("language_model", "lm_head"):
            continue
        if effective(node).type in types:
            found.append(node)
    return found


def seed_type(seed: Seed, path: tuple[str, ...]) -> str:
    return seed.node(*path).type


def test_parser_reads_the_seed(seed):
    # The parser sees every part of ColLlavaI, and the two repeated stacks.
    assert set(seed.root.children) == {"vision_tower", "multi_modal_projector", "language_model",
                                       "custom_text_proj", "image_proj"}
    assert seed.repeats.keys() == {("vision_tower", "vision_model", "encoder", "layers"),
                                   ("language_model", "model", "layers")}
    assert len(seed_modules(seed, "Linear")) >= 10


def test_layer_counts_match_the_seed(seed, full_model):
    modules = dict(full_model.named_modules())
    for path, count in seed.repeats.items():
        (ours,) = our_names(seed, path)
        assert isinstance(modules[ours], nn.ModuleList)
        assert len(modules[ours]) == count, ours
        assert f"{ours}.{count}" not in modules


def test_linear_layers_match_the_seed(seed, full_model):
    modules = dict(full_model.named_modules())
    checked = 0
    for node in seed_modules(seed, "Linear"):
        in_features, out_features, bias = parse_linear(effective(node).args)
        for name in our_names(seed, node.path):
            module = modules.get(name)
            assert isinstance(module, nn.Linear), f"{name}: expected a Linear, got {type(module).__name__}"
            assert (module.in_features, module.out_features) == (in_features, out_features), name
            assert (module.bias is not None) == bias, f"{name}: bias"
            assert module.weight.shape == (out_features, in_features)
            checked += 1
    vision_layers = seed.repeats[("vision_tower", "vision_model", "encoder", "layers")]
    lm_layers = seed.repeats[("language_model", "model", "layers")]
    assert checked == 6 * vision_layers + 7 * lm_layers + 4


def test_embeddings_convolution_and_norms_match_the_seed(seed, full_model):
    modules = dict(full_model.named_modules())

    (patch,) = seed_modules(seed, "Conv2d")
    match = re.fullmatch(r"(\d+), (\d+), kernel_size=\((\d+), (\d+)\), stride=\((\d+), (\d+)\), padding='(\w+)'",
                         patch.args)
    assert match, patch.args
    (name,) = our_names(seed, patch.path)
    conv = modules[name]
    assert isinstance(conv, nn.Conv2d)
    assert (conv.in_channels, conv.out_channels) == (int(match[1]), int(match[2]))
    assert conv.kernel_size == (int(match[3]), int(match[4]))
    assert conv.stride == (int(match[5]), int(match[6]))
    assert conv.padding == match[7]

    embeddings = seed_modules(seed, "Embedding")
    assert len(embeddings) == 2
    for node in embeddings:
        num, dim = map(int, re.fullmatch(r"(\d+), (\d+)", node.args).groups())
        (name,) = our_names(seed, node.path)
        module = modules[name]
        assert isinstance(module, nn.Embedding), name
        assert (module.num_embeddings, module.embedding_dim) == (num, dim), name

    norms = seed_modules(seed, "LayerNorm", "Qwen2RMSNorm")
    assert norms
    for node in norms:
        shape, eps = re.fullmatch(r"\((\d+),\), eps=([\d.e+-]+)", node.args).groups()
        for name in our_names(seed, node.path):
            module = modules[name]
            assert type(module).__name__ == node.type, name
            assert tuple(module.weight.shape) == (int(shape),), name
            actual_eps = getattr(module, "eps", getattr(module, "variance_epsilon", None))
            assert actual_eps == pytest.approx(float(eps)), name


def test_activations_match_the_seed(seed, full_model):
    modules = dict(full_model.named_modules())
    x = torch.linspace(-4, 4, 101)
    nodes = [node for node in seed.walk() if node.path and node.path[-1] in ("activation_fn", "act", "act_fn")]
    assert len(nodes) == 3
    for node in nodes:
        for name in our_names(seed, node.path):
            # Activations have no parameters, so the meta model's modules run on CPU tensors.
            torch.testing.assert_close(modules[name](x), ACTIVATIONS[node.type](x), rtol=0, atol=1e-6)


def test_full_model_has_no_lm_head(seed, full_model):
    lm_head = seed.node("language_model", "lm_head")
    _, vocab, _ = parse_linear(lm_head.args)
    embed_tokens = seed.node("language_model", "model", "embed_tokens")
    assert int(embed_tokens.args.split(",")[0]) == vocab
    for name, module in full_model.named_modules():
        assert getattr(module, "out_features", None) != vocab, f"{name} looks like an LM head"
        assert "lm_head" not in name
    assert not [name for name, _ in full_model.named_parameters() if "lm_head" in name]
    # The retriever's parameters are the seed's minus the LM head: count them from the parsed shapes.
    expected = 0
    for node in seed_modules(seed, "Linear"):
        in_features, out_features, bias = parse_linear(effective(node).args)
        expected += len(our_names(seed, node.path)) * (in_features * out_features + (out_features if bias else 0))
    for node in seed_modules(seed, "Embedding"):
        expected += math.prod(map(int, node.args.split(", ")))
    (patch,) = seed_modules(seed, "Conv2d")
    c_in, c_out, k1, k2 = map(int, re.match(r"(\d+), (\d+), kernel_size=\((\d+), (\d+)\)", patch.args).groups())
    expected += c_out * c_in * k1 * k2 + c_out
    for node in seed_modules(seed, "LayerNorm", "Qwen2RMSNorm"):
        size = int(re.match(r"\((\d+),\)", node.args)[1])
        expected += len(our_names(seed, node.path)) * size * (2 if node.type == "LayerNorm" else 1)
    assert sum(p.numel() for p in full_model.parameters()) == expected


def test_patches_per_image_match_the_position_embedding(seed, full_model):
    position = seed.node("vision_tower", "vision_model", "embeddings", "position_embedding")
    positions = int(position.args.split(",")[0])
    patch = seed.node("vision_tower", "vision_model", "embeddings", "patch_embedding")
    patch_size = int(re.search(r"stride=\((\d+),", patch.args)[1])
    side = math.isqrt(positions) * patch_size
    assert full_model.vision_tower.num_patches(side, side) == positions
    assert full_model.vision_tower.num_patches(384, 384) == positions


def test_default_lora_wraps_the_seed_targets_and_lm_attention(seed):
    model = vlzoo.build("colllava_interleave", device="meta")
    rule_set = vlzoo.registry().rule_set("colllava_default")
    peft_model = apply_lora(model, rule_set)

    seed_lora = [node for node in seed.walk() if node.type == "lora.Linear"]
    assert seed_lora
    expected = {name for node in seed_lora for name in our_names(seed, node.path)}
    # The seed config meant to adapt the LM attention too; its patterns matched nothing there.
    attention = seed.node("language_model", "model", "layers", "*", "self_attn")
    projections = sorted(name for name, child in attention.children.items() if child.type == "Linear")
    assert projections == ["k_proj", "o_proj", "q_proj", "v_proj"]
    for name in projections:
        expected.update(our_names(seed, attention.path + (name,)))
    assert len(expected) == 100

    wrapped = adapted_modules(peft_model)
    assert len(wrapped) == len(set(wrapped))
    assert set(wrapped) == expected

    # Rank and dropout as printed in the seed.
    base = peft_model.get_base_model()
    modules = dict(base.named_modules())
    for node in seed_lora:
        a_in, rank, _ = parse_linear(re.search(r"Linear\(([^)]*)\)", node.children["lora_A"].args)[1])
        dropout = float(re.search(r"Dropout\(p=([\d.]+)\)", node.children["lora_dropout"].args)[1])
        for name in our_names(seed, node.path):
            module = modules[name]
            assert module.lora_A["default"].weight.shape == (rank, a_in), name
            assert module.lora_dropout["default"].p == pytest.approx(dropout), name
    # The LM attention gets the same rank.
    rank = peft_model.peft_config["default"].r
    for name in expected:
        assert modules[name].lora_A["default"].out_features == rank

    # Only the adapters train; the vision tower is entirely frozen.
    assert not [name for name, p in base.vision_tower.named_parameters() if p.requires_grad]
    trainable = [name for name, p in base.named_parameters() if p.requires_grad]
    assert trainable
    assert all(".lora_A." in name or ".lora_B." in name for name in trainable), trainable[:5]
    expected_count = sum(rank * (modules[name].in_features + modules[name].out_features) for name in expected)
    assert sum(p.numel() for p in base.parameters() if p.requires_grad) == expected_count
