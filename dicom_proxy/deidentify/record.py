"""Record what was done (PS3.15 E.1.1 and E.3; PS3.3 C.7.1.1 Patient Identity Removed).

(0012,0062) Patient Identity Removed = YES; (0012,0063) De-identification Method names the
profile, table edition and options; (0012,0064) De-identification Method Code Sequence holds
the CID 7050 codes; (0028,0303) Longitudinal Temporal Information Modified = MODIFIED when
dates were shifted (PS3.3 C.7.6.1); Burned In Annotation = NO when the pixels were cleaned.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_proxy.deidentify.context import Context
from dicom_proxy.policy import BASIC_PROFILE, CLEAN_PIXEL_DATA, Code, Policy


def record(dataset: Dataset, context: Context, pixels_cleaned: bool) -> None:
    """Write the de-identification attributes into `dataset` (after the tag stage)."""
    policy = context.policy
    codes: list[Code] = [BASIC_PROFILE]
    if pixels_cleaned:
        codes.append(CLEAN_PIXEL_DATA)
        dataset.BurnedInAnnotation = "NO"
    codes += [option.code for option in policy.options]
    dataset.PatientIdentityRemoved = "YES"
    # LO, VM 1-n: one value (<= 64 characters) per profile/option.
    profile = [_profile(context.profile)] if context.profile else []
    dataset.DeidentificationMethod = [_method(policy), *profile] + [code.meaning[:64] for code in codes[1:]]
    dataset.DeidentificationMethodCodeSequence = Sequence([_code_item(code) for code in codes])
    if context.dates_shifted:
        dataset.LongitudinalTemporalInformationModified = "MODIFIED"


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme
    item.CodeMeaning = code.meaning
    return item


def _profile(name: str) -> str:
    """The profile's value of (0012,0063) (LO: profile names are at most 32 characters)."""
    return f"profile {name}"


def _method(policy: Policy) -> str:
    return f"dicom-proxy PS3.15 {policy.edition} E.1-1"


def expected_strings(policy: Policy, profile: str = "") -> frozenset[str]:
    """Every string `record` can write for `policy` and `profile` (verify compares, does not
    search them)."""
    codes = [BASIC_PROFILE, CLEAN_PIXEL_DATA, *(option.code for option in policy.options)]
    strings = {"YES", "NO", "MODIFIED", _method(policy), *([_profile(profile)] if profile else [])}
    for code in codes:
        strings.update((code.value, code.scheme, code.meaning, code.meaning[:64]))
    return frozenset(strings)
