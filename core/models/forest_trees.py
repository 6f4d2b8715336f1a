"""Tree storage for the Random Forest: growing the trees, the quantile regression forest's leaf draws, and
the trees as plain arrays for the model file, checked before they are rebuilt.

Uncertainty follows ranger's `quantreg` (Meinshausen 2006, J. Mach. Learn. Res. 7:983-999, as implemented in
ranger): at fit time every leaf of every tree keeps ONE training response drawn at random from the training
rows that fall into it (all training rows, in-bag or not, exactly as ranger does); the predictive distribution
at a new point is the set of values kept at the leaves it reaches, one per tree, and its quantiles are the
prediction interval. This costs one leaf lookup per tree, the same as a prediction. The mean prediction is the
ordinary forest mean of the leaf means.

The trees are stored as plain arrays and rebuilt as scikit-learn trees (see `Forest.arrays`), so predictions are
bit-identical after a save/load round trip.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.ensemble import RandomForestRegressor
from sklearn.tree._tree import Tree

from ..modelfile import ModelFileError
from .forest_lookup import LEAF, Lookup, evaluate, resolve_jobs, specialise

_UNDEFINED_FEATURE = -2  # scikit-learn's feature index of a leaf
_NODE_FIELDS = (
    "children_left",
    "children_right",
    "feature",
    "threshold",
    "impurity",
    "n_node_samples",
    "weighted_n_node_samples",
    "value",
    "leaf_draw",
)


class Forest:
    """One fitted forest: scikit-learn trees for the leaf lookup plus, per node, the mean and the QRF draw.

    Node arrays of all trees are concatenated; `node_offsets[t]` is where tree t starts, so a leaf index from
    tree t plus its offset addresses `value` (leaf mean) and `leaf_draw` (the one kept training response).
    """

    def __init__(self, trees: list[Tree], value: np.ndarray, leaf_draw: np.ndarray) -> None:
        self.trees = trees
        counts = [tree.node_count for tree in trees]
        self.node_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.value = value
        self.leaf_draw = leaf_draw
        # prediction trees per set of fixed trailing predictors (e.g. one depth interval); derived, never saved
        self._lookups: dict[tuple[float, ...], Lookup] = {}

    @classmethod
    def grow(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        n_trees: int,
        max_features: int,
        min_samples_leaf: int,
        seed: np.random.SeedSequence,
        n_jobs: int,
        weights: np.ndarray | None = None,
    ) -> Forest:
        """`weights` (one per row, scikit-learn's `sample_weight`) weight the splits, the leaf means and the
        leaf draws, and a leaf must then also hold rows of total weight `min_samples_leaf`: a row of weight 0.01
        counts as a hundredth of a row, so rows of small weight cannot form leaves of their own and so predict
        alone. None gives every row the same weight."""
        tree_seed, draw_seed = child_seed(seed, 0), child_seed(seed, 1)
        # scikit-learn allows at most half the total weight in a leaf
        weight_share = 0.0 if weights is None else min(0.5, min_samples_leaf / float(np.sum(weights)))
        forest = RandomForestRegressor(
            n_estimators=n_trees,
            max_features=max_features,
            min_samples_leaf=min_samples_leaf,
            min_weight_fraction_leaf=weight_share,
            bootstrap=True,
            random_state=int(tree_seed.generate_state(1)[0]),
            n_jobs=n_jobs,
        ).fit(x, y, sample_weight=weights)
        trees = [estimator.tree_ for estimator in forest.estimators_]
        value = np.concatenate([tree.value[:, 0, 0] for tree in trees])
        fitted = cls(trees, value, np.full(value.shape, np.nan))
        fitted._draw_leaf_responses(x, y, np.random.default_rng(draw_seed), n_jobs, weights)
        return fitted

    def _draw_leaf_responses(
        self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, n_jobs: int, weights: np.ndarray | None
    ) -> None:
        """Keeps, for every leaf, the response of one training row drawn from the rows in it, with probability
        proportional to the row's weight (uniform without weights)."""
        leaves = self.leaf_ids(x, n_jobs).ravel()
        # Each leaf takes the row with the smallest random key: a uniform draw, independent of row order. With
        # weights the key is an exponential waiting time over the weight, whose minimum falls on a row with
        # probability weight / total weight (a race of exponential clocks).
        keys = rng.random(leaves.size)
        if weights is not None:
            keys = -np.log1p(-keys) / np.repeat(weights, len(self.trees))
        order = np.lexsort((keys, leaves))
        sorted_leaves = leaves[order]
        first = np.ones(order.size, dtype=bool)
        first[1:] = sorted_leaves[1:] != sorted_leaves[:-1]
        self.leaf_draw[sorted_leaves[first]] = y[order[first] // len(self.trees)]

    def leaf_ids(self, x: np.ndarray, n_jobs: int) -> np.ndarray:
        """(n, P) float32 -> (n, T) indices into the concatenated node arrays."""
        out = np.empty((len(x), len(self.trees)), dtype=np.int64)

        def lookup(t: int) -> None:
            out[:, t] = self.trees[t].apply(x)

        workers = resolve_jobs(n_jobs)
        if workers > 1 and len(x) * len(self.trees) > 50_000:
            with ThreadPoolExecutor(workers) as pool:  # Tree.apply releases the GIL
                list(pool.map(lookup, range(len(self.trees))))
        else:
            for t in range(len(self.trees)):
                lookup(t)
        out += self.node_offsets[:-1]
        return out

    def predict(
        self, x: np.ndarray, quantiles: np.ndarray | None, n_jobs: int, fixed: tuple[float, ...] = ()
    ) -> np.ndarray:
        """Forest mean (n,) or QRF quantiles (n, Q) for (n, P - len(fixed)) float32 rows.

        `fixed` are the values of the last predictors, the same for every row (the pooled forest's interval
        top and bottom): the trees are specialised for them, which leaves fewer and shallower splits to walk.
        """
        return evaluate(self._lookup(fixed), x, quantiles, n_jobs)

    def _lookup(self, fixed: tuple[float, ...]) -> Lookup:
        # the trees compare float32 predictors with float64 thresholds: key and specialise on float32 values
        key = tuple(float(value) for value in np.asarray(fixed, dtype=np.float32))
        if key not in self._lookups:
            self._lookups[key] = specialise(self.trees, self.node_offsets, self.value, self.leaf_draw, key)
        return self._lookups[key]

    def arrays(self) -> dict[str, np.ndarray]:
        nodes = [tree.__getstate__()["nodes"] for tree in self.trees]
        return {
            "children_left": np.concatenate([n["left_child"] for n in nodes]).astype(np.int32),
            "children_right": np.concatenate([n["right_child"] for n in nodes]).astype(np.int32),
            "feature": np.concatenate([n["feature"] for n in nodes]).astype(np.int32),
            "threshold": np.concatenate([n["threshold"] for n in nodes]),
            "impurity": np.concatenate([n["impurity"] for n in nodes]),
            "n_node_samples": np.concatenate([n["n_node_samples"] for n in nodes]).astype(np.int64),
            "weighted_n_node_samples": np.concatenate([n["weighted_n_node_samples"] for n in nodes]),
            "value": self.value,
            "leaf_draw": self.leaf_draw,
            "node_offsets": self.node_offsets,
            "max_depth": np.array([tree.max_depth for tree in self.trees], dtype=np.int32),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], n_features: int) -> Forest:
        """Rebuilds scikit-learn trees from plain arrays after checking they form valid trees.

        The checks matter for safety, not only for clear errors: the compiled tree code follows child indices
        without bounds checks, so a crafted file could otherwise make it read outside its memory.
        """
        offsets = np.asarray(arrays["node_offsets"], dtype=np.int64)
        validate_nodes(arrays, offsets, n_features)
        node_dtype = Tree(1, np.ones(1, dtype=np.intp), 1).__getstate__()["nodes"].dtype
        sources = {
            "left_child": "children_left",
            "right_child": "children_right",
            "feature": "feature",
            "threshold": "threshold",
            "impurity": "impurity",
            "n_node_samples": "n_node_samples",
            "weighted_n_node_samples": "weighted_n_node_samples",
        }
        trees = []
        for t, depth in enumerate(arrays["max_depth"]):
            start, stop = offsets[t], offsets[t + 1]
            # Fields newer scikit-learn adds (e.g. missing_go_to_left) stay 0: inputs never contain NaN here.
            nodes = np.zeros(stop - start, dtype=node_dtype)
            for field, source in sources.items():
                nodes[field] = arrays[source][start:stop]
            tree = Tree(n_features, np.ones(1, dtype=np.intp), 1)
            tree.__setstate__(
                {
                    "max_depth": int(depth),
                    "node_count": int(stop - start),
                    "nodes": nodes,
                    "values": np.ascontiguousarray(arrays["value"][start:stop], dtype=np.float64).reshape(-1, 1, 1),
                }
            )
            trees.append(tree)
        return cls(trees, np.asarray(arrays["value"], np.float64), np.asarray(arrays["leaf_draw"], np.float64))


def validate_nodes(arrays: dict[str, np.ndarray], offsets: np.ndarray, n_features: int) -> None:
    """Raises ModelFileError unless the arrays describe trees the compiled code can walk safely."""

    def fail(problem: str) -> None:
        raise ModelFileError(
            f"The Random Forest in this model file is damaged ({problem}). Train and save the model again."
        )

    n_nodes = len(arrays["value"])
    if any(arrays[name].ndim != 1 or len(arrays[name]) != n_nodes for name in _NODE_FIELDS):
        fail("its node arrays differ in length")
    n_trees = len(arrays["max_depth"])
    if offsets.shape != (n_trees + 1,) or offsets[0] != 0 or offsets[-1] != n_nodes or n_trees == 0:
        fail("its tree offsets do not match its nodes")
    sizes = np.diff(offsets)
    if np.any(sizes < 1):
        fail("a tree has no nodes")
    local = np.arange(n_nodes) - np.repeat(offsets[:-1], sizes)
    size = np.repeat(sizes, sizes)
    left, right, feature = (arrays[name].astype(np.int64) for name in ("children_left", "children_right", "feature"))
    leaf = left == LEAF
    # sklearn numbers children after their parent, so "child index > own index" also rules out cycles
    inner_ok = (left > local) & (left < size) & (right > local) & (right < size) & (feature >= 0)
    inner_ok &= (feature < n_features) & np.isfinite(arrays["threshold"])
    leaf_ok = (right == LEAF) & (feature == _UNDEFINED_FEATURE) & np.isfinite(arrays["leaf_draw"])
    if not np.all(np.where(leaf, leaf_ok, inner_ok)):
        fail("a node points outside its tree or to an unknown predictor")
    if not np.all(np.isfinite(arrays["value"])):
        fail("a node value is not a finite number")


def child_seed(seed: np.random.SeedSequence, *keys: int) -> np.random.SeedSequence:
    """A child seed named by `keys`: unlike `SeedSequence.spawn` it does not depend on earlier calls, so the
    same forest (e.g. fold 2 of every tuning candidate) always gets the same random numbers."""
    return np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, *keys), pool_size=seed.pool_size)
