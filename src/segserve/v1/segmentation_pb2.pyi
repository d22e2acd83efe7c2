import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReviewReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REVIEW_REASON_UNSPECIFIED: _ClassVar[ReviewReason]
    REVIEW_REASON_LOW_CONFIDENCE: _ClassVar[ReviewReason]
    REVIEW_REASON_NO_ASSET: _ClassVar[ReviewReason]
    REVIEW_REASON_IMAGE_TOO_SMALL: _ClassVar[ReviewReason]
    REVIEW_REASON_IMAGE_TOO_DARK: _ClassVar[ReviewReason]
    REVIEW_REASON_IMAGE_TOO_BLURRED: _ClassVar[ReviewReason]
    REVIEW_REASON_MODELS_DISAGREE: _ClassVar[ReviewReason]
REVIEW_REASON_UNSPECIFIED: ReviewReason
REVIEW_REASON_LOW_CONFIDENCE: ReviewReason
REVIEW_REASON_NO_ASSET: ReviewReason
REVIEW_REASON_IMAGE_TOO_SMALL: ReviewReason
REVIEW_REASON_IMAGE_TOO_DARK: ReviewReason
REVIEW_REASON_IMAGE_TOO_BLURRED: ReviewReason
REVIEW_REASON_MODELS_DISAGREE: ReviewReason

class SegmentRequest(_message.Message):
    __slots__ = ("image", "model", "include_overlay", "asset_id", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_OVERLAY_FIELD_NUMBER: _ClassVar[int]
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    model: str
    include_overlay: bool
    asset_id: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, image: _Optional[bytes] = ..., model: _Optional[str] = ..., include_overlay: _Optional[bool] = ..., asset_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ClassCoverage(_message.Message):
    __slots__ = ("class_id", "name", "pixels", "fraction", "mean_confidence")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    MEAN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    name: str
    pixels: int
    fraction: float
    mean_confidence: float
    def __init__(self, class_id: _Optional[int] = ..., name: _Optional[str] = ..., pixels: _Optional[int] = ..., fraction: _Optional[float] = ..., mean_confidence: _Optional[float] = ...) -> None: ...

class SegmentResponse(_message.Message):
    __slots__ = ("model", "model_version", "width", "height", "mask_png", "color_mask_png", "overlay_jpeg", "coverage", "corrosion_asset_ratio", "rust_grade", "model_seconds", "mean_confidence", "low_confidence_fraction", "confidence_threshold", "needs_review", "review_reasons", "models_agreement", "inspection_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MASK_PNG_FIELD_NUMBER: _ClassVar[int]
    COLOR_MASK_PNG_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_JPEG_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    CORROSION_ASSET_RATIO_FIELD_NUMBER: _ClassVar[int]
    RUST_GRADE_FIELD_NUMBER: _ClassVar[int]
    MODEL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEAN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    LOW_CONFIDENCE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    NEEDS_REVIEW_FIELD_NUMBER: _ClassVar[int]
    REVIEW_REASONS_FIELD_NUMBER: _ClassVar[int]
    MODELS_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    INSPECTION_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    width: int
    height: int
    mask_png: bytes
    color_mask_png: bytes
    overlay_jpeg: bytes
    coverage: _containers.RepeatedCompositeFieldContainer[ClassCoverage]
    corrosion_asset_ratio: float
    rust_grade: int
    model_seconds: float
    mean_confidence: float
    low_confidence_fraction: float
    confidence_threshold: float
    needs_review: bool
    review_reasons: _containers.RepeatedScalarFieldContainer[ReviewReason]
    models_agreement: float
    inspection_id: str
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., mask_png: _Optional[bytes] = ..., color_mask_png: _Optional[bytes] = ..., overlay_jpeg: _Optional[bytes] = ..., coverage: _Optional[_Iterable[_Union[ClassCoverage, _Mapping]]] = ..., corrosion_asset_ratio: _Optional[float] = ..., rust_grade: _Optional[int] = ..., model_seconds: _Optional[float] = ..., mean_confidence: _Optional[float] = ..., low_confidence_fraction: _Optional[float] = ..., confidence_threshold: _Optional[float] = ..., needs_review: _Optional[bool] = ..., review_reasons: _Optional[_Iterable[_Union[ReviewReason, str]]] = ..., models_agreement: _Optional[float] = ..., inspection_id: _Optional[str] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("image", "ground_truth", "model")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    GROUND_TRUTH_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    ground_truth: bytes
    model: str
    def __init__(self, image: _Optional[bytes] = ..., ground_truth: _Optional[bytes] = ..., model: _Optional[str] = ...) -> None: ...

class ClassMetrics(_message.Message):
    __slots__ = ("class_id", "name", "iou", "dice", "precision", "recall", "true_pixels", "predicted_pixels")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IOU_FIELD_NUMBER: _ClassVar[int]
    DICE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    TRUE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_PIXELS_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    name: str
    iou: float
    dice: float
    precision: float
    recall: float
    true_pixels: int
    predicted_pixels: int
    def __init__(self, class_id: _Optional[int] = ..., name: _Optional[str] = ..., iou: _Optional[float] = ..., dice: _Optional[float] = ..., precision: _Optional[float] = ..., recall: _Optional[float] = ..., true_pixels: _Optional[int] = ..., predicted_pixels: _Optional[int] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("model", "model_version", "per_class", "mean_iou", "mean_dice", "pixel_accuracy", "num_classes", "confusion_matrix", "prediction")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PER_CLASS_FIELD_NUMBER: _ClassVar[int]
    MEAN_IOU_FIELD_NUMBER: _ClassVar[int]
    MEAN_DICE_FIELD_NUMBER: _ClassVar[int]
    PIXEL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    CONFUSION_MATRIX_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    per_class: _containers.RepeatedCompositeFieldContainer[ClassMetrics]
    mean_iou: float
    mean_dice: float
    pixel_accuracy: float
    num_classes: int
    confusion_matrix: _containers.RepeatedScalarFieldContainer[int]
    prediction: SegmentResponse
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., per_class: _Optional[_Iterable[_Union[ClassMetrics, _Mapping]]] = ..., mean_iou: _Optional[float] = ..., mean_dice: _Optional[float] = ..., pixel_accuracy: _Optional[float] = ..., num_classes: _Optional[int] = ..., confusion_matrix: _Optional[_Iterable[int]] = ..., prediction: _Optional[_Union[SegmentResponse, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClassInfo(_message.Message):
    __slots__ = ("id", "name", "red", "green", "blue")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RED_FIELD_NUMBER: _ClassVar[int]
    GREEN_FIELD_NUMBER: _ClassVar[int]
    BLUE_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    red: int
    green: int
    blue: int
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., red: _Optional[int] = ..., green: _Optional[int] = ..., blue: _Optional[int] = ...) -> None: ...

class ClassValidationMetrics(_message.Message):
    __slots__ = ("class_id", "name", "iou", "dice", "per_image_iou", "per_image_dice")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IOU_FIELD_NUMBER: _ClassVar[int]
    DICE_FIELD_NUMBER: _ClassVar[int]
    PER_IMAGE_IOU_FIELD_NUMBER: _ClassVar[int]
    PER_IMAGE_DICE_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    name: str
    iou: float
    dice: float
    per_image_iou: float
    per_image_dice: float
    def __init__(self, class_id: _Optional[int] = ..., name: _Optional[str] = ..., iou: _Optional[float] = ..., dice: _Optional[float] = ..., per_image_iou: _Optional[float] = ..., per_image_dice: _Optional[float] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "architecture", "input_size", "classes", "is_default", "validation", "validation_mean_iou", "validation_pixel_accuracy", "encoder_weights", "trained_from", "trained_on", "validation_ratio_mae", "validation_grade_exact", "validation_grade_within_one", "review", "members", "backend", "encoder", "validation_source", "precision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_MEAN_IOU_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_PIXEL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ENCODER_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    TRAINED_FROM_FIELD_NUMBER: _ClassVar[int]
    TRAINED_ON_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_RATIO_MAE_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_GRADE_EXACT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_GRADE_WITHIN_ONE_FIELD_NUMBER: _ClassVar[int]
    REVIEW_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_SOURCE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    architecture: str
    input_size: int
    classes: _containers.RepeatedCompositeFieldContainer[ClassInfo]
    is_default: bool
    validation: _containers.RepeatedCompositeFieldContainer[ClassValidationMetrics]
    validation_mean_iou: float
    validation_pixel_accuracy: float
    encoder_weights: str
    trained_from: str
    trained_on: str
    validation_ratio_mae: float
    validation_grade_exact: float
    validation_grade_within_one: float
    review: ReviewThresholds
    members: _containers.RepeatedScalarFieldContainer[str]
    backend: str
    encoder: str
    validation_source: str
    precision: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., architecture: _Optional[str] = ..., input_size: _Optional[int] = ..., classes: _Optional[_Iterable[_Union[ClassInfo, _Mapping]]] = ..., is_default: _Optional[bool] = ..., validation: _Optional[_Iterable[_Union[ClassValidationMetrics, _Mapping]]] = ..., validation_mean_iou: _Optional[float] = ..., validation_pixel_accuracy: _Optional[float] = ..., encoder_weights: _Optional[str] = ..., trained_from: _Optional[str] = ..., trained_on: _Optional[str] = ..., validation_ratio_mae: _Optional[float] = ..., validation_grade_exact: _Optional[float] = ..., validation_grade_within_one: _Optional[float] = ..., review: _Optional[_Union[ReviewThresholds, _Mapping]] = ..., members: _Optional[_Iterable[str]] = ..., backend: _Optional[str] = ..., encoder: _Optional[str] = ..., validation_source: _Optional[str] = ..., precision: _Optional[str] = ...) -> None: ...

class ReviewThresholds(_message.Message):
    __slots__ = ("confidence_threshold", "max_low_confidence_fraction", "min_asset_fraction", "min_side", "min_brightness", "min_sharpness", "min_agreement")
    CONFIDENCE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MAX_LOW_CONFIDENCE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MIN_ASSET_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MIN_SIDE_FIELD_NUMBER: _ClassVar[int]
    MIN_BRIGHTNESS_FIELD_NUMBER: _ClassVar[int]
    MIN_SHARPNESS_FIELD_NUMBER: _ClassVar[int]
    MIN_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    confidence_threshold: float
    max_low_confidence_fraction: float
    min_asset_fraction: float
    min_side: int
    min_brightness: float
    min_sharpness: float
    min_agreement: float
    def __init__(self, confidence_threshold: _Optional[float] = ..., max_low_confidence_fraction: _Optional[float] = ..., min_asset_fraction: _Optional[float] = ..., min_side: _Optional[int] = ..., min_brightness: _Optional[float] = ..., min_sharpness: _Optional[float] = ..., min_agreement: _Optional[float] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class ListInspectionsRequest(_message.Message):
    __slots__ = ("asset_id", "start_time", "end_time", "needs_review", "page_size", "page_token")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    NEEDS_REVIEW_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    needs_review: bool
    page_size: int
    page_token: str
    def __init__(self, asset_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., needs_review: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListInspectionsResponse(_message.Message):
    __slots__ = ("inspections", "next_page_token")
    INSPECTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    inspections: _containers.RepeatedCompositeFieldContainer[Inspection]
    next_page_token: str
    def __init__(self, inspections: _Optional[_Iterable[_Union[Inspection, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetInspectionRequest(_message.Message):
    __slots__ = ("inspection_id",)
    INSPECTION_ID_FIELD_NUMBER: _ClassVar[int]
    inspection_id: str
    def __init__(self, inspection_id: _Optional[str] = ...) -> None: ...

class GetInspectionResponse(_message.Message):
    __slots__ = ("inspection",)
    INSPECTION_FIELD_NUMBER: _ClassVar[int]
    inspection: Inspection
    def __init__(self, inspection: _Optional[_Union[Inspection, _Mapping]] = ...) -> None: ...

class Inspection(_message.Message):
    __slots__ = ("inspection_id", "time", "photo_sha256", "photo_bytes", "asset_id", "labels", "model", "model_version", "width", "height", "corrosion_asset_ratio", "rust_grade", "coverage", "mean_confidence", "low_confidence_fraction", "confidence_threshold", "needs_review", "review_reasons", "models_agreement", "transport", "photo_kept", "mask_png", "overlay_jpeg", "photo")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    INSPECTION_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PHOTO_SHA256_FIELD_NUMBER: _ClassVar[int]
    PHOTO_BYTES_FIELD_NUMBER: _ClassVar[int]
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CORROSION_ASSET_RATIO_FIELD_NUMBER: _ClassVar[int]
    RUST_GRADE_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    MEAN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    LOW_CONFIDENCE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    NEEDS_REVIEW_FIELD_NUMBER: _ClassVar[int]
    REVIEW_REASONS_FIELD_NUMBER: _ClassVar[int]
    MODELS_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    PHOTO_KEPT_FIELD_NUMBER: _ClassVar[int]
    MASK_PNG_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_JPEG_FIELD_NUMBER: _ClassVar[int]
    PHOTO_FIELD_NUMBER: _ClassVar[int]
    inspection_id: str
    time: _timestamp_pb2.Timestamp
    photo_sha256: str
    photo_bytes: int
    asset_id: str
    labels: _containers.ScalarMap[str, str]
    model: str
    model_version: str
    width: int
    height: int
    corrosion_asset_ratio: float
    rust_grade: int
    coverage: _containers.RepeatedCompositeFieldContainer[ClassCoverage]
    mean_confidence: float
    low_confidence_fraction: float
    confidence_threshold: float
    needs_review: bool
    review_reasons: _containers.RepeatedScalarFieldContainer[ReviewReason]
    models_agreement: float
    transport: str
    photo_kept: bool
    mask_png: bytes
    overlay_jpeg: bytes
    photo: bytes
    def __init__(self, inspection_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., photo_sha256: _Optional[str] = ..., photo_bytes: _Optional[int] = ..., asset_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., corrosion_asset_ratio: _Optional[float] = ..., rust_grade: _Optional[int] = ..., coverage: _Optional[_Iterable[_Union[ClassCoverage, _Mapping]]] = ..., mean_confidence: _Optional[float] = ..., low_confidence_fraction: _Optional[float] = ..., confidence_threshold: _Optional[float] = ..., needs_review: _Optional[bool] = ..., review_reasons: _Optional[_Iterable[_Union[ReviewReason, str]]] = ..., models_agreement: _Optional[float] = ..., transport: _Optional[str] = ..., photo_kept: _Optional[bool] = ..., mask_png: _Optional[bytes] = ..., overlay_jpeg: _Optional[bytes] = ..., photo: _Optional[bytes] = ...) -> None: ...
