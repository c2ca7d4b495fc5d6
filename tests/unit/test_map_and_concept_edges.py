"""Small edges of the core: a lone selected map point is ringed, map axes stay hidden under density
contours, concept names are distinct, and "the images with the most of a concept" have some of it."""
from __future__ import annotations

import numpy as np

from core.concepts.explain import ConceptsResult, name_concepts
from core.plots import MAX_RINGED, map_figure, marker_size


def _coords(n: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 2)).astype(np.float32)


def _rings(fig) -> list:
    return [t for t in fig.data if getattr(t.marker, "symbol", None) == "circle-open"]


def test_a_lone_selected_point_is_ringed_where_it_is():
    coords = _coords()
    ids = [f"i{k}" for k in range(len(coords))]
    fig = map_figure(coords, customdata=ids, selected=["i7"])
    [ring] = _rings(fig)
    assert (float(ring.x[0]), float(ring.y[0])) == (float(coords[7, 0]), float(coords[7, 1]))
    assert ring.marker.size >= 3 * marker_size(len(coords)) and ring.marker.size >= 15
    assert ring.customdata is None and ring.hoverinfo == "skip"  # clicks and selections pass to the point
    # the point itself is still selected in its own trace (the rest grey)
    assert any(t.selectedpoints and list(t.selectedpoints) == [7] for t in fig.data if t.customdata is not None)


def test_rings_only_for_a_few_points_and_only_in_2d():
    coords = np.random.default_rng(1).normal(size=(200, 3)).astype(np.float32)
    ids = [f"i{k}" for k in range(len(coords))]
    assert not _rings(map_figure(coords, customdata=ids))
    assert len(_rings(map_figure(coords, customdata=ids, selected=ids[:MAX_RINGED]))[0].x) == MAX_RINGED
    assert not _rings(map_figure(coords, customdata=ids, selected=ids[:MAX_RINGED + 1]))  # the grey shows them
    assert not _rings(map_figure(coords, customdata=ids, selected=["i3"], dim=3))


def test_density_map_hides_its_axes_as_the_plain_map_does():
    coords = _coords()
    for density in (False, True):
        fig = map_figure(coords, density=density)
        assert any(t.type == "contour" for t in fig.data) == density
        for axis in (fig.layout.xaxis, fig.layout.yaxis):
            assert axis.visible is False and axis.ticks == "" and axis.showticklabels is False


def test_concepts_never_share_a_lead_name():
    # concepts 0 and 1 are both nearest to "red"; 0 is closer, so 1 leads with its runner-up
    vocab = ["red", "blue", "circle", "square"]
    words = np.eye(4, 6)
    concepts = np.array([words[0] * 1.0 + words[2] * 0.1, words[0] * 0.8 + words[1] * 0.6, words[3] * 1.0])
    patches = np.random.default_rng(0).normal(scale=0.01, size=(50, 6))
    same = name_concepts(concepts, patches, words, vocab, n=3, distinct=False)
    assert same[0][0][0] == same[1][0][0] == "red"  # the clash this guards against
    names = name_concepts(concepts, patches, words, vocab, n=3)
    leads = [c[0][0] for c in names]
    assert leads == ["red", "blue", "square"] and len(set(leads)) == 3
    assert [w for w, _ in names[1]][:2] == ["blue", "red"]  # the clashing word stays, second
    assert dict(names[1]) == dict(same[1])  # same words, same scores: only the order moved
    assert names[0] == same[0] and names[2] == same[2]


def test_distinct_names_reach_past_the_top_n_and_survive_a_small_vocabulary():
    vocab = ["red", "blue", "green"]
    words = np.eye(3, 4)
    concepts = np.array([words[0], words[0] * 0.9 + words[1] * 0.1, words[0] * 0.8 + words[1] * 0.1])
    patches = np.zeros((5, 4))
    names = name_concepts(concepts, patches, words, vocab, n=1)  # one name each, still distinct
    assert sorted(c[0][0] for c in names) == ["blue", "green", "red"] and all(len(c) == 1 for c in names)
    four = np.vstack([concepts, words[2]])
    leads = [c[0][0] for c in name_concepts(four, patches, words, vocab, n=2)]
    assert len(leads) == 4 and set(leads) == set(vocab)  # 4 concepts, 3 words: one lead must repeat


def test_top_images_list_only_images_that_have_the_concept():
    theta = np.array([[0.90, 0.10, 0.00],
                      [0.50, 0.50, 0.00],
                      [0.99, 0.005, 0.005],
                      [0.60, 0.40, 0.00]], np.float32)
    res = ConceptsResult(model="m", k=3, ids=np.array(["a", "b", "c", "d"]), concepts=[], theta=theta,
                         phi=np.zeros((4, 4, 3), np.float32), attention=np.zeros((4, 4), np.float32),
                         predicted=np.array(["x"] * 4), grid=(2, 2), image_size=(8, 8), metrics={}, params={},
                         prediction_source="model")
    assert res.top_images(2, n=6).tolist() == [2]  # θ = 0 is not "the most of" anything
    assert res.top_images(2, n=6, min_share=0.1).tolist() == []  # 0.005 < 0.1 / 3: not used either
    assert res.top_images(1, n=6, min_share=0.1).tolist() == [1, 3, 0]
    assert res.top_images(0, n=2).tolist() == [2, 0]
