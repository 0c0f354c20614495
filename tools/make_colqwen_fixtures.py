"""Make the tiny ColQwen2 checkpoint fixtures that vlzoo's colqwen plugin is checked against.

It writes two self-contained fixture folders, each made by the *other* library, never by vlzoo:

* ``tests/fixtures/colqwen2_colpali_engine/``: colpali-engine's ``ColQwen2`` (random init from a tiny
  Qwen2-VL config) saved as a base folder, plus a PEFT LoRA adapter folder made the way colpali-engine's
  training does it (the layout of the Hub's ``vidore/colqwen2-base`` + ``vidore/colqwen2-v1.0``).
* ``tests/fixtures/colqwen2_transformers/``: transformers' ``ColQwen2ForRetrieval`` (random init from a tiny
  ``ColQwen2Config`` around the same Qwen2-VL config), the layout of ``vidore/colqwen2-v1.0-hf``.

Each folder also holds the library's own processor outputs and embeddings for the same 3 queries and 2
generated pages (PNG), a ``manifest.json`` and a README.md.

How to run it (from the repository root), in a separate virtualenv that is NOT vlzoo's: colpali-engine must
never become a vlzoo dependency::

    python3.11 -m venv /work/venv-colpali
    . /work/venv-colpali/bin/activate
    pip install torch==2.13.0                      # the CPU build; never an open-ended torch
    pip install "colpali-engine==0.3.18" "torch==2.13.0"
    python tools/make_colqwen_fixtures.py          # both fixtures; or `colpali_engine` / `transformers`

The fixtures in the repository were made with Python 3.11, torch 2.13.0+cpu, colpali-engine 0.3.18,
transformers 5.24.0 (pulled in by colpali-engine; it has ``ColQwen2ForRetrieval``, so both fixtures come from
the same venv), peft 0.20.0, tokenizers 0.23.3, safetensors 0.8.0, pillow 13.0.0, numpy 2.4.6.

torchvision: colpali-engine pulls in torchvision 0.28.0 from PyPI, a CUDA build whose C++ ops cannot load next
to the CPU torch (a plain ``import torchvision`` fails: "operator torchvision::nms does not exist").
``make_torchvision_importable()`` below gets its pure-torch parts imported (colpali-engine's processor needs
transformers' Qwen2-VL video processor, which needs torchvision); the pages themselves are processed with Qwen2-VL's
PIL image processor, the one available in vlzoo's torchvision-free venv.

Everything is offline and seeded: the Qwen2-VL tokenizer is a tiny byte-level BPE trained with the
``tokenizers`` library on the built-in corpus below; weights are random (fixed seeds), LoRA ``lora_B`` is set to
non-zero random values so the adapter changes the embeddings. Only safetensors/JSON/PNG files are written.
Rerunning it overwrites both folders; the script checks that reloading the saved folders with the library
reproduces the saved embeddings.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"

SEED = 1234

# --------------------------------------------------------------------------------------------------------------
# Inputs shared by both fixtures
# --------------------------------------------------------------------------------------------------------------

# Different lengths on purpose, so the query batch is (left-)padded.
QUERIES = [
    "red circle",
    "Where is the blue square on the page?",
    "green triangle, 3 lines",
]

# Qwen2-VL's added tokens, in the order (and so the relative ids) of the real Qwen2-VL tokenizer.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

CORPUS = [
    "Describe the image.",
    "Query: what is on the page?",
    "user",
    "assistant",
    "system",
    "You are a helpful assistant.",
    "red circle",
    "blue square",
    "green triangle",
    "Where is the blue square on the page?",
    "The red circle is in the top left corner of the page.",
    "A green triangle and three black lines of text.",
    "What colour is the triangle on this document page?",
    "Find the page with a table, a chart and a figure.",
    "The quarterly report shows revenue growth of 12 percent in 2024.",
    "Section 3 lines: introduction, methods, results, discussion.",
    "document retrieval with vision language models",
    "late interaction scores every query token against every page patch",
    "the quick brown fox jumps over the lazy dog",
    "Invoice number 4521, total amount due 980 euros.",
    "Figure 2: accuracy versus number of visual tokens.",
    "numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000",
    "punctuation: , . ; : ! ? ( ) [ ] { } - _ / ' \"",
    "Where, when, why, what, which, who and how?",
]

BPE_VOCAB_SIZE = 320  # 256 byte symbols + 64 merges; the 14 special tokens come on top.

# Small pixel budget so that pages give few patches: between 4 and 16 merged (2x2) visual tokens per image.
MIN_PIXELS = 4 * 28 * 28  # 3136, the same min_pixels as the Hub's ColQwen2 processors
MAX_PIXELS = 16 * 28 * 28  # 12544

DIM = 128  # colpali-engine hard-codes 128; transformers' ColQwen2Config.embedding_dim defaults to 128

# LoRA, as colpali-engine's scripts/configs/qwen2/train_colqwen2_model.yaml (the recipe of vidore/colqwen2-v1.0)
# except r / lora_alpha, which are small here and give scaling 2.0 (the Hub's 32/32 gives 1.0) so that a loader
# that forgets the scaling fails the comparison.
LORA_R = 4
LORA_ALPHA = 8
LORA_TARGET_MODULES = (
    "(.*(model).*(down_proj|gate_proj|up_proj|k_proj|q_proj|v_proj|o_proj).*$|.*(custom_text_proj).*$)"
)


def make_pages() -> list[Image.Image]:
    """Two deterministic RGB pages of different sizes (so the page batch is padded too).

    Page 0 is 84x56 (width x height): both sides are multiples of 28 and 84*56 lies within [MIN_PIXELS,
    MAX_PIXELS], so smart_resize keeps its size. Page 1 is 100x130 and is resized (to 84x112) by the processor.
    """
    page0 = Image.new("RGB", (84, 56), (255, 255, 255))
    draw = ImageDraw.Draw(page0)
    draw.ellipse((6, 6, 36, 36), fill=(220, 30, 30), outline=(0, 0, 0))
    draw.rectangle((46, 14, 76, 44), fill=(30, 60, 220))
    draw.line((4, 50, 80, 50), fill=(0, 0, 0), width=2)

    page1 = Image.new("RGB", (100, 130), (250, 245, 215))
    draw = ImageDraw.Draw(page1)
    draw.polygon([(50, 8), (90, 70), (10, 70)], fill=(20, 170, 60), outline=(0, 80, 0))
    for i, y in enumerate((84, 98, 112)):
        draw.rectangle((10, y, 90 - 15 * i, y + 5), fill=(10, 10, 10))
    draw.point([(x, 125) for x in range(0, 100, 3)], fill=(200, 0, 200))
    return [page0, page1]


# --------------------------------------------------------------------------------------------------------------
# Tokenizer and config
# --------------------------------------------------------------------------------------------------------------


def build_tokenizer():
    """A tiny Qwen2 tokenizer: byte-level BPE trained offline on CORPUS, wrapped in transformers' Qwen2Tokenizer.

    The `tokenizers` pipeline is Qwen2's own (NFC, Qwen2 split regex, byte level without prefix space), so the
    saved tokenizer.json behaves like the real one, only with a 320-entry BPE vocabulary. The special tokens are
    added after the BPE vocabulary in Qwen2-VL's order (ids 320..333).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    bpe.train_from_iterator(CORPUS * 4, trainer=trainer)
    state = json.loads(bpe.to_str())
    vocab = state["model"]["vocab"]
    merges = state["model"]["merges"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]
    assert len(vocab) == BPE_VOCAB_SIZE, len(vocab)

    # No special tokens at construction (Qwen2Tokenizer would add them eos-first); add all 14 in Qwen2-VL's order,
    # then name eos/pad like Qwen2-VL-2B-Instruct's tokenizer_config.json.
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token=None,
        pad_token=None,
        model_max_length=32768,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS], special_tokens=True)
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.extra_special_tokens = SPECIAL_TOKENS[1:]
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(BPE_VOCAB_SIZE, BPE_VOCAB_SIZE + len(SPECIAL_TOKENS))), ids
    return tokenizer


def build_qwen2vl_config(tokenizer):
    from transformers import Qwen2VLConfig

    tok = tokenizer.convert_tokens_to_ids
    hidden = 64
    text_config = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_act="silu",
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        use_sliding_window=False,
        max_window_layers=2,
        attention_dropout=0.0,
        # head_dim = 64 / 4 = 16, so mrope_section sums to 8 (Qwen2-VL-2B: [16, 24, 24] for head_dim 128).
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=tok("<|endoftext|>"),
        eos_token_id=tok("<|im_end|>"),
        pad_token_id=tok("<|endoftext|>"),
    )
    vision_config = dict(
        depth=2,
        embed_dim=32,
        hidden_size=hidden,  # the merger's output width = the LM hidden size
        hidden_act="quick_gelu",
        mlp_ratio=4,
        num_heads=2,
        in_channels=3,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    return Qwen2VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=tok("<|image_pad|>"),
        video_token_id=tok("<|video_pad|>"),
        vision_start_token_id=tok("<|vision_start|>"),
        vision_end_token_id=tok("<|vision_end|>"),
        tie_word_embeddings=False,
    )


def build_image_processor():
    """Qwen2-VL's image processor with the PIL backend (``Qwen2VLImageProcessorPil``).

    Chosen over transformers 5's default torchvision backend because vlzoo's venv has no torchvision (see the
    module docstring), so this is the one vlzoo can reproduce bit for bit. Only page 1 is resized, and that resize
    is the only step where the two backends differ (manifest.json records by how much).
    """
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        min_pixels=MIN_PIXELS,
        max_pixels=MAX_PIXELS,
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
    )


def make_torchvision_importable() -> str:
    """Let ``import torchvision`` succeed next to the CPU torch; returns how it went (for the manifest).

    PyPI's torchvision 0.28.0 (which colpali-engine pulls in) is a CUDA build: its ``_C.so`` needs
    ``libtorch_cuda.so`` and does not load with torch 2.13.0+cpu. torchvision copes with a missing ``_C`` (no
    detection ops) except that ``torchvision/_meta_registrations.py`` registers fake kernels for
    ``torchvision::nms`` and ``torchvision::qnms`` unconditionally, which fails when the ops are undefined. Defining
    just those two schemas first lets the pure-torch parts (transforms, what transformers' Qwen2-VL video processor
    needs and colpali-engine's ColQwen2Processor requires) import; nms itself stays unusable, and nothing here uses
    it. When ``_C.so`` loads (a matching torchvision), nothing is changed.
    """
    import importlib.util

    global _TORCHVISION_LIB
    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        return "absent"
    lib_path = Path(spec.submodule_search_locations[0]) / "_C.so"
    try:
        torch.ops.load_library(str(lib_path))
        return "native ops"
    except OSError:
        pass
    _TORCHVISION_LIB = torch.library.Library("torchvision", "DEF")
    _TORCHVISION_LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401

    return "without native ops (CUDA wheel next to CPU torch): nms/qnms schemas defined so that it imports"


_TORCHVISION_LIB = None
TORCHVISION_STATUS = "not checked"


def load_pil_image_processor(folder: Path):
    """The saved image processor, PIL backend (processor_config.json names the canonical Qwen2VLImageProcessor,
    which transformers 5 maps to the torchvision backend whenever torchvision imports)."""
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(str(folder), backend="pil")


def size_dict(size) -> dict:
    items = size.items() if hasattr(size, "items") else vars(size).items()
    return {k: v for k, v in items if v is not None}


def torchvision_backend_diff(pages) -> list[float]:
    """Max |pixel_values(PIL backend) - pixel_values(torchvision backend)| per page, for the manifest."""
    from transformers import Qwen2VLImageProcessor
    from transformers.utils.import_utils import is_torchvision_available

    if not is_torchvision_available():
        return []
    tv = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    pil = build_image_processor()
    out = []
    for page in pages:
        a = tv(images=[page], return_tensors="pt")["pixel_values"]
        b = pil(images=[page], return_tensors="pt")["pixel_values"]
        out.append(float((a - b).abs().max()))
    return out


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    names = ("torch", "transformers", "colpali-engine", "peft", "tokenizers", "torchvision", "safetensors", "pillow")
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def seed_all(seed: int) -> None:
    import random

    random.seed(seed)
    torch.manual_seed(seed)


def randomize_constant_params(model: torch.nn.Module, seed: int) -> list[str]:
    """Give every parameter that init left constant (norm weights = 1, biases = 0) random values around it.

    A trained checkpoint has no such constants, and with them a loader that silently leaves a key at its init
    value would still reproduce the embeddings. It also gives the projection a non-zero bias like the real
    checkpoints have (a zero bias turns sdpa's all-zero hidden states at left-padded positions into 0/0 = NaN
    in the L2 normalisation).
    """
    gen = torch.Generator().manual_seed(seed)
    changed = []
    with torch.no_grad():
        for name, param in model.named_parameters():
            flat = param.detach().flatten()
            if flat.numel() > 1 and bool((flat == flat[0]).all()):
                param.add_(torch.randn(param.shape, generator=gen) * 0.1)
                changed.append(name)
    return changed


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def tensors_of(batch) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in batch.items() if isinstance(v, torch.Tensor)}


def key_prefixes(keys, depth: int) -> list[str]:
    return sorted({".".join(k.split(".")[:depth]) + "." for k in keys})


def safetensors_keys(path: Path) -> list[str]:
    with safe_open(str(path), framework="pt") as f:
        return sorted(f.keys())


def safetensors_dtypes(path: Path) -> list[str]:
    with safe_open(str(path), framework="pt") as f:
        return sorted({str(f.get_slice(k).get_dtype()) for k in f.keys()})


def write_inputs(root: Path, pages: list[Image.Image]) -> None:
    inputs = fresh_dir(root / "inputs")
    (inputs / "queries.json").write_text(json.dumps(QUERIES, indent=2) + "\n")
    for i, page in enumerate(pages):
        page.save(inputs / f"page_{i}.png", optimize=False)
    # What is read back from the PNGs must be exactly what was embedded.
    for i, page in enumerate(pages):
        back = Image.open(inputs / f"page_{i}.png").convert("RGB")
        assert back.tobytes() == page.tobytes()


def read_pages(root: Path, n: int) -> list[Image.Image]:
    return [Image.open(root / "inputs" / f"page_{i}.png") for i in range(n)]


def embedding_stats(emb: torch.Tensor, mask: torch.Tensor) -> dict:
    valid = mask.bool()
    norms = emb.norm(dim=-1)
    return {
        "shape": list(emb.shape),
        "max_abs": float(emb.abs().max()),
        "valid_token_norm_min": float(norms[valid].min()),
        "valid_token_norm_max": float(norms[valid].max()),
        "padded_max_abs": float(emb[~valid].abs().max()) if (~valid).any() else 0.0,
    }


def dir_listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def assert_no_pickles(root: Path) -> None:
    bad = [p for p in root.rglob("*") if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt", ".py"}]
    assert not bad, bad


# --------------------------------------------------------------------------------------------------------------
# colpali-engine
# --------------------------------------------------------------------------------------------------------------


def processing_manifest(processor, tokenizer, pages, outputs, q_emb, p_emb, *, query_end: str) -> dict:
    """What both libraries' manifests record of their processing and embeddings (`query_end` ends a query)."""
    return {
        "queries": QUERIES,
        "query_texts_as_fed": [
            f"{processor.query_prefix}{q}{processor.query_augmentation_token * 10}{query_end}" for q in QUERIES
        ],
        "query_prefix": processor.query_prefix,
        "query_augmentation_token": processor.query_augmentation_token,
        "query_augmentation_count": 10,
        "visual_prompt_prefix": processor.visual_prompt_prefix,
        "padding_side": processor.tokenizer.padding_side,
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        "image_processor_class": type(processor.image_processor).__name__,
        "image_processor_size": size_dict(processor.image_processor.size),
        "pixel_values_pil_vs_torchvision_backend_max_abs_diff_per_page": torchvision_backend_diff(pages),
        "page_sizes_wh": [list(p.size) for p in pages],
        "page_image_grid_thw": outputs["page_image_grid_thw"].tolist(),
        "special_token_ids": {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS},
        "tokenizer_len": len(tokenizer),
        "query_embeddings": embedding_stats(q_emb, outputs["query_attention_mask"]),
        "page_embeddings": embedding_stats(p_emb, outputs["page_attention_mask"]),
    }


def make_colpali_engine(pages) -> dict:
    from colpali_engine.models import ColQwen2, ColQwen2Processor
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import Qwen2VLVideoProcessor

    tokenizer = build_tokenizer()  # one per fixture: batching with padding changes what tokenizer.json saves
    root = fresh_dir(FIXTURES / "colqwen2_colpali_engine")
    base_dir = root / "colqwen2-base"
    adapter_dir = root / "colqwen2-adapter"

    seed_all(SEED)
    config = build_qwen2vl_config(tokenizer)
    model = ColQwen2(config).to(torch.float32).eval()
    randomized = randomize_constant_params(model, SEED + 2)

    # Qwen2VLProcessor (colpali-engine's base class) insists on a video processor; it is unused (defaults).
    processor = ColQwen2Processor(
        image_processor=build_image_processor(), tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor()
    )

    # The base folder: like vidore/colqwen2-base (model + processor files).
    model.save_pretrained(base_dir, safe_serialization=True)
    processor.save_pretrained(base_dir)

    # The adapter: what colpali_engine.trainer.colmodel_training does (get_peft_model(model, LoraConfig)).
    lora_config = LoraConfig(
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        lora_dropout=0.1,
        init_lora_weights="gaussian",
        bias="none",
        task_type="FEATURE_EXTRACTION",
        target_modules=LORA_TARGET_MODULES,
    )
    peft_model = get_peft_model(model, lora_config)
    # "Training": give lora_B (zero after init) non-zero random values, so that the adapter matters.
    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    peft_model.eval()
    # Like the Hub's vidore/colqwen2-v1.0, whose adapter_config.json names "vidore/colqwen2-base": here the
    # sibling folder's name (saved from inside the fixture folder, so that PEFT can resolve it while saving).
    peft_model.peft_config["default"].base_model_name_or_path = "colqwen2-base"
    cwd = os.getcwd()
    os.chdir(root)
    try:
        peft_model.save_pretrained("colqwen2-adapter", safe_serialization=True)
    finally:
        os.chdir(cwd)
    processor.save_pretrained(adapter_dir)  # colpali-engine's ColModelTraining.save() does this too

    # Processor outputs.
    batch_queries = processor.process_queries(QUERIES)
    batch_pages = processor.process_images(pages)

    def embed(m, batch):
        with torch.no_grad():
            out = m(**batch)
        assert torch.isfinite(out).all()
        return out.detach().clone().contiguous()

    q_emb = embed(peft_model, batch_queries)
    p_emb = embed(peft_model, batch_pages)
    with peft_model.disable_adapter():
        q_emb_base = embed(peft_model, batch_queries)
        p_emb_base = embed(peft_model, batch_pages)
    assert (q_emb - q_emb_base).abs().max() > 1e-2, "the adapter should change the query embeddings"
    assert (p_emb - p_emb_base).abs().max() > 1e-2, "the adapter should change the page embeddings"
    scores = processor.score_multi_vector(list(q_emb), list(p_emb), device="cpu")

    outputs = {f"query_{k}": v for k, v in tensors_of(batch_queries).items()}
    outputs.update({f"page_{k}": v for k, v in tensors_of(batch_pages).items()})
    save_file(outputs, str(root / "processor_outputs.safetensors"))
    save_file(
        {
            "query_embeddings": q_emb,
            "page_embeddings": p_emb,
            "query_embeddings_base": q_emb_base,
            "page_embeddings_base": p_emb_base,
            "scores": scores.float().contiguous(),
        },
        str(root / "embeddings.safetensors"),
    )
    write_inputs(root, pages)

    # Check: reload the saved folders the two ways colpali-engine users do and reproduce the embeddings.
    del peft_model, model
    reloaded_processor = ColQwen2Processor.from_pretrained(
        str(adapter_dir), image_processor=load_pil_image_processor(adapter_dir)
    )
    rq = reloaded_processor.process_queries(QUERIES)
    rp = reloaded_processor.process_images(read_pages(root, len(pages)))
    for k, v in tensors_of(rq).items():
        assert torch.equal(v, outputs[f"query_{k}"]), k
    for k, v in tensors_of(rp).items():
        assert torch.equal(v, outputs[f"page_{k}"]), k
    base = ColQwen2.from_pretrained(str(base_dir), dtype=torch.float32).eval()
    reloaded = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    reload_err = max(
        float((embed(reloaded, rq) - q_emb).abs().max()), float((embed(reloaded, rp) - p_emb).abs().max())
    )
    assert reload_err < 1e-5, reload_err
    # transformers' PEFT integration, as in `ColQwen2.from_pretrained("vidore/colqwen2-v1.0")` (needs the base
    # name to resolve, hence the chdir to the fixture folder).
    cwd = os.getcwd()
    os.chdir(root)
    try:
        auto = ColQwen2.from_pretrained("colqwen2-adapter", dtype=torch.float32).eval()
    finally:
        os.chdir(cwd)
    auto_err = max(float((embed(auto, rq) - q_emb).abs().max()), float((embed(auto, rp) - p_emb).abs().max()))
    assert auto_err < 1e-5, auto_err

    base_file = base_dir / "model.safetensors"
    adapter_file = adapter_dir / "adapter_model.safetensors"
    base_keys = safetensors_keys(base_file)
    adapter_keys = safetensors_keys(adapter_file)
    manifest = {
        "library": "colpali-engine",
        "versions": versions(),
        "torchvision": TORCHVISION_STATUS,
        "seed": SEED,
        "model_class": "colpali_engine.models.ColQwen2 (a transformers Qwen2VLModel subclass)",
        "processor_class": "colpali_engine.models.ColQwen2Processor",
        "attn_implementation": base.config._attn_implementation,
        "dtype": "float32",
        "params_randomized_from_constant_init": randomized,
        "base_dir": "colqwen2-base",
        "adapter_dir": "colqwen2-adapter",
        "base_files": dir_listing(base_dir),
        "adapter_files": dir_listing(adapter_dir),
        "base_key_prefixes_depth1": key_prefixes(base_keys, 1),
        "base_key_prefixes_depth2": key_prefixes(base_keys, 2),
        "base_keys": base_keys,
        "base_dtypes": safetensors_dtypes(base_file),
        "adapter_keys": adapter_keys,
        "adapter_key_prefixes_depth3": key_prefixes(adapter_keys, 3),
        "adapter_config": json.loads((adapter_dir / "adapter_config.json").read_text()),
        "lora_scaling": LORA_ALPHA / LORA_R,
        **processing_manifest(reloaded_processor, tokenizer, pages, outputs, q_emb, p_emb, query_end=""),
        "adapter_effect_max_abs": {
            "query": float((q_emb - q_emb_base).abs().max()),
            "page": float((p_emb - p_emb_base).abs().max()),
        },
        "scores": scores.tolist(),
        "reload_max_abs_err": {"PeftModel.from_pretrained": reload_err, "ColQwen2.from_pretrained(adapter)": auto_err},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (root / "README.md").write_text(colpali_engine_readme(manifest))
    assert_no_pickles(root)
    return manifest


# --------------------------------------------------------------------------------------------------------------
# transformers
# --------------------------------------------------------------------------------------------------------------


def make_transformers(pages) -> dict:
    from transformers import ColQwen2Config, ColQwen2ForRetrieval, ColQwen2Processor

    tokenizer = build_tokenizer()
    root = fresh_dir(FIXTURES / "colqwen2_transformers")
    model_dir = root / "colqwen2-hf"

    seed_all(SEED)
    config = ColQwen2Config(vlm_config=build_qwen2vl_config(tokenizer), embedding_dim=DIM)
    model = ColQwen2ForRetrieval(config).to(torch.float32).eval()
    randomized = randomize_constant_params(model, SEED + 2)
    processor = ColQwen2Processor(image_processor=build_image_processor(), tokenizer=tokenizer)
    model.save_pretrained(model_dir, safe_serialization=True)
    processor.save_pretrained(model_dir)

    batch_queries = processor.process_queries(text=QUERIES)
    batch_pages = processor.process_images(images=pages)

    def embed(m, batch):
        with torch.no_grad():
            out = m(**batch).embeddings
        assert torch.isfinite(out).all()
        return out.detach().clone().contiguous()

    q_emb = embed(model, batch_queries)
    p_emb = embed(model, batch_pages)
    scores = processor.score_retrieval(list(q_emb), list(p_emb))

    outputs = {f"query_{k}": v for k, v in tensors_of(batch_queries).items()}
    outputs.update({f"page_{k}": v for k, v in tensors_of(batch_pages).items()})
    save_file(outputs, str(root / "processor_outputs.safetensors"))
    save_file(
        {"query_embeddings": q_emb, "page_embeddings": p_emb, "scores": scores.float().contiguous()},
        str(root / "embeddings.safetensors"),
    )
    write_inputs(root, pages)

    # Check: reload and reproduce.
    del model
    reloaded_processor = ColQwen2Processor.from_pretrained(
        str(model_dir), image_processor=load_pil_image_processor(model_dir)
    )
    rq = reloaded_processor.process_queries(text=QUERIES)
    rp = reloaded_processor.process_images(images=read_pages(root, len(pages)))
    for k, v in tensors_of(rq).items():
        assert torch.equal(v, outputs[f"query_{k}"]), k
    for k, v in tensors_of(rp).items():
        assert torch.equal(v, outputs[f"page_{k}"]), k
    reloaded = ColQwen2ForRetrieval.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    reload_err = max(
        float((embed(reloaded, rq) - q_emb).abs().max()), float((embed(reloaded, rp) - p_emb).abs().max())
    )
    assert reload_err < 1e-5, reload_err

    model_file = model_dir / "model.safetensors"
    keys = safetensors_keys(model_file)
    manifest = {
        "library": "transformers",
        "versions": versions(),
        "torchvision": TORCHVISION_STATUS,
        "seed": SEED,
        "model_class": "transformers.ColQwen2ForRetrieval",
        "processor_class": "transformers.ColQwen2Processor",
        "attn_implementation": reloaded.config._attn_implementation,
        "dtype": "float32",
        "params_randomized_from_constant_init": randomized,
        "model_dir": "colqwen2-hf",
        "model_files": dir_listing(model_dir),
        "key_prefixes_depth1": key_prefixes(keys, 1),
        "key_prefixes_depth3": key_prefixes(keys, 3),
        "keys": keys,
        "dtypes": safetensors_dtypes(model_file),
        **processing_manifest(reloaded_processor, tokenizer, pages, outputs, q_emb, p_emb, query_end="\n"),
        "scores": scores.tolist(),
        "reload_max_abs_err": reload_err,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (root / "README.md").write_text(transformers_readme(manifest))
    assert_no_pickles(root)
    return manifest


# --------------------------------------------------------------------------------------------------------------
# READMEs (generated, so that they always describe the files next to them)
# --------------------------------------------------------------------------------------------------------------


def _versions_line(m: dict) -> str:
    v = m["versions"]
    names = ["python", "torch", "transformers", "colpali-engine", "peft", "tokenizers", "safetensors", "pillow"]
    return ", ".join(f"{n} {v[n]}" for n in names if n in v)


def _bullets(items) -> str:
    return "\n".join(f"  - `{i}`" for i in items)


def _stats(m: dict, key: str) -> str:
    st = m[key]
    return f"shape {st['shape']}, max |x| = {st['max_abs']:.6f}, valid-token L2 norms in [{st['valid_token_norm_min']:.7f}, {st['valid_token_norm_max']:.7f}], padded positions exactly 0"


def _common_inputs(m: dict) -> str:
    grids = m["page_image_grid_thw"]
    return f"""## Inputs

- `inputs/queries.json`: the 3 query strings, as given to the processor: {json.dumps(m["queries"])}.
- `inputs/page_0.png` ({m["page_sizes_wh"][0][0]}x{m["page_sizes_wh"][0][1]}, width x height; already a multiple of 28 inside the pixel
  budget, so it is not resized) and `inputs/page_1.png` ({m["page_sizes_wh"][1][0]}x{m["page_sizes_wh"][1][1]}; resized to 84x112 with PIL bicubic).
  `image_grid_thw` = {grids}, so {[g[1] * g[2] for g in grids]} patches and {[g[1] * g[2] // 4 for g in grids]} `<|image_pad|>` tokens.

## Tokenizer

A tiny Qwen2 tokenizer (`Qwen2Tokenizer`, tokenizers backend): byte-level BPE with Qwen2's NFC normaliser and split regex, trained on
the script's built-in corpus ({BPE_VOCAB_SIZE} BPE entries), then Qwen2-VL's 14 added special tokens in Qwen2-VL's order, so
`len(tokenizer)` = vocab_size = {m["tokenizer_len"]}. Ids: {json.dumps(m["special_token_ids"])}.
eos `<|im_end|>`, pad `<|endoftext|>` (id 320), no bos/unk, `padding_side` = "{m["padding_side"]}".

## Image processor

`{m["image_processor_class"]}` (transformers' Qwen2-VL image processor, PIL backend; `processor_config.json` names the canonical
`Qwen2VLImageProcessor`, so load it with `AutoImageProcessor.from_pretrained(folder, backend="pil")`, or anywhere without torchvision,
as in vlzoo's venv, where that is the default). size = {json.dumps(m["image_processor_size"])} (min_pixels {m["min_pixels"]}, max_pixels
{m["max_pixels"]}), patch 14, temporal patch 2, merge 2, CLIP mean/std, rescale 1/255, bicubic resample, `smart_resize` with factor 28.
Each patch row of `pixel_values` is 3 x 2 x 14 x 14 = 1176 floats; per batch the rows of each image are zero-padded to the longest image:
`pixel_values` is (batch, max_patches, 1176) and the model keeps the first h*w rows of image i (`image_grid_thw[i] = (t, h, w)`).
Page 1 through transformers' torchvision backend instead differs by up to
{max(m["pixel_values_pil_vs_torchvision_backend_max_abs_diff_per_page"] or [0]):.4f} (resize only; page 0: {(m["pixel_values_pil_vs_torchvision_backend_max_abs_diff_per_page"] or [0])[0]:.1e}).
"""


def colpali_engine_readme(m: dict) -> str:
    cfg = m["adapter_config"]
    return f"""# ColQwen2 fixture made by colpali-engine

Generated by `tools/make_colqwen_fixtures.py colpali_engine` (read its docstring; do not edit these files by hand).
Versions: {_versions_line(m)}. torchvision 0.28.0 (PyPI, CUDA build) is installed but imported {m["torchvision"].split(":")[0]};
nothing here runs through it. Seed {m["seed"]}, float32, CPU, 1 thread, attention `{m["attn_implementation"]}`.

A random-init `colpali_engine.models.ColQwen2` (a `transformers` `Qwen2VLModel` subclass plus `custom_text_proj`, Linear 64 -> 128
with bias) on a tiny Qwen2-VL config (LM: hidden 64, 2 layers, 4 heads, 2 KV heads, head_dim 16, intermediate 128, rms_norm_eps 1e-6,
rope_theta 1e6, mrope_section [2, 3, 3]; vision: depth 2, embed_dim 32, 2 heads, mlp_ratio 4, patch 14, temporal patch 2, merge 2,
hidden_size 64), plus a PEFT LoRA adapter, saved the way colpali-engine users have it on the Hub (`vidore/colqwen2-base` +
`vidore/colqwen2-v1.0`). Every parameter that init leaves constant (norm weights, biases) was randomised, and the adapter's `lora_B`
set to random non-zero values (the adapter moves embeddings by up to {m["adapter_effect_max_abs"]["query"]:.3f} / {m["adapter_effect_max_abs"]["page"]:.3f}).

## Files

- `colqwen2-base/`: `ColQwen2.save_pretrained` + `ColQwen2Processor.save_pretrained`:
{_bullets(m["base_files"])}
- `colqwen2-adapter/`: `PeftModel.save_pretrained` + the processor again (colpali-engine's `ColModelTraining.save()` does both; `README.md`
  there is PEFT's own model-card stub):
{_bullets(m["adapter_files"])}
- `processor_outputs.safetensors`: `query_*` = `processor.process_queries(queries)`, `page_*` = `processor.process_images(pages)`
  (keys `input_ids`, `attention_mask`, `mm_token_type_ids`, and for pages `pixel_values`, `image_grid_thw`).
- `embeddings.safetensors`: `query_embeddings` {m["query_embeddings"]["shape"]}, `page_embeddings` {m["page_embeddings"]["shape"]} (adapter
  applied), `query_embeddings_base` / `page_embeddings_base` (same with the adapter disabled), `scores` (3 x 2,
  `processor.score_multi_vector`).
- `manifest.json`: everything below in machine-readable form (all key names, versions, settings, statistics).
- `inputs/`: the queries and the page PNGs.

## Checkpoint key layout

`colqwen2-base/model.safetensors`: {len(m["base_keys"])} tensors, all {", ".join(m["base_dtypes"])}, top-level prefixes
{", ".join(f"`{p}`" for p in m["base_key_prefixes_depth1"])}; second level {", ".join(f"`{p}`" for p in m["base_key_prefixes_depth2"])}.
`config.json`: `architectures` ["ColQwen2"], `model_type` "qwen2_vl", nested `text_config` / `vision_config`, `rope_parameters`
(transformers 5 naming; no `rope_scaling`). No `lm_head` (the base class is `Qwen2VLModel`).

Older checkpoints (transformers 4.x era, such as the Hub's `vidore/colqwen2-base`) use legacy names for the language model; colpali-engine
0.3.18 maps them on load with `ColQwen2._checkpoint_conversion_mapping` = {{`^base_model\\.model\\.custom_text_proj` -> `custom_text_proj`,
`^model\\.layers` -> `language_model.layers`, `^model\\.embed_tokens` -> `language_model.embed_tokens`, `^model\\.norm` ->
`language_model.norm`}}, i.e. `model.layers.` / `model.embed_tokens.` / `model.norm.` (the Hub files themselves were not inspected:
no Hub access here). This fixture has the new names only.

`colqwen2-adapter/adapter_model.safetensors`: {len(m["adapter_keys"])} tensors named `base_model.model.<module>.lora_A.weight` /
`.lora_B.weight` (no adapter name in the key), for `<module>` in `custom_text_proj` and
`language_model.layers.{{0,1}}.self_attn.{{q,k,v,o}}_proj`, `language_model.layers.{{0,1}}.mlp.{{gate,up,down}}_proj` (prefixes
{", ".join(f"`{p}`" for p in m["adapter_key_prefixes_depth3"])}). lora_A is (r, in), lora_B is (out, r). Nothing in the vision tower.
`adapter_config.json`: peft_type LORA, task_type {cfg["task_type"]}, r {cfg["r"]}, lora_alpha {cfg["lora_alpha"]} (scaling
alpha / r = {m["lora_scaling"]}; the Hub's colqwen2-v1.0 has 32 / 32 = 1.0), lora_dropout {cfg["lora_dropout"]}, bias "{cfg["bias"]}",
use_rslora {str(cfg["use_rslora"]).lower()}, use_dora {str(cfg["use_dora"]).lower()}, init_lora_weights "{cfg["init_lora_weights"]}",
target_modules (a regex string, colpali-engine's colqwen2 recipe) `{cfg["target_modules"]}`,
base_model_name_or_path "{cfg["base_model_name_or_path"]}" (the sibling folder; the Hub adapter says "vidore/colqwen2-base").
Loading checked both ways: `PeftModel.from_pretrained(ColQwen2.from_pretrained("colqwen2-base"), "colqwen2-adapter")` and, from this
folder as working directory, `ColQwen2.from_pretrained("colqwen2-adapter")` (transformers' PEFT integration); both reproduce the
embeddings exactly.

{_common_inputs(m)}
## Processor (colpali-engine `ColQwen2Processor`)

- Queries: `process_queries(q)` feeds `query_prefix + q + "<|endoftext|>" * 10` with query_prefix = "{m["query_prefix"]}" (empty in
  0.3.18), no newline and no chat template, e.g. `{m["query_texts_as_fed"][0]}`; padding "longest", left; no truncation.
- Pages: `process_images(pages)` converts to RGB and feeds, per image, the visual prompt
  `{json.dumps(m["visual_prompt_prefix"])}`, where Qwen2VLProcessor expands the single `<|image_pad|>` to h*w/4 copies;
  padding "longest", left.
- Both return `mm_token_type_ids` (1 at `<|image_pad|>`, else 0); transformers 5.24's `Qwen2VLModel` raises without it when
  `pixel_values` are given.

## How the embeddings were made

`model(**batch)` with the PEFT-wrapped model (adapter active, eval, no grad). colpali-engine's `ColQwen2.forward`:
unpads `pixel_values` (first h*w rows of each image, concatenated), runs `Qwen2VLModel` (vision tower -> merger -> scattered into
the `<|image_pad|>` positions), takes `last_hidden_state`, applies `custom_text_proj`, L2-normalises every token vector
(`x / x.norm(dim=-1)`, no epsilon) and multiplies by `attention_mask` (padded positions are exactly 0). No other token is masked
(`mask_non_image_embeddings=False`): page embeddings include the prompt tokens, query embeddings include the 10 augmentation tokens.

Positions: pages get Qwen2-VL's M-RoPE positions from `get_rope_index(input_ids, mm_token_type_ids, image_grid_thw,
attention_mask)` (text tokens count up on all 3 axes from 0 at the first unpadded token; image tokens get (t, row, col) offsets
over the merged h/2 x w/2 grid; the text after an image resumes at max + 1; left-padding positions are 0). Using plain 1D positions
for pages instead changes them by up to 2e-2. Queries (no image) get `arange(seq_len)` on all 3 axes, pads included; RoPE is
shift-invariant, so counting from the first unpadded token instead differs only by ~1e-7.

Query embeddings: {_stats(m, "query_embeddings")}.
Page embeddings: {_stats(m, "page_embeddings")}.
`scores` = MaxSim (sum over query tokens of the max dot product over page tokens); identical to MaxSim over the unpadded tokens only.
Eager attention instead of sdpa reproduces the embeddings to ~1e-7, and merging the LoRA into the weights to ~3e-7.
"""


def transformers_readme(m: dict) -> str:
    return f"""# ColQwen2 fixture made by transformers (`ColQwen2ForRetrieval`)

Generated by `tools/make_colqwen_fixtures.py transformers` (read its docstring; do not edit these files by hand).
Versions: {_versions_line(m)}. Seed {m["seed"]}, float32, CPU, 1 thread, attention `{m["attn_implementation"]}`.
The folder also loads and reproduces (processor outputs bit for bit, embeddings exactly) in vlzoo's venv, which has transformers
5.24.0 and no torchvision.

A random-init `transformers.ColQwen2ForRetrieval` (`ColQwen2Config(vlm_config=<the tiny Qwen2-VL config>, embedding_dim=128)`;
`vlm` is a `Qwen2VLModel`, `embedding_proj_layer` a Linear 64 -> 128 with bias) on the same tiny Qwen2-VL config as the
colpali-engine fixture (LM: hidden 64, 2 layers, 4 heads, 2 KV heads, head_dim 16, intermediate 128, rms_norm_eps 1e-6, rope_theta
1e6, mrope_section [2, 3, 3]; vision: depth 2, embed_dim 32, 2 heads, patch 14, temporal patch 2, merge 2, hidden_size 64). Every
parameter that init leaves constant (norm weights, biases) was randomised. No adapter: this is the layout of the Hub's merged
`vidore/colqwen2-v1.0-hf`. Same tokenizer, pages and queries as `../colqwen2_colpali_engine/` (different random weights).

## Files

- `colqwen2-hf/`: `ColQwen2ForRetrieval.save_pretrained` + transformers' `ColQwen2Processor.save_pretrained`:
{_bullets(m["model_files"])}
- `processor_outputs.safetensors`: `query_*` = `processor.process_queries(text=queries)`, `page_*` =
  `processor.process_images(images=pages)` (keys `input_ids`, `attention_mask`, and for pages `pixel_values`, `image_grid_thw`; no
  `mm_token_type_ids`).
- `embeddings.safetensors`: `query_embeddings` {m["query_embeddings"]["shape"]}, `page_embeddings` {m["page_embeddings"]["shape"]},
  `scores` (3 x 2, `processor.score_retrieval`).
- `manifest.json`: everything below in machine-readable form. `inputs/`: the queries and the page PNGs.

## Checkpoint key layout

`colqwen2-hf/model.safetensors`: {len(m["keys"])} tensors, all {", ".join(m["dtypes"])}, top-level prefixes
{", ".join(f"`{p}`" for p in m["key_prefixes_depth1"])}; below them {", ".join(f"`{p}`" for p in m["key_prefixes_depth3"])}.
Inside `vlm.` the names are exactly the colpali-engine base's (`language_model.`, `visual.`); `embedding_proj_layer.` plays the role
of `custom_text_proj.`. `config.json`: `architectures` ["ColQwen2ForRetrieval"], `model_type` "colqwen2", `embedding_dim` 128,
`vlm_config` (a full `qwen2_vl` config). transformers 5.24 also accepts, on load, checkpoints with `vlm.model.` in place of `vlm.`
(its conversion mapping `"colqwen2": PrefixChange(prefix_to_remove="model", model_prefix="vlm")`), presumably the layout that
transformers 4.x wrote (as on the Hub; not inspected here).

{_common_inputs(m)}
## Processor (transformers `ColQwen2Processor`)

- Queries: `process_queries(text=q)` feeds `f"{{query_prefix}}{{q}}{{suffix}}\\n"` with query_prefix = "{m["query_prefix"]}", suffix =
  `pad_token * 10` = `"<|endoftext|>" * 10`, and a trailing newline, e.g. `{json.dumps(m["query_texts_as_fed"][0])}`; padding
  "longest", left (the tokenizer's padding side).
- Pages: the same visual prompt as colpali-engine, `{json.dumps(m["visual_prompt_prefix"])}`, one per image, with
  `<|image_pad|>` expanded to h*w/4 copies; padding "longest", left; `pixel_values` zero-padded per image as above.

## How the embeddings were made

`model(**batch).embeddings` (eval, no grad). `ColQwen2ForRetrieval.forward`: unpads `pixel_values` (first h*w rows of each image),
embeds `input_ids` with `vlm.language_model.embed_tokens`, runs `vlm.visual(pixel_values, grid_thw).pooler_output` and scatters it
into the `<|image_pad|>` positions, then calls `vlm` with `inputs_embeds` only (no `input_ids`, no `image_grid_thw`, no
`position_ids`). So positions are plain `arange(seq_len)` on all 3 M-RoPE axes, pads included, for queries *and pages*: no 2D
M-RoPE grid for image tokens, unlike colpali-engine (M-RoPE positions would change these page embeddings by up to 2e-3).
Then `embedding_proj_layer`, L2 normalisation of every token (`x / x.norm(dim=-1)`, no epsilon), times `attention_mask`. No token
other than padding is masked: query embeddings include "Query: " and the 10 `<|endoftext|>` and the newline, page embeddings the
prompt tokens.

Query embeddings: {_stats(m, "query_embeddings")}.
Page embeddings: {_stats(m, "page_embeddings")}.
`scores` = MaxSim (sum over query tokens of the max dot product over page tokens); equal (to 2e-6) to MaxSim over unpadded tokens.
Eager attention instead of sdpa reproduces the embeddings to ~1e-7.
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="?", choices=["all", "colpali_engine", "transformers"], default="all")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # bit-stable CPU results
    global TORCHVISION_STATUS
    TORCHVISION_STATUS = make_torchvision_importable()
    pages = make_pages()
    if args.which in ("all", "colpali_engine"):
        m = make_colpali_engine(pages)
        print("colpali-engine:", json.dumps({k: m[k] for k in ("query_embeddings", "page_embeddings", "reload_max_abs_err")}))
    if args.which in ("all", "transformers"):
        m = make_transformers(pages)
        print("transformers:", json.dumps({k: m[k] for k in ("query_embeddings", "page_embeddings", "reload_max_abs_err")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
