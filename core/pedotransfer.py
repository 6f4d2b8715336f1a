"""Bulk-density pedotransfer functions of SOC, as FAO's GSOC mapping cookbook offers them (Yigini et al. 2018).

Each formula is written for organic matter OM in % (OM = 1.724 × SOC %, the van Bemmelen factor the cookbook
uses) and gives bulk density in g/cm³. A separate module, importing numpy only, so that the Processing dialog
can list the functions without loading the raster engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: organic matter = 1.724 × organic carbon (the van Bemmelen factor the cookbook's functions assume)
VAN_BEMMELEN = 1.724


@dataclass(frozen=True)
class Pedotransfer:
    """A bulk-density pedotransfer function of organic matter (OM, %), BD in g/cm³."""

    label: str
    reference: str
    of_om: Callable[[np.ndarray], np.ndarray]


#: the cookbook's functions (its section on bulk density), keyed as its R code names them
PEDOTRANSFER: dict[str, Pedotransfer] = {
    "saini1996": Pedotransfer(
        "Saini (1966; 'Saini1996' in the cookbook): BD = 1.62 − 0.06 × OM",
        "Saini, G.R. (1966). Organic matter as a measure of bulk density of soil. Nature 210, 1295–1296.",
        lambda om: 1.62 - 0.06 * om,
    ),
    "honeysett1989": Pedotransfer(
        "Honeysett & Ratkowsky (1989): BD = 1 / (0.564 + 0.0556 × OM)",
        "Honeysett, J.L., Ratkowsky, D.A. (1989). The use of ignition loss to estimate bulk density of forest "
        "soils. Journal of Soil Science 40, 299–308.",
        lambda om: 1.0 / (0.564 + 0.0556 * om),
    ),
    "drew1973": Pedotransfer(
        "Drew (1973): BD = 1 / (0.6268 + 0.0361 × OM)",
        "Drew, L.A. (1973). Bulk density estimation based on organic matter content of some Minnesota soils. "
        "Minnesota Forestry Research Notes 243.",
        lambda om: 1.0 / (0.6268 + 0.0361 * om),
    ),
    "grigal1989": Pedotransfer(
        "Grigal et al. (1989): BD = 0.669 + 0.941 × e^(−0.06 × OM)",
        "Grigal, D.F., Brovold, S.L., Nord, W.S., Ohmann, L.F. (1989). Bulk density of surface soils and peat in "
        "the north central United States. Canadian Journal of Soil Science 69, 895–900.",
        lambda om: 0.669 + 0.941 * np.exp(-0.06 * om),
    ),
    "adams1973": Pedotransfer(
        "Adams (1973): BD = 100 / (OM / 0.244 + (100 − OM) / 2.65)",
        "Adams, W.A. (1973). The effect of organic matter on the bulk and true densities of some uncultivated "
        "podzolic soils. Journal of Soil Science 24, 10–17.",
        lambda om: 100.0 / (om / 0.244 + (100.0 - om) / 2.65),
    ),
}


def bulk_density_from_soc(key: str, soc_g_kg: np.ndarray) -> np.ndarray:
    """BD (g/cm³) from SOC (g/kg) by the pedotransfer function `key` (whose formula is written for OM %)."""
    return PEDOTRANSFER[key].of_om(np.asarray(soc_g_kg, dtype=float) / 10.0 * VAN_BEMMELEN)
