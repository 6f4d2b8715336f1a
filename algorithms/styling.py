"""How results look and where they go when QGIS loads them into a project (the dialogs' 'open output' path).

QGIS first drops each loaded layer at the layer tree's insertion point — next to whatever layer the user has
selected, possibly inside a group of their own or of an earlier run — then runs the layer's post-processor. The
post-processors here style the layer and then place it explicitly: a run's maps go into the group of that run,
inside 'SOC depth maps', in depth order whatever order QGIS loads them in, the multi-band files hidden below the
per-depth maps. They also keep the insertion point out of those groups, so later, unrelated outputs do not land
there.
"""

from __future__ import annotations

import bisect
import itertools
import os
from collections.abc import Callable
from typing import ClassVar

from qgis.core import (
    QgsLayerTree,
    QgsLayerTreeGroup,
    QgsLayerTreeRegistryBridge,
    QgsProcessingContext,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingUtils,
    QgsProject,
)

#: colour ramp shared by the maps of a run, so depths compare at a glance
RAMP = "YlOrBr"
#: diverging ramp of the out-of-fold residuals: blue under-, red over-predicted
RESIDUAL_RAMP = "RdBu"
#: unit of the mapped property in legends; the model card records none, and the plugin maps SOC in g/kg
UNIT = "g/kg"
#: the group of every run's maps
GROUP = "SOC depth maps"


def shared_value_range(files: list[str]) -> tuple[float, float]:
    """The 2nd to 98th percentile over all bands of the files (read from their smallest overview): one legend for
    all the maps of a run."""
    import numpy as np
    import rasterio

    lows, highs = [], []
    for path in files:
        with rasterio.open(path) as dataset:
            factor = (dataset.overviews(1) or [1])[-1]
            shape = (dataset.count, max(dataset.height // factor, 1), max(dataset.width // factor, 1))
            values = dataset.read(out_shape=shape, masked=True).compressed()
        if values.size:
            lows.append(float(np.percentile(values, 2)))
            highs.append(float(np.percentile(values, 98)))
    return (min(lows), max(highs)) if lows else (0.0, 1.0)


def legend_decimals(low: float, high: float) -> int:
    """One decimal where the legend spans 10 units or more, two below: enough to tell the classes apart."""
    return 1 if high - low >= 10 else 2


def raster_details(context: QgsProcessingContext, name: str, output_name: str) -> QgsProcessingContext.LayerDetails:
    """Details of a raster to load, typed as a raster, so QGIS does not first try (and log failing) to open the
    GeoTIFF as a vector layer."""
    details = QgsProcessingContext.LayerDetails(name, context.project(), output_name)
    details.layerTypeHint = QgsProcessingUtils.LayerHint.Raster
    return details


class RunGroup:
    """The layer-tree group of one run's maps inside 'SOC depth maps', so that a group holds one value range:
    named after the run (its output folder and interval level), numbered where an earlier run took that name.
    Its layers are kept in the order of their positions, whatever order QGIS loads them in."""

    def __init__(self, title: str):
        self.title = title
        self.name: str | None = None
        self.placed: list[int] = []  # positions of the layers placed so far, sorted

    @staticmethod
    def title_of(path: str, level: float | None) -> str:
        """'maps' for the folder (or file) `path`, 'maps · 90 % interval' with a prediction interval."""
        base = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
        return base if level is None else f"{base} · {100 * level:g} % interval"

    def slot(self, parent: QgsLayerTreeGroup, position: int) -> tuple[QgsLayerTreeGroup, int]:
        """The group under `parent` (created for the run's first layer) and the index for `position`."""
        group = parent.findGroup(self.name) if self.name is not None else None
        if group is None:
            taken = {child.name() for child in parent.children() if QgsLayerTree.isGroup(child)}
            numbered = (f"{self.title} ({n})" for n in itertools.count(2))
            self.name = next(name for name in itertools.chain([self.title], numbered) if name not in taken)
            group = parent.insertGroup(0, self.name)
            self.placed = []
        index = bisect.bisect(self.placed, position)
        self.placed.insert(index, position)
        return group, index


def _inside(node, group: QgsLayerTreeGroup) -> bool:
    while node is not None:
        if node is group:
            return True
        node = node.parent()
    return False


class MapStyler(QgsProcessingLayerPostProcessorInterface):
    """Shows band 1 of a map in the run's colour ramp and value range, with the unit in the legend, and puts the
    layer at `position` in the group of its run; `visible` False loads it unticked. Only the first map's legend is
    unfolded: every map of the run shares it, and nine open legends push the run's layers out of the panel."""

    #: stylers waiting for QGIS to load their layer (the layer details hold only a C++ pointer)
    pending: ClassVar[list[MapStyler]] = []

    def __init__(
        self,
        value_range: tuple[float, float],
        run_group: RunGroup,
        position: int,
        visible: bool = True,
        renderer: Callable | None = None,
    ):
        super().__init__()
        self.value_range = value_range
        self.run_group = run_group
        self.position = position
        self.visible = visible
        #: provider -> renderer for a layer that is not a map of the property (the area of applicability)
        self.renderer = renderer
        MapStyler.pending.append(self)

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        if self.renderer is not None:
            layer.setRenderer(self.renderer(layer.dataProvider()))
        else:
            layer.setRenderer(pseudocolour_renderer(layer.dataProvider(), *self.value_range))
        layer.triggerRepaint()
        project = context.project() or QgsProject.instance()
        root = project.layerTreeRoot()
        parent = root.findGroup(GROUP) or root.insertGroup(0, GROUP)
        dropped = root.findLayer(layer.id())  # where QGIS put it: the insertion point
        run_group, index = self.run_group.slot(parent, self.position)
        if dropped is not None and dropped.parent() is run_group and run_group.children().index(dropped) < index:
            index += 1  # the node QGIS dropped is removed below, after the layer has its place
        node = run_group.insertLayer(index, layer)
        node.setItemVisibilityChecked(self.visible)
        node.setExpanded(self.position == 0)
        if dropped is not None:
            drop_parent, drop_index = dropped.parent(), dropped.parent().children().index(dropped)
            drop_parent.removeChildNode(dropped)
            if _inside(drop_parent, parent):  # new layers would land in the plugin's group: put them above it
                drop_parent, drop_index = root, root.children().index(parent)
            project.layerTreeRegistryBridge().setLayerInsertionPoint(
                QgsLayerTreeRegistryBridge.InsertionPoint(drop_parent, drop_index)
            )
        if self in MapStyler.pending:
            MapStyler.pending.remove(self)


class OutsideMapGroups(QgsProcessingLayerPostProcessorInterface):
    """Moves a layer that is no map of a run (a workflow's harmonised profiles, its metrics) out of 'SOC depth
    maps', where QGIS drops it when one of the maps is selected, to just above that group."""

    pending: ClassVar[list[OutsideMapGroups]] = []

    def __init__(self):
        super().__init__()
        OutsideMapGroups.pending.append(self)

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        root = (context.project() or QgsProject.instance()).layerTreeRoot()
        maps, dropped = root.findGroup(GROUP), root.findLayer(layer.id())
        if maps is not None and dropped is not None and _inside(dropped, maps):
            node = root.insertLayer(root.children().index(maps), layer)
            node.setItemVisibilityChecked(dropped.itemVisibilityChecked())
            dropped.parent().removeChildNode(dropped)
        if self in OutsideMapGroups.pending:
            OutsideMapGroups.pending.remove(self)


def pseudocolour_renderer(provider, low: float, high: float):
    """Single-band pseudocolour of band 1 from `low` to `high` in RAMP; legend labels with the unit and 1–2
    decimals."""
    from qgis.core import (
        QgsBasicNumericFormat,
        QgsColorRampLegendNodeSettings,
        QgsColorRampShader,
        QgsRasterShader,
        QgsSingleBandPseudoColorRenderer,
        QgsStyle,
    )

    decimals = legend_decimals(low, high)
    function = QgsColorRampShader(low, high, QgsStyle.defaultStyle().colorRamp(RAMP))
    function.classifyColorRamp(9, -1)
    items = function.colorRampItemList()
    for item in items:
        item.label = f"{item.value:.{decimals}f} {UNIT}"
    function.setColorRampItemList(items)
    number_format = QgsBasicNumericFormat()
    number_format.setNumberDecimalPlaces(decimals)
    number_format.setShowTrailingZeros(True)
    legend = QgsColorRampLegendNodeSettings()
    legend.setNumericFormat(number_format)
    legend.setSuffix(f" {UNIT}")
    function.setLegendSettings(legend)
    shader = QgsRasterShader(low, high)
    shader.setRasterShaderFunction(function)
    renderer = QgsSingleBandPseudoColorRenderer(provider, 1, shader)
    renderer.setClassificationMin(low)
    renderer.setClassificationMax(high)
    return renderer


def dissimilarity_renderer(provider, threshold: float):
    """Band 1 (the dissimilarity index) in Viridis from 0 to twice the AOA threshold, so that the threshold falls
    mid-ramp and inside and outside read at a glance; higher DI takes the last colour."""
    from qgis.core import QgsColorRampShader, QgsRasterShader, QgsSingleBandPseudoColorRenderer, QgsStyle

    high = 2 * threshold if threshold > 0 else 1.0
    function = QgsColorRampShader(0.0, high, QgsStyle.defaultStyle().colorRamp("Viridis"))
    function.classifyColorRamp(9, -1)
    shader = QgsRasterShader(0.0, high)
    shader.setRasterShaderFunction(function)
    renderer = QgsSingleBandPseudoColorRenderer(provider, 1, shader)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(high)
    return renderer


class ResidualStyler(QgsProcessingLayerPostProcessorInterface):
    """Colours the out-of-fold points by residual (predicted − observed) on a diverging ramp symmetric about 0,
    with a rule per depth of which only the first is shown: a site has a point per depth, all at one place, and
    six stacked points would hide all but the top one. The user ticks another depth in the legend. The outer
    classes are open-ended, so a `typical_residual` below the largest leaves no point out."""

    pending: ClassVar[list[ResidualStyler]] = []

    def __init__(self, depths: list[str], typical_residual: float, classes: int = 6):
        super().__init__()
        self.depths = depths
        self.typical_residual = typical_residual or 1.0  # all residuals 0: any symmetric range shows them
        self.classes = classes
        ResidualStyler.pending.append(self)

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        layer.setRenderer(self.renderer())
        layer.triggerRepaint()
        if self in ResidualStyler.pending:
            ResidualStyler.pending.remove(self)

    def classes_of(self) -> list[tuple[str, str]]:
        """(filter expression, legend label) of each residual class, from the most under- to the most
        over-predicted."""
        spread, count = self.typical_residual, self.classes
        edges = [-spread + 2 * spread * i / count for i in range(count + 1)]
        decimals = legend_decimals(-spread, spread)
        residual = '"predicted" - "observed"'
        classes = []
        for i in range(count):
            low, high = f"{edges[i]:+.{decimals}f}", f"{edges[i + 1]:+.{decimals}f}"
            if i == 0:
                classes.append((f"{residual} < {edges[1]!r}", f"below {high} {UNIT}"))
            elif i == count - 1:
                classes.append((f"{residual} >= {edges[i]!r}", f"{low} {UNIT} or more"))
            else:
                between = f"{residual} >= {edges[i]!r} AND {residual} < {edges[i + 1]!r}"
                classes.append((between, f"{low} to {high} {UNIT}"))
        return classes

    def renderer(self):
        from qgis.core import QgsExpression, QgsRuleBasedRenderer, QgsStyle, QgsSymbol, QgsWkbTypes

        ramp = QgsStyle.defaultStyle().colorRamp(RESIDUAL_RAMP)  # red at 0, blue at 1
        root = QgsRuleBasedRenderer.Rule(None)
        for number, depth in enumerate(self.depths):
            depth_rule = QgsRuleBasedRenderer.Rule(None, filterExp=f'"depth" = {QgsExpression.quotedValue(depth)}')
            depth_rule.setLabel(f"{depth.replace('-', '–')} cm")  # as the depth maps are named
            depth_rule.setActive(number == 0)
            for i, (expression, label) in enumerate(self.classes_of()):
                symbol = QgsSymbol.defaultSymbol(QgsWkbTypes.PointGeometry)
                symbol.setColor(ramp.color(1 - (i + 0.5) / self.classes))  # over-predicted red, under blue
                symbol.setSize(2.6)
                depth_rule.appendChild(QgsRuleBasedRenderer.Rule(symbol, filterExp=expression, label=label))
            root.appendChild(depth_rule)
        return QgsRuleBasedRenderer(root)
