"""The status page: a snapshot of the metrics rendered as plain HTML (no scripts).

`snapshot` reads the scrape registry (both processes' counters, the spool, the node facts) and
the receiver's recent activity into a frozen `StatusView`; `render` turns it into HTML with
every value escaped. The page reloads itself (``<meta http-equiv="refresh">``).
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from dicom_proxy.config import Config, DestinationConfig
from dicom_proxy.web.activity import RecentActivity, RecentRefusal

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class DestinationView:
    name: str
    target: str
    state: str  # "up", "down" or "unknown" (nothing attempted yet)
    since: float | None
    failures: int
    queued: int
    queued_bytes: int
    oldest_age: float
    quarantined: int
    forwarded: int


@dataclass(frozen=True)
class StatusView:
    ae_title: str
    dicom_address: str
    hostname: str
    version: str
    key_fingerprint: str
    started: float
    now: float
    received: int
    spooled: int
    refused: int
    forwarded: int
    destinations: tuple[DestinationView, ...]
    refusals: tuple[RecentRefusal, ...]
    throughput: tuple[int, ...]
    bucket_seconds: float


def read_samples(registry: CollectorRegistry) -> dict[tuple[str, Labels], float]:
    """Every sample of the registry by (sample name, labels)."""
    samples: dict[tuple[str, Labels], float] = {}
    for metric in registry.collect():
        for sample in metric.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def _sum(samples: Mapping[tuple[str, Labels], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def _info(samples: Mapping[tuple[str, Labels], float], name: str, label: str) -> str:
    for n, ls in samples:
        if n == name:
            return dict(ls).get(label, "")
    return ""


def _target(destination: DestinationConfig) -> str:
    if destination.type == "folder":
        return f"folder {destination.path}"
    return f"{destination.ae_title}@{destination.host}:{destination.port}"


def _destination(samples: Mapping[tuple[str, Labels], float], destination: DestinationConfig) -> DestinationView:
    name = destination.name
    key = frozenset({("destination", name)})
    up = samples.get(("dicom_proxy_destination_up", key))
    since = samples.get(("dicom_proxy_destination_state_since_seconds", key))
    return DestinationView(
        name=name,
        target=_target(destination),
        state="unknown" if up is None else "up" if up >= 1 else "down",
        since=since,
        failures=int(samples.get(("dicom_proxy_destination_consecutive_failures", key), 0)),
        queued=int(samples.get(("dicom_proxy_spool_queue_depth", key), 0)),
        queued_bytes=int(samples.get(("dicom_proxy_spool_queue_bytes", key), 0)),
        oldest_age=samples.get(("dicom_proxy_spool_oldest_entry_age_seconds", key), 0.0),
        quarantined=int(samples.get(("dicom_proxy_quarantine_depth", key), 0)),
        forwarded=int(samples.get(("dicom_proxy_objects_forwarded_total", key), 0)),
    )


def snapshot(config: Config, dicom_address: str, registry: CollectorRegistry, activity: RecentActivity) -> StatusView:
    samples = read_samples(registry)
    return StatusView(
        ae_title=config.node.ae_title,
        dicom_address=dicom_address,
        hostname=_info(samples, "dicom_proxy_node_info", "hostname"),
        version=_info(samples, "dicom_proxy_node_info", "version"),
        key_fingerprint=_info(samples, "dicom_proxy_key_info", "fingerprint"),
        started=_sum(samples, "dicom_proxy_start_time_seconds"),
        now=time.time(),
        received=int(_sum(samples, "dicom_proxy_objects_received_total")),
        spooled=int(_sum(samples, "dicom_proxy_objects_spooled_total")),
        refused=int(_sum(samples, "dicom_proxy_objects_refused_total")),
        forwarded=int(_sum(samples, "dicom_proxy_objects_forwarded_total")),
        destinations=tuple(_destination(samples, d) for d in config.destinations),
        refusals=activity.last_refusals(),
        throughput=activity.throughput(),
        bucket_seconds=activity.bucket_seconds,
    )


def duration(seconds: float) -> str:
    """`3d 4h`, `2h 5m`, `4m 10s`, `12s`."""
    total = int(max(0.0, seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _clock(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def sparkline(counts: tuple[int, ...], width: int = 360, height: int = 48) -> str:
    """Inline SVG polyline of the counts, scaled to the largest; a flat line when all are 0."""
    peak = max(counts, default=0) or 1
    step = width / max(len(counts) - 1, 1)
    points = " ".join(f"{i * step:.1f},{height - 2 - (c / peak) * (height - 4):.1f}" for i, c in enumerate(counts))
    return (
        f'<svg class="sparkline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="objects received per interval">'
        f'<polyline fill="none" stroke="#2a6f97" stroke-width="2" points="{points}"/></svg>'
    )


_STYLE = """
body { font-family: "DejaVu Sans", sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; } th, td { padding: 0.3em 0.8em; border-bottom: 1px solid #ddd; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.up { color: #fff; background: #2e7d32; padding: 0.1em 0.5em; border-radius: 0.3em; }
.down { color: #fff; background: #c62828; padding: 0.1em 0.5em; border-radius: 0.3em; }
.unknown { color: #fff; background: #757575; padding: 0.1em 0.5em; border-radius: 0.3em; }
.muted { color: #666; font-size: 0.9em; }
"""


def render(view: StatusView, refresh_seconds: int) -> str:
    e = html.escape
    rows = []
    for d in view.destinations:
        since = f" for {duration(view.now - d.since)}" if d.since else ""
        failures = f", {d.failures} failed attempts" if d.state == "down" else ""
        rows.append(
            f'<tr id="destination-{e(d.name)}"><td>{e(d.name)}</td><td>{e(d.target)}</td>'
            f'<td><span class="state {e(d.state)}">{e(d.state)}</span>'
            f'<span class="muted">{e(since + failures)}</span></td>'
            f'<td class="n backlog">{d.queued}</td><td class="n">{d.queued_bytes}</td>'
            f'<td class="n">{e(duration(d.oldest_age)) if d.queued else "-"}</td>'
            f'<td class="n">{d.quarantined}</td><td class="n">{d.forwarded}</td></tr>'
        )
    refusals = [
        f"<tr><td>{e(_clock(r.time))}</td><td>0x{r.status:04X}</td><td>{e(r.reason)}</td>"
        f"<td>{e(r.sop_instance_uid or '-')}</td></tr>"
        for r in view.refusals
    ] or ['<tr><td colspan="4" class="muted">none since start</td></tr>']
    window = duration(view.bucket_seconds * len(view.throughput))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh_seconds}">
<title>dicom-proxy {e(view.ae_title)}</title><style>{_STYLE}</style></head>
<body>
<h1>dicom-proxy <span id="ae-title">{e(view.ae_title)}</span></h1>
<p id="node">DICOM {e(view.dicom_address)} &middot; host {e(view.hostname)} &middot; version {e(view.version)}
&middot; key {e(view.key_fingerprint)}<br>
started {e(_clock(view.started))}, up <span id="uptime">{e(duration(view.now - view.started))}</span>
&middot; page of {e(_clock(view.now))}, refreshes every {refresh_seconds}s</p>
<h2>Objects</h2>
<table id="totals"><tr><th>received</th><th>spooled</th><th>refused</th><th>forwarded</th></tr>
<tr><td class="n">{view.received}</td><td class="n">{view.spooled}</td><td class="n">{view.refused}</td>
<td class="n">{view.forwarded}</td></tr></table>
<p>Received per {e(duration(view.bucket_seconds))}, last {e(window)}:
{sparkline(view.throughput)} <span class="muted">peak {max(view.throughput, default=0)}</span></p>
<h2>Destinations</h2>
<table id="destinations"><tr><th>name</th><th>target</th><th>state</th><th>backlog</th><th>bytes</th>
<th>oldest</th><th>quarantined</th><th>forwarded</th></tr>
{"".join(rows)}
</table>
<h2>Last refusals</h2>
<table id="refusals"><tr><th>time</th><th>status</th><th>reason</th><th>object (pseudonymous UID)</th></tr>
{"".join(refusals)}
</table>
<p class="muted">Metrics for Prometheus: <a href="/metrics">/metrics</a></p>
</body></html>
"""
