"""The HTML report: every section a colleague expects, offline, with the maps added afterwards."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from soc_depth_mapper.core.bundle import SocModel
from soc_depth_mapper.core.report import append_maps, density_curve, write_training_report
from soc_depth_mapper.core.training import TrainingData, train

# a 1x1 white PNG
PIXEL = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/x8AAwMCAO+ip1sAAAAASUVORK5CYII=")


def small_run(validation: str = "random", transform: str = "none"):
    rng = np.random.default_rng(0)
    n = 80
    covariates = rng.uniform(0, 1, (n, 2, 1, 1)).astype(np.float32)
    base = 5 + 10 * covariates[:, 0, 0, 0]
    targets = np.stack([base, base / 2, base / 4], axis=1) + rng.normal(0, 0.2, (n, 3))
    targets[:5, 2] = np.nan
    data = TrainingData(
        site_ids=np.arange(n),
        x=rng.uniform(0, 1000, n),
        y=rng.uniform(0, 1000, n),
        patches=covariates,
        targets=targets,
        intervals=np.array([[0, 5], [5, 15], [15, 30]], dtype=float),
        property_name="SOC",
        band_names=["dem", "twi"],
    )
    result = train(
        data, "random_forest", {"n_trees": 30}, validation=validation, folds=4, transform=transform, random_state=1
    )
    grid = {"crs_wkt": "", "transform": [0, 1, 0, 0, 0, -1], "res": [1.0, 1.0], "nodata": [None, None]}
    return SocModel.from_training(result, data, grid), data, result


def test_report_has_every_section_and_no_network_reference(tmp_path):
    bundle, data, result = small_run()
    path = tmp_path / "report.html"
    write_training_report(str(path), bundle, data, result)
    text = path.read_text(encoding="utf-8")
    for section in (
        "<h2>Data</h2>",
        "<h2>Settings</h2>",
        "<h2>Validation</h2>",
        "Observed vs predicted",
        "Residuals in space",
        "Mean depth profile",
        "Density of observed and predicted values, per depth",
        "<h2>Covariate importance</h2>",
    ):
        assert section in text
    # distribution, scatter, residuals, profile, density, importance
    assert len(re.findall(r"data:image/png;base64,", text)) == 6
    assert not re.search(r"(src|href)=[\"']https?://", text)
    # settings as a table with the dialog's labels and units, not a Python dict
    assert "<tr><th>Setting</th><th>Value</th></tr><tr><td>Model</td><td>Random forest</td></tr>" in text
    assert "<tr><td>Random forest: trees</td><td>30</td></tr>" in text
    assert "<tr><td>Patch size</td><td>1 × 1 cells</td></tr>" in text
    assert re.search(r"<tr><td>Training time</td><td>\d+\.\d s</td></tr>", text)
    assert "{" not in re.search(r"<h2>Settings</h2>(.*?)<h2>", text, re.S).group(1)
    # the metrics table carries the same numbers as the validation result
    overall = next(r for r in result.validation.metrics if r["depth"] == "all")
    assert f"<td>{overall['rmse']:.3f}</td>" in text
    # per depth and overall, the confidence intervals and the coverage of the out-of-fold intervals
    assert "Confidence intervals and prediction-interval coverage" in text
    for row in result.validation.metrics:
        cells = (
            f"<tr><td>{row['depth']}</td><td>all</td><td>{row['rmse_lo']:.3f} to {row['rmse_hi']:.3f}</td>"
            f"<td>{row['r2_lo']:.3f} to {row['r2_hi']:.3f}</td><td>{row['ccc_lo']:.3f} to {row['ccc_hi']:.3f}</td>"
            f"<td>{row['me_lo']:.3f} to {row['me_hi']:.3f}</td><td>{row['picp']:.1%}</td>"
        )
        assert cells in text
    # sites per depth: 80, 80, 75
    assert "<td>0-5</td><td>80</td>" in text and "<td>15-30</td><td>75</td>" in text


def test_the_unit_follows_the_headings_of_values_in_the_propertys_unit(tmp_path):
    bundle, data, result = small_run()
    path = tmp_path / "report.html"
    write_training_report(str(path), bundle, data, result, unit=" (g/kg)")
    text = path.read_text(encoding="utf-8")
    assert "<th>Mean (g/kg)</th><th>Median (g/kg)</th><th>Min (g/kg)</th><th>Max (g/kg)</th>" in text
    assert "<th>R²</th><th>RMSE (g/kg)</th><th>MAE (g/kg)</th><th>ME (g/kg)</th><th>CCC</th>" in text


def test_density_of_a_non_negative_property_stays_at_or_above_0_and_is_not_halved_there():
    """Oracle: the exponential density, 1 at 0. A plain kernel estimate runs below 0 and gives about half of
    that at 0 (half its kernel mass lies below); reflected at 0 it gives the full density and still integrates
    to 1."""
    from scipy.stats import gaussian_kde

    sample = np.random.default_rng(3).exponential(1.0, 4000)
    grid, density = density_curve(sample, points=4000)
    assert grid.min() == 0.0
    assert density[0] == pytest.approx(1.0, abs=0.12)
    assert gaussian_kde(sample)(0.0)[0] == pytest.approx(0.5, abs=0.1)
    assert np.trapz(density, grid) == pytest.approx(1.0, abs=0.01)
    # a property with negative values (a residual) is left as it is: no reflection, the curve spans the values
    signed = np.random.default_rng(4).normal(0, 1, 500)
    grid, density = density_curve(signed)
    assert grid.min() < signed.min()
    np.testing.assert_allclose(density, gaussian_kde(signed)(grid))


def test_maps_are_appended_as_embedded_images(tmp_path):
    bundle, data, result = small_run()
    path = tmp_path / "report.html"
    write_training_report(str(path), bundle, data, result)
    png = tmp_path / "map.png"
    png.write_bytes(PIXEL)
    append_maps(str(path), {"SOC 0–5 cm": str(png)})
    text = path.read_text(encoding="utf-8")
    assert "<h2>Maps</h2>" in text and "<h3>SOC 0–5 cm</h3>" in text
    assert base64.b64encode(PIXEL).decode("ascii") in text
    assert text.rstrip().endswith("</body></html>")
    # both writes went through a temporary file that was moved into place: none is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.png", "report.html"]


def permutation_importance_by_hand(fold_models, patches, targets, folds, repeats, seed):
    """A second, plain implementation of the area of applicability's importance: one band of one fold shuffled
    and predicted at a time, with the permutations drawn in the documented order (repeat, band, fold)."""
    fold_ids = sorted(set(folds.tolist()))
    observed = np.isfinite(targets)

    def rmse(predicted):
        return float(np.sqrt(np.mean((predicted[observed] - targets[observed]) ** 2)))

    baseline = np.full(targets.shape, np.nan)
    for model, fold in zip(fold_models, fold_ids):
        baseline[folds == fold] = model.predict(patches[folds == fold])
    rng = np.random.default_rng(seed)
    increase = np.zeros(patches.shape[1])
    for _ in range(repeats):
        for band in range(patches.shape[1]):
            shuffled = np.full(targets.shape, np.nan)
            for model, fold in zip(fold_models, fold_ids):
                test = patches[folds == fold].copy()
                test[:, band] = test[rng.permutation(len(test)), band]
                shuffled[folds == fold] = model.predict(test)
            increase[band] += rmse(shuffled) - rmse(baseline)
    return np.maximum(increase / repeats, 0.0)


def importance_table(text: str) -> list[tuple[str, float]]:
    section = re.search(r"<h2>Covariate importance</h2>(.*?)(<h2>|</body>)", text, re.S).group(1)
    return [(name, float(value)) for name, value in re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td></tr>", section)]


def test_covariate_importance_is_the_cards_permutation_importance_sorted(tmp_path):
    """Oracle: the permutation importance recomputed by hand from the fold models; and the data, where SOC
    follows dem alone, so dem must come first and twi, pure noise, must add next to nothing."""
    from soc_depth_mapper.core.aoa import IMPORTANCE_REPEATS

    bundle, data, result = small_run()
    path = tmp_path / "report.html"
    write_training_report(str(path), bundle, data, result, unit=" (g/kg)")
    text = path.read_text(encoding="utf-8")
    cv = result.validation
    expected = permutation_importance_by_hand(
        cv.fold_models, data.patches, data.targets, cv.folds, IMPORTANCE_REPEATS, result.settings["random_state"]
    )
    card = bundle.card.aoa_reference["importance"]
    np.testing.assert_allclose(card, expected, rtol=1e-9)
    table = importance_table(text)
    assert [name for name, _ in table] == ["dem", "twi"]
    np.testing.assert_allclose([value for _, value in table], [card[0], card[1]], rtol=5e-4)
    # shuffling dem loses the signal (SD of 10 · U(0, 1) ≈ 2.9 at the top, halved and quartered below)
    assert table[0][1] > 1.0 and table[1][1] < 0.1 * table[0][1]
    assert "<th>Covariate</th><th>RMSE increase (g/kg)</th>" in text
    assert "rises when one covariate's values are shuffled" in text
    section = re.search(r"<h2>Covariate importance</h2>(.*?)<table>", text, re.S).group(1)
    assert 'src="data:image/png;base64,' in section


def test_covariate_importance_of_a_log_model_is_on_the_log_scale(tmp_path):
    bundle, data, result = small_run(transform="log")
    path = tmp_path / "report.html"
    write_training_report(str(path), bundle, data, result, unit=" (g/kg)")
    text = path.read_text(encoding="utf-8")
    assert "<th>RMSE increase (log(1 + SOC))</th>" in text
    assert "fitted on log(1 + SOC), so the RMSE is on that scale" in text


def test_without_validation_the_report_says_why_there_is_no_importance(tmp_path):
    bundle, data, result = small_run(validation="none")
    assert bundle.card.aoa_reference is None
    path = tmp_path / "report.html"
    write_training_report(str(path), bundle, data, result)
    text = path.read_text(encoding="utf-8")
    section = re.search(r"<h2>Covariate importance</h2>(.*?)</body>", text, re.S).group(1)
    assert "trained without validation" in section and "'Random k-fold'" in section
    assert importance_table(text) == [] and "<img" not in section


#: written into the DOM once the page has loaded: how many images decoded, of how many
IMAGE_PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const probe = document.createElement("pre");
  probe.id = "image-probe";
  probe.textContent = JSON.stringify({
    loaded: images.filter((image) => image.complete && image.naturalWidth > 0).length,
    total: images.length,
  });
  document.body.appendChild(probe);
});
</script>"""


@pytest.fixture
def chromium_binary() -> str:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("chromium is not installed (scripts/setup_system.sh installs it from Debian)")
    return binary


def chromium(binary: str, *arguments: str, profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium on a fresh profile; its stderr (D-Bus and GPU noise in a container) is not checked."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars"]
    run = subprocess.run(
        [binary, *flags, f"--user-data-dir={profile}", *arguments], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def render(binary: str, page: Path, tmp_path: Path) -> tuple[dict, list[str], np.ndarray]:
    """The image probe's counts of a copy of `page`, the URLs that page requested, and a screenshot's RGB pixels,
    rendered with every host name unresolvable (so nothing can leave even if requested)."""
    import matplotlib.pyplot as plt

    probed = tmp_path / f"probed-{page.name}"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", IMAGE_PROBE + "</body>"), encoding="utf-8")
    net_log, screenshot = tmp_path / f"{page.stem}-net.json", tmp_path / f"{page.stem}.png"
    dom = chromium(
        binary,
        "--virtual-time-budget=5000",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--log-net-log={net_log}",
        "--window-size=1100,2400",
        f"--screenshot={screenshot}",
        "--dump-dom",
        probed.as_uri(),
        profile=tmp_path / f"profile-{page.stem}",
    ).stdout
    counts = json.loads(html.unescape(re.search(r'<pre id="image-probe">(.*?)</pre>', dom, re.S).group(1)))
    return counts, page_requests(net_log), plt.imread(screenshot)[..., :3].reshape(-1, 3)


def page_requests(net_log: Path) -> list[str]:
    """URLs of the network requests the page made: those in the network partition of the file: page (the
    browser's own traffic, e.g. its update checks, has none)."""
    log = json.loads(net_log.read_text(encoding="utf-8"))
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start and "file://" in event["params"].get("network_isolation_key", "")
    ]


def test_the_report_renders_in_chromium_offline_with_every_image(tmp_path, chromium_binary):
    """A real report in a real browser: no request leaves the file, every figure decodes, the page is not blank.
    A copy with one remote image is the control that the checks see a request and a missing image."""
    bundle, data, result = small_run()
    report = tmp_path / "report.html"
    write_training_report(str(report), bundle, data, result, unit=" (g/kg)")
    text = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//|url\(\s*["']?\s*(https?:)?//|@import""", text)

    counts, requests, pixels = render(chromium_binary, report, tmp_path)
    assert counts == {"loaded": 6, "total": 6}
    assert requests == []
    background = np.all(pixels == pixels[0], axis=1)
    assert 0.02 < 1 - background.mean() < 0.9  # text, tables and figures on a plain page

    remote = tmp_path / "remote.html"
    remote.write_text(text.replace("</h1>", '</h1><img src="http://example.invalid/map.png" alt="">'), "utf-8")
    counts, requests, _ = render(chromium_binary, remote, tmp_path)
    assert counts == {"loaded": 6, "total": 7}
    assert requests == ["http://example.invalid/map.png"]
