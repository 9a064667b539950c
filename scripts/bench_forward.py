"""Benchmark rows of the Forward noising tab and of app start-up (issue #2), run by ``scripts/benchmark.py``.

* server-side forward-noising update for a 512x512 image: the slider's handler
  (``demos.forward_noising.mix``: eq. 4 from the cached x0 and ε straight to uint8, JPEG into
  gradio's cache, formula Markdown), median over many calls with varying t; wall time and the
  process's CPU time (on a shared, overloaded machine the wall time mostly measures waiting);
* the same update through gradio_client against the launched app (adds HTTP, queue, download);
* cold start: ``python app.py`` as a subprocess on a free port, from process start to the first
  answered request (``/forward_mix``), polled with gradio_client.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N_UPDATES = 60


def _ms(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"{statistics.median(xs) * 1e3:.1f} ms median (p90 {xs[int(0.9 * (len(xs) - 1))] * 1e3:.1f} ms, n={len(xs)})"


def update_512() -> tuple[list[float], list[float]]:
    """(wall times, CPU times of this process) of the slider handler on a 512x512 image."""
    from demos import forward_noising as fn

    state = fn.initial_state(512, 0)
    fn.mix(state, "linear", 1)  # warm-up (schedule cache, imports)
    wall, cpu = [], []
    for i in range(N_UPDATES):
        t0, c0 = time.perf_counter(), time.process_time()
        fn.mix(state, "linear", (i * 37) % fn.T)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def cold_start_and_round_trip(timeout: float = 300.0) -> tuple[float, list[float]]:
    from gradio_client import handle_file

    from scripts import app_process

    port = app_process.free_port()
    t0 = time.perf_counter()
    proc = app_process.launch(port)
    try:
        client = app_process.connect(proc, port, timeout)
        client.predict("linear", 500, api_name="/forward_mix")
        cold = time.perf_counter() - t0
        client.predict(handle_file(str(ROOT / "assets/samples/astronaut.jpg")), 0, 512, "linear", 500,
                       api_name="/forward_load")
        trips = []
        for i in range(20):
            s = time.perf_counter()
            client.predict("linear", (i * 37) % 1000, api_name="/forward_mix")
            trips.append(time.perf_counter() - s)
        return cold, trips
    finally:
        app_process.stop(proc)


def rows(runtime=None) -> list[tuple[str, str]]:
    wall, cpu = update_512()
    out = [("forward-noising update, 512×512, server-side (slider handler), wall", _ms(wall)),
           ("same, CPU time of the process (≈ wall on idle cores; wall grows with the load average)", _ms(cpu))]
    cold, trips = cold_start_and_round_trip()
    out.append(("forward-noising update, 512×512, gradio_client round trip", _ms(trips)))
    out.append(("cold start: `python app.py` to first answered request", f"{cold:.1f} s"))
    return out
