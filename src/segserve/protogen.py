"""Generate the Python gRPC stubs from proto/ (``make proto``). The stubs are committed; a test fails when stale.

python -m segserve.protogen [OUT_DIR]     # default: src/
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
PROTO_FILES = ("segserve/v1/segmentation.proto",)
STUB_FILES = ("segmentation_pb2.py", "segmentation_pb2.pyi", "segmentation_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Run grpc_tools.protoc on PROTO_FILES into ``out_dir``; return the written stub paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        f"-I{PROTO_DIR}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(PROTO_DIR / f) for f in PROTO_FILES),
    ]
    # In a child process: grpc_tools' protoc crashes a process that has already loaded TensorFlow.
    result = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"protoc failed: {result.stderr.strip()}")
    package = out_dir / "segserve" / "v1"
    return [package / name for name in STUB_FILES]


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "src"
    for path in generate(out):
        print(f"wrote {path.relative_to(out)}")


if __name__ == "__main__":
    main()
