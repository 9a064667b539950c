"""Train a digits recipe (:mod:`pipelines.training.digits`) from the command line, on ``accelerate``.

    python -m pipelines.training.train_digits --stage class --objective flow --steps 6000 --out runs/digits
    accelerate launch -m pipelines.training.train_digits ...      # several GPUs / processes

Resumable: every ``--save-every`` seconds the optimiser, weights, EMA and step go to ``<out>/resume``;
running the same command again continues from there. At the end the EMA weights are written with
``save_pretrained`` to ``<out>`` (``--fp16``: half-precision safetensors, as shipped in assets/), and
loss and judge accuracy (class stage) go to ``<out>/loss_log.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from pipelines.training import digits


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = digits.DigitsConfig()
    p.add_argument("--stage", choices=digits.STAGES, default=d.stage)
    p.add_argument("--objective", choices=["flow", "ddpm"], default=d.objective)
    p.add_argument("--schedule", default=d.schedule, help="β schedule of a ddpm objective")
    p.add_argument("--logit-normal", action="store_true", help="σ ~ logit-normal (flow)")
    p.add_argument("--sigma", type=float, default=d.sigma, help="noise level of the denoiser stage")
    p.add_argument("--channels", default=",".join(map(str, d.channels)))
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--p-uncond", type=float, default=d.p_uncond)
    p.add_argument("--ema-decay", type=float, default=d.ema_decay)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--steps", type=int, default=4000, help="total optimiser steps")
    p.add_argument("--out", required=True, help="output folder (from_pretrained loads it)")
    p.add_argument("--save-every", type=float, default=180.0, help="seconds between resume checkpoints")
    p.add_argument("--eval-every", type=int, default=500, help="steps between judge evaluations (class stage)")
    p.add_argument("--fp16", action="store_true", help="write the final weights in float16")
    return p.parse_args(argv)


def main(argv=None) -> None:
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    a = parse_args(argv)
    cfg = digits.DigitsConfig(stage=a.stage, objective=a.objective, schedule=a.schedule,
                              logit_normal=a.logit_normal, sigma=a.sigma,
                              channels=tuple(int(c) for c in a.channels.split(",")), batch_size=a.batch_size,
                              lr=a.lr, p_uncond=a.p_uncond, ema_decay=a.ema_decay, seed=a.seed)
    out, resume = Path(a.out), Path(a.out) / "resume"
    acc = Accelerator()
    trainer = digits.DigitsTrainer(cfg)
    # Each process draws its own batches: a generator per process rank.
    trainer.gen = torch.Generator().manual_seed(cfg.seed * 1000 + acc.process_index)
    model, opt = acc.prepare(trainer.model, trainer.opt)
    ema = trainer.ema.to(acc.device)
    x_all, y_all = digits.load_digits("train")
    meta = {"step": 0, "seconds": 0.0}
    if (resume / "meta.json").exists():
        acc.load_state(str(resume))
        meta = json.loads((resume / "meta.json").read_text())
        ema.load_state_dict(torch.load(resume / "ema.pt", map_location=acc.device))
        trainer.gen.set_state(torch.load(resume / "gen.pt"))
        acc.print(f"resumed at step {meta['step']}")
    log = out / "loss_log.jsonl"
    out.mkdir(parents=True, exist_ok=True)

    def checkpoint():
        acc.wait_for_everyone()
        acc.save_state(str(resume))
        if acc.is_main_process:
            torch.save(ema.state_dict(), resume / "ema.pt")
            torch.save(trainer.gen.get_state(), resume / "gen.pt")
            (resume / "meta.json").write_text(json.dumps(meta))

    step, t_last, t0 = meta["step"], time.monotonic(), time.monotonic() - meta["seconds"]
    bar = tqdm(total=a.steps, initial=step, disable=not acc.is_local_main_process, desc=f"digits {cfg.stage}")
    run = None  # running mean of the loss (restarts on resume)
    while step < a.steps:
        idx = torch.randint(0, len(y_all), (cfg.batch_size,), generator=trainer.gen)
        model.train()
        loss = digits.training_loss(model, cfg, x_all[idx], y_all[idx], trainer.gen)
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        opt.step()
        step += 1
        digits.ema_update(ema, acc.unwrap_model(model), min(cfg.ema_decay, (1 + step) / (10 + step)))
        run = float(loss) if run is None else 0.98 * run + 0.02 * float(loss)
        bar.update(1)
        bar.set_postfix(loss=f"{run:.4f}")
        meta.update(step=step, seconds=time.monotonic() - t0)
        if acc.is_main_process and (step % 50 == 0 or step == a.steps):
            rec = {"step": step, "loss": round(run, 5), "seconds": round(meta["seconds"], 1)}
            if cfg.stage == "class" and (step % a.eval_every == 0 or step == a.steps):
                from pipelines.training import digit_judge

                rec["accuracy"] = digit_judge.class_accuracy(ema, cfg, per_class=20, w=3.0)
            with log.open("a") as f:
                f.write(json.dumps(rec) + "\n")
        if time.monotonic() - t_last > a.save_every:
            checkpoint()
            t_last = time.monotonic()
    checkpoint()
    if acc.is_main_process:
        final = ema.to(torch.float16) if a.fp16 else ema
        digits.save(final, cfg, out, extra={"steps": step, "train_seconds": round(meta["seconds"])})
        acc.print(f"saved {out}")


if __name__ == "__main__":
    main()
