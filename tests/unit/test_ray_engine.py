"""The Ray Data engine on a local Ray instance: same items and vectors as the local engine.

Ray starts once for this module (2 CPUs, no dashboard, a small object store, worker logs off) and is
shut down at the end; core.distributed reuses an initialised Ray instead of starting its own.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import core
from core.cli import main
from core.distributed import embed_manifest, embed_workspace

from helpers import make_png

MODEL = "demo"  # the bundled joint image-text model (128-d, loads in a fraction of a second)
ATOL = 1e-5


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="the Ray engine needs pip install '.[ray]' (make test installs it)")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 1024 * 1024, log_to_driver=False,
             configure_logging=False)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture
def manifest(tmp_path):
    """A tiny manifest: six images (relative paths, one twice) with captions, a caption alone, an image
    that does not exist, and an empty row; metadata in a 'colour' column."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        make_png(tmp_path / "imgs" / f"{i}.png", tuple(int(v) for v in rng.integers(0, 255, 3)), size=(40, 32))
        rows.append({"image": f"imgs/{i}.png", "caption": f"a picture number {i}", "colour": f"c{i % 3}"})
    rows.append({"image": "imgs/0.png", "caption": "a picture number 0", "colour": "c0"})  # duplicate row
    rows.append({"image": None, "caption": "a caption without an image", "colour": "c1"})
    rows.append({"image": "imgs/missing.png", "caption": None, "colour": "c2"})
    rows.append({"image": None, "caption": "   ", "colour": None})
    path = tmp_path / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def comparable_items(ws) -> pd.DataFrame:
    return ws.items.drop(columns=["added"]).sort_values("id").reset_index(drop=True)


@pytest.mark.slow  # every Ray test is (15-40 s each on 2 cores); the first also starts Ray
@pytest.mark.timeout(600)
def test_ray_manifest_equals_local_engine(ray_local, manifest, tmp_path):
    local = core.Workspace(tmp_path / "local")
    on_ray = core.Workspace(tmp_path / "ray")
    r_local = embed_manifest(local, manifest, MODEL, engine="local", chunk_size=4)
    r_ray = embed_manifest(on_ray, manifest, MODEL, engine="ray", chunk_size=4)
    assert r_ray.engine == "ray" and r_ray.workers >= 1
    for r in (r_local, r_ray):
        # 6 images + 7 distinct captions; the repeated row adds nothing
        assert r.embedded == 13 and r.added == 13 and r.cached == 0
        assert [src for src, _ in r.errors] == ["imgs/missing.png"]
        assert "cannot read image" in r.errors[0][1]
    a, b = comparable_items(local), comparable_items(on_ray)
    pd.testing.assert_frame_equal(a, b)
    assert set(a["modality"]) == {"image", "text"} and a["colour"].notna().all()
    img = a[a["modality"] == "image"].iloc[0]
    assert img["image"].startswith(str(manifest.parent)) and img["width"] == 40 and img["height"] == 32
    # pairs link each image with its caption, both ways
    texts = a.set_index("id")
    for _, row in a[a["modality"] == "image"].iterrows():
        assert texts.loc[row["pair"], "modality"] == "text" and texts.loc[row["pair"], "pair"] == row["id"]
    Xa, ia = local.vectors(MODEL)
    Xb, ib = on_ray.vectors(MODEL, ids=ia)
    assert list(ia) == list(ib) and len(ia) == 13
    np.testing.assert_allclose(Xa, Xb, atol=ATOL)
    np.testing.assert_allclose(np.linalg.norm(Xb, axis=1), 1.0, atol=1e-5)
    # the same content ids as ingestion, so the items are what an upload of the same files gives
    ingested = core.Workspace(tmp_path / "ingested")
    ingested.ingest([tmp_path / "imgs"], texts=["a picture number 3"])
    assert set(ingested.items["id"]) <= set(a["id"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_manifest_rerun_is_incremental(ray_local, manifest, tmp_path):
    ws = core.Workspace(tmp_path / "w")
    embed_manifest(ws, manifest, MODEL, engine="ray", dtype="float16")
    again = embed_manifest(ws, manifest, MODEL, engine="ray")
    assert again.embedded == 0 and again.added == 0 and again.cached == 13
    assert ws.store(MODEL).dtype == "float16" and ws.store(MODEL).count() == 13


@pytest.mark.slow
def test_ray_workspace_equals_local_engine(ray_local, image_files, tmp_path):
    src = core.Workspace(tmp_path / "a")
    src.ingest([tmp_path / "imgs"], texts=["a red square", "a blue circle", "green"])
    shutil.copytree(src.path, tmp_path / "b")
    other = core.Workspace(tmp_path / "b")
    r_local = embed_workspace(src, MODEL, engine="local")
    r_ray = embed_workspace(other, MODEL, engine="ray", workers=2)
    assert r_local.embedded == r_ray.embedded == 6 and r_ray.workers == 2 and not r_ray.errors
    Xa, ia = src.vectors(MODEL)
    Xb, ib = other.vectors(MODEL)
    assert list(ia) == list(ib)
    np.testing.assert_allclose(Xa, Xb, atol=ATOL)
    again = embed_workspace(other, MODEL, engine="ray")
    assert again.embedded == 0 and again.cached == 6


@pytest.mark.slow
def test_cli_embed_engine_ray(ray_local, manifest, tmp_path, capsys):
    ws = tmp_path / "cli"
    assert main(["embed", str(ws), "--model", MODEL, "--engine", "ray", "--manifest", str(manifest),
                 "--text-column", "caption", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"model", "embedded", "cached", "seconds"} <= set(out)
    assert out["model"] == MODEL and out["embedded"] == 13 and out["engine"] == "ray" and out["added"] == 13
    assert main(["embed", str(ws), "--model", MODEL, "--engine", "ray", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["embedded"] == 0 and out["cached"] == 13
    assert main(["info", str(ws), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["models"][MODEL]["n"] == 13


def test_cli_bad_manifest_column_is_one_line(manifest, tmp_path, capsys):
    code = main(["embed", str(tmp_path / "w"), "--model", MODEL, "--engine", "local", "--manifest", str(manifest),
                 "--image-column", "picture"])
    err = capsys.readouterr().err
    assert code == 1 and "no image column 'picture'" in err and len(err.strip().splitlines()) == 1


def test_without_ray_the_error_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    core.Workspace(tmp_path / "w").ingest(texts=["hello"])
    assert main(["embed", str(tmp_path / "w"), "--model", MODEL, "--engine", "ray"]) == 1
    err = capsys.readouterr().err
    assert "pip install '.[ray]'" in err and len(err.strip().splitlines()) == 1


def test_core_and_cli_do_not_import_ray():
    code = ("import sys, core, core.cli, core.distributed, core.workspace, core.projection\n"
            "core.cli.build_parser()\n"
            "assert 'ray' not in sys.modules, 'ray imported eagerly'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_local_engine_reads_a_folder_of_csv_manifests(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(3):
        make_png(tmp_path / "pics" / f"{i}.png", tuple(int(v) for v in rng.integers(0, 255, 3)))
    folder = tmp_path / "manifest"
    folder.mkdir()
    pd.DataFrame({"filepath": ["../pics/0.png", "../pics/1.png"], "title": ["zero", "one"]}).to_csv(
        folder / "a.csv", index=False)
    pd.DataFrame({"filepath": [str(tmp_path / "pics" / "2.png"), ""], "title": ["two", "just a text"]}).to_csv(
        folder / "b.csv", index=False)
    ws = core.Workspace(tmp_path / "w")
    r = embed_manifest(ws, folder, MODEL, engine="local")
    assert not r.errors and r.embedded == 7 and r.added == 7
    assert r.first_result_s is not None and r.first_result_s < r.seconds
    assert r.steady_items_per_s is None or r.steady_items_per_s > 0  # one batch only: no steady rate
    items = ws.items
    assert sorted(items["text"].dropna()) == ["just a text", "one", "two", "zero"]
    assert items.loc[items["modality"] == "image", "pair"].notna().all()
    # the same image ingested normally gets the same id
    ws.ingest([tmp_path / "pics" / "1.png"])
    assert len(ws.items) == 7
    with pytest.raises(ValueError, match="all of one kind"):
        (folder / "c.parquet").write_bytes(b"")
        embed_manifest(ws, folder, MODEL, engine="local")


@pytest.mark.slow
def test_engines_refuse_to_add_to_vectors_the_model_no_longer_gives(ray_local, manifest, image_files, tmp_path,
                                                                    capsys):
    """Weights replaced under the same local model id: the Ray engine (workspace or manifest) and the local
    manifest engine refuse new vectors like Workspace.embed does; --refresh on Ray embeds everything again."""
    from core.encoders import clear_encoder_cache

    from helpers import write_tiny_clip

    folder = write_tiny_clip(tmp_path / "ckpt", seed=0)
    model = f"openclip-local:{folder}"
    ws = core.Workspace(tmp_path / "w")
    ws.ingest(image_files[:2], texts=["red"])
    assert embed_workspace(ws, model, engine="local").embedded == 3
    write_tiny_clip(folder, seed=1)  # new weights, same id
    clear_encoder_cache()
    try:
        ws.ingest(image_files[2:3], texts=["blue"])
        with pytest.raises(core.StaleVectorsError, match=r"no longer gives.*--refresh"):
            embed_workspace(ws, model, engine="ray")
        for engine in ("ray", "local"):
            with pytest.raises(core.StaleVectorsError, match="no longer gives"):
                embed_manifest(ws, manifest, model, engine=engine)
        assert ws.store(model).count() == 3, "nothing was added"
        assert main(["embed", str(ws.path), "--model", model, "--engine", "ray", "--refresh", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert (out["embedded"], out["cached"]) == (5, 0)
        X, _ids = ws.vectors(model, ids=ws.items[ws.items.text == "red"]["id"].tolist())
        np.testing.assert_allclose(X[0], core.load_encoder(model).encode_texts(["red"])[0], atol=1e-5)
    finally:
        clear_encoder_cache()


@pytest.mark.slow
def test_ray_engine_gives_the_local_engines_vectors_for_photos(ray_local, tmp_path):
    """Photo-sized JPEGs (reduced decoding, EXIF rotation, one unreadable file): both engines go through the
    same image pipeline and give the same vectors, sizes and errors."""
    from PIL import Image

    rng = np.random.default_rng(3)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(5):
        small = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((800, 600), Image.BICUBIC)
        exif = Image.Exif()
        exif[0x0112] = 6 if i % 2 else 1
        small.save(folder / f"{i}.jpg", format="JPEG", quality=90, exif=exif.tobytes())
    src = core.Workspace(tmp_path / "a")
    src.ingest([folder])
    broken = src.items.iloc[1]
    (src.path / broken["image"]).write_bytes(b"\xff\xd8 not a jpeg any more")
    shutil.copytree(src.path, tmp_path / "b")
    other = core.Workspace(tmp_path / "b")
    r_local = embed_workspace(src, MODEL, engine="local", batch_size=2)
    r_ray = embed_workspace(other, MODEL, engine="ray", workers=2, batch_size=2)
    assert r_local.embedded == r_ray.embedded == 4
    assert [s for s, _ in r_local.errors] == [s for s, _ in r_ray.errors] == [broken["source"]]
    Xa, ia = src.vectors(MODEL)
    Xb, ib = other.vectors(MODEL)
    assert list(ia) == list(ib) and broken["id"] not in set(ia)
    np.testing.assert_allclose(Xa, Xb, atol=ATOL)
