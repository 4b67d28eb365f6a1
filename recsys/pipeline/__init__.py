"""The training pipeline on top of every layer: stages and their cache (`train`), the release
gate, baselines and offline evaluation, run comparison and ablations, MLflow tracking, the stage
report and the config loader that checks a config against the feature registry and the models."""
