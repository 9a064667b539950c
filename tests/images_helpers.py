"""Builders of awkward image files for tests (shared by unit and API tests)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR declares ``width x height`` (8-bit RGB) and whose IDAT is a tiny stub.

    Costs a few bytes and no memory; decoding it would fail, so a loader that reports
    "too large" for it has provably checked the size before decoding.
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(body)
    return path


def small_file_png(path: Path, width: int = 8000, height: int = 5000, color_type: int = 6) -> Path:
    """A valid 8-bit PNG of ``width x height`` zero pixels (transparent black for RGBA) that is tiny on disk
    (~0.1 % of its decoded size). ``color_type``: 0 gray, 2 RGB, 6 RGBA (4 bytes per pixel decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    channels = {0: 1, 2: 3, 6: 4}[color_type]
    comp, row, idat = zlib.compressobj(9), b"\0" * (width * channels + 1), []  # filter byte + pixels per row
    for _ in range(height):
        idat.append(comp.compress(row))
    idat.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(idat))
                     + chunk(b"IEND", b""))
    return path


def make_files(d: Path) -> dict[str, Path]:
    """name -> path of each awkward upload."""
    d.mkdir(parents=True, exist_ok=True)
    files = {}
    files["corrupt"] = d / "corrupt.png"
    files["corrupt"].write_bytes(b"\x89PNG\r\n\x1a\n" + b"this is not an image" * 20)
    files["empty"] = d / "empty.png"
    files["empty"].write_bytes(b"")
    good = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    good.save(d / "whole.png")
    data = (d / "whole.png").read_bytes()
    files["truncated"] = d / "truncated.png"
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["tiny"] = d / "tiny.png"
    Image.new("RGB", (1, 1), (255, 0, 0)).save(files["tiny"])
    files["cmyk"] = d / "cmyk.jpg"
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(files["cmyk"], quality=95)  # red
    files["gray16"] = d / "gray16.png"
    a = np.zeros((32, 32), np.uint16)
    a[:, 16:] = 65535
    Image.fromarray(a).save(files["gray16"])
    files["bomb"] = png_header_only(d / "bomb.png", 30000, 30000)
    files["big"] = png_header_only(d / "big.png", 8000, 8000)  # 64 MP: above our cap, below PIL's
    files["sliver"] = d / "sliver.png"
    Image.new("RGB", (1000, 20)).save(files["sliver"])
    return files
