"""Label conventions: bvmesh's output classes and the table that translates datasets.

Output labels (DESIGN.md): 0 background, 1 LV blood pool, 2 LV myocardium,
3 RV blood pool, 4 RV myocardium. The biventricular myocardium is 2 and 4.
Dataset label maps are translated at the edge, here and nowhere else.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

BACKGROUND, LV_POOL, LV_MYO, RV_POOL, RV_MYO = 0, 1, 2, 3, 4

#: Class names in output label order (index + 1 is the label value).
CLASS_NAMES: tuple[str, ...] = ("lv_pool", "lv_myo", "rv_pool", "rv_myo")
LABEL_OF: dict[str, int] = {name: i + 1 for i, name in enumerate(CLASS_NAMES)}
MYOCARDIUM: tuple[int, ...] = (LV_MYO, RV_MYO)

#: Dataset label value -> bvmesh class name. "binary" is the paper's myocardium-only map,
#: stored under "lv_myo" so that its myocardium is still part of 2 ∪ 4.
LABEL_MAPS: dict[str, dict[int, str]] = {
    "bvmesh": {1: "lv_pool", 2: "lv_myo", 3: "rv_pool", 4: "rv_myo"},
    "acdc": {1: "rv_pool", 2: "lv_myo", 3: "lv_pool"},
    "mnms": {1: "lv_pool", 2: "lv_myo", 3: "rv_pool"},
    "binary": {1: "lv_myo"},
}


def parse_label_map(spec: str) -> dict[int, str]:
    """A named map (``acdc``) or an explicit one (``"1=rv_pool,2=lv_myo,3=lv_pool"``)."""
    if spec in LABEL_MAPS:
        return dict(LABEL_MAPS[spec])
    mapping: dict[int, str] = {}
    try:
        for item in spec.split(","):
            value, name = item.split("=")
            mapping[int(value)] = name.strip()
    except ValueError:
        raise InputError(
            f"label map {spec!r} is neither one of {sorted(LABEL_MAPS)} "
            "nor of the form '1=rv_pool,2=lv_myo,3=lv_pool'"
        ) from None
    unknown = set(mapping.values()) - set(CLASS_NAMES)
    if unknown:
        raise InputError(f"label map {spec!r} names unknown classes {sorted(unknown)}; "
                         f"use {list(CLASS_NAMES)}")
    return mapping


def to_bvmesh(labels: np.ndarray, mapping: dict[int, str], *, source: str = "labels") -> np.ndarray:
    """Translate a dataset label map into bvmesh labels (uint8, same shape).

    Raises InputError when the map holds a value the mapping does not know, rather than
    silently dropping a structure.
    """
    values = np.unique(labels)
    unknown = [int(v) for v in values if v != 0 and int(v) not in mapping]
    if unknown:
        raise InputError(f"{source}: label values {unknown} are not in the label map "
                         f"{mapping}; pass --labels with a map that covers them")
    out = np.zeros(labels.shape, np.uint8)
    for value, name in mapping.items():
        out[labels == value] = LABEL_OF[name]
    return out


def classes_present(mapping: dict[int, str]) -> tuple[str, ...]:
    """The bvmesh classes a label map provides, in output order."""
    names = set(mapping.values())
    return tuple(n for n in CLASS_NAMES if n in names)
