"""Profiles: which flow a caller belongs to, and one Engine per flow.

A profile (`[[profiles]]`, config.ProfileConfig) names the calling AE titles and/or networks it
applies to, its de-identification (options, overrides, pixels, filters, subject table) and its
destinations. The secret key is node-wide, so a patient gets the same pseudonyms whichever
profile handles it (DESIGN.md promise 3). Selection, in file order:

1. the first profile whose calling AE titles (if listed) contain the caller's and whose networks
   (if listed) contain the peer address;
2. otherwise the profile named "default", if declared;
3. otherwise none: the association is rejected (PS3.8 7.1.1.9: calling AE title not recognized).

`Profiles` is immutable: a reload (SIGHUP) builds a new one and swaps it in whole.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from dicom_proxy import workers
from dicom_proxy.config import Config, ConfigError, ProfileConfig
from dicom_proxy.deidentify import Engine
from dicom_proxy.deidentify.engine import EngineObserver


@dataclass(frozen=True)
class Profile:
    """One flow ready to run: its configuration and its engine."""

    config: ProfileConfig
    engine: Engine

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def destinations(self) -> tuple[str, ...]:
        return self.config.destinations

    def applies_to(self, calling_ae_title: str, peer_address: str) -> bool:
        """True when the caller matches every selector the profile lists (AE titles, networks)."""
        if self.config.is_default and not self.config.implicit:
            return False  # the declared default is the fallback, never a match of its own
        config = self.config
        if config.calling_ae_titles and calling_ae_title.strip() not in config.calling_ae_titles:
            return False
        if config.networks:
            address = _address(peer_address)
            if address is None or not any(address in network for network in config.networks):
                return False
        return True


class Profiles:
    """The profiles of one configuration, each with its engine (built once, then read-only)."""

    def __init__(self, config: Config, key: bytes, observer: EngineObserver | None = None) -> None:
        self._set(
            tuple(
                Profile(profile, Engine(profile.deidentify, key, observer, "" if profile.implicit else profile.name))
                for profile in config.profiles
            )
        )

    def _set(self, profiles: tuple[Profile, ...]) -> None:
        if not profiles:
            raise ConfigError(["profiles: no profile"])
        self.profiles = profiles
        self._default = next((p for p in profiles if p.config.is_default), None)

    def with_workers(self, processes: int) -> Profiles:
        """The same profiles with each engine's work in `processes` worker processes (one pool
        per profile; 0: in this process). Close the result with `close`."""
        pooled = Profiles.__new__(Profiles)
        pooled._set(tuple(Profile(p.config, workers.with_workers(p.engine, processes)) for p in self.profiles))
        return pooled

    def close(self) -> None:
        """Stop the worker processes, after the objects in progress."""
        for profile in self.profiles:
            workers.close(profile.engine)

    @property
    def key_fingerprint(self) -> str:
        """Of the node's one key (every engine has the same)."""
        return self.profiles[0].engine.key_fingerprint

    def select(self, calling_ae_title: str, peer_address: str) -> Profile | None:
        """The profile for this caller, or None (refuse it)."""
        for profile in self.profiles:
            if profile.applies_to(calling_ae_title, peer_address):
                return profile
        return self._default

    def named(self, name: str | None) -> Profile:
        """The profile called `name`; without a name, the only or the default profile.

        Raises ConfigError naming the choices (for `--profile` on the command line).
        """
        if name is None:
            if len(self.profiles) == 1:
                return self.profiles[0]
            if self._default is not None:
                return self._default
            raise ConfigError([f"profiles: several profiles, choose one with --profile: {self._names()}"])
        for profile in self.profiles:
            if profile.name == name:
                return profile
        raise ConfigError([f"profiles: no profile named {name!r}; known: {self._names()}"])

    def _names(self) -> str:
        return ", ".join(p.name for p in self.profiles)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
