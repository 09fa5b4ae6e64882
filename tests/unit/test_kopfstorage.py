"""kopf's diff base in the operator's memory: what counts as a change, per object, and when a
"create" is a real one."""

from __future__ import annotations

from typing import Any

import kopf

from modeldeploy.kopfstorage import FailureOnlyProgressStorage, MemoryDiffBaseStorage, is_new
from modeldeploy.memory import Memory


def md(uid: str = "u1", annotations: dict[str, str] | None = None, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": "iris",
            "namespace": "ns",
            "uid": uid,
            "generation": 2,
            "resourceVersion": "7",
            "labels": {"team": "a"},
            "annotations": annotations or {},
        },
        "spec": {"model": {"name": "m", "storageUri": "s3://b/m"}},
        "status": status,
    }


def test_essence_keeps_spec_and_labels_but_not_status_or_own_annotations() -> None:
    storage = MemoryDiffBaseStorage(Memory())
    body = md(annotations={"modeldeploy.io/rollout": "promote", "owner": "me"}, observedGeneration=2)
    essence = storage.build(body=kopf.Body(body))
    assert essence == {
        "spec": {"model": {"name": "m", "storageUri": "s3://b/m"}},
        "metadata": {"labels": {"team": "a"}, "annotations": {"owner": "me"}},
    }
    # Only the operator's own annotations: the essence has no empty annotations stanza left.
    only_own = storage.build(body=kopf.Body(md(annotations={"modeldeploy.io/rollout": "abort"})))
    assert only_own == {"spec": body["spec"], "metadata": {"labels": {"team": "a"}}}


def test_stored_essence_is_per_object_writes_nothing_and_goes_with_the_object() -> None:
    memory = Memory()
    storage = MemoryDiffBaseStorage(memory)
    one, other = kopf.Body(md("u1")), kopf.Body(md("u2"))
    assert storage.fetch(body=one) is None
    patch = kopf.Patch()
    storage.store(body=one, patch=patch, essence=storage.build(body=one))
    assert not patch  # nothing is written to the object
    assert storage.fetch(body=one) == storage.build(body=one)
    assert storage.fetch(body=other) is None
    memory.forget(md("u1"))
    assert storage.fetch(body=one) is None  # a deleted object's essence is not kept


def test_a_create_is_new_only_for_an_object_without_observed_generation() -> None:
    assert is_new(md(), "create")
    assert not is_new(md(observedGeneration=1), "create")  # seen again after a restart
    assert not is_new(md(), "update")
    assert not is_new(md(), "resume")


def test_progress_is_written_only_while_a_handler_fails_and_without_a_marker() -> None:
    storage = FailureOnlyProgressStorage(prefix="modeldeploy.io")
    body = kopf.Body(md())
    patch = kopf.Patch()
    storage.store(key="reconcile_handler", record={"retries": 1, "success": False}, body=body, patch=patch)
    assert list(patch["metadata"]["annotations"]) == ["modeldeploy.io/reconcile_handler"]
    # A first attempt that succeeds: kopf stores, then purges in the same patch, which ends up empty.
    patch = kopf.Patch()
    storage.store(key="reconcile_handler", record={"success": True}, body=body, patch=patch)
    storage.purge(key="reconcile_handler", body=body, patch=patch)
    assert not patch
