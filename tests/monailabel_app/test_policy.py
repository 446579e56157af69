"""Which endpoints the server answers (``lib/policy.py``): the product's own always, the
others only when an admin turns their group on, and parameters that reach too far never."""

from __future__ import annotations

import pytest

from monailabel_app.lib.policy import GROUPS, EndpointPolicy

ALLOWED = [("GET", "/info/"), ("POST", "/infer/medisee"), ("PUT", "/datastore/image"), ("HEAD", "/datastore/label"),
           ("GET", "/datastore/"), ("POST", "/activelearning/random"), ("GET", "/train/"), ("POST", "/train/medisee"),
           ("DELETE", "/train/"), ("GET", "/auth/"), ("GET", "/"), ("GET", "/openapi.json")]


@pytest.mark.parametrize("method,path", ALLOWED)
def test_the_products_endpoints_are_always_on(method, path):
    assert EndpointPolicy().refusal(method, path, {}) is None


@pytest.mark.parametrize("method,path,group", [
    ("GET", "/logs/", "logs"), ("PUT", "/session/", "sessions"), ("DELETE", "/datastore/image", "deletes"),
    ("GET", "/datastore/dataset", "dataset"), ("PUT", "/datastore/label/info", "info_edits"),
    ("PUT", "/model/medisee", "models"), ("POST", "/infer/wsi_v2/medisee", "extras"), ("GET", "/proxy/dicom/x", "extras"),
])
def test_other_endpoints_need_their_group(method, path, group):
    refusal = EndpointPolicy().refusal(method, path, {})
    assert refusal.status == 403 and f"--conf enable {group}" in refusal.detail
    assert EndpointPolicy(frozenset({group})).refusal(method, path, {}) is None


def test_unknown_endpoints_are_404():
    assert EndpointPolicy(frozenset(GROUPS)).refusal("POST", "/reload", {}).status == 404
    assert EndpointPolicy().refusal("POST", "/train/", {}).status == 404  # MONAI Label's "train everything"


def test_parameters_that_reach_too_far_are_refused_even_when_the_group_is_on():
    everything = EndpointPolicy(frozenset(GROUPS))
    assert everything.refusal("PUT", "/session/", {"uncompress": "true"}).status == 400
    assert everything.refusal("DELETE", "/session/..", {}).status == 400
    assert everything.refusal("POST", "/infer/medisee", {"session_id": "../../etc"}).status == 400
    assert everything.refusal("POST", "/infer/medisee", {"session_id": "3f2a-11"}) is None
    assert EndpointPolicy().refusal("POST", "/infer/medisee", {"session_id": "3f2a-11"}).status == 403
    assert everything.refusal("POST", "/train/medisee", {"run_sync": "true"}).status == 400
