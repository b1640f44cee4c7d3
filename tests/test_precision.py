"""Precision chosen by the CPU: --precision=auto from the CPU flags, and the export precisions
(float32, bfloat16, int8, auto) with their op audit, parity and accuracy gate."""

import logging

import keras
import pytest

from tfimitate import runtime

CPUINFO = "processor\t: 0\nmodel name\t: {model}\nflags\t\t: fpu sse4_2 avx avx2 fma {flags}\n\n"
EPYC_ZEN4 = CPUINFO.format(model="AMD EPYC 9R14", flags="avx512f avx512_bf16 avx512_vnni")
XEON_AMX = CPUINFO.format(model="Intel Xeon Platinum 8488C", flags="avx512f amx_tile amx_bf16")
ZEN3 = CPUINFO.format(model="AMD EPYC 7R13", flags="vaes")


@pytest.mark.parametrize("cpuinfo, policy, unit", [
    (EPYC_ZEN4, "mixed_bfloat16", "avx512_bf16"),
    (XEON_AMX, "mixed_bfloat16", "amx_bf16"),
    (ZEN3, "float32", "no AMX or AVX512-BF16"),
])
def test_auto_reads_the_bf16_units_from_the_cpu_flags(tmp_path, cpuinfo, policy, unit):
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    resolved, reason = runtime.resolve_precision("auto", runtime.cpu_flags(str(path)))
    assert resolved == policy and unit in reason


def test_auto_keeps_float32_on_accelerators_and_explicit_choices_stand():
    bf16 = {"avx512_bf16"}
    assert runtime.resolve_precision("auto", bf16, "GPU")[0] == "float32"
    assert runtime.resolve_precision("auto", bf16, "TPU")[0] == "float32"
    assert runtime.resolve_precision("float32", bf16)[0] == "float32"
    assert runtime.resolve_precision("mixed_float16", set())[0] == "mixed_float16"
    assert runtime.cpu_flags("/nonexistent/cpuinfo") == set()


def test_explicit_bf16_without_bf16_units_is_set_with_a_warning_naming_its_cost(
        monkeypatch, caplog):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2"})
    try:
        with caplog.at_level(logging.INFO):
            assert runtime.set_precision("mixed_bfloat16")[0] == "mixed_bfloat16"
            assert runtime.set_precision("auto")[0] == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "8% slower" in warnings[0] and "--precision=auto" in warnings[0]
    assert any("Precision float32 (--precision=auto: the CPU has no AMX" in r.getMessage()
               for r in caplog.records)
