"""Deliberate bugs (issue 22, item 9): apply each to a scratch copy of the repo and check a test fails.

    .venv/bin/python scripts/mutation_check.py                 # every mutant, its catching tests only
    .venv/bin/python scripts/mutation_check.py repaint_noop    # one mutant

Each mutant is (file, exact text, replacement, test files that must fail). The repo is copied to a
temporary folder (without .git and .venv), the text replaced, and pytest run on the listed tests; a
mutant is "caught" when pytest fails. A mutant whose text is no longer in the file (after a
refactor moved the code) is reported "not applicable": update its entry to the code's new home.
Prints one row per mutant and the failing tests; exit 1 if any mutant survives.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MUTANTS: dict[str, tuple[str, str, str, list[str]]] = {
    "repaint_noop": ("pipelines/inpainting.py", "return m * ctx.x_t + (1.0 - m) * known", "return ctx.x_t",
                     ["tests/unit/test_repaint_statistics.py"]),
    "known_not_noised": ("pipelines/inpainting.py", "known = ctx.add_noise(x0)", "known = x0",
                         ["tests/unit/test_repaint_statistics.py"]),
    "eps_guidance_factor_dropped": (
        "pipelines/diffusion/loop.py", "eps = eps + sigma * g.grad.detach() / c_in",
        "eps = eps + g.grad.detach()", ["tests/unit/test_guidance_maths.py"]),
    "eps_guidance_c_in_dropped": (
        "pipelines/diffusion/loop.py", "eps = eps + sigma * g.grad.detach() / c_in",
        "eps = eps + sigma * g.grad.detach()", ["tests/unit/test_guidance_maths.py"]),
    "inpaint_cfg_embeddings_swapped": ("pipelines/inpainting.py", "emb = torch.cat([ne, pe]) if do_cfg else pe",
                                       "emb = torch.cat([pe, ne]) if do_cfg else pe", ["tests/unit/test_inpainting_cfg.py"]),
    "inpaint_cfg_halves_swapped": ("pipelines/inpainting.py", "            out_u, out_c = out.chunk(2)",
                                   "            out_c, out_u = out.chunk(2)", ["tests/unit/test_inpainting_cfg.py"]),
    "inpaint_cfg_w_minus_1": ("pipelines/inpainting.py", "            out = maths.cfg_combine(out_u, out_c, w)",
                              "            out = maths.cfg_combine(out_u, out_c, w - 1)", ["tests/unit/test_inpainting_cfg.py"]),
    "blur_without_sqrt_alpha_bar": ("pipelines/denoising.py", "x = x_t / math.sqrt(alpha_bar)", "x = x_t",
                                    ["tests/unit/test_denoising.py"]),
    "renoise_sigma_space_removed": ("pipelines/inpainting.py", "sigma_space = maths.is_sigma_space(scheduler)\n"
                                    "    c_from", "sigma_space = False\n    c_from",
                                    ["tests/unit/test_repaint_statistics.py"]),
    "prompt_cap_4000": ("pipelines/validation.py", "MAX_PROMPT_CHARS = 1000", "MAX_PROMPT_CHARS = 4000",
                        ["tests/unit/test_validation.py"]),
    "control_chars_kept": ("pipelines/validation.py", 'return _CONTROL.sub(" ", value)', "return value",
                           ["tests/unit/test_validation.py"]),
    "pixel_cap_60mp": ("pipelines/images.py", "MAX_PIXELS = 40_000_000", "MAX_PIXELS = 60_000_000",
                       ["tests/unit/test_images.py"]),
}


def run(name: str) -> tuple[str, list[str]]:
    path, old, new, tests = MUTANTS[name]
    src = (ROOT / path).read_text()
    if src.count(old) != 1:
        return "not applicable", []
    with tempfile.TemporaryDirectory(prefix=f"mut-{name}-") as tmp:
        dst = Path(tmp) / "repo"
        shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc"))
        (dst / path).write_text(src.replace(old, new))
        env = {**os.environ, "PYTHONPATH": str(dst)}
        p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rf", *tests],
                           cwd=dst, env=env, capture_output=True, text=True)
    failed = sorted(set(re.findall(r"^FAILED (\S+?)(?: - .*)?$", p.stdout, re.M)))
    return ("caught" if p.returncode != 0 else "SURVIVED"), failed


def main(argv: list[str]) -> int:
    names = argv or list(MUTANTS)
    survived = False
    for name in names:
        status, failed = run(name)
        survived |= status == "SURVIVED"
        print(f"{name:30} {status:15} {len(failed)} failing")
        for f in failed:
            print(f"    {f}")
        sys.stdout.flush()
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
