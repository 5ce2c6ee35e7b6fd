"""Which images are chest X-rays: rules over Modality, Body Part Examined and View Position.

A PACS routes whatever it is told to, so the SOP class alone says too little: a Secondary
Capture can wrap a nuclear-medicine image, a CR can be a hand. Every intake path (an HTTP
upload, a DICOM association) calls `check_eligibility` with the facts it read, before a job
exists; an ineligible image is `422 not_chest_xray` over HTTP, and is never scored (the DICOM
receiver answers it with success and records why: backend/dicomnet/unscored.py).

The defaults come from settings (CXRQ_ELIGIBLE_*, docs/operations.md); a client's
`eligibility` overrides any of them (docs/intake.md#which-images-are-chest-x-rays).
PNG and JPEG carry no DICOM attributes: their facts are all absent, which the defaults
accept, unless a client's rules require them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from backend.jobs import errors

FACTS = ("modality", "body_part", "view")
_ATTRIBUTE = {"modality": "Modality", "body_part": "BodyPartExamined", "view": "ViewPosition"}
RULE_KEYS = (
    "modalities",
    "capture_modalities",
    "capture_requires_body_part",
    "body_parts",
    "views",
    "require",
)

# A Code String (PS3.5 6.2): upper-case letters, digits, space, underscore; 16 characters at most.
_CODE_STRING = re.compile(r"^[A-Z0-9 _]{1,16}$")

# PS3.16 Annex L gives CHEST and THORAX the same anatomic region (SCT 43799004): one body part.
BODY_PART_SYNONYMS = {"THORAX": "CHEST"}

# Defined terms a refusal may quote back. Anything else is answered as "other": a value
# outside these lists can be free text (a name typed into View Position).
KNOWN_MODALITIES = frozenset(
    "AR BDUS BI BMD CR CT DG DOC DR DX ECG ES GM HC IO IVOCT IVUS KO MG MR NM OCT OP OPT OT PR PT "  # noqa: SIM905
    "PX RF RG RTIMAGE SC SEG SM SR TG US XA XC".split()
)
KNOWN_BODY_PARTS = frozenset(
    "ABDOMEN ANKLE ARM BREAST CHEST CHESTABDOMEN CHESTABDPELVIS CLAVICLE CSPINE ELBOW EXTREMITY "  # noqa: SIM905
    "FINGER FOOT FOREARM HAND HEAD HEADNECK HEART HIP HUMERUS KNEE LEG LSPINE LUNG NECK NECKCHEST "
    "PELVIS RIB SCAPULA SHOULDER SKULL SPINE STERNUM THORAX TSPINE WHOLEBODY WRIST".split()
)
KNOWN_VIEWS = frozenset("AP PA LL RL LLD RLD LLO RLO LAO RAO LPO RPO LATERAL LAT OBL".split())  # noqa: SIM905
_KNOWN = {"modality": KNOWN_MODALITIES, "body_part": KNOWN_BODY_PARTS, "view": KNOWN_VIEWS}


@dataclass(frozen=True)
class Facts:
    """What an image says it is, normalised (stripped, upper case, synonyms folded); None: absent."""

    modality: str | None = None
    body_part: str | None = None
    view: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"modality": self.modality, "body_part": self.body_part, "view": self.view}


@dataclass(frozen=True)
class EligibilityRules:
    """What a client accepts as a chest X-ray.

    modalities: accepted as they are. capture_modalities (Secondary Capture, Other): accepted
    only with an accepted body part or none (or only with one, with capture_requires_body_part).
    body_parts, views: accepted values; an absent value is accepted unless named in `require`.
    """

    modalities: frozenset[str]
    capture_modalities: frozenset[str]
    capture_requires_body_part: bool
    body_parts: frozenset[str]
    views: frozenset[str]
    require: frozenset[str]

    @classmethod
    def from_settings(cls) -> EligibilityRules:
        return cls.from_mapping(
            {
                "modalities": settings.ELIGIBLE_MODALITIES,
                "capture_modalities": settings.ELIGIBLE_CAPTURE_MODALITIES,
                "capture_requires_body_part": settings.ELIGIBLE_CAPTURE_REQUIRES_BODY_PART,
                "body_parts": settings.ELIGIBLE_BODY_PARTS,
                "views": settings.ELIGIBLE_VIEWS,
                "require": settings.ELIGIBLE_REQUIRE,
            }
        )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> EligibilityRules:
        clean = clean_rules(values, complete=True)
        return cls(
            modalities=frozenset(clean["modalities"]),
            capture_modalities=frozenset(clean["capture_modalities"]),
            capture_requires_body_part=clean["capture_requires_body_part"],
            body_parts=frozenset(clean["body_parts"]),
            views=frozenset(clean["views"]),
            require=frozenset(clean["require"]),
        )

    def overridden(self, override: Mapping[str, Any] | None) -> EligibilityRules:
        """These rules with a client's own values in place of the defaults it names."""
        if not override:
            return self
        return EligibilityRules.from_mapping(self.as_dict() | clean_rules(override, complete=False))

    def as_dict(self) -> dict[str, Any]:
        return {
            "modalities": sorted(self.modalities),
            "capture_modalities": sorted(self.capture_modalities),
            "capture_requires_body_part": self.capture_requires_body_part,
            "body_parts": sorted(self.body_parts),
            "views": sorted(self.views),
            "require": sorted(self.require),
        }


def normalise(value: Any, *, fact: str) -> str | None:
    """A DICOM value as the rules compare it: stripped, upper case, synonyms folded; None if absent.

    A multi-valued element counts as its values joined with a backslash: never one of the
    accepted terms, so it is refused rather than guessed at.
    """
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):  # pydicom's MultiValue
        text = "\\".join(str(v).strip() for v in value).upper()
    else:
        text = str(value).strip().upper()
    if not text:
        return None
    if fact == "body_part":
        text = BODY_PART_SYNONYMS.get(text, text)
    return text


def facts_from(*, modality: Any = None, body_part: Any = None, view: Any = None) -> Facts:
    return Facts(
        modality=normalise(modality, fact="modality"),
        body_part=normalise(body_part, fact="body_part"),
        view=normalise(view, fact="view"),
    )


def _shown(fact: str, value: str | None, rules: EligibilityRules) -> str | None:
    """The value a refusal may quote: a defined term or one the rules name, else "other"."""
    if value is None:
        return None
    allowed = {
        "modality": rules.modalities | rules.capture_modalities,
        "body_part": rules.body_parts,
        "view": rules.views,
    }[fact]
    return value if value in _KNOWN[fact] or value in allowed else "other"


def _refuse(
    *, fact: str, reason: str, message: str, facts: Facts, rules: EligibilityRules, sop_class: str | None
) -> errors.NotChestXray:
    details: dict[str, Any] = {
        "reason": reason,
        "attribute": _ATTRIBUTE[fact],
        "modality": _shown("modality", facts.modality, rules),
        "body_part": _shown("body_part", facts.body_part, rules),
        "view": _shown("view", facts.view, rules),
        "accepted": rules.as_dict(),
    }
    if sop_class:
        details["sop_class"] = sop_class
    return errors.NotChestXray(message, details=details)


def check_eligibility(
    *,
    modality: Any = None,
    body_part: Any = None,
    view: Any = None,
    sop_class: str | None = None,
    rules: EligibilityRules,
) -> Facts:
    """The image's facts, normalised, if they make it a chest X-ray under `rules`; else raise
    NotChestXray (422 not_chest_xray) saying which attribute failed and why.

    sop_class (its name, not its UID) only makes the refusal clearer; the SOP class itself is
    checked where the object is read (backend/jobs/dicom.py).
    """
    facts = facts_from(modality=modality, body_part=body_part, view=view)

    def refuse(fact: str, reason: str, message: str) -> errors.NotChestXray:
        return _refuse(
            fact=fact, reason=reason, message=message, facts=facts, rules=rules, sop_class=sop_class
        )

    for fact in FACTS:
        if fact in rules.require and getattr(facts, fact) is None:
            raise refuse(
                fact,
                f"{fact}_missing",
                f"This client accepts only images that state their {_ATTRIBUTE[fact]}; this one does not "
                "(PNG and JPEG state none).",
            )
    if facts.modality is not None and facts.modality not in rules.modalities:
        if facts.modality not in rules.capture_modalities:
            shown = _shown("modality", facts.modality, rules)
            raise refuse(
                "modality",
                "modality_not_accepted",
                f"Modality {shown} is not a chest radiograph "
                f"(accepted: {', '.join(sorted(rules.modalities | rules.capture_modalities))}).",
            )
        if facts.body_part is None and rules.capture_requires_body_part:
            raise refuse(
                "body_part",
                "capture_without_body_part",
                f"A {facts.modality} image (secondary capture or other) is accepted only when its "
                "BodyPartExamined names the chest; this one names no body part.",
            )
    if facts.body_part is not None and facts.body_part not in rules.body_parts:
        shown = _shown("body_part", facts.body_part, rules)
        raise refuse(
            "body_part",
            "body_part_not_accepted",
            f"BodyPartExamined {shown} is not the chest (accepted: {', '.join(sorted(rules.body_parts))}).",
        )
    if facts.view is not None and facts.view not in rules.views:
        shown = _shown("view", facts.view, rules)
        raise refuse(
            "view",
            "view_not_accepted",
            f"ViewPosition {shown} is not an accepted view (accepted: {', '.join(sorted(rules.views))}).",
        )
    return facts


def rules_for(client: Any) -> EligibilityRules:
    """The deployment's rules with the client's own overrides (Client.eligibility)."""
    return EligibilityRules.from_settings().overridden(getattr(client, "eligibility", None) or None)


# --- checking configured values (settings, the admin) ------------------------------------------


def _terms(key: str, value: Any, *, fact: str) -> list[str]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise ValidationError(f'{key}: a list of DICOM defined terms, e.g. ["CR", "DX"].')
    out = []
    for item in value:
        if not isinstance(item, str):
            raise ValidationError(f"{key}: every entry must be a string.")
        term = normalise(item, fact=fact)
        if term is None:
            continue
        if not _CODE_STRING.match(term):
            raise ValidationError(
                f"{key}: {item[:20]!r} is not a DICOM code string (letters, digits, space, underscore; "
                "16 characters at most)."
            )
        out.append(term)
    return sorted(set(out))


def clean_rules(values: Mapping[str, Any], *, complete: bool) -> dict[str, Any]:
    """Checked, normalised rules. complete: every key must be there (settings); else any subset
    (a client's override). Raises django's ValidationError, which the admin shows by the field."""
    if not isinstance(values, Mapping):
        raise ValidationError('Eligibility rules are a JSON object, e.g. {"views": ["PA", "AP", "LL"]}.')
    unknown = sorted(set(values) - set(RULE_KEYS))
    if unknown:
        raise ValidationError(
            f"Unknown eligibility keys: {', '.join(unknown)} (known: {', '.join(RULE_KEYS)})."
        )
    missing = [k for k in RULE_KEYS if k not in values]
    if complete and missing:
        raise ValidationError(f"Eligibility rules miss: {', '.join(missing)}.")
    clean: dict[str, Any] = {}
    for key in ("modalities", "capture_modalities"):
        if key in values:
            clean[key] = _terms(key, values[key], fact="modality")
    if "body_parts" in values:
        clean["body_parts"] = _terms("body_parts", values["body_parts"], fact="body_part")
    if "views" in values:
        clean["views"] = _terms("views", values["views"], fact="view")
    if "require" in values:
        require = values["require"]
        if isinstance(require, str):
            require = [r.strip().lower() for r in require.split(",") if r.strip()]
        if not isinstance(require, (list, tuple, set, frozenset)) or not set(require) <= set(FACTS):
            raise ValidationError(f"require: a list drawn from {', '.join(FACTS)}.")
        clean["require"] = sorted(set(require))
    if "capture_requires_body_part" in values:
        flag = values["capture_requires_body_part"]
        if not isinstance(flag, bool):
            raise ValidationError("capture_requires_body_part: true or false.")
        clean["capture_requires_body_part"] = flag
    if "modalities" in clean and not clean["modalities"] and not clean.get("capture_modalities", True):
        raise ValidationError(
            "modalities and capture_modalities cannot both be empty: nothing would be accepted."
        )
    return clean


def validate_client_rules(value: Any) -> None:
    """Model field validator for Client.eligibility (an override: any subset of the keys)."""
    if value in (None, {}):
        return
    clean_rules(value, complete=False)
