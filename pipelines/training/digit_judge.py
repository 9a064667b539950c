"""A small digit classifier that judges generated digits (trained separately from the diffusion models).

Trained on the training split of :mod:`pipelines.training.digits` with ±1 px random shifts, tested on
the held-out split; shipped in ``assets/models/digits-judge`` (``python -m pipelines.training.digit_judge
--out assets/models/digits-judge`` retrains it; a few minutes on one core). ``--eval DIR`` scores a
class-conditional model: the fraction of its samples labelled as the digit asked for, per w.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipelines.training import digits

JUDGE_DIR = digits.ASSETS / "digits-judge"


class DigitJudge(nn.Module):
    """``[B, 1, SIZE, SIZE]`` in [-1, 1] -> logits ``[B, 10]``."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16 -> 8
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8 -> 4
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Dropout(0.2), nn.Linear(2 * width, 10),
        )

    def forward(self, x):
        return self.net(x)


def _shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to 1 px in each direction (background −1 fills the gap)."""
    dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
    return torch.roll(F.pad(x, (1, 1, 1, 1), value=-1.0), (dy, dx), (2, 3))[:, :, 1:-1, 1:-1]


def train(steps: int = 3000, seed: int = 0) -> tuple[DigitJudge, float]:
    """(judge, accuracy on the held-out digits)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = digits.load_digits("train")
    judge = DigitJudge()
    opt = torch.optim.AdamW(judge.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (128,), generator=gen)
        loss = F.cross_entropy(judge(_shift(x[idx], gen)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return judge.eval(), accuracy(judge, *digits.load_digits("test"))


@torch.no_grad()
def accuracy(judge: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    judge.eval()
    return float((judge(x).argmax(1) == y).float().mean())


@functools.lru_cache(maxsize=1)
def load_judge() -> DigitJudge:
    """The shipped judge (read-only, shared)."""
    from safetensors.torch import load_file

    path = JUDGE_DIR / "judge.safetensors"
    if not path.exists():
        raise ValueError(f"the digit judge is missing ({path}); train it: python -m pipelines.training.digit_judge")
    judge = DigitJudge()
    judge.load_state_dict({k: v.float() for k, v in load_file(path).items()})
    return judge.eval().requires_grad_(False)


@torch.no_grad()
def class_accuracy(model, cfg: digits.DigitsConfig, per_class: int = 20, w: float = 3.0, steps: int = 16,
                   seed: int = 0, judge: nn.Module | None = None) -> float:
    """Fraction of class-conditional samples (``per_class`` of each digit, CFG scale ``w``) that the judge
    labels as the class asked for."""
    judge = judge or load_judge()
    labels = torch.arange(10).repeat_interleave(per_class)
    x = digits.generate(model, cfg, len(labels), torch.Generator().manual_seed(seed), steps, labels, w)
    return float((judge(x).argmax(1) == labels).float().mean())


@torch.no_grad()
def cfg_scores(images: torch.Tensor, prompts: list[str], k: int) -> tuple[float, float, float]:
    """The guidance trade-off's scores for digits (``images [B, 3 or 1, SIZE, SIZE]`` in [-1, 1], ``prompts``
    naming a digit each, in groups of ``k`` per prompt): (fraction the judge labels as the digit asked for,
    the judge's mean probability of that digit, mean pairwise 1 − cos between the centred pixels of a group)."""
    from pipelines.models.digits_model import NULL_CLASS, label_of

    labels = torch.tensor([label_of(p) for p in prompts])
    if (labels == NULL_CLASS).any():
        raise ValueError("the trade-off scores a digit asked for: give a digit 0-9 as the prompt")
    x = images[:, :1].float().cpu()
    probs = load_judge()(x).softmax(1)  # [B, 10]
    match = float((probs.argmax(1) == labels).float().mean())
    score = float(probs[torch.arange(len(labels)), labels].mean())
    feats = F.normalize((x - x.mean(dim=(2, 3), keepdim=True)).flatten(1), dim=1)  # [B, SIZE²]
    divs = []
    for i in range(0, len(labels), k):
        f = feats[i:i + k]
        sim = f @ f.T
        n = f.shape[0]
        divs.append(float(1 - (sim.sum() - sim.diagonal().sum()) / max(n * (n - 1), 1)))
    return match, score, sum(divs) / len(divs)


def evaluate_model(model_dir: str, ws=(0.0, 1.0, 2.0, 3.0, 5.0), per_class: int = 50, steps=(4, 16)) -> None:
    """Print the judge's accuracy on a class-conditional digits model at each w and step count."""
    model, cfg = digits.load(model_dir)
    if cfg.stage != "class":
        raise ValueError(f"{model_dir} is a {cfg.stage!r} model; the judge scores class-conditional ones")
    for s in steps:
        accs = [class_accuracy(model, cfg, per_class, w, s) for w in ws]
        print(f"{s} steps: " + ", ".join(f"w={w:g}: {a:.1%}" for w, a in zip(ws, accs)))


def main(argv=None) -> None:
    from safetensors.torch import save_file

    p = argparse.ArgumentParser(description="train the digit judge, or (--eval DIR) score a class model with it")
    p.add_argument("--out", default=str(JUDGE_DIR))
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--eval", help="a class-conditional digits model folder to score")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.eval:
        return evaluate_model(a.eval)
    judge, acc = train(a.steps)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in judge.state_dict().items()}, out / "judge.safetensors")
    judge16 = DigitJudge()
    judge16.load_state_dict({k: v.half().float() for k, v in judge.state_dict().items()})
    acc16 = accuracy(judge16, *digits.load_digits("test"))
    (out / "judge.json").write_text(json.dumps({"test_accuracy_fp32": acc, "test_accuracy_fp16": acc16,
                                                "n_test": digits.N_TEST, "steps": a.steps}, indent=2))
    print(f"held-out accuracy {acc:.4f} (fp16 weights {acc16:.4f})")


if __name__ == "__main__":
    main()
