"""The KubeRay examples stay in step with the code: the RayService's Serve application builds
from its args, and the RayJob's entrypoint uses flags `recsys train` has."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from serving.deploy import INGRESS_ENV, ServerOptions, builder_settings

KUBERAY = Path(__file__).resolve().parent.parent / "deploy" / "kuberay"


def test_rayservice_application_args_build_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = yaml.safe_load((KUBERAY / "rayservice.yaml").read_text())
    assert spec["kind"] == "RayService" and spec["apiVersion"] == "ray.io/v1"
    app = yaml.safe_load(spec["spec"]["serveConfigV2"])["applications"][0]
    assert app["import_path"] == "serving.deploy:app_builder"
    monkeypatch.setenv("RECSYS_API_KEY", "from-a-secret")
    settings, options = builder_settings(app["args"])
    assert settings.model == "models:/recsys-ranker@champion" and settings.clock == "wall"
    assert settings.api_key == "from-a-secret" and options.replicas == 2
    # the controller reads the ingress flags from its container: every container carries the default's
    pods = [spec["spec"]["rayClusterConfig"]["headGroupSpec"]] + spec["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    for pod in pods:
        for container in pod["template"]["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert INGRESS_ENV[ServerOptions().ingress].items() <= env.items(), container["name"]


def test_builder_args_from_the_serve_cli_are_typed_and_checked() -> None:
    settings, options = builder_settings({"model": "runs/x", "max_candidates": "200", "replica_cpus": "0.5",
                                          "access_log": "false", "batch": "true"})
    assert settings.max_candidates == 200 and options.replica_cpus == 0.5 and options.access_log is False and options.batch is True
    with pytest.raises(ValueError, match="unknown serve argument"):
        builder_settings({"model": "runs/x", "max_candidate": 3})
    with pytest.raises(ValueError, match="unknown serve argument"):  # the cluster's environment picks the ingress
        builder_settings({"model": "runs/x", "ingress": "proxy"})
    with pytest.raises(ValueError, match="ingress must be one of"):
        ServerOptions(ingress="nginx")


def test_rayjob_entrypoint_uses_real_train_flags() -> None:
    spec = yaml.safe_load((KUBERAY / "rayjob-train.yaml").read_text())
    assert spec["kind"] == "RayJob"
    words = spec["spec"]["entrypoint"].split()
    assert words[:2] == ["recsys", "train"]
    help_text = subprocess.run([sys.executable, "-m", "recsys.cli", "train", "--help"], capture_output=True, text=True,
                               timeout=60).stdout
    for flag in (w for w in words if w.startswith("-")):
        assert flag in help_text, flag
