"""Hostile and broken image files, written the way an attacker or a bad disk would leave them."""
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` 8-bit gray pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def valid_png(size=12, value=100) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), value, np.uint8), "L").save(buf, format="PNG")
    return buf.getvalue()


# name -> (bytes, what the one-line error says)
HOSTILE = {
    "bomb.png": (png_claiming(100_000, 100_000), "refused image"),  # PIL's own bomb check: > 2 x 89M pixels
    "huge.png": (png_claiming(9_000, 9_000), "refused image"),  # 81M: under PIL's limit, over switokd's 64M
    "empty.png": (b"", "the file is empty"),
    "text.png": (b"this is not an image\n", "cannot decode image"),
    "truncated.png": (valid_png(64)[:60], "cannot decode image"),
}


def write(path: Path, name: str) -> Path:
    path.write_bytes(HOSTILE[name][0])
    return path
