"""The catalog of served models: which names a request may use, the default, the ensemble and its members,
each model's version, input size and review thresholds, and what ListModels says of them.

It is filled once the model service answers (``serve``); until then every lookup raises NotReady.
"""

from __future__ import annotations

from typing import Any

from segserve import review
from segserve.architectures import ARCHITECTURES, ENSEMBLE
from segserve.classes import CLASSES
from segserve.errors import NotReady, UnknownModel
from segserve.settings import Settings

NAN = float("nan")
# What GET /models tells of a review flag's calibration (training.calibrate's numbers).
CALIBRATION_KEYS = (
    "split",
    "n_images",
    "flagged",
    "unflagged",
    "ratio_mae",
    "flagged_ratio_mae",
    "unflagged_ratio_mae",
    "flagged_share_of_ratio_error",
    "held_out",
    "large_error",
)


def _description(name: str) -> str:
    arch = ARCHITECTURES.get(name)
    return arch.description if arch else name


class Catalog:
    """The served models.

    models: what each served model reports, keyed by name: {"version", "input_size", "metadata", "backend"}
        (the model service's ``describe``).
    """

    def __init__(self, settings: Settings, models: dict[str, dict[str, Any]] | None = None) -> None:
        self.settings = settings
        self.models: dict[str, dict[str, Any]] = {}
        self.thresholds: dict[str, review.ReviewThresholds] = {}
        self.serve(models or {})

    def serve(self, models: dict[str, dict[str, Any]]) -> None:
        """Serve these models (once the model service answers)."""
        self.models = models
        self.thresholds = {
            name: review.ReviewThresholds.from_metadata(info.get("metadata")) for name, info in models.items()
        }
        if self.members:
            self.thresholds[ENSEMBLE] = self.thresholds[self.lead_member]

    @property
    def ready(self) -> bool:
        return bool(self.models)

    @property
    def members(self) -> tuple[str, ...]:
        """The models the ensemble averages (``Settings.ensemble_members``), when they are served."""
        members = self.settings.ensemble_members
        return members if members and all(m in self.models for m in members) else ()

    @property
    def lead_member(self) -> str:
        """The member whose metadata speaks for the ensemble (its review thresholds): the default model if a member."""
        return self.settings.default_model if self.settings.default_model in self.members else self.members[0]

    @property
    def served_names(self) -> tuple[str, ...]:
        """Every name a request may use: the models, and the ensemble when it is served."""
        return tuple(sorted(self.models)) + ((ENSEMBLE,) if self.members else ())

    def resolve(self, model: str) -> str:
        """The served model a request names; empty means the default. Raises NotReady or UnknownModel."""
        if not self.models:
            raise NotReady("models are still loading; retry shortly", retry_after=2.0)
        name = model or self.settings.default_model
        if name not in self.served_names:
            raise UnknownModel(f"unknown model {model!r}; this server serves {', '.join(self.served_names)}")
        return name

    def metric_label(self, model: str | None) -> str:
        """A low-cardinality model label for metrics: the model's name, 'unknown', or 'none' (ListModels).

        Never raises: while the models load, a name is judged against the configured models.
        """
        if model is None:
            return "none"
        name = model or self.settings.default_model
        known = self.served_names if self.models else (*self.settings.model_names, ENSEMBLE)
        return name if name in known else "unknown"

    def version(self, name: str) -> str:
        """The version a resolved name answers with; the ensemble's names its members' versions."""
        if name == ENSEMBLE:
            return "+".join(f"{m}:{self.models[m]['version']}" for m in self.members)
        return self.models[name]["version"]

    def _info(self, name: str) -> dict[str, Any]:
        return self.models[self.lead_member if name == ENSEMBLE else name]

    def input_size(self, name: str) -> int:
        return int(self._info(name)["input_size"])

    def list_models(self) -> dict[str, Any]:
        """The ListModelsResponse fields."""
        if not self.models:
            raise NotReady("models are still loading; retry shortly", retry_after=2.0)
        return {"models": [self.model_info(name) for name in self.served_names]}

    def review_calibration(self, name: str) -> dict[str, Any]:
        """What calibrating a served name's review flag found (``review.calibration`` in its model metadata, the
        ensemble's from its lead member's): the photos and split, how many were flagged, the share of the error
        of the corroded share the flagged ones carried and their ratio MAE against the others', on the photos the
        limits were chosen on and held out (leave-one-out). Empty when the model carries none; GET /models adds
        it to each model (ListModels has no field for it)."""
        calibration = (self._info(name).get("metadata", {}).get("review") or {}).get("calibration") or {}
        if name == ENSEMBLE:
            calibration = calibration.get("ensemble") or {}
        return {k: calibration[k] for k in CALIBRATION_KEYS if k in calibration}

    def model_info(self, name: str) -> dict[str, Any]:
        """The ModelInfo fields of a served name: what it is, how it was trained, what it scored on val."""
        if name == ENSEMBLE:
            lead = self.models[self.lead_member].get("metadata", {})
            meta = {"val_metrics": lead.get("ensemble_val_metrics") or {}}
            architecture = "Ensemble: mean class probabilities of " + ", ".join(_description(m) for m in self.members)
        else:
            meta = self.models[name].get("metadata", {})
            architecture = _description(name)
        val = meta.get("val_metrics") or {}
        arch = ARCHITECTURES.get(name)
        return {
            "name": name,
            "version": self.version(name),
            "architecture": architecture,
            "input_size": self.input_size(name),
            "classes": [
                {"id": c.id, "name": c.name, "red": c.color[0], "green": c.color[1], "blue": c.color[2]}
                for c in CLASSES
            ],
            "is_default": name == self.settings.default_model,
            "validation": [
                {
                    "class_id": int(row["class_id"]),
                    "name": str(row["name"]),
                    **{k: float(row.get(k, NAN)) for k in ("iou", "dice", "per_image_iou", "per_image_dice")},
                }
                for row in val.get("per_class", [])
            ],
            "validation_mean_iou": float(val.get("mean_iou", NAN)),
            "validation_pixel_accuracy": float(val.get("pixel_accuracy", NAN)),
            "encoder_weights": str(meta.get("encoder_weights", "")),
            "trained_from": str(meta.get("trained_from", "")),
            "trained_on": str(meta.get("trained_on", "")),
            "validation_ratio_mae": float(val.get("ratio_mae", NAN)),
            "validation_grade_exact": float(val.get("grade_exact", NAN)),
            "validation_grade_within_one": float(val.get("grade_within_one", NAN)),
            "review": self.thresholds[name].as_dict(),
            "members": list(self.members) if name == ENSEMBLE else [],
            "backend": str(self._info(name).get("backend", "")),
            "precision": str(self._info(name).get("precision", "")),
            "encoder": arch.encoder if arch else "",
            "validation_source": str(meta.get("validation_source", "")),
        }
