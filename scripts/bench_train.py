"""Benchmark rows of the "Train your own" tab (issue #16), run by ``scripts/benchmark.py --only train``.

Training budgets are CPU seconds of one torch thread (``time.process_time``), so that the rows mean the
same on a machine shared with other jobs; on an idle core CPU time ≈ wall time.

* 2-D: flow matching and DDPM trained for ``BUDGET_2D`` s each on the same data (the tab's
  defaults), then the sliced-Wasserstein distance (SWD) of 1,000 samples to 1,000 fresh data points,
  as a ratio to the SWD between two independent draws of 1,000 data points; and path straightness;
* digits: the class-conditional flow recipe (the tab's defaults) trained live for up to ``BUDGET_DIGITS``
  s; at each checkpoint the judge (assets/models/digits-judge, held-out accuracy in its judge.json)
  labels 20 samples per digit, at the best w of ``WS``; evaluation time is not counted as training;
* fairness: a forward-noising update from a second gradio_client session while a 2-D training runs,
  against the same update with no training (``python app.py`` in a subprocess).
"""

from __future__ import annotations

import statistics
import time

import torch

BUDGET_2D = 15.0
BUDGET_DIGITS = 180.0
CHECKPOINTS = (30, 60, 120, 180)
WS = (1.0, 2.0, 3.0, 5.0)


def _train_for(trainer, seconds: float, chunk: int = 10) -> float:
    """Train in chunks until ``seconds`` of this process's CPU time have passed (one torch thread: on a
    shared, overloaded machine CPU time is what an idle core would give in wall time); returns it."""
    c0 = time.process_time()
    while time.process_time() - c0 < seconds:
        trainer.train(chunk)
    return time.process_time() - c0


def rows_2d() -> list[tuple[str, str]]:
    from pipelines.training import toy2d

    out = []
    for dist in ("two moons", "8 gaussians"):
        for obj in ("flow", "ddpm"):
            tr = toy2d.Toy2DTrainer(toy2d.Toy2DConfig(distribution=dist, objective=obj))
            secs = _train_for(tr, BUDGET_2D)
            ev = toy2d.evaluate(tr, steps=(1, 4, 8, 32, 128))
            ratios = ", ".join(f"{s}: {ev['swd'][s] / ev['baseline']:.2f}×" for s in ev["swd"])
            out.append((f"2-D {dist}, {obj}, {tr.step} steps in {secs:.0f} CPU s: SWD / data-vs-data SWD "
                        f"({ev['baseline']:.3f}) by sampling steps", ratios))
            out.append((f"2-D {dist}, {obj}: straightness of 128-step paths", f"{ev['straightness']:.3f}"))
        tr = toy2d.Toy2DTrainer(toy2d.Toy2DConfig(distribution=dist, objective="flow"))
        _train_for(tr, BUDGET_2D)
        tr.reflow()
        _train_for(tr, BUDGET_2D)
        ev = toy2d.evaluate(tr, steps=(1, 4, 32))
        out.append((f"2-D {dist}, flow + 1 reflow ({BUDGET_2D:.0f} s + {BUDGET_2D:.0f} s): SWD ratio by steps; "
                    "straightness", ", ".join(f"{s}: {ev['swd'][s] / ev['baseline']:.2f}×" for s in ev["swd"])
                    + f"; {ev['straightness']:.3f}"))
    return out


def rows_digits() -> list[tuple[str, str]]:
    from pipelines.training import digit_judge, digits

    tr = digits.DigitsTrainer(digits.DigitsConfig())
    trained, curve = 0.0, []
    for cp in CHECKPOINTS:
        trained += _train_for(tr, cp - trained, chunk=5)
        accs = {w: digit_judge.class_accuracy(tr.ema, tr.cfg, per_class=20, w=w) for w in WS}
        best = max(accs, key=accs.get)
        curve.append(f"{trained:.0f} CPU s / {tr.step} steps: {accs[best]:.0%} (w={best:g})")
    return [("digits, class-conditional flow, live training: judge accuracy at the best w", "; ".join(curve))]


def interleave_rows(start, what: str) -> list[tuple[str, str]]:
    """Forward-noising round trips from one gradio_client session with nothing running, then while
    ``start(client)`` (a job submitted from a second session) runs in the same ``python app.py``."""
    from scripts import app_process

    port = app_process.free_port()
    proc = app_process.launch(port)
    try:
        a = app_process.connect(proc, port)
        b = app_process.connect(proc, port)
        b.predict("linear", 500, api_name="/forward_mix")

        def trips(n=20):
            xs = []
            for i in range(n):
                s = time.perf_counter()
                b.predict("linear", (i * 37) % 1000, api_name="/forward_mix")
                xs.append(time.perf_counter() - s)
            return sorted(xs)

        idle = trips()
        job = start(a)
        time.sleep(3.0)
        busy = trips()
        job.cancel()
    finally:
        app_process.stop(proc)
    fmt = lambda xs: f"median {statistics.median(xs) * 1e3:.0f} ms, max {xs[-1] * 1e3:.0f} ms (n={len(xs)})"
    return [("forward-noising update (gradio_client), no training running", fmt(idle)), (what, fmt(busy))]


def rows_interleave() -> list[tuple[str, str]]:
    return interleave_rows(lambda a: a.submit("two moons", "", None, "flow", "cosine", False, 20000, 0.5, 0,
                                              api_name="/train2d"), "same, while another session trains 2-D")


def rows(runtime=None) -> list[tuple[str, str]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the budgets are CPU seconds of one thread, see _train_for
    try:
        out = rows_2d() + rows_digits()
    finally:
        torch.set_num_threads(threads)
    return out + rows_interleave()
