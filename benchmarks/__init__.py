"""Benchmarks of dicom-proxy (issue 14): the node against dcmtk direct and Orthanc's anonymizing
router, one and several senders, detection, TLS, two nodes behind HAProxy, the engine in process,
a 1 GiB object and a queued backlog. Run through `scripts/bench` (installs dcmtk, Orthanc and
HAProxy, sets up the venv). Not a test: it prints figures and never asserts on them.

Peers (storescp, the proxy as a subprocess, HAProxy) come from tests/netpeers.py, the same real
peers the integration tests use.
"""
