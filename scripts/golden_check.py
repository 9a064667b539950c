"""Golden images of the bundled toy-sd: does the current code still make the same pictures?

    .venv/bin/python scripts/golden_check.py            # compare with tests/golden/ (exit 1 on a change)
    .venv/bin/python scripts/golden_check.py --write    # regenerate tests/golden/ (only on purpose)

For each case of :data:`CASES` (three samplers, a fixed prompt, seed, 20 steps, w = 3) it runs
the sampling loop the way the denoising viewer does (a fresh CPU generator per request, x_T
drawn from it) and prints, per case, whether the final float image is *bit-identical* to the
stored one (sha256 of its float32 bytes), the largest float difference, and the largest uint8
difference from the stored PNG. Run it before and after a refactor: "bit-identical" on every
row means the refactor changed no arithmetic; the unit test ``tests/unit/test_golden.py`` only
demands equality within 1/255 (float results may differ in the last bits across CPUs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

GOLDEN_DIR = ROOT / "tests" / "golden"
PROMPT = "a red circle on a navy background"
SEED = 0
STEPS = 20
GUIDANCE = 3.0
CASES = {"ddim": "DDIM", "dpmpp": "DPM-Solver++", "euler": "Euler"}


def load_model():
    """The bundled toy-sd on CPU, through the registry (as the app loads it)."""
    from pipelines.models import ModelRegistry  # the registry's public home before and after issue 22

    return ModelRegistry("cpu").diffusion()


def _sample_fn():
    try:  # after the issue-22 refactor
        from pipelines.diffusion.loop import sample
    except ImportError:
        from pipelines.diffusion.loop import sample
    return sample


def render(model, sampler: str) -> torch.Tensor:
    """One golden case: final image ``[1, 3, 32, 32]`` float32 in [-1, 1]."""
    gen = torch.Generator("cpu").manual_seed(SEED)  # what demos.common.request_generator(SEED) returns
    with torch.no_grad():
        img = _sample_fn()(model, PROMPT, sampler=sampler, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                           eta=0.0, generator=gen)
    return img.detach().to(torch.float32).cpu().contiguous()


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """``[1, 3, H, W]`` in [-1, 1] -> ``[H, W, 3]`` uint8 (the app's rounding: (x + 1) * 127.5)."""
    arr = ((img[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return arr.permute(1, 2, 0).numpy()


def sha256(img: torch.Tensor) -> str:
    return hashlib.sha256(img.numpy().tobytes()).hexdigest()


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def write(model) -> None:
    from PIL import Image

    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    meta = {"prompt": PROMPT, "seed": SEED, "steps": STEPS, "guidance_scale": GUIDANCE,
            "torch": torch.__version__, "cases": {}}
    for key, sampler in CASES.items():
        img = render(model, sampler)
        Image.fromarray(to_uint8(img)).save(GOLDEN_DIR / f"{key}.png")
        np.save(GOLDEN_DIR / f"{key}.npy", img.numpy())
        meta["cases"][key] = {"sampler": sampler, "sha256_float32": sha256(img),
                              "shape": list(img.shape), "sum": float(img.double().sum())}
        print(f"wrote {key}: {sampler}, sha256 {sha256(img)[:16]}…")
    (GOLDEN_DIR / "checksums.json").write_text(json.dumps(meta, indent=2) + "\n")


def check(model) -> bool:
    meta = json.loads((GOLDEN_DIR / "checksums.json").read_text())
    all_identical = True
    print(f"{'case':8} {'sampler':14} {'bit-identical':14} {'max |Δ| float':>14} {'max |Δ| uint8':>14}")
    for key, case in meta["cases"].items():
        img = render(model, case["sampler"])
        same = sha256(img) == case["sha256_float32"]
        ref = torch.from_numpy(np.load(GOLDEN_DIR / f"{key}.npy"))
        dfloat = float((img - ref).abs().max())
        du8 = int(np.abs(to_uint8(img).astype(int) - read_png(GOLDEN_DIR / f"{key}.png").astype(int)).max())
        all_identical &= same
        print(f"{key:8} {case['sampler']:14} {'yes' if same else 'NO':14} {dfloat:14.3g} {du8:14d}")
    print("all bit-identical" if all_identical else "CHANGED: some images differ from tests/golden/")
    return all_identical


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="regenerate tests/golden/ from the current code")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # one thread: the same reduction order on every run
    model = load_model()
    if args.write:
        write(model)
        return 0
    return 0 if check(model) else 1


if __name__ == "__main__":
    sys.exit(main())
