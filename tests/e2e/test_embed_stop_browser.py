"""Stopping a long embedding from the Data page, in a real browser: what was committed stays, and the next
Embed continues from there.

The workspace holds 900 small images and a text; the model is a mid-sized random open_clip ViT (224-px
input, so each image costs the model a few milliseconds) saved as an ``openclip-local:`` folder. The text
was embedded beforehand, so the model is listed in the sidebar. Leaves a screenshot in
pytest's temporary folder.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from helpers import e2e_marks, wait_for_app_idle

N_IMAGES = 900

pytestmark = e2e_marks()

MID_CFG = {
    "model_cfg": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 224, "patch_size": 16, "width": 256, "layers": 4, "head_width": 64},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    },
    "preprocess_cfg": {"size": 224},
}


@pytest.fixture(scope="module")
def stop_home(tmp_path_factory):
    import open_clip
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    import core

    root = tmp_path_factory.mktemp("stop")
    model_dir = root / "mid-model"
    model_dir.mkdir()
    torch.manual_seed(0)
    model = open_clip.CLIP(**MID_CFG["model_cfg"])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(model_dir / "open_clip_model.safetensors"))
    (model_dir / "open_clip_config.json").write_text(json.dumps(MID_CFG))
    model_id = f"openclip-local:{model_dir}"

    home = root / "home"
    ws = core.Workspace(home / "photos")
    ws.ingest(texts=["a first caption"])
    ws.embed(model_id)  # the model now has vectors here, so the sidebar lists it
    rng = np.random.default_rng(0)
    pics = root / "pics"
    pics.mkdir()
    for i in range(N_IMAGES):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(pics / f"{i}.png")
    assert ws.ingest([pics]).added == N_IMAGES
    return home, model_id


@pytest.fixture(scope="module")
def stop_server(stop_home, tmp_path_factory, serve_home):
    home, model_id = stop_home
    with serve_home(home, tmp_path_factory.mktemp("log") / "server.log") as base:
        yield base, home, model_id


def test_stop_keeps_what_was_embedded_and_embed_continues(stop_server, browser, tmp_path):
    from playwright.sync_api import expect

    import core

    base, home, model_id = stop_server
    total = N_IMAGES + 1
    page = browser.new_page(viewport={"width": 1440, "height": 1600})
    page.set_default_timeout(60_000)
    expect.set_options(timeout=60_000)
    try:
        page.goto(f"{base}/data")
        sidebar = page.get_by_test_id("stSidebar")
        expect(page.get_by_role("heading", name="Data")).to_be_visible(timeout=120_000)
        sidebar.get_by_test_id("stSelectbox").filter(has_text="Workspace").click()
        page.get_by_role("option", name="photos").click()
        expect(page.get_by_text(re.compile(r"^Workspace photos: "))).to_be_visible()
        sidebar.get_by_test_id("stSelectbox").filter(has_text="Model").click()
        page.keyboard.type("mid-model")
        page.get_by_role("option").filter(has_text="mid-model").first.click()
        embed = page.get_by_role("button", name=re.compile(r"^Embed with openclip-local:"))
        expect(embed).to_be_visible()

        embed.click()
        bar = page.get_by_text(re.compile(rf"^\d+/{N_IMAGES} · "))  # core reports images as they are encoded
        expect(bar).to_be_visible()
        page.wait_for_function(  # a few batches in, far from the end
            f"() => [...document.querySelectorAll('[data-testid=stMain] p')].some(p => "
            f"(m => m && +m[1] >= 128 && +m[1] < {N_IMAGES // 2})(p.textContent.match(/^(\\d+)\\/{N_IMAGES} · /)))",
            timeout=120_000)
        page.get_by_role("button", name="Stop embedding").click()
        stopped = page.get_by_text(re.compile(r"^Embedding with openclip-local:.* was stopped: \d+ of \d+ items"))
        expect(stopped).to_be_visible()
        have, items = (int(v) for v in re.search(r"stopped: (\d+) of (\d+) items", stopped.inner_text()).groups())
        ws = core.Workspace(home / "photos", create=False)
        assert items == total and 1 + 128 <= have < total, (have, items, ws.store(model_id).count())
        assert ws.store(model_id).count() == have, "the page reports what is committed on disk"
        expect(page.get_by_text(f"Workspace photos: {total} items (900 images, 1 text) · {have} vectors for "
                                f"{model_id}", exact=False)).to_be_visible()  # the header too
        wait_for_app_idle(page)  # painted before the screenshot
        page.screenshot(path=str(tmp_path / "embed_stopped.png"), full_page=True)

        page.get_by_role("button", name=re.compile(r"^Embed with openclip-local:")).click()
        done = page.get_by_text(re.compile(rf"embedded, {have} already had vectors"))
        expect(done).to_be_visible(timeout=180_000)
        assert f"{total - have} embedded" in done.inner_text()
        assert ws.store(model_id).count() == total
        assert not page.get_by_test_id("stException").count()
    finally:
        page.close()
