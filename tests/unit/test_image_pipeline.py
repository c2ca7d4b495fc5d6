"""The streaming image pipeline (core.images): reduced decoding, bounded prefetch, the same vectors as a plain
per-image encode, errors per item, interrupted runs keep what was encoded, memory that does not grow."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import core
from core.encoders import load_image
from core.images import ImageReadError, iter_prepared, open_image, prefetch_map

ROOT = Path(__file__).resolve().parents[2]


def photo(size=(640, 480), seed=0) -> Image.Image:
    """Smooth colour regions plus noise: decodes like a photo, not like a flat test card."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8))
    noise = rng.normal(0, 5, (size[1], size[0], 1)).astype(np.int16)
    arr = np.asarray(small.resize(size, Image.BICUBIC), np.int16) + noise
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def jpeg_bytes(im: Image.Image, orientation: int | None = None) -> bytes:
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


@pytest.fixture
def photos(tmp_path) -> list[Path]:
    out = []
    for i in range(7):
        p = tmp_path / "photos" / f"p{i}.jpg"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(jpeg_bytes(photo(seed=i), orientation=6 if i % 2 else None))
        out.append(p)
    return out


# ---- open_image --------------------------------------------------------------------------------------
def test_reduced_jpeg_decode_keeps_the_model_size_and_the_orientation():
    data = jpeg_bytes(photo((1600, 1200)), orientation=6)  # stored landscape, shown portrait
    full, size = open_image(data, with_size=True)
    assert full.size == (1200, 1600) and size == (1200, 1600)
    red, size = open_image(data, min_side=224, with_size=True)
    assert size == (1200, 1600), "the size of the full image, upright"
    assert red.size == (300, 400), "1/4 scale: the smallest whose shorter side is still >= 224"
    assert red.mode == "RGB"
    diff = np.abs(np.asarray(full.resize(red.size, Image.BICUBIC), float) - np.asarray(red, float)).mean()
    assert diff < 4, diff
    small = open_image(data, min_side=1000)
    assert min(small.size) >= 1000 and small.size[0] < small.size[1]  # 1/1: the short side is already < 2x


def test_reduced_decode_of_other_formats_and_transparency():
    im = photo((900, 600)).convert("RGBA")
    im.putalpha(0)  # fully transparent: on white
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    red = open_image(buf.getvalue(), min_side=100)
    assert min(red.size) >= 100 and red.size[0] < 900 and red.getpixel((5, 5)) == (255, 255, 255)
    for mode in ("1", "I;16", "P", "CMYK"):  # modes Pillow's reduce() refuses or that need converting
        buf = io.BytesIO()
        im = photo((900, 600)).convert(mode if mode != "I;16" else "L")
        if mode == "I;16":
            im = Image.fromarray((np.asarray(im, np.uint16) * 257).astype(np.uint16))
        im.save(buf, format="TIFF" if mode == "CMYK" else "PNG")
        red = open_image(buf.getvalue(), min_side=100)
        assert red.mode == "RGB" and red.size == (150, 100), (mode, red.size)
        assert np.asarray(red).std() > 5, f"{mode}: the picture survives"


def test_load_image_opens_paths_and_pil_images_in_full(photos):
    a = load_image(photos[1])
    b = load_image(Image.open(photos[1]))
    assert a.size == b.size == (480, 640) and a.mode == "RGB"


# ---- prefetch_map / iter_prepared ------------------------------------------------------------------------
def test_prefetch_map_keeps_order_and_bounds_the_work_ahead():
    lock = threading.Lock()
    state = {"started": 0, "taken": 0, "max_ahead": 0}

    def slow(x):
        with lock:
            state["started"] += 1
            state["max_ahead"] = max(state["max_ahead"], state["started"] - state["taken"])
        time.sleep(0.002 * (x % 3))  # uneven work: results finish out of order, the output must not
        return x * x

    out = []
    for y in prefetch_map(slow, range(60), ahead=5, workers=3):
        out.append(y)
        state["taken"] += 1
    assert out == [x * x for x in range(60)]
    assert state["max_ahead"] <= 5 + 1  # the one just handed over plus ``ahead`` under way


def test_prefetch_map_stops_early_without_running_the_rest():
    seen = []
    gen = prefetch_map(lambda x: seen.append(x) or x, range(10_000), ahead=4, workers=2)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()
    assert len(seen) <= 3 + 4 + 1


def test_iter_prepared_never_holds_more_than_batch_times_prefetch():
    alive = {"now": 0, "max": 0}
    lock = threading.Lock()

    def prepare(x):
        with lock:
            alive["now"] += 1
            alive["max"] = max(alive["max"], alive["now"])
        return x, (1, 1)

    batches = 0
    for _positions, data, _sizes, _errors, _done in iter_prepared(range(500), prepare, batch_size=8, prefetch=3,
                                                                 workers=4):
        time.sleep(0.001)  # the model's turn: the pool runs ahead meanwhile, up to its bound
        with lock:
            alive["now"] -= len(data)  # encoded: released
        batches += 1
    assert batches == 63 and alive["max"] <= 8 * 3


def test_unreadable_images_are_reported_by_position_and_the_rest_encoded(tiny_clip_id, photos, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    enc = core.load_encoder(tiny_clip_id)
    batches = list(enc.iter_encode_images([photos[0], bad, tmp_path / "missing.png", photos[1]], batch_size=2))
    errors = dict(e for b in batches for e in b.errors)
    assert set(errors) == {1, 2} and "not an image" in errors[1] and errors[2] == "no such file"
    assert [p for b in batches for p in b.positions] == [0, 3]
    assert [s for b in batches for s in b.sizes] == [(640, 480), (480, 640)]
    with pytest.raises(ImageReadError, match=r"bad\.jpg"):
        enc.encode_images([photos[0], bad])


# ---- the same vectors as a plain encode ------------------------------------------------------------------
def plain(enc, paths) -> np.ndarray:
    """One image at a time, decoded in full: the reference."""
    X = np.concatenate([enc._encode_image_batch([load_image(p)]) for p in paths])
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.mark.parametrize("model", ["tiny", "demo"])
def test_embed_equals_a_plain_per_image_encode(model, tiny_clip_id, photos, tmp_path):
    model = tiny_clip_id if model == "tiny" else model
    enc = core.load_encoder(model)
    ws = core.Workspace(tmp_path / "ws")
    ws.ingest([p.parent for p in photos[:1]], texts=["a photo"])
    items = ws.items[ws.items["modality"] == "image"]
    ref = plain(enc, [ws.abspath(r) for r in items["image"]])
    rep = ws.embed(model, batch_size=3, chunk_size=2, reduced_decode=False)
    assert rep.embedded == 8 and not rep.errors
    X, ids = ws.vectors(model, modality="image")
    assert list(ids) == items["id"].tolist()
    np.testing.assert_allclose(X, ref, atol=1e-5)  # full decode: exact
    ws.forget_model(model)
    ws.embed(model, batch_size=3, chunk_size=2)
    Y, ids2 = ws.vectors(model, modality="image")
    assert list(ids2) == list(ids)
    cos = (Y * ref).sum(1)
    assert cos.min() >= 0.995, cos  # reduced decode: the same vectors up to resampling


def test_unreadable_stored_image_among_good_ones(tiny_clip_id, photos, tmp_path):
    ws = core.Workspace(tmp_path / "ws")
    ws.ingest([photos[0].parent])
    victim = ws.items.iloc[2]
    Path(ws.abspath(victim["image"])).write_bytes(b"\xff\xd8 broken")
    rep = ws.embed(tiny_clip_id, batch_size=2)
    assert rep.embedded == 6 and len(rep.errors) == 1
    assert rep.errors[0][0] == victim["source"] and "cannot read stored image" in rep.errors[0][1]
    assert victim["id"] not in set(ws.vector_ids(tiny_clip_id))


def test_an_interrupted_embedding_keeps_what_was_encoded_and_the_next_run_continues(tiny_clip_id, photos, tmp_path):
    ws = core.Workspace(tmp_path / "ws")
    ws.ingest([photos[0].parent])

    def stop_after_four(done, total):
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ws.embed(tiny_clip_id, batch_size=2, chunk_size=1000, progress=stop_after_four)
    assert ws.store(tiny_clip_id).count() == 4, "the two encoded batches were committed, not the chunk's end"
    rep = ws.embed(tiny_clip_id, batch_size=2)
    assert rep.cached == 4 and rep.embedded == 3 and ws.store(tiny_clip_id).count() == 7


# ---- memory --------------------------------------------------------------------------------------------
# the child's own peak (VmHWM): ru_maxrss would also count the pytest process it was started from
PEAK = r"""
import json, sys
import core
ws = core.Workspace(sys.argv[1])
rep = ws.embed(sys.argv[2], batch_size=4, chunk_size=100_000, reduced_decode=False)
kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"embedded": rep.embedded, "kb": kb}))
"""


@pytest.mark.slow  # 144 full 4.3-MP JPEG decodes in two interpreters: 48 s on 2 cores, 200 s when they are busy
@pytest.mark.timeout(600)
def test_memory_does_not_grow_with_the_number_of_images(tiny_clip_id, tmp_path):
    """Full decodes of 4.3-MP JPEGs (13 MB each as RGB), one chunk far larger than the batch: embedding 120
    of them peaks within 150 MB of embedding 24 (decoding a chunk at once would need 1.2 GB more)."""
    data = jpeg_bytes(photo((2400, 1800)))
    for n in (24, 120):
        folder = tmp_path / f"in{n}"
        folder.mkdir()
        for i in range(n):  # the same pixels, other bytes (a JPEG comment): items of their own
            payload = f"copy {i}".encode()
            (folder / f"{i}.jpg").write_bytes(data[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big")
                                              + payload + data[2:])
        core.Workspace(tmp_path / f"ws{n}").ingest([folder])
    peaks = {}
    for n in (24, 120):
        out = subprocess.run([sys.executable, "-c", PEAK, str(tmp_path / f"ws{n}"), tiny_clip_id], cwd=ROOT,
                             capture_output=True, text=True, timeout=600, check=True)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert got["embedded"] == n
        peaks[n] = got["kb"] / 1024
    assert peaks[120] - peaks[24] < 150, peaks


def test_cli_embed_says_that_ctrl_c_keeps_the_work_and_full_decode_is_exact(tiny_clip_id, photos, tmp_path, capsys):
    from core.cli import main

    ws = core.Workspace(tmp_path / "ws")
    ws.ingest([photos[0].parent])
    assert main(["embed", str(ws.path), "--model", tiny_clip_id, "--full-decode", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["embedded"] == 7
    assert "0/7 (Ctrl-C stops, a rerun continues)" in err
    X, ids = ws.vectors(tiny_clip_id)
    items = ws.items.set_index("id")
    ref = plain(core.load_encoder(tiny_clip_id), [ws.abspath(items.loc[i, "image"]) for i in ids])
    np.testing.assert_allclose(X, ref, atol=1e-5)


def test_decoding_threads_give_the_same_batches_as_the_calling_thread(tiny_clip_id, photos, tmp_path):
    """The path used beside a GPU (a thread pool decoding ahead) against the CPU path (decoding in the calling
    thread): same vectors, positions, sizes and errors, in order."""
    enc = core.load_encoder(tiny_clip_id)
    sources = [*photos, tmp_path / "missing.jpg", photos[0].read_bytes()]

    def run(workers):
        return list(enc.iter_encode_images(sources, batch_size=3, workers=workers, prefetch=3))

    a, b = run(0), run(3)
    assert [x.positions for x in a] == [x.positions for x in b] == [[0, 1, 2], [3, 4, 5], [6, 8]]
    assert [x.errors for x in a] == [x.errors for x in b] == [[], [], [(7, "no such file")]]
    assert [x.sizes for x in a] == [x.sizes for x in b]
    vectors = [np.concatenate([x.vectors for x in run_]) for run_ in (a, b)]
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)


def test_cli_embed_with_a_model_that_fits_nothing_exits_0_with_a_hint(tmp_path, capsys):
    import pandas as pd

    from core.cli import main

    table = tmp_path / "digits.csv"
    pd.DataFrame({f"px_{i}": np.random.default_rng(i).random(5) for i in range(4)}).to_csv(table, index=False)
    ws = core.Workspace(tmp_path / "ws")
    ws.ingest([table])
    assert main(["embed", str(ws.path), "--model", "minilm", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["unsupported"] == 5
    assert "hint: minilm encodes none of the items" in err and "precomputed:px (5 items)" in err
    assert main(["embed", str(ws.path), "--model", "precomputed:px", "--json"]) == 0
    assert "hint" not in capsys.readouterr().err, "a model that has the vectors needs no hint"
