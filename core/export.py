"""Export a model's vectors with item metadata: Parquet, or TSV for the TensorFlow Embedding Projector."""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .storage import atomic_write, atomic_write_parquet

log = logging.getLogger(__name__)

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value) -> str:
    """One TSV/CSV cell: no tabs/newlines, and no leading formula characters (spreadsheet injection)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    s = str(value).replace("\t", " ").replace("\r", " ").replace("\n", " ")
    if s.startswith(_FORMULA_START):
        s = "'" + s
    return s


def safe_csv_bytes(df: pd.DataFrame) -> bytes:
    """``df`` as UTF-8 CSV with every text cell passed through :func:`safe_cell` (for download buttons)."""
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_object_dtype(out[col]) or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(
                lambda v: v if v is None or (isinstance(v, float) and np.isnan(v)) else safe_cell(v))
    return out.to_csv(index=False).encode("utf-8")


def export(ws, model: str, out_dir: str | Path, *, fmt: str = "parquet") -> dict:
    """Write the vectors of ``model`` and their items to ``out_dir``; returns ``{path, n, format}``."""
    X, ids = ws.vectors(model)
    if len(ids) == 0:
        raise ValueError(f"workspace {ws.name!r} has no vectors for {model!r}; run `jointscope embed` first")
    items = ws.items.set_index("id").loc[list(ids)].reset_index()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        df = items.copy()
        df["vector"] = list(np.asarray(X, dtype=np.float32))
        path = out / f"{ws.name}.parquet"
        atomic_write_parquet(path, df)
    elif fmt == "tsv":
        path = out / "vectors.tsv"
        atomic_write(path, lambda f: np.savetxt(f, X, delimiter="\t", fmt="%.6g"))
        label = items["text"].where(items["text"].notna(), items["source"])
        columns = {"label": label, "id": items["id"], "modality": items["modality"], "source": items["source"]}
        extra = [c for c in items.columns if c not in ("id", "modality", "text", "image", "thumb", "source",
                                                        "pair", "width", "height", "added")]
        for c in extra:
            name = c
            while name in columns:  # a user column called "label" must not replace the Projector's label
                name = f"meta_{name}"
            columns[name] = items[c]
        meta = pd.DataFrame(columns)

        def write_meta(f):
            import io

            txt = io.TextIOWrapper(f, encoding="utf-8", newline="")
            w = csv.writer(txt, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
            w.writerow([safe_cell(c) for c in meta.columns])
            for row in meta.itertuples(index=False):
                w.writerow([safe_cell(v) for v in row])
            txt.flush()
            txt.detach()

        atomic_write(out / "metadata.tsv", write_meta)
    else:
        raise ValueError(f"format must be 'parquet' or 'tsv'; got {fmt!r}")
    log.info("exported %d vectors of %s to %s", len(ids), model, path)
    return {"path": str(path), "n": len(ids), "format": fmt, "model": model}
