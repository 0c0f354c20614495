"""Synthetic document pages for the offline quick start and the tests.

Each page shows two large objects side by side; an object is a colour and a kind (a shape or a glyph).
Its query names both objects, e.g. "red circle and blue letter K". Unordered object pairs are split once,
with a fixed seed, into train pairs and held-out eval pairs: eval pages show pairs that never occur in
training, so memorising pages or pairs cannot solve the task. Each eval pair appears on one page only,
so every eval query has exactly one relevant page.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

from PIL import Image, ImageDraw, ImageFont

from vlzoo_core.errors import ConfigError
from vlzoo_core.training.run_config import SyntheticSource

COLOURS = {
    "red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 60, 220), "yellow": (235, 200, 20),
    "purple": (130, 40, 170), "orange": (245, 130, 20), "black": (20, 20, 20), "cyan": (20, 200, 210),
}
KINDS = ("circle", "square", "triangle", "cross", "letter K", "letter O")
OBJECTS = [(colour, kind) for colour in COLOURS for kind in KINDS]
HELD_OUT_PAIRS = 160
PAGE_SIZE = 128
_SPLIT_SEED = 1234  # fixed: train and eval sources must agree on the split whatever their own seeds


def _pair_split() -> dict[str, list[tuple[int, int]]]:
    pairs = list(itertools.combinations(range(len(OBJECTS)), 2))
    random.Random(_SPLIT_SEED).shuffle(pairs)
    return {"eval": pairs[:HELD_OUT_PAIRS], "train": pairs[HELD_OUT_PAIRS:]}


def object_name(index: int) -> str:
    colour, kind = OBJECTS[index]
    return f"{colour} {kind}"


def draw_object(draw: ImageDraw.ImageDraw, index: int, box: tuple[int, int, int, int]) -> None:
    colour_name, kind = OBJECTS[index]
    colour = COLOURS[colour_name]
    x0, y0, x1, y1 = box
    cx, cy, w = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0
    if kind == "circle":
        draw.ellipse(box, fill=colour)
    elif kind == "square":
        draw.rectangle(box, fill=colour)
    elif kind == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=colour)
    elif kind == "cross":
        t = w / 3
        draw.rectangle((x0, cy - t / 2, x1, cy + t / 2), fill=colour)
        draw.rectangle((cx - t / 2, y0, cx + t / 2, y1), fill=colour)
    else:  # a glyph
        font = ImageFont.load_default(size=int(w * 1.2))
        draw.text((cx, cy), kind.split()[-1], fill=colour, font=font, anchor="mm")


def render_page(left: int, right: int, rng: random.Random) -> Image.Image:
    background = tuple(rng.randint(235, 255) for _ in range(3))
    page = Image.new("RGB", (PAGE_SIZE, PAGE_SIZE), background)
    draw = ImageDraw.Draw(page)
    half = PAGE_SIZE // 2
    for slot, index in enumerate((left, right)):
        size = rng.randint(int(half * 0.7), int(half * 0.9))
        x0 = slot * half + rng.randint(2, half - size - 2)
        y0 = rng.randint(PAGE_SIZE // 4 - 8, PAGE_SIZE - size - 8)
        draw_object(draw, index, (x0, y0, x0 + size, y0 + size))
    return page


COLUMNS = ("query", "image", "negative", "left", "right")


def check_options(options: SyntheticSource, where: str = "synthetic") -> None:
    if options.split == "eval" and options.pages > HELD_OUT_PAIRS:
        raise ConfigError(f"{where}.pages: at most {HELD_OUT_PAIRS} eval pages (one per held-out pair), "
                          f"got {options.pages}")


def synthetic_rows(options: SyntheticSource) -> Iterator[dict]:
    """Rows with `query`, `image` (PIL), `negative` (a page sharing one object) and the two object names."""
    check_options(options)
    pairs = _pair_split()[options.split]
    rng = random.Random(options.seed * 7919 + (1 if options.split == "eval" else 0))
    chosen = rng.sample(pairs, options.pages) if options.split == "eval" else [
        rng.choice(pairs) for _ in range(options.pages)
    ]
    for a, b in chosen:
        left, right = (a, b) if rng.random() < 0.5 else (b, a)
        first, second = (left, right) if rng.random() < 0.5 else (right, left)
        kept = rng.choice((left, right))
        other = rng.choice([i for i in range(len(OBJECTS)) if i not in (left, right)])
        yield {
            "query": f"{object_name(first)} and {object_name(second)}",
            "image": render_page(left, right, rng),
            "negative": render_page(kept, other, rng),
            "left": object_name(left),
            "right": object_name(right),
        }


def synthetic_dataset(options: SyntheticSource | None = None):
    """A `datasets.Dataset` of synthetic pages (columns query, image, negative, left, right)."""
    from datasets import Dataset, Features, Image as ImageFeature, Value

    options = options or SyntheticSource()
    rows = list(synthetic_rows(options))
    features = Features({"query": Value("string"), "image": ImageFeature(), "negative": ImageFeature(),
                         "left": Value("string"), "right": Value("string")})
    return Dataset.from_list(rows, features=features)
