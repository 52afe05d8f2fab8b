"""Issue 9: the adversarial corpus (tests/adversarial.py), one test per object, each run through
the four option sets of the outside audit. Fails if any planted value survives anywhere in the
output bytes (every encoding, NFKC and case folded), if the object is refused (every case can
be de-identified), or if a pseudonym check fails."""

from __future__ import annotations

import pytest

from tests.adversarial import OPTION_SETS, Case, corpus, outcome
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
