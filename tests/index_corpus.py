"""Generated corpora for the index tests: multi-page PDFs made with PIL, loose images, hand-written PDFs."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from PIL import Image

from vlzoo_core.data.synthetic import render_page


def synthetic_pages(n: int, seed: int) -> list[Image.Image]:
    rng = random.Random(seed)
    return [render_page(rng.randrange(48), rng.randrange(48), rng) for _ in range(n)]


def write_pdf(path: Path, pages: list[Image.Image]) -> None:
    pages[0].save(path, "PDF", save_all=True, append_images=pages[1:], resolution=72)


def make_corpus(root: Path, *, pdfs: int = 3, pages_per_pdf: int = 40, images: int = 90, seed: int = 0) -> Path:
    """A folder of `pdfs` PDFs (in a subfolder too) and `images` PNGs: pdfs * pages_per_pdf + images pages."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "reports").mkdir(exist_ok=True)
    for i in range(pdfs):
        folder = root / "reports" if i % 2 else root
        write_pdf(folder / f"doc{i}.pdf", synthetic_pages(pages_per_pdf, seed * 1000 + i))
    (root / "scans").mkdir(exist_ok=True)
    for i, page in enumerate(synthetic_pages(images, seed * 1000 + 999)):
        page.save(root / "scans" / f"scan{i:03d}.png")
    return root


def raw_pdf(objects: list[bytes], trailer: bytes = b"") -> bytes:
    """A PDF file from its object bodies (object n is objects[n - 1]; 1 must be the catalog), with a correct xref."""
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R %s>>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, trailer, xref)
    return bytes(out)


def zero_page_pdf(path):
    path.write_bytes(raw_pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]))
    return path


PASSWORD_PAD = bytes.fromhex("28bf4e5e4e758a4164004e56fffa01082e2e00b6d0683e802f0ca9fe6453697a")


def rc4(key: bytes, data: bytes) -> bytes:
    state, j = list(range(256)), 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out, i, j = bytearray(), 0, 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return bytes(out)


def encrypted_pdf(path, user=b"secret", owner=b"owner"):
    """A one-page PDF under the standard security handler (40-bit RC4, revision 2) with a user password.

    O and U follow algorithms 2-4 of the PDF 1.7 spec; the page has no strings or streams to encrypt.
    """
    padded = lambda password: (password + PASSWORD_PAD)[:32]  # noqa: E731
    file_id, permissions = bytes(range(16)), -4
    o_entry = rc4(hashlib.md5(padded(owner)).digest()[:5], padded(user))
    key = hashlib.md5(padded(user) + o_entry + permissions.to_bytes(4, "little", signed=True) + file_id).digest()[:5]
    u_entry = rc4(key, PASSWORD_PAD)
    path.write_bytes(raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 10 10] >>",
            b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>"
            % (o_entry.hex().encode(), u_entry.hex().encode(), permissions),
        ],
        b"/Encrypt 4 0 R /ID [<%s> <%s>] " % (file_id.hex().encode(), file_id.hex().encode()),
    ))
    return path
