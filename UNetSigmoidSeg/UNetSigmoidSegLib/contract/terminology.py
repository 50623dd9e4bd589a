"""Segment names, colours and terminology: one table for the Slicer module and the command line's ``.seg.nrrd``.

Codes, meanings and colours are those of Slicer's "3D Slicer General Anatomy list"
(``Modules/Loadable/Terminologies/Resources/SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.json``, the same
file in Slicer 5.8, 5.10 and main): category *Anatomical Structure*, the type's SNOMED CT code and meaning as written
there, the Left/Right modifier where the list has one (kidney, lung, adrenal gland) and its recommended display
colour. Other names keep the *Tissue* entry that every Slicer segment has by default, and a distinct colour from
``PALETTE``. A terminology entry is written as Slicer's ``vtkSlicerTerminologiesModuleLogic`` serialises it (seven
``~`` parts). numpy-free.
"""

from typing import Dict, List, Optional, Sequence, Tuple

CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
CATEGORY = ("SCT", "123037004", "Anatomical Structure")
TISSUE = ("SCT", "85756007", "Tissue")  # vtkSegment's default category and type
LEFT = ("SCT", "7771000", "Left")
RIGHT = ("SCT", "24028007", "Right")

# name → (SNOMED CT code, meaning in Slicer's list, laterality modifier or None, recommended colour 0..255)
Term = Tuple[str, str, Optional[Tuple[str, str, str]], Tuple[int, int, int]]
TERMS: Dict[str, Term] = {
    "brain": ("12738006", "Brain", None, (250, 250, 225)),
    "liver": ("10200004", "Liver", None, (221, 130, 101)),
    "spleen": ("78961009", "Spleen", None, (157, 108, 162)),
    "kidney": ("64033007", "Kidney", None, (185, 102, 83)),
    "kidney_left": ("64033007", "Kidney", LEFT, (185, 102, 83)),
    "left_kidney": ("64033007", "Kidney", LEFT, (185, 102, 83)),
    "kidney_right": ("64033007", "Kidney", RIGHT, (185, 102, 83)),
    "right_kidney": ("64033007", "Kidney", RIGHT, (185, 102, 83)),
    "aorta": ("15825003", "Aorta", None, (224, 97, 76)),
    "heart": ("80891009", "Heart", None, (206, 110, 84)),
    "lung": ("39607008", "Lung", None, (197, 165, 145)),
    "lung_left": ("39607008", "Lung", LEFT, (197, 165, 145)),
    "left_lung": ("39607008", "Lung", LEFT, (197, 165, 145)),
    "lung_right": ("39607008", "Lung", RIGHT, (197, 165, 145)),
    "right_lung": ("39607008", "Lung", RIGHT, (197, 165, 145)),
    "adrenal_gland_left": ("23451007", "Adrenal gland", LEFT, (249, 186, 150)),
    "adrenal_gland_right": ("23451007", "Adrenal gland", RIGHT, (249, 186, 150)),
    "stomach": ("69695003", "Stomach", None, (216, 132, 105)),
    "pancreas": ("15776009", "Pancreas", None, (249, 180, 111)),
    "prostate": ("41216001", "Prostate", None, (230, 158, 140)),
    "urinary_bladder": ("89837001", "Bladder", None, (222, 154, 132)),
    "bladder": ("89837001", "Bladder", None, (222, 154, 132)),
    "gallbladder": ("28231008", "Gallbladder", None, (139, 150, 98)),
    "esophagus": ("32849002", "Esophagus", None, (211, 171, 143)),
    "duodenum": ("38848004", "Duodenum", None, (255, 253, 229)),
    "small_bowel": ("30315005", "Small Intestine", None, (205, 167, 142)),
    "colon": ("71854001", "Colon", None, (204, 168, 143)),
}

# Distinct colours for segments the table does not know (RGB 0..1).
PALETTE = [
    (0.90, 0.35, 0.25),
    (0.30, 0.70, 0.35),
    (0.25, 0.50, 0.90),
    (0.95, 0.80, 0.20),
    (0.70, 0.35, 0.80),
    (0.20, 0.80, 0.80),
    (0.95, 0.55, 0.15),
    (0.55, 0.75, 0.25),
    (0.85, 0.45, 0.65),
    (0.45, 0.45, 0.85),
]


def lookup(name: str) -> Optional[Term]:
    """The table's entry for a segment name (case, spaces and hyphens ignored), else None."""
    return TERMS.get(str(name).strip().lower().replace(" ", "_").replace("-", "_"))


def terminology_entry(name: str) -> Dict[str, object]:
    """The terminology of a segment as slicerio writes it (``contextName``, ``category``, ``type``, …): the table's
    entry for a known name, else the *Tissue* entry every ``vtkSegment`` carries by default (what Slicer saves)."""
    term = lookup(name)
    if term is None:
        return {
            "contextName": CONTEXT,
            "category": list(TISSUE),
            "type": list(TISSUE),
            "anatomicContextName": ANATOMIC_CONTEXT,
        }
    entry: Dict[str, object] = {
        "contextName": CONTEXT,
        "category": list(CATEGORY),
        "type": ["SCT", term[0], term[1]],
        "anatomicContextName": ANATOMIC_CONTEXT,
    }
    if term[2] is not None:
        entry["typeModifier"] = list(term[2])
    return entry


def terminology_string(name: str) -> Optional[str]:
    """Slicer's terminology entry string (the segment's ``TerminologyEntry`` tag) for a known name, else None."""
    term = lookup(name)
    if term is None:
        return None
    modifier = "^".join(term[2]) if term[2] is not None else "^^"
    category = "^".join(CATEGORY)
    return f"{CONTEXT}~{category}~SCT^{term[0]}^{term[1]}~{modifier}~{ANATOMIC_CONTEXT}~^^~^^"


def segment_colors(labels: Sequence[str]) -> List[Tuple[float, float, float]]:
    """One colour per segment (RGB 0..1): Slicer's recommended colour for a known name, else the palette's next."""
    colors = []
    for i, label in enumerate(labels):
        term = lookup(label)
        rgb = tuple(round(c / 255.0, 6) for c in term[3]) if term is not None else PALETTE[i % len(PALETTE)]
        colors.append((float(rgb[0]), float(rgb[1]), float(rgb[2])))
    return colors
