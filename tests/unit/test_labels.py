"""Named clusters on a map (core.labels): zero-shot names on the demo world, c-TF-IDF names in a space without a
text encoder, the cache, the CLI's JSON, names drawn literally in figures and HTML, 3-D maps."""
from __future__ import annotations

import collections
import json

import numpy as np
import pandas as pd
import pytest

import core.labels
from core.cli import main
from core.demo.evaluate import cluster_names
from core.export import map_html
from core.labels import map_labels
from core.plots import map_figure
from core.projection import compute_map
from core.workspace import Workspace

KEYS = {"cluster", "level", "name", "score", "runner_up", "runner_up_score", "method", "n", "x", "y", "parent",
        "ids", "top_ids"}


def test_demo_world_clusters_are_named_by_their_colour_or_shape(demo_ws):
    res = compute_map(demo_ws, "demo", method="pca", modalities=["image"])
    for level in ("coarse", "fine"):
        labels = map_labels(demo_ws, "demo", res, level=level)
        assert all(set(d) >= KEYS and "z" not in d for d in labels)
        # images paired with captions, with colour/shape metadata: named by a metadata value or their captions
        assert {d["method"] for d in labels} <= {"zero-shot", "c-tf-idf+model", "metadata:colour", "metadata:shape",
                                                  "metadata:colour2", "metadata:shape2", "metadata:size"}
        assert {d["level"] for d in labels} == {level}
        assert [d["cluster"] for d in labels] == list(range(len(labels)))
        members = [i for d in labels for i in d["ids"]]
        assert sorted(members) == sorted(res.ids.tolist()), "every point in exactly one cluster"
        assert cluster_names(demo_ws, labels)["share"] >= 0.9
        assert cluster_names(demo_ws, [{**d, "name": "object"} for d in labels])["share"] == 0
        pos = {k: i for i, k in enumerate(res.ids.tolist())}
        for d in labels:
            rows = [pos[i] for i in d["ids"]]
            assert (d["x"], d["y"]) == pytest.approx(tuple(np.median(res.coords[rows], axis=0)), abs=1e-5)
            assert 1 <= len(d["top_ids"]) <= 5 and set(d["top_ids"]) <= set(d["ids"])
            assert d["runner_up"] != d["name"] and d["name"] in {e["name"] for e in labels}
            if d["method"].startswith("metadata:"):
                assert d["share"] >= core.labels.META_SHARE
    names = [d["name"] for d in map_labels(demo_ws, "demo", res)]
    assert len(set(names)) == len(names), "coarse names are unique"
    coarse = map_labels(demo_ws, "demo", res)
    assert 2 <= len(coarse) <= 12 and len(labels) > len(coarse)
    by_parent = {d["cluster"]: set(d["ids"]) for d in coarse}
    assert all(set(d["ids"]) <= by_parent[d["parent"]] for d in labels), "fine clusters nest in coarse ones"


def _topic_workspace(tmp_path) -> Workspace:
    """18 texts in 3 planted topics: 8-d precomputed vectors around 3 far-apart centres, captions sharing
    filler words, each topic with its own word and words that vary inside it."""
    rng = np.random.default_rng(3)
    topics = {"astronomy": ["telescope", "galaxy", "orbit"], "cooking": ["oven", "recipe", "butter"],
              "football": ["stadium", "goal", "referee"]}
    centres = np.eye(8, dtype=np.float32)[:3] * 5
    rows = []
    for t, (topic, extra) in enumerate(topics.items()):
        for i in range(6):
            rows.append({"text": f"weekly notes about {topic} and {extra[i % 3]} number {t * 6 + i}",
                         "vec": centres[t] + rng.normal(scale=0.3, size=8).astype(np.float32), "topic": topic})
    pd.DataFrame(rows).to_parquet(tmp_path / "notes.parquet")
    ws = Workspace(tmp_path / "w")
    rep = ws.ingest([tmp_path / "notes.parquet"], roles={"topic": "ignore"})
    assert rep.added == 18 and not rep.errors, rep.errors
    return ws


def test_spaces_without_a_text_encoder_are_named_by_ctfidf(tmp_path):
    ws = _topic_workspace(tmp_path)
    res = compute_map(ws, "precomputed:vec", method="pca")
    labels = map_labels(ws, "precomputed:vec", res)
    items = ws.items.set_index("id")
    assert len(labels) == 3 and {d["method"] for d in labels} == {"c-tf-idf"}
    for d in labels:
        (topic,) = set(items.loc[d["ids"], "text"].str.split().str[3])  # "weekly notes about <topic> ..."
        assert d["name"] == topic, (d["name"], topic)  # the shared filler words never win
        assert d["score"] >= d["runner_up_score"] > 0 and d["n"] == 6 and d["share"] == 1.0
    only = map_labels(ws, "precomputed:vec", res, words=["orbit", "oven", "referee", "weekly"], only_words=True)
    assert sorted(d["name"] for d in only) == ["orbit", "oven", "referee"]
    with pytest.raises(ValueError, match="at least one word"):
        map_labels(ws, "precomputed:vec", res, only_words=True)


def test_clusters_without_any_text_are_numbered(tmp_path):
    rng = np.random.default_rng(0)
    pd.DataFrame({"vec": list(rng.normal(size=(12, 4)).astype(np.float32)),
                  "weight": rng.random(12)}).to_parquet(tmp_path / "rows.parquet")
    ws = Workspace(tmp_path / "w")
    ws.ingest([tmp_path / "rows.parquet"])
    res = compute_map(ws, "precomputed:vec", method="pca")
    labels = map_labels(ws, "precomputed:vec", res)
    assert [d["name"] for d in labels] == [f"cluster {i + 1}" for i in range(len(labels))]
    assert {d["method"] for d in labels} == {"none"} and all(d["score"] is None for d in labels)


def test_rows_without_captions_are_named_from_their_text_metadata(tmp_path):
    rng = np.random.default_rng(1)
    tags = ["harbour"] * 6 + ["orchard"] * 6
    vecs = np.repeat(np.eye(4, dtype=np.float32)[:2] * 5, 6, axis=0) + rng.normal(scale=0.2, size=(12, 4))
    pd.DataFrame({"vec": list(vecs.astype(np.float32)), "tag": tags, "size": rng.random(12)}).to_parquet(
        tmp_path / "rows.parquet")
    ws = Workspace(tmp_path / "w")
    ws.ingest([tmp_path / "rows.parquet"], roles={"tag": "metadata"})
    assert set(ws.items["modality"]) == {"row"}
    res = compute_map(ws, "precomputed:vec", method="pca")
    labels = map_labels(ws, "precomputed:vec", res)
    assert sorted(d["name"] for d in labels) == ["harbour", "orchard"]
    assert {d["method"] for d in labels} == {"metadata:tag"} and {d["share"] for d in labels} == {1.0}


def test_second_call_reads_the_cache_until_the_items_change(demo_ws, monkeypatch):
    res = compute_map(demo_ws, "demo", method="pca")
    first = map_labels(demo_ws, "demo", res, words=["crimson"])
    calls = collections.Counter()
    real_clusters, real_vectors = core.labels.clusters, core.labels.vocabulary_vectors

    def counting(fn, name):
        def wrapped(*a, **kw):
            calls[name] += 1
            return fn(*a, **kw)
        return wrapped

    monkeypatch.setattr(core.labels, "clusters", counting(real_clusters, "cluster"))
    monkeypatch.setattr(core.labels, "vocabulary_vectors", counting(real_vectors, "encode"))
    assert map_labels(demo_ws, "demo", res, words=["crimson"]) == first
    assert calls == {}, "a second call neither clusters nor encodes"
    assert len(list(demo_ws.derived_dir("labels", "demo").glob("*.json"))) == 1
    map_labels(demo_ws, "demo", res)  # other words: another cache file
    assert calls["cluster"] == 1
    demo_ws.ingest(texts=["a new caption about nothing"])  # the items changed: names are computed again
    map_labels(demo_ws, "demo", res, words=["crimson"])
    assert calls["cluster"] == 2
    map_labels(demo_ws, "demo", res, words=["crimson"], use_cache=False)
    assert calls["cluster"] == 3


def test_gap_corrected_maps_cluster_images_with_their_captions(demo_ws):
    def mixed(gap: bool) -> int:
        res = compute_map(demo_ws, "demo", method="pca", gap_corrected=gap)
        modality = dict(zip(res.ids.tolist(), res.modality.tolist()))
        shares = [np.mean([modality[i] == "image" for i in d["ids"]]) for d in map_labels(demo_ws, "demo", res)]
        return sum(0.25 <= s <= 0.75 for s in shares)

    assert mixed(True) >= 8 > mixed(False)


def _texts_of(fig) -> list[str]:
    d = fig.to_dict()
    notes = d["layout"].get("annotations") or d["layout"].get("scene", {}).get("annotations") or []
    out = [a["text"] for a in notes]
    for tr in d["data"]:
        for key in ("text", "hovertext", "name"):
            v = tr.get(key)
            out += [str(x) for x in (v if isinstance(v, (list, tuple)) else [v]) if x is not None]
    return out


def test_names_with_markup_stay_literal_in_figure_and_html(demo_ws):
    res = compute_map(demo_ws, "demo", method="pca", modalities=["image"])
    words = ["<b>red</b>", "<img src=x onerror=alert(1)>", "blue & green"]
    labels = map_labels(demo_ws, "demo", res, words=words, only_words=True)
    assert {d["name"] for d in labels} & set(words[:2]), "a name with markup is used"
    fig = map_figure(res.coords, customdata=res.ids, labels=labels)
    trace = fig.data[-1]
    assert trace.type == "scattergl" and trace.mode == "text" and trace.showlegend is False
    assert list(trace.customdata) == [f"cluster:{d['cluster']}" for d in labels]
    assert all(" items · score " in h for h in trace.hovertext)
    assert len(fig.layout.annotations) == len(labels)
    assert fig.layout.annotations[0].font.shadow and fig.layout.annotations[0].font.weight == "bold"
    texts = _texts_of(fig)
    assert not any("<b>" in t or "<img" in t for t in texts)
    assert any("&lt;b&gt;red&lt;/b&gt;" in t for t in texts)
    page = map_html(demo_ws, "demo", res, labels=labels, thumbs=0)
    # plotly writes the figure as JSON with < > / as \u003c \u003e \u002f
    assert "<b>red</b>" not in page and "\\u003cb\\u003ered" not in page and "\\u003cimg src=x" not in page
    assert '"text":"&lt;b&gt;red&lt;' in page and "clusters named (zero-shot" in page


def test_three_d_maps_get_names_in_space(demo_ws):
    res = compute_map(demo_ws, "demo", method="pca", dim=3)
    labels = map_labels(demo_ws, "demo", res, level="fine")
    pos = {k: i for i, k in enumerate(res.ids.tolist())}
    for d in labels:
        assert d["z"] == pytest.approx(float(np.median(res.coords[[pos[i] for i in d["ids"]], 2])), abs=1e-5)
    fig = map_figure(res.coords, dim=3, labels=labels)
    trace = fig.data[-1]
    assert trace.type == "scatter3d" and trace.mode == "text"
    assert list(trace.z) == pytest.approx([d["z"] for d in labels])
    assert [a.text for a in fig.layout.scene.annotations] == [d["name"] for d in labels]


def run_json(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def test_cli_map_labels_json_and_html(demo_ws, capsys, tmp_path):
    ws = str(demo_ws.path)
    page = tmp_path / "map.html"
    code, doc, _ = run_json(capsys, "map", ws, "--model", "demo", "--method", "pca", "--labels", "--html",
                            str(page), "--json")
    assert code == 0
    labels = doc["labels"]
    assert labels and all(set(d) >= KEYS and d["level"] == "coarse" for d in labels)
    assert sum(d["n"] for d in labels) == doc["n"] and doc["unknown_words"] == []
    assert all(isinstance(d["x"], float) and isinstance(d["ids"][0], str) for d in labels)
    methods = ", ".join(sorted({d["method"] for d in labels}))
    assert f'"text":"{labels[0]["name"]}"' in page.read_text() and f"clusters named ({methods};" in page.read_text()
    code, fine, err = run_json(capsys, "map", ws, "--model", "demo", "--method", "pca", "--labels", "fine",
                               "--vocab", "crimson", "--vocab", "disc", "--json")
    assert code == 0 and len(fine["labels"]) > len(labels) and {d["level"] for d in fine["labels"]} == {"fine"}
    assert fine["unknown_words"] == ["crimson", "disc"] and "crimson" in err
    assert run_json(capsys, "map", ws, "--model", "demo", "--vocab", "red", "--json")[0] == 2
    assert run_json(capsys, "map", ws, "--model", "demo", "--labels", "--vocab-only", "--json")[0] == 2
    assert run_json(capsys, "map", ws, "--model", "demo", "--labels", "medium", "--json")[0] == 2


def test_restricted_unpickler_refuses_anything_but_a_bunch_of_arrays(tmp_path):
    import pickle
    import zlib

    import real_text

    bad = tmp_path / "bad"
    bad.write_bytes(zlib.compress(pickle.dumps(collections.OrderedDict(a=1), protocol=2)))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load collections\.OrderedDict"):
        real_text.load_bunch(bad)


def test_news_posts_embedded_with_minilm_get_names_grounded_in_their_texts(tmp_path):
    import real_text

    real_text.require("mini_newsgroup")
    posts = real_text.newsgroups()
    assert {p["label"] for p in posts} == {"alt.atheism", "sci.space"} and len(posts) > 150
    assert not any(p["text"].startswith(("From:", "Newsgroups:")) for p in posts), "headers stripped"
    pd.DataFrame({"text": [p["text"][:2000] for p in posts]}).to_csv(tmp_path / "news.csv", index=False)
    ws = Workspace(tmp_path / "w")
    ws.ingest([tmp_path / "news.csv"])
    ws.embed("minilm")
    res = compute_map(ws, "minilm", method="pca")
    labels = map_labels(ws, "minilm", res)
    g = core.labels.grounding(labels, ws.items.set_index("id")["text"].dropna().to_dict())
    assert g["share"] >= 0.9, g["rows"]
    assert g["sibling_duplicates"] == 0 and len({d["name"] for d in labels}) == len(labels)
    assert {d["method"] for d in labels} == {"c-tf-idf+model"}


def test_a_table_is_named_by_the_categorical_column_that_separates_its_clusters(tmp_path):
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "cultivar A", 1: "cultivar B", 2: "cultivar C"})
    frame.to_csv(tmp_path / "wine.csv", index=False)
    ws = Workspace(tmp_path / "w")
    ws.ingest([tmp_path / "wine.csv"])
    res = compute_map(ws, "precomputed:numeric", method="pca")
    items = ws.items.set_index("id")
    for level in ("coarse", "fine"):
        labels = map_labels(ws, "precomputed:numeric", res, level=level)
        pure = 0
        for d in labels:
            shares = items.loc[d["ids"], "target"].value_counts(normalize=True)
            if shares.iloc[0] >= 0.8:
                pure += 1
                assert d["method"] == "metadata:target" and d["name"].split(",")[0] == shares.index[0], d
                assert d["share"] == pytest.approx(shares.iloc[0], abs=1e-3)
        assert pure >= len(labels) // 2
        siblings = collections.Counter((d["parent"] if level == "fine" else 0, d["name"]) for d in labels)
        assert max(siblings.values()) == 1, siblings


def test_images_without_any_text_are_named_zero_shot(demo_ws, tmp_path):
    from core.search import default_vocabulary

    images = demo_ws.items[demo_ws.items["modality"] == "image"].head(60)
    ws = Workspace(tmp_path / "bare")
    rep = ws.ingest([demo_ws.path / p for p in images["image"]])  # the images alone: no caption, no metadata
    assert rep.added == 60 and set(ws.items["modality"]) == {"image"}
    ws.embed("demo")
    labels = map_labels(ws, "demo", compute_map(ws, "demo", method="pca"))
    assert {d["method"] for d in labels} == {"zero-shot"} and all(d["share"] is None for d in labels)
    assert {d["name"] for d in labels} <= set(default_vocabulary("demo"))
    assert len({d["name"] for d in labels}) == len(labels), "siblings never share a name"
