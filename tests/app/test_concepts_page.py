"""AppTest of the Concepts page on a copy of the demo-world workspace (400 images + captions, model `demo`)."""
from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

import core

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 180  # patches + PACE + the stability views on 2 busy cores


def concepts_page(**state) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "concepts.py"), default_timeout=TIMEOUT)
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def charts(at: AppTest) -> list[dict]:
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def test_concepts_page_runs_and_shows_three_levels(demo_home):
    at = concepts_page(workspace="demo", model="demo")
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Concepts"]
    assert any("Find concepts" in s for s in texts(at.info))
    at.slider(key="concepts_k").set_value(4)
    at.radio(key="concepts_pred").set_value("A label column")
    at.run()
    at.selectbox(key="concepts_label").select("colour")
    at.button(key="concepts_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    m = {x.label: x.value for x in at.metric}
    assert set(m) == {"faithfulness", "stability", "sparsity", "parsimony"}
    assert any("computed in" in s for s in texts(at.caption)), texts(at.caption)  # not "read from the cache"
    assert m["parsimony"] == "4" and 0.0 <= float(m["faithfulness"]) <= 1.0 and 0.0 <= float(m["sparsity"]) <= 1.0
    # dataset level: four named concepts with their prototype crops
    assert [s.value for s in at.subheader][:3] == ["Concepts in the dataset", "One concept across images", "One image"]
    names = [s for s in texts(at.markdown) if s.startswith("**")]
    assert len(names) == 4
    assert len(at.image) >= 4
    specs = charts(at)
    heatmaps = [c for c in specs if any(t.get("type") == "heatmap" for t in c["data"])]
    bars = [c for c in specs if any(t.get("type") == "bar" for t in c["data"])]
    assert len(heatmaps) >= 2 and len(bars) == 2  # shares + θ of the chosen image
    # the result was saved in the workspace; the download holds one row per image
    assert list((demo_home / "demo" / "derived" / "concepts").rglob("*.json"))
    assert [b for b in at.get("download_button") if "CSV" in b.proto.label]
    # another image and another concept rerun from the saved result
    before = at.selectbox(key="concepts_image").value
    at.selectbox(key="concepts_image").select_index(3).run()
    assert at.selectbox(key="concepts_image").value != before
    at.selectbox(key="concepts_pick").select_index(2).run()
    assert not at.exception and not at.error
    assert any("cache" in s for s in texts(at.caption))


def test_concepts_page_without_images_or_with_a_text_model(demo_home):
    at = concepts_page(workspace="demo", model="minilm")
    assert not at.exception
    assert any("does not encode images" in s for s in texts(at.info))
    core.Workspace(demo_home / "empty")
    at = concepts_page(workspace="empty", model="demo")
    assert not at.exception
    assert any("at least 2 images" in s for s in texts(at.info))


def test_concepts_page_prompt_templates(demo_home):
    """Prompts with templates: a template without '{}' is refused with a warning; a good one is used
    (the saved result records it)."""
    at = concepts_page(workspace="demo", model="demo")
    at.slider(key="concepts_k").set_value(3)
    at.radio(key="concepts_pred").set_value("Zero-shot over my prompts")
    at.run()
    at.text_area(key="concepts_prompts").input("red\nblue\nscarlet")
    at.text_area(key="concepts_templates").input("a photo")
    at.button(key="concepts_run").click().run()
    assert not at.exception, at.exception
    assert any("exactly one '{}'" in s for s in texts(at.warning)), texts(at.warning)
    assert not at.metric
    at.text_area(key="concepts_templates").input("a {} object")
    at.button(key="concepts_run").click().run()
    assert not at.exception and not at.error, (at.exception, texts(at.error))
    assert {x.label for x in at.metric} == {"faithfulness", "stability", "sparsity", "parsimony"}
    assert [w.replace("\\", "").split(".")[0] for w in texts(at.warning)] == [
        "Model demo never saw these words in training: scarlet"]
    saved = [json.loads(p.read_text()) for p in (demo_home / "demo" / "derived" / "concepts").rglob("*.json")]
    assert any(d.get("params", {}).get("templates") == ["a {} object"] for d in saved)
