"""Writes the model files of release 0.x (bundle version 1) that `tests/core/test_release_models.py` loads.

The files are a frozen record of what users already have on disk: a tiny random forest and a tiny CNN on
synthetic data, each with its expected maps and 90 % intervals on a fixed block (`release_expected.npz`),
all computed by the code that wrote the model file. They were made at commit add57e9, before the model card
existed; running this script with later code would write the later format, so regenerate them only from a
checkout of that commit (`git worktree add /tmp/v1 add57e9`, then run this script there with `--out`).

    .venv/bin/python tests/data/make_release_models.py --out tests/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from soc_depth_mapper.core.bundle import SocModel
from soc_depth_mapper.core.training import TrainingData, train

INTERVALS = np.array([[0.0, 5.0], [5.0, 15.0], [15.0, 30.0]])
BANDS = ["cov_a", "cov_b", "cov_geology"]
GRID = {
    "crs_wkt": 'PROJCS["WGS 84 / UTM zone 55S",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,'
    '298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],'
    'PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",147],PARAMETER["scale_factor",0.9996],'
    'PARAMETER["false_easting",500000],PARAMETER["false_northing",10000000],UNIT["metre",1],'
    'AUTHORITY["EPSG","32755"]]',
    "transform": [700000.0, 250.0, 0.0, 6650000.0, 0.0, -250.0],
    "res": [250.0, 250.0],
    "nodata": [-9999.0, None, 0.0],
    "layer_names": ["cov"],
}


def raster(size: int = 24) -> np.ndarray:
    """Two smooth covariates and a class code (1-3) in vertical stripes."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    rng = np.random.default_rng(0)
    wave = np.sin(rows / 4.0) + 0.05 * rng.standard_normal((size, size))
    geology = 1 + (cols // 8)
    return np.stack([cols / size, wave, geology]).astype(np.float32)


def training_data(block: np.ndarray, n: int, patch: int) -> TrainingData:
    rng = np.random.default_rng(1)
    r = patch // 2
    size = block.shape[1]
    row, col = rng.integers(r, size - r, n), rng.integers(r, size - r, n)
    offsets = np.arange(-r, r + 1)
    patches = block[:, row[:, None, None] + offsets[None, :, None], col[:, None, None] + offsets[None, None, :]]
    base = 10 + 8 * block[0, row, col] + 3 * block[1, row, col] + block[2, row, col]
    targets = np.stack([base, 0.6 * base, 0.3 * base], axis=1) + rng.normal(0, 0.3, (n, 3))
    targets[:5, 2] = np.nan  # a few sites lack the deepest interval
    return TrainingData(
        site_ids=np.arange(n),
        x=700000.0 + 250.0 * col,
        y=6650000.0 - 250.0 * row,
        patches=patches.transpose(1, 0, 2, 3),
        targets=targets,
        intervals=INTERVALS,
        property_name="ORCDRC",
        band_names=BANDS,
        categorical=(2,),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the files into")
    args = parser.parse_args()
    block = raster()
    halo = np.pad(block, ((0, 0), (3, 3), (3, 3)), mode="edge")
    runs = {
        "rf": (training_data(block, 40, 1), "random_forest", {"n_trees": 12, "n_jobs": 1}, block),
        "cnn": (
            training_data(block, 40, 7),
            "cnn",
            {"patch_size": 7, "epochs": 4, "conv_channels": (2, 2), "dense_units": (4,), "n_threads": 1},
            halo,
        ),
    }
    expected = {"block": block}
    for name, (data, kind, params, model_block) in runs.items():
        result = train(data, kind, params, validation="random", folds=3, transform="log", random_state=5)
        bundle = SocModel.from_training(result, data, GRID, extra={"target_fields": None})
        path = args.out / f"release_{name}.socmodel"
        bundle.save(str(path))
        loaded = SocModel.load(str(path))
        expected[f"{name}_maps"] = loaded.predict_block(model_block, [0, 1, 2])
        lower, upper = loaded.predict_block_interval(model_block, [0, 2], 0.9)
        expected[f"{name}_lower"], expected[f"{name}_upper"] = lower, upper
        print(f"Wrote {path} ({path.stat().st_size} bytes)")
    np.savez_compressed(args.out / "release_expected.npz", **expected)


if __name__ == "__main__":
    main()
