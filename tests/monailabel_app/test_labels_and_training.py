"""Corrected labels: kept across restarts, and turned into a retraining round."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
from monailabel.client import MONAILabelClient

from medisee.imaging import read_image

from tests.support.server import monailabel_server, wait_for_training
from tests.support.studies import corrected_label

NAMES = {1: "liver", 2: "right kidney"}


def submit(client: MONAILabelClient, image_id: str, label: Path, query: str) -> dict:
    params = {"query": query, "label_names": {v: k for k, v in NAMES.items()}}  # MONAI Label's way: phrase -> value
    return client.save_label(image_id, str(label), tag="final", params=params)


def test_a_submitted_label_survives_a_restart(studies_template, tmp_path):
    shutil.copytree(studies_template / "studies", tmp_path / "studies")
    label = corrected_label(11, tmp_path, NAMES)
    with monailabel_server(tmp_path / "studies", tmp_path / "first") as server:
        submit(MONAILabelClient(server.url, tmpdir=str(tmp_path)), "ct-a", label, "Which organ makes bile?")
    with monailabel_server(tmp_path / "studies", tmp_path / "second") as server:
        response = requests.get(f"{server.url}/datastore/label", params={"label": "ct-a", "tag": "final"}, timeout=30)
        assert response.status_code == 200
        kept = tmp_path / "kept.nii.gz"
        kept.write_bytes(response.content)
        assert np.array_equal(read_image(kept).array, read_image(label).array)
        info = requests.get(f"{server.url}/datastore/label/info", params={"label": "ct-a", "tag": "final"}, timeout=30).json()
        assert info["query"] == "Which organ makes bile?" and info["label_names"] == {v: k for k, v in NAMES.items()}
    assert not list((tmp_path / "studies").rglob("*.tmp")), "no temporary files are left behind"


@pytest.mark.slow
def test_a_retraining_round_reports_before_and_after_and_serves_only_a_no_worse_model(studies_template, tmp_path):
    shutil.copytree(studies_template / "studies", tmp_path / "studies")
    with monailabel_server(tmp_path / "studies", tmp_path / "work", conf={"retrain_steps": "6", "mode": "fast"}) as server:
        client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
        submit(client, "ct-a", corrected_label(11, tmp_path, NAMES), "Which organ makes bile?")
        submit(client, "ct-b", corrected_label(12, tmp_path, NAMES), "Which organ filters the blood?")
        started = client.train_start("medisee", {})
        assert started.get("status") in ("SUBMITTED", "RUNNING"), started
        status = wait_for_training(client)
        assert status["status"] == "DONE", json.dumps(status, indent=1)[-3000:]

        report = requests.get(f"{server.url}/info/", timeout=30).json()["train_stats"]["medisee"]
        assert {"before", "after", "reference_before", "reference_after", "accepted", "reasons"} <= set(report)
        assert report["mode"] == "fast" and report["accepted"] == (report["reasons"] == [])
        pointer = tmp_path / "work" / "models" / "served.json"
        assert pointer.exists() == report["accepted"]
        result = client.infer("medisee", "ct-a", {"query": "Where is the liver?"})[1]
        expected = json.loads(pointer.read_text())["path"] if report["accepted"] else "default"
        assert result["model"] == expected
