"""The RunPod backend: a REST v2 client (`api`), a campaign's pod lifecycle (`pods`) and the
in-pod deadline timer (`pod_deadline`, a standalone script copied to the pod)."""
