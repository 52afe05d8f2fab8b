"""An adversarial corpus for issue 9: hostile objects, each with the values that must not leave.

Every case builds one received data set (encoded bytes + transfer syntax, as a sender would send
it) and names the original values planted in it. `tests/test_adversarial.py` runs each case
through the four option sets of the outside audit and searches the output bytes for every
planted value in every encoding and normalised form. Classes follow issue 9: 1 names in free
text, 2 dates and ages, 3 identifiers, 4 Basic Profile text, 5 verify bypasses, 7 pseudonyms,
8 over-refusals (class 6, pixel side channels, has its own corpus).

The searches here are deliberately independent of the engine's own normaliser.
"""

from __future__ import annotations

import unicodedata
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from tests.dicomfactory import set_ct_pixels

OPTION_SETS: dict[str, tuple[str, ...]] = {
    "basic": (),
    "research": ("retain_longitudinal_modified_dates", "clean_descriptors", "clean_structured_content"),
    "research+private": (
        "retain_longitudinal_modified_dates",
        "clean_descriptors",
        "clean_structured_content",
        "retain_safe_private",
    ),
    "research+uids": (
        "retain_longitudinal_modified_dates",
        "clean_descriptors",
        "clean_structured_content",
        "retain_uids",
    ),
}


@dataclass(frozen=True)
class Sent:
    """One data set as a sender puts it on the wire."""

    body: bytes
    transfer_syntax: str
    sop_class_uid: str = CTImageStorage


@dataclass(frozen=True)
class Case:
    name: str
    klass: int
    build: Callable[[], list[Sent]]
    planted: tuple[str, ...]
    # Extra checks on the outputs (class 7): returns a problem description or "".
    check: Callable[[list[bytes]], str] | None = field(default=None, compare=False)
    # Option sets under which the planted values stay by design (Retain UIDs keeps UIDs).
    kept_under: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Building blocks


def base(
    name: str = "QUAREMBY^ODALYS",
    charset: str | list[str] | None = "ISO_IR 192",
    patient_id: str | None = "MRN7740012",
    birth_date: str = "19560311",
    sex: str = "F",
    uid_root: str = "1.2.826.0.1.3680043.9.7141",
) -> Dataset:
    """A small CT image with the patient's identity in the usual places."""
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = f"{uid_root}.3"
    ds.StudyDate = "20210314"
    ds.SeriesDate = "20210314"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC99172635"
    ds.Modality = "CT"
    ds.Manufacturer = "SIEMENS"
    ds.ReferringPhysicianName = "KILDARE^JAMES"
    ds.PatientName = name
    if patient_id is not None:
        ds.PatientID = patient_id
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex
    ds.StudyInstanceUID = f"{uid_root}.1"
    ds.SeriesInstanceUID = f"{uid_root}.2"
    ds.StudyID = "S7781"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = f"{uid_root}.4"
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    set_ct_pixels(ds, 2, 2, bytes(8))
    return ds


def encode(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> Sent:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = syntax == ImplicitVRLittleEndian
    write_dataset(buffer, ds)
    body = buffer.getvalue()
    if syntax == DeflatedExplicitVRLittleEndian:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = compressor.compress(body) + compressor.flush()
    return Sent(body, syntax)


def item(**attributes: object) -> Dataset:
    result = Dataset()
    for keyword, value in attributes.items():
        setattr(result, keyword, value)
    return result


def code(value: str, scheme: str, meaning: str) -> Dataset:
    return item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


# Where free text is planted: (label, function that puts `text` into `ds`).
def _study(ds: Dataset, text: str) -> None:
    ds.StudyDescription = text


def _series(ds: Dataset, text: str) -> None:
    ds.SeriesDescription = text


def _comments(ds: Dataset, text: str) -> None:
    ds.ImageComments = text


def _protocol(ds: Dataset, text: str) -> None:
    ds.ProtocolName = text


def _content_description(ds: Dataset, text: str) -> None:
    ds.ContentDescription = text


def _request(ds: Dataset, text: str) -> None:
    ds.RequestAttributesSequence = Sequence(
        [item(ScheduledProcedureStepDescription=text, ScheduledProcedureStepID="SPS1")]
    )


def _code_meaning(ds: Dataset, text: str) -> None:
    ds.AnatomicRegionSequence = Sequence([code("99LOCAL7", "99ACME", text)])


def _text_value(ds: Dataset, text: str) -> None:
    ds.ContentSequence = Sequence(
        [
            item(
                RelationshipType="CONTAINS",
                ValueType="TEXT",
                ConceptNameCodeSequence=Sequence([code("121106", "DCM", "Comment")]),
                TextValue=text,
            )
        ]
    )


def _text_object(ds: Dataset, text: str) -> None:
    ds.GraphicAnnotationSequence = Sequence(
        [
            item(
                GraphicLayer="LAYER1",
                TextObjectSequence=Sequence([item(UnformattedTextValue=text, AnchorPointAnnotationUnits="PIXEL")]),
            )
        ]
    )


def _performed_protocol(ds: Dataset, text: str) -> None:
    ds.PerformedProtocolCodeSequence = Sequence([code("LOCALPROT9", "99ACME", text)])


PLACES: dict[str, Callable[[Dataset, str], None]] = {
    "study": _study,
    "series": _series,
    "comments": _comments,
    "protocol": _protocol,
    "content_description": _content_description,
    "request": _request,
    "code_meaning": _code_meaning,
    "text_value": _text_value,
    "text_object": _text_object,
    "performed_protocol": _performed_protocol,
}
_PLACE_NAMES = list(PLACES)


def _place(index: int) -> str:
    return _PLACE_NAMES[index % len(_PLACE_NAMES)]


def text_case(
    name: str,
    klass: int,
    patient: str,
    text: str,
    planted: tuple[str, ...],
    place: str,
    charset: str | list[str] | None = "ISO_IR 192",
    syntax: str = ExplicitVRLittleEndian,
    tweak: Callable[[Dataset], None] | None = None,
    kept_under: tuple[str, ...] = (),
) -> Case:
    def build() -> list[Sent]:
        ds = base(name=patient, charset=charset)
        PLACES[place](ds, text)
        if tweak is not None:
            tweak(ds)
        return [encode(ds, syntax)]

    return Case(f"{name}@{place}", klass, build, planted, kept_under=kept_under)


# ---------------------------------------------------------------------------------------------
# Class 1: names in free text


_CJK_NAMES: list[tuple[str, str, str | list[str], tuple[str, ...]]] = [
    # (Patient's Name, text mentioning the patient, charset, planted)
    ("陈^伟", "胸部CT陈伟平扫", "ISO_IR 192", ("陈伟", "陈", "伟")),
    ("陈^伟", "陈伟 胸部", "GB18030", ("陈伟", "陈", "伟")),
    ("王^小明", "头颅MRI王小明复查", "ISO_IR 192", ("王小明", "小明", "王")),
    ("王^小明", "小明 王 头颅", "GB18030", ("小明", "王")),
    ("欧阳^娜娜", "欧阳娜娜腹部增强", "ISO_IR 192", ("欧阳娜娜", "欧阳", "娜娜")),
    (
        "山田^太郎=やまだ^たろう",
        "ヤマダタロウ様 胸部",
        "ISO_IR 192",
        ("ヤマダ", "タロウ", "やまだ", "たろう", "山田", "太郎"),
    ),
    ("山田^太郎=やまだ^たろう", "山田太郎 胸部単純", ["", "ISO 2022 IR 87"], ("山田", "太郎", "山田太郎")),
    ("ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎", "山田太郎 CT", "ISO_IR 192", ("山田", "太郎", "ﾔﾏﾀﾞ", "ﾀﾛｳ", "ヤマダ")),
    ("ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎", "ﾔﾏﾀﾞﾀﾛｳ 腹部", "ISO_IR 192", ("ﾔﾏﾀﾞ", "ﾀﾛｳ", "ヤマダ", "タロウ")),
    (
        "YAMAZAKURA^TAROEMON=山桜^太郎衛門=やまざくら^たろうえもん",
        "ＹＡＭＡＺＡＫＵＲＡ　ＴＡＲＯＥＭＯＮ 胸部",
        "ISO_IR 192",
        ("YAMAZAKURA", "TAROEMON"),
    ),
    (
        "YAMAZAKURA^TAROEMON=山桜^太郎衛門=やまざくら^たろうえもん",
        "山桜太郎衛門さん 頭部",
        "ISO_IR 192",
        ("山桜", "太郎衛門"),
    ),
    ("김^민준=金^珉俊", "김민준님 흉부 CT", "ISO_IR 192", ("김민준", "민준", "김")),
    ("김^민준=金^珉俊", "金珉俊 흉부", "ISO_IR 192", ("金珉俊", "珉俊", "金")),
    ("Hong^Gildong=洪^吉童=홍^길동", "홍길동 복부", ["", "ISO 2022 IR 149"], ("홍길동", "길동", "홍")),
    ("Hong^Gildong=洪^吉童=홍^길동", "CT GILDONG HONG", ["", "ISO 2022 IR 149"], ("GILDONG",)),
    ("สมชาย^ใจดี", "ซีทีสมชายใจดี", "ISO_IR 192", ("สมชาย", "ใจดี")),
]

_NORMALISATION: list[tuple[str, str, str | None, tuple[str, ...]]] = [
    ("MÜLLERSTEIN^JÜRGENA", "Thorax Muellerstein Juergena", "ISO_IR 100", ("Muellerstein", "Juergena")),
    ("MUELLERSTEIN^JUERGENA", "Thorax Müllerstein Jürgena", "ISO_IR 100", ("Müllerstein", "Jürgena")),
    ("MÜLLERSTEIN^JÜRGENA", "THORAX MULLERSTEIN JURGENA", "ISO_IR 100", ("MULLERSTEIN", "JURGENA")),
    ("Zoëlle^Brontëssa", unicodedata.normalize("NFD", "Zoëlle Brontëssa knee"), "ISO_IR 192", ("Zoëlle", "Brontëssa")),
    (unicodedata.normalize("NFD", "Zoëlle^Brontëssa"), "Zoëlle Brontëssa knee", "ISO_IR 192", ("Zoëlle", "Brontëssa")),
    ("Zoëlle^Brontëssa", "ZOELLE BRONTESSA KNEE", "ISO_IR 100", ("ZOELLE", "BRONTESSA")),
    ("ΠΑΠΑΔΟΠΟΥΛΟΣ^ΓΙΏΡΓΟΣ", "Παπαδόπουλος Γιώργος θώρακας", "ISO_IR 126", ("Παπαδόπουλος", "Γιώργος")),
    ("Παπαδόπουλος^Γιώργος", "ΠΑΠΑΔΟΠΟΥΛΟΣ ΓΙΩΡΓΟΣ θώρακας", "ISO_IR 126", ("ΠΑΠΑΔΟΠΟΥΛΟΣ", "ΓΙΩΡΓΟΣ")),
    ("Семёнов^Пётр", "Семенов Петр грудная клетка", "ISO_IR 144", ("Семенов", "Петр")),
    ("Семенов^Петр", "СЕМЁНОВ ПЁТР КТ", "ISO_IR 144", ("СЕМЁНОВ", "ПЁТР")),
    ("Yıldırım^Işıkçı", "YILDIRIM ISIKCI toraks", "ISO_IR 148", ("YILDIRIM", "ISIKCI")),
    ("YILDIRIM^IŞIKÇI", "yıldırım ışıkçı toraks", "ISO_IR 148", ("yıldırım", "ışıkçı")),
    ("Øyvindsen^Åsmunda", "Oyvindsen Asmunda kne", "ISO_IR 100", ("Oyvindsen", "Asmunda")),
    ("Nguyễn^Thị Phượng", "Nguyen Thi Phuong nguc", "ISO_IR 192", ("Nguyen", "Phuong")),
]

_GLUED: list[tuple[str, str, tuple[str, ...]]] = [
    ("QUAREMBY^ODALYS^PRUDENCE", "OdalysQuaremby_axial", ("OdalysQuaremby", "Quaremby", "Odalys")),
    ("QUAREMBY^ODALYS^PRUDENCE", "QUAREMBYO thorax", ("QUAREMBYO", "QUAREMBY")),
    ("QUAREMBY^ODALYS^PRUDENCE", "seen by O. Quaremby today", ("O. Quaremby", "Quaremby")),
    ("QUAREMBY^ODALYS^PRUDENCE", "Quaremby, Odalys P follow-up", ("Quaremby, Odalys P", "Quaremby", "Odalys")),
    ("QUAREMBY^ODALYS^PRUDENCE", "CT_quaremby_odalys_1", ("quaremby", "odalys")),
    ("QUAREMBY^ODALYS^PRUDENCE", "OQuaremby chest", ("OQuaremby", "Quaremby")),
    ("QUAREMBY^ODALYS^PRUDENCE", "quarembyodalysprudence", ("quaremby", "odalys", "prudence")),
    ("QUAREMBY^ODALYS^PRUDENCE", "Q.O.P. ODALYS-QUAREMBY", ("ODALYS", "QUAREMBY")),
    ("LI^NA", "CT LI NA chest", ("LI NA",)),
    ("LI^NA", "LiNa_head", ("LiNa",)),
    ("NG^BO", "ct ng bo abdo", ("ng bo",)),
]

_TITLED: list[tuple[str, tuple[str, ...]]] = [
    ("read by Dr. Oyelaran-Whitcombe", ("Oyelaran", "Whitcombe")),
    ("wife Philippa Castellanos called", ("Philippa", "Castellanos")),
    ("per Thibodeaux: repeat", ("Thibodeaux",)),
    ("Dr Vasquez-Ibarrola requested", ("Vasquez", "Ibarrola")),
    ("husband: Bartholomew Iwuchukwu", ("Bartholomew", "Iwuchukwu")),
    ("signed Haverbrook MD", ("Haverbrook",)),
    ("Prof. Szczepaniak ordered", ("Szczepaniak",)),
    ("Mrs Featherstonhaugh aware", ("Featherstonhaugh",)),
    ("referred by Dr.Quintanilla", ("Quintanilla",)),
    ("Herr Doktor Brückenthal", ("Brückenthal",)),
    ("daughter Marisol present", ("Marisol",)),
    ("陈医生 复查", ("陈医生",)),
    ("佐藤先生 確認", ("佐藤",)),
    ("박지성님 확인", ("박지성",)),
    ("attn: Okonjo-Iweala", ("Okonjo", "Iweala")),
]


def _class1() -> Iterator[Case]:
    index = 0
    for number, (patient, text, charset, planted) in enumerate(_CJK_NAMES):
        yield text_case(f"cjk{number}", 1, patient, text, planted, _place(index), charset)
        index += 1
    for number, (patient, text, charset, planted) in enumerate(_NORMALISATION):
        yield text_case(f"fold{number}", 1, patient, text, planted, _place(index), charset)
        index += 1
    for number, (patient, text, planted) in enumerate(_GLUED):
        yield text_case(f"glued{number}", 1, patient, text, planted, _place(index))
        index += 1
    for number, (text, planted) in enumerate(_TITLED):
        yield text_case(f"titled{number}", 1, "QUAREMBY^ODALYS", text, planted, _place(index))
        index += 1
    # Patient's Name with the wrong VR, in implicit VR data, in undeclared UTF-8.
    for place in ("study", "comments", "text_value"):
        yield text_case(
            "wrong_vr",
            1,
            "QUAREMBY^ODALYS",
            "CT for Odalys Quaremby",
            ("Odalys", "Quaremby"),
            place,
            tweak=lambda ds: ds.add_new(0x00100010, "LO", "Quaremby^Odalys"),
        )
        yield text_case(
            "implicit",
            1,
            "QUAREMBY^ODALYS",
            "chest Quaremby Odalys",
            ("Odalys", "Quaremby"),
            place,
            syntax=ImplicitVRLittleEndian,
        )
        yield Case(f"undeclared_utf8@{place}", 1, _undeclared_utf8(place), ("Müllerbach", "Jürgenine", "陈伟"))
    yield Case("implicit_nested_pn", 1, _implicit_nested_pn, ("Oyelowo", "Adaeze"))


def _undeclared_utf8(place: str) -> Callable[[], list[Sent]]:
    """No Specific Character Set, UTF-8 bytes (placeholders swapped in after encoding)."""

    def build() -> list[Sent]:
        ds = base(name="#1ZZZZZZZZZZZZ^#2ZZZZZZZZZ", charset=None)
        PLACES[place](ds, "Thorax #3ZZZZZZZZZZZZ #4ZZZZZZZZZ #5ZZZZ")
        sent = encode(ds)
        body = sent.body
        for placeholder, real in (
            ("#1ZZZZZZZZZZZZ", "MÜLLERBACH"),
            ("#2ZZZZZZZZZ", "JÜRGENINE"),
            ("#3ZZZZZZZZZZZZ", "Müllerbach"),
            ("#4ZZZZZZZZZ", "Jürgenine"),
            ("#5ZZZZ", "陈伟"),
        ):
            encoded = real.encode("utf-8")
            encoded += b" " * (len(placeholder) - len(encoded))
            assert len(encoded) == len(placeholder)
            body = body.replace(placeholder.encode(), encoded)
        return [Sent(body, sent.transfer_syntax)]

    return build


def _implicit_nested_pn() -> list[Sent]:
    ds = base(name="OYELOWO^ADAEZE")
    ds.ReferencedStudySequence = Sequence(
        [
            item(
                ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",
                ReferencedSOPInstanceUID="1.2.826.0.1.3680043.9.7141.77",
            )
        ]
    )
    ds.RequestAttributesSequence = Sequence([item(ScheduledProcedureStepDescription="ADAEZE OYELOWO knee")])
    ds.ImageComments = "Oyelowo, Adaeze"
    return [encode(ds, ImplicitVRLittleEndian)]


# ---------------------------------------------------------------------------------------------
# Class 2: dates and ages

DATES = [
    "11-MAR-1956",
    "March 11th, 1956",
    "11.III.1956",
    "1956年3月11日",
    "11/03/56",
    "56-03-11",
    "11 March 1956",
    "Mar 11 1956",
    "11. März 1956",
    "11 mars 1956",
    "11 de marzo de 1956",
    "11 marzo 1956",
    "1956-03-11",
    "3/11/1956",
    "11th of March, 1956",
    "1956년 3월 11일",
    "11-Mar-56",
    "19560311",
    "11.03.1956",
    "11 мая 1956",
    "MAR 11, 1956",
    "11032026",
]
AGES = [
    "092Y",
    "92 year old",
    "92yo",
    "92-year-old",
    "aged 92",
    "92 y/o",
    "92 Jahre alt",
    "92 ans",
    "92歳",
    "92 years",
    "age: 92",
    "101 yr old",
]


def _class2() -> Iterator[Case]:
    index = 3
    for number, written in enumerate(DATES):
        text = f"DOB {written} chest CT"
        yield text_case(f"date{number}", 2, "QUAREMBY^ODALYS", text, (written,), _place(index))
        index += 1
    for number, written in enumerate(AGES):
        text = f"CT chest {written} female"
        yield text_case(f"age{number}", 2, "QUAREMBY^ODALYS", text, (written,), _place(index))
        index += 1

    def age_element(ds: Dataset) -> None:
        ds.PatientAge = "092Y"

    yield text_case("age_element", 2, "QUAREMBY^ODALYS", "CT 092Y", ("092Y",), "study", tweak=age_element)


# ---------------------------------------------------------------------------------------------
# Class 3: identifiers


def _identifiers(ds: Dataset) -> None:
    ds.AdmissionID = "ADM55123Q"
    ds.RequestAttributesSequence = Sequence(
        [
            item(
                RequestedProcedureID="RP7781234",
                ScheduledProcedureStepID="SPS88213",
                PlacerOrderNumberImagingServiceRequest="PLC2024-88123",
                FillerOrderNumberImagingServiceRequest="FIL-00917723",
            )
        ]
    )
    ds.PlacerOrderNumberImagingServiceRequest = "PLC2024-88123"
    ds.FillerOrderNumberImagingServiceRequest = "FIL-00917723"
    ds.SpecimenDescriptionSequence = Sequence(
        [
            item(
                SpecimenIdentifier="SPEC-4471-B",
                SpecimenUID="1.2.826.0.1.3680043.9.7141.55",
                SpecimenShortDescription="biopsy",
            )
        ]
    )
    ds.ContainerIdentifier = "CNT99173"
    ds.IssuerOfPatientID = "HOSPQX"


_ID_TEXTS = [
    ("order PLC2024-88123", ("PLC2024-88123", "88123")),
    ("filler FIL-00917723", ("FIL-00917723", "00917723")),
    ("req RP7781234 chest", ("RP7781234",)),
    ("specimen SPEC-4471-B", ("SPEC-4471-B",)),
    ("container CNT99173", ("CNT99173",)),
    ("admission ADM55123Q", ("ADM55123Q",)),
    ("lab ref XK99812 noted", ("XK99812",)),
    ("ward 7 bed ref AB12345CD", ("AB12345CD",)),
    ("accession ACC99172635", ("ACC99172635",)),
    ("mrn: MRN7740012", ("MRN7740012", "7740012")),
    ("step SPS88213", ("SPS88213",)),
    ("RP7781234/SPS88213", ("RP7781234", "SPS88213")),
]


def _class3() -> Iterator[Case]:
    for number, (text, planted) in enumerate(_ID_TEXTS):
        yield text_case(f"ident{number}", 3, "QUAREMBY^ODALYS", text, planted, _place(number + 5), tweak=_identifiers)

    def everywhere() -> list[Sent]:
        ds = base()
        _identifiers(ds)
        return [encode(ds)]

    yield Case(
        "ident_elements_only",
        3,
        everywhere,
        ("PLC2024-88123", "FIL-00917723", "RP7781234", "SPEC-4471-B", "CNT99173", "ADM55123Q", "HOSPQX"),
    )


# ---------------------------------------------------------------------------------------------
# Class 4: Basic Profile text that is cleaned instead of removed


def _class4() -> Iterator[Case]:
    # Names the header does not know, in attributes every profile used to clean.
    unknown = ("Okafor-Lindqvist", "Thaddeus")
    text = "reviewed by Thaddeus Okafor-Lindqvist"
    for place in ("content_description", "code_meaning", "text_value", "text_object", "performed_protocol", "request"):
        yield text_case("unknown_name", 4, "QUAREMBY^ODALYS", text, unknown, place)

    def known_code(ds: Dataset) -> None:
        ds.AnatomicRegionSequence = Sequence([code("51185008", "SCT", "Chest of Thaddeus Okafor-Lindqvist")])
        ds.ProcedureCodeSequence = Sequence([code("113091", "DCM", "Okafor-Lindqvist request")])
        ds.ConceptNameCodeSequence = Sequence([code("121071", "DCM", "Finding Okafor-Lindqvist")])

    yield text_case("known_code", 4, "QUAREMBY^ODALYS", "x", unknown, "study", tweak=known_code)

    def labels(ds: Dataset) -> None:
        ds.ContentLabel = "OKAFOR"
        ds.WindowCenterWidthExplanation = "Okafor-Lindqvist window"
        ds.LUTExplanation = "Thaddeus LUT"
        ds.SegmentLabel = "Okafor-Lindqvist lesion"
        ds.ROIObservationLabel = "Thaddeus"
        ds.ConvolutionKernel = "Okafor-Lindqvist"
        ds.SequenceName = "Thaddeus"
        ds.GraphicLayerSequence = Sequence([item(GraphicLayer="OKAFOR", GraphicLayerOrder=1)])

    # Unknown names without a title: only the Basic Profile (descriptor words only) can remove
    # them; the Clean options clean text by what is known (see README "Free text").
    research = ("research", "research+private", "research+uids")
    yield text_case(
        "labels", 4, "QUAREMBY^ODALYS", "x", ("Okafor", "Thaddeus"), "study", tweak=labels, kept_under=research
    )

    def labels_known(ds: Dataset) -> None:
        ds.ContentLabel = "QUAREMBY"
        ds.WindowCenterWidthExplanation = "Quaremby window"
        ds.LUTExplanation = "Odalys LUT"
        ds.SegmentLabel = "Quaremby lesion"
        ds.ROIObservationLabel = "Odalys"
        ds.ConvolutionKernel = "QUAREMBY"
        ds.SequenceName = "Odalys"
        ds.GraphicLayerSequence = Sequence([item(GraphicLayer="QUAREMBY", GraphicLayerOrder=1)])

    yield text_case("labels_known", 4, "QUAREMBY^ODALYS", "x", ("Quaremby", "Odalys"), "study", tweak=labels_known)

    def dated(ds: Dataset) -> None:
        ds.ContentDescription = "scanned 11-MAR-2021 at home of Okafor"
        ds.AnatomicRegionSequence = Sequence([code("LOCAL1", "99X", "done 2021年3月11日")])

    yield text_case(
        "dated",
        4,
        "QUAREMBY^ODALYS",
        "x",
        ("11-MAR-2021", "2021年3月11日", "Okafor"),
        "study",
        tweak=dated,
        kept_under=research,
    )
    yield text_case("dated_only", 4, "QUAREMBY^ODALYS", "x", ("11-MAR-2021", "2021年3月11日"), "study", tweak=dated)
    for place in ("content_description", "code_meaning", "text_object", "performed_protocol"):
        yield text_case("patient_name", 4, "QUAREMBY^ODALYS", "Quaremby exam 92yo", ("Quaremby", "92yo"), place)
        yield text_case(
            "phone_mail",
            4,
            "QUAREMBY^ODALYS",
            "call +44 20 7946 0958 o.q@example.org",
            ("7946", "o.q@example.org"),
            place,
        )


# ---------------------------------------------------------------------------------------------
# Class 5: verify bypasses (values the cleaning stages miss must still never leave)


def _class5() -> Iterator[Case]:
    def kept_cs(ds: Dataset) -> None:
        ds.add_new(0x00089205, "CS", "QUAREMBY")  # Pixel Presentation: an unlisted, kept CS

    yield text_case("kept_cs", 5, "QUAREMBY^ODALYS", "x", ("QUAREMBY",), "study", tweak=kept_cs)

    def code_value(ds: Dataset) -> None:
        ds.AnatomicRegionSequence = Sequence([code("QUAREMBY", "99ACME", "QUAREMBY")])

    yield text_case("code_value", 5, "QUAREMBY^ODALYS", "x", ("QUAREMBY",), "study", tweak=code_value)

    def generated_lookalike(ds: Dataset) -> None:
        ds.PatientName = "ANON^ODALYS"
        ds.StudyDescription = "ANONYMIZED Odalys"

    yield text_case("generated_lookalike", 5, "ANON^ODALYS", "x", ("Odalys",), "series", tweak=generated_lookalike)
    for syntax, label in ((DeflatedExplicitVRLittleEndian, "deflated"), (ImplicitVRLittleEndian, "implicit")):
        for place in ("study", "content_description", "text_value"):
            yield text_case(
                f"{label}_glued",
                5,
                "QUAREMBY^ODALYS",
                "OdalysQuaremby_axial",
                ("OdalysQuaremby", "Quaremby"),
                place,
                syntax=syntax,
            )

    def dicom_root_uids(ds: Dataset) -> None:
        ds.SeriesInstanceUID = "1.2.840.10008.999.20210314.101500"
        ds.FrameOfReferenceUID = "1.2.840.10008.999.19560311.7740012"

    yield text_case(
        "dicom_root_uid",
        5,
        "QUAREMBY^ODALYS",
        "x",
        ("1.2.840.10008.999.20210314.101500", "1.2.840.10008.999.19560311.7740012"),
        "study",
        tweak=dicom_root_uids,
        kept_under=("research+uids",),
    )

    def uid_in_text(ds: Dataset) -> None:
        ds.ImageComments = "prior 1.2.826.0.1.3680043.9.7141.99"

    yield text_case(
        "uid_in_text", 5, "QUAREMBY^ODALYS", "x", ("1.2.826.0.1.3680043.9.7141.99",), "study", tweak=uid_in_text
    )
    for number, (patient, text, planted) in enumerate(
        [
            ("LI^NA", "CT LI NA", ("LI NA",)),
            ("陈^伟", "陈伟", ("陈伟",)),
            ("WU^JO", "WU JO head", ("WU JO",)),
            ("O^YE", "YE O", ("YE O",)),
        ]
    ):
        for place in ("content_description", "code_meaning", "text_object"):
            yield text_case(f"short{number}", 5, patient, text, planted, place)

    def private_text(ds: Dataset) -> None:
        block = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
        block.add_new(0x02, "LO", "Quaremby Odalys 19560311")

    yield text_case(
        "safe_private_text", 5, "QUAREMBY^ODALYS", "x", ("Quaremby", "Odalys", "19560311"), "study", tweak=private_text
    )

    def nested_deep(ds: Dataset) -> None:
        inner = item(TextValue="Odalys Quaremby", RelationshipType="CONTAINS", ValueType="TEXT")
        middle = item(ContentSequence=Sequence([inner]), RelationshipType="CONTAINS", ValueType="CONTAINER")
        ds.ContentSequence = Sequence(
            [item(ContentSequence=Sequence([middle]), RelationshipType="CONTAINS", ValueType="CONTAINER")]
        )

    yield text_case("nested_deep", 5, "QUAREMBY^ODALYS", "x", ("Odalys", "Quaremby"), "study", tweak=nested_deep)


# ---------------------------------------------------------------------------------------------
# Class 7: pseudonyms


def _outputs_differ(outputs: list[bytes]) -> str:
    from tests.dicomfactory import read

    first, second = (read(o) for o in outputs)
    same_id = first.get("PatientID") is not None and first.get("PatientID") == second.get("PatientID")
    if same_id or first.get("PatientName") == second.get("PatientName"):
        return "two patients without a Patient ID share one pseudonym"
    return ""


def _outputs_same(outputs: list[bytes]) -> str:
    from tests.dicomfactory import read

    first, second = (read(o) for o in outputs)
    both_ids = first.get("PatientID") is not None and second.get("PatientID") is not None
    if (both_ids and first.PatientID != second.PatientID) or first.get("PatientName") != second.get("PatientName"):
        return "one patient got two pseudonyms"
    if first.get("StudyDate") != second.get("StudyDate"):
        return "one patient got two date offsets"
    return ""


def _pair(first: dict[str, object], second: dict[str, object]) -> Callable[[], list[Sent]]:
    def build() -> list[Sent]:
        sent = []
        for number, fields in enumerate((first, second)):
            ds = base(uid_root=f"1.2.826.0.1.3680043.9.7142.{number + 1}", **fields)  # type: ignore[arg-type]
            sent.append(encode(ds))
        return sent

    return build


def _class7() -> Iterator[Case]:
    differ = [
        ({"name": "QUAREMBY^ODALYS", "patient_id": None}, {"name": "VANTERPOOL^ALOYSIA", "patient_id": None}),
        ({"name": "QUAREMBY^ODALYS", "patient_id": ""}, {"name": "VANTERPOOL^ALOYSIA", "patient_id": ""}),
        (
            {"name": "QUAREMBY^ODALYS", "patient_id": None},
            {"name": "QUAREMBY^ODALYS", "patient_id": None, "birth_date": "19610101"},
        ),
        ({"name": "QUAREMBY^ODALYS", "patient_id": None}, {"name": "QUAREMBY^ODALYS", "patient_id": None, "sex": "M"}),
        ({"name": "陈^伟", "patient_id": None}, {"name": "王^小明", "patient_id": None}),
    ]
    for number, (first, second) in enumerate(differ):
        planted = tuple(str(f["name"]).split("^")[0] for f in (first, second))
        yield Case(f"pseudonym_differ{number}", 7, _pair(first, second), planted, _outputs_differ)
    same = [
        ({"name": "QUAREMBY^ODALYS", "patient_id": None}, {"name": "Quaremby^Odalys", "patient_id": None}),
        ({"name": "QUAREMBY^ODALYS", "patient_id": "MRN1"}, {"name": "QUAREMBY^ODALYS", "patient_id": "MRN1"}),
        ({"name": "QUAREMBY^ODALYS", "patient_id": None}, {"name": "QUAREMBY^ODALYS ", "patient_id": "  "}),
    ]
    for number, (first, second) in enumerate(same):
        yield Case(f"pseudonym_same{number}", 7, _pair(first, second), ("QUAREMBY",), _outputs_same)


# ---------------------------------------------------------------------------------------------
# Class 8: over-refusals


def _class8() -> Iterator[Case]:
    for padding in (1, 2, 7, 8, 64):

        def padded(padding: int = padding) -> list[Sent]:
            sent = encode(base())
            return [Sent(sent.body + bytes(padding), sent.transfer_syntax)]

        yield Case(f"nul_padding{padding}", 8, padded, ("QUAREMBY", "MRN7740012"))

    def implicit_padded() -> list[Sent]:
        sent = encode(base(), ImplicitVRLittleEndian)
        return [Sent(sent.body + bytes(10), sent.transfer_syntax)]

    yield Case("nul_padding_implicit", 8, implicit_padded, ("QUAREMBY",))
    for number, (keyword, placeholder, written) in enumerate(
        (
            ("SliceThickness", "7.77", "2,5 "),
            ("PixelSpacing", "8.88\\8.88", "0,5\\0,5  "),
            ("RescaleIntercept", "-6666.6", "-1024,0"),
        )
    ):

        def comma(keyword: str = keyword, placeholder: str = placeholder, written: str = written) -> list[Sent]:
            ds = base()
            setattr(ds, keyword, placeholder.split("\\"))
            sent = encode(ds)
            # Swap in the decimal comma after encoding (pydicom would not write it).
            assert len(placeholder) == len(written) and placeholder.encode() in sent.body
            return [Sent(sent.body.replace(placeholder.encode(), written.encode()), sent.transfer_syntax)]

        yield Case(f"decimal_comma{number}", 8, comma, ("QUAREMBY",))

    for number, uid in enumerate(
        ("1.2.840.0113619.2.55.3.604688119", "1.3.12.2.1107.5.1.4.01.2021", "1.2.392.200036.09116.2")
    ):

        def legacy(uid: str = uid) -> list[Sent]:
            sent = encode(base(uid_root="1.2.826.0.1.3680043.9.7141"))
            body = sent.body
            for suffix in (b".1", b".2", b".3"):
                original = b"1.2.826.0.1.3680043.9.7141" + suffix
                new = (uid + suffix.decode()).encode()
                new += b"\x00" * (len(new) % 2)
                old = original + b"\x00" * (len(original) % 2)
                body = body.replace(
                    b"UI" + len(old).to_bytes(2, "little") + old, b"UI" + len(new).to_bytes(2, "little") + new
                )
            return [Sent(body, sent.transfer_syntax)]

        yield Case(f"legacy_uid{number}", 8, legacy, ("QUAREMBY",))


def corpus() -> list[Case]:
    cases = [*_class1(), *_class2(), *_class3(), *_class4(), *_class5(), *_class7(), *_class8()]
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


# Alphabets for property tests: random names in random scripts.
SCRIPTS = {
    "latin": "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÜÉÈÑ",
    "cjk": "".join(chr(c) for c in range(0x4E00, 0x4E00 + 300)),
    "hangul": "".join(chr(c) for c in range(0xAC00, 0xAC00 + 300)),
    "katakana": "".join(chr(c) for c in range(0x30A1, 0x30F6)),
    "cyrillic": "АБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЭЮЯ",
    "greek": "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩΆΈΉΊΌΎΏ",
}
SCRIPT_SIZES = {
    "latin": (5, 9),
    "cjk": (1, 3),
    "hangul": (1, 3),
    "katakana": (2, 5),
    "cyrillic": (5, 9),
    "greek": (5, 9),
}


# ---------------------------------------------------------------------------------------------
# Searching the output


_DECODINGS = (
    "utf-8",
    "latin-1",
    "iso2022_jp_ext",
    "iso2022_jp_2",
    "iso2022_kr",
    "euc_kr",
    "gb18030",
    "shift_jis",
    "iso8859_5",
    "iso8859_7",
    "iso8859_9",
    "cp1252",
    "utf-16-le",
    "utf-16-be",
    "tis_620",
)


def fold(text: str) -> str:
    """NFKC, case folding and accent removal (the test's own, not the engine's)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", text.replace("ı", "i"))


def haystacks(output: bytes) -> list[str]:
    """The output bytes decoded every way a reader might decode them, then folded."""
    result = []
    for codec in _DECODINGS:
        for start in (0, 1) if codec.startswith("utf-16") else (0,):
            result.append(fold(output[start:].decode(codec, errors="ignore")))
    return result


def decoded_strings(output: bytes) -> str:
    """Every string value of the output (nested items too), as pydicom decodes it, folded."""
    from pydicom.dataset import Dataset as _Dataset

    from tests.dicomfactory import read

    values: list[str] = []

    def walk(ds: _Dataset) -> None:
        for element in ds:
            if element.VR == "SQ":
                for child in element.value:
                    walk(child)
            elif element.tag != 0x7FE00010:
                values.append(str(element.value))

    walk(read(output))
    return fold("\n".join(values))


def survivors(output: bytes, planted: tuple[str, ...]) -> list[str]:
    """Planted values found in `output` (empty when none survived)."""
    import re

    found = []
    texts = haystacks(output)
    strings = decoded_strings(output)
    for value in planted:
        needle = fold(value)
        if len(needle) == 1:
            # One ideograph: looked for in the decoded values only (raw binary decoded as a
            # multi-byte charset would produce any single character by chance).
            if needle in strings:
                found.append(value)
            continue
        if (len(needle) <= 3 or " " in needle) and needle.isascii():
            pattern = re.compile(r"(?<![^\W_])" + re.escape(needle) + r"(?![^\W_])")
            if any(pattern.search(text) for text in [*texts, strings]):
                found.append(value)
            continue
        if any(needle in text for text in texts) or needle in strings:
            found.append(value)
    return found


def outcome(case: Case, engine: object, option_set: str = "") -> str:
    """ "ok", or what went wrong: "leak: ...", "refused: ...", "check: ..."."""
    from dicom_proxy.deidentify import Engine
    from dicom_proxy.models import ReceivedObject, Refused

    assert isinstance(engine, Engine)
    outputs = []
    for sent in case.build():
        received = ReceivedObject(sent.body, sent.transfer_syntax, sent.sop_class_uid, "AUDIT")
        try:
            outputs.append(engine.deidentify_received(received).encoded)
        except Refused as refused:
            return f"refused: {refused.reason}"
    planted = () if option_set in case.kept_under else case.planted
    leaked = sorted({value for output in outputs for value in survivors(output, planted)})
    if leaked:
        return f"leak: {leaked}"
    problem = case.check(outputs) if case.check is not None else ""
    return f"check: {problem}" if problem else "ok"


def main() -> None:
    """Print per class: cases, and how many leaked / were refused in any option set."""
    from collections import Counter

    from tests.dicomfactory import engine

    engines = {name: engine(*options) for name, options in OPTION_SETS.items()}
    cases = corpus()
    totals: Counter[int] = Counter()
    failed: dict[str, Counter[int]] = {"leak": Counter(), "refused": Counter(), "check": Counter()}
    for case in cases:
        totals[case.klass] += 1
        kinds = set()
        for name, running in engines.items():
            result = outcome(case, running, name)
            if result != "ok":
                kinds.add(result.split(":")[0])
                print(f"{case.name:<40} {name:<18} {result[:150]}")
        for kind in kinds:
            failed[kind][case.klass] += 1
    print(f"{'class':<6} {'cases':>5} {'leaked':>7} {'refused':>8} {'check':>6}")
    for klass in sorted(totals):
        print(
            f"{klass:<6} {totals[klass]:>5} {failed['leak'][klass]:>7} {failed['refused'][klass]:>8} "
            f"{failed['check'][klass]:>6}"
        )
    print(
        f"{'all':<6} {sum(totals.values()):>5} {sum(failed['leak'].values()):>7} "
        f"{sum(failed['refused'].values()):>8} {sum(failed['check'].values()):>6}"
    )


if __name__ == "__main__":
    main()
