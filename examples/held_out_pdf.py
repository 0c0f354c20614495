"""Write a PDF of held-out synthetic pages (object pairs the quick start never trains on) and print their queries.

    python examples/held_out_pdf.py held-out.pdf [--pages 16]

Page i of the PDF answers query i; after the quick start, `vlzoo index` the PDF with `runs/quickstart` and
`vlzoo search` it for one of the queries.
"""

from __future__ import annotations

import argparse

from vlzoo_core.data.synthetic import synthetic_rows
from vlzoo_core.training.run_config import SyntheticSource


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="the PDF to write")
    parser.add_argument("--pages", type=int, default=16, help="pages (at most 160; default 16)")
    args = parser.parse_args()
    rows = list(synthetic_rows(SyntheticSource(pages=args.pages, seed=5, split="eval")))
    images = [row["image"] for row in rows]
    images[0].save(args.path, "PDF", save_all=True, append_images=images[1:], resolution=72)
    for number, row in enumerate(rows, start=1):
        print(f"page {number:>3}: {row['query']}")


if __name__ == "__main__":
    main()
