"""Command line: `dicom-proxy serve|deidentify|reidentify|check-config|show-policy|spool ...`.

Exit codes: 0 success, 1 some objects refused (deidentify) or an operation failed, 2 usage or
configuration error (nothing started).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dicom_proxy import __version__
from dicom_proxy.config import Config, ConfigError, load_config
from dicom_proxy.models import DeidentifiedObject, Dropped, Refused
from dicom_proxy.secret import SecretKeyError

if TYPE_CHECKING:
    from dicom_proxy.profiles import Profiles

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicom-proxy", description="Anonymizing DICOM proxy (PS3.15 Annex E).")
    parser.add_argument("--version", action="version", version=f"dicom-proxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--config", required=True, type=Path, metavar="FILE", help="TOML configuration file")
        return sub

    with_config("serve", "run the proxy until SIGTERM/SIGINT (SIGHUP reloads the policy)")
    deid = with_config("deidentify", "de-identify files or folders offline with the same engine")
    deid.add_argument("--output", required=True, type=Path, metavar="DIR", help="output folder")
    deid.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="files or folders (recursive)")
    with_config("check-config", "validate the configuration, policy and pixel rules, then exit")
    with_config("init", "create the secret key (the one explicit place besides serve's first start) and the spool")
    show = with_config("show-policy", "print the compiled de-identification policy")
    for sub in (deid, show):
        sub.add_argument("--profile", metavar="NAME", help="the profile to use (default: the only or the default one)")
    preview = with_config("preview", "draw what the pixel stage would mask, and why an object would be refused")
    preview.add_argument("input", nargs="?", type=Path, metavar="INPUT", help="one DICOM file")
    preview.add_argument("--all", type=Path, metavar="DIR", help="a contact sheet of every file in DIR instead")
    preview.add_argument("--output", required=True, type=Path, metavar="PNG", help="image to write")
    preview.add_argument("--frame", type=int, default=1, metavar="N", help="frame number, 1 = first (default)")
    stats = with_config("stats", "counts per day and source from the audit log (received, refused by reason, forwarded)")
    stats.add_argument(
        "--audit-file", type=Path, action="append", metavar="PATH",
        help="audit log(s) to read (default: [logging] audit_file and its rotated copies)",
    )
    stats.add_argument("--month", metavar="YYYY-MM", help="only this month")
    stats.add_argument("--from", dest="first", metavar="YYYY-MM-DD", help="first day (inclusive)")
    stats.add_argument("--to", dest="last", metavar="YYYY-MM-DD", help="last day (inclusive)")
    stats.add_argument("--utc", action="store_true", help="days in UTC (default: local time)")
    stats.add_argument("--format", choices=["text", "csv"], default="text")
    pseudonym = with_config("pseudonym", "print the pseudonyms the key derives for original identifiers (no lookup table)")
    pseudonym.add_argument("--study-uid", default="", metavar="UID", help="original Study Instance UID")
    pseudonym.add_argument("--series-uid", default="", metavar="UID", help="original Series Instance UID")
    pseudonym.add_argument("--sop-uid", default="", metavar="UID", help="original SOP Instance UID")
    pseudonym.add_argument("--patient-id", default=None, metavar="ID", help="original Patient ID")
    pseudonym.add_argument("--issuer", default="", metavar="ISSUER", help="original Issuer of Patient ID")
    pseudonym.add_argument("--patient-name", default="", metavar="PN", help="without --patient-id: original Patient's Name")
    pseudonym.add_argument("--birth-date", default="", metavar="YYYYMMDD", help="with --patient-name: Patient's Birth Date")
    pseudonym.add_argument("--sex", default="", metavar="M|F|O", help="with --patient-name: Patient's Sex")
    pseudonym.add_argument("--accession", default="", metavar="NUMBER", help="original Accession Number")
    pseudonym.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    spool = with_config("spool", "inspect and act on spool queues and quarantine")
    spool.add_argument("action", choices=["status", "list", "retry", "purge"])
    spool.add_argument("--destination", help="only this destination (default: all)")
    spool.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    reid = commands.add_parser(
        "reidentify",
        help="restore original attributes from the Encrypted Attributes Sequence (PS3.15 E.1.2)",
        description="Decrypt the Encrypted Attributes Sequence with a recipient's private key and restore "
        "the original attributes (writes files), or print them (--show). No configuration needed.",
    )
    reid.add_argument("--key", required=True, type=Path, metavar="PRIVATE_KEY", help="recipient private key (PEM/DER)")
    reid.add_argument(
        "--certificate", type=Path, metavar="CERT", help="the recipient's certificate (optional: picks the recipient)"
    )
    target = reid.add_mutually_exclusive_group(required=True)
    target.add_argument("--output", type=Path, metavar="DIR", help="write re-identified files here")
    target.add_argument("--show", action="store_true", help="print the original attributes, write nothing")
    reid.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="files or folders (recursive)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "reidentify":
        from dicom_proxy.reidentify import reidentify_command

        return reidentify_command(args.key, args.certificate, args.output, args.inputs, _iter_inputs)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    from dicom_proxy.service import configure_logging

    configure_logging(config.logging.level)
    try:
        return _COMMANDS[args.command](config, args)
    except BrokenPipeError:
        # `dicom-proxy show-policy | head`: the reader left; not an error.
        sys.stderr.close()
        return EXIT_OK
    except (ConfigError, SecretKeyError) as exc:
        problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
        for problem in problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_USAGE


def _serve(config: Config, args: argparse.Namespace) -> int:
    from dicom_proxy.service import serve

    return serve(config)


def _engine(config: Config, profile: str | None = None):  # type: ignore[no-untyped-def]
    """The engine of the profile named `profile` (default: the only or the default profile)."""
    from dicom_proxy.service import build_profiles

    return build_profiles(config).named(profile).engine


def _check_config(config: Config, args: argparse.Namespace) -> int:
    """Everything that can be known before starting: paths, address, key (never created)."""
    from dicom_proxy import preflight

    problems = preflight.path_problems(config)
    address = preflight.address_problem(config.node)
    if address is not None:
        problems.append(address)
    key_file = config.deidentify.secret_key_file
    note = ""
    if not key_file.exists() and not preflight.has_run_before(config.spool.directory):
        note = f"; {key_file} does not exist yet: `serve` creates it on its first start (or run `init`)"
    else:
        try:
            note = f"; secret key fingerprint {preflight.read_key(config).fingerprint}"
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    profiles = _key_free_profiles(config).profiles
    print(f"{args.config}: OK ({len(config.destinations)} destination(s), {len(profiles)} profile(s)){note}")
    return EXIT_OK


def _key_free_profiles(config: Config) -> Profiles:
    """Every profile's engine (policy, pixel rules, subject tables) with a throw-away key:
    for checks and for printing policies, which do not depend on the key; never derives."""
    from dicom_proxy.profiles import Profiles

    return Profiles(config, bytes(32))


def _init(config: Config, args: argparse.Namespace) -> int:
    from dicom_proxy import preflight
    from dicom_proxy.spool import Spool

    problems = preflight.path_problems(config)
    if problems:
        raise ConfigError(problems)
    key_file = config.deidentify.secret_key_file
    if key_file.exists():
        node_key = preflight.read_key(config)
        print(f"{key_file}: secret key already exists (fingerprint {node_key.fingerprint}); not changed")
    else:
        node_key = preflight.make_key(config)
        print(f"{key_file}: new secret key created (fingerprint {node_key.fingerprint}); back it up: "
              "without it pseudonyms cannot be reproduced")
    try:
        Spool(config.spool, [d.name for d in config.destinations]).open()
    except OSError as exc:
        raise preflight.as_config_error("spool.directory", config.spool.directory, exc) from None
    preflight.record_key(config, node_key)
    print(f"{config.spool.directory}: spool ready")
    return EXIT_OK


def _show_policy(config: Config, args: argparse.Namespace) -> int:
    from dicom_proxy.policy import format_policy

    # The policy does not depend on the key: no key is read (or created) to print it.
    engine = _key_free_profiles(config).named(args.profile).engine
    header = f"# profile: {engine.profile}\n" if engine.profile else ""
    print(header + format_policy(engine.policy), end="" if header else "\n")
    return EXIT_OK


def _iter_inputs(inputs: list[Path]) -> Iterator[Path]:
    for path in inputs:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(root, name)
        else:
            yield path


def _write_output(output: Path, result: DeidentifiedObject) -> None:
    target = output / result.relative_path
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    with open(temporary, "wb") as handle:
        handle.writelines(result.parts)
    os.replace(temporary, target)


def _deidentify(config: Config, args: argparse.Namespace) -> int:
    missing = [i for i, p in enumerate(args.inputs, 1) if not p.exists()]
    if missing:
        # Input names can carry names and MRNs: refer to inputs by position only.
        print(f"error: input argument(s) {', '.join(map(str, missing))} do not exist", file=sys.stderr)
        return EXIT_USAGE
    engine = _engine(config, args.profile)
    written = refused = duplicates = conflicts = dropped = 0
    # Output path -> (input number, content digest): two inputs can be one SOP Instance.
    seen: dict[Path, tuple[int, str]] = {}
    for number, path in enumerate(_iter_inputs(args.inputs), 1):
        try:
            result = engine.deidentify_file(path)
            digest = hashlib.sha256(b"".join(result.parts)).hexdigest()
            first = seen.get(result.relative_path)
            if first is None:
                replaced = (args.output / result.relative_path).exists()
                _write_output(args.output, result)
        except Dropped as exc:
            dropped += 1
            print(f"dropped: input file #{number}: filter {exc.filter_name!r}", file=sys.stderr)
            continue
        except Refused as exc:
            refused += 1
            print(f"refused: input file #{number}: {exc.reason} (status 0x{int(exc.status):04X})", file=sys.stderr)
            continue
        if first is not None:
            # Same SOP Instance as an earlier input: written once, reported as what it is.
            duplicates += 1
            same = "same content" if first[1] == digest else "DIFFERENT content"
            conflicts += first[1] != digest
            print(f"duplicate: input file #{number}: same SOP Instance as input file #{first[0]} ({same}); "
                  f"not written again: {result.relative_path}")
            continue
        seen[result.relative_path] = (number, digest)
        written += 1
        print(f"written: {result.relative_path}{' (replaced a file from an earlier run)' if replaced else ''}")
    print(f"summary: {written} written, {refused} refused, {duplicates} duplicates not written again, "
          f"{dropped} dropped by filters, "
          f"output in {args.output}")
    return EXIT_REFUSED if refused or conflicts else EXIT_OK


def _spool(config: Config, args: argparse.Namespace) -> int:
    from dicom_proxy import audit
    from dicom_proxy.spool import Spool
    from dicom_proxy.spool_commands import run

    names = [d.name for d in config.destinations]
    if args.destination is not None:
        if args.destination not in names:
            print(f"error: no destination named {args.destination!r}; known: {', '.join(names)}", file=sys.stderr)
            return EXIT_USAGE
        names = [args.destination]
    spool = Spool(config.spool, names)
    if not spool.root.is_dir():
        print("[]" if args.json else f"spool {spool.root} does not exist yet (nothing received)")
        return EXIT_OK
    if args.action in ("retry", "purge"):
        try:
            audit.configure(config.logging.audit_file)  # operator actions are audited
        except OSError as exc:
            assert config.logging.audit_file is not None
            print(f"config error: logging.audit_file: {config.logging.audit_file}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
    for line in run(spool, args.action, args.json):
        print(line)
    return EXIT_OK


def _preview(config: Config, args: argparse.Namespace) -> int:
    if (args.input is None) == (args.all is None):
        print("error: give either INPUT or --all DIR", file=sys.stderr)
        return EXIT_USAGE
    from dicom_proxy.preview import contact_sheet, preview_image

    engine = _engine(config)
    if args.all is not None:
        if not args.all.is_dir():
            print("error: --all must name a folder", file=sys.stderr)
            return EXIT_USAGE
        paths = list(_iter_inputs([args.all]))
        if not paths:
            print("error: no files in the --all folder", file=sys.stderr)
            return EXIT_USAGE
        sheet, lines = contact_sheet(engine, paths)
        sheet.save(args.output, format="PNG")
        print("\n".join(lines))
        print(f"contact sheet of {len(paths)} object(s): {args.output}")
        return EXIT_OK
    if not args.input.is_file():
        print("error: INPUT does not exist", file=sys.stderr)
        return EXIT_USAGE
    try:
        image, verdict = preview_image(engine, args.input, args.frame)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    image.save(args.output, format="PNG")
    for item in verdict.boxes:
        b = item.box
        print(f"mask {item.source}: x={b.left} y={b.top} width={b.right - b.left} height={b.bottom - b.top}")
    print(f"refused {verdict.refusal}" if verdict.refusal else "would be forwarded")
    print(f"preview ({image.width}x{image.height}): {args.output}")
    return EXIT_OK


def _stats(config: Config, args: argparse.Namespace) -> int:
    import calendar
    from datetime import date

    from dicom_proxy.stats import build_report, format_csv, format_text, read_records

    paths: list[Path] = args.audit_file or []
    if not paths and config.logging.audit_file is not None:
        audit_file = config.logging.audit_file
        # Rotated copies (audit.jsonl.1, audit.jsonl.2.gz, ...) first: oldest lines first.
        paths = [*sorted(audit_file.parent.glob(audit_file.name + ".*"), reverse=True), audit_file]
        paths = [p for p in paths if p.is_file()]
    if not paths:
        print("error: no audit log: set [logging] audit_file or give --audit-file", file=sys.stderr)
        return EXIT_USAGE
    try:
        first = date.fromisoformat(args.first) if args.first else None
        last = date.fromisoformat(args.last) if args.last else None
        if args.month:
            year, month = (int(part) for part in args.month.split("-"))
            first = date(year, month, 1)
            last = date(year, month, calendar.monthrange(year, month)[1])
    except ValueError:
        print("error: dates are YYYY-MM-DD, months YYYY-MM", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = build_report(read_records(paths), first, last, utc=args.utc)
    except OSError as exc:
        print(f"error: cannot read the audit log ({exc.strerror})", file=sys.stderr)
        return EXIT_USAGE
    print(format_csv(report) if args.format == "csv" else format_text(report), end="" if args.format == "csv" else "\n")
    return EXIT_OK


def _pseudonym(config: Config, args: argparse.Namespace) -> int:
    from dicom_proxy import preflight, trace
    from dicom_proxy.policy.options import Option

    patient = None
    if args.patient_id is None and args.patient_name:
        patient = _patient_without_id(args)
    if not (args.study_uid or args.series_uid or args.sop_uid or args.patient_id is not None or args.accession
            or patient is not None):
        print("error: give at least one of --study-uid, --series-uid, --sop-uid, --patient-id, --accession",
              file=sys.stderr)
        return EXIT_USAGE
    identity = trace.derive(
        preflight.read_key(config).key,  # never creates a key: another key means other pseudonyms
        patient_id=args.patient_id,
        issuer=args.issuer,
        study_instance_uid=args.study_uid,
        series_instance_uid=args.series_uid,
        sop_instance_uid=args.sop_uid,
        accession=args.accession,
        retain_uids=Option.RETAIN_UIDS in config.deidentify.options,
        patient=patient,
    )
    # The originals are never printed back: only what the key derives from them.
    for line in trace.describe(identity, config.logging.audit_file, args.json):
        print(line)
    return EXIT_OK


def _patient_without_id(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The engine's identity of a patient without an ID (name, birth date, sex): built by the
    engine's own `PatientIdentity.of`, so the name is folded exactly as it is there."""
    from pydicom.dataset import Dataset

    from dicom_proxy.deidentify.pseudonyms import PatientIdentity

    dataset = Dataset()
    dataset.PatientName = args.patient_name
    dataset.PatientBirthDate = args.birth_date
    dataset.PatientSex = args.sex
    dataset.IssuerOfPatientID = args.issuer
    return PatientIdentity.of(dataset)


_COMMANDS = {
    "serve": _serve,
    "deidentify": _deidentify,
    "check-config": _check_config,
    "init": _init,
    "show-policy": _show_policy,
    "spool": _spool,
    "preview": _preview,
    "stats": _stats,
    "pseudonym": _pseudonym,
}
