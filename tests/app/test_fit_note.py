"""AppTest checks of the fit note: on real photographs (where `demo`, a shapes-world model, is near chance)
the Quality and Map pages say so in one sentence, the noisy-pair flags are not shown as wrong captions and
the true-pair cosine gets no green arrow; on the demo world none of that happens."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from real_photos import create_real_photos_workspace
from streamlit.proto.Metric_pb2 import Metric
from streamlit.testing.v1 import AppTest

import core
from core.quality import fit_verdict
from pages.ui.text import plain

import helpers
from helpers import texts

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 180  # quality measures + a first map on 2 busy cores
NOTE = "no better than chance"


@pytest.fixture(scope="module")
def photos_template(tmp_path_factory) -> Path:
    """scikit-image's photographs with honest captions, embedded with `demo` (built once for this module)."""
    return create_real_photos_workspace(tmp_path_factory.mktemp("fit_note") / "photos").path


@pytest.fixture
def photos_home(home, photos_template) -> Path:
    shutil.copytree(photos_template, home / "photos")
    return home


def run_page(name: str, **state) -> AppTest:
    return helpers.run_page(name, timeout=TIMEOUT, **state)


def pair_metric(at: AppTest):
    [m] = [m for m in at.metric if m.label == "true-pair cosine"]
    return m


def test_quality_page_says_demo_is_near_chance_on_photographs(photos_home):
    at = run_page("quality", workspace="photos", model="demo")
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    fit = fit_verdict(core.Workspace(photos_home / "photos", create=False), "demo")
    assert fit["verdict"] == "near chance" and NOTE in fit["reason"]
    notes = [w for w in texts(at.warning) if NOTE in w]
    assert notes == [plain(fit["reason"], limit=500)]  # the sentence core wrote, Markdown-escaped
    # the noisy-pair scores are not offered as wrong captions
    assert any("mean nothing on this model" in i for i in texts(at.info))
    assert not any("likely a wrong or unrelated caption" in c for c in texts(at.caption))
    assert at.tabs[0].label == "Noisy pairs (—)"


def test_quality_page_has_no_note_on_the_demo_world(demo_home):
    at = run_page("quality", workspace="demo", model="demo")
    assert not at.exception, at.exception
    assert not any(NOTE in w or "better than chance" in w for w in texts(at.warning))
    assert not any("mean nothing" in i for i in texts(at.info))


def test_map_metric_is_neutral_within_noise(photos_home, demo_home):
    at = run_page("map", workspace="photos", model="demo", map_method="PCA")
    assert not at.exception, at.exception
    assert any(NOTE in w for w in texts(at.warning))
    m = pair_metric(at)
    assert m.proto.color == Metric.MetricColor.GRAY and "not beyond noise" in m.proto.help
    at = run_page("map", workspace="demo", model="demo", map_method="PCA")
    assert not at.exception, at.exception
    assert not any(NOTE in w for w in texts(at.warning))
    m = pair_metric(at)
    assert m.proto.color == Metric.MetricColor.GREEN and "not beyond noise" not in m.proto.help
