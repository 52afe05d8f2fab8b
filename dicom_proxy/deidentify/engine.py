"""Engine: binds the compiled policy and the secret key; turns one data set into one output.

The stage order, in one place (DESIGN.md): filters -> plan -> pixels -> tags -> verify.
- filters (filters.py): the profile accepts, drops or rejects the object by its header
- plan   (plan.py):   read the original header: identifiers, values to search for, date offset
- pixels (pixels/):   mask burned-in text (PS3.15 E.3.1), matching the original header;
                      then, on every object, strip side channels next to the pixels
                      (codestream metadata, unused high bits: pixels/sidechannels.py)
- tags   (tags.py):   PS3.15 Table E.1-1 with the options, at every nesting level; record.py;
                      with [deidentify.encryption], the originals of what changed are
                      encrypted into the Encrypted Attributes Sequence (encrypt.py, E.1.2)
- verify (verify.py): no original identifying string remains in the encoded output
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from pydicom.dataset import Dataset

from dicom_proxy import part10, trace
from dicom_proxy.config import ConfigError, DeidentifyConfig, load_recipients
from dicom_proxy.deidentify.charset import declare_undeclared_utf8
from dicom_proxy.deidentify.encrypt import AttributeEncryptor, without_encrypted_content
from dicom_proxy.deidentify.pixels import PixelCleaner
from dicom_proxy.deidentify.pixels.sidechannels import strip_side_channels
from dicom_proxy.deidentify.plan import make_plan
from dicom_proxy.deidentify.pseudonyms import PatientIdentity
from dicom_proxy.deidentify.record import record
from dicom_proxy.deidentify.tags import apply_tags
from dicom_proxy.deidentify.text import vocabulary
from dicom_proxy.deidentify.verify import verify
from dicom_proxy.filters import FilterAction
from dicom_proxy.models import DeidentifiedObject, Dropped, ReceivedObject, Refused
from dicom_proxy.policy import Policy, compile_policy
from dicom_proxy.policy.options import Option
from dicom_proxy.secret import fingerprint
from dicom_proxy.status import StoreStatus
from dicom_proxy.subjects import Subject, SubjectTable, load_subjects

_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


class Stage(enum.Enum):
    """The engine's stages, in order, as timed for the metrics."""

    PLAN = "plan"
    PIXELS = "pixels"
    TAGS = "tags"
    ENCODE = "encode"
    VERIFY = "verify"


class EngineObserver(Protocol):
    """Receives timings and mask sources (rule names, detector names: never values)."""

    def stage_finished(self, stage: Stage, seconds: float) -> None: ...

    def pixels_masked(self, sources: tuple[str, ...]) -> None: ...


class Engine:
    """De-identify data sets with one policy and one secret key.

    Thread-safe: the policy is frozen and all per-object state lives in a per-call Context.
    """

    def __init__(
        self, config: DeidentifyConfig, key: bytes, observer: EngineObserver | None = None, profile: str = ""
    ) -> None:
        self.config = config
        self._key = key
        self.profile = profile  # recorded in (0012,0063); empty: the implicit profile
        self.key_fingerprint = fingerprint(key)
        self._observer = observer
        # load_config compiled the policy once; a hand-built config (tests, library use) not yet.
        if config.policy is not None:
            self.policy: Policy = config.policy
        else:
            names = [option.value for option in config.options]
            self.policy = compile_policy(names, config.overrides_file, config.unlisted_attributes, config.text)
        self._pixels = PixelCleaner(config.pixels)
        self._encryptor = _encryptor(config)
        self._vocabulary = vocabulary.load(config.vocabulary_file)
        self._subjects = self._subject_table(config)

    @staticmethod
    def _subject_table(config: DeidentifyConfig) -> SubjectTable | None:
        if config.subjects is None:
            return None
        if config.subjects.table is not None:
            return config.subjects.table  # read by load_config
        problems: list[str] = []
        table = load_subjects(config.subjects.file, "subjects.file", problems)
        if table is None:
            raise ConfigError(problems)
        return table

    @property
    def pixel_cleaner(self) -> PixelCleaner:
        """The pixel stage, for `preview` (what it would mask without changing anything)."""
        return self._pixels

    def deidentify_received(self, received: ReceivedObject) -> DeidentifiedObject:
        dataset = part10.decode_received(received.dataset_bytes, received.transfer_syntax_uid)
        if dataset.get("SOPClassUID") != received.affected_sop_class_uid:
            raise Refused("SOP Class UID in the data set differs from the C-STORE request")
        return self.deidentify(dataset)

    def deidentify_file(self, path: Path) -> DeidentifiedObject:
        return self.deidentify(part10.read_file(path))

    def deidentify(self, dataset: Dataset) -> DeidentifiedObject:
        """De-identify `dataset` (modified in place) and return the encoded result.

        Raises Refused for anything that cannot be de-identified with certainty, including
        any unexpected error (fail closed); the reason never contains an original value.
        """
        # Before any value is read: text that is UTF-8 without saying so is read as UTF-8.
        declare_undeclared_utf8(dataset)
        # Read before any stage changes the data set: the audit's view of the object.
        identity = trace.of_dataset(self._key, dataset, Option.RETAIN_UIDS in self.config.options)
        try:
            return dataclasses.replace(self._run(dataset), identity=identity)
        except (Refused, Dropped) as exc:
            exc.identity = identity
            raise
        except Exception as exc:
            refused = Refused(f"de-identification failed ({type(exc).__name__})")
            refused.identity = identity
            raise refused from None

    def _run(self, dataset: Dataset) -> DeidentifiedObject:
        for keyword in _REQUIRED:
            element = dataset.data_element(keyword) if keyword in dataset else None
            if element is None or not str(element.value):
                raise Refused(f"{keyword} missing")
        self._filter(dataset)
        originals = self._encryptor.snapshot(dataset) if self._encryptor is not None else None
        with self._timed(Stage.PLAN):
            context = make_plan(dataset, self.policy, self._key, self._vocabulary)
            context.profile = self.profile
            context.subject = self._subject(context.patient)
        with self._timed(Stage.PIXELS):
            # Side channels first: stray bytes around a codestream can stop the decoder the pixel
            # stage needs; a stream the pixel stage re-encoded is stripped again (encoder comments).
            strip_side_channels(dataset)
            outcome = self._pixels.clean(dataset)
            if outcome.boxes:
                strip_side_channels(dataset)
        if outcome.boxes and self._observer is not None:
            detectors = tuple(source for source in outcome.sources if source != "rules")
            self._observer.pixels_masked(tuple(f"rule:{name}" for name in outcome.rules) + detectors)
        with self._timed(Stage.TAGS):
            apply_tags(dataset, context, overlays_cleaned=getattr(outcome, "overlays_cleaned", False))
            record(dataset, context, outcome.cleaned)
            protected = None
            if self._encryptor is not None and originals is not None:
                protected = self._encryptor.protect(dataset, originals)
        with self._timed(Stage.ENCODE):
            try:
                encoded = part10.encode(dataset)
            except Exception as exc:
                raise Refused(f"cannot encode output ({type(exc).__name__})") from None
        with self._timed(Stage.VERIFY):
            verify(without_encrypted_content(encoded, protected, dataset), context)
        return DeidentifiedObject(
            sop_class_uid=str(dataset.SOPClassUID),
            sop_instance_uid=str(dataset.SOPInstanceUID),
            study_instance_uid=str(dataset.StudyInstanceUID),
            series_instance_uid=str(dataset.SeriesInstanceUID),
            transfer_syntax_uid=str(dataset.file_meta.TransferSyntaxUID),
            parts=encoded.parts,
        )

    def _filter(self, dataset: Dataset) -> None:
        """Apply the profile's filters to the original header (before anything changes it)."""
        decision = self.config.filters.decide(dataset)
        name = decision.filter_name or "filters_default"
        if decision.action is FilterAction.DROP:
            raise Dropped(name)
        if decision.action is FilterAction.REJECT:
            raise Refused(f"rejected by filter {name!r} of the profile", StoreStatus.REJECTED_BY_PROFILE)

    def _subject(self, patient: PatientIdentity) -> Subject | None:
        """The patient's study subject from the profile's table (PS3.15 E.1.1 leaves the
        replacement Patient ID to the implementation); None: use the keyed pseudonym."""
        if self._subjects is None or self.config.subjects is None:
            return None
        subject = self._subjects.lookup(patient.issuer, patient.patient_id) if patient.patient_id else None
        if subject is None and self.config.subjects.unmapped == "refuse":
            raise Refused("patient not in the profile's subject table")
        return subject

    @contextmanager
    def _timed(self, stage: Stage) -> Iterator[None]:
        """Time one stage for the observer (also when it refuses: refusals cost time too)."""
        if self._observer is None:
            yield
            return
        start = time.perf_counter()
        try:
            yield
        finally:
            self._observer.stage_finished(stage, time.perf_counter() - start)


def _encryptor(config: DeidentifyConfig) -> AttributeEncryptor | None:
    """The Encrypted Attributes stage, when `[deidentify.encryption] recipients` are set."""
    encryption = config.encryption
    if not encryption.recipients:
        return None
    certificates = encryption.certificates
    if len(certificates) != len(encryption.recipients):
        problems: list[str] = []
        certificates = load_recipients(encryption, "deidentify.encryption", problems)
        if problems:
            raise ConfigError(problems)
    return AttributeEncryptor(certificates)
