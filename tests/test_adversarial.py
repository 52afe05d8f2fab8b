"""Issue 9: the adversarial corpus (tests/adversarial.py), one test per object, each run through
the four option sets of the outside audit. Fails if any planted value survives anywhere in the
output bytes (every encoding, NFKC and case folded), if the object is refused (every case can
be de-identified), or if a pseudonym check fails."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from dicom_proxy.models import ReceivedObject, Refused
from tests.adversarial import (
    OPTION_SETS,
    PLACES,
    SCRIPT_SIZES,
    SCRIPTS,
    Case,
    base,
    corpus,
    decoded_strings,
    encode,
    fold,
    outcome,
)
from tests.dicomfactory import engine

ENGINES = {name: engine(*options) for name, options in OPTION_SETS.items()}
CASES = corpus()


def test_corpus_size() -> None:
    assert len(CASES) >= 120
    assert {case.klass for case in CASES} == {1, 2, 3, 4, 5, 7, 8}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_adversarial(case: Case) -> None:
    problems = {name: outcome(case, running, name) for name, running in ENGINES.items()}
    assert all(result == "ok" for result in problems.values()), problems


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    script=st.sampled_from(sorted(SCRIPTS)),
    data=st.data(),
    spaced=st.booleans(),
    place=st.sampled_from(sorted(PLACES)),
    which=st.sampled_from(sorted(OPTION_SETS)),
)
def test_random_names_in_random_scripts_never_leave(
    script: str, data: st.DataObject, spaced: bool, place: str, which: str
) -> None:
    low, high = SCRIPT_SIZES[script]
    family = data.draw(st.text(SCRIPTS[script], min_size=low, max_size=high))
    given_name = data.draw(st.text(SCRIPTS[script], min_size=low, max_size=high))
    gap = " " if spaced else ""
    ds = base(name=f"{family}^{given_name}")
    PLACES[place](ds, f"胸部CT{gap}{family}{gap}{given_name}{gap}axial")
    try:
        output = (
            ENGINES[which]
            .deidentify_received(ReceivedObject(encode(ds).body, ExplicitVRLittleEndian, CTImageStorage, "AUDIT"))
            .encoded
        )
    except Refused as refused:
        pytest.fail(f"refused: {refused.reason}")
    strings = decoded_strings(output)
    assert fold(family) not in strings and fold(given_name) not in strings
