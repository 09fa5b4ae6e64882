"""An operator restart on the real control plane: kopf's diff base lives in the operator's memory
(no annotation, no PATCH of the ModelDeployment), so a new process sees every object as unhandled.
It must resume them, not re-create them: no write to an unchanged object, no second `Applied`
Event, and a spec edited while no operator ran is applied once."""

from __future__ import annotations

import time

from tests.e2e.canary_env import Cluster, api_client, condition, running_operator, scratch_namespace, wait_for


def settled(cluster: Cluster, name: str, generation: int, replicas: int) -> bool:
    st = cluster.status(name)
    return (
        st.get("observedGeneration") == generation
        and st.get("readyReplicas") == replicas
        and condition(st, "Ready").get("status") == "True"
    )


def test_a_restarted_operator_resumes_without_writes_and_applies_what_changed_meanwhile(
    crd_installed: None, pods_become_ready: None
) -> None:
    with scratch_namespace("md-restart-e2e") as ns:
        cluster = Cluster(api_client(), ns)
        with running_operator([ns], resync=600):  # no resync during the test: only kopf's handling
            cluster.apply("steady", replicas=1)
            cluster.apply("edited", replicas=1)
            for name in ("steady", "edited"):
                wait_for(lambda name=name: settled(cluster, name, 1, 1), timeout=30, what=f"{name} Ready")
                annotations = cluster.md(name)["metadata"].get("annotations") or {}
                assert not [k for k in annotations if k.startswith("modeldeploy.io/")], annotations
                assert cluster.events(name).get("Applied") == 1
        steady_version = cluster.md("steady")["metadata"]["resourceVersion"]
        cluster.apply("edited", replicas=2)  # while no operator runs

        with running_operator([ns], resync=600):
            wait_for(lambda: settled(cluster, "edited", 2, 2), timeout=30, what="the edit applied after the restart")
            assert cluster.deployment("edited")["spec"]["replicas"] == 2
            time.sleep(3)  # the resumed handling of the unchanged one is long done by now
            assert cluster.md("steady")["metadata"]["resourceVersion"] == steady_version, "an unchanged object written"
            assert cluster.events("steady").get("Applied") == 1
            assert cluster.events("edited").get("Applied") == 2
