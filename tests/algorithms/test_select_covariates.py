"""socdepth:select_covariates through QGIS Processing on the real Edgeroi data, and its selection feeding train
and predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

DATA = Path(__file__).resolve().parents[2] / "sample_data" / "edgeroi"
GSM = ["0_5", "5_15", "15_30", "30_60", "60_100", "100_200"]
BANDS = ["DEMSRT5", "TWISRT5", "PMTGEO5", "EV1MOD5", "EV2MOD5", "EV3MOD5"]


def selection_params(harmonised, covariates, folder, **extra):
    return {
        "INPUT": harmonised,
        "TARGET_FIELDS": [f"ORCDRC_{d}" for d in GSM],
        "COVARIATES": [covariates],
        "CATEGORICAL": "cov_PMTGEO5",
        "MODEL": 0,
        "VALIDATION": 2,
        "FOLDS": 4,
        "SEED": 7,
        "STEP": 2,
        "N_TREES": 30,
        "OUTPUT_TABLE": "memory:",
        "OUTPUT_SUBSETS": "memory:",
        "OUTPUT_COVARIATES": str(folder / "selected.tif"),
        "OUTPUT_REPORT": str(folder / "selection.html"),
        **extra,
    }


def site_values(harmonised: str) -> tuple[np.ndarray, np.ndarray]:
    """Oracle: (covariates (S, 6), ORCDRC (S, 6)) at the sites on the grid, read with QGIS and rasterio."""
    from qgis.core import QgsVectorLayer

    covariate_rows, target_rows = [], []
    with rasterio.open(DATA / "covariates_250m.tif") as dataset:
        values = dataset.read(masked=True)
        for feature in QgsVectorLayer(harmonised, "h", "ogr").getFeatures():
            point = feature.geometry().asPoint()
            row, col = dataset.index(point.x(), point.y())
            if 0 <= row < dataset.height and 0 <= col < dataset.width and not values[:, row, col].mask.any():
                covariate_rows.append(values[:, row, col].data.astype(float))
                target = [feature[f"ORCDRC_{d}"] for d in GSM]  # a missing depth is a NULL QVariant
                target_rows.append([float(v) if isinstance(v, (int, float)) else np.nan for v in target])
    return np.array(covariate_rows), np.array(target_rows)


@pytest.fixture(scope="module")
def selected(qgis_processing, harmonised, covariates, tmp_path_factory):
    folder = tmp_path_factory.mktemp("selection")
    result = qgis_processing.run("socdepth:select_covariates", selection_params(harmonised, covariates, folder))
    return result, folder


def test_the_band_table_holds_each_bands_correlation_and_fate(selected, harmonised):
    result, _ = selected
    rows = {f["band"]: f for f in result["OUTPUT_TABLE"].getFeatures()}
    assert sorted(rows) == sorted(f"cov_{b}" for b in BANDS)
    values, targets = site_values(harmonised)
    for b, name in enumerate(BANDS):
        row = rows[f"cov_{name}"]
        if name == "PMTGEO5":  # categorical: no correlation, never dropped for it, ranked
            assert row["categorical"] and not isinstance(row["correlation"], float)
            assert row["dropped"] in ("", None) or "MAX_COVARIATES" in row["dropped"]
            continue
        oracle = []
        for d in range(len(GSM)):
            seen = ~np.isnan(targets[:, d])
            oracle.append(np.corrcoef(values[seen, b], targets[seen, d])[0, 1])
        assert row["correlation"] == pytest.approx(np.mean(np.abs(oracle)), abs=1e-5), name
        assert row[f"r_{GSM[0]}"] == pytest.approx(oracle[0], abs=1e-5)
    ranks = sorted(f["rank"] for f in rows.values() if isinstance(f["rank"], int))
    assert ranks == list(range(1, len(ranks) + 1))
    assert all(isinstance(f["importance"], float) for f in rows.values() if isinstance(f["rank"], int))


def test_the_subsets_are_nested_and_the_lowest_rmse_is_chosen(selected):
    result, _ = selected
    subsets = sorted(result["OUTPUT_SUBSETS"].getFeatures(), key=lambda f: f["size"])
    ranked = sorted(
        (f for f in result["OUTPUT_TABLE"].getFeatures() if isinstance(f["rank"], int)), key=lambda f: f["rank"]
    )
    assert [f["size"] for f in subsets][:-1] == list(range(2, 2 * len(subsets), 2))
    assert subsets[-1]["size"] == len(ranked)
    for subset in subsets:
        assert subset["bands"].split(", ") == [f["band"] for f in ranked[: subset["size"]]]
        assert 0 < subset["rmse"] < 10 and 0 < subset["ccc"] < 1 and subset["rmse_se"] > 0
        assert min(subset[f"rmse_{d}"] for d in GSM) < subset["rmse"] < max(subset[f"rmse_{d}"] for d in GSM)
    chosen = [f for f in subsets if f["chosen"]]
    assert len(chosen) == 1 and chosen[0]["rmse"] == min(f["rmse"] for f in subsets)
    selected_bands = {f["band"] for f in result["OUTPUT_TABLE"].getFeatures() if f["selected"]}
    assert selected_bands == set(chosen[0]["bands"].split(", "))


def test_the_selected_stack_holds_the_selected_bands_unchanged(selected):
    result, folder = selected
    chosen = next(f for f in result["OUTPUT_SUBSETS"].getFeatures() if f["chosen"])["bands"].split(", ")
    in_stack_order = [b for b in BANDS if f"cov_{b}" in chosen]
    assert result["OUTPUT_COVARIATES"] == str(folder / "selected.tif")
    with rasterio.open(folder / "selected.tif") as out, rasterio.open(DATA / "covariates_250m.tif") as source:
        assert out.descriptions == tuple(f"cov_{b}" for b in in_stack_order)
        assert (out.crs, out.transform, out.shape) == (source.crs, source.transform, source.shape)
        for band, name in enumerate(in_stack_order, start=1):
            original = source.read(BANDS.index(name) + 1, masked=True)
            written = out.read(band, masked=True)
            assert np.array_equal(written.mask, original.mask)
            assert np.array_equal(written.data[~original.mask], original.data[~original.mask])
    expected = "selected_cov_PMTGEO5" if "cov_PMTGEO5" in chosen else ""
    assert result["OUTPUT_CATEGORICAL"] == expected
    assert [p.name for p in folder.iterdir()] and not [p for p in folder.iterdir() if p.name.endswith(".partial.tif")]


def test_the_report_plots_rmse_against_subset_size_and_says_it_is_optimistic(selected):
    _, folder = selected
    page = (folder / "selection.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 1 and "RMSE against subset size" in page
    assert "optimistic" in page and "http" not in page


def test_the_selection_feeds_train_and_predict_with_the_same_cross_validated_rmse(
    qgis_processing, selected, harmonised, tmp_path
):
    """Chained as in the model builder: train on the selected stack with the same model, folds and seed
    reproduces the chosen subset's cross-validated RMSE exactly, and predict maps it."""
    result, folder = selected
    trained = qgis_processing.run(
        "socdepth:train",
        {
            "INPUT": harmonised,
            "TARGET_FIELDS": [f"ORCDRC_{d}" for d in GSM],
            "COVARIATES": [result["OUTPUT_COVARIATES"]],
            "CATEGORICAL": result["OUTPUT_CATEGORICAL"],
            "MODEL": 0,
            "VALIDATION": 2,
            "FOLDS": 4,
            "SEED": 7,
            "N_TREES": 30,
            "OUTPUT_MODEL": str(tmp_path / "model.socmodel"),
            "OUTPUT_METRICS": "memory:",
        },
    )
    overall = [f for f in trained["OUTPUT_METRICS"].getFeatures() if f["depth"] == "all" and f["group"] == "all"]
    chosen = next(f for f in result["OUTPUT_SUBSETS"].getFeatures() if f["chosen"])
    assert overall[0]["rmse"] == pytest.approx(chosen["rmse"], rel=1e-9)
    maps = qgis_processing.run(
        "socdepth:predict",
        {
            "MODEL": trained["OUTPUT_MODEL"],
            "COVARIATES": [result["OUTPUT_COVARIATES"]],
            "OUTPUT": str(tmp_path / "soc.tif"),
        },
    )
    with rasterio.open(maps["OUTPUT"]) as soc:
        values = soc.read(1, masked=True)
    assert soc.count == 6 and 0 < values.mean() < 40


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"VALIDATION": 0}, "choose random or spatial block k-fold validation"),
        ({"OUTPUT_COVARIATES": "selected.vrt"}, "give '.*selected.vrt' the extension .tif"),
        ({"MIN_CORRELATION": 0.9, "CATEGORICAL": ""}, "lower MIN_CORRELATION"),
        ({"CLUSTER": "tcp://head"}, "Cluster 'tcp://head' is not understood.*local:N"),
    ],
)
def test_bad_settings_stop_before_anything_is_written(
    qgis_processing, harmonised, covariates, tmp_path, extra, message
):
    from qgis.core import QgsProcessingException

    params = selection_params(harmonised, covariates, tmp_path, **extra)
    if extra.get("OUTPUT_COVARIATES"):
        params["OUTPUT_COVARIATES"] = str(tmp_path / extra["OUTPUT_COVARIATES"])
    with pytest.raises(QgsProcessingException, match=message):
        qgis_processing.run("socdepth:select_covariates", params)
    assert list(tmp_path.iterdir()) == []


def test_on_a_local_cluster_the_tables_and_the_stack_are_the_same(qgis_processing, harmonised, covariates, selected,
                                                                   tmp_path):  # fmt: skip
    from qgis.core import QgsProcessingFeedback

    texts = []

    class Messages(QgsProcessingFeedback):
        def setProgressText(self, text):  # noqa: N802 - QGIS API
            texts.append(text)
            super().setProgressText(text)

    result, folder = selected
    feedback = Messages()
    remote = qgis_processing.run(
        "socdepth:select_covariates", selection_params(harmonised, covariates, tmp_path, CLUSTER="local:2"),
        feedback=feedback,
    )  # fmt: skip
    assert any("models fitted on 2 Dask worker(s)" in text for text in texts)

    def rows(layer, without=()):
        return [[f[name] for name in layer.fields().names() if name not in without] for f in layer.getFeatures()]

    assert rows(remote["OUTPUT_TABLE"]) == rows(result["OUTPUT_TABLE"])
    assert rows(remote["OUTPUT_SUBSETS"], ("seconds",)) == rows(result["OUTPUT_SUBSETS"], ("seconds",))
    with rasterio.open(folder / "selected.tif") as mine, rasterio.open(tmp_path / "selected.tif") as theirs:
        assert mine.descriptions == theirs.descriptions and np.array_equal(mine.read(), theirs.read())


def test_in_a_model_builder_chain_the_selection_feeds_train(qgis_processing, harmonised, tmp_path):
    """select_covariates → train as a Processing model: train takes the selected stack and its categorical band
    names from the selection's outputs."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
    )

    from soc_depth_mapper.core.bundle import SocModel

    def child(algorithm: str, sources: dict) -> QgsProcessingModelChildAlgorithm:
        step = QgsProcessingModelChildAlgorithm(f"socdepth:{algorithm}")
        step.setChildId(algorithm)
        for name, source in sources.items():
            if not isinstance(source, QgsProcessingModelChildParameterSource):
                source = QgsProcessingModelChildParameterSource.fromStaticValue(source)
            step.addParameterSources(name, [source])
        return step

    shared = {"INPUT": harmonised, "TARGET_FIELDS": [f"ORCDRC_{d}" for d in GSM], "MODEL": 0, "VALIDATION": 1,
              "FOLDS": 3, "N_TREES": 20}  # fmt: skip
    select = child(
        "select_covariates",
        {**shared, "COVARIATES": [str(DATA / "covariates_250m.tif")], "CATEGORICAL": "covariates_250m_PMTGEO5",
         "MIN_CORRELATION": 0.1, "STEP": 3},
    )  # fmt: skip
    from_selection = QgsProcessingModelChildParameterSource.fromChildOutput
    train = child(
        "train",
        {**shared, "COVARIATES": from_selection("select_covariates", "OUTPUT_COVARIATES"),
         "CATEGORICAL": from_selection("select_covariates", "OUTPUT_CATEGORICAL")},
    )  # fmt: skip
    output = QgsProcessingModelOutput("model_file", "Model file")
    output.setChildId("train")
    output.setChildOutputName("OUTPUT_MODEL")
    train.setModelOutputs({"model_file": output})
    model = QgsProcessingModelAlgorithm("select then train", "tests")
    model.addChildAlgorithm(select)
    model.addChildAlgorithm(train)
    result = qgis_processing.run(model, {"train:model_file": str(tmp_path / "chained.socmodel")})
    bands = SocModel.load(result["train:model_file"]).card.bands
    # MIN_CORRELATION 0.1 drops EV1MOD5 (mean |r| 0.05 on Edgeroi); what is left is ranked and scored
    assert bands.names and all(name.startswith("OUTPUT_COVARIATES_covariates_250m_") for name in bands.names)
    assert "OUTPUT_COVARIATES_covariates_250m_EV1MOD5" not in bands.names
    # geology ranks among the first three on Edgeroi; train got its name from OUTPUT_CATEGORICAL
    assert [bands.names[i] for i in bands.categorical] == ["OUTPUT_COVARIATES_covariates_250m_PMTGEO5"]


def test_a_run_cancelled_while_scoring_subsets_writes_nothing(qgis_processing, harmonised, covariates, tmp_path):
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject

    class CancelAtTheFirstSubset(QgsProcessingFeedback):
        def setProgressText(self, text):  # noqa: N802 - QGIS API
            if "subset of" in text:
                self.cancel()
            super().setProgressText(text)

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    params = selection_params(harmonised, covariates, tmp_path, OUTPUT_TABLE=str(tmp_path / "bands.csv"))
    qgis_processing.run("socdepth:select_covariates", params, context=context, feedback=CancelAtTheFirstSubset())
    assert list(tmp_path.iterdir()) == []


def test_the_stack_loaded_into_the_project_is_named_as_its_categorical_output_assumes(
    qgis_processing, harmonised, covariates, tmp_path
):
    """A stack opened in QGIS names its bands after the layer: the layer must carry the file's name, which
    OUTPUT_CATEGORICAL's band names start with."""
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    params = selection_params(harmonised, covariates, tmp_path, OUTPUT_COVARIATES=str(tmp_path / "chosen.tif"))
    context.addLayerToLoadOnCompletion(
        params["OUTPUT_COVARIATES"], QgsProcessingContext.LayerDetails("Selected covariates", QgsProject.instance())
    )
    result = qgis_processing.run(
        "socdepth:select_covariates", params, context=context, feedback=QgsProcessingFeedback()
    )
    assert context.layerToLoadOnCompletionDetails(result["OUTPUT_COVARIATES"]).name == "chosen"
    assert result["OUTPUT_CATEGORICAL"] in ("", "chosen_cov_PMTGEO5")
