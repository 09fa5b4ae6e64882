"""Pure status logic: conditions, transition times, readiness from the Deployment."""

from __future__ import annotations

from modeldeploy import status
from modeldeploy.settings import OperatorSettings


def deployment(
    desired: int = 2, ready: int = 2, updated: int = 2, available: int = 2, generation: int = 3, observed: int = 3
) -> dict:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": desired},
        "status": {"replicas": desired, "readyReplicas": ready, "updatedReplicas": updated,
                   "availableReplicas": available, "observedGeneration": observed},
    }  # fmt: skip


def test_ready_needs_updated_available_and_observed() -> None:
    assert status.workload_state(deployment()).is_ready
    assert not status.workload_state(deployment(available=1)).is_ready
    assert not status.workload_state(deployment(updated=1)).is_ready
    assert not status.workload_state(deployment(observed=2)).is_ready
    assert status.workload_state(deployment(desired=0, ready=0, updated=0, available=0)).is_ready
    assert not status.workload_state(None).is_ready
    assert not status.workload_state({"spec": {}}).is_ready


def test_transition_time_moves_only_on_status_change() -> None:
    first = status.set_condition([], "Ready", False, "PodsNotReady", "0/1", 1, "t1")
    same = status.set_condition(first, "Ready", False, "PodsNotReady", "still 0/1", 2, "t2")
    assert same[0]["lastTransitionTime"] == "t1" and same[0]["observedGeneration"] == 2
    flipped = status.set_condition(same, "Ready", True, "Available", "1/1", 2, "t3")
    assert flipped[0]["lastTransitionTime"] == "t3" and flipped[0]["status"] == "True"
    assert len(flipped) == 1


def test_reconciled_status_fields() -> None:
    st = status.reconciled_status(
        None, generation=4, revision="abc", workload=status.workload_state(deployment()), url="u", grpc_url="g", now="t"
    )
    by_type = {c["type"]: c for c in st["conditions"]}
    assert by_type["Ready"]["status"] == "True" and by_type["Progressing"]["status"] == "False"
    assert by_type["Degraded"]["status"] == "False"
    assert st["phase"] == "Succeeded" and st["observedGeneration"] == 4 and st["readyReplicas"] == 2
    rolling = status.reconciled_status(
        st,
        generation=5,
        revision="def",
        workload=status.workload_state(deployment(updated=1)),
        url="u",
        grpc_url="g",
        now="t2",
    )
    by_type = {c["type"]: c for c in rolling["conditions"]}
    assert by_type["Progressing"]["status"] == "True" and by_type["Progressing"]["lastTransitionTime"] == "t2"
    assert rolling["phase"] == "Progressing"


def test_failed_status_marks_degraded_with_reason() -> None:
    st = status.failed_status(None, generation=2, reason="InvalidSpec", message="spec.x: bad", now="t")
    by_type = {c["type"]: c for c in st["conditions"]}
    assert by_type["Degraded"]["status"] == "True" and by_type["Ready"]["reason"] == "InvalidSpec"
    assert by_type["Ready"]["message"] == "spec.x: bad" and st["phase"] == "Failed"


def test_settings_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("MODELDEPLOY_NAMESPACES", "ml, serving")
    monkeypatch.setenv("MODELDEPLOY_SERVING_IMAGE", "registry.local/ms:2")
    settings = OperatorSettings()
    assert settings.namespaces == ["ml", "serving"]
    assert settings.render.serving_image == "registry.local/ms:2"


def test_rolled_out_needs_every_pod_updated_and_no_old_one() -> None:
    assert status.workload_state(deployment(desired=4, ready=4, updated=4, available=4)).rolled_out
    surge = deployment(desired=4, ready=4, updated=4, available=4)
    surge["status"]["replicas"] = 5  # an old pod still there
    assert not status.workload_state(surge).rolled_out
    assert not status.workload_state(deployment(desired=4, ready=4, updated=3, available=4)).rolled_out
    assert not status.workload_state(deployment(desired=4, ready=4, updated=4, available=4, observed=2)).rolled_out


def test_apply_failed_keeps_phase_and_counts_failures() -> None:
    before = {"phase": "Succeeded", "conditions": []}
    new = status.apply_failed_status(before, generation=2, message="500: range is full", failures=3, now="t")
    ready = next(c for c in new["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ApplyFailed" and ready["observedGeneration"] == 2
    assert "500: range is full" in ready["message"] and "failed 3 times" in ready["message"]
    assert "phase" not in new


def lagging(desired: int = 2, revision: str = "r2") -> dict:
    """A Deployment whose controller has not reported its new pods yet (nothing observed)."""
    dep = deployment(desired=desired, ready=0, updated=0, available=0, generation=4, observed=3)
    dep["spec"]["template"] = {"metadata": {"labels": {"modeldeploy.io/revision": revision}}}
    return dep


def test_the_pods_vouch_for_a_lagging_deployment_only_when_fully_rolled_out() -> None:
    new_ready, new_unready, old_ready = (
        status.PodFact("r2", True),
        status.PodFact("r2", False),
        status.PodFact("r1", True),
    )
    assert not status.workload_state(lagging()).is_ready
    seen = status.workload_state(lagging(), [new_ready, new_ready])
    assert seen.is_ready and seen.rolled_out and (seen.ready, seen.replicas) == (2, 2)
    assert not status.workload_state(lagging(), [new_ready, new_unready]).is_ready  # one not ready
    assert not status.workload_state(lagging(), [new_ready, new_ready, old_ready]).is_ready  # an old one left
    assert not status.workload_state(lagging(), [new_ready]).is_ready  # one of two
    assert not status.workload_state(lagging(revision="r3"), [new_ready, new_ready]).is_ready  # another template
    # No pods seen (nothing watches them, or none yet): the Deployment's status alone, even for 0 replicas.
    assert not status.workload_state(lagging(desired=0), []).is_ready
    # A Deployment that reports itself rolled out is believed whatever the pods show (they may trail it).
    assert status.workload_state(deployment(), [new_unready]).is_ready
