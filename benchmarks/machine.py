"""What a benchmark ran on: CPU model, vector extensions, cores, load, float32 matmul peak.

Ratios between frameworks move with the CPU (AVX2-only vs AVX-512 with bf16/AMX) and
with other work on the machine, so every result records them. The matmul peak is
measured in the benchmark's own process (a large float32 matmul, best of several), so
model FLOPs utilisation is against what this machine really does, not a datasheet.

Example:
    info = describe()   # {"cpu_model": "AMD EPYC", "cpu_class": "AVX2 (no AVX-512)", ...}
    peak = tf_matmul_peak()   # FLOP/s
"""

import os
import platform
import time

VECTOR_EXTENSIONS = ("sse4_2", "avx", "avx2", "fma", "avx_vnni", "avx512f", "avx512bw",
                     "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
                     "amx_bf16", "amx_int8")
MATMUL_SIZE, MATMUL_REPEATS = 2048, 10


def _cpuinfo():
    """The first processor's fields of /proc/cpuinfo (empty off Linux)."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_class(extensions):
    """A short name for the vector units that matter to float32/bf16 matmuls."""
    if "amx_tile" in extensions:
        return "AVX-512 + AMX"
    if "avx512_bf16" in extensions:
        return "AVX-512 + bf16"
    if "avx512f" in extensions:
        return "AVX-512"
    if "avx2" in extensions:
        return "AVX2 (no AVX-512)"
    return "pre-AVX2"


def load_average():
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(value, 2) for value in os.getloadavg()]


def describe():
    """CPU model, family/model numbers, vector extensions, class, cores and the load now."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    extensions = [name for name in VECTOR_EXTENSIONS if name in flags]
    return {"cpu_model": info.get("model name", platform.processor() or platform.machine()),
            "cpu_vendor": info.get("vendor_id"), "cpu_family": info.get("cpu family"),
            "cpu_model_number": info.get("model"), "vector_extensions": extensions,
            "cpu_class": cpu_class(extensions), "cores": os.cpu_count(),
            "virtual_machine": "hypervisor" in flags, "load_average": load_average()}


def markdown(info, before, after):
    """One sentence for a results file: the CPU, its class and the load around the run."""
    return (f"CPU: {info['cpu_model']} ({info['cpu_vendor']} family {info['cpu_family']} model "
            f"{info['cpu_model_number']}), **{info['cpu_class']}**, "
            f"{', '.join(info['vector_extensions'])}; {info['cores']} cores"
            f"{' (virtual machine)' if info['virtual_machine'] else ''}. Load average (1/5/15 min) "
            f"{'/'.join(map(str, before))} before and {'/'.join(map(str, after))} after the run "
            "(other work on the machine slows every framework; compare ratios from one run).")


def _best_rate(run, flops, repeats):
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return flops / best


def tf_matmul_peak(size=MATMUL_SIZE, repeats=MATMUL_REPEATS):
    """Float32 FLOP/s of a [size, size] x [size, size] tf.matmul, best of `repeats`."""
    import tensorflow as tf

    a = tf.random.stateless_normal([size, size], seed=[1, 2])
    b = tf.random.stateless_normal([size, size], seed=[3, 4])
    product = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    return _best_rate(lambda: product().numpy(), 2 * size ** 3, repeats)


def torch_matmul_peak(size=MATMUL_SIZE, repeats=MATMUL_REPEATS):
    """Float32 FLOP/s of a [size, size] x [size, size] torch.matmul, best of `repeats`."""
    import torch

    generator = torch.Generator().manual_seed(1)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    return _best_rate(lambda: torch.matmul(a, b).sum().item(), 2 * size ** 3, repeats)
