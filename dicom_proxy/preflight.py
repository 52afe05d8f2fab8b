"""What `serve`, `init` and `check-config` verify before anything starts (issue 15, items 2-4).

Every problem becomes one `config error: <key path>: ...` line and exit status 2, never a
traceback: the spool directory and the key's directory must be writable (or creatable), the
listening address must be usable, and the secret key must be the node's own.

The key is created in exactly two places, both explicit and logged loudly: `dicom-proxy init`,
and the very first start of `serve` (no key and a spool that shows no earlier run, so the
quick start works as is). Never by `check-config`, a reload, or `deidentify`. When the key is
missing but the spool shows the node has run before, `serve` refuses to start: a new key would
silently change every pseudonym. The spool keeps the fingerprint of the key it was filled with
(`node.json`), so a changed key is logged at start.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from dicom_proxy import audit
from dicom_proxy.config import Config, ConfigError, NodeConfig
from dicom_proxy.secret import SecretKeyError, create_key, fingerprint, load_key

log = logging.getLogger(__name__)

KEY_PATH = "deidentify.secret_key_file"
NODE_FILE = "node.json"


@dataclass(frozen=True)
class NodeKey:
    key: bytes
    fingerprint: str
    created: bool = False


# -- paths -----------------------------------------------------------------------------------
def directory_problem(path: Path) -> str | None:
    """Why `path` cannot be (or become) a writable directory, or None. Creates nothing."""
    current = path
    while not current.exists():
        if current.parent == current:
            break
        current = current.parent
    if not current.is_dir():
        return f"{current} is not a directory"
    if not os.access(current, os.W_OK | os.X_OK):
        return f"{current} is not writable"
    return None


def path_problems(config: Config) -> list[str]:
    """Directories the node writes to, checked without creating anything."""
    problems = []
    spool = config.spool.directory
    problem = directory_problem(spool)
    if problem is not None:
        problems.append(f"spool.directory: {spool}: {problem}")
    key_file = config.deidentify.secret_key_file
    if not key_file.exists():
        problem = directory_problem(key_file.parent)
        if problem is not None:
            problems.append(f"{KEY_PATH}: {key_file}: cannot be created: {problem}")
    audit_file = config.logging.audit_file
    if audit_file is not None:
        problem = directory_problem(audit_file.parent)
        if problem is None and audit_file.exists() and not os.access(audit_file, os.W_OK):
            problem = "not writable"
        if problem is not None:
            problems.append(f"logging.audit_file: {audit_file}: {problem}")
    return problems


def as_config_error(key: str, path: Path, exc: OSError) -> ConfigError:
    """An OSError met while preparing `path` as the one config error line it deserves."""
    return ConfigError([f"{key}: {path}: {exc.strerror or type(exc).__name__}"])


# -- listening address -----------------------------------------------------------------------
def listen_problem(node: NodeConfig) -> str | None:
    """Can `node.bind:node.port` be listened on? Binds a probe socket as the server will
    (SO_REUSEADDR), then closes it. Port 0 always works."""
    return listen_problem_at("node", node.bind, node.port)


def listen_problem_at(section: str, bind: str, port: int) -> str | None:
    """The same probe for any listening socket configured as `<section>.bind/port`."""
    try:
        infos = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return f"{section}.bind: {bind}: cannot resolve ({exc.strerror or exc})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
            probe.listen(1)
        except OSError as exc:
            return listen_error_at(section, bind, port, exc)
    return None


def address_problem(node: NodeConfig) -> str | None:
    """Is `node.bind` an address of this machine? (check-config: the port itself may be held
    by the running node, so only the address is probed, on a free port.)"""
    try:
        infos = socket.getaddrinfo(node.bind, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return f"node.bind: {node.bind}: cannot resolve ({exc.strerror or exc})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind(address)
        except OSError as exc:
            return f"node.bind: cannot listen on {node.bind} ({exc.strerror or exc})"
    return None


def listen_error(node: NodeConfig, exc: OSError) -> str:
    return listen_error_at("node", node.bind, node.port, exc)


def listen_error_at(section: str, bind: str, port: int, exc: OSError) -> str:
    key = f"{section}.port" if exc.errno in (errno.EADDRINUSE, errno.EACCES) else f"{section}.bind"
    return f"{key}: cannot listen on {bind}:{port} ({exc.strerror or exc})"


# -- the secret key --------------------------------------------------------------------------
def has_run_before(spool_directory: Path) -> bool:
    """Does the spool show that a node has run with it (queues, quarantine or node.json)?"""
    return any((spool_directory / name).exists() for name in (NODE_FILE, "queues", "quarantine"))


def _missing_key_error(config: Config) -> ConfigError:
    key_file = config.deidentify.secret_key_file
    return ConfigError(
        [
            (f"{KEY_PATH}: {key_file}: not found, but spool.directory {config.spool.directory} shows this node "
            "has run before; a new key would change every pseudonym. Restore the key from its backup or fix "
            "the path (relative paths are resolved against the working directory); to start over with a "
            "new key on purpose, run: dicom-proxy init --config FILE")
        ]
    )


def read_key(config: Config) -> NodeKey:
    """The configured key; never creates one (check-config, reload, deidentify, pseudonym)."""
    key_file = config.deidentify.secret_key_file
    if not key_file.exists():
        if has_run_before(config.spool.directory):
            raise _missing_key_error(config)
        raise ConfigError(
            [(f"{KEY_PATH}: {key_file}: not found; create it with: dicom-proxy init --config FILE "
             "(serve also creates it on its very first start)")]
        )
    try:
        key = load_key(key_file)
    except SecretKeyError as exc:
        raise ConfigError([f"{KEY_PATH}: {exc}"]) from None
    return NodeKey(key, fingerprint(key))


def key_for_start(config: Config) -> NodeKey:
    """serve: the configured key, created only on the node's very first start."""
    key_file = config.deidentify.secret_key_file
    if key_file.exists() or has_run_before(config.spool.directory):
        return read_key(config)
    return make_key(config)


def make_key(config: Config) -> NodeKey:
    """Create the key (mode 0600), loudly: `init`, or serve's very first start."""
    key_file = config.deidentify.secret_key_file
    try:
        key = create_key(key_file)
    except FileExistsError:
        return read_key(config)  # another node sharing this key file created it just now
    except OSError as exc:
        raise as_config_error(KEY_PATH, key_file, exc) from None
    node_key = NodeKey(key, fingerprint(key), created=True)
    log.warning(
        "created a new secret key in %s (fingerprint %s): every pseudonym derives from it; back it up",
        key_file,
        node_key.fingerprint,
    )
    audit.emit(audit.KeyCreated(key_file=str(key_file), key_fingerprint=node_key.fingerprint))
    return node_key


def record_key(config: Config, node_key: NodeKey) -> None:
    """Remember in the spool which key filled it; log loudly when the key changed since."""
    path = config.spool.directory / NODE_FILE
    previous = ""
    try:
        previous = str(json.loads(path.read_text()).get("key_fingerprint", ""))
    except (OSError, ValueError, AttributeError):
        pass
    if previous == node_key.fingerprint:
        return
    if previous:
        log.warning(
            "the secret key changed since the last start (fingerprint %s, was %s): pseudonyms of new objects "
            "will not match those sent before",
            node_key.fingerprint,
            previous,
        )
        audit.emit(audit.KeyChanged(key_fingerprint=node_key.fingerprint, previous_fingerprint=previous))
    temporary = path.with_name(NODE_FILE + ".tmp")
    try:
        temporary.write_text(json.dumps({"key_fingerprint": node_key.fingerprint, "since": time.time()}) + "\n")
        os.replace(temporary, path)
    except OSError as exc:
        raise as_config_error("spool.directory", config.spool.directory, exc) from None
