"""The interest model: a MiniLM text encoder fine-tuned on clicks (NRMS-style user/candidate towers).

Modules: config (InterestConfig), text (the one item-text recipe), model (encoder + pooling +
scoring head, save/load), samples (point-in-time histories and training lists), loop (the Ray
Train worker loop and validation), embed (item vectors with Ray Data), train (run), scorer
(InterestScorer: the one inference interface).
"""

from models.interest.config import InterestConfig

__all__ = ["InterestConfig"]
