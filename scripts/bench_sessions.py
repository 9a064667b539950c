"""What one fresh gradio session costs before any event runs (issue 19): gradio's own ``SessionState``
against ``demos.guard.compact_session_state`` (component configs on demand), in one process.

    .venv/bin/python scripts/bench_sessions.py

Prints the Python memory one session holds (tracemalloc) and the time to create one (tracemalloc off),
and checks that a session's full listing of component configs is the same either way. The machine may be
shared: the load average is printed.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(n: int = 10) -> int:
    from gradio import state_holder

    import app
    from pipelines.runtime import Runtime

    demo = app.build_app(Runtime.create("cpu"))  # installs the on-demand sessions
    cls = state_holder.SessionState
    inits = {"gradio's SessionState": cls.gradio_init, "configs on demand": cls.__init__}
    print(f"{len(demo.blocks)} blocks; load average {'%.1f %.1f %.1f' % os.getloadavg()}")
    print("| session | memory per session | time to create one |\n|---|---|---|")
    listings = {}
    for name, init in inits.items():
        cls.__init__ = init
        gc.collect()
        tracemalloc.start()
        kept = [cls(demo) for _ in range(n)]
        mem = tracemalloc.get_traced_memory()[0] / n
        tracemalloc.stop()
        t0 = time.perf_counter()
        kept += [cls(demo) for _ in range(n)]
        took = (time.perf_counter() - t0) / n
        listings[name] = json.dumps(list(kept[0].components), default=str)
        print(f"| {name} | {mem / 1e6:.3f} MB | {took * 1000:.1f} ms |")
    cls.__init__ = inits["configs on demand"]
    print("same listing of component configs:", len(set(listings.values())) == 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
