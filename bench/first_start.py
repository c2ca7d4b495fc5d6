"""The app's very first start: seconds from the first request until the demo workspace is usable.

Starts ``streamlit run app.py`` on 127.0.0.1 with an empty JOINTSCOPE_HOME (the app then builds the demo
workspace), opens it in Debian chromium (Playwright) and times, from navigation:

* ``usable_s``: until the Data page shows the demo workspace with its ``demo`` vectors (the summary line
  "Workspace demo: … vectors for demo") and no first-start spinner or progress bar is left;
* ``stages``: when each stage of the build (generate, store, embed) first showed in the progress bar;
* ``server_cpu_s``: CPU seconds the server process used meanwhile (all its threads), a measure that
  other jobs on the machine change less than the wall time.

Baseline, in the same run: ``jointscope demo`` (a fresh process, imports included) building the same
workspace (wall and CPU seconds); ``load_before`` is the machine's 1-minute load average before it.
``--cold-numba`` points NUMBA_CACHE_DIR at an empty folder (the first start after a ``pip install``, when
the UMAP warm-up the app starts compiles every kernel).

    python bench/first_start.py [--cold-numba] [--repeats 1]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import CHROMIUM, CHROMIUM_ARGS, free_port  # noqa: E402

# usable: the Map (the app's start page) shows the demo workspace with its vectors and draws its points
# (the PCA preview counts: UMAP may still be running in the background, with its progress bar)
USABLE_JS = """() => {
  const t = document.body.innerText;
  const drawn = [...document.querySelectorAll('.js-plotly-plot')].some(
    gd => (gd.data || []).some(tr => tr.mode === 'markers' && tr.customdata && tr.customdata.length));
  return /Workspace demo: .* vectors for demo/.test(t) && !t.includes('First start') && drawn;
}"""
STAGE_JS = "() => [...document.querySelectorAll('[data-testid=\"stProgress\"]')].map(e => e.innerText).join(' ')"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cli_demo(folder: Path, env: dict) -> tuple[float, float]:
    """Wall and CPU seconds of ``jointscope demo`` in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "core", "demo", str(folder), "--json"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def app_first_start(tmp: Path, env: dict, timeout: float) -> dict:
    import urllib.request

    from playwright.sync_api import sync_playwright

    home = tmp / "home"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    out: dict = {}
    with open(tmp / "server.log", "w+b") as log:
        t_proc = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                 "--server.address", "127.0.0.1", "--server.headless", "true",
                                 "--browser.gatherUsageStats", "false"], cwd=ROOT,
                                env=dict(env, JOINTSCOPE_HOME=str(home)), stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2):
                        break
                except OSError:
                    if proc.poll() is not None or time.perf_counter() - t_proc > 90:
                        log.seek(0)
                        raise RuntimeError(log.read().decode()[-3000:]) from None
                    time.sleep(0.2)
            out["server_start_s"] = round(time.perf_counter() - t_proc, 2)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1440, "height": 1000})
                stages: dict[str, float] = {}
                cpu0 = cpu_seconds(proc.pid)
                t0 = time.perf_counter()
                page.goto(base)
                while not page.evaluate(USABLE_JS):
                    text = page.evaluate(STAGE_JS)
                    for stage in ("generate", "store", "embed"):
                        if f"{stage}:" in text and stage not in stages:
                            stages[stage] = round(time.perf_counter() - t0, 2)
                    if time.perf_counter() - t0 > timeout:
                        out["error"] = "the demo workspace was not usable in time"
                        out["page_text"] = page.inner_text("body")[-1500:]
                        break
                    page.wait_for_timeout(200)
                out["usable_s"] = round(time.perf_counter() - t0, 2)
                out["server_cpu_s"] = round(cpu_seconds(proc.pid) - cpu0, 1)
                out["stages"] = stages
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold-numba", action="store_true", help="an empty numba cache (first start after install)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=180)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="jointscope-bench-first-"))
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    out: dict = {"cores": os.cpu_count(), "cold_numba": args.cold_numba, "runs": []}
    try:
        for r in range(args.repeats):
            run_dir = tmp / f"run{r}"
            if args.cold_numba:
                env["NUMBA_CACHE_DIR"] = str(run_dir / "numba")
            print(f"run {r + 1}: jointscope demo", file=sys.stderr)
            load = os.getloadavg()[0]
            cli, cli_cpu = cli_demo(run_dir / "cli-demo", env)
            print(f"run {r + 1}: app first start", file=sys.stderr)
            app = app_first_start(run_dir, env, args.timeout)
            out["runs"].append(dict(app, cli_demo_s=round(cli, 2), cli_cpu_s=round(cli_cpu, 1),
                                    ratio_to_cli=round(app["usable_s"] / cli, 2), load_before=round(load, 2)))
        best = min(out["runs"], key=lambda x: x["usable_s"])
        out.update(usable_s=best["usable_s"], cli_demo_s=best["cli_demo_s"], ratio_to_cli=best["ratio_to_cli"],
                   target_s=30, ok=best["usable_s"] <= 30 and "error" not in best)
        print(json.dumps(out, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
