"""Self-describing checkpoints: architecture, classes, preprocessing and training record
next to the state dicts, loaded with ``torch.load(weights_only=True)`` so that a weights
file can never execute code.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import WeightsError
from .labels import CLASS_NAMES
from .networks import InitNet, Locator, PropNet

FORMAT = "bvmesh-checkpoint"
FORMAT_VERSION = 1

DEFAULT_CONFIG: dict = {
    "classes": ["lv_pool", "lv_myo", "rv_pool"],
    "init_widths": [16, 16, 16],
    "prop_widths": [16, 16],
    "locator_width": 8,
    "size": 128,
    "spacing_mm": 1.25,
}


@dataclass
class Model:
    """The three networks and what they were built and trained with."""

    init: InitNet
    prop: PropNet
    locator: Locator
    config: dict
    record: dict = field(default_factory=dict)
    #: Where the weights came from (name, path, sha256), filled by pipeline.load_weights.
    source: dict = field(default_factory=dict)
    #: Batch norms folded by for_inference: run it, never train or save it.
    inference_only: bool = False

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.config["classes"])

    def to(self, device: torch.device) -> Model:
        for net in (self.init, self.prop, self.locator):
            net.to(device)
        return self

    def eval(self) -> Model:
        for net in (self.init, self.prop, self.locator):
            net.eval()
        return self

    def for_inference(self) -> Model:
        """The networks folded and laid out for fast inference (bvmesh.networks.for_inference),
        in place; such a model can no longer be trained or saved."""
        from .networks import for_inference

        for net in (self.init, self.prop, self.locator):
            for_inference(net, next(net.parameters()).device)
        self.inference_only = True
        return self

    def state(self) -> dict:
        return {"init": self.init.state_dict(), "prop": self.prop.state_dict(),
                "locator": self.locator.state_dict()}


def build_model(config: dict | None = None) -> Model:
    """Randomly initialised networks for ``config`` (defaults filled in)."""
    config = {**DEFAULT_CONFIG, **(config or {})}
    unknown = set(config["classes"]) - set(CLASS_NAMES)
    if unknown:
        raise WeightsError(f"unknown classes {sorted(unknown)}; known: {list(CLASS_NAMES)}")
    k = len(config["classes"])
    return Model(InitNet(k, tuple(config["init_widths"])), PropNet(k, tuple(config["prop_widths"])),
                 Locator(config["locator_width"]), config)


def save_checkpoint(model: Model, path: str | os.PathLike, record: dict | None = None) -> Path:
    """Write the model as a self-describing weights file (atomically)."""
    from .io import atomic_write

    if model.inference_only:
        raise WeightsError("this model was prepared for inference (batch norms folded); save "
                           "the one bvmesh.model.load_model returns")

    payload = {"format": FORMAT, "format_version": FORMAT_VERSION,
               "config": json.dumps(model.config), "record": json.dumps(record or model.record),
               **{k: {n: t.detach().cpu() for n, t in v.items()} for k, v in model.state().items()}}
    return atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> Model:
    """Load a weights file written by :func:`save_checkpoint`, refusing anything else."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable bvmesh weights file ({type(exc).__name__}); "
                           "it may be truncated or foreign: download it again") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise WeightsError(f"{path}: not a bvmesh weights file (no '{FORMAT}' marker)")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise WeightsError(f"{path}: written by a newer bvmesh (format "
                           f"{payload['format_version']}); upgrade bvmesh")
    try:
        model = build_model(json.loads(payload["config"]))
        model.record = json.loads(payload.get("record", "{}"))
        for name, net in (("init", model.init), ("prop", model.prop), ("locator", model.locator)):
            net.load_state_dict(payload[name])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise WeightsError(f"{path}: weights do not match their recorded architecture "
                           f"({str(exc).splitlines()[0]})") from exc
    # Where the weights came from, for every report they make (a resolved name or URL
    # overwrites it with the registry's view: bvmesh.pipeline.load_weights).
    model.source = {"name": None, "path": str(path.resolve()),
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "source": "file",
                    "classes": list(model.classes)}
    return model.to(torch.device(device)).eval()
