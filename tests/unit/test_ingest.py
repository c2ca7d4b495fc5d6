"""Tests for core.ingest: every bad-input class keeps the good items and names the bad one."""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.ingest import (
    ROLES,
    Candidate,
    IngestError,
    Limits,
    ScanResult,
    detect_roles,
    inspect_table,
    read_table,
    scan,
)

# --------------------------------------------------------------------------------------------
# helpers (generated data only; nothing binary is committed)


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (16, 12), seed: int = 0) -> bytes:
    """Noise image bytes in ``fmt`` (noise so that truncation really cuts pixel data)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def make_zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buf.getvalue()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def errors_for(result: ScanResult, needle: str) -> list[tuple[str, str]]:
    return [e for e in result.errors if needle in e[0]]


def by_source(result: ScanResult) -> dict[str, Candidate]:
    return {c.source: c for c in result.candidates}


@pytest.fixture()
def good_png(tmp_path: Path) -> Path:
    return write(tmp_path / "good.png", image_bytes("PNG"))


# --------------------------------------------------------------------------------------------
# images


@pytest.mark.parametrize(
    ("fmt", "ext", "expected"),
    [("PNG", "png", "png"), ("JPEG", "jpg", "jpg"), ("GIF", "gif", "gif"), ("WEBP", "webp", "webp"),
     ("BMP", "bmp", "bmp"), ("TIFF", "tif", "tiff")],
)
def test_every_image_format_is_decoded(tmp_path: Path, fmt: str, ext: str, expected: str) -> None:
    data = image_bytes(fmt)
    res = scan([write(tmp_path / f"x.{ext}", data)])
    assert res.errors == []
    (cand,) = res.candidates
    assert cand.modality == "image" and cand.image_ext == expected
    assert cand.read_image() == data and cand.source == f"x.{ext}" and cand.pair_key is None
    assert cand.image_bytes is None, "a file on disk is read again when stored, not held after the scan"


def test_truncated_image_is_an_error_and_good_image_kept(tmp_path: Path, good_png: Path) -> None:
    data = image_bytes("PNG", size=(64, 64))
    bad = write(tmp_path / "cut.png", data[: len(data) // 2])
    res = scan([bad, good_png])
    assert [c.source for c in res.candidates] == ["good.png"]
    ((src, reason),) = res.errors
    assert src == "cut.png" and reason.startswith("unreadable or truncated image")


def test_truncated_jpeg(tmp_path: Path, good_png: Path) -> None:
    data = image_bytes("JPEG", size=(64, 64))
    res = scan([write(tmp_path / "cut.jpg", data[: len(data) // 2]), good_png])
    assert len(res.candidates) == 1
    assert res.errors[0][0] == "cut.jpg" and "truncated" in res.errors[0][1]


def test_corrupt_bytes_with_image_extension(tmp_path: Path, good_png: Path) -> None:
    bad = write(tmp_path / "fake.png", b"this is not an image at all" * 10)
    res = scan([good_png, bad])
    assert [c.source for c in res.candidates] == ["good.png"]
    assert res.errors == [("fake.png", res.errors[0][1])]
    assert "unreadable or truncated image" in res.errors[0][1]


def test_wrong_extension_is_detected_from_content(tmp_path: Path) -> None:
    res = scan([write(tmp_path / "really_png.jpg", image_bytes("PNG"))])
    assert res.errors == []
    assert res.candidates[0].image_ext == "png"


def _png_with_size(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims ``width`` x ``height`` (CRC fixed up)."""
    data = bytearray(image_bytes("PNG", size=(1, 1)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def test_decompression_bomb_header(tmp_path: Path, good_png: Path) -> None:
    bomb = write(tmp_path / "bomb.png", _png_with_size(20000, 20000))
    res = scan([bomb, good_png])
    assert [c.source for c in res.candidates] == ["good.png"]
    ((src, reason),) = res.errors
    assert src == "bomb.png"
    assert "20000x20000 = 400 MP, over the 64 MP limit (decompression bomb?)" in reason


def test_image_over_pixel_limit_checked_before_load(tmp_path: Path) -> None:
    big = write(tmp_path / "big.png", image_bytes("PNG", size=(20, 20)))
    small = write(tmp_path / "small.png", image_bytes("PNG", size=(5, 5)))
    res = scan([big, small], limits=Limits(max_image_pixels=100))
    assert [c.source for c in res.candidates] == ["small.png"]
    assert res.errors[0][0] == "big.png" and "20x20" in res.errors[0][1]
    assert "decompression bomb" in res.errors[0][1]


def test_gif_first_frame_counts_and_bytes_are_original(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "green", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    res = scan([write(tmp_path / "anim.gif", buf.getvalue())])
    assert res.errors == []
    (cand,) = res.candidates
    assert cand.image_ext == "gif" and cand.read_image() == buf.getvalue()
    first = Image.open(io.BytesIO(cand.read_image())).convert("RGB")
    assert first.getpixel((0, 0)) == (255, 0, 0)


def test_empty_file(tmp_path: Path, good_png: Path) -> None:
    res = scan([write(tmp_path / "empty.png", b""), write(tmp_path / "empty.csv", b""), good_png])
    assert [c.source for c in res.candidates] == ["good.png"]
    assert res.errors == [("empty.png", "empty file"), ("empty.csv", "empty file")]


def test_unsupported_extension_and_missing_path(tmp_path: Path, good_png: Path) -> None:
    res = scan([write(tmp_path / "notes.xyz", b"hello"), tmp_path / "nope.png", good_png])
    assert [c.source for c in res.candidates] == ["good.png"]
    (src, reason), (src2, reason2) = res.errors
    assert src == "notes.xyz" and reason.startswith("unsupported file type '.xyz' (supported: images")
    assert ".txt" in reason and ".zip" in reason and ".csv" in reason
    assert src2.endswith("nope.png") and "not found" in reason2


# --------------------------------------------------------------------------------------------
# texts


def test_pasted_texts(tmp_path: Path) -> None:
    res = scan([], texts=["  a red car  ", "", "two\nlines\n\n", "   "])
    assert [(c.source, c.text, c.modality) for c in res.candidates] == [
        ("pasted line 1", "a red car", "text"),
        ("pasted line 3", "two", "text"),
        ("pasted line 4", "lines", "text"),
    ]
    assert res.errors == []


def test_txt_lines_with_bom_and_crlf(tmp_path: Path) -> None:
    txt = write(tmp_path / "notes.txt", "\ufefffirst line\r\n\r\n  second  \r\nthird".encode())
    res = scan([txt])
    assert [(c.source, c.text) for c in res.candidates] == [
        ("notes.txt line 1", "first line"),
        ("notes.txt line 3", "second"),
        ("notes.txt line 4", "third"),
    ]


def test_undecodable_txt_names_byte_offset(tmp_path: Path, good_png: Path) -> None:
    bad = write(tmp_path / "latin.txt", "café ok\n".encode() + b"caf\xe9\n")
    res = scan([bad, good_png], texts=["kept"])
    assert [c.source for c in res.candidates] == ["good.png", "pasted line 1"]
    assert res.errors == [("latin.txt", "not valid UTF-8 text at byte 12")]


def test_html_caption_is_kept_verbatim(tmp_path: Path) -> None:
    evil = '<script>alert("x")</script><b>bold</b> &amp;'
    csv_path = tmp_path / "c.csv"
    pd.DataFrame({"caption": [evil]}).to_csv(csv_path, index=False)
    res = scan([csv_path], texts=[evil])
    assert [c.text for c in res.candidates] == [evil, evil]


def test_text_too_long_names_row(tmp_path: Path) -> None:
    res = scan([], texts=["short", "x" * 50], limits=Limits(max_text_chars=10))
    assert [c.text for c in res.candidates] == ["short"]
    assert res.errors[0][0] == "pasted line 2" and "50 characters" in res.errors[0][1]


# --------------------------------------------------------------------------------------------
# archives


def test_zip_of_images_plus_csv_pairs(tmp_path: Path) -> None:
    imgs = {f"photos/cats/{i}.png": image_bytes("PNG", seed=i) for i in range(3)}
    imgs["photos/loose.jpg"] = image_bytes("JPEG", seed=9)
    archive = write(tmp_path / "photos.zip", make_zip(imgs))
    csv_path = write(
        tmp_path / "captions.csv",
        "filepath,title\ncats/0.png,a grey cat on a sofa\ncats/1.png,a cat asleep\n2.png,a small kitten\n",
    )
    res = scan([archive, csv_path])
    assert res.errors == []
    # photos.zip: the loose image is standalone; the referenced ones come with the table rows.
    srcs = [(c.modality, c.source, c.pair_key) for c in res.candidates]
    assert srcs == [
        ("image", "photos.zip:photos/loose.jpg", None),
        ("image", "photos.zip:photos/cats/0.png", "captions.csv#1"),
        ("text", "captions.csv row 1", "captions.csv#1"),
        ("image", "photos.zip:photos/cats/1.png", "captions.csv#2"),
        ("text", "captions.csv row 2", "captions.csv#2"),
        ("image", "photos.zip:photos/cats/2.png", "captions.csv#3"),
        ("text", "captions.csv row 3", "captions.csv#3"),
    ]
    assert res.candidates[1].image_bytes == imgs["photos/cats/0.png"]
    assert res.candidates[2].text == "a grey cat on a sofa"


def test_csv_inside_zip_resolves_relative_to_its_folder(tmp_path: Path) -> None:
    archive = make_zip({
        "set/imgs/a.png": image_bytes("PNG", seed=1),
        "set/meta/captions.csv": b"image,caption,label\n../imgs/a.png,a photo of a dog,dog\n",
    })
    res = scan([write(tmp_path / "data.zip", archive)])
    assert res.errors == []
    img, txt = res.candidates
    assert img.source == "data.zip:set/imgs/a.png" and img.meta == {"label": "dog"}
    assert txt.meta == {"label": "dog"} and img.pair_key == txt.pair_key == "data.zip:set/meta/captions.csv#1"


def test_zip_slip_member_rejected_good_member_kept(tmp_path: Path) -> None:
    archive = write(tmp_path / "a.zip", make_zip({"../evil.png": image_bytes(), "ok.png": image_bytes(seed=2)}))
    res = scan([archive])
    assert [c.source for c in res.candidates] == ["a.zip:ok.png"]
    assert res.errors == [("a.zip:../evil.png", res.errors[0][1])]
    assert "archive member escapes the archive" in res.errors[0][1]


@pytest.mark.parametrize("name", ["/etc/evil.png", "C:/evil.png", "C:\\evil.png", "x\\..\\..\\evil.png"])
def test_absolute_and_drive_members_rejected(tmp_path: Path, name: str) -> None:
    archive = write(tmp_path / "a.zip", make_zip({name: image_bytes(), "ok.png": image_bytes(seed=2)}))
    res = scan([archive])
    assert [c.source for c in res.candidates] == ["a.zip:ok.png"]
    ((src, reason),) = res.errors
    assert src == f"a.zip:{name}" and "archive member escapes the archive" in reason


def test_symlink_member_rejected(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        link = zipfile.ZipInfo("link.png")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("ok.png", image_bytes())
    res = scan([write(tmp_path / "a.zip", buf.getvalue())])
    assert [c.source for c in res.candidates] == ["a.zip:ok.png"]
    assert res.errors == [("a.zip:link.png", "symbolic link in the archive, not supported")]


def _mark_encrypted(data: bytes, name: str) -> bytes:
    """Set the 'encrypted' flag bit of member ``name`` in its local and central headers."""
    out = bytearray(data)
    raw = name.encode()
    for sig, flag_off, name_len_off, name_off in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
        pos = out.find(sig)
        while pos != -1:
            n = struct.unpack_from("<H", out, pos + name_len_off)[0]
            if bytes(out[pos + name_off: pos + name_off + n]) == raw:
                struct.pack_into("<H", out, pos + flag_off, struct.unpack_from("<H", out, pos + flag_off)[0] | 1)
            pos = out.find(sig, pos + 4)
    return bytes(out)


def test_encrypted_member_rejected(tmp_path: Path) -> None:
    data = _mark_encrypted(make_zip({"secret.png": image_bytes(), "ok.png": image_bytes(seed=3)}), "secret.png")
    assert zipfile.ZipFile(io.BytesIO(data)).getinfo("secret.png").flag_bits & 1
    res = scan([write(tmp_path / "a.zip", data)])
    assert [c.source for c in res.candidates] == ["a.zip:ok.png"]
    assert res.errors == [("a.zip:secret.png", "encrypted archive member, not supported")]


def test_zip_bomb_whole_archive_ratio(tmp_path: Path) -> None:
    archive = write(tmp_path / "a.zip", make_zip({
        "blank.txt": b"\n" * 200_000 + b"a caption\n",  # deflates ~1000x
        "ok.png": image_bytes(seed=4),
    }))
    res = scan([archive], limits=Limits(max_archive_ratio=1e6))
    assert res.errors == [] and len(res.candidates) == 2  # sanity: fine without the ratio limit
    res = scan([archive], texts=["kept"], limits=Limits(max_archive_ratio=50))
    assert [c.text for c in res.candidates] == ["kept"]
    ((src, reason),) = res.errors
    assert src == "a.zip" and reason.startswith("zip bomb: archive expands")


def test_zip_bomb_member_is_isolated_from_good_members(tmp_path: Path) -> None:
    # Stored (uncompressed) padding keeps the overall ratio low, so only the member is rejected.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("zeros.txt"), b"0" * 100_000, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(zipfile.ZipInfo("ok.png"), image_bytes(size=(64, 64), seed=4), compress_type=zipfile.ZIP_STORED)
    res = scan([write(tmp_path / "a.zip", buf.getvalue())], limits=Limits(max_archive_ratio=20))
    assert [c.source for c in res.candidates] == ["a.zip:ok.png"]
    ((src, reason),) = res.errors
    assert src == "a.zip:zeros.txt" and reason.startswith("zip bomb: member expands")


def test_zip_bomb_declared_sizes(tmp_path: Path) -> None:
    archive = write(tmp_path / "a.zip", make_zip({"big.txt": b"x" * 5000, "ok.png": image_bytes()}, zipfile.ZIP_STORED))
    res = scan([archive], limits=Limits(max_file_bytes=2000))
    assert [c.source for c in res.candidates] == ["a.zip:ok.png"]
    assert res.errors[0][0] == "a.zip:big.txt" and res.errors[0][1].startswith("zip bomb:")
    res = scan([archive, tmp_path / "a.zip"], limits=Limits(max_archive_total_bytes=1000))
    assert res.candidates == []
    assert res.errors[0][0] == "a.zip" and res.errors[0][1].startswith("zip bomb: archive expands to")


def test_member_stream_longer_than_declared_is_stopped(tmp_path: Path) -> None:
    """A member whose header lies about its size never yields more than the declared bytes."""
    payload = b"hello world\n" * 50
    data = bytearray(make_zip({"a.txt": payload}, zipfile.ZIP_STORED))
    # Shrink the declared uncompressed size in the central directory to 12 bytes.
    pos = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, pos + 24, 12)
    res = scan([write(tmp_path / "liar.zip", bytes(data))])
    assert all(len(c.text or "") <= 12 for c in res.candidates)
    assert len(res.candidates) <= 1


def test_nested_zip_once_ok_deeper_rejected(tmp_path: Path) -> None:
    level3 = make_zip({"deep.png": image_bytes(seed=5)})
    level2 = make_zip({"inner.png": image_bytes(seed=6), "level3.zip": level3})
    outer = write(tmp_path / "outer.zip", make_zip({"level2.zip": level2, "top.png": image_bytes(seed=7)}))
    res = scan([outer])
    assert [c.source for c in res.candidates] == ["outer.zip:level2.zip:inner.png", "outer.zip:top.png"]
    ((src, reason),) = res.errors
    assert src == "outer.zip:level2.zip:level3.zip" and reason.startswith("nested too deep")


def test_zip_detected_by_content_not_extension(tmp_path: Path) -> None:
    blob = write(tmp_path / "upload.bin", make_zip({"a.png": image_bytes()}))
    fake = write(tmp_path / "fake.zip", b"not a zip")
    res = scan([blob, fake])
    assert [c.source for c in res.candidates] == ["upload.bin:a.png"]
    assert res.errors == [("fake.zip", "not a valid ZIP archive")]


def test_macos_clutter_in_zip_is_skipped(tmp_path: Path) -> None:
    archive = make_zip({"__MACOSX/._a.png": b"junk", "a.png": image_bytes(), ".DS_Store": b"junk"})
    res = scan([write(tmp_path / "a.zip", archive)])
    assert [c.source for c in res.candidates] == ["a.zip:a.png"] and res.errors == []


# --------------------------------------------------------------------------------------------
# folders


def test_folder_walk_sorted_hidden_skipped(tmp_path: Path) -> None:
    root = tmp_path / "shoot"
    write(root / "b.png", image_bytes(seed=1))
    write(root / "a" / "z.txt", "hello there\n")
    write(root / "a" / "y.jpg", image_bytes("JPEG", seed=2))
    write(root / ".hidden.png", b"junk")
    write(root / ".git" / "x.png", b"junk")
    write(root / "bad.xyz", b"junk")
    write(root / "inner.zip", make_zip({"m.png": image_bytes(seed=3)}))
    res = scan([root])
    assert [c.source for c in res.candidates] == [
        "shoot/a/y.jpg", "shoot/a/z.txt line 1", "shoot/b.png", "shoot/inner.zip:m.png",
    ]
    assert [e[0] for e in res.errors] == ["shoot/bad.xyz"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_folder_symlink_outside_not_followed(tmp_path: Path) -> None:
    outside = write(tmp_path / "outside" / "secret.png", image_bytes(seed=1))
    root = tmp_path / "up"
    write(root / "ok.png", image_bytes(seed=2))
    write(root / "sub" / "inner.png", image_bytes(seed=3))
    os.symlink(outside, root / "link.png")
    os.symlink(outside.parent, root / "linkdir")
    os.symlink(root / "sub" / "inner.png", root / "alias.png")  # inside the folder: fine
    res = scan([root])
    assert [c.source for c in res.candidates] == ["up/alias.png", "up/ok.png", "up/sub/inner.png"]
    assert sorted(e[0] for e in res.errors) == ["up/link.png", "up/linkdir"]
    assert all("outside" in e[1] for e in res.errors)


def test_csv_in_folder_pairs_with_images_and_disk_lookup(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write(root / "imgs" / "a.png", image_bytes(seed=1))
    write(root / "imgs" / "b.png", image_bytes(seed=2))
    write(root / "pairs.csv", "filepath,caption\nimgs/a.png,first photo here\nimgs/b.png,second photo here\n")
    res = scan([root])
    assert res.errors == []
    assert [(c.modality, c.source) for c in res.candidates] == [
        ("image", "ds/imgs/a.png"), ("text", "ds/pairs.csv row 1"),
        ("image", "ds/imgs/b.png"), ("text", "ds/pairs.csv row 2"),
    ]
    # A loose table finds images beside it on disk, but never outside its own folder.
    write(tmp_path / "secret.png", image_bytes(seed=9))
    write(root / "escape.csv", "filepath,caption\n../secret.png,nope nope\nimgs/a.png,yes indeed\n")
    res = scan([root / "escape.csv"])
    assert [(c.modality, c.source) for c in res.candidates] == [
        ("text", "escape.csv row 1"), ("image", "imgs/a.png"), ("text", "escape.csv row 2"),
    ]
    assert res.errors == [("escape.csv row 1", "image '../secret.png' not found in the upload")]


# --------------------------------------------------------------------------------------------
# tables


def test_missing_referenced_image_keeps_text(tmp_path: Path) -> None:
    archive = write(tmp_path / "photos.zip", make_zip({"cats/a.png": image_bytes()}))
    csv_path = write(tmp_path / "captions.csv",
                     "filepath,title\ncats/a.png,a cat photo\ncats/x.png,another cat photo\n")
    res = scan([archive, csv_path])
    assert res.errors == [("captions.csv row 2", "image 'cats/x.png' not found in the upload")]
    assert [(c.modality, c.source, c.pair_key) for c in res.candidates] == [
        ("image", "photos.zip:cats/a.png", "captions.csv#1"),
        ("text", "captions.csv row 1", "captions.csv#1"),
        ("text", "captions.csv row 2", None),
    ]


def test_ambiguous_basename_is_an_error(tmp_path: Path) -> None:
    archive = write(tmp_path / "p.zip",
                    make_zip({"train/a.png": image_bytes(seed=1), "val/a.png": image_bytes(seed=2)}))
    csv_path = write(tmp_path / "c.csv", "filepath,title\na.png,which one is it\nval/a.png,the val one\n")
    res = scan([archive, csv_path])
    assert len(res.errors) == 1 and res.errors[0][0] == "c.csv row 1" and "matches 2 files" in res.errors[0][1]
    srcs = [(c.modality, c.source) for c in res.candidates]
    assert ("image", "p.zip:val/a.png") in srcs and ("text", "c.csv row 1") in srcs
    # the unmatched image is not referenced, so it stays as a standalone image
    assert srcs[0] == ("image", "p.zip:train/a.png")


def test_csv_with_bom(tmp_path: Path) -> None:
    path = write(tmp_path / "bom.csv", "\ufeffcaption,label\na dog on grass,dog\n".encode())
    res = scan([path])
    assert res.errors == []
    (cand,) = res.candidates
    assert cand.text == "a dog on grass" and cand.meta == {"label": "dog"}
    assert list(read_table(path).columns) == ["caption", "label"]


def test_undecodable_csv_names_file(tmp_path: Path, good_png: Path) -> None:
    path = write(tmp_path / "latin.csv", b"caption\ncaf\xe9 au lait\n")
    res = scan([path, good_png])
    assert [c.source for c in res.candidates] == ["good.png"]
    assert res.errors[0][0] == "latin.csv" and "not valid UTF-8 text at byte" in res.errors[0][1]


def test_ragged_csv_rows(tmp_path: Path) -> None:
    path = write(
        tmp_path / "rag.csv",
        "caption,label\na cat on a mat,cat\nbroken, row, here,x\na dog outside,dog\nonly one field\n",
    )
    res = scan([path])
    assert [c.text for c in res.candidates] == ["a cat on a mat", "a dog outside"]
    assert [c.source for c in res.candidates] == ["rag.csv row 1", "rag.csv row 3"]
    assert res.errors == [
        ("rag.csv row 2", "has 4 fields, expected 2 (as in the header)"),
        ("rag.csv row 4", "has 1 fields, expected 2 (as in the header)"),
    ]
    df = read_table(path)
    assert list(df.index) == [1, 3] and len(df.attrs["ingest_errors"]) == 2


def test_semicolon_csv_and_tsv(tmp_path: Path) -> None:
    semi = write(tmp_path / "s.csv", "caption;label\na red, shiny car;car\n")
    tsv = write(tmp_path / "t.tsv", "caption\tlabel\na blue, old boat\tboat\n")
    res = scan([semi, tsv])
    assert res.errors == []
    assert [(c.text, c.meta) for c in res.candidates] == [
        ("a red, shiny car", {"label": "car"}), ("a blue, old boat", {"label": "boat"}),
    ]


def test_json_not_array(tmp_path: Path, good_png: Path) -> None:
    obj = write(tmp_path / "obj.json", json.dumps({"caption": ["a", "b"]}))
    broken = write(tmp_path / "broken.json", "[{")
    res = scan([obj, broken, good_png])
    assert [c.source for c in res.candidates] == ["good.png"]
    assert res.errors[0] == ("obj.json", "expected a JSON array of objects (one object per row), got a JSON object")
    assert res.errors[1][0] == "broken.json" and res.errors[1][1].startswith("not valid JSON")


def test_json_array_with_non_object_item(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.json", json.dumps([{"caption": "a fine day"}, 3, {"caption": "a rainy day"}]))
    res = scan([path])
    assert [c.source for c in res.candidates] == ["rows.json row 1", "rows.json row 3"]
    assert res.errors == [("rows.json row 2", "expected a JSON object, got a JSON number")]


def test_jsonl_bad_line_kept_others(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"text": "one two"}\n{oops\n\n{"text": "three four"}\n')
    res = scan([path])
    assert [(c.source, c.text) for c in res.candidates] == [("d.jsonl row 1", "one two"),
                                                            ("d.jsonl row 4", "three four")]
    assert len(res.errors) == 1 and res.errors[0][0] == "d.jsonl line 2" and "not valid JSON" in res.errors[0][1]


def test_xlsx_not_a_zip_and_valid_xlsx(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.xlsx", b"caption\nthis is csv text pretending\n")
    good = tmp_path / "good.xlsx"
    pd.DataFrame({"caption": ["a sheep in a field", "a goat on a rock"],
                  "score": [0.5, 1.5]}).to_excel(good, index=False)
    res = scan([bad, good])
    assert [c.text for c in res.candidates] == ["a sheep in a field", "a goat on a rock"]
    assert res.candidates[0].meta == {"score": 0.5}
    ((src, reason),) = res.errors
    assert src == "bad.xlsx" and reason.startswith("not a valid XLSX workbook")
    with pytest.raises(IngestError, match=r"bad\.xlsx: not a valid XLSX workbook"):
        read_table(bad)


def test_parquet_list_vector_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "caption": ["a small bird", "a big whale", "a tiny ant"],
        "embedding": [rng.normal(size=8).astype(np.float32) for _ in range(3)],
        "split": ["train", "train", "test"],
    })
    path = tmp_path / "emb.parquet"
    df.to_parquet(path)
    assert detect_roles(read_table(path)) == {"caption": "text", "embedding": "vector", "split": "metadata"}
    res = scan([path])
    assert res.errors == []
    assert [c.text for c in res.candidates] == list(df["caption"])
    vec = res.candidates[1].vectors["precomputed:embedding"]
    assert vec.dtype == np.float32 and vec.shape == (8,)
    np.testing.assert_allclose(vec, df["embedding"][1])
    assert res.candidates[2].meta == {"split": "test"}


def test_vector_nan_row_skipped(tmp_path: Path) -> None:
    df = pd.DataFrame({
        "caption": ["row one text", "row two text", "row three text"],
        "embedding": [[0.1, 0.2, 0.3], [0.1, float("nan"), 0.3], [0.4, 0.5, 0.6]],
    })
    path = tmp_path / "emb.parquet"
    df.to_parquet(path)
    res = scan([path])
    assert [c.text for c in res.candidates] == ["row one text", "row three text"]
    assert res.errors == [("emb.parquet row 2", "vector 'embedding' has NaN/inf values")]


def test_vector_wrong_length_row_skipped(tmp_path: Path) -> None:
    rows = [{"caption": f"text number {i}", "embedding": [float(i)] * 4} for i in range(4)]
    rows[2]["embedding"] = [1.0, 2.0, 3.0]
    path = write(tmp_path / "e.jsonl", "\n".join(json.dumps(r) for r in rows))
    res = scan([path])
    assert [c.source for c in res.candidates] == ["e.jsonl row 1", "e.jsonl row 2", "e.jsonl row 4"]
    assert res.errors == [("e.jsonl row 3", "vector 'embedding' has 3 values, expected 4")]


def test_vector_strings_in_csv(tmp_path: Path) -> None:
    path = write(tmp_path / "v.csv", 'name,vec\nalpha,"[0.1, 0.2, 0.3]"\nbeta,"[1, 2, 3]"\ngamma,"[1, 2, oops]"\n')
    res = scan([path])
    assert [(c.modality, c.meta) for c in res.candidates] == [("row", {"name": "alpha"}), ("row", {"name": "beta"})]
    np.testing.assert_allclose(res.candidates[1].vectors["precomputed:vec"], [1, 2, 3])
    assert res.errors == [("v.csv row 3", "vector 'vec' is not a list of numbers")]


def test_numbered_columns_grouped_into_one_vector(tmp_path: Path) -> None:
    df = pd.DataFrame({
        "id": [10, 11, 12],
        "title": ["first thing here", "second thing here", "third thing here"],
        **{f"emb_{i}": [0.1 * i, 0.2 * i, 0.3 * i] for i in range(4)},
    })
    roles = detect_roles(df)
    assert roles == {"id": "metadata", "title": "text", **{f"emb_{i}": "vector" for i in range(4)}}
    path = tmp_path / "g.csv"
    df.to_csv(path, index=False)
    res = scan([path])
    assert res.errors == []
    first = res.candidates[1]
    assert list(first.vectors) == ["precomputed:emb"]
    np.testing.assert_allclose(first.vectors["precomputed:emb"], [0.0, 0.2, 0.4, 0.6], rtol=1e-6)
    assert first.meta == {"id": 11}


def test_group_with_nan_cell_skips_row(tmp_path: Path) -> None:
    path = write(tmp_path / "g.csv", "title,emb0,emb1\nfirst row text,1,2\nsecond row text,,3\n")
    res = scan([path])
    assert [c.source for c in res.candidates] == ["g.csv row 1"]
    assert res.errors == [("g.csv row 2", "vector 'emb' has NaN/inf values")]


def test_numeric_features_standardised_into_row_items(tmp_path: Path) -> None:
    df = pd.DataFrame({
        "name": ["a", "b", "c", "d"],
        "height": [1.0, 2.0, 3.0, np.nan],
        "weight": [5.5, 5.5, 5.5, 5.5],
        "flag": [True, False, True, True],
    })
    path = tmp_path / "n.parquet"
    df.to_parquet(path)
    assert detect_roles(df) == {"name": "metadata", "height": "numeric", "weight": "numeric", "flag": "metadata"}
    res = scan([path])
    assert res.errors == []
    assert [c.modality for c in res.candidates] == ["row"] * 4
    feats = np.stack([c.vectors["precomputed:numeric"] for c in res.candidates])
    assert feats.dtype == np.float32 and feats.shape == (4, 2)
    std = np.std([1.0, 2.0, 3.0])
    np.testing.assert_allclose(feats[:, 0], [-1 / std, 0, 1 / std, 0], rtol=1e-5)  # NaN imputed at the mean
    np.testing.assert_allclose(feats[:, 1], 0)  # constant column: std 0 -> 1
    assert res.candidates[0].text is None
    assert res.candidates[0].meta == {"name": "a", "flag": True, "height": 1.0, "weight": 5.5}
    assert res.candidates[3].meta["height"] is None


def test_row_with_nothing_usable_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "caption,label\na real caption,x\n,y\n")
    res = scan([path])
    assert [c.text for c in res.candidates] == ["a real caption"]
    assert res.errors == [("t.csv row 2", "row has no image, text, vector or numeric value")]


def test_table_without_usable_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "label,kind\na,b\nc,d\n")
    res = scan([path], texts=["still here"])
    assert [c.text for c in res.candidates] == ["still here"]
    assert res.errors[0][0] == "m.csv" and "no usable columns" in res.errors[0][1]


def test_role_override(tmp_path: Path) -> None:
    path = write(tmp_path / "o.csv", "label,notes,score\ncat,a long note about cats,3\ndog,a long note about dogs,4\n")
    assert detect_roles(read_table(path)) == {"label": "metadata", "notes": "text", "score": "numeric"}
    res = scan([path], roles={"label": "text", "notes": "ignore", "score": "metadata"})
    assert res.errors == []
    assert [(c.text, c.meta, c.vectors) for c in res.candidates] == [
        ("cat", {"score": 3}, {}), ("dog", {"score": 4}, {}),
    ]


def test_role_override_errors_raise(tmp_path: Path) -> None:
    path = write(tmp_path / "o.csv", "label,notes\ncat,a note here\n")
    with pytest.raises(IngestError, match=r"unknown role 'picture'.*text, image, vector, numeric, metadata, ignore"):
        scan([path], roles={"label": "picture"})
    with pytest.raises(ValueError, match="unknown column 'nope'; valid columns: label, notes"):
        scan([path], roles={"nope": "text"})
    assert set(ROLES) == {"text", "image", "vector", "numeric", "metadata", "ignore"}


def test_inline_image_bytes_column(tmp_path: Path) -> None:
    df = pd.DataFrame({
        "image": [{"bytes": image_bytes(seed=1), "path": "a.png"}, {"bytes": b"junk", "path": "b.png"}],
        "caption": ["a noisy picture", "a broken picture"],
    })
    path = tmp_path / "hf.parquet"
    df.to_parquet(path)
    res = scan([path])
    assert [(c.modality, c.pair_key) for c in res.candidates] == [
        ("image", "hf.parquet#1"), ("text", "hf.parquet#1"), ("text", None),
    ]
    assert res.errors[0][0] == "hf.parquet row 2" and "unreadable" in res.errors[0][1]


def test_detect_roles_image_and_text_columns() -> None:
    df = pd.DataFrame({
        "file": ["x/1.jpg", "x/2.JPG", "x/3.png"],
        "words": ["a long multi word sentence", "another long sentence here", "and a third one"],
        "tag": ["a", "b", "a"],
        "empty": [None, None, None],
        "when": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]),
    })
    assert detect_roles(df) == {
        "file": "image", "words": "text", "tag": "metadata", "empty": "ignore", "when": "metadata",
    }


def test_inspect_table_preview_and_roles(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "filepath,title\n" + "".join(f"{i}.png,caption number {i}\n" for i in range(30)))
    preview, roles = inspect_table(path, n_preview=5)
    assert len(preview) == 5 and roles == {"filepath": "image", "title": "text"}
    with pytest.raises(IngestError, match=r"missing\.csv: file not found"):
        read_table(tmp_path / "missing.csv")


def test_ingest_error_str() -> None:
    err = IngestError("captions.csv", "bad thing")
    assert isinstance(err, ValueError) and str(err) == "captions.csv: bad thing"
    assert (err.source, err.reason) == ("captions.csv", "bad thing")


def test_scan_is_deterministic(tmp_path: Path) -> None:
    archive = write(tmp_path / "p.zip", make_zip({f"{c}.png": image_bytes(seed=i) for i, c in enumerate("dbca")}))
    first = [c.source for c in scan([archive]).candidates]
    assert first == ["p.zip:a.png", "p.zip:b.png", "p.zip:c.png", "p.zip:d.png"]
    assert [c.source for c in scan([archive]).candidates] == first


def test_a_running_number_is_metadata_not_a_feature() -> None:
    """A row index (e.g. scikit-learn's digits written with an ``image_no`` column) must not become a one-number
    "embedding" of the row order; a measured integer column stays a feature."""
    rng = np.random.default_rng(0)
    n = 40
    df = pd.DataFrame({"image_no": rng.permutation(np.arange(100, 100 + n)),  # shuffled: still a counter
                       "size_mm": rng.integers(0, 1000, n),  # integers, but not consecutive
                       "score": rng.normal(size=n),
                       "pixels": [[float(i), 1.0] for i in range(n)]})
    roles = detect_roles(df)
    assert roles["image_no"] == "metadata" and roles["size_mm"] == "numeric" and roles["score"] == "numeric"
    assert detect_roles(df.head(10))["image_no"] == "numeric"  # too few rows to tell
    with_gap = df.assign(image_no=np.r_[np.arange(n - 1), n + 5])
    assert detect_roles(with_gap)["image_no"] == "numeric"
