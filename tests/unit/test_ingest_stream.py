"""Large vector tables read in chunks (core.ingest.stream): the same items, vectors, ids and row errors as the
row-by-row reader, whatever the chunk size. Speed and memory at a million rows: bench/million.py."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import core
from core.ingest import IngestError, scan, stream_table
from core.ingest.rowids import ids_of_keys, row_content_id, row_content_ids, row_content_keys

D = 4


def good_vec(i: int) -> list[float]:
    return [float(i), 0.5 * i, -1.25, 1.0 / (i + 1)]


def rows_with_problems() -> list[dict]:
    """20 rows: good ones, and bad ones spread so that small chunks cut between them."""
    rows = [{"name": f"k{i:03d}", "size": i % 3, "score": float(i) / 4, "emb": good_vec(i)} for i in range(20)]
    rows[2]["emb"] = [1.0, float("nan"), 0.0, 0.0]  # NaN
    rows[5]["emb"] = [1.0, 2.0, 3.0]  # wrong dimension
    rows[7]["emb"] = None  # missing
    rows[11] = dict(rows[10])  # a repeat of row 10: the same item
    rows[13]["emb"] = [1e300, 0.0, 0.0, 0.0]  # beyond float32
    rows[17]["emb"] = []  # empty
    return rows


def write_parquet(path, rows) -> str:
    t = pa.table({"name": [r["name"] for r in rows], "size": [r["size"] for r in rows],
                  "score": [r["score"] for r in rows],
                  "emb": pa.array([r["emb"] for r in rows], type=pa.list_(pa.float64()))})
    pq.write_table(t, path)
    return str(path)


def cell(v) -> str:
    if v is None:
        return ""
    return "[" + ", ".join(repr(x) for x in v) + "]"


def write_csv(path, rows, extra_lines: dict[int, str] | None = None) -> str:
    lines = ["name,size,score,emb"]
    for i, r in enumerate(rows):
        lines.append(f'{r["name"]},{r["size"]},{r["score"]},"{cell(r["emb"])}"')
        for line in (extra_lines or {}).get(i, "").splitlines():
            lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def old_path(ws, path, roles=None):
    """The row-by-row reader: scan the table into candidates and commit them one by one."""
    res = scan([path], roles=roles)
    return ws.add_candidates(res.candidates, errors=res.errors)


def snapshot(ws, report):
    items = ws.items.drop(columns=["added"]).sort_values("id").reset_index(drop=True)
    X, ids = ws.vectors("precomputed:emb")
    vec = dict(zip(ids.tolist(), X.tolist()))
    return items, vec, report.to_dict()


@pytest.mark.parametrize("kind", ["parquet", "csv", "csv_regular"])
def test_streamed_table_gives_the_same_items_and_errors(tmp_path, kind):
    rows = rows_with_problems()
    if kind == "parquet":
        path = write_parquet(tmp_path / "t.parquet", rows)
    elif kind == "csv":  # a ragged line, a blank line and a cell that only the row-by-row rules read
        rows[15]["emb"] = None
        path = write_csv(tmp_path / "t.csv", rows, {3: "a,b", 8: "", 14: 'odd,1,1.0,"(1, 2, 3, 4)"'})
    else:  # no ragged or blank line: pyarrow's CSV reader reads it
        rows[15]["emb"] = None
        path = write_csv(tmp_path / "t.csv", rows, {14: 'odd,1,1.0,"(1, 2, 3, 4)"'})
    kind = kind.split("_")[0]
    roles = {"emb": "vector"}  # (a few cells like "(1, 2, 3, 4)" would make the column look like text)
    assert stream_table(path, roles=roles) is not None  # the table is streamed
    old_ws, new_ws = core.Workspace(tmp_path / "old"), core.Workspace(tmp_path / "new")
    old = snapshot(old_ws, old_path(old_ws, path, roles))
    new = snapshot(new_ws, new_ws.ingest([path], roles=roles))
    pd.testing.assert_frame_equal(new[0], old[0], check_dtype=False)
    assert new[1] == old[1]
    assert new[2] == old[2]
    errors = new[2]["errors"]
    assert errors and all(e["source"].startswith(f"t.{kind} row ") for e in errors)
    assert new[2]["repeated_in_upload"] == 1
    # ingesting it again adds nothing: the same content ids
    again = new_ws.ingest([path], roles=roles)
    assert again.added == 0 and again.skipped == new[2]["added"] + new[2]["repeated_in_upload"]


def test_errors_keep_their_row_numbers_across_chunk_boundaries(tmp_path):
    rows = rows_with_problems()
    path = write_parquet(tmp_path / "t.parquet", rows)
    whole = stream_table(path)
    assert [s for s, _ in whole.errors] == [f"t.parquet row {n}" for n in (3, 6, 8, 14, 18)]
    assert "has NaN/inf values" in whole.errors[0][1] and "has 3 values, expected 4" in whole.errors[1][1]
    assert "is missing" in whole.errors[2][1] and "is empty" in whole.errors[4][1]
    for chunk in (1, 2, 3, 5, 7):
        part = stream_table(path, chunk_rows=chunk)
        assert part.errors == whole.errors
        np.testing.assert_array_equal(part.rows, whole.rows)
        np.testing.assert_array_equal(part.ids, whole.ids)
        np.testing.assert_array_equal(part.vectors["precomputed:emb"], whole.vectors["precomputed:emb"])
    csv_path = write_csv(tmp_path / "t.csv", rows, {6: "x,y", 12: ",,,"})
    whole = stream_table(csv_path, roles={"emb": "vector"})
    for chunk in (2, 4):
        part = stream_table(csv_path, chunk_rows=chunk, roles={"emb": "vector"})
        assert part.errors == whole.errors
        np.testing.assert_array_equal(part.ids, whole.ids)
    regular = write_csv(tmp_path / "r.csv", rows)  # no ragged line: read by pyarrow's reader
    whole_r = stream_table(regular, roles={"emb": "vector"})
    assert [s for s, _ in whole_r.errors] == [f"r.csv row {n}" for n in (3, 6, 8, 14, 18)]
    for chunk in (1, 3, 7):
        part = stream_table(regular, chunk_rows=chunk, roles={"emb": "vector"})
        assert part.errors == whole_r.errors
        np.testing.assert_array_equal(part.ids, whole_r.ids)
    # the ragged line is data row 8, and row numbers after it count it
    assert ("t.csv row 8", "has 2 fields, expected 4 (as in the header)") in whole.errors
    assert any(s == "t.csv row 9" and "is missing" in r for s, r in whole.errors)


def test_the_most_common_length_is_the_expected_one_over_the_whole_table(tmp_path):
    rows = [{"name": f"n{i}", "size": i, "score": 0.0, "emb": [1.0, 2.0] if i < 3 else good_vec(i)}
            for i in range(10)]
    path = write_parquet(tmp_path / "t.parquet", rows)
    for chunk in (3, 100):  # the first chunk alone has only 2-d vectors
        t = stream_table(path, chunk_rows=chunk)
        assert [s for s, _ in t.errors] == ["t.parquet row 1", "t.parquet row 2", "t.parquet row 3"]
        assert all("has 2 values, expected 4" in r for _, r in t.errors)


def test_numeric_and_grouped_columns(tmp_path):
    n = 30
    rng = np.random.default_rng(0)
    df = pd.DataFrame({f"v_{j}": rng.normal(size=n) for j in range(D)})
    df["weight"] = rng.normal(size=n)
    df.loc[4, "v_1"] = np.inf
    df["tag"] = [f"t{i % 4}" for i in range(n)]
    path = tmp_path / "g.csv"
    df.to_csv(path, index=False)
    (tmp_path / "g.csv").write_text(path.read_text().replace("\n", "\nbad,1,2,3,oops,t1\n", 1))
    old_ws, new_ws = core.Workspace(tmp_path / "old"), core.Workspace(tmp_path / "new")
    assert stream_table(path, roles={"weight": "numeric"}, chunk_rows=7) is not None
    res = scan([path], roles={"weight": "numeric"})
    old_report = old_ws.add_candidates(res.candidates, errors=res.errors)
    new_report = new_ws.ingest([path], roles={"weight": "numeric"})
    assert new_report.to_dict() == old_report.to_dict()
    for model in ("precomputed:v", "precomputed:numeric"):
        Xo, io = old_ws.vectors(model)
        Xn, i_n = new_ws.vectors(model)
        assert sorted(io) == sorted(i_n)
        np.testing.assert_allclose(Xn[np.argsort(i_n)], Xo[np.argsort(io)], rtol=1e-6)
    with pytest.raises(IngestError, match="unknown column 'nope'"):
        stream_table(path, roles={"nope": "metadata"})


def test_tables_with_text_or_images_are_left_to_the_row_reader(tmp_path):
    path = tmp_path / "captions.csv"
    path.write_text("caption,emb\na red circle,\"[1, 2]\"\na blue square,\"[3, 4]\"\n")
    assert stream_table(path) is None
    ws = core.Workspace(tmp_path / "w")
    assert ws.ingest([path]).added == 2  # read row by row, as before


def test_row_ids_are_the_same_one_by_one_and_in_bulk():
    meta = pd.DataFrame({"a": [1, 2, 3], "b": ["x", None, "z"], "c": [1.5, np.nan, 3.0], "d": [True, False, True]})
    vecs = {"precomputed:e": np.arange(12, dtype=np.float32).reshape(3, 4) / 7}
    bulk = row_content_ids(meta, vecs)
    for i in range(3):
        one = {k: (None if pd.isna(v) else v) for k, v in meta.iloc[i].to_dict().items()}
        one = {k: (v.item() if hasattr(v, "item") else v) for k, v in one.items()}
        assert row_content_id(one, {k: v[i] for k, v in vecs.items()}) == bulk[i]
    assert len(set(bulk)) == 3
    # an integral float and the same integer are the same value; a string is not
    v = {"precomputed:e": np.ones(2, np.float32)}
    assert row_content_id({"k": 3}, v) == row_content_id({"k": 3.0}, v) != row_content_id({"k": "3"}, v)
    assert row_content_id({"k": 1}, {"precomputed:e": np.array([0.1234561, -0.0])}) == \
        row_content_id({"k": 1}, {"precomputed:e": np.array([0.1234564, 0.0])})  # rounded to 6 decimals


def test_row_ids_stay_what_workspaces_already_store():
    """Ids are stored in workspaces and decide what a later import skips: a faster hash must give the same
    ids (these were written by the first release of the bulk hash), odd vector lengths and -0.0 included."""
    meta = pd.DataFrame({"a": [1, 2, 3], "b": ["x", None, "z"], "c": [1.5, np.nan, 3.0], "d": [True, False, True]})
    X = np.arange(15, dtype=np.float32).reshape(3, 5) / 7 - 1
    X[0, 0] = -0.0
    ids = row_content_ids(meta, {"precomputed:e": X})
    assert ids.tolist() == ["70d8888049584048", "94e95d25fcd04a70", "64f8c0008f6be900"]
    keys = row_content_keys(meta, {"precomputed:e": X})
    assert keys.dtype == np.uint64 and ids_of_keys(keys).tolist() == ids.tolist()
    assert ids_of_keys(np.zeros(0, np.uint64)).shape == (0,)


def test_streamed_rows_carry_their_keys_and_sources(tmp_path):
    rows = rows_with_problems()
    table = stream_table(write_parquet(tmp_path / "t v1.parquet", rows), chunk_rows=6)
    assert table.ids.tolist() == ids_of_keys(table.keys).tolist()
    # a repeated row has the same key as its first row, other rows differ
    assert len(set(table.keys.tolist())) == len(set(table.ids.tolist())) == len(table) - 1
    assert table.sources().tolist() == [f"t v1.parquet row {r}" for r in table.rows.tolist()]
    # rows committed from a table built without keys (a RowTable of one's own) are deduplicated on ids
    table.keys = None
    ws = core.Workspace(tmp_path / "w")
    rep = ws.add_row_table(table)
    assert (rep.added, rep.repeated) == (len(table) - 1, 1)
    assert sorted(ws.items["source"]) == sorted(set(table.sources().tolist()) - {"t v1.parquet row 12"})
