"""Trained models: interest model, blurb generator, ranker."""
