"""Configuration: TOML -> frozen dataclasses.

Every problem is reported with the key path it concerns (``destinations[0].port: must be
1-65535``); all problems are collected and reported together; unknown keys are errors, so a
typo never silently falls back to a default. Relative paths are resolved against the working
directory of the process (systemd: ``WorkingDirectory=``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dicom_proxy.filters import FilterSet, parse_filters
from dicom_proxy.policy.options import Option
from dicom_proxy.subjects import SubjectsConfig

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

    from dicom_proxy.deidentify.pixels.rules import RuleSet
    from dicom_proxy.policy import Policy

# The option names of `[deidentify] options`: the values of `Option` (PS3.15 E.3).
OPTION_NAMES: tuple[str, ...] = tuple(option.value for option in Option)

# PS3.5 6.2: AE titles are 1-16 characters of the default repertoire, no backslash or controls.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists one message per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class NodeTLSConfig:
    """`[node.tls]`: DICOM TLS on the listening side (PS3.15 B.9); tls.py builds the context."""

    certificate: Path
    private_key: Path
    ca_bundle: Path | None = None  # set: mutual TLS, client certificates required and verified
    port: int | None = None  # None: TLS only, on node.port; set: TLS here and clear text on node.port
    minimum_version: Literal["1.2", "1.3"] = "1.2"


@dataclass(frozen=True)
class DestinationTLSConfig:
    """`[destinations.tls]`: DICOM TLS towards one destination."""

    ca_bundle: Path | None = None  # None: the system's trust store
    certificate: Path | None = None  # our client certificate, for destinations that require one
    private_key: Path | None = None
    server_name: str = ""  # the name its certificate must carry; empty: `host`
    minimum_version: Literal["1.2", "1.3"] = "1.2"


@dataclass(frozen=True)
class NodeConfig:
    ae_title: str = "DEID_PROXY"
    bind: str = "0.0.0.0"
    port: int = 11112
    allowed_calling_ae_titles: tuple[str, ...] = ()
    max_associations: int = 16
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    maximum_pdu_size: int = 0  # 0: no limit (PS3.8 D.1); what we advertise to senders
    max_object_bytes: int = 4 * 1024**3  # larger data sets abort the association (bounded memory)
    worker_processes: int | None = None  # de-identification processes; None: one per core
    tls: NodeTLSConfig | None = None
    # Admission by peer address (CIDR); empty: any address. AE titles are checked as well.
    allowed_networks: tuple[IPv4Network | IPv6Network, ...] = ()


@dataclass(frozen=True)
class DicomDestination:
    """A storage SCP (PS3.4 Annex B) the forwarder sends to as an SCU."""

    name: str
    ae_title: str
    host: str
    port: int
    calling_ae_title: str = ""  # empty: the node's ae_title
    retry_initial_delay: float = 1.0
    retry_max_delay: float = 60.0
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    maximum_pdu_size: int = 0
    tls: DestinationTLSConfig | None = None
    type: Literal["dicom"] = "dicom"


@dataclass(frozen=True)
class FolderDestination:
    """A folder the forwarder writes `<Study>/<Series>/<SOP>.dcm` files into."""

    name: str
    path: Path
    retry_initial_delay: float = 1.0
    retry_max_delay: float = 60.0
    type: Literal["folder"] = "folder"


# `[[destinations]]`: the `type` key chooses the class.
DestinationConfig = DicomDestination | FolderDestination


@dataclass(frozen=True)
class PixelConfig:
    """The Clean Pixel Data stage (PS3.15 E.3.1)."""

    rules_file: Path | None = None
    # Objects of these modalities / SOP classes are assumed to carry burned-in text.
    high_risk_modalities: tuple[str, ...] = ("US", "SC", "OT", "DOC", "XC", "ES")
    # A listed UID covers its sub-classes too (".7" covers the multi-frame SC ".7.1"-".7.4").
    high_risk_sop_classes: tuple[str, ...] = (
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage (and multi-frame SC)
        "1.2.840.10008.5.1.4.1.1.104",  # Encapsulated PDF, CDA, STL, OBJ, MTL
        "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
        "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.1",  # VL Endoscopic Image Storage (and video)
        "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic Image Storage (and video)
    )
    # What to do with a high-risk object that no rule cleans: refuse (default) or forward
    # it with its pixel data removed.
    on_uncleaned: Literal["refuse", "remove_pixels"] = "refuse"
    allow_lossy_recompression: bool = False
    # The compiled rules_file; load_config reads it (None: not read yet, PixelCleaner reads it).
    rules: RuleSet | None = None
    # Look for burned-in text in the pixels: on every image, only on high-risk ones, or never.
    detect: Literal["all", "high-risk", "off"] = "all"
    detector: Literal["opencv", "ppocr"] = "opencv"
    # Detected text boxes covering more than this share of the image: refuse, do not destroy.
    max_mask_share: float = 0.25
    # "identifying": mask only boxes whose text reads as identifying (needs detector "ppocr").
    mask_text: Literal["all", "identifying"] = "all"


@dataclass(frozen=True)
class EncryptionConfig:
    """`[deidentify.encryption]`: Encrypted Attributes for re-identification (PS3.15 E.1.2)."""

    # Recipient certificates (PEM or DER; RSA or EC P-256/384/521); empty: encryption off.
    recipients: tuple[Path, ...] = ()
    # The certificates, read by load_config (empty with recipients set: the Engine reads them).
    certificates: tuple[Certificate, ...] = ()


@dataclass(frozen=True)
class DeidentifyConfig:
    secret_key_file: Path = Path("var/secret.key")
    options: tuple[Option, ...] = ()
    overrides_file: Path | None = None
    # Attributes that Table E.1-1 does not list: "remove" those that can carry text
    # (default) or "keep" them all (only for sites that vetted their data).
    unlisted_attributes: Literal["remove", "keep"] = "remove"
    pixels: PixelConfig = field(default_factory=PixelConfig)
    encryption: EncryptionConfig = field(default_factory=EncryptionConfig)
    # Table E.1-1 + options + overrides_file, compiled by load_config (None: the Engine compiles).
    policy: Policy | None = None
    # Free text cleaned (action C): "clean" removes what is identifying, "allowlist" keeps only
    # descriptor vocabulary words and numbers (README "Free text").
    text: Literal["clean", "allowlist"] = "clean"
    # Extra descriptor words for "allowlist" (the site's languages), one or more per line.
    vocabulary_file: Path | None = None
    # Which received objects are de-identified at all (dicom_proxy/filters.py).
    filters: FilterSet = field(default_factory=FilterSet)
    # Subject IDs from the study team's table instead of keyed pseudonyms (dicom_proxy/subjects.py).
    subjects: SubjectsConfig | None = None


# Keys of [deidentify] that a profile cannot inherit: the key is node-wide (promise 3), and
# filters and the subject table belong to one flow.
_NODE_WIDE_KEYS = frozenset({"secret_key_file"})
_PER_FLOW_KEYS = frozenset({"filters", "filters_default", "subjects"})


@dataclass(frozen=True)
class ProfileConfig:
    """`[[profiles]]`: one flow. Callers it applies to, its de-identification and destinations.

    Without `[[profiles]]` the configuration has one implicit profile, "default", built from
    `[deidentify]`, matching every caller and sending to every destination.
    """

    name: str
    calling_ae_titles: tuple[str, ...]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    destinations: tuple[str, ...]
    deidentify: DeidentifyConfig
    implicit: bool = False

    @property
    def is_default(self) -> bool:
        """The fallback for callers that no other profile matches."""
        return self.name == DEFAULT_PROFILE


DEFAULT_PROFILE = "default"


@dataclass(frozen=True)
class SpoolConfig:
    directory: Path = Path("var/spool")
    max_bytes: int = 10 * 1024**3
    min_free_bytes: int = 1024**3


@dataclass(frozen=True)
class AuditMessagesConfig:
    """DICOM audit messages (PS3.15 A.5) to a syslog collector: RFC 5424 over UDP or TLS."""

    host: str
    port: int
    transport: Literal["udp", "tls"] = "udp"
    ca_file: Path | None = None
    certificate_file: Path | None = None
    private_key_file: Path | None = None
    enterprise_site_id: str = ""


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    audit_file: Path | None = None
    audit_messages: AuditMessagesConfig | None = None


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics and the status page (one HTTP port); off unless [metrics] is present."""

    enabled: bool = False
    bind: str = "127.0.0.1"
    port: int = 9464


@dataclass(frozen=True)
class Config:
    node: NodeConfig
    destinations: tuple[DestinationConfig, ...]
    deidentify: DeidentifyConfig
    spool: SpoolConfig
    logging: LoggingConfig
    source: Path | None = None
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # Never empty after parse_config: the declared [[profiles]] or the implicit "default".
    profiles: tuple[ProfileConfig, ...] = ()


def read_toml(path: Path, label: str | None = None) -> dict[str, Any]:
    """Parse a TOML file (configuration, pixel rules, overrides); ConfigError names the file."""
    label = label or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{label}: cannot read ({exc.strerror})"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{label}: not valid TOML ({exc})"]) from None


def load_config(path: Path) -> Config:
    """Read and validate a TOML configuration file and the files it names (overrides, pixel
    rules); raise ConfigError listing every problem."""
    from dicom_proxy import tls

    config = parse_config(read_toml(path))
    problems: list[str] = []
    deidentify = load_deidentify_files(config.deidentify, "deidentify", problems)
    try:
        tls.build(config)  # certificates readable, valid now, matching their keys
    except tls.TLSConfigError as exc:
        problems.extend(exc.problems)
    profiles = tuple(
        dataclasses.replace(
            profile,
            deidentify=deidentify if profile.implicit else load_deidentify_files(
                profile.deidentify, f"profiles[{i}]", problems
            ),
        )
        for i, profile in enumerate(config.profiles)
    )
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(config, deidentify=deidentify, profiles=profiles, source=path)


def load_deidentify_files(config: DeidentifyConfig, key: str, problems: list[str]) -> DeidentifyConfig:
    """Compile the policy (options + overrides file) and the pixel rules of `config` once;
    append one message per problem, prefixed with the key path, to `problems`."""
    from dicom_proxy.deidentify.pixels.rules import load_rules
    from dicom_proxy.policy import compile_policy

    policy = None
    try:
        policy = compile_policy(
            [option.value for option in config.options],
            config.overrides_file,
            config.unlisted_attributes,
            config.text,
        )
    except ConfigError as exc:
        # Overrides problems name "deidentify.overrides_file"; a profile has its own key path.
        problems += [p.replace("deidentify.overrides_file", f"{key}.overrides_file", 1) for p in exc.problems]
    rules = None
    if config.pixels.rules_file is not None:
        try:
            rules = load_rules(config.pixels.rules_file)
        except ConfigError as exc:
            problems += [f"{key}.pixels.rules_file: {p}" for p in exc.problems]
    pixels = dataclasses.replace(config.pixels, rules=rules)
    encryption = dataclasses.replace(
        config.encryption, certificates=load_recipients(config.encryption, f"{key}.encryption", problems)
    )
    subjects = config.subjects
    if subjects is not None:
        from dicom_proxy.subjects import load_subjects

        subjects = dataclasses.replace(subjects, table=load_subjects(subjects.file, f"{key}.subjects.file", problems))
    return dataclasses.replace(config, policy=policy, pixels=pixels, encryption=encryption, subjects=subjects)


def load_recipients(config: EncryptionConfig, key: str, problems: list[str]) -> tuple[Certificate, ...]:
    """Read every recipient certificate; one problem per unusable file, with its key path."""
    from dicom_proxy.deidentify.encrypt import load_recipient

    certificates = []
    for i, path in enumerate(config.recipients):
        try:
            certificates.append(load_recipient(path))
        except ValueError as exc:
            problems.append(f"{key}.recipients[{i}]: {exc}")
    return tuple(certificates)


def parse_config(raw: dict[str, Any]) -> Config:
    """Validate a parsed TOML document; raise ConfigError listing every problem."""
    reader = _Reader()
    reader.unknown_keys("", raw, {"node", "destinations", "deidentify", "spool", "logging", "metrics", "profiles"})
    node = _parse_node(reader, reader.table("node", raw.get("node", {})))
    destinations = _parse_destinations(reader, raw.get("destinations"))
    deidentify_raw = reader.table("deidentify", raw.get("deidentify", {}))
    deidentify = _parse_deidentify(reader, deidentify_raw)
    spool = _parse_spool(reader, reader.table("spool", raw.get("spool", {})))
    logging_ = _parse_logging(reader, reader.table("logging", raw.get("logging", {})))
    metrics = _parse_metrics(reader, reader.table("metrics", raw["metrics"])) if "metrics" in raw else MetricsConfig()
    profiles = _parse_profiles(reader, raw.get("profiles"), deidentify_raw, deidentify, destinations)
    if reader.problems:
        raise ConfigError(reader.problems)
    return Config(node, destinations, deidentify, spool, logging_, metrics=metrics, profiles=profiles)


class _Reader:
    """Typed getters that record a problem (with its key path) instead of raising."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def table(self, key: str, value: Any) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        self.fail(key, "must be a table")
        return {}

    def unknown_keys(self, prefix: str, table: dict[str, Any], known: set[str]) -> None:
        for key in sorted(set(table) - known):
            self.fail(f"{prefix}{key}", "unknown key")

    def string(self, key: str, table: dict[str, Any], name: str, default: str) -> str:
        value = table.get(name, default)
        if not isinstance(value, str):
            self.fail(key, "must be a string")
            return default
        return value

    def ae_title(self, key: str, table: dict[str, Any], name: str, default: str) -> str:
        value = self.string(key, table, name, default)
        if value and not _AE_TITLE.match(value.strip() or "x" * 17):
            self.fail(key, "must be 1-16 characters, no backslash or control characters")
        return value.strip()

    def integer(self, key: str, table: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
        value = table.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, "must be an integer")
            return default
        if not lo <= value <= hi:
            self.fail(key, f"must be {lo}-{hi}")
        return value

    def number(self, key: str, table: dict[str, Any], name: str, default: float) -> float:
        value = table.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, "must be a number")
            return default
        if value <= 0:
            self.fail(key, "must be greater than 0")
        return float(value)

    def boolean(self, key: str, table: dict[str, Any], name: str, default: bool) -> bool:
        value = table.get(name, default)
        if not isinstance(value, bool):
            self.fail(key, "must be true or false")
            return default
        return value

    def strings(self, key: str, table: dict[str, Any], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = table.get(name, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(key, "must be a list of strings")
            return default
        return tuple(value)

    def path(self, key: str, table: dict[str, Any], name: str, default: Path | None) -> Path | None:
        value = table.get(name)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            self.fail(key, "must be a non-empty path string")
            return default
        return Path(value)

    def choice(self, key: str, table: dict[str, Any], name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.string(key, table, name, default)
        if value not in allowed:
            self.fail(key, f"must be one of {', '.join(repr(a) for a in allowed)}")
            return default
        return value


_TIMEOUT_KEYS = ("acse_timeout", "dimse_timeout", "network_timeout")


# RFC 1123 host names; an all-numeric dotted name must be a valid IPv4 address instead.
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def _bind_address(r: _Reader, t: dict[str, Any], default: str) -> str:
    """`node.bind`: an IPv4/IPv6 address or a host name (whether it is local shows at start)."""
    value = r.string("node.bind", t, "bind", default)
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOST_NAME.match(value) or re.fullmatch(r"[0-9.]+", value):
            r.fail("node.bind", f"{value!r} is not an IP address or host name")
    return value


def _parse_node(r: _Reader, t: dict[str, Any]) -> NodeConfig:
    d = NodeConfig()
    r.unknown_keys(
        "node.",
        t,
        {
            "ae_title", "bind", "port", "allowed_calling_ae_titles", "max_associations", "maximum_pdu_size",
            "max_object_bytes", "worker_processes", "tls", "allowed_networks", *_TIMEOUT_KEYS,
        },
    )
    ae_title = r.ae_title("node.ae_title", t, "ae_title", d.ae_title)
    if not ae_title:
        r.fail("node.ae_title", "must not be empty")
    callers = r.strings("node.allowed_calling_ae_titles", t, "allowed_calling_ae_titles", ())
    for i, caller in enumerate(callers):
        if not _AE_TITLE.match(caller.strip() or "x" * 17):
            r.fail(f"node.allowed_calling_ae_titles[{i}]", "must be 1-16 characters, no backslash")
    return NodeConfig(
        ae_title=ae_title,
        bind=_bind_address(r, t, d.bind),
        port=r.integer("node.port", t, "port", d.port, 0, 65535),
        allowed_calling_ae_titles=tuple(c.strip() for c in callers),
        max_associations=r.integer("node.max_associations", t, "max_associations", d.max_associations, 1, 1000),
        acse_timeout=r.number("node.acse_timeout", t, "acse_timeout", d.acse_timeout),
        dimse_timeout=r.number("node.dimse_timeout", t, "dimse_timeout", d.dimse_timeout),
        network_timeout=r.number("node.network_timeout", t, "network_timeout", d.network_timeout),
        maximum_pdu_size=r.integer("node.maximum_pdu_size", t, "maximum_pdu_size", d.maximum_pdu_size, 0, 2**32 - 1),
        max_object_bytes=r.integer("node.max_object_bytes", t, "max_object_bytes", d.max_object_bytes, 1024, 2**40),
        worker_processes=(
            r.integer("node.worker_processes", t, "worker_processes", 0, 0, 256) if "worker_processes" in t else None
        ),
        tls=_parse_node_tls(r, r.table("node.tls", t["tls"])) if "tls" in t else None,
        allowed_networks=_parse_networks(r, "node.allowed_networks", t),
    )


_DESTINATION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _parse_destinations(r: _Reader, value: Any) -> tuple[DestinationConfig, ...]:
    if value is None:
        r.fail("destinations", "at least one [[destinations]] entry is required")
        return ()
    if not isinstance(value, list) or not value:
        r.fail("destinations", "must be a non-empty array of tables ([[destinations]])")
        return ()
    result = []
    names: set[str] = set()
    for i, entry in enumerate(value):
        key = f"destinations[{i}]"
        table = r.table(key, entry)
        destination = _parse_destination(r, key, table)
        if destination.name in names:
            r.fail(f"{key}.name", f"duplicate destination name {destination.name!r}")
        names.add(destination.name)
        result.append(destination)
    return tuple(result)


def _parse_destination(r: _Reader, key: str, t: dict[str, Any]) -> DestinationConfig:
    d = DicomDestination(name="", ae_title="", host="", port=0)
    kind = r.choice(f"{key}.type", t, "type", "dicom", ("dicom", "folder"))
    common = {"name", "type", "retry_initial_delay", "retry_max_delay"}
    if kind == "folder":
        r.unknown_keys(f"{key}.", t, common | {"path"})
    else:
        r.unknown_keys(
            f"{key}.",
            t,
            common | {"ae_title", "host", "port", "calling_ae_title", "maximum_pdu_size", "tls", *_TIMEOUT_KEYS},
        )
    name = r.string(f"{key}.name", t, "name", "")
    if not _DESTINATION_NAME.match(name):
        r.fail(f"{key}.name", "must be 1-64 characters: letters, digits, '_', '.', '-'")
    initial = r.number(f"{key}.retry_initial_delay", t, "retry_initial_delay", d.retry_initial_delay)
    maximum = r.number(f"{key}.retry_max_delay", t, "retry_max_delay", d.retry_max_delay)
    if maximum < initial:
        r.fail(f"{key}.retry_max_delay", "must be at least retry_initial_delay")
    if kind == "folder":
        path = r.path(f"{key}.path", t, "path", None)
        if path is None and "path" not in t:
            r.fail(f"{key}.path", "required for a folder destination")
        return FolderDestination(
            name=name, path=path or Path("."), retry_initial_delay=initial, retry_max_delay=maximum
        )
    ae_title = r.ae_title(f"{key}.ae_title", t, "ae_title", "")
    if not ae_title:
        r.fail(f"{key}.ae_title", "required for a dicom destination")
    host = r.string(f"{key}.host", t, "host", "")
    if not host:
        r.fail(f"{key}.host", "required for a dicom destination")
    if "port" not in t:
        r.fail(f"{key}.port", "required for a dicom destination")
    return DicomDestination(
        name=name,
        ae_title=ae_title,
        host=host,
        port=r.integer(f"{key}.port", t, "port", 104, 1, 65535),
        calling_ae_title=r.ae_title(f"{key}.calling_ae_title", t, "calling_ae_title", ""),
        retry_initial_delay=initial,
        retry_max_delay=maximum,
        acse_timeout=r.number(f"{key}.acse_timeout", t, "acse_timeout", d.acse_timeout),
        dimse_timeout=r.number(f"{key}.dimse_timeout", t, "dimse_timeout", d.dimse_timeout),
        network_timeout=r.number(f"{key}.network_timeout", t, "network_timeout", d.network_timeout),
        maximum_pdu_size=r.integer(
            f"{key}.maximum_pdu_size", t, "maximum_pdu_size", d.maximum_pdu_size, 0, 2**32 - 1
        ),
        tls=_parse_destination_tls(r, f"{key}.tls", r.table(f"{key}.tls", t["tls"])) if "tls" in t else None,
    )


def _parse_node_tls(r: _Reader, t: dict[str, Any]) -> NodeTLSConfig | None:
    """`[node.tls]`; the files are checked when tls.py builds the context (load_config)."""
    r.unknown_keys("node.tls.", t, {"certificate", "private_key", "ca_bundle", "port", "minimum_version"})
    certificate = r.path("node.tls.certificate", t, "certificate", None)
    private_key = r.path("node.tls.private_key", t, "private_key", None)
    for name, value in (("certificate", certificate), ("private_key", private_key)):
        if value is None:
            r.fail(f"node.tls.{name}", "required for TLS")
    port = r.integer("node.tls.port", t, "port", 0, 0, 65535) if "port" in t else None
    if certificate is None or private_key is None:
        return None
    return NodeTLSConfig(
        certificate=certificate,
        private_key=private_key,
        ca_bundle=r.path("node.tls.ca_bundle", t, "ca_bundle", None),
        port=port,
        minimum_version=_tls_version(r, "node.tls.minimum_version", t),
    )


def _parse_destination_tls(r: _Reader, key: str, t: dict[str, Any]) -> DestinationTLSConfig:
    r.unknown_keys(f"{key}.", t, {"ca_bundle", "certificate", "private_key", "server_name", "minimum_version"})
    certificate = r.path(f"{key}.certificate", t, "certificate", None)
    private_key = r.path(f"{key}.private_key", t, "private_key", None)
    if (certificate is None) != (private_key is None):
        r.fail(f"{key}.private_key" if private_key is None else f"{key}.certificate", "certificate and private_key go together")
    return DestinationTLSConfig(
        ca_bundle=r.path(f"{key}.ca_bundle", t, "ca_bundle", None),
        certificate=certificate,
        private_key=private_key,
        server_name=r.string(f"{key}.server_name", t, "server_name", ""),
        minimum_version=_tls_version(r, f"{key}.minimum_version", t),
    )


def _tls_version(r: _Reader, key: str, t: dict[str, Any]) -> Literal["1.2", "1.3"]:
    return "1.3" if r.choice(key, t, "minimum_version", "1.2", ("1.2", "1.3")) == "1.3" else "1.2"


def _parse_networks(r: _Reader, key: str, t: dict[str, Any]) -> tuple[IPv4Network | IPv6Network, ...]:
    networks = []
    for i, text in enumerate(r.strings(key, t, key.rsplit(".", 1)[-1], ())):
        try:
            networks.append(ip_network(text.strip(), strict=False))
        except ValueError:
            r.fail(f"{key}[{i}]", "not an IP network in CIDR notation (e.g. 10.1.0.0/16)")
    return tuple(networks)


def _parse_deidentify(r: _Reader, t: dict[str, Any], key: str = "deidentify") -> DeidentifyConfig:
    """`[deidentify]` (and, with another `key`, the same keys of a profile)."""
    d = DeidentifyConfig()
    r.unknown_keys(
        f"{key}.",
        t,
        {
            "secret_key_file", "options", "overrides_file", "unlisted_attributes", "pixels", "encryption", "text",
            "vocabulary_file", *_PER_FLOW_KEYS,
        },
    )
    names = r.strings(f"{key}.options", t, "options", ())
    options: list[Option] = []
    for i, name in enumerate(names):
        if name not in OPTION_NAMES:
            r.fail(f"{key}.options[{i}]", f"unknown option {name!r}; known: {', '.join(OPTION_NAMES)}")
        else:
            options.append(Option(name))
    if {Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES} <= set(options):
        r.fail(
            f"{key}.options",
            "retain_longitudinal_full_dates and retain_longitudinal_modified_dates exclude each other",
        )
    secret = r.path(f"{key}.secret_key_file", t, "secret_key_file", d.secret_key_file)
    unlisted = r.choice(
        f"{key}.unlisted_attributes", t, "unlisted_attributes", d.unlisted_attributes, ("remove", "keep")
    )
    return DeidentifyConfig(
        secret_key_file=secret or d.secret_key_file,
        options=tuple(dict.fromkeys(options)),
        overrides_file=r.path(f"{key}.overrides_file", t, "overrides_file", None),
        unlisted_attributes=unlisted,  # type: ignore[arg-type]
        pixels=_parse_pixels(r, r.table(f"{key}.pixels", t.get("pixels", {})), f"{key}.pixels"),
        encryption=_parse_encryption(r, r.table(f"{key}.encryption", t.get("encryption", {})), f"{key}.encryption"),
        text=r.choice(f"{key}.text", t, "text", d.text, ("clean", "allowlist")),  # type: ignore[arg-type]
        vocabulary_file=_existing_file(
            r, f"{key}.vocabulary_file", r.path(f"{key}.vocabulary_file", t, "vocabulary_file", None)
        ),
        filters=parse_filters(f"{key}.filters", t.get("filters"), t.get("filters_default"), r.problems),
        subjects=_parse_subjects(r, f"{key}.subjects", t.get("subjects")),
    )


def _existing_file(r: _Reader, key: str, path: Path | None) -> Path | None:
    if path is not None and not path.is_file():
        r.fail(key, "file not found")
        return None
    return path


def _parse_encryption(r: _Reader, t: dict[str, Any], key: str) -> EncryptionConfig:
    r.unknown_keys(f"{key}.", t, {"recipients"})
    recipients = r.strings(f"{key}.recipients", t, "recipients", ())
    if any(not path for path in recipients):
        r.fail(f"{key}.recipients", "paths must not be empty")
    return EncryptionConfig(recipients=tuple(Path(path) for path in recipients if path))


def _parse_subjects(r: _Reader, key: str, value: Any) -> SubjectsConfig | None:
    if value is None:
        return None
    t = r.table(key, value)
    r.unknown_keys(f"{key}.", t, {"file", "unmapped"})
    path = r.path(f"{key}.file", t, "file", None)
    unmapped = r.choice(f"{key}.unmapped", t, "unmapped", "pseudonym", ("pseudonym", "refuse"))
    if path is None:
        if "file" not in t:
            r.fail(f"{key}.file", "required: the CSV file of subject IDs")
        return None
    return SubjectsConfig(file=path, unmapped=unmapped)  # type: ignore[arg-type]


_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_PROFILE_KEYS = frozenset({"name", "calling_ae_titles", "networks", "destinations"})


def _parse_profiles(
    r: _Reader,
    value: Any,
    deidentify_raw: dict[str, Any],
    deidentify: DeidentifyConfig,
    destinations: tuple[DestinationConfig, ...],
) -> tuple[ProfileConfig, ...]:
    """`[[profiles]]`, each inheriting the keys of [deidentify] it does not set itself."""
    if value is None:
        everything = tuple(d.name for d in destinations)
        return (ProfileConfig(DEFAULT_PROFILE, (), (), everything, deidentify, implicit=True),)
    if not isinstance(value, list) or not value:
        r.fail("profiles", "must be a non-empty array of tables ([[profiles]])")
        return ()
    for name in sorted(_PER_FLOW_KEYS & set(deidentify_raw)):
        r.fail(f"deidentify.{name}", "with [[profiles]], set it in each profile that needs it")
    inherited = {k: v for k, v in deidentify_raw.items() if k not in _PER_FLOW_KEYS | _NODE_WIDE_KEYS}
    known_destinations = {d.name for d in destinations}
    profiles: list[ProfileConfig] = []
    for i, entry in enumerate(value):
        profile = _parse_profile(r, f"profiles[{i}]", r.table(f"profiles[{i}]", entry), inherited, known_destinations)
        if profile.name in {p.name for p in profiles}:
            r.fail(f"profiles[{i}].name", f"duplicate profile name {profile.name!r}")
        profiles.append(dataclasses.replace(profile, deidentify=dataclasses.replace(
            profile.deidentify, secret_key_file=deidentify.secret_key_file
        )))
    return tuple(profiles)


def _parse_profile(
    r: _Reader, key: str, t: dict[str, Any], inherited: dict[str, Any], known_destinations: set[str]
) -> ProfileConfig:
    for name in sorted(_NODE_WIDE_KEYS & set(t)):
        r.fail(
            f"{key}.{name}",
            "node-wide (a patient gets the same pseudonyms in every profile): set it in [deidentify]",
        )
    name = r.string(f"{key}.name", t, "name", "")
    if not _PROFILE_NAME.match(name):
        r.fail(f"{key}.name", "required, 1-32 characters: letters, digits, '_', '.', '-'")
    callers = tuple(c.strip() for c in r.strings(f"{key}.calling_ae_titles", t, "calling_ae_titles", ()))
    for j, caller in enumerate(callers):
        if not _AE_TITLE.match(caller or "x" * 17):
            r.fail(f"{key}.calling_ae_titles[{j}]", "must be 1-16 characters, no backslash")
    networks = _networks(r, f"{key}.networks", t)
    if name == DEFAULT_PROFILE and (callers or networks):
        r.fail(key, "the default profile takes every caller no other profile matches: no calling_ae_titles or networks")
    elif name != DEFAULT_PROFILE and not (callers or networks):
        r.fail(key, 'calling_ae_titles or networks required (or name the profile "default")')
    targets = r.strings(f"{key}.destinations", t, "destinations", ())
    if not targets:
        r.fail(f"{key}.destinations", "required: the names of one or more [[destinations]]")
    for j, target in enumerate(targets):
        if target not in known_destinations:
            r.fail(f"{key}.destinations[{j}]", f"no [[destinations]] named {target!r}")
    own = {k: v for k, v in t.items() if k not in _PROFILE_KEYS | _NODE_WIDE_KEYS}
    settings = _parse_deidentify(r, _inherit(inherited, own), key)
    return ProfileConfig(name, callers, networks, tuple(dict.fromkeys(targets)), settings)


def _inherit(base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """`own` on top of `base`, key by key; tables (e.g. pixels) are merged one level deep."""
    merged = dict(base)
    for name, value in own.items():
        if isinstance(value, dict) and isinstance(base.get(name), dict):
            merged[name] = {**base[name], **value}
        else:
            merged[name] = value
    return merged


def _networks(r: _Reader, key: str, t: dict[str, Any]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    result = []
    for j, text in enumerate(r.strings(key, t, "networks", ())):
        try:
            result.append(ipaddress.ip_network(text.strip()))
        except ValueError:
            r.fail(f"{key}[{j}]", 'must be an address or network such as "10.1.0.0/16" (no host bits set)')
    return tuple(result)


def _parse_pixels(r: _Reader, t: dict[str, Any], key: str = "deidentify.pixels") -> PixelConfig:
    d = PixelConfig()
    r.unknown_keys(
        f"{key}.",
        t,
        {"rules_file", "high_risk_modalities", "high_risk_sop_classes", "on_uncleaned", "allow_lossy_recompression"}
        | _DETECT_KEYS,
    )
    share = r.number(f"{key}.max_mask_share", t, "max_mask_share", d.max_mask_share)
    if share > 1:
        r.fail(f"{key}.max_mask_share", "must be a share from 0 to 1 (0.25: a quarter of the image)")
    on_uncleaned = r.choice(f"{key}.on_uncleaned", t, "on_uncleaned", d.on_uncleaned, ("refuse", "remove_pixels"))
    return PixelConfig(
        rules_file=r.path(f"{key}.rules_file", t, "rules_file", None),
        high_risk_modalities=r.strings(
            f"{key}.high_risk_modalities", t, "high_risk_modalities", d.high_risk_modalities
        ),
        high_risk_sop_classes=r.strings(
            f"{key}.high_risk_sop_classes", t, "high_risk_sop_classes", d.high_risk_sop_classes
        ),
        on_uncleaned=on_uncleaned,  # type: ignore[arg-type]
        allow_lossy_recompression=r.boolean(
            f"{key}.allow_lossy_recompression", t, "allow_lossy_recompression", False
        ),
        detect=r.choice(f"{key}.detect", t, "detect", d.detect, ("all", "high-risk", "off")),  # type: ignore[arg-type]
        detector=r.choice(f"{key}.detector", t, "detector", d.detector, ("opencv", "ppocr")),  # type: ignore[arg-type]
        max_mask_share=share,
        mask_text=r.choice(f"{key}.mask_text", t, "mask_text", d.mask_text, ("all", "identifying")),  # type: ignore[arg-type]
    )


_DETECT_KEYS = {"detect", "detector", "max_mask_share", "mask_text"}


def _parse_spool(r: _Reader, t: dict[str, Any]) -> SpoolConfig:
    d = SpoolConfig()
    r.unknown_keys("spool.", t, {"directory", "max_bytes", "min_free_bytes"})
    return SpoolConfig(
        directory=r.path("spool.directory", t, "directory", d.directory) or d.directory,
        max_bytes=r.integer("spool.max_bytes", t, "max_bytes", d.max_bytes, 1, 2**62),
        min_free_bytes=r.integer("spool.min_free_bytes", t, "min_free_bytes", d.min_free_bytes, 0, 2**62),
    )


def _parse_logging(r: _Reader, t: dict[str, Any]) -> LoggingConfig:
    r.unknown_keys("logging.", t, {"level", "audit_file", "audit_messages"})
    level = r.choice("logging.level", t, "level", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
    messages = t.get("audit_messages")
    return LoggingConfig(
        level=level,  # type: ignore[arg-type]
        audit_file=r.path("logging.audit_file", t, "audit_file", None),
        audit_messages=None
        if messages is None
        else _parse_audit_messages(r, r.table("logging.audit_messages", messages)),
    )


def _parse_audit_messages(r: _Reader, t: dict[str, Any]) -> AuditMessagesConfig:
    key = "logging.audit_messages."
    r.unknown_keys(
        key,
        t,
        {"host", "port", "transport", "ca_file", "certificate_file", "private_key_file", "enterprise_site_id"},
    )
    host = r.string(key + "host", t, "host", "")
    if not host:
        r.fail(key + "host", "required: the syslog collector's host name or address")
    transport = r.choice(key + "transport", t, "transport", "udp", ("udp", "tls"))
    # RFC 5426: syslog over UDP on 514; RFC 5425: over TLS on 6514.
    port = r.integer(key + "port", t, "port", 6514 if transport == "tls" else 514, 1, 65535)
    files: dict[str, Path | None] = {}
    for name in ("ca_file", "certificate_file", "private_key_file"):
        path = r.path(key + name, t, name, None)
        if path is not None and transport != "tls":
            r.fail(key + name, 'only used with transport = "tls"')
        elif path is not None and not path.is_file():
            r.fail(key + name, "file not found")
        files[name] = path
    if (files["certificate_file"] is None) != (files["private_key_file"] is None):
        r.fail(key + "certificate_file", "certificate_file and private_key_file go together")
    return AuditMessagesConfig(
        host=host,
        port=port,
        transport=transport,  # type: ignore[arg-type]
        enterprise_site_id=r.string(key + "enterprise_site_id", t, "enterprise_site_id", ""),
        **files,
    )


def _parse_metrics(r: _Reader, t: dict[str, Any]) -> MetricsConfig:
    d = MetricsConfig()
    r.unknown_keys("metrics.", t, {"bind", "port"})
    bind = r.string("metrics.bind", t, "bind", d.bind)
    if not bind:
        r.fail("metrics.bind", "must not be empty")
    return MetricsConfig(enabled=True, bind=bind, port=r.integer("metrics.port", t, "port", d.port, 0, 65535))
