"""Tiny image files whose headers declare enormous sizes (decompression bombs), one per format."""

from __future__ import annotations

import struct
import zlib


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png(width: int, height: int) -> bytes:
    """A complete-looking 8-bit gray PNG (IHDR, a few bytes of IDAT, IEND): ~70 bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def bmp(width: int, height: int) -> bytes:
    """An 8-bit BMP header with its palette and 16 bytes of pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, 0, 2835, 2835, 256, 0)
    offset = 14 + 40 + 1024
    return struct.pack("<2sIHHI", b"BM", offset + 16, 0, 0, offset) + info + bytes(1024) + bytes(16)


def jpeg(width: int, height: int) -> bytes:
    """SOI, a baseline SOF0 frame header, EOI: 17 bytes (JPEG sides stop at 65535)."""
    frame = struct.pack(">BHHBBBB", 8, height, width, 1, 1, 0x11, 0)
    return b"\xff\xd8\xff\xc0" + struct.pack(">H", len(frame) + 2) + frame + b"\xff\xd9"


def tiff(width: int, height: int) -> bytes:
    """A classic little-endian TIFF with one 16-byte strip that claims ``width x height`` 8-bit pixels."""
    entries = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8 + 2 + 12 * 9 + 4),
        (277, 3, 1),
        (278, 4, height),
        (279, 4, 16),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + bytes(16)


BOMBS = {"png": png, "bmp": bmp, "jpg": jpeg, "tif": tiff}
