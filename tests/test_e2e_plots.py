"""`dvc plots show` draws every plot with the network refused: its page carries Vega, Vega-Lite and Vega-Embed
(vendor/vega/dvc-plots.html, named by .dvc/config's plots.html_template), and a baseline without losses (an
SVC) still writes every column that dvc.yaml plots."""

import html
import json
import re
import shutil
import subprocess

import pytest

from fmnist.core.runs import history_csv
from fmnist.data.prepare import Arrays, load_arrays, stratified_subset
from fmnist.models import create_model
from fmnist.training.baseline import fit_baseline

from e2e_support import browser, sh

pytestmark = pytest.mark.e2e

OFFLINE = ["--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
           "--host-resolver-rules=MAP * ~NOTFOUND"]
# Before DVC's scripts run: any script error or failed embedding is kept.
ERRORS = ("<script>window.plotErrors = []; addEventListener('error', e => plotErrors.push(String(e.message))); "
          "addEventListener('unhandledrejection', e => plotErrors.push(String(e.reason)));</script>")
# After the page has drawn: per plot div, its drawn canvases (or SVG marks) of non-zero size.
PROBE = ("<script>addEventListener('load', () => setTimeout(() => document.body.setAttribute('data-check', "
         "JSON.stringify({errors: plotErrors, plots: [...document.querySelectorAll('body > div[id]')].map(d => "
         "[d.id, [...d.querySelectorAll('canvas, svg.marks')].filter(c => c.getBoundingClientRect().width > 0 "
         "&& c.getBoundingClientRect().height > 0).length])})), 1000));</script>")


def svc_history(repo) -> str:
    """A real SVC fit on a few hundred of the pipeline's images: one row, no loss (no probabilities)."""
    train = stratified_subset(load_arrays(repo / "data/split/train.npz"), 300, seed=0)
    val = load_arrays(repo / "data/split/val.npz")
    result = fit_baseline(create_model("sk_svc", C=10.0, gamma="scale"), train, Arrays(val.x[:200], val.y[:200]),
                          None, seed=0)
    assert result.history[0].train_loss is None and result.history[0].val_loss is None
    return history_csv(result.history)


def plots_repo(repo, tmp_path):
    """The pipeline's plot definitions and plotted files, with an SVC's history beside its recipes'."""
    copy = tmp_path / "plots_repo"
    for path in ("dvc.yaml", "params.yaml", ".dvc/config", "vendor/vega/dvc-plots.html"):
        (copy / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / path, copy / path)
    for folder in ("metrics/history", "plots/confusion"):
        shutil.copytree(repo / folder, copy / folder)
    (copy / "metrics/history/sk_svc.csv").write_text(svc_history(repo))
    sh("git", "init", "-q", cwd=copy, env=None)
    return copy


def drawn_offline(page, tmp_path) -> dict:
    probed = tmp_path / "probe.html"
    head, tail = page.rsplit("</body>", 1)  # the inlined libraries hold the string too: the page's own is last
    probed.write_text(head.replace("<head>", "<head>" + ERRORS, 1) + PROBE + "</body>" + tail, encoding="utf-8")
    dom = browser(*OFFLINE, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri(), profile=tmp_path / "chrome")
    match = re.search(r'<body data-check="([^"]*)"', dom)
    assert match, dom[-500:]
    return json.loads(html.unescape(match.group(1)))


def test_every_dvc_plot_draws_with_the_network_refused(pipeline, tmp_path):
    repo, env, _, _ = pipeline
    copy = plots_repo(repo, tmp_path)
    shown = subprocess.run(["dvc", "plots", "show", "-o", str(tmp_path / "dvc_plots")], cwd=copy, env=env,
                           capture_output=True, text=True, timeout=300)
    # A plot DVC cannot draw (a missing field) is a warning, with the other plots written and exit status 0.
    assert shown.returncode == 0 and "WARNING" not in shown.stderr and "ERROR" not in shown.stderr, shown.stderr
    page = (tmp_path / "dvc_plots" / "index.html").read_text(encoding="utf-8")
    assert "src=\"http" not in page  # nothing loaded from a CDN
    plotted = [f"{folder}/{f.name}" for folder in ("metrics/history", "plots/confusion")
               for f in sorted((copy / folder).iterdir())]
    assert "metrics/history/sk_svc.csv" in plotted and len(plotted) == 4 + 3
    check = drawn_offline(page, tmp_path)
    assert check["errors"] == []
    expected = {re.sub(r"[^A-Za-z0-9]", "_", name): 1 for name in plotted}
    assert dict(check["plots"]) == expected
