"""`dicom-proxy preview`: the image at its own size, each rule's box outlined where the rule
says, labelled by source; the refusal reason drawn when the engine would refuse; a contact
sheet for a folder. Run as the real command; images kept under var/artifacts for CI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.uid import generate_uid

from dicom_proxy.preview import PALETTE, REFUSAL_BACKGROUND
from tests.corpus import PATIENTS, ct_image
from tests.netpeers import base_config, write_config

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "var" / "artifacts"

RULES = """
[[rules]]
name = "ct-band"
match.Modality = "CT"
rectangles = [ { x = 10, y = 40, width = 100, height = 30 } ]
"""


def _setup(tmp_path: Path, detect: str = "all") -> Path:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    config = base_config(
        tmp_path,
        [{"name": "archive", "type": "folder", "path": str(tmp_path / "out")}],
        deidentify={
            "secret_key_file": str(tmp_path / "secret.key"),
            "pixels": {"rules_file": str(rules), "detect": detect},
        },
    )
    path = write_config(tmp_path / "proxy.toml", config)
    init = subprocess.run(
        [sys.executable, "-m", "dicom_proxy", "init", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert init.returncode == 0, init.stderr
    return path


def _image(tmp_path: Path, name: str, modality: str, rows: int = 256, columns: int = 320) -> Path:
    ds = ct_image(PATIENTS[0], generate_uid(), generate_uid(), 1, size=rows)
    if columns != rows:
        ds.Columns = columns
        ds.PixelData = np.random.default_rng(3).integers(0, 4096, (rows, columns), dtype=np.uint16).tobytes()
    ds.Modality = modality
    path = tmp_path / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _preview(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicom_proxy", "preview", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _keep(path: Path, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(path, ARTIFACTS / name))


def _grey(pixel: tuple[int, ...]) -> bool:
    return pixel[0] == pixel[1] == pixel[2]


def test_rule_box_is_outlined_where_the_rule_says(tmp_path: Path) -> None:
    config = _setup(tmp_path)
    source = _image(tmp_path, "ct", "CT")
    output = tmp_path / "preview.png"
    result = _preview(config, str(source), "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert "mask rule:ct-band: x=10 y=40 width=100 height=30" in result.stdout
    assert "would be forwarded" in result.stdout
    _keep(output, "preview-ct-band.png")

    image = Image.open(output).convert("RGB")
    assert image.size == (320, 256)  # Columns x Rows
    red = PALETTE[0]
    # The outline runs along the rule's rectangle: left column x=10, right column x=109,
    # bottom row y=69, from y=40 down.
    for y in (45, 55, 65):
        assert image.getpixel((10, y)) == red
        assert image.getpixel((109, y)) == red
    for x in (30, 60, 100):
        assert image.getpixel((x, 69)) == red
    # Inside and outside the box the (grey) image is untouched by the drawing.
    assert _grey(image.getpixel((60, 55)))  # type: ignore[arg-type]
    assert _grey(image.getpixel((8, 55)))  # type: ignore[arg-type]
    assert _grey(image.getpixel((112, 55)))  # type: ignore[arg-type]
    assert _grey(image.getpixel((200, 200)))  # type: ignore[arg-type]
    # The label sits just above the box, in the source's colour.
    assert image.getpixel((12, 38)) == red
    # No refusal banner.
    assert _grey(image.getpixel((160, 255)))  # type: ignore[arg-type]


def test_refused_object_shows_the_reason_and_no_box(tmp_path: Path) -> None:
    config = _setup(tmp_path, detect="off")  # rules only: a US object no rule covers is refused
    source = _image(tmp_path, "us", "US", rows=200, columns=200)
    output = tmp_path / "refused.png"
    result = _preview(config, str(source), "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert "refused 0xC003: Modality (0008,0060) is listed as high risk" in result.stdout
    assert "mask " not in result.stdout
    image = Image.open(output).convert("RGB")
    assert image.size == (200, 200)
    assert image.getpixel((100, 199)) == REFUSAL_BACKGROUND
    assert _grey(image.getpixel((100, 100)))  # type: ignore[arg-type]
    _keep(output, "preview-refused.png")


def test_frame_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    config = _setup(tmp_path)
    source = _image(tmp_path, "ct", "CT", rows=64, columns=64)
    result = _preview(config, str(source), "--output", str(tmp_path / "x.png"), "--frame", "2")
    assert result.returncode == 2
    assert "frame 2 does not exist (the object has 1)" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_contact_sheet_of_a_folder_names_objects_by_position(tmp_path: Path) -> None:
    config = _setup(tmp_path, detect="off")  # rules only: the US object is refused
    folder = tmp_path / "device"
    folder.mkdir()
    for name, modality in (("a", "CT"), ("b", "US"), ("c", "MR")):
        _image(folder, f"{PATIENTS[0].patient_id}-{name}", modality, rows=128, columns=128)
    output = tmp_path / "sheet.png"
    result = _preview(config, "--all", str(folder), "--output", str(output))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "#1: 1 box(es): rule:ct-band"
    assert lines[1].startswith("#2: refused 0xC003")
    assert lines[2] == "#3: no mask"
    # File names (here carrying the patient ID) never appear.
    assert PATIENTS[0].patient_id not in result.stdout + result.stderr
    sheet = Image.open(output)
    assert sheet.size == (3 * 256, 256 + 40)
    _keep(output, "preview-contact-sheet.png")
