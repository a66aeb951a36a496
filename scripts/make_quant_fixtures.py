#!/usr/bin/env python3
"""Write the small GGUF fixtures of tests/unit/quant/ into tests/data/gguf/ (committed; ~40 KB in all).

  quant_types.gguf  one tensor per ggml type fkv dequantizes (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
                    Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS), each followed by `<name>.expected`: the F32 values that
                    gguf-py's reference dequantizer (gguf.quants.dequantize) gives for the same bytes. The
                    C++ dequantizer must reproduce them bitwise. Also metadata of every value type,
                    including a nested array, for the GgufValue accessors.
  align64.gguf      two tensors under general.alignment = 64 ("a" = arange(15)/4 as [3, 5] F32, "b" Q8_0).

Types gguf-py can quantize (Q4_0 .. Q8_0, BF16) are quantized from random normal data; for the
K-quants and IQ4 types, which gguf-py only dequantizes, the blocks are random bytes with finite positive f16 scales
patched in. A few 32-element blocks get subnormal f16 scales, and the F16 tensor holds subnormals,
+-0 and +-inf, so the conversion edge cases are covered.

Run: .venv/bin/python scripts/make_quant_fixtures.py   (gguf 0.19, numpy)
"""
from __future__ import annotations

import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "gguf")

# (type, rows, cols); cols is a multiple of the block size (32, or 256 for K-quants).
QUANTIZABLE = [(T.Q4_0, 5, 96), (T.Q4_1, 5, 96), (T.Q5_0, 5, 96), (T.Q5_1, 5, 96), (T.Q8_0, 5, 96),
               (T.BF16, 3, 40)]
K_QUANTS = [(T.Q2_K, 3, 512), (T.Q3_K, 3, 512), (T.Q4_K, 3, 512), (T.Q5_K, 3, 512), (T.Q6_K, 3, 512)]
# i-quants gguf-py only dequantizes, written after the K-quants (so the earlier tensors keep their random draws)
I_QUANTS = [(T.IQ4_NL, 3, 96), (T.IQ4_XS, 3, 512)]
# byte offsets of the f16 scale fields inside each block
K_SCALE_OFFSETS = {T.Q2_K: (80, 82), T.Q3_K: (108,), T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,),
                   T.IQ4_NL: (0,), T.IQ4_XS: (0,)}


def f16_bytes(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16).view(np.uint8)


def k_quant_bytes(rng: np.random.Generator, qtype: T, rows: int, cols: int) -> np.ndarray:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    nb = rows * cols // block
    raw = rng.integers(0, 256, size=(nb, size), dtype=np.uint8)
    for off in K_SCALE_OFFSETS[qtype]:
        raw[:, off:off + 2] = f16_bytes(rng.uniform(1e-3, 0.05, size=(nb, 1))).reshape(nb, 2)
    return raw.reshape(rows, cols // block * size)


def add_with_expected(w: gguf.GGUFWriter, name: str, raw: np.ndarray, qtype: T, rows: int, cols: int) -> None:
    expected = gguf.quants.dequantize(raw, qtype).astype(np.float32).reshape(rows, cols)
    assert np.isfinite(expected).all() or qtype == T.F16, name
    if qtype == T.F32:
        w.add_tensor(name, raw)
    elif qtype == T.F16:
        w.add_tensor(name, raw.view(np.float16).reshape(rows, cols))
    else:
        w.add_tensor(name, raw, raw_dtype=qtype)
    w.add_tensor(name + ".expected", expected)


def write_quant_types(path: str) -> None:
    rng = np.random.default_rng(20261128)
    w = gguf.GGUFWriter(path, "fkvtest")
    # metadata of every value type (the accessors' test reads these back)
    w.add_uint8("fkv.u8", 200)
    w.add_int8("fkv.i8", -100)
    w.add_uint16("fkv.u16", 60000)
    w.add_int16("fkv.i16", -30000)
    w.add_uint32("fkv.u32", 4000000000)
    w.add_int32("fkv.i32", -2000000000)
    w.add_uint64("fkv.u64", 1 << 40)
    w.add_int64("fkv.i64", -(1 << 40))
    w.add_float32("fkv.f32", 0.25)
    w.add_float64("fkv.f64", -1.5e300)
    w.add_bool("fkv.bool", True)
    w.add_string("fkv.string", "héllo wörld")
    w.add_array("fkv.strings", ["a", "", "Ġthe", "c d"])
    w.add_array("fkv.ints", [1, -2, 3])
    w.add_key_value("fkv.nested", [[1, 2], [3]], gguf.GGUFValueType.ARRAY)

    # F32 with edge values, F16 with subnormals / zeros / infinities
    f32 = rng.standard_normal((3, 8)).astype(np.float32)
    f32[0, :4] = [0.0, -0.0, 1e-40, -3.4e38]
    add_with_expected(w, "t.f32", f32, T.F32, 3, 8)
    f16 = rng.standard_normal((2, 16)).astype(np.float16)
    f16[0, :8] = np.array([0x0001, 0x03FF, 0x8001, 0x0000, 0x8000, 0x7C00, 0xFC00, 0x7BFF],
                          dtype=np.uint16).view(np.float16)
    add_with_expected(w, "t.f16", f16.view(np.uint8).reshape(2, 32), T.F16, 2, 16)

    for qtype, rows, cols in QUANTIZABLE:
        data = (rng.standard_normal((rows, cols)) * rng.uniform(0.01, 3.0)).astype(np.float32)
        if qtype == T.BF16:
            data[0, :5] = [1e30, -1e30, 3.0e38, 1e-39, -0.0]  # large, subnormal and signed-zero inputs
        raw = gguf.quants.quantize(data, qtype)
        if qtype != T.BF16:
            # subnormal f16 scale (and, for Q4_1/Q5_1, a negative subnormal min) in the first block of row 1
            raw[1, 0:2] = np.array([0x0007], dtype=np.uint16).view(np.uint8)
            if qtype in (T.Q4_1, T.Q5_1):
                raw[1, 2:4] = np.array([0x8005], dtype=np.uint16).view(np.uint8)
        add_with_expected(w, "t." + qtype.name.lower(), raw, qtype, rows, cols)

    for qtype, rows, cols in K_QUANTS + I_QUANTS:
        add_with_expected(w, "t." + qtype.name.lower(), k_quant_bytes(rng, qtype, rows, cols), qtype, rows, cols)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_align64(path: str) -> None:
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(path, "fkvtest")
    w.add_custom_alignment(64)
    w.add_tensor("a", (np.arange(15, dtype=np.float32) / 4).reshape(3, 5))
    w.add_tensor("b", gguf.quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), T.Q8_0),
                 raw_dtype=T.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    write_quant_types(os.path.join(OUT, "quant_types.gguf"))
    write_align64(os.path.join(OUT, "align64.gguf"))
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {OUT} ({total} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
