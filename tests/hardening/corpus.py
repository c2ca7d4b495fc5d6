"""A corpus of hostile and malformed uploads, generated on the fly (nothing binary is committed).

Every :class:`Case` writes its files into a folder and says what must happen when they are ingested
in one call (CLI, Python API or the Data page alike):

- ``kept``: the ``source`` of every item that must be in the workspace afterwards, and no others;
- ``errors``: ``(source, substring of the reason)`` for every per-item error, and no others;
- ``check``: an optional extra check on the workspace (orientation of a thumbnail, exact caption text,
  a safe TSV export ...).

Each case carries good items next to its bad ones, so "every good item in the same upload is kept"
is checked everywhere. Every file name and every image is unique across the corpus (images are seeded
by a tag), so all cases can also be ingested together in one call without one case touching another.

Image, ZIP and encryption helpers come from ``tests/unit/test_ingest.py``; the code-carrying pickle
from ``tests/unit/test_encoders.py``.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from unit.test_ingest import _mark_encrypted, _png_with_size, image_bytes, make_zip, write

# What the Data page's st.file_uploader accepts (pages/data.py); other files cannot be uploaded there.
UPLOADABLE = {"png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff",
              "csv", "tsv", "parquet", "json", "jsonl", "xlsx", "zip", "txt"}

UNREADABLE = "unreadable or truncated image"
BOMB = "decompression bomb"
ESCAPES = "archive member escapes the archive"
FORMULAS = ["=cmd|' /C calc'!A0", "+SUM(1+1)*cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0",
            "@SUM(1+1)*cmd|' /C calc'!A0", "=HYPERLINK(\"http://evil.example\",\"click\")"]
# the file tests/unit/test_encoders.py's Evil payload writes, beside the case's files, if it is ever unpickled
PICKLE_MARKER_NAME = "jointscope_pwned"


def pickle_payload_ran(root: Path) -> list[Path]:
    """The markers a code-carrying pickle of the corpus wrote anywhere under ``root`` (none: it never ran)."""
    return sorted(root.rglob(PICKLE_MARKER_NAME))


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # image | archive | table | text | name | checkpoint
    build: Callable[[Path], list[Path]]
    kept: tuple[str, ...]
    errors: tuple[tuple[str, str], ...] = ()
    check: Callable | None = field(default=None, compare=False)  # check(ws, folder) -> None

    def files(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        return self.build(folder)


def uploadable(paths: list[Path]) -> bool:
    """Whether a browser could send these files through the Data page's uploader."""
    return all(p.is_file() and not p.is_symlink() and p.suffix.lower().lstrip(".") in UPLOADABLE for p in paths)


# ---- generated content ---------------------------------------------------------------------------
def seed_of(tag: str) -> int:
    return zlib.crc32(tag.encode())


def img(tag: str, fmt: str = "PNG", size=(16, 12)) -> bytes:
    """Noise image bytes, unique per ``tag``."""
    return image_bytes(fmt, size=size, seed=seed_of(tag))


def halves(size, first, second, mode="RGB") -> Image.Image:
    """An image whose left half is ``first`` and right half ``second``."""
    im = Image.new(mode, size, second)
    im.paste(first, (0, 0, size[0] // 2, size[1]))
    return im


def save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def zip_with(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    return make_zip(members, compression)


def patch_method(data: bytes, name: str, method: int) -> bytes:
    """Set the compression method of member ``name`` in its local and central headers."""
    out = bytearray(data)
    raw = name.encode()
    for sig, method_off, name_len_off, name_off in ((b"PK\x03\x04", 8, 26, 30), (b"PK\x01\x02", 10, 28, 46)):
        pos = out.find(sig)
        while pos != -1:
            n = struct.unpack_from("<H", out, pos + name_len_off)[0]
            if bytes(out[pos + name_off: pos + name_off + n]) == raw:
                struct.pack_into("<H", out, pos + method_off, method)
            pos = out.find(sig, pos + 4)
    return bytes(out)


def symlink_zip(link: str, target: str, good: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo(link)
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, target)
        for name, data in good.items():
            zf.writestr(name, data)
    return buf.getvalue()


def exif_image(tag: str, fmt: str, orientation: int) -> bytes:
    """A 40x20 image, left half red and right half blue, stored sideways with an EXIF orientation."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    im = halves((40, 20), (230, 20, 20), (20, 20, 230))
    im.putpixel((39, 19), tuple(seed_of(tag).to_bytes(4, "big")[:3]))  # unique bytes per tag
    return save(im, fmt, exif=exif.tobytes())


def _items(ws) -> pd.DataFrame:
    return ws.items.set_index("source")


def _thumb(ws, source: str) -> Image.Image:
    return Image.open(ws.abspath(_items(ws).loc[source, "thumb"])).convert("RGB")


def _near(px, colour, tol=60) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(px, colour))


RED, BLUE = (230, 20, 20), (20, 20, 230)


def upright(where_red: str):
    """Check: the thumbnail is portrait/landscape as displayed and red sits at ``where_red``."""
    def check(ws, folder, source):
        th = _thumb(ws, source)
        w, h = th.size
        row = _items(ws).loc[source]
        assert (int(row["width"]), int(row["height"])) == ((20, 40) if where_red in ("top", "bottom") else (40, 20))
        assert (h > w) == (where_red in ("top", "bottom")), (source, th.size)
        spots = {"top": (w // 2, 1), "bottom": (w // 2, h - 2), "left": (1, h // 2), "right": (w - 2, h // 2)}
        opposite = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}[where_red]
        assert _near(th.getpixel(spots[where_red]), RED), (source, th.getpixel(spots[where_red]))
        assert _near(th.getpixel(spots[opposite]), BLUE), (source, th.getpixel(spots[opposite]))
    return check


def thumb_colour(colour, tol=60):
    def check(ws, folder, source):
        th = _thumb(ws, source)
        px = th.getpixel((th.size[0] // 2, th.size[1] // 2))
        assert _near(px, colour, tol), (source, px, colour)
    return check


def thumb_not_flat(ws, folder, source):
    arr = np.asarray(_thumb(ws, source).convert("L"), dtype=np.float64)
    assert arr.max() - arr.min() > 100, (source, arr.min(), arr.max())  # the gradient survived


def texts_are(source_to_text: dict[str, str]):
    def check(ws, folder, source=None):
        items = _items(ws)
        for src, text in source_to_text.items():
            assert items.loc[src, "text"] == text, (src, items.loc[src, "text"], text)
    return check


def csv_text(rows: list[list[str]], quote_all: bool = False) -> str:
    import csv as _csv

    buf = io.StringIO()
    _csv.writer(buf, lineterminator="\n", quoting=_csv.QUOTE_ALL if quote_all else _csv.QUOTE_MINIMAL).writerows(rows)
    return buf.getvalue()


# ---- the cases -----------------------------------------------------------------------------------
CASES: list[Case] = []


def case(name, kind, kept, errors=(), check=None):
    """Register the decorated ``build(folder)`` as a case."""
    def deco(build):
        CASES.append(Case(name, kind, build, tuple(kept), tuple(errors), check))
        return build
    return deco


def one_image_case(name: str, bad_name: str, bad: Callable[[], bytes], reason: str) -> None:
    ok = f"{name}_ok.png"

    def build(folder: Path) -> list[Path]:
        return [write(folder / bad_name, bad()), write(folder / ok, img(ok))]
    CASES.append(Case(name, "image", build, (ok,), ((bad_name, reason),)))


# -- truncated and corrupt images of every supported type
for _fmt, _ext in (("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("GIF", "gif"), ("BMP", "bmp"),
                   ("TIFF", "tiff")):
    def _truncated(fmt=_fmt, ext=_ext) -> bytes:
        data = img(f"trunc_{ext}", fmt, size=(64, 48))
        return data[: len(data) * 2 // 3]

    def _garbage(fmt=_fmt, ext=_ext) -> bytes:
        data = img(f"corrupt_{ext}", fmt, size=(64, 48))
        if fmt == "BMP":  # raw pixels accept any bytes: break the header instead (7 bits per pixel)
            return data[:28] + struct.pack("<H", 7) + data[30:]
        head = {"PNG": 33, "JPEG": 20, "WEBP": 30, "GIF": 13, "TIFF": 8}[fmt]
        noise = np.random.default_rng(seed_of(ext)).integers(0, 256, len(data) - head, dtype=np.uint8)
        return data[:head] + noise.tobytes()  # a valid signature/header, then noise

    one_image_case(f"truncated_{_ext}", f"truncated.{_ext}", _truncated, UNREADABLE)
    one_image_case(f"corrupt_{_ext}", f"corrupt.{_ext}", _garbage, UNREADABLE)

one_image_case("text_named_png", "notes_as.png", lambda: b"just some text, not pixels\n" * 20, UNREADABLE)
one_image_case("zip_named_jpg", "archive_as.jpg", lambda: zip_with({"in.png": img("zip_named_jpg")}), UNREADABLE)
one_image_case("pdf_named_tif", "document_as.tif", lambda: b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n",
               UNREADABLE)
one_image_case("empty_image", "empty.webp", lambda: b"", "empty file")


def _stored_ext(source: str, expect: str):
    def check(ws, folder):
        assert _items(ws).loc[source, "image"].endswith("." + expect)
    return check


CASES.append(Case("png_named_jpg", "image",
                  lambda folder: [write(folder / "png_as.jpg", img("png_as")),
                                  write(folder / "png_named_jpg_ok.gif", img("png_named_jpg_ok", "GIF"))],
                  ("png_as.jpg", "png_named_jpg_ok.gif"), (), _stored_ext("png_as.jpg", "png")))
CASES.append(Case("jpeg_named_webp", "image",
                  lambda folder: [write(folder / "jpeg_as.webp", img("jpeg_as", "JPEG"))],
                  ("jpeg_as.webp",), (), _stored_ext("jpeg_as.webp", "jpg")))

# -- decompression bombs: refused from the declared size, before any pixel is decoded
one_image_case("bomb_png_header", "bomb_header.png", lambda: _png_with_size(30000, 30000),
               "30000x30000 = 900 MP, over the 64 MP limit (decompression bomb?)")


def _real_png_bomb() -> bytes:
    """A genuine 1-bit 20000x20000 PNG (400 MP of zeros) in ~50 KB."""
    w = h = 20000
    raw = zlib.compressobj(9)
    row = b"\0" * (1 + w // 8)
    body = b"".join(raw.compress(row) for _ in range(h)) + raw.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


one_image_case("bomb_png_real", "bomb_real.png", _real_png_bomb, "20000x20000 = 400 MP, over the 64 MP limit")


def _gif_huge_screen() -> bytes:
    data = bytearray(save(Image.new("P", (8, 8)), "GIF"))
    struct.pack_into("<HH", data, 6, 30000, 30000)  # logical screen 30000x30000
    return bytes(data)


one_image_case("bomb_gif_screen", "bomb_screen.gif", _gif_huge_screen, BOMB)


def _bmp_huge() -> bytes:
    data = bytearray(save(Image.new("RGB", (4, 4)), "BMP"))
    struct.pack_into("<ii", data, 18, 40000, 40000)
    return bytes(data)


one_image_case("bomb_bmp_header", "bomb_header.bmp", _bmp_huge, BOMB)


def _tiff_huge() -> bytes:
    return _patch_tiff_size(save(Image.new("L", (4, 4)), "TIFF"), 50000, 50000)


def _patch_tiff_size(data: bytes, w: int, h: int) -> bytes:
    """Rewrite ImageWidth/ImageLength in a little-endian TIFF's first IFD (as LONG values)."""
    out = bytearray(data)
    assert out[:2] == b"II"
    ifd = struct.unpack_from("<I", out, 4)[0]
    n = struct.unpack_from("<H", out, ifd)[0]
    for k in range(n):
        off = ifd + 2 + 12 * k
        tag = struct.unpack_from("<H", out, off)[0]
        if tag in (256, 257):
            struct.pack_into("<HHI", out, off + 2, 4, 1, 0)  # type LONG, count 1, clear value
            struct.pack_into("<I", out, off + 8, w if tag == 256 else h)
    return bytes(out)


one_image_case("bomb_tiff_header", "bomb_header.tiff", _tiff_huge, BOMB)


# -- animated and many-frame GIFs: the first frame counts, the file is kept as uploaded
def _animated_gif(tag: str, n: int, size=(16, 16)) -> bytes:
    rng = np.random.default_rng(seed_of(tag))
    frames = [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert("P")
              for _ in range(n)]
    frames[0] = Image.new("RGB", size, RED).convert("P")
    return save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=20, loop=0)


CASES.append(Case("gif_animated", "image", lambda f: [write(f / "animated.gif", _animated_gif("anim", 12))],
                  ("animated.gif",), (), lambda ws, folder: thumb_colour(RED)(ws, folder, "animated.gif")))
CASES.append(Case("gif_2000_frames", "image",
                  lambda f: [write(f / "many_frames.gif", _animated_gif("many", 2000, (8, 8)))],
                  ("many_frames.gif",), (), lambda ws, folder: thumb_colour(RED)(ws, folder, "many_frames.gif")))

# -- EXIF orientation: stored as uploaded, thumbnail and size upright
for _fmt, _ext, _orient, _red in (("JPEG", "jpg", 6, "top"), ("PNG", "png", 3, "right"), ("WEBP", "webp", 8, "bottom"),
                                  ("TIFF", "tiff", 6, "top")):
    _name = f"exif_rotated_{_ext}"
    CASES.append(Case(
        _name, "image",
        (lambda fmt, ext, o, n: lambda f: [write(f / f"{n}.{ext}", exif_image(n, fmt, o))])(_fmt, _ext, _orient, _name),
        (f"{_name}.{_ext}",), (),
        (lambda src, red: lambda ws, folder: upright(red)(ws, folder, src))(f"{_name}.{_ext}", _red)))


# -- unusual pixel formats
def _gradient16() -> Image.Image:
    arr = (np.linspace(0, 65535, 32 * 24).reshape(24, 32)).astype(np.uint16)
    return Image.fromarray(arr)


for _name, _file, _make in (
    ("png_16bit_grey", "grey16.png", lambda: save(_gradient16(), "PNG")),
    ("tiff_16bit_grey", "grey16.tiff", lambda: save(_gradient16(), "TIFF")),
    ("png_1bit", "bilevel.png", lambda: save(Image.fromarray(np.asarray(_gradient16()) > 32767), "PNG")),
):
    CASES.append(Case(_name, "image", (lambda fl, mk: lambda f: [write(f / fl, mk())])(_file, _make), (_file,), (),
                      (lambda fl: lambda ws, folder: thumb_not_flat(ws, folder, fl))(_file)))

for _name, _file, _make, _colour in (
    ("jpeg_cmyk", "cmyk.jpg", lambda: save(Image.new("CMYK", (24, 16), (0, 255, 255, 0)), "JPEG"), RED),
    ("tiff_cmyk", "cmyk.tiff", lambda: save(Image.new("CMYK", (24, 16), (255, 255, 0, 0)), "TIFF"), BLUE),
    ("png_palette_transparent", "palette_alpha.png",
     lambda: save(Image.new("P", (24, 16), 0), "PNG", transparency=0), (255, 255, 255)),
    ("gif_palette", "palette.gif", lambda: save(Image.new("RGB", (24, 16), BLUE).convert("P"), "GIF"), BLUE),
    ("bmp_palette", "palette.bmp", lambda: save(Image.new("RGB", (24, 16), RED).convert("P"), "BMP"), RED),
    ("png_grey_alpha", "grey_alpha.png", lambda: save(Image.new("LA", (24, 16), (0, 0)), "PNG"), (255, 255, 255)),
):
    CASES.append(Case(_name, "image", (lambda fl, mk: lambda f: [write(f / fl, mk())])(_file, _make), (_file,), (),
                      (lambda fl, col: lambda ws, folder: thumb_colour(col)(ws, folder, fl))(_file, _colour)))


# -- archives
def archive_case(name: str, members: Callable[[], bytes], kept_members: list[str], errors: list[tuple[str, str]],
                 outside_ok: bool = False) -> None:
    """A ZIP ``<name>.zip``; ``kept_members`` / error sources are member paths (``:``-joined for nesting)."""
    zname = f"{name}.zip"
    ok = f"{name}_ok.png"

    def build(folder: Path) -> list[Path]:
        paths = [write(folder / zname, members())]
        if outside_ok:
            paths.append(write(folder / ok, img(ok)))
        return paths
    kept = [f"{zname}:{m}" for m in kept_members] + ([ok] if outside_ok else [])
    errs = [(f"{zname}:{m}" if m else zname, r) for m, r in errors]
    CASES.append(Case(name, "archive", build, tuple(kept), tuple(errs)))


archive_case("zip_slip_dotdot", lambda: zip_with({"../../evil_slip.png": img("slip1"), "ok.png": img("slip1ok")}),
             ["ok.png"], [("../../evil_slip.png", ESCAPES)])
archive_case("zip_slip_inner", lambda: zip_with({"a/b/../../../evil_inner.png": img("slip2"),
                                                 "a/ok.png": img("slip2ok")}),
             ["a/ok.png"], [("a/b/../../../evil_inner.png", ESCAPES)])
archive_case("zip_slip_backslash", lambda: zip_with({"..\\..\\evil_win.png": img("slip3"), "ok.png": img("slip3ok")}),
             ["ok.png"], [("..\\..\\evil_win.png", ESCAPES)])
archive_case("zip_absolute_posix", lambda: zip_with({"/tmp/evil_abs.png": img("abs1"), "ok.png": img("abs1ok")}),
             ["ok.png"], [("/tmp/evil_abs.png", ESCAPES)])
archive_case("zip_absolute_drive", lambda: zip_with({"C:/evil_drive.png": img("abs2"), "ok.png": img("abs2ok")}),
             ["ok.png"], [("C:/evil_drive.png", ESCAPES)])
archive_case("zip_symlink_file", lambda: symlink_zip("passwd.png", "/etc/passwd", {"ok.png": img("sym1ok")}),
             ["ok.png"], [("passwd.png", "symbolic link in the archive")])
archive_case("zip_symlink_dir", lambda: symlink_zip("etc", "/etc", {"etc/hosts.txt": b"a line that is fine\n",
                                                                    "ok.png": img("sym2ok")}),
             ["ok.png", "etc/hosts.txt line 1"], [("etc", "symbolic link in the archive")])
archive_case("zip_encrypted_member",
             lambda: _mark_encrypted(zip_with({"secret.png": img("enc1"), "ok.png": img("enc1ok")}), "secret.png"),
             ["ok.png"], [("secret.png", "encrypted archive member")])
archive_case("zip_all_encrypted",
             lambda: _mark_encrypted(_mark_encrypted(zip_with({"s1.png": img("enc2a"), "s2.txt": b"hidden text\n"}),
                                                     "s1.png"), "s2.txt"),
             [], [("s1.png", "encrypted archive member"), ("s2.txt", "encrypted archive member")], outside_ok=True)
archive_case("zip_unknown_method", lambda: patch_method(zip_with({"aes.png": img("m99"), "ok.png": img("m99ok")}),
                                                        "aes.png", 99),
             ["ok.png"], [("aes.png", "unsupported compression method")])


def _corrupt_member() -> bytes:
    data = bytearray(zip_with({"bad.txt": b"a caption that will be damaged " * 40, "ok.png": img("crc_ok")}))
    pos = data.find(b"PK\x03\x04") + 30 + len("bad.txt") + 5
    data[pos:pos + 8] = b"\xff" * 8
    return bytes(data)


archive_case("zip_corrupt_member", _corrupt_member, ["ok.png"], [("bad.txt", "corrupt archive member")])
archive_case("zip_truncated", lambda: zip_with({"a.png": img("ztrunc")})[:-30], [],
             [("", "not a valid ZIP archive")], outside_ok=True)
archive_case("zip_not_a_zip", lambda: b"PK\x03\x04 this only starts like a zip", [],
             [("", "not a valid ZIP archive")], outside_ok=True)
archive_case("zip_empty", lambda: b"", [], [("", "empty file")], outside_ok=True)
archive_case("zip_bomb_ratio", lambda: zip_with({"zeros.txt": b"\0" * (20 * 2**20), "a.png": img("bomb_a")}),
             [], [("", "zip bomb: archive expands")], outside_ok=True)


def _member_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("zeros.csv"), b"\0" * (2 * 2**20), compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(zipfile.ZipInfo("ok.png"), img("mbomb_ok", size=(96, 96)), compress_type=zipfile.ZIP_STORED)
    return buf.getvalue()


archive_case("zip_bomb_member", _member_bomb, ["ok.png"], [("zeros.csv", "zip bomb: member expands")])
archive_case("zip_bomb_nested", lambda: zip_with({"inner.zip": zip_with({"z.txt": b"\0" * (8 * 2**20)}),
                                                  "ok.png": img("nbomb_ok")}, zipfile.ZIP_STORED),
             ["ok.png"], [("inner.zip", "zip bomb: archive expands")])


def _size_liar() -> bytes:
    data = bytearray(zip_with({"liar.txt": b"hello world, a caption\n" * 200, "ok.png": img("liar_ok")}))
    pos = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, pos + 24, 12)  # central directory: "12 bytes uncompressed"
    return bytes(data)


archive_case("zip_declared_size_lie", _size_liar, ["ok.png"], [("liar.txt", "")])
archive_case("zip_nested_ok", lambda: zip_with({"inner.zip": zip_with({"in.png": img("nest_in")}),
                                                "top.png": img("nest_top")}),
             ["inner.zip:in.png", "top.png"], [])
archive_case("zip_nested_too_deep",
             lambda: zip_with({"l2.zip": zip_with({"l3.zip": zip_with({"deep.png": img("deep3")}),
                                                   "mid.png": img("deep2")}), "top.png": img("deep1")}),
             ["l2.zip:mid.png", "top.png"], [("l2.zip:l3.zip", "nested too deep")])
archive_case("zip_bzip2_lzma", lambda: _mixed_methods(), ["b.png", "l.png"], [])
archive_case("zip_document_inside", lambda: zip_with({"report.docx": zip_with({"word/document.xml": b"<w/>"}),
                                                      "ok.png": img("docx_ok")}),
             ["ok.png"], [("report.docx", "unsupported file type '.docx'")])


def _mixed_methods() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("b.png", img("bz2"), compress_type=zipfile.ZIP_BZIP2)
        zf.writestr("l.png", img("lzma"), compress_type=zipfile.ZIP_LZMA)
    return buf.getvalue()


# -- tables
def table_case(name: str, file: str, content: Callable[[], bytes | str], kept: list[str],
               errors: list[tuple[str, str]], check=None) -> None:
    CASES.append(Case(name, "table", lambda f: [write(f / file, content())], tuple(kept), tuple(errors), check))


table_case("csv_utf8_bom", "bom.csv", lambda: "\ufeffcaption,label\na dog on the grass,dog\n".encode(),
           ["bom.csv row 1"], [], lambda ws, folder: _meta_is(ws, "bom.csv row 1", "label", "dog"))
table_case("csv_utf16", "utf16.csv", lambda: "caption,label\nune tête de chat,chat\n".encode("utf-16"),
           ["utf16.csv row 1"], [], texts_are({"utf16.csv row 1": "une tête de chat"}))
table_case("csv_mixed_encodings", "mixed_enc.csv",
           lambda: "caption\ncafé au lait\n".encode() + "crème brûlée\n".encode("latin-1"),
           [], [("mixed_enc.csv", "not valid UTF-8 text at byte 24")])
table_case("csv_ragged_rows", "ragged.csv",
           lambda: "caption,label\na cat on a mat,cat\ntoo,many,fields,here\na dog outside,dog\nlonely\n",
           ["ragged.csv row 1", "ragged.csv row 3"],
           [("ragged.csv row 2", "has 4 fields, expected 2"), ("ragged.csv row 4", "has 1 fields, expected 2")])
_QUOTED = ["line one\nline two of the same caption", 'he said "hello", then left', "comma, inside, quotes"]
table_case("csv_newlines_quotes", "quoted.csv", lambda: csv_text([["caption", "n"]] + [[t, str(i)] for i, t in
                                                                                      enumerate(_QUOTED)]),
           [f"quoted.csv row {i}" for i in (1, 2, 3)], [],
           texts_are({f"quoted.csv row {i + 1}": t for i, t in enumerate(_QUOTED)}))
table_case("csv_unterminated_quote", "open_quote.csv",
           lambda: 'caption,n\nfirst caption,1\n"an opening quote that never closes,2\nthird caption,3\n'
                   "fourth caption,4\n",
           ["open_quote.csv row 1", "open_quote.csv row 3", "open_quote.csv row 4"],
           [("open_quote.csv row 2", "unterminated quoted field: a '\"' on line 3 is never closed")],
           texts_are({"open_quote.csv row 3": "third caption", "open_quote.csv row 4": "fourth caption"}))
table_case("csv_nul_bytes", "nul.csv", lambda: b"caption,n\nfine caption,1\nnul\x00inside,2\n",
           ["nul.csv row 1", "nul.csv row 2"], [])
table_case("csv_binary_garbage", "garbage.csv",
           lambda: np.random.default_rng(7).integers(0, 256, 4000, dtype=np.uint8).tobytes(),
           [], [("garbage.csv", "not valid UTF-8")])
table_case("csv_header_only", "header_only.csv", lambda: "caption,label\n", [],
           [("header_only.csv", "table has no data rows")])
table_case("csv_duplicate_headers", "dup_header.csv", lambda: "caption,caption,label\nfirst one,second one,x\n",
           ["dup_header.csv row 1"], [])
table_case("csv_huge_caption", "huge_caption.csv",
           lambda: "caption,n\nshort and fine,1\n" + "w" * 50_000 + ",2\nalso fine,3\n",
           ["huge_caption.csv row 1", "huge_caption.csv row 3"],  # row 2 is not kept as a bare numeric row
           [("huge_caption.csv row 2", "50,000 characters, over the 20,000 limit")])
table_case("csv_huge_metadata", "huge_meta.csv", lambda: "caption,blob\na normal caption," + "m" * 1_000_000 + "\n",
           ["huge_meta.csv row 1"], [], lambda ws, folder: _meta_len(ws, "huge_meta.csv row 1", "blob", 1_000_000))
table_case("csv_many_columns", "wide.csv",
           lambda: ",".join(["caption"] + [f"c{i}x" for i in range(1000)]) + "\nwide row caption," + ",".join(
               "v" for _ in range(1000)) + "\n",
           ["wide.csv row 1"], [])


def _formula_csv() -> str:
    rows = [["caption", "label", "emb_0", "emb_1", "emb_2"]]  # a user "label" column, as Projector's own
    for i, f in enumerate(FORMULAS):
        rows.append([f, f"@note{i}", f"{0.1 * (i + 1):.3f}", f"{0.2 * i:.3f}", "0.5"])
    rows.append(["\t=tab led", "\r=cr led", "1", "1", "1"])
    return csv_text(rows, quote_all=True)


def _formula_check(ws, folder):
    import contextlib
    import csv as _csv

    from core.cli import main

    items = _items(ws)
    assert set(FORMULAS) <= set(items["text"])  # stored verbatim: the data is the user's
    out = folder / "export_tsv"
    with contextlib.redirect_stdout(io.StringIO()) as so:
        rc = main(["export", str(ws.path), "--model", "precomputed:emb", "--out", str(out), "--format", "tsv",
                   "--json"])
    assert rc == 0 and json.loads(so.getvalue())["n"] == len(FORMULAS) + 1
    lines = (out / "metadata.tsv").read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == len(FORMULAS) + 3  # header + rows + final newline
    cells = [c for line in lines[1:-1] for c in line.split("\t")]
    assert all(not c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in cells), cells
    header = lines[0].split("\t")
    assert header[:4] == ["label", "id", "modality", "source"] and "meta_label" in header
    labels = [line.split("\t")[0] for line in lines[1:-1]]
    assert {"'" + f.replace('"', '\\"') for f in FORMULAS} <= set(labels), labels
    rows = list(_csv.reader((out / "vectors.tsv").read_text().splitlines(), delimiter="\t"))
    assert len(rows) == len(FORMULAS) + 1 and all(len(r) == 3 for r in rows)


table_case("csv_formula_injection", "formulas.csv", _formula_csv,
           [f"formulas.csv row {i}" for i in range(1, len(FORMULAS) + 2)], [], _formula_check)
table_case("xlsx_not_a_zip", "not_zip.xlsx", lambda: "caption\nthis is csv text pretending\n", [],
           [("not_zip.xlsx", "not a valid XLSX workbook")])
table_case("xlsx_zip_not_workbook", "not_book.xlsx", lambda: zip_with({"hello.txt": b"hello"}), [],
           [("not_book.xlsx", "not a valid XLSX workbook")])
table_case("xlsx_bomb", "bomb.xlsx", lambda: zip_with({"xl/worksheets/sheet1.xml": b" " * (8 * 2**20),
                                                       "[Content_Types].xml": b"<Types/>"}), [],
           [("bomb.xlsx", "not a safe XLSX workbook (zip bomb")])
table_case("json_object", "object.json", lambda: json.dumps({"caption": ["a", "b"]}), [],
           [("object.json", "expected a JSON array of objects (one object per row), got a JSON object")])
table_case("json_string", "string.json", lambda: json.dumps("[{\"caption\": \"x\"}]"), [],
           [("string.json", "got a JSON string")])
table_case("json_broken", "broken.json", lambda: '[{"caption": "unterminated', [],
           [("broken.json", "not valid JSON")])
table_case("json_deeply_nested", "deep.json", lambda: "[" * 100_000 + "]" * 100_000, [],
           [("deep.json", "nested too deeply")])
table_case("jsonl_deeply_nested_line", "deep_line.jsonl",
           lambda: ('{"text": "shallow line one"}\n' + "[" * 100_000 + "]" * 100_000
                    + '\n{"text": "shallow line three"}\n'),
           ["deep_line.jsonl row 1", "deep_line.jsonl row 3"], [("deep_line.jsonl line 2", "nested too deeply")])
table_case("json_mixed_items", "mixed_items.json",
           lambda: json.dumps([{"caption": "a fine day out"}, 3, "text", None, [1], {"caption": "a rainy day in"}]),
           ["mixed_items.json row 1", "mixed_items.json row 6"],
           [("mixed_items.json row 2", "got a JSON number"), ("mixed_items.json row 3", "got a JSON string"),
            ("mixed_items.json row 4", "got a JSON null"), ("mixed_items.json row 5", "got a JSON array")])
table_case("json_nested_value", "nested_value.json",
           lambda: '[{"caption": "kept caption one", "extra": ' + "[" * 900 + "]" * 900 + '},'
                   ' {"caption": "kept caption two", "extra": 1}]',
           ["nested_value.json row 1", "nested_value.json row 2"], [])
table_case("jsonl_bad_lines", "lines.jsonl",
           lambda: '{"text": "one two three"}\n{oops\n[1, 2]\n\n{"text": "four five"}\n',
           ["lines.jsonl row 1", "lines.jsonl row 5"],
           [("lines.jsonl line 2", "not valid JSON"), ("lines.jsonl line 3", "expected a JSON object")])
table_case("parquet_corrupt", "corrupt.parquet", lambda: b"PAR1" + b"\x00garbage" * 50 + b"PAR1", [],
           [("corrupt.parquet", "not a valid Parquet file")])


def _parquet_vectors() -> bytes:
    df = pd.DataFrame({
        "caption": ["vec row one", "vec row two nan", "vec row three inf", "vec row four"],
        "embedding": [[0.1, 0.2, 0.3], [0.1, float("nan"), 0.3], [float("inf"), 0.0, 0.0], [0.4, 0.5, 0.6]],
    })
    buf = io.BytesIO()
    df.to_parquet(buf)
    return buf.getvalue()


table_case("parquet_nan_inf_vectors", "vectors.parquet", _parquet_vectors,
           ["vectors.parquet row 1", "vectors.parquet row 4"],
           [("vectors.parquet row 2", "vector 'embedding' has NaN/inf values"),
            ("vectors.parquet row 3", "vector 'embedding' has NaN/inf values")])
table_case("csv_vector_strings_bad", "vec_strings.csv",
           lambda: 'name,vec\nalpha,"[0.1, 0.2, 0.3]"\nbeta,"[1, inf, 3]"\ngamma,"[1, 2]"\n'
                   'delta,"[1e39, 0, 0]"\nepsilon,"[1, 2, oops]"\nzeta,"[4, 5, 6]"\n',
           ["vec_strings.csv row 1", "vec_strings.csv row 6"],
           [("vec_strings.csv row 2", "NaN/inf"), ("vec_strings.csv row 3", "has 2 values, expected 3"),
            ("vec_strings.csv row 4", "NaN/inf"), ("vec_strings.csv row 5", "not a list of numbers")])
table_case("jsonl_vector_wrong_length", "vec_len.jsonl",
           lambda: "\n".join(json.dumps({"caption": f"length case {i}", "vec4": [float(i)] * (3 if i == 2 else 4)})
                             for i in range(4)),
           ["vec_len.jsonl row 1", "vec_len.jsonl row 2", "vec_len.jsonl row 4"],
           [("vec_len.jsonl row 3", "vector 'vec4' has 3 values, expected 4")])
table_case("json_nan_literals", "nan_literals.json",
           lambda: '[{"caption": "nan row", "v0": NaN, "v1": 1}, {"caption": "ok row", "v0": 2, "v1": 1},'
                   ' {"caption": "big row", "v0": 1e400, "v1": 1}]',
           ["nan_literals.json row 2"],  # v0, v1 form one vector 'v'
           [("nan_literals.json row 1", "vector 'v' has NaN/inf values"),
            ("nan_literals.json row 3", "vector 'v' has NaN/inf values")])
table_case("csv_image_refs_escape", "refs.csv",
           lambda: "filepath,caption\n../../etc/passwd.png,escape one\n/etc/hostname.png,escape two\n"
                   "C:\\Windows\\win.png,escape three\n",
           ["refs.csv row 1", "refs.csv row 2", "refs.csv row 3"],
           [("refs.csv row 1", "not found in the upload"), ("refs.csv row 2", "not found in the upload"),
            ("refs.csv row 3", "not found in the upload")])


def _meta_is(ws, source, col, value):
    assert _items(ws).loc[source, col] == value


def _meta_len(ws, source, col, n):
    assert len(_items(ws).loc[source, col]) == n


@case("csv_ref_outside_folder", "table", kept=["refs_out/refs_out.csv row 1"],
      errors=[("refs_out/refs_out.csv row 1", "image '../outside_secret.png' not found in the upload")])
def _ref_outside(folder):
    """A table may find images beside it, never outside its own folder (the secret is not uploaded)."""
    write(folder / "outside_secret.png", img("outside_secret"))
    return [write(folder / "refs_out" / "refs_out.csv", "filepath,caption\n../outside_secret.png,a secret\n").parent]


@case("folder_symlinks_out", "archive", kept=["links/fine.png"],
      errors=[("links/to_file.png", "symbolic link to a file outside"),
              ("links/to_dir", "symbolic link to a folder outside")])
def _folder_symlinks(folder):
    secret = write(folder / "secret_dir" / "secret.png", img("sym_secret"))
    root = folder / "links"
    write(root / "fine.png", img("sym_fine"))
    os.symlink(secret, root / "to_file.png")
    os.symlink(secret.parent, root / "to_dir")
    return [root]


# -- texts
CASES.append(Case("txt_binary", "text", lambda f: [write(f / "binary.txt", b"\x89PNG\r\n\x1a\n\xff\xfe" * 50),
                                                  write(f / "binary_ok.txt", "a readable line\n")],
                  ("binary_ok.txt line 1",), (("binary.txt", "not valid UTF-8"),)))
CASES.append(Case("txt_huge_line", "text",
                  lambda f: [write(f / "long_lines.txt", "short one\n" + "x" * 30_000 + "\nlast\n")],
                  ("long_lines.txt line 1", "long_lines.txt line 3"),
                  (("long_lines.txt line 2", "30,000 characters, over the 20,000 limit"),)))
CASES.append(Case("txt_whitespace_only", "text", lambda f: [write(f / "blank.txt", " \n\t\n\r\n"),
                                                           write(f / "blank_ok.txt", "not blank\n")],
                  ("blank_ok.txt line 1",), (("blank.txt", "no text lines"),)))
CASES.append(Case("empty_files", "text", lambda f: [write(f / n, b"") for n in
                                                    ("empty.png", "empty.csv", "empty.json", "empty.jsonl",
                                                     "empty.xlsx", "empty.parquet", "empty.txt")]
                  + [write(f / "empty_ok.txt", "something\n")],
                  ("empty_ok.txt line 1",),
                  tuple((n, "empty file") for n in ("empty.png", "empty.csv", "empty.json", "empty.jsonl",
                                                    "empty.xlsx", "empty.parquet", "empty.txt"))))

# -- HTML / script / Markdown in captions and file names: stored verbatim (rendering is tested in the browser)
XSS = ["<img src=x onerror=window.__xss=1>", "<script>window.__xss=1</script>",
       "[click](javascript:window.__xss=1)", "**bold** _it_ `code`"]
_HTML_NAME = "<img src=x onerror=alert(1)>.png"
table_case("html_in_captions", "html_caps.csv", lambda: csv_text([["caption"]] + [[x] for x in XSS]),
           [f"html_caps.csv row {i}" for i in range(1, len(XSS) + 1)], [],
           texts_are({f"html_caps.csv row {i + 1}": x for i, x in enumerate(XSS)}))
CASES.append(Case("html_in_file_name", "name", lambda f: [write(f / _HTML_NAME, img("html_name"))],
                  (_HTML_NAME,), ()))
CASES.append(Case("html_in_member_name", "name",
                  lambda f: [write(f / "html_members.zip", zip_with({"<script>alert(1)</script>.png": img("html_mem"),
                                                                     "[x](javascript:alert(1)).txt": b"a line\n"}))],
                  ("html_members.zip:<script>alert(1)</script>.png",
                   "html_members.zip:[x](javascript:alert(1)).txt line 1"),
                  ()))
CASES.append(Case("control_chars_in_name", "name",
                  lambda f: [write(f / "rtl\u202egnp.exe.png", img("rtl")),
                             write(f / "tab\tand\nnewline.png", img("nl"))],
                  ("rtl\u202egnp.exe.png", "tab\tand\nnewline.png"), ()))


# -- checkpoints: never unpickled
def _evil_checkpoint(folder: Path, name: str) -> Path:
    """A torch checkpoint whose pickle writes ``folder/PICKLE_MARKER_NAME`` if ever unpickled."""
    import torch
    from unit.test_encoders import Evil  # imported here: it pulls in torch

    path = folder / name
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Evil(folder / PICKLE_MARKER_NAME)}, path)
    return path


def _evil_pickle(folder: Path) -> bytes:
    from unit.test_encoders import Evil

    return pickle.dumps(Evil(folder / PICKLE_MARKER_NAME))


CASES.append(Case("pickle_checkpoint_upload", "checkpoint",
                  lambda f: [_evil_checkpoint(f, "model.pt"), _evil_checkpoint(f, "pytorch_model.bin"),
                             write(f / "payload.pkl", _evil_pickle(f)),
                             write(f / "pickle_ok.png", img("pickle_ok"))],
                  ("pickle_ok.png",),
                  (("model.pt", "never opened as data"), ("pytorch_model.bin", "a PyTorch checkpoint (pickle)"),
                   ("payload.pkl", "never opened as data"))))  # the tests look for PICKLE_MARKER_NAME after
