"""Golden models: the exact integer arithmetic the RTL must equal, and its float references."""

from golden.gemm import check_bounds, check_range, gemm_int, saturate, signed_range, wrap
from golden.requant import (
    QuantLinear,
    fbgemm_int16_pair_saturation,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    quantized_linear_fbgemm,
    requantize,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)

__all__ = [
    "QuantLinear",
    "check_bounds",
    "check_range",
    "fbgemm_int16_pair_saturation",
    "gemm_int",
    "multiply_by_quantized_multiplier",
    "quantize_multiplier",
    "quantized_linear_fbgemm",
    "requantize",
    "rounding_divide_by_pot",
    "saturate",
    "saturating_rounding_doubling_high_mul",
    "signed_range",
    "wrap",
]
