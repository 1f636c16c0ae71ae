"""reprogrid.report: the attribution report rendered from a synthetic results set, and opened in Chromium.

The results set (tests/report_fixtures.py) has known variance shares, one failed model run, three
truncated prompts, three claims (one about a model the grid lacks) and a speculative decoding study.
The browser test drives real headless Chromium through the DevTools protocol; it is skipped (with the
reason) when Chromium cannot be installed or started. Its screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from report_fixtures import FAILED_REASON, KNOWN, make_results
from reprogrid.cli import main
from reprogrid.study import load_study
from reprogrid.report import Est, build_report, decimals_for, expected_outputs

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
N_BOOT = 200  # report intervals: enough for the tests, quick on two cores


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    cfg_path, results = make_results(root)
    cfg = load_study(cfg_path)
    paths = build_report(cfg, results, n_boot=N_BOOT)
    return {"cfg": cfg, "cfg_path": cfg_path, "results": results, "paths": paths,
            "md": paths["summary"].read_text(encoding="utf-8"), "html": paths["html"].read_text(encoding="utf-8")}


def _text(html: str) -> str:
    """The visible text of the HTML, roughly (tags dropped, entities of interest decoded)."""
    t = re.sub(r"<style.*?</style>", " ", html, flags=re.S)
    t = re.sub(r"<[^>]+>", " ", t)
    t = t.replace("&#39;", "'").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')
    return re.sub(r"\s+", " ", t)


# --------------------------------------------------------------------------------------------------
# numbers


def test_rounding_follows_the_interval():
    assert decimals_for(0.1512, 0.2141) == 0  # half-width 3.1 points -> whole percent
    assert decimals_for(0.0004, 0.0079) == 1  # 0.4 points -> one decimal
    assert decimals_for(0.0100, 0.0110) == 2
    assert decimals_for(None, None) == 1
    e = Est(0.1834, 0.1512, 0.2141, unit="%")
    assert (e.point, e.ci, e.full) == ("18%", "15\u201321%", "18% (95% CI 15\u201321%)")
    assert Est(0.0027, 0.0004, 0.0079, unit="%").full == "0.3% (95% CI 0.0\u20130.8%)"
    signed = Est(0.05, -0.04, 0.12, signed=True)
    assert signed.point == "+5" and signed.ci == "\u22124 to 12"
    assert Est(-0.0001, unit="%").point == "0.0%"  # no negative zero
    assert Est(1.1432, 1.09, 1.21, unit="\u00d7", scale=1.0).full == "1.14\u00d7 (95% CI 1.09\u20131.21\u00d7)"


# --------------------------------------------------------------------------------------------------
# the rendered report


def test_key_numbers_in_summary_and_html(rendered):
    md, html = rendered["md"], _text(rendered["html"])
    top = f"explains the largest share of the spread: {KNOWN['top_share']} (95% CI {KNOWN['top_ci']})"
    assert f"**{KNOWN['top_factor']}** {top}" in md
    assert f"{KNOWN['top_factor']} {top}" in html
    for text in (md.replace("**", ""), html):
        assert f"{KNOWN['top_explained']} of the spread the factors explain between cells" in text
        assert "It clears the noise floor" in text
        assert f"Runner-up: {KNOWN['runner_up']}, {KNOWN['runner_up_share']} (95% CI 9\u201314%)" in text
        assert f"Indistinguishable from noise: {KNOWN['below_noise']}" in text
        # claims: the reproducibility verdict, the explanation per claim, the claim the grid cannot answer
        assert "does not reproduce" in text.lower()
        assert "paper_a_qwen25_0.5b (22.6%, qwen2.5-0.5b-instruct): explained by the grid reading" in text
        assert ("leaderboard_qwen25_7b_1m (95.7%, qwen2.5-7b-instruct-1m): an aggregate that no standard RULER "
                "aggregation of its components gives") in text
        assert "its model or conditions are not in this grid: model=qwen2.5-7b-instruct-1m is not in the grid" in text
        assert "Published record: 3 Qwen2.5 RULER numbers from 3 sources, 22.6 to 95.7" in text
        assert "grim" in text and "aggregate_mismatch" in text
        # caveats
        assert "Truncated samples: 3 of 575 model outputs" in text
        assert FAILED_REASON in text and "Failed cells: 2 (1 model run)" in text
        assert "ruler_qa_squad needs data lm-eval downloads" in text
        # provenance
        assert rendered["cfg"].sha256 in text
        assert "0123456789abcdef0123456789abcdef01234567" in text  # code version of the model runs
        assert "generate" in text and "prepare_model" in text
        # speculative decoding
        assert "Speculative decoding" in text and "niah_single_1" in text
    assert "## Claims" in md and "### Reproducibility" in md and "**Verdict: does not reproduce.**" in md
    # the table of shares: the top factor's row as displayed
    assert "| context_length | 18% | 15\u201321% | 49% | 0.4% | yes |" in md


def test_html_is_self_contained(rendered):
    html = rendered["html"]
    assert "<script" not in html.lower()
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", html), "no external resource"
    assert "@import" not in html and "url(" not in html
    imgs = re.findall(r'<img src="([^"]+)"', html)
    names, _ = expected_outputs(rendered["cfg"])
    assert len(imgs) == len(names) == 6
    assert all(src.startswith("data:image/png;base64,") for src in imgs)
    assert all(base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n" for src in imgs)
    assert all(re.search(r'<img [^>]*alt="[^"]{20,}"', html) for _ in imgs)


def test_figures_and_tables_written_for_snakemake(rendered):
    out = rendered["results"] / "report"
    figs, tabs = expected_outputs(rendered["cfg"])
    for n in figs:
        assert (out / "figures" / f"{n}.png").read_bytes()[:4] == b"\x89PNG"
    for n in tabs:
        assert (out / "tables" / f"{n}.csv").stat().st_size > 0
    captions = REPO / "src" / "reprogrid" / "templates"
    from reprogrid.report import FIGURES, TABLES

    for _, caption, _ in [*FIGURES.values(), *TABLES.values()]:
        text = (captions / caption).read_text().strip()
        assert text and text.count(". ") <= 2, caption  # one or two sentences
    assert (captions / "report.rst").is_file()


def test_render_twice_gives_identical_outputs(rendered, tmp_path):
    paths = build_report(rendered["cfg"], rendered["results"], tmp_path / "again", n_boot=N_BOOT)
    assert paths["summary"].read_text(encoding="utf-8") == rendered["md"]
    for key, p in rendered["paths"].items():
        if key.startswith(("figure:", "table:")):
            assert p.read_bytes() == paths[key].read_bytes(), key


def test_score_intervals_are_the_stats_item_bootstrap(rendered):
    """The report's score intervals are stats.ItemBootstrap.from_tables over the same tables with the study
    seed (the bootstrap the claims verdicts use), so both print the same interval for the same reading."""
    import pandas as pd

    from reprogrid.catalogue import level_text
    from reprogrid.layout import Layout
    from reprogrid.stats import ItemBootstrap

    L = Layout(rendered["results"])
    samples, cells = pd.read_parquet(L.samples), pd.read_parquet(L.cells)
    boot = ItemBootstrap.from_tables(samples, cells, N_BOOT, rendered["cfg"].seed)
    ok = cells[cells["status"] == "ok"]
    me = pd.read_csv(L.report_table("main_effects"), dtype={"level": str})
    assert len(me) == 11
    for r in me.itertuples(index=False):
        e = boot.estimate(ok.loc[ok[r.factor].map(level_text) == r.level, "cell_id"])
        assert (r.score, r.ci_low, r.ci_high) == pytest.approx((e.value, e.low, e.high), rel=1e-5), r
    per_cell = pd.read_csv(L.report_table("cells")).set_index("cell_id")
    for cid in ok["cell_id"][:5]:
        e = boot.estimate([cid])
        assert (per_cell.loc[cid, "ci_low"], per_cell.loc[cid, "ci_high"]) == pytest.approx((e.low, e.high), rel=1e-5)


def test_report_and_verdicts_print_the_same_interval_for_the_same_reading(rendered):
    """Every reading of verdicts.json (a claim's best grid reading, its alternatives, the reproducibility
    readings) gets from the report's own score estimator the interval the verdict prints."""
    from reprogrid.layout import Layout
    from reprogrid.report import load_inputs
    from reprogrid.report.scores import Scores

    L = Layout(rendered["results"])
    v = json.loads(Path(L.verdicts).read_text())
    scores = Scores(load_inputs(rendered["cfg"], rendered["results"]), 200)  # the fixture's verdicts: 200, study seed
    readings = [r for e in v["explanations"] for r in ([e["best"]] if e["best"] else []) + e["alternatives"]]
    readings += v["reproducibility"]["readings"]
    assert len(readings) >= 4
    for r in readings:
        est = scores.estimate(r["cell_ids"])
        assert [est.lo, est.hi] == r["ci"], r["cell_ids"]


def test_inputs_are_read_from_the_layout(rendered):
    """The loader reads the paths layout.Layout gives (the ones the Snakefile's report rule declares)."""
    from reprogrid.layout import Layout
    from reprogrid.report import load_inputs

    L = Layout(rendered["results"])
    inp = load_inputs(rendered["cfg"], rendered["results"])
    tables = [L.cells, L.samples, L.shares, L.shares_json, L.variance_components_json, L.findings, L.verdicts,
              L.claim_cells, L.published, L.specdec_table]
    assert set(inp.checksums) == {L.rel(p) for p in tables}
    assert inp.verdicts is not None and inp.disparity is not None and inp.grid is not None
    assert sorted(inp.manifests) == sorted(p.name[: -len(".manifest.json")]
                                           for p in Path(L.generations_root).glob("*.manifest.json"))
    assert set(inp.models) == set(inp.manifests) and inp.generations
    assert set(inp.benchmarks["rule"]) >= {"generate", "prepare_model"}


def test_missing_optional_inputs_are_noted_not_fatal(tmp_path):
    cfg_path, results = make_results(tmp_path, with_claims=True, with_specdec=False, failed_cells=0, truncated=0)
    for d in ("generations", "models", "benchmarks"):
        shutil.rmtree(results / d)
    (results / "attribution" / "variance_shares.json").unlink()
    (results / "claims" / "verdicts.json").unlink()
    # without the JSON the floors come from the CSV: make every factor fall below its floor
    import pandas as pd

    shares = pd.read_csv(results / "attribution" / "variance_shares.csv")
    shares.loc[shares["shapley"].notna() & (shares["effect"] != "residual"), "noise_floor"] = 0.5
    shares.to_csv(results / "attribution" / "variance_shares.csv", index=False)
    assert main(["report", "--config", str(cfg_path), "--results", str(results), "--bootstrap", "0"]) == 0
    md = (results / "report" / "summary.md").read_text(encoding="utf-8")
    html = _text((results / "report" / "index.html").read_text(encoding="utf-8"))
    for text in (md, html):
        assert "claims/verdicts.json is missing" in text
        assert "no generation manifests under generations/" in text
        assert "no Snakemake benchmark TSVs" in text
        assert "variance_shares.json is missing" in text
        assert "Truncated samples: 0 of" in text and "Failed cells: none" in text
        assert "Speculative decoding" not in text  # not configured: no section
        assert "Consistency findings" in text  # findings.txt is still there
        assert "It is indistinguishable from noise" in text and "No factor clears the noise floor" in text
    assert "### Reproducibility" not in md
    # the waterfall is declared by the rule when claims are configured: a placeholder says why it is empty
    assert (results / "report" / "figures" / "claims_waterfall.png").is_file()
    assert not (results / "report" / "figures" / "specdec.png").exists()


def test_specdec_rows_are_per_pair_when_pairs_differ(tmp_path):
    """Two drafter-verifier pairs: each (pair, task) gets its own row and interval, and each pair its own
    disparity; the pooled disparity is labelled as mixing them."""
    import pandas as pd

    from reprogrid.specdec.disparity import disparity

    cfg_path, results = make_results(tmp_path, with_claims=False, failed_cells=0, truncated=0)
    d = results / "specdec"
    a = pd.read_parquet(d / "specdec.parquet").assign(pair="pair-a")
    b = a.assign(pair="pair-b", speedup_measured=a["speedup_measured"] * 3.0,
                 prompt_id=a["prompt_id"] + "-b")
    both = pd.concat([a, b], ignore_index=True)
    both.to_parquet(d / "specdec.parquet", index=False)
    dis = disparity(both, n_boot=200, seed=0)
    dis["by_pair"] = {p: {"speedup": disparity(g, n_boot=200, seed=0)} for p, g in both.groupby("pair")}
    (d / "disparity.json").write_text(json.dumps(dis))
    assert main(["report", "--config", str(cfg_path), "--results", str(results), "--bootstrap", "0"]) == 0
    md = (results / "report" / "summary.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| pair-")}
    assert set(rows) == {f"pair-{p}: {t}" for p in "ab" for t in ("niah_single_1", "ruler_cwe", "ruler_vt")}
    for t in ("niah_single_1", "ruler_cwe", "ruler_vt"):
        sa = float(rows[f"pair-a: {t}"].split("|")[3].strip().rstrip("×"))
        sb = float(rows[f"pair-b: {t}"].split("|")[3].strip().rstrip("×"))
        assert sb == pytest.approx(3 * sa, rel=0.05)  # not pooled: each pair keeps its own speed-up
        assert f"{3 * sa:.1f}" != f"{2 * sa:.1f}"
    assert "These pooled figures mix the pairs; per pair:" in md
    per_pair = [line for line in md.splitlines() if line.startswith("- pair-")]
    assert len(per_pair) == 2 and all("max/min ratio" in line for line in per_pair)
    html = _text((results / "report" / "index.html").read_text(encoding="utf-8"))
    assert "pair-b: niah_single_1" in html and "per pair:" in html


def test_errors_are_user_errors(tmp_path, capsys):
    cfg_path, results = make_results(tmp_path, with_claims=False, with_specdec=False)
    (results / "tables" / "cells.parquet").unlink()
    assert main(["report", "--config", str(cfg_path), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "cells.parquet not found" in err and "reprogrid score" in err


# --------------------------------------------------------------------------------------------------
# snakemake --report on the finished synthetic run


@pytest.mark.workflow  # runs snakemake
@pytest.mark.skipif(shutil.which("snakemake", path=str(Path(sys.executable).parent)) is None,
                    reason="snakemake is not installed in this environment")
def test_snakemake_report_zip(tmp_path):
    cfg_path, results = make_results(tmp_path / "study")
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"]}
    base = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path / "work"),
            "--configfile", str(cfg_path), "--cores", "1"]

    def smk(*args):
        r = subprocess.run([*base, *args], capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        return r

    # the synthetic run is finished: mark the tables and shares as made by their rules, then run the report
    smk("--touch", str(results / "tables" / "samples.parquet"), str(results / "attribution" / "variance_shares.csv"))
    smk(str(results / "report" / "index.html"))
    smk("--report", str(tmp_path / "report.zip"))
    import zipfile

    names = zipfile.ZipFile(tmp_path / "report.zip").namelist()
    figs, tabs = expected_outputs(load_study(cfg_path))
    for n in figs:
        assert any(x.endswith(f"/{n}.png") for x in names), n
    for n in tabs:
        assert any(x.endswith(f"/{n}.csv") for x in names), n
    assert any(x.endswith("/index.html") for x in names)


# --------------------------------------------------------------------------------------------------
# real headless Chromium

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--mute-audio"]


@pytest.fixture(scope="session")
def chromium():
    """The chromium binary, installed by scripts/install-chromium.sh if needed; skip with the reason if not."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        try:
            r = subprocess.run(["bash", str(REPO / "scripts" / "install-chromium.sh")], capture_output=True,
                               text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"chromium could not be installed: {exc}")
        found = shutil.which("chromium") or shutil.which("chromium-browser")
        if r.returncode != 0 or not found:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            pytest.skip(f"chromium could not be installed (install-chromium.sh exit {r.returncode}: {tail[0]})")
    try:
        v = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"chromium does not start: {exc}")
    if v.returncode != 0:
        pytest.skip(f"chromium does not start: {(v.stderr or v.stdout).strip()[:200]}")
    return found


class _CDP:
    """A minimal Chrome DevTools protocol client over aiohttp's websocket client."""

    def __init__(self, ws):
        self.ws, self.next_id, self.events, self.pending = ws, 0, [], {}

    async def pump(self):
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.append(data)

    async def send(self, method, timeout=60, **params):
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send_str(json.dumps({"id": self.next_id, "method": method, "params": params}))
        res = await asyncio.wait_for(fut, timeout)
        if "error" in res:
            raise RuntimeError(f"{method}: {res['error']}")
        return res["result"]

    async def wait_event(self, method, timeout=60):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if any(e["method"] == method for e in self.events):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(method)


PAGE_CHECK = """(async () => {
  const imgs = [...document.images];
  const decoded = await Promise.all(imgs.map(i => i.decode().then(() => true, () => false)));
  return JSON.stringify({
    images: imgs.map((i, k) => ({alt: i.alt.slice(0, 60), w: i.naturalWidth, h: i.naturalHeight, decoded: decoded[k],
                                 shown: i.getBoundingClientRect().width})),
    text: document.body.innerText,
    scrollWidth: document.documentElement.scrollWidth, clientWidth: document.documentElement.clientWidth,
    overflowing: [...document.querySelectorAll(".tablewrap, figure")].filter(w => w.scrollWidth > w.clientWidth + 1)
                   .map(w => (w.querySelector("th, img") || w).outerHTML.slice(0, 80)),
    height: document.documentElement.scrollHeight, title: document.title,
  });
})()"""


async def _inspect(binary: str, url: str, profile: Path, shots: dict[str, Path]) -> dict:
    import aiohttp

    profile.mkdir(parents=True, exist_ok=True)
    log = open(profile.parent / "chromium.log", "w")
    proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                             "--window-size=1366,900", "about:blank"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        port_file = profile / "DevToolsActivePort"
        t0 = time.monotonic()
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() - t0 > 60:
                raise RuntimeError(f"chromium did not open its debugging port (exit {proc.poll()}); see {log.name}")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                    pages = [t for t in await r.json(content_type=None) if t.get("type") == "page"]
                if pages:
                    break
                await asyncio.sleep(0.1)
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                cdp = _CDP(ws)
                pump = asyncio.create_task(cdp.pump())
                for domain in ("Page", "Runtime", "Log", "Network"):
                    await cdp.send(f"{domain}.enable")
                await cdp.send("Emulation.setDeviceMetricsOverride", width=1366, height=900, deviceScaleFactor=1,
                               mobile=False)
                await cdp.send("Page.navigate", url=url)
                await cdp.wait_event("Page.loadEventFired")
                res = await cdp.send("Runtime.evaluate", expression=PAGE_CHECK, awaitPromise=True, returnByValue=True)
                page = json.loads(res["result"]["value"])
                shot = await cdp.send("Page.captureScreenshot", format="png")
                shots["viewport"].write_bytes(base64.b64decode(shot["data"]))
                full = await cdp.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                      clip={"x": 0, "y": 0, "width": 1366, "height": page["height"], "scale": 0.5})
                shots["full"].write_bytes(base64.b64decode(full["data"]))
                await asyncio.sleep(0.2)
                pump.cancel()
                page["events"] = cdp.events
                return page
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_report_in_headless_chromium(rendered, chromium, tmp_path):
    pytest.importorskip("aiohttp", reason="aiohttp (the DevTools websocket client) is not installed")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    shots = {"viewport": ARTIFACTS / "report.png", "full": ARTIFACTS / "report-full.png"}
    url = rendered["paths"]["html"].resolve().as_uri()
    try:
        page = asyncio.run(asyncio.wait_for(_inspect(chromium, url, tmp_path / "profile", shots), 120))
    except (RuntimeError, TimeoutError, OSError) as exc:
        pytest.skip(f"headless chromium could not be driven: {exc}")
    ev = page["events"]
    console_errors = [e["params"] for e in ev if e["method"] == "Runtime.consoleAPICalled"
                      and e["params"].get("type") in ("error", "assert")]
    exceptions = [e["params"] for e in ev if e["method"] == "Runtime.exceptionThrown"]
    log_errors = [e["params"]["entry"] for e in ev if e["method"] == "Log.entryAdded"
                  and e["params"]["entry"].get("level") == "error"]
    requests = [e["params"]["request"]["url"] for e in ev if e["method"] == "Network.requestWillBeSent"]
    failed = [e["params"] for e in ev if e["method"] == "Network.loadingFailed"]
    assert not console_errors and not exceptions and not log_errors, (console_errors, exceptions, log_errors)
    assert not failed, failed
    assert all(u == url or u.startswith("data:") for u in requests), requests  # no network, no other file
    assert len(page["images"]) == 6
    for img in page["images"]:
        assert img["decoded"] and img["w"] > 0 and img["h"] > 0 and img["shown"] > 0, img
    assert page["scrollWidth"] <= page["clientWidth"], "the page scrolls sideways at 1366 px"
    assert not page["overflowing"], f"tables or figures wider than the page at 1366 px: {page['overflowing']}"
    text = re.sub(r"\s+", " ", page["text"])
    assert (f"{KNOWN['top_factor']} explains the largest share of the spread: {KNOWN['top_share']} "
            f"(95% CI {KNOWN['top_ci']})") in text
    assert "does not reproduce" in text.lower()
    assert "Truncated samples: 3 of 575" in text and FAILED_REASON in text
    assert shots["viewport"].read_bytes()[:4] == b"\x89PNG" and shots["full"].stat().st_size > 10_000


def test_noise_section_prints_the_variance_components(rendered):
    """The measurement-noise section is the gstudy JSON: its noise share, G and advice, as written."""
    from reprogrid.layout import Layout

    js = json.loads(Path(Layout(rendered["results"]).variance_components_json).read_text())
    md = rendered["md"].split("## Measurement noise vs protocol", 1)[1].split("\n## ", 1)[0]
    if js.get("available") is False:
        assert js["reason"] in md
        return
    spread = js["spread"]
    share = spread["measurement_noise"] / (spread["measurement_noise"] + spread["protocol"])
    assert f"{share * 100:.0f}% is measurement\nnoise" in md or f"{share * 100:.0f}% is measurement noise" in md
    assert f"G = {js['coefficients']['G']:.2f}" in md
    for advice in js["design_advice"]["advice"]:
        assert advice in md


def test_research_answers_put_the_record_before_the_grid():
    """A claim that is not in its cited source and equals another model's number is explained by the record
    (misattribution), not by a grid reading; model families match across naming styles."""
    from reprogrid.report.research_section import family, q2

    assert family("Qwen/Qwen2.5-7B-Instruct-1M") == family("qwen25-coder-0.5b-instruct") == "qwen2.5"
    assert family("qwen2.5-small") == "qwen2.5" and family("Llama-3.1-8B") == "llama3.1"
    v = {"explanations": [
        {"claim": {"id": "pbs", "model": "qwen2.5-7b-instruct-1m", "reported": 95.7, "scale": "percent",
                   "verification": {"status": "not_found", "where": "arXiv 2510.21270"}},
         "status": "undetermined", "missing": ["model=qwen2.5-7b-instruct-1m is not in the grid"]},
        {"claim": {"id": "readme", "model": "qwen2.5-14b-instruct-1m", "reported": 95.7, "scale": "percent",
                   "verification": {"status": "seen", "where": "README table"}},
         "status": "undetermined", "missing": []},
        {"claim": {"id": "blog", "model": "qwen2.5-turbo", "reported": 93.1, "scale": "percent",
                   "verification": {"status": "secondary", "where": "a copy"}},
         "status": "undetermined", "missing": []}],
        "pair": {"low": {"id": "readme"}, "high": {"id": "pbs"}},
        "findings": [{"claim_id": "pbs", "kind": "possible_misattribution", "message": "equals readme's 95.7"},
                     {"claim_id": "pbs", "kind": "not_traceable", "message": "not in arXiv 2510.21270"}]}
    rows = {r["claim"].split(" ")[0]: r for r in q2(v)}
    assert rows["pbs"]["best"].startswith("most likely another report's number misattributed")
    assert rows["pbs"]["verification"] == "not found in its cited source"
    assert rows["pbs"]["record"][0].startswith("not traceable")  # traceability first
    assert rows["readme"]["verification"] == "verified (README table)"
    assert rows["readme"]["best"] == "unexplained by this grid"
    # a claim outside the pair, without findings, that the grid cannot read is summed up, not listed
    assert "blog" not in rows and rows["1"]["verification"] == "1 secondary"



def test_design_advice_follows_every_verdict_the_data_leave_open():
    """Issue #14: the D-study advice is printed next to every verdict the data leave open: a runner-up whose
    interval overlaps the top factor's, a top factor indistinguishable from noise; not next to settled ones."""
    from reprogrid.report.fmt import Est
    from reprogrid.report.sections import headline

    advice = ["at 25 items per cell the smallest difference ... is 0.3",
              "to tell apart two cells 0.15 apart at 80% power you need 180 items per cell"]
    design = " Design: " + "; ".join(advice) + "."

    def attr(*rows):
        return {"rows": [{"effect": e, "share": Est(v, lo, hi, unit="%"), "above": above, "p_value": 0.01,
                          "floor_txt": "2%"} for e, v, lo, hi, above in rows], "has_floor": True,
                "permutations": 100}

    open_ = headline(attr(("A", 0.30, 0.20, 0.40, True), ("B", 0.25, 0.15, 0.35, True)), advice)
    assert open_["runner_txt"].endswith("is not settled." + design) and design not in open_["noise_txt"]
    settled = headline(attr(("A", 0.50, 0.45, 0.55, True), ("B", 0.10, 0.05, 0.15, True)), advice)
    assert "Design:" not in settled["runner_txt"] + settled["noise_txt"]
    noise = headline(attr(("A", 0.05, 0.01, 0.09, False), ("B", 0.01, 0.00, 0.09, False)), advice)
    assert noise["noise_txt"].endswith(design) and noise["runner_txt"].endswith(design)
    plain = headline(attr(("A", 0.30, 0.20, 0.40, True), ("B", 0.25, 0.15, 0.35, True)))
    assert "Design:" not in plain["runner_txt"]
