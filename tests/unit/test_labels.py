"""Named clusters on a map (core.labels): zero-shot names on the demo world, c-TF-IDF names in a space without a
text encoder, the cache, the CLI's JSON, names drawn literally in figures and HTML, 3-D maps."""
from __future__ import annotations

import base64
import collections
import json

import numpy as np
import pandas as pd
import pytest

import core.labels
import core.mapvectors
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
    # the HTML map gets the names as JSON data (its script sets them as text), never as markup in the page
    assert [d["name"] for d in _map_data(page)["labels"]] == [d["name"] for d in labels]
    assert "<b>red</b>" not in page and "<img src=x" not in page and "clusters named (zero-shot" in page


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


def _map_data(page: str) -> dict:
    """The data of a standalone HTML map (core.export.view_html): its ``application/json`` script element."""
    start = page.index('<script type="application/json" id="jointscope-map-data">')
    return json.loads(page[page.index(">", start) + 1: page.index("</script>", start)])


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
    drawn = _map_data(page.read_text())["labels"]
    assert [d["name"] for d in drawn] == [d["name"] for d in labels]
    assert f"clusters named ({methods})" in page.read_text()
    assert [len(np.frombuffer(base64.b64decode(d["rows"]["b64"]), "<i4")) for d in drawn] == [d["n"] for d in labels]
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


@pytest.mark.slow  # MiniLM embeds 150+ news posts: 24 s on 2 cores, 140 s when they are busy
@pytest.mark.timeout(600)
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
    from core.vocabulary import default_vocabulary

    images = demo_ws.items[demo_ws.items["modality"] == "image"].head(60)
    ws = Workspace(tmp_path / "bare")
    rep = ws.ingest([demo_ws.path / p for p in images["image"]])  # the images alone: no caption, no metadata
    assert rep.added == 60 and set(ws.items["modality"]) == {"image"}
    ws.embed("demo")
    labels = map_labels(ws, "demo", compute_map(ws, "demo", method="pca"))
    assert {d["method"] for d in labels} == {"zero-shot"} and all(d["share"] is None for d in labels)
    assert {d["name"] for d in labels} <= set(default_vocabulary("demo"))
    assert len({d["name"] for d in labels}) == len(labels), "siblings never share a name"


def _comparable(labels: list[dict]) -> list[tuple]:
    return [(d["name"], d["method"], d["n"], d["parent"], d["ids"], d["top_ids"], d["runner_up"], d["words"],
             d["share"]) for d in labels]


@pytest.mark.parametrize("gap", [False, True])
def test_names_read_chunk_by_chunk_are_those_of_every_vector_at_once(demo_ws, monkeypatch, gap):
    """Naming reads the map's vectors :data:`core.mapvectors.CHUNK` rows at a time; with chunks of 64 rows (12 of
    them) the clusters, names and closest items are those read in one chunk, and they match what the
    cluster means of every vector held at once give (the items closest to the mean; the zero-shot ranking
    of core.vocabulary.label_clusters)."""
    from core.encoders import unit_rows
    from core.projection import map_vectors
    from core.vocabulary import label_clusters, naming_vocabulary, vocabulary_vectors

    res = compute_map(demo_ws, "demo", method="pca", gap_corrected=gap)
    assert len(res.ids) > 10 * 64
    words = ["red", "blue", "green", "disc", "square", "triangle"]
    runs = [{"level": "coarse"}, {"level": "fine"}, {"level": "coarse", "words": words, "only_words": True}]
    whole = [map_labels(demo_ws, "demo", res, use_cache=False, **kw) for kw in runs]
    monkeypatch.setattr(core.mapvectors, "CHUNK", 64)
    parts = [map_labels(demo_ws, "demo", res, use_cache=False, **kw) for kw in runs]
    for a, b in zip(whole, parts):
        assert _comparable(a) == _comparable(b)
        assert [d["score"] for d in a] == pytest.approx([d["score"] for d in b], abs=2e-4)

    X = unit_rows(map_vectors(demo_ws, "demo", ids=res.ids))  # every vector at once, as naming once read them
    pos = {k: i for i, k in enumerate(res.ids.tolist())}
    for labels in whole:
        for d in labels:
            rows = np.array([pos[i] for i in d["ids"]])
            mean = unit_rows(X[rows].mean(0))
            assert d["top_ids"] == res.ids[rows[np.argsort(-(X[rows] @ mean), kind="stable")[:5]]].tolist()
    cluster = np.empty(len(res.ids), np.int64)
    for d in whole[2]:
        cluster[[pos[i] for i in d["ids"]]] = d["cluster"]
    vocab = naming_vocabulary("demo", words, only=True)
    ranked = label_clusters(X, cluster, vocabulary_vectors("demo", vocab), vocab, k=5)
    assert {d["method"] for d in whole[2]} == {"zero-shot"}
    for d in whole[2]:
        assert d["words"] == [w for w, _ in ranked[d["cluster"]]]
        assert d["score"] in {round(s, 4) for _, s in ranked[d["cluster"]]}


MODEL = "precomputed:emb"
KINDS = ["apple", "river", "stone", "cloud", "tiger", "violin", "copper", "meadow"]


def _synthetic_map(path, n: int, dim: int):
    """A workspace of ``n`` rows in 8 kinds written directly (items + one float16 vector shard: ``dim``-d
    vectors around one centre per kind), each row with a "kind" value and a short note, and a map of it
    (a :class:`core.projection.MapResult` with 2-D coordinates near its kind's place)."""
    from core.projection import MapResult

    rng = np.random.default_rng(0)
    ids = np.array([f"{i:016x}" for i in range(n)])
    kind = rng.integers(0, len(KINDS), n)
    centres = rng.normal(size=(len(KINDS), dim)).astype(np.float32)
    X = centres[kind] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    ws = Workspace(path)
    ws.add_rows(pd.DataFrame({"id": ids, "modality": "row", "source": "synthetic.parquet",
                              "kind": [f"kind {KINDS[v]}" for v in kind],
                              "text": [f"a note on {KINDS[v]} and {KINDS[(v + i) % 8]}" for i, v in enumerate(kind)]}))
    with ws.writing():
        ws.store(MODEL).append(X, ids, dtype="float16")
    coords = (centres[kind, :2] * 5 + rng.normal(size=(n, 2))).astype(np.float32)
    res = MapResult(ids=ids, coords=coords, modality=np.full(n, "row"), trust=np.ones(n, np.float32),
                    trustworthiness=1.0, method="pca", dim=2, gap_corrected=False, params={}, seconds=0.0,
                    path=path / "maps" / "synthetic" / "map.npz", cache="fit")
    return ws, res


@pytest.mark.slow  # ~60 s: two workspaces of 50,000 and 200,000 256-d vectors named
@pytest.mark.timeout(600)
def test_naming_a_large_map_reads_its_vectors_in_chunks_and_its_memory_does_not_grow_with_it(tmp_path,
                                                                                                monkeypatch):
    """No read of the vector store asks for more than CHUNK rows (the k-means sample included), and the
    peak memory naming takes grows by less than one float32 vector per item from 50,000 to 200,000 items:
    no array of every vector is ever held (reading them at once would cost 1 kB per item, 4 × 256)."""
    import tracemalloc

    from core import vectorstore

    dim, chunk = 256, 16_384
    monkeypatch.setattr(core.mapvectors, "CHUNK", chunk)  # the same chunks at both sizes (both above it)
    reads: list[int] = []
    take = vectorstore._StoreView.take

    def counting(view, rows):
        reads.append(len(rows))
        return take(view, rows)

    monkeypatch.setattr(vectorstore._StoreView, "take", counting)
    warm_ws, warm_res = _synthetic_map(tmp_path / "warm", 3_000, dim)
    map_labels(warm_ws, MODEL, warm_res)  # imports and first-call caches, outside the measurement
    peak = {}
    for n in (50_000, 200_000):
        ws, res = _synthetic_map(tmp_path / f"w{n}", n, dim)
        ws.items  # noqa: B018 - the items frame is read before measuring (the app holds it anyway)
        reads.clear()
        tracemalloc.start()
        try:
            labels = map_labels(ws, MODEL, res, use_cache=False)
            peak[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert reads and max(reads) <= chunk, max(reads)
        assert sum(reads) >= 3 * n  # clusters assigned, means and closest items: every vector read, in chunks
        assert sorted(i for d in labels for i in d["ids"]) == res.ids.tolist()
        items = ws.items.set_index("id")["kind"]
        assert len(labels) >= len(KINDS)
        for d in labels:  # each cluster is one kind, named by it (the kinds are far apart)
            (kind,) = set(items.loc[d["ids"]])
            assert d["method"] == "metadata:kind" and d["name"].startswith(kind), (d["name"], kind)
            assert set(d["top_ids"]) <= set(d["ids"]) and len(d["top_ids"]) == 5
    per_item = (peak[200_000] - peak[50_000]) / 150_000
    assert per_item < 4 * dim, f"naming holds {per_item:.0f} more bytes per item (peaks {peak})"
