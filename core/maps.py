"""Workspace maps: one model's vectors of a workspace mapped to 2-D or 3-D, with trust, cached in the workspace.

* :func:`compute_map` — one model's vectors of a workspace (any subset of modalities) to a
  :class:`MapResult` with per-point trust and the sampled trustworthiness, through a
  :class:`core.projection.Projector`. Coordinates are cached in the workspace keyed by model + parameters
  + item set; reopening is a cache hit, and after new items were embedded only those are placed
  (``cache="incremental"``).
* Large workspaces: every item is mapped. Above :data:`FIT_POINTS` items (or ``max_points``), UMAP/PCA is
  fitted on a seeded random sample of that many items and every other item is placed: UMAP maps put it
  at the distance-weighted mean of the map positions of its :data:`PLACE_K` nearest sample items (an
  hnswlib :class:`core.index.NeighborIndex` over the sample; a small seeded jitter keeps items with the
  same neighbours from stacking exactly), PCA maps project it with the fitted components.
  ``MapResult.fitted`` says which rows were fitted; the vectors are read in chunks, never all at once.
  :func:`place_in_map` adds items that are not on a map (another modality) without refitting it.
  Reopening a cached map reads ids only, never the vectors.
* The vectors of a map's points (:func:`map_vectors`, for colouring) and the items with vectors per
  modality (:func:`vector_modalities`).

Every name here is importable from :mod:`core.projection` too.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .artifacts import SIDECAR, Codec, artifact_key, npz_array, register_codec
from .encoders import unit_rows
from .params import validate
from .progress import StageProgress
from .projection import (
    PROJECTOR_CONSTRAINTS,
    TRUST_K,
    TRUST_SAMPLE,
    knn_graph,
    neighbour_overlap,
    sampled_trustworthiness,
)
from .storage import remove_file

log = logging.getLogger(__name__)

REFIT_SHARE = 0.5  # refit instead of placing new items when they exceed this share of the mapped ones
FIT_POINTS = 50_000  # above this many items a map is fitted on a sample of this size, the rest is placed
PLACE_K = 10  # sample neighbours a placed item's position is the weighted mean of
PLACE_JITTER = 0.05  # placed items move by N(0, 1) x this x the spread of their neighbours' map positions
PLACE_CHUNK = 65_536  # items whose vectors are read and placed at a time
PLACE_RECALL = 0.9  # recall@10 the sample's hnswlib index is tuned to (a weighted mean of 10 needs no more)
PLACE_DIM = 128  # above this many dimensions the sample is searched in its leading singular directions
PLACEMENT = "knn-mean-1"  # names the placement in the cache key of sampled maps
_FORMAT = 1


# ---- workspace maps --------------------------------------------------------------------------------
@dataclass
class MapResult:
    """A map of one model's vectors in a workspace.

    ``ids`` (n,) item ids, sorted; ``coords`` (n, dim) float32; ``modality`` (n,) str; ``trust`` (n,)
    float32 share of each point's 10 nearest neighbours kept on the map; ``trustworthiness`` on a sample.
    ``cache``: "hit" (read from the workspace), "incremental" (new items placed) or "fit".
    ``fitted``: (n,) bool, the rows UMAP/PCA was fitted on when the map was fitted on a sample (the other
    rows were placed, see the module docstring); None when every row was fitted.
    """

    ids: np.ndarray
    coords: np.ndarray
    modality: np.ndarray
    trust: np.ndarray
    trustworthiness: float
    method: str
    dim: int
    gap_corrected: bool
    params: dict
    seconds: float
    path: Path
    cache: str
    n_new: int = 0
    extra: dict = field(default_factory=dict)
    n_total: int | None = None  # items the map stands for (n: every item is on the map)
    fitted: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def n_fitted(self) -> int:
        """How many rows UMAP/PCA was fitted on (the others were placed)."""
        return self.n if self.fitted is None else int(np.count_nonzero(self.fitted[: self.n]))

    @property
    def sampled(self) -> bool:
        """Whether the map shows only some of the items (only after :func:`place_in_map` added others)."""
        return self.n_total is not None and self.n_total > self.n


def _params(method, dim, gap_corrected, n_neighbors, min_dist, random_state, fit_points=None) -> dict:
    p = {"method": method, "n_components": int(dim), "gap_corrected": bool(gap_corrected),
         "random_state": int(random_state)}
    if method == "umap":
        p.update(n_neighbors=int(n_neighbors), min_dist=float(min_dist))
    if fit_points is not None:  # only when the map is fitted on a sample, so other maps keep their cache keys
        p["fit_points"] = int(fit_points)
        p["placement"] = PLACEMENT
    return p


def _fit_points(max_points) -> int:
    """The fit sample size: ``max_points`` (an integer >= 4) or :data:`FIT_POINTS`."""
    if max_points is not None and (not isinstance(max_points, (int, np.integer)) or max_points < 4):
        raise ValueError(f"max_points must be an integer >= 4 or None; got {max_points!r}")
    return FIT_POINTS if max_points is None else int(max_points)


def map_key(model: str, params: dict, modalities: Sequence[str] | None) -> str:
    """The key of a parameter set's maps (:func:`core.artifacts.artifact_key` of the model, the parameters and
    the modalities): each map file is ``<map_key>-<key of its item ids>.npz``, one per parameter set."""
    return artifact_key(model=model, params=params, modalities=sorted(modalities) if modalities else None)[:20]


def _map_path(ws, model: str, pkey: str, ids: np.ndarray) -> tuple[str, Path]:
    """(artifact key, commit file) of the map of parameter set ``pkey`` over exactly ``ids``."""
    key = f"{pkey}-{artifact_key(ids=np.asarray(ids, dtype=str))[:20]}"
    return key, ws.artifact_path("maps", model, key, MAP_CODEC)


def _load_npz(path: Path) -> dict | None:
    """The arrays of a map file (the map codec's ``load``); None when it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as e:
        log.warning("ignoring unreadable map cache %s: %s", path, e)
        return None


def _save_npz(f, arrays: dict) -> None:
    np.savez(f, **arrays)


# a map file is a derived artifact (core.artifacts): a deletion removes every map holding a deleted item
MAP_CODEC = register_codec("map", Codec(".npz", _save_npz, _load_npz, ids=lambda path: npz_array(path, "ids")))


def _maps_of(ws, model: str, pkey: str) -> list[Path]:
    """The committed map files of parameter set ``pkey``, newest first (normally one)."""
    folder = ws.derived_dir("maps", model)
    found = [f for f in folder.glob(f"{pkey}-*{MAP_CODEC.suffix}") if f.with_name(f.name + SIDECAR).is_file()]
    return sorted(found, key=lambda f: f.stat().st_mtime_ns, reverse=True)


def _drop_older_maps(ws, model: str, pkey: str, keep: Path) -> None:
    """Remove the maps of parameter set ``pkey`` other than ``keep`` (one map per parameter set), commit file
    before sidecar, under the workspace's write lock. A save killed before this leaves two maps; a later
    cache hit or save finishes the job, and meanwhile the newest is the one new items are placed into."""
    folder = ws.derived_dir("maps", model)
    if all(f == keep for f in folder.glob(f"{pkey}-*{MAP_CODEC.suffix}")):
        return
    with ws.writing():
        for old in folder.glob(f"{pkey}-*{MAP_CODEC.suffix}"):
            if old != keep:
                remove_file(old)
                remove_file(old.with_name(old.name + SIDECAR))


def _workspace_ids(ws, model: str, modalities: Sequence[str] | None,
                   max_points: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(ids (n,) str sorted, modality (n,) str, number of items before sampling); reads no vectors.

    With ``max_points`` and more items than that, the first ``max_points`` sorted ids: ids are content
    hashes, so these are a uniform random sample that changes little when items are added.
    """
    ids = ws.vector_ids(model, modality=list(modalities) if modalities else None)
    if not len(ids):
        what = f" of modality {sorted(modalities)}" if modalities else ""
        raise ValueError(f"workspace {ws.name!r} has no vectors{what} for model {model!r}; embed it first")
    ids = np.sort(ids.astype(str), kind="stable")
    n_total = len(ids)
    if max_points is not None and n_total > max_points:
        ids = ids[:max_points]
    return ids, _modalities_of(ws, ids), n_total


def _modalities_of(ws, ids: np.ndarray) -> np.ndarray:
    return ws.items.set_index("id")["modality"].reindex(ids).fillna("row").to_numpy().astype(str)


def workspace_vectors(ws, model: str, modalities: Sequence[str] | None = None, max_points: int | None = None):
    """The vectors a map of ``ws`` draws: ``(X (n, d) float32, ids (n,) str sorted, modality (n,) str,
    number of items before sampling)``; with ``max_points``, only the sample's vectors are read."""
    ids, mod, n_total = _workspace_ids(ws, model, modalities, max_points)
    X, got = ws.vectors(model, ids=ids)
    if len(got) != len(ids):  # a vector vanished between the two reads
        raise ValueError(f"the vectors of {model!r} changed while the map was being prepared; try again")
    return X, ids, mod, n_total


def cached_map(ws, model: str, *, method: str = "umap", dim: int = 2, modalities: Sequence[str] | None = None,
               gap_corrected: bool = False, n_neighbors: int = 15, min_dist: float = 0.1,
               random_state: int = 0, max_points: int | None = None) -> MapResult | None:
    """The cached map for exactly the current items (every item; ``max_points`` as in :func:`compute_map`),
    or None.

    Never computes, and reads ids and the cache file only, no vectors.
    """
    fit_points = _fit_points(max_points)
    ids, mod, n_total = _workspace_ids(ws, model, modalities)
    params = _params(method, dim, gap_corrected, n_neighbors, min_dist, random_state,
                     fit_points if n_total > fit_points else None)
    _, path = _map_path(ws, model, map_key(model, params, modalities), ids)
    if not path.is_file():
        return None
    t0 = time.perf_counter()
    z = _load_npz(path)
    if z is None or not np.array_equal(z["ids"].astype(str), ids):
        return None
    meta = json.loads(str(z["meta"]))
    return MapResult(ids=ids, coords=z["embedding"], modality=mod, trust=z["trust"],
                     trustworthiness=float(meta["trustworthiness"]), method=method, dim=dim,
                     gap_corrected=gap_corrected, params=params, seconds=time.perf_counter() - t0, path=path,
                     cache="hit", n_new=0, extra=meta.get("extra", {}), n_total=n_total, fitted=z.get("fitted"))


def compute_map(ws, model: str, *, method: str = "umap", dim: int = 2, modalities: Sequence[str] | None = None,
                gap_corrected: bool = False, n_neighbors: int = 15, min_dist: float = 0.1, random_state: int = 0,
                progress: StageProgress | None = None, use_cache: bool = True,
                max_points: int | None = None) -> MapResult:
    """A map of every item with a vector of ``model`` in workspace ``ws`` (all items, or only ``modalities``).

    Reads the cached map when the item set and parameters match; places items embedded since the last
    map (when they are at most :data:`REFIT_SHARE` of the mapped ones; the mapped ones do not move); else
    fits. UMAP fits reuse the workspace's neighbour index. ``progress(stage, done, total)`` reports the
    stages "neighbours", "layout" (epochs), "placing" (items) and "trust".

    ``max_points``: the most items UMAP/PCA is fitted on (default :data:`FIT_POINTS`). With more items,
    the map is fitted on a seeded random sample of ``max_points`` items and every other item is placed
    (see the module docstring); ``fitted`` of the result marks the sample. Vectors are read in chunks.
    """
    t0 = time.perf_counter()
    C = PROJECTOR_CONSTRAINTS  # the map's projection settings: the Projector's, checked before the cache
    validate({"method": method, "dim": dim, "gap_corrected": gap_corrected, "n_neighbors": n_neighbors,
              "min_dist": min_dist, "random_state": random_state}, {**C, "dim": C["n_components"]}, "compute_map")
    fit_points = _fit_points(max_points)
    if use_cache:
        hit = cached_map(ws, model, method=method, dim=dim, modalities=modalities, gap_corrected=gap_corrected,
                         n_neighbors=n_neighbors, min_dist=min_dist, random_state=random_state,
                         max_points=max_points)
        if hit is not None:
            _drop_older_maps(ws, model, hit.path.name.partition("-")[0], hit.path)
            return hit
    ids, mod, n_total = _workspace_ids(ws, model, modalities)
    sampled = n_total > fit_points
    params = _params(method, dim, gap_corrected, n_neighbors, min_dist, random_state,
                     fit_points if sampled else None)
    pkey = map_key(model, params, modalities)
    latest = _maps_of(ws, model, pkey)[:1] if use_cache else []
    old = _load_npz(latest[0]) if latest else None
    if sampled:
        coords, trust, tw, state, fitted, cache, n_new = _sampled_map(ws, model, ids, mod, params, fit_points, old,
                                                                      progress)
    else:
        coords, trust, tw, state, cache, n_new = _whole_map(ws, model, ids, mod, params, modalities, old, progress)
        fitted = None

    key, path = _map_path(ws, model, pkey, ids)
    meta = {"format": _FORMAT, "model": model, "params": params, "modalities": sorted(modalities) if modalities
            else None, "n": len(ids), "n_total": int(n_total), "trustworthiness": tw, "cache": cache,
            "n_new": int(n_new), "n_fitted": int(len(ids) if fitted is None else fitted.sum()),
            "seconds": time.perf_counter() - t0, "extra": {}}
    state["embedding"] = coords
    if fitted is not None:
        state["fitted"] = fitted
    arrays = {"ids": ids, "trust": trust, "meta": np.array(json.dumps(meta)), **state}
    ws.artifact("maps", model, key, lambda: arrays, codec=MAP_CODEC, reuse=False)
    _drop_older_maps(ws, model, pkey, path)
    return MapResult(ids=ids, coords=coords, modality=mod, trust=trust, trustworthiness=tw, method=method, dim=dim,
                     gap_corrected=gap_corrected, params=params, seconds=time.perf_counter() - t0, path=path,
                     cache=cache, n_new=int(n_new), n_total=int(n_total), fitted=fitted)


def _whole_map(ws, model, ids, mod, params, modalities, old, progress):
    """Fit (or extend) a map of every item, all vectors in memory: (coords, trust, trustworthiness, state,
    cache, n_new)."""
    from .projector import Projector  # imports scikit-learn: only where a map is fitted or extended

    X, got = ws.vectors(model, ids=ids)
    if len(got) != len(ids):  # a vector vanished between the two reads
        raise ValueError(f"the vectors of {model!r} changed while the map was being prepared; try again")
    proj_params = _projector_params(params)
    method, dim, gap_corrected = params["method"], params["n_components"], params["gap_corrected"]
    coords = None
    n_new = 0
    cache = "fit"
    if old is not None and "fitted" not in old:
        old_ids = old["ids"].astype(str)
        pos = {k: i for i, k in enumerate(ids.tolist())}
        inside = [pos.get(k) for k in old_ids.tolist()]
        n_new = len(ids) - len(old_ids)
        if None not in inside and 0 < n_new <= REFIT_SHARE * len(old_ids):
            inside = np.asarray(inside)
            state = {k: v for k, v in old.items() if k not in ("ids", "trust", "meta")}
            state["modalities"] = mod[inside]
            proj = Projector.from_state(proj_params, state, X[inside])
            is_new = np.ones(len(ids), bool)
            is_new[inside] = False
            if progress:
                progress("placing", 0, int(is_new.sum()))
            coords = np.empty((len(ids), dim), np.float32)
            coords[inside] = proj.embedding_
            coords[is_new] = proj.transform(X[is_new], modalities=mod[is_new])
            cache = "incremental"
        else:
            n_new = 0

    Z = Projector(**proj_params).prepare(X) if not gap_corrected else None
    knn = None
    if coords is None:
        proj = Projector(**proj_params)
        if method == "umap" and not gap_corrected:
            knn = _workspace_knn(ws, model, ids, X, max(params.get("n_neighbors", 15), TRUST_K + 1), progress)
        proj.fit(X, modalities=mod, knn=knn, progress=progress)
        coords = proj.embedding_
    if gap_corrected:
        Z = proj.prepare(X, mod)
    if knn is None:
        if progress:
            progress("neighbours", 0, 1)
        if not gap_corrected:
            knn = _workspace_knn(ws, model, ids, X, TRUST_K + 1, None)
        else:
            knn = knn_graph(Z, min(TRUST_K + 1, len(Z)))
    if progress:
        progress("trust", 0, 1)
    trust = neighbour_overlap(knn[0], coords)
    tw = sampled_trustworthiness(Z, coords, seed=params["random_state"])
    if progress:
        progress("trust", 1, 1)
    return coords, trust, tw, proj.state(), cache, n_new


def _read_vectors(ws, model: str, ids: np.ndarray) -> np.ndarray:
    """Vectors (len(ids), d) float32 of ``ids``, in their order; ValueError when one has vanished."""
    X, got = ws.vectors(model, ids=ids)
    if len(got) != len(ids):
        raise ValueError(f"the vectors of {model!r} changed while the map was being prepared; try again")
    return X


def _sampled_map(ws, model, ids, mod, params, fit_points, old, progress):
    """A map of every item fitted on a seeded sample of ``fit_points`` of them, the rest placed; or the
    cached map ``old`` extended by placing the new items. Returns (coords, trust, trustworthiness, state,
    fitted mask, cache, n_new). Vectors are read in chunks of :data:`PLACE_CHUNK` items."""
    from .projector import Projector  # imports scikit-learn: only where a map is fitted or extended


    n = len(ids)
    method, dim, seed = params["method"], params["n_components"], params["random_state"]
    proj_params = _projector_params(params)
    coords = np.full((n, dim), np.nan, np.float32)
    trust = np.full(n, np.nan, np.float32)
    fitted = np.zeros(n, bool)
    cache, n_new, proj, index = "fit", 0, None, None
    if old is not None and "fitted" in old:
        old_ids = old["ids"].astype(str)
        inside = pd.Index(ids).get_indexer(old_ids)
        n_new = n - len(old_ids)
        if (inside >= 0).all() and 0 < n_new <= REFIT_SHARE * len(old_ids):
            old_fitted = old["fitted"].astype(bool)
            coords[inside] = old["embedding"]
            trust[inside] = old["trust"]
            fitted[inside[old_fitted]] = True
            fit_rows = np.flatnonzero(fitted)
            state = {k: v for k, v in old.items() if k not in ("ids", "trust", "meta", "fitted")}
            state["embedding"] = coords[fit_rows]
            state["modalities"] = mod[fit_rows]
            proj = Projector.from_state(proj_params, state, _read_vectors(ws, model, ids[fit_rows]))
            if method == "umap":
                if progress:
                    progress("neighbours", 0, 1)
                index = _SampleSearch(proj.prepared_, seed)
                if progress:
                    progress("neighbours", 1, 1)
            cache = "incremental"
        else:
            n_new = 0
    if proj is None:
        fit_rows = np.sort(np.random.default_rng(seed).choice(n, size=fit_points, replace=False))
        fitted[fit_rows] = True
        X_fit = _read_vectors(ws, model, ids[fit_rows])
        proj, index, knn = _fit_sample(X_fit, mod[fit_rows], proj_params, seed, progress)
        coords[fit_rows] = proj.embedding_
        trust[fit_rows] = neighbour_overlap(knn[0], proj.embedding_)
        del X_fit
    place = np.flatnonzero(np.isnan(coords[:, 0]))
    _place_rows(ws, model, ids, mod, place, proj, index, fit_rows, coords, trust, seed=seed, progress=progress)
    # trustworthiness on a seeded sample of every item (fitted and placed)
    if progress:
        progress("trust", 0, 1)
    tw_rows = np.sort(np.random.default_rng(seed).choice(n, size=min(TRUST_SAMPLE, n), replace=False))
    Z_tw = proj.prepare(_read_vectors(ws, model, ids[tw_rows]), mod[tw_rows])
    tw = sampled_trustworthiness(Z_tw, coords[tw_rows], seed=seed)
    if progress:
        progress("trust", 1, 1)
    state = {k: v for k, v in proj.state().items() if k != "embedding"}
    return coords, trust, tw, state, fitted, cache, n_new


def _fit_sample(X_fit: np.ndarray, mod_fit: np.ndarray, proj_params: dict, seed: int, progress):
    """Fit a projector on the sample rows ``X_fit`` (m, d): (projector, :class:`_SampleSearch` over the
    prepared sample rows (UMAP only, else None), the sample's cosine kNN graph (self first, >= TRUST_K + 1
    columns))."""
    from .projector import Projector  # imports scikit-learn: only where a map is fitted or extended

    proj = Projector(**proj_params)
    k = min(max(proj.n_neighbors, TRUST_K + 1), len(X_fit) - 1)
    if proj.gap_corrected:  # the neighbours are those of the centred rows, known after the fit
        proj.fit(X_fit, modalities=mod_fit, progress=progress)
        search = _SampleSearch(proj.prepared_, seed)
        return proj, (search if proj.method == "umap" else None), search.knn(k)
    if progress:
        progress("neighbours", 0, 1)
    search = _SampleSearch(unit_rows(X_fit), seed)
    knn = search.knn(k)
    if progress:
        progress("neighbours", 1, 1)
    proj.fit(X_fit, modalities=mod_fit, knn=knn if proj.method == "umap" else None, progress=progress)
    return proj, (search if proj.method == "umap" else None), knn


class _SampleSearch:
    """Cosine neighbours among a map's fit sample ``Z_fit`` (m, d) unit rows, through an hnswlib index
    (:class:`core.index.NeighborIndex`, recall@10 tuned to :data:`PLACE_RECALL`, a lighter graph build than
    the workspace's search index). Above :data:`PLACE_DIM` dimensions the rows are first projected on the
    sample's ``PLACE_DIM`` leading singular directions (a seeded randomized SVD): inner products there are
    close to the cosines of the unit rows, and every query costs ``PLACE_DIM / d`` of a full one."""

    def __init__(self, Z_fit: np.ndarray, seed: int):
        from .index import NeighborIndex

        self.V = None
        if Z_fit.shape[1] > PLACE_DIM and len(Z_fit) > PLACE_DIM:
            from sklearn.decomposition import TruncatedSVD

            svd = TruncatedSVD(PLACE_DIM, algorithm="randomized", random_state=seed).fit(Z_fit)
            self.V = np.ascontiguousarray(svd.components_, dtype=np.float32)  # (PLACE_DIM, d)
        self.index = NeighborIndex("cosine" if self.V is None else "ip", recall_target=PLACE_RECALL,
                                   ef_construction=100, seed=seed).fit(self._map(Z_fit), np.arange(len(Z_fit)))

    def _map(self, Z: np.ndarray) -> np.ndarray:
        return Z if self.V is None else np.asarray(Z, np.float32) @ self.V.T

    def query(self, Z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions in the sample (m, k) int64, similarities (m, k)) of prepared rows ``Z`` (m, d)."""
        pos, sim = self.index.query(self._map(Z), k=k)
        return pos.astype(np.int64), sim

    def knn(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The sample's own kNN graph, self first (as :func:`knn_graph`)."""
        return knn_graph(None, k, index=self.index)


def place_by_neighbours(pos: np.ndarray, dist: np.ndarray, fit_coords: np.ndarray, *, jitter: float = PLACE_JITTER,
                        rng: np.random.Generator | None = None) -> np.ndarray:
    """Map positions of new items from their nearest fitted items.

    ``pos`` (m, k) rows of ``fit_coords`` (n_fit, dim) that are each item's nearest fitted items, ``dist``
    (m, k) their cosine distances. Each item goes to the mean of its neighbours' positions weighted by
    ``1 / (distance + 1e-3)``, plus Gaussian noise of ``jitter`` times the weighted RMS distance of those
    positions from the mean (``rng``; no noise without one), so items with the same neighbours do not
    stack exactly while items in a tight group stay in it. Returns (m, dim) float32.
    """
    pos = np.asarray(pos, np.int64)
    w = 1.0 / (np.clip(np.asarray(dist, np.float64), 0.0, None) + 1e-3)
    w /= w.sum(1, keepdims=True)
    nb = np.asarray(fit_coords, np.float64)[pos]  # (m, k, dim)
    out = np.einsum("mk,mkd->md", w, nb)
    if rng is not None and jitter > 0 and len(out):
        spread = np.sqrt(np.einsum("mk,mk->m", w, ((nb - out[:, None, :]) ** 2).sum(2)))
        out += rng.normal(size=out.shape) * (jitter * spread)[:, None]
    return out.astype(np.float32)


def _place_rows(ws, model, ids, mod, rows, proj, index, fit_rows, coords, trust, *, seed, progress) -> None:
    """Fill ``coords`` (and ``trust``) of ``rows`` (positions in ``ids``) from the fitted sample ``fit_rows``:
    UMAP by :func:`place_by_neighbours` over ``index`` (the prepared sample rows), PCA with its components.

    The trust of a placed UMAP item is the share of its :data:`PLACE_K` nearest sample items that are also
    among its nearest sample items on the map; PCA leaves it NaN (not measured). In place, chunk by chunk.
    """
    if not len(rows):
        return
    fit_coords = coords[fit_rows]
    tree = None
    if index is not None:
        from scipy.spatial import cKDTree

        tree = cKDTree(fit_coords)
    k = min(PLACE_K, len(fit_rows))
    if progress:
        progress("placing", 0, len(rows))
    for start in range(0, len(rows), PLACE_CHUNK):
        r = rows[start : start + PLACE_CHUNK]
        Z = proj.prepare(_read_vectors(ws, model, ids[r]), mod[r])
        if index is None:  # PCA: the fitted linear map
            coords[r] = proj.transform(Z, prepared=True)
        else:
            pos, sim = index.query(Z, k)
            rng = np.random.default_rng([int(seed), int(start)])
            placed = place_by_neighbours(pos, 1.0 - sim, fit_coords, rng=rng)
            coords[r] = placed
            _, low = tree.query(placed, k=k, workers=-1)
            low = np.asarray(low).reshape(len(r), k)
            trust[r] = (pos[:, :, None] == low[:, None, :]).any(2).mean(1)
        if progress:
            progress("placing", min(start + PLACE_CHUNK, len(rows)), len(rows))


def _projector_params(params: dict) -> dict:
    kw = {k: v for k, v in params.items() if k not in ("n_components", "max_points", "fit_points", "placement")}
    return {**kw, "n_components": params["n_components"]}


def place_in_map(ws, model: str, result: MapResult, ids: Sequence[str]) -> MapResult:
    """``result`` plus the items ``ids`` that are not on it, placed into the fitted map (which does not
    move) with :meth:`Projector.transform`; e.g. items of a modality the map leaves out. (Every item of
    the map's modalities is on it already; such ids are left out.)

    Ids without a vector for ``model`` are skipped. Placed points get trust NaN (not measured) and come
    after the map's own points; ``extra["placed"]`` counts them. Nothing is written to the workspace.
    """
    from .projector import Projector  # imports scikit-learn: only where a map is fitted or extended

    on_map = set(result.ids.tolist())
    want = [str(i) for i in dict.fromkeys(ids) if str(i) not in on_map]
    X_new, new_ids = ws.vectors(model, ids=want)
    if not len(new_ids):
        return result
    z = _load_npz(Path(result.path))
    if z is None:
        raise ValueError(f"the map file {str(result.path)!r} is gone; compute the map again")
    fit_rows = np.arange(result.n) if z.get("fitted") is None else np.flatnonzero(z["fitted"])
    X_fit, got = ws.vectors(model, ids=result.ids[fit_rows])
    if len(got) != len(fit_rows):
        raise ValueError("some mapped items have no vector any more; compute the map again")
    mod_fit = np.asarray(result.modality).astype(str)
    state = {k: v for k, v in z.items() if k not in ("ids", "trust", "meta", "fitted")}
    state["embedding"] = np.asarray(z["embedding"])[fit_rows]
    state["modalities"] = mod_fit[fit_rows]
    proj = Projector.from_state(_projector_params(result.params), state, X_fit)
    new_ids = new_ids.astype(str)
    mod_new = _modalities_of(ws, new_ids)
    if result.gap_corrected:  # a modality the map never saw cannot be placed gap-corrected
        keep = np.isin(mod_new, list(proj.modality_means_))
        X_new, new_ids, mod_new = X_new[keep], new_ids[keep], mod_new[keep]
        if not len(new_ids):
            return result
    coords = proj.transform(X_new, modalities=mod_new)
    from dataclasses import replace

    return replace(result, ids=np.concatenate([result.ids, new_ids]), coords=np.vstack([result.coords, coords]),
                   modality=np.concatenate([mod_fit, mod_new]),
                   trust=np.concatenate([result.trust, np.full(len(new_ids), np.nan, np.float32)]),
                   extra={**result.extra, "placed": len(new_ids)},
                   fitted=(None if result.fitted is None
                           else np.concatenate([result.fitted, np.zeros(len(new_ids), bool)])))


def _workspace_knn(ws, model: str, ids: np.ndarray, X: np.ndarray, k: int, progress) -> tuple[np.ndarray, np.ndarray]:
    """kNN graph of the given items (sorted ids) from the workspace's persistent neighbour index.

    When the map covers every item of the model, the saved index is queried (built or updated first);
    for a subset of modalities a temporary index over the subset is used.
    """
    from .index import NeighborIndex, workspace_index

    k = min(k, len(ids))
    if progress:
        progress("neighbours", 0, 1)
    if ws.store(model).count() == len(ids):
        index = workspace_index(ws, model)
        if len(index.ids_) == len(ids):
            pos_of = {k_: i for i, k_ in enumerate(ids.tolist())}
            perm = np.array([pos_of[str(k_)] for k_ in index.ids_.tolist()])  # index row -> our row
            p, sim = index.kneighbors(k)
            out = np.empty_like(p)
            out[perm] = perm[p]
            s = np.empty_like(sim)
            s[perm] = sim
            if progress:
                progress("neighbours", 1, 1)
            return out.astype(np.int32), np.clip(1.0 - s, 0.0, 2.0).astype(np.float32)
    index = NeighborIndex("cosine").fit(X, np.arange(len(X)))
    res = knn_graph(X, k, index=index)
    if progress:
        progress("neighbours", 1, 1)
    return res


def map_to_json(result: MapResult) -> dict:
    """The CLI/JSON summary of a map (the keys docs/cli.md lists for ``jointscope map`` first)."""
    return {"n": result.n, "n_total": result.n_total if result.n_total is not None else result.n,
            "method": result.method, "dim": result.dim, "seconds": round(result.seconds, 3),
            "trustworthiness": round(result.trustworthiness, 4), "path": str(result.path),
            "n_fitted": result.n_fitted, "n_placed": result.n - result.n_fitted,
            "gap_corrected": result.gap_corrected, "cache": result.cache, "n_new": result.n_new,
            "mean_trust": round(float(np.nanmean(result.trust)), 4) if result.n else None,
            "by_modality": {str(m): int(c) for m, c in zip(*np.unique(result.modality, return_counts=True))}}



# ---- the vectors of a map ----------------------------------------------------------------------
def map_vectors(ws, model: str, *, ids: Sequence[str]) -> np.ndarray:
    """The vectors of a map's points: ``X (len(ids), d) float32`` in the order of ``ids``.

    Raises ValueError when an id has no vector for ``model`` any more (the map is older than the vectors).
    """
    X, got = ws.vectors(model, ids=list(ids))
    if len(got) != len(ids):
        raise ValueError(f"{len(ids) - len(got)} mapped items have no vector for {model} any more; "
                         "reload the page")
    return X


def vector_modalities(ws, model: str) -> dict[str, int]:
    """``{modality: count}`` of the items of ``ws`` that have a vector for ``model``; image, text, row
    first, any other modality after them by name."""
    have = ws.store(model).ids()
    items = ws.items
    counts = items.loc[items["id"].isin(have), "modality"].value_counts()
    order = ["image", "text", "row"]
    return {str(m): int(counts[m]) for m in sorted(counts.index, key=lambda m: (order.index(m) if m in order
                                                                                  else len(order), m))}

