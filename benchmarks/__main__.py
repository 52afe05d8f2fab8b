"""scripts/bench: run the benchmark and print one table of every figure, ratio and target.

Default: the network paths (see benchmarks/network.py) and the engine in process. --all adds
the 1 GiB object and a 5,000-object backlog. Numbers from one run on one machine: compare the
ratios, which were measured side by side, more than the absolute figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from benchmarks.backlog import BacklogResult, backlog
from benchmarks.corpus import make_corpus
from benchmarks.encryption import EncryptionResult, encryption_in_process
from benchmarks.engine import EngineResult, engine_in_process, pydicom_test_files
from benchmarks.large import LargeResult, large_object
from benchmarks.network import Options, Run, Spec, describe, run_spec
from benchmarks.profile import summarize_profile
from benchmarks.reception import ReceptionResult, reception_only
from benchmarks.tls import TLSResult, tls_both_sides

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PATHS = "direct,orthanc,proxy,proxy+detect,proxy+detect@4,proxy+tls,haproxy+detect@4"


@dataclass
class Table:
    """Rows of (measurement, value, ratio, target, verdict)."""

    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)

    def add(self, measurement: str, value: str, ratio: str = "", target: str = "", met: bool | None = None) -> None:
        verdict = "" if met is None else ("met" if met else "NOT MET")
        self.rows.append((measurement, value, ratio, target, verdict))

    def print(self) -> None:
        headers = ("measurement", "value", "ratio", "target", "")
        widths = [max(len(r[i]) for r in [headers, *self.rows]) for i in range(5)]
        line = "  ".join(f"{h:<{w}}" for h, w in zip(headers, widths, strict=True))
        print(line.rstrip())
        print("-" * len(line.rstrip()))
        for row in self.rows:
            print("  ".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=True)).rstrip())


def machine_line() -> str:
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("pynetdicom", "pydicom"))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, {versions}; load average at start {load} "
        "(other work on the machine makes absolute figures noisy; ratios come from the same run)"
    )


def network_rows(table: Table, runs: dict[str, Run]) -> None:
    def rate(key: str) -> float | None:
        run = runs.get(key)
        return run.images_per_s if run and not run.skipped and run.arrived else None

    def ratio(key: str, base: str, base_name: str, target: float | None) -> tuple[str, str, bool | None]:
        a, b = rate(key), rate(base)
        if a is None or b is None:
            return "", (f">= {target:g}x {base_name}" if target else ""), None
        value = a / b
        return (
            f"{value:.2f}x {base_name}",
            (f">= {target:g}x {base_name}" if target else ""),
            (value >= target if target else None),
        )

    targets = {
        # key: (base key, base name, target ratio)
        "proxy": ("orthanc", "Orthanc", 3.0),
        "proxy+detect": ("orthanc", "Orthanc", 2.0),
        "proxy+detect@4": ("proxy+detect", "1 sender", 1.8),
        "proxy@4": ("proxy", "1 sender", None),
        "proxy+tls": ("proxy", "clear", 0.8),
        "proxy+detect+tls": ("proxy+detect", "clear", 0.8),
        "haproxy+detect@4": ("proxy+detect@4", "1 node", None),
        "haproxy@4": ("proxy@4", "1 node", None),
        "relay": ("orthanc", "Orthanc", None),
    }
    for key, run in runs.items():
        label = describe(run.spec) + (f", {run.spec.senders} senders" if run.spec.senders > 1 else ", 1 sender")
        if run.skipped:
            table.add(label, "-", run.note)
            continue
        value = f"{run.images_per_s:.1f} img/s"
        base = targets.get(key)
        if base:
            r, t, met = ratio(key, base[0], base[1], base[2])
        elif key != "direct" and rate("direct"):
            r, t, met = f"{run.images_per_s / (rate('direct') or 1):.2f}x direct", "", None
        else:
            r, t, met = "", "", None
        table.add(label, value, r, t, met)
        if key == "proxy":
            table.add("  proxy, 1 sender, detection off", value, "", ">= 160 img/s", run.images_per_s >= 160)
        if run.note or run.sender_failures:
            failures = f"sender saw {run.sender_failures} failures" if run.sender_failures else ""
            table.add("  note", "; ".join(x for x in (run.note, failures) if x))


def print_runs(runs: dict[str, Run], mean_bytes: float) -> None:
    """Details per path: arrival, MB/s, ack rate, peak RSS, latency."""
    print(
        f"{'path':<22} {'arrived':>9} {'img/s':>8} {'MB/s':>7} {'ack img/s':>10} {'done s':>7} "
        f"{'peak RSS':>9} {'p50 ms':>7} {'p99 ms':>7}"
    )
    for key, r in runs.items():
        if r.skipped:
            print(f"{key:<22} {r.note}")
            continue
        rss = f"{r.peak_rss_mib:.0f} MiB" if r.peak_rss_mib else "-"
        ack = r.count / r.ack_seconds if r.ack_seconds > 0 else float("nan")
        lat = sorted(r.latencies)
        p50 = f"{lat[len(lat) // 2] * 1e3:.0f}" if lat else "-"
        p99 = f"{lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3:.0f}" if lat else "-"
        print(
            f"{key:<22} {r.arrived:>4}/{r.count:<4} {r.images_per_s:8.1f} {r.mb_per_s:7.1f} {ack:10.1f} "
            f"{r.done_seconds:7.2f} {rss:>9} {p50:>7} {p99:>7}"
        )
    print(
        "img/s, MB/s: t0 -> the archive (storescp folder) holds every object; ack img/s: t0 -> every storescu "
        "exited; peak RSS: VmHWM summed over the node's processes; p50/p99: proxy audit 'stored' -> 'forwarded' "
        f"(spool wait + C-STORE to the archive). Objects {mean_bytes / 1e6:.2f} MB each."
    )


def engine_rows(table: Table, results: list[EngineResult]) -> None:
    for result, target in zip(results, (2.5, 10.0), strict=True):
        if result.median_ms is None:
            table.add(result.label, "-", result.note)
            continue
        table.add(
            result.label,
            f"{result.median_ms:.2f} ms median",
            f"p90 {result.p90_ms:.2f} ms",
            f"<= {target:g} ms",
            result.median_ms <= target,
        )


def encryption_rows(table: Table, result: EncryptionResult) -> None:
    """Encrypted Attributes on vs off, same objects, same process (issue 11 part 3)."""
    table.add(
        result.label,
        f"{result.encrypted_per_s:.0f} obj/s (off: {result.plain_per_s:.0f} obj/s)",
        f"{result.encrypted_per_s / result.plain_per_s:.2f}x of off",
    )


def reception_rows(table: Table, result: ReceptionResult) -> None:
    label = f"reception only, 1 sender, {result.objects} objects x {result.rounds} rounds"
    table.add(
        f"{label}: pynetdicom polling",
        f"{result.polling_best:.1f} img/s best",
        f"median {result.polling_median:.1f} img/s",
    )
    table.add(
        f"{label}: event-driven (node)",
        f"{result.event_driven_best:.1f} img/s best",
        f"{result.event_driven_best / result.polling_best:.2f}x polling (median "
        f"{result.event_driven_median / result.polling_median:.2f}x)",
    )


def detection_rows(table: Table) -> None:
    """The default detector per 512x512 16-bit frame (issue 10 budget: median <= 15, p95 <= 40)."""
    from benchmarks.detection import detection_per_frame

    result = detection_per_frame()
    table.add(
        result.label,
        f"{result.median_ms:.1f} ms median",
        f"p95 {result.p95_ms:.1f} ms",
        "<= 15 ms, p95 <= 40 ms",
        result.median_ms <= 15 and result.p95_ms <= 40,
    )


def tls_rows(table: Table, result: TLSResult) -> None:
    """DICOM TLS on both sides vs clear text, side by side (issue 11: TLS should cost < 20%)."""
    table.add(
        f"TLS both sides (mutual), 1 sender, {result.count} objects",
        f"{result.tls_per_s:.1f} img/s (clear: {result.clear_per_s:.1f} img/s)",
        f"{result.ratio:.2f}x clear",
        ">= 0.8x clear",
        result.ratio >= 0.8,
    )


def large_rows(table: Table, result: LargeResult) -> None:
    table.add(
        f"1 object of {result.size_mib:.0f} MiB, receiving process peak RSS",
        f"{result.peak_rss_mib:.0f} MiB",
        f"{result.peak_rss_mib / result.size_mib:.2f}x size",
        f"< 2x + 300 MiB = {result.goal_mib:.0f} MiB",
        result.arrived and result.peak_rss_mib < result.goal_mib,
    )


def backlog_rows(table: Table, result: BacklogResult) -> None:
    steady = result.last_tenth_per_s / result.first_tenth_per_s if result.first_tenth_per_s else float("nan")
    table.add(
        f"backlog of {result.queued} objects drains",
        f"{result.overall_per_s:.1f} obj/s",
        f"last/first tenth {steady:.2f}",
        "steady: >= 0.7, all arrive",
        steady >= 0.7 and result.arrived == result.queued,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300, help="corpus size (default 300, ~160 MB at 512)")
    parser.add_argument("--size", type=int, default=512, help="rows = columns (default 512)")
    parser.add_argument(
        "--paths",
        default=DEFAULT_PATHS,
        help=f"comma list of kind[+feature...][@senders] (default {DEFAULT_PATHS}); "
        "kinds: direct, orthanc, relay, proxy, haproxy; features: detect, tls; '' for none",
    )
    parser.add_argument("--nodes", type=int, default=2, help="nodes behind HAProxy (default 2)")
    parser.add_argument("--no-engine", action="store_true", help="skip the engine-in-process rows")
    parser.add_argument("--no-reception", action="store_true", help="skip the reception-only rows")
    parser.add_argument("--tls-count", type=int, default=100, help="objects for the TLS-both-sides row (0: skip)")
    parser.add_argument("--engine-only", action="store_true", help="only the engine in process")
    parser.add_argument("--pixels", action="store_true", help="also the pixel stage per transfer syntax")
    parser.add_argument("--large", action="store_true", help="also one 1 GiB multi-frame object")
    parser.add_argument("--large-frames", type=int, default=2048, help="frames of the --large object (2048: 1 GiB)")
    parser.add_argument("--large-timeout", type=float, default=900)
    parser.add_argument("--backlog", type=int, default=0, metavar="N", help="also the drain of N queued objects")
    parser.add_argument("--backlog-size", type=int, default=64, help="rows = columns of backlog objects")
    parser.add_argument("--all", action="store_true", help="everything: --large --backlog 5000 --pixels")
    parser.add_argument("--profile", type=Path, help="py-spy raw profile of the single proxy node during its run")
    parser.add_argument("--profile-gil", action="store_true", help="py-spy --gil: only the GIL holder")
    parser.add_argument("--workdir", type=Path, default=REPO / "var" / "bench", help="corpus cache and run dirs")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (archives, logs)")
    args = parser.parse_args()
    if args.all:
        args.large, args.pixels, args.backlog = True, True, args.backlog or 5000

    args.workdir.mkdir(parents=True, exist_ok=True)
    work_root = Path(tempfile.mkdtemp(prefix="run-", dir=args.workdir))
    print(machine_line())
    table = Table()
    try:
        paths = [] if args.engine_only else [p.strip() for p in args.paths.split(",") if p.strip()]
        runs: dict[str, Run] = {}
        if paths:
            specs = [Spec.parse(p) for p in paths]
            files = make_corpus(args.workdir / f"corpus-{args.count}-{args.size}", args.count, args.size)
            parts = sorted({f.parent for f in files})
            total_bytes = sum(f.stat().st_size for f in files)
            options = Options(args.count, args.nodes, args.profile, args.profile_gil)
            for spec in specs:
                print(f"bench: running {spec} ...", file=sys.stderr, flush=True)
                runs[str(spec)] = run_spec(spec, options, parts, total_bytes, work_root)
            print(
                f"corpus: {args.count} CT {args.size}x{args.size} 16-bit, {total_bytes / len(files) / 1e6:.2f} MB "
                f"each, in 4 parts (1 sender: all 4 in one storescu; @4: one part per storescu)"
            )
            print()
            print_runs(runs, total_bytes / len(files))
            network_rows(table, runs)
            if args.tls_count:
                print("bench: TLS both sides vs clear ...", file=sys.stderr, flush=True)
                tls_rows(table, tls_both_sides(work_root, sorted(files)[: args.tls_count]))
        if paths and not args.no_reception:
            print("bench: reception only ...", file=sys.stderr, flush=True)
            reception_rows(table, reception_only(files[:100]))
        if not args.no_engine:
            corpus = args.workdir / f"corpus-50-{args.size}"
            engine_rows(table, [engine_in_process(work_root, corpus, args.size, detect) for detect in (False, True)])
            encryption_rows(table, encryption_in_process(work_root, corpus, args.size))
            detection_rows(table)
        if args.large:
            print("bench: large object ...", file=sys.stderr, flush=True)
            large = large_object(work_root, args.large_frames, args.size, args.large_timeout)
            large_rows(table, large)
        if args.backlog:
            print("bench: backlog ...", file=sys.stderr, flush=True)
            queued = backlog(
                work_root, args.workdir / f"corpus-{args.backlog}-{args.backlog_size}", args.backlog, args.backlog_size
            )
            backlog_rows(table, queued)
        print()
        table.print()
        if args.large:
            print("\n".join(large.lines))
        if args.backlog:
            print("\n".join(queued.lines))
        if args.pixels:
            from benchmarks.pixels import bench_pixels

            print()
            print("\n".join(bench_pixels()))
        if args.engine_only:
            print("\n".join(pydicom_test_files(work_root)))
        if args.profile and args.profile.exists() and args.profile.stat().st_size:
            print()
            print("\n".join(summarize_profile(args.profile, args.profile_gil)))
        return 0
    finally:
        if args.keep:
            print(f"bench: run directory kept: {work_root}", file=sys.stderr)
        else:
            shutil.rmtree(work_root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
