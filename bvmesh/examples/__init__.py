"""The shipped example scan (CC0, see README.md here)."""

from __future__ import annotations

from pathlib import Path

EXAMPLE = Path(__file__).with_name("sunnybrook-SC-HF-I-6.nii.gz")
