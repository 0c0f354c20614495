"""Write held-out synthetic pages (object pairs the quick start never trains on) as a PDF, or as a ViDoRe v1
table of queries and pages, and print their queries.

    python examples/held_out_pages.py held-out.pdf [--pages 16]
    python examples/held_out_pages.py held-out.parquet [--pages 128]

Page i answers query i. After the quick start, `vlzoo index` the PDF with `runs/quickstart` and `vlzoo search`
it for one of the queries, or `vlzoo eval` the model on the table (columns query, image, image_filename).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from vlzoo_core.data.synthetic import synthetic_rows
from vlzoo_core.training.run_config import SyntheticSource


def write_table(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cells = []
    for row in rows:
        buffer = io.BytesIO()
        row["image"].save(buffer, "PNG")
        cells.append({"bytes": buffer.getvalue(), "path": None})
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({"query": [row["query"] for row in rows], "image": pa.array(cells, image),
                             "image_filename": [f"page{number:03d}.png" for number in range(1, len(rows) + 1)]}),
                   path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="the .pdf or .parquet file to write")
    parser.add_argument("--pages", type=int, default=16, help="pages (at most 160; default 16)")
    args = parser.parse_args()
    rows = list(synthetic_rows(SyntheticSource(pages=args.pages, seed=5, split="eval")))
    if args.path.suffix.lower() == ".parquet":
        write_table(args.path, rows)
    else:
        images = [row["image"] for row in rows]
        images[0].save(args.path, "PDF", save_all=True, append_images=images[1:], resolution=72)
    for number, row in enumerate(rows, start=1):
        print(f"page {number:>3}: {row['query']}")


if __name__ == "__main__":
    main()
