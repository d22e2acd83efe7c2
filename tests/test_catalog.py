"""segserve.catalog: the served names, the default, the ensemble's members, versions and ListModels."""

from __future__ import annotations

import math

import pytest

from segserve.architectures import ENSEMBLE
from segserve.catalog import Catalog
from segserve.errors import NotReady, UnknownModel
from segserve.settings import Settings
from tests.two_models import two_model_settings

REVIEW = {"confidence_threshold": 0.6, "max_low_confidence_fraction": 0.3, "min_agreement": 0.5}
VAL = {
    "per_class": [{"class_id": 0, "name": "corrosion", "iou": 0.5, "dice": 0.6, "per_image_iou": 0.4}],
    "mean_iou": 0.45,
    "pixel_accuracy": 0.7,
    "ratio_mae": 0.15,
    "grade_exact": 0.6,
    "grade_within_one": 0.8,
}
MODELS = {
    name: {
        "version": f"v-{name}",
        "input_size": 32,
        "backend": "onnxruntime",
        "metadata": {"review": REVIEW, "val_metrics": VAL, "encoder_weights": "none", "trained_on": "train"},
    }
    for name in ("deeplabv3plus", "unet")
}


def test_ensemble_is_listed_with_its_members_and_needs_two_models():
    catalog = Catalog(two_model_settings(), MODELS)
    listed = {m["name"]: m for m in catalog.list_models()["models"]}
    assert list(listed) == ["deeplabv3plus", "unet", "ensemble"]
    assert listed["ensemble"]["members"] == ["deeplabv3plus", "unet"]
    assert listed["unet"]["members"] == []
    assert listed["ensemble"]["review"]["min_agreement"] == 0.5
    single = Catalog(two_model_settings(default_model="unet"), {"unet": MODELS["unet"]})
    assert [m["name"] for m in single.list_models()["models"]] == ["unet"]
    with pytest.raises(UnknownModel, match="serves unet"):
        single.resolve(ENSEMBLE)


def test_nothing_is_served_until_the_models_answer():
    catalog = Catalog(two_model_settings())
    with pytest.raises(NotReady):
        catalog.resolve("")
    with pytest.raises(NotReady):
        catalog.list_models()
    assert catalog.metric_label("unet") == "unet" and catalog.metric_label("nope") == "unknown"
    catalog.serve(MODELS)
    assert catalog.resolve("") == "deeplabv3plus" and catalog.resolve("unet") == "unet"


def test_model_info_carries_the_release_metadata():
    info = Catalog(two_model_settings(), MODELS).model_info("unet")
    assert info["version"] == "v-unet" and info["is_default"] is False and info["input_size"] == 32
    (row,) = info["validation"]
    assert math.isnan(row.pop("per_image_dice"))  # missing from the metadata: NaN, as the proto's double says
    assert row == {"class_id": 0, "name": "corrosion", "iou": 0.5, "dice": 0.6, "per_image_iou": 0.4}
    assert (info["validation_mean_iou"], info["validation_pixel_accuracy"]) == (0.45, 0.7)
    assert (info["validation_ratio_mae"], info["validation_grade_exact"], info["validation_grade_within_one"]) == (
        0.15,
        0.6,
        0.8,
    )
    assert info["review"]["confidence_threshold"] == 0.6
    assert (info["backend"], info["encoder"], info["encoder_weights"], info["trained_on"]) == (
        "onnxruntime",
        "resnet50",
        "none",
        "train",
    )


def test_the_ensemble_members_come_from_the_settings():
    models = {**MODELS, "unet-vgg16": {**MODELS["unet"], "version": "v-vgg"}}
    settings = Settings(models="deeplabv3plus,unet,unet-vgg16", ensemble="unet-vgg16,unet", default_model="unet")
    catalog = Catalog(settings, models)
    assert catalog.members == ("unet", "unet-vgg16")
    assert catalog.version(ENSEMBLE) == "unet:v-unet+unet-vgg16:v-vgg"
    assert catalog.model_info("unet-vgg16")["encoder"] == "vgg16"
    with pytest.raises(ValueError, match="SEGSERVE_ENSEMBLE"):
        Settings(ensemble="unet")
    with pytest.raises(ValueError, match="SEGSERVE_ENSEMBLE"):
        two_model_settings(ensemble="unet,unet-vgg16")  # unet-vgg16 is not among the served models
