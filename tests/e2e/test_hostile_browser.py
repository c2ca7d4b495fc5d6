"""Hostile uploads through the Data page in a real browser (streamlit server + Playwright + Debian chromium).

A mixed batch — truncated/corrupt/bomb/rotated/CMYK/16-bit images, ZIP slip, symlink, encrypted and bomb
archives, too-deep nesting, ragged/unterminated/formula CSVs, a fake XLSX, a JSON object, NaN vectors,
binary text, empty files, HTML in file names and captions — goes through the page's st.file_uploader
together with good files. The page must report every bad file/member/row by name in its error table,
keep every good item (exact counts) and run no script. Leaves a screenshot in
pytest's temporary folder.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from hardening.corpus import CASES, uploadable

from helpers import e2e_marks, make_png

ROOT = Path(__file__).resolve().parents[2]

pytestmark = e2e_marks()

BROWSER_CASES = [
    "truncated_jpg", "corrupt_png", "truncated_webp", "bomb_png_real", "bomb_gif_screen", "exif_rotated_jpg",
    "gif_animated", "jpeg_cmyk", "png_16bit_grey", "png_named_jpg", "zip_slip_dotdot", "zip_absolute_posix",
    "zip_symlink_file", "zip_encrypted_member", "zip_bomb_ratio", "zip_nested_too_deep", "csv_ragged_rows",
    "csv_unterminated_quote", "csv_formula_injection", "xlsx_not_a_zip", "json_object", "jsonl_bad_lines",
    "parquet_nan_inf_vectors", "txt_binary", "empty_files", "html_in_file_name", "html_in_captions",
]

# nothing from a payload ran or became an element (Streamlit's own index.html has one inline script)
NO_SCRIPT_JS = """() => window.__xss === undefined && !document.querySelector('img[src="x"]')
                   && ![...document.scripts].some(s => /__xss|alert\\(/.test(s.textContent))"""


def grid_rows(page, grid) -> list[tuple[str, ...]]:
    """Every row of a st.dataframe, read from glide's accessible table while scrolling through it.

    Glide renders the visible rows only and refreshes them a moment after a scroll, so each step waits
    until the rendered rows have moved before reading them.
    """
    read = """g => [Number(g.querySelector('table').getAttribute('aria-rowcount')) - 1,
                    [...g.querySelectorAll('tbody tr')].map(tr => [
                        Number(tr.getAttribute('aria-rowindex')),
                        [...tr.querySelectorAll('td')].map(td => td.textContent)])]"""
    first_row = "g => g.querySelector('tbody tr')?.getAttribute('aria-rowindex')"
    rows: dict[int, tuple[str, ...]] = {}
    scroller = grid.locator(".dvn-scroller").first
    total = 0
    for _ in range(100):
        total, shown = grid.evaluate(read)
        rows.update((index, tuple(cells)) for index, cells in shown)
        if len(rows) >= total or scroller.evaluate("e => e.scrollTop + e.clientHeight >= e.scrollHeight - 2"):
            break
        before = grid.evaluate(first_row)
        scroller.evaluate("e => e.scrollBy(0, e.clientHeight * 0.6)")
        page.wait_for_function(f"g => ({first_row})(g) !== {before!r}", arg=grid.element_handle(), timeout=10_000)
    assert len(rows) == total, f"read {len(rows)} of {total} rows"
    return [rows[k] for k in sorted(rows)]


def test_hostile_batch_through_the_data_page(server, browser, tmp_path):
    from playwright.sync_api import expect

    by_name = {c.name: c for c in CASES}
    cases = [by_name[n] for n in BROWSER_CASES]
    files: list[Path] = []
    for case in cases:
        files += case.files(tmp_path / "in" / case.name)
    assert uploadable(files)
    good = [make_png(tmp_path / "good" / "e2e_good_red.png", (220, 30, 30)),
            make_png(tmp_path / "good" / "e2e_good_green.png", (30, 200, 30))]
    files[len(files) // 2:len(files) // 2] = good
    expected_errors = [e for c in cases for e in c.errors]
    expected_kept = [s for c in cases for s in c.kept] + [p.name for p in good]
    n_tables = sum(p.suffix in (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".xlsx") for p in files)
    cap_mb = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["server"]["maxUploadSize"]
    cap = f"{cap_mb // 1024}GB" if cap_mb % 1024 == 0 else f"{cap_mb}MB"

    page = browser.new_page(viewport={"width": 1440, "height": 1600})
    page.set_default_timeout(60_000)
    expect.set_options(timeout=60_000)
    try:
        page.goto(f"{server}/data")
        sidebar = page.get_by_test_id("stSidebar")
        expect(page.get_by_role("heading", name="Data")).to_be_visible(timeout=120_000)  # first run imports torch
        sidebar.get_by_label("New workspace").fill("e2e-hostile")
        sidebar.get_by_role("button", name="Create workspace").click()
        expect(page.get_by_text("Workspace e2e-hostile: 0 items")).to_be_visible()
        expect(page.get_by_test_id("stFileUploaderDropzoneInstructions")).to_contain_text(f"{cap} per file")

        page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files([str(p) for p in files])
        expect(page.get_by_test_id("stFileChipDeleteBtn")).to_have_count(len(files))  # every upload finished
        expect(page.get_by_test_id("stExpander").filter(has_text="Columns of ")).to_have_count(n_tables)
        assert page.evaluate(NO_SCRIPT_JS)  # file names with HTML are listed as text
        page.get_by_role("button", name="Import", exact=True).click()

        expect(page.get_by_text(re.compile(r"^Import: \d+ added"))).to_be_visible()
        message = page.get_by_text(re.compile(r"^Import: \d+ added")).inner_text()
        assert message == (f"Import: {len(expected_kept)} added, 0 skipped, "
                           f"{len(expected_errors)} could not be read"), message
        expect(page.get_by_test_id("stMetricValue").first).to_have_text(str(len(expected_kept)))
        grid = page.get_by_test_id("stDataFrame").filter(has=page.locator("th", has_text="reason")).first
        rows = grid_rows(page, grid)
        assert len(rows) == len(expected_errors), rows
        for src, needle in expected_errors:
            assert any(s == src and needle in r for s, r in rows), (src, needle, rows)

        # the good items are listed, names with HTML as plain text
        box = page.get_by_label("Filter by text, source or id")
        for wanted in ("e2e_good_green.png", "<img src=x onerror=alert(1)>.png", "exif_rotated_jpg.jpg"):
            box.fill(wanted)
            box.press("Enter")
            expect(page.get_by_text("Showing all 1 rows")).to_be_visible()
            items = page.get_by_test_id("stDataFrame").filter(has=page.locator("th", has_text="thumb")).first
            expect(items.locator("td").filter(has_text=wanted).first).to_be_attached()
        assert page.evaluate(NO_SCRIPT_JS)
        assert not page.get_by_test_id("stException").count()
        page.screenshot(path=str(tmp_path / "hostile_upload.png"), full_page=True)
    finally:
        page.close()
