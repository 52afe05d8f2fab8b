"""The node's HTTP port: Prometheus metrics at ``/metrics`` and a status page at ``/``.

Plain server-rendered HTML, no scripts: every value on the page comes from the metrics the
node exports (or, for the last refusals and the throughput, from the receiver's own audit
events), so the page never shows more than Prometheus already sees, and never an original value.
"""
