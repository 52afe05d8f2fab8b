"""Pixel rules file: parsing, validation messages, matching, rectangle resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from dicom_proxy.config import ConfigError, PixelConfig, parse_config
from dicom_proxy.deidentify.pixels import PixelCleaner
from dicom_proxy.deidentify.pixels.rules import Box, Rectangle, Units, load_rules, parse_rules

STARTER = Path(__file__).resolve().parent.parent / "conf" / "pixel-rules.toml"


def header(**values: object) -> Dataset:
    ds = Dataset()
    ds.PixelData = b"\x00\x00"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def rules_of(tmp_path: Path, text: str) -> PixelCleaner:
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    return PixelCleaner(PixelConfig(rules_file=path))


def matched(cleaner: PixelCleaner, ds: Dataset) -> tuple[str, ...]:
    return tuple(rule.name for rule in cleaner.plan(ds)[0])


def test_starter_rules_load_and_match_common_cases() -> None:
    cleaner = PixelCleaner(PixelConfig(rules_file=STARTER))
    us = header(Modality="US", Rows=600, Columns=800)
    assert matched(cleaner, us) == ("US screen header band",)
    assert cleaner.plan(us)[1] == (Box(top=0, left=0, bottom=60, right=800),)
    dose = header(
        Modality="CT",
        SOPClassUID="1.2.840.10008.5.1.4.1.1.7",
        SeriesDescription="Dose Report",
        Rows=512,
        Columns=512,
    )
    assert matched(cleaner, dose) == ("CT dose report screen",)
    screen = header(
        Modality="MR", ImageType=["DERIVED", "SECONDARY", "SCREEN SAVE"], Rows=512, Columns=512
    )
    assert matched(cleaner, screen) == ("console screen save banner",)
    assert matched(cleaner, header(Modality="US", Rows=300, Columns=400)) == ()
    assert matched(cleaner, header(Modality="CT", Rows=512, Columns=512)) == ()


def test_exact_prefix_regex_and_alternatives(tmp_path: Path) -> None:
    cleaner = rules_of(
        tmp_path,
        """
[[rules]]
name = "model"
match.Manufacturer = { prefix = ["GE", "Philips"] }
match.ManufacturerModelName = { regex = '(?i)voluson e\\d+' }
match.Modality = ["US", "IVUS"]
match.Rows = 600
rectangles = [{ x = 0, y = 0, width = 10, height = 10 }]
""",
    )
    base = {"Modality": "US", "Rows": 600, "Columns": 800}
    assert matched(
        cleaner, header(Manufacturer="GE Healthcare", ManufacturerModelName="Voluson E10", **base)
    )
    assert matched(
        cleaner, header(Manufacturer="Philips ", ManufacturerModelName="VOLUSON E8", **base)
    )
    # regex must cover the whole value; prefix is not "contains"; absent attribute never matches
    assert not matched(
        cleaner, header(Manufacturer="GE", ManufacturerModelName="Voluson E10 BT", **base)
    )
    assert not matched(
        cleaner, header(Manufacturer="Acme GE", ManufacturerModelName="Voluson E8", **base)
    )
    assert not matched(cleaner, header(Manufacturer="GE", **base))
    assert not matched(
        cleaner,
        header(
            Manufacturer="GE",
            ManufacturerModelName="Voluson E8",
            Modality="CT",
            Rows=600,
            Columns=800,
        ),
    )


def test_multivalued_image_type_is_joined_with_backslash(tmp_path: Path) -> None:
    cleaner = rules_of(
        tmp_path,
        """
[[rules]]
name = "secondary"
match.ImageType = { regex = 'DERIVED\\\\SECONDARY\\\\.*' }
rectangles = [{ x = 0, y = 0, width = 1, height = 1 }]
""",
    )
    assert matched(cleaner, header(ImageType=["DERIVED", "SECONDARY", "OTHER"], Rows=4, Columns=4))
    assert not matched(cleaner, header(ImageType=["ORIGINAL", "PRIMARY"], Rows=4, Columns=4))


def test_all_matching_rules_add_up(tmp_path: Path) -> None:
    cleaner = rules_of(
        tmp_path,
        """
[[rules]]
name = "band"
match.Modality = "US"
rectangles = [{ x = 0.0, y = 0.0, width = 1.0, height = 0.1, units = "fraction" }]
[[rules]]
name = "box"
match.Modality = "US"
match.Columns = 640
rectangles = [{ x = 600, y = 400, width = 100, height = 100 }]
""",
    )
    rules, boxes = cleaner.plan(header(Modality="US", Rows=480, Columns=640))
    assert [r.name for r in rules] == ["band", "box"]
    assert boxes == (Box(0, 0, 48, 640), Box(400, 600, 480, 640))  # second one clipped


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[rules]]\nmatch.Modality = "US"\nrectangles = [{x=0,y=0,width=1,height=1}]',
            "rules[0].name: required",
        ),
        (
            '[[rules]]\nname = "a"\nrectangles = [{x=0,y=0,width=1,height=1}]',
            "rules[0].match: required",
        ),
        ('[[rules]]\nname = "a"\nmatch.Modality = "US"', "rules[0].rectangles: required"),
        (
            '[[rules]]\nname = "a"\nmatch.Modality = { like = "US" }\nrectangles = [{x=0,y=0,width=1,height=1}]',
            "rules[0].match.Modality: a table must have exactly one of",
        ),
        (
            '[[rules]]\nname = "a"\nmatch.Modality = { regex = "(" }\nrectangles = [{x=0,y=0,width=1,height=1}]',
            "rules[0].match.Modality.regex: bad regular expression",
        ),
        (
            '[[rules]]\nname = "a"\nmatch.Modality = true\nrectangles = [{x=0,y=0,width=1,height=1}]',
            "rules[0].match.Modality: must be a string",
        ),
        (
            '[[rules]]\nname = "a"\nmatch.Modality = "US"\nrectangles = [{x=0,y=0,width=1.5,height=1}]',
            "rules[0].rectangles[0].width: must be an integer",
        ),
        (
            '[[rules]]\nname = "a"\nmatch.Modality = "US"\nrectangles = [{x=0.5,y=0,width=0.6,height=1,units="fraction"}]',
            "rules[0].rectangles[0]: x + width",
        ),
        (
            '[[rules]]\nname = "a"\nmatch.Modality = "US"\nrectangles = [{x=0,y=0,width=0,height=1}]',
            "rules[0].rectangles[0]: width and height must be greater than 0",
        ),
        (
            '[[rules]]\nname = "a"\nmatch.Modality = "US"\nrectangles = [{x=0,y=0,width=1,height=1,units="mm"}]',
            "rules[0].rectangles[0].units",
        ),
        (
            '[[rules]]\nname = "a"\nmatch.Modality = "US"\nrectangles = [{x=0,y=0,width=1,height=1,z=2}]',
            "rules[0].rectangles[0].z: unknown key",
        ),
        (
            '[[rules]]\nname = "a"\nmatch.Modality = "US"\nfill = [1, 2]\nrectangles = [{x=0,y=0,width=1,height=1}]',
            "rules[0].fill",
        ),
        (
            (
                '[[rules]]\nname = "a"\nmatch.Modality = "US"\nrectangles = [{x=0,y=0,width=1,height=1}]\n'
                '[[rules]]\nname = "a"\nmatch.Modality = "CT"\nrectangles = [{x=0,y=0,width=1,height=1}]'
            ),
            "rules[1].name: duplicate rule name",
        ),
        ("version = 2", "version: unknown key"),
    ],
)
def test_invalid_rules_name_file_and_key_path(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "site-rules.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_rules(path)
    assert any(p.startswith(f"{path}: ") and expected in p for p in info.value.problems), (
        info.value.problems
    )


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rules]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_rules(bad)


def test_config_table_keeps_its_keys() -> None:
    raw = {
        "destinations": [{"name": "a", "type": "folder", "path": "out"}],
        "deidentify": {
            "pixels": {
                "rules_file": "conf/pixel-rules.toml",
                "on_uncleaned": "remove_pixels",
                "allow_lossy_recompression": True,
                "high_risk_modalities": ["US"],
            }
        },
    }
    pixels = parse_config(raw).deidentify.pixels
    assert pixels.rules_file == Path("conf/pixel-rules.toml")
    assert pixels.on_uncleaned == "remove_pixels" and pixels.allow_lossy_recompression
    assert pixels.high_risk_modalities == ("US",)


@given(
    x=st.floats(0, 1),
    y=st.floats(0, 1),
    width=st.floats(0.001, 1),
    height=st.floats(0.001, 1),
    rows=st.integers(1, 4096),
    columns=st.integers(1, 4096),
)
def test_fraction_boxes_cover_the_requested_area(
    x: float, y: float, width: float, height: float, rows: int, columns: int
) -> None:
    width, height = min(width, 1 - x) or 0.001, min(height, 1 - y) or 0.001
    box = Rectangle(x, y, width, height, Units.FRACTION).resolve(rows, columns)
    if box is None:
        assert x * columns >= columns or y * rows >= rows
        return
    assert 0 <= box.left < box.right <= columns and 0 <= box.top < box.bottom <= rows
    assert box.left <= x * columns and box.right >= min((x + width) * columns, columns) - 1e-9
    assert box.top <= y * rows and box.bottom >= min((y + height) * rows, rows) - 1e-9


def test_parse_rules_reports_every_problem() -> None:
    problems: list[str] = []
    parse_rules({"rules": [{"name": "a"}, {"match": {"Modality": "US"}}]}, problems)
    assert len(problems) >= 3
