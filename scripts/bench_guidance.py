"""Benchmark rows for issue #5 (guidance): a batched CFG step and a CLIP-guided step, each
divided by a plain step (one UNet pass), measured interleaved in one run on the bundled models.

The measurement itself is :func:`pipelines.guidance_eval.bench_guidance_steps`
(also printed by ``python -m pipelines.guidance_eval --bench-only``).
"""

from __future__ import annotations


def rows(runtime) -> list[tuple[str, str]]:
    from pipelines.guidance_eval import bench_guidance_steps

    reg = runtime.registry
    out = []
    for r in bench_guidance_steps(reg.diffusion(), reg.clip()):
        out.append((r["name"], f"{r['seconds'] * 1000:.1f} ms/step = {r['ratio']:.2f}x plain"))
    return out
