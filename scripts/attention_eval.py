"""Issue 17's measurements of the cross-attention maps and attention control on the bundled toy-sd.

    PYTHONPATH=. .venv/bin/python scripts/attention_eval.py [--seeds 40] [--steps 30] [--guidance 4]

For seed s, the prompt is "a {colour} {shape} on a {background} background" with attributes drawn
from ``random.Random(s)`` (pairs held out of training excluded) and x_T from ``torch.Generator`` seeded s.
The rendering judge (:func:`pipelines.toyworld.render_judge.locate_by_rendering`) finds the generated
shape and its true mask (the best-matching rendered template, coverage > 0.5).

1. Localisation: the shape word's DAAM map over all steps, thresholded at its mean, against the mask
   (IoU; target ≥ 0.5 in ≥ 80% of seeds), and per quarter of the steps; the background word's map
   (the background's colour name; and the word "background") must be higher on the background than on the
   shape (mean of the map; and thresholded at its mean), read as recorded, as DAAM's share of the words'
   attention and minus the words' mean (:func:`pipelines.attention.maps.relative`).
2. Re-weighting: ×0 on the colour word, same seed: the judged colour changes (target ≥ 70%); the same
   renormalised (the word masked out of the softmax), on the colour and shape words, on every later token;
   and ×0 in the text encoder too (later tokens no longer read the word: ``Reweight(encoder=True)``).
   ``--parts readings`` adds the background test per resolution, layer, step range and head (:func:`readings`).
3. Word swap (shape word → another shape), source maps injected (Prompt-to-Prompt): the target's
   shape centroid within 2 px of the source's (target ≥ 80%); the same without injection for contrast.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def scenes(n: int) -> list[tuple[str, str, str]]:
    from pipelines.toyworld.world import BACKGROUNDS, COLORS, HELD_OUT, SHAPES

    out = []
    for s in range(n):
        rng = random.Random(s)
        while True:
            c, sh, bg = rng.choice(list(COLORS)), rng.choice(SHAPES), rng.choice(list(BACKGROUNDS))
            if (c, sh) not in HELD_OUT:
                out.append((c, sh, bg))
                break
    return out


def prompt(c: str, sh: str, bg: str) -> str:
    return f"a {c} {sh} on a {bg} background"


def iou(a, b) -> float:
    inter = (a & b).sum().item()
    union = (a | b).sum().item()
    return inter / union if union else 0.0


def latents_for(model, seeds):
    import torch

    from pipelines.diffusion import maths

    return torch.cat([maths.randn((1, *model.sample_shape), torch.Generator().manual_seed(s), model.device,
                                  model.unet.dtype) for s in seeds])


PARTS = ("readings", "variants", "swap")


def readings(run, k: int, mask, words: dict[str, str]) -> dict[str, bool]:
    """Issue 17's background test under other faithful readings of prompt ``k``'s maps: per resolution and per
    layer, per step range, as recorded and as DAAM's share; and per (layer, head) over all steps.
    -> ``{"rd:{word}|{reading}|{layers}|{steps}": map mean higher on the background than on the shape}``."""
    from pipelines.attention import maps as M

    rec, end, n = run.record, run.views[k].end_index, run.num_steps
    pos = {name: find(run.views[k], word) for name, word in words.items()}
    sides = sorted({rec.sides[x] for x in rec.layers}, reverse=True)
    groups = {"all": None} | {f"{h}×{w}": [x for x in rec.layers if rec.sides[x] == (h, w)] for h, w in sides}
    groups |= {M.layer_label(x, rec.sides[x]): [x] for x in rec.layers}
    spans = {"all": None, "first half": list(range(n // 2)), "second half": list(range(n // 2, n)),
             "first quarter": list(range(n // 4)), "last quarter": list(range(n - n // 4, n))}
    out = {}

    def more(heat, mode):
        rel = M.relative(heat, end, mode)
        return {name: bool(rel[p].sum(0)[~mask].mean() > rel[p].sum(0)[mask].mean()) for name, p in pos.items()}

    for g, layers in groups.items():
        for sp, steps in spans.items():
            heat = M.aggregate(rec, steps=steps, layers=layers, index=k)
            for mode in ("raw", "share"):
                for name, v in more(heat, mode).items():
                    out[f"rd:{name}|{mode}|{g}|{sp}"] = v
    for x in rec.layers:
        for h in range(next(iter(rec.maps[x].values())).shape[1]):
            heat = M.aggregate(rec, layers=[x], heads=[h], index=k)
            for mode in ("raw", "share"):
                for name, v in more(heat, mode).items():
                    out[f"hd:{name}|{mode}|{M.layer_label(x, rec.sides[x])}|head {h}"] = v
    return out


def find(view, word):
    from pipelines import attention as A

    return A.find_tokens(view, word)


def evaluate(model, n: int, steps: int, w: float, batch: int, log=print, first: int = 0, dump=None,
             parts=PARTS) -> dict:

    from pipelines import attention as A
    from pipelines.toyworld.render_judge import locate_by_rendering
    from pipelines.toyworld.world import SHAPES

    sc = scenes(first + n)
    kw = dict(steps=steps, guidance_scale=w, sampler="DDIM")
    quarters = [list(range(q * steps // 4, (q + 1) * steps // 4)) for q in range(4)]
    res = {"iou": [], "iou_q": [[] for _ in quarters], "found": 0, "match": 0,
           "colour_changed": [], "bg_more": [], "bg_ratio": [], "swap_dist": [], "plain_dist": [], "swap_shape_ok": []}
    for lo in range(first, first + n, batch):
        ids = list(range(lo, min(first + n, lo + batch)))
        lat = latents_for(model, ids)
        prompts = [prompt(*sc[i]) for i in ids]
        t0 = time.perf_counter()
        base = A.run(model, prompts, latents=lat, **kw)
        judged = locate_by_rendering(base.image)
        for k, i in enumerate(ids):
            c, sh, bg = sc[i]
            j = judged[k]
            if j["mask"] is None:
                for key in ("iou", "iou_share", "iou_centred"):
                    res.setdefault(key, []).append(0.0)
                for q in res["iou_q"]:
                    q.append(0.0)
                continue
            res["found"] += 1
            res["match"] += (j["shape"], j["color"], j["background"]) == (sh, c, bg)
            mask = j["mask"] > 0.5
            ms = base.word_map(sh, k)
            res["iou"].append(iou(ms > ms.mean(), mask))
            for q, steps_q in zip(res["iou_q"], quarters):
                mq = base.word_map(sh, k, steps=steps_q)
                q.append(iou(mq > mq.mean(), mask))
            spos = A.find_tokens(base.views[k], sh)
            for mode in A.MAP_MODES[1:]:  # the shape word under the other readings of the maps
                mm = A.relative(base.heatmaps(k), base.views[k].end_index, mode)[spos].sum(0)
                res.setdefault(f"iou_{mode}", []).append(iou(mm > mm.mean(), mask))
            for key, word in (("bg", bg), ("bgw", "background")):
                pos = A.find_tokens(base.views[k], word)
                for mode in A.MAP_MODES:
                    suffix, m = ("" if mode == "raw" else "_" + mode), A.relative(base.heatmaps(k), base.views[k].end_index, mode)
                    mb = m[pos].sum(0)
                    on_bg, on_shape = mb[~mask].mean().item(), mb[mask].mean().item()
                    res.setdefault(key + suffix + "_more", []).append(on_bg > on_shape)
                    if suffix != "_centred":  # a ratio of means of a map that can be negative says nothing
                        res.setdefault(key + suffix + "_ratio", []).append(on_bg / max(on_shape, 1e-12))
                    hot = mb > mb.mean()  # "covers": the map thresholded at its mean, as for the shape word
                    res.setdefault(key + suffix + "_cover", []).append(bool(hot[~mask].float().mean() > hot[mask].float().mean()))
            if "readings" in parts:
                for name, more in readings(base, k, mask, {"colour": bg, "background": "background"}).items():
                    res.setdefault(name, []).append(more)
        # 2. ×0 on the colour word's pieces; for contrast, on the colour word and every later token (the causal
        # text encoder writes the colour into all of them)
        cpos = [A.find_tokens(v, sc[i][0]) for v, i in zip(base.views, ids)]
        zero = A.run(model, prompts, latents=lat, control=A.Reweight(cpos, 0.0), record=False, **kw)
        # ... and in the text encoder too: later tokens no longer read the word (its key masked for them)
        zero_enc = A.run(model, prompts, latents=lat, control=A.Reweight(cpos, 0.0, encoder=True), record=False, **kw)
        for k, je in enumerate(locate_by_rendering(zero_enc.image)):
            res.setdefault("colour_enc_changed", []).append(je["color"] != judged[k]["color"])
            res.setdefault("colour_enc_other_kept", []).append(
                (je["shape"], je["background"]) == (judged[k]["shape"], judged[k]["background"]))
        if "variants" not in parts:
            res["colour_changed"] += [j["color"] != judged[k]["color"] for k, j in enumerate(locate_by_rendering(zero.image))]
            if "swap" in parts:
                _swap(model, res, sc, ids, prompts, lat, steps, kw)
            log(f"seeds {ids[0]}..{ids[-1]}: {time.perf_counter() - t0:.0f} s", flush=True)
            if dump:
                Path(dump).write_text(json.dumps(res))
            continue
        after = [list(range(p[0], base.views[0].context_length)) for p in cpos]
        zero_after = A.run(model, prompts, latents=lat, control=A.Reweight(after, 0.0), record=False, **kw)
        # the renormalised variant: ×0 masks the colour word out of the softmax (its weight goes to the others)
        zero_renorm = A.run(model, prompts, latents=lat, control=A.Reweight(cpos, 0.0, renormalise=True),
                            record=False, **kw)
        # where the colour is read: ×0 on the colour word and the shape word after it (the noun phrase)
        phrase = [p + A.find_tokens(v, sc[i][1]) for p, v, i in zip(cpos, base.views, ids)]
        zero_phrase = A.run(model, prompts, latents=lat, control=A.Reweight(phrase, 0.0), record=False, **kw)
        # ... and on the end token and the padding after it (they have read the whole caption)
        tail = [list(range(v.end_index, v.context_length)) for v in base.views]
        zero_tail = A.run(model, prompts, latents=lat, control=A.Reweight(tail, 0.0), record=False, **kw)
        runs = (zero, zero_after, zero_renorm, zero_phrase, zero_tail)
        for k, (j, ja, jr, jp, jt) in enumerate(zip(*(locate_by_rendering(r.image) for r in runs))):
            res.setdefault("colour_tail_changed", []).append(jt["color"] != judged[k]["color"])
            res["colour_changed"].append(j["color"] != judged[k]["color"])
            res.setdefault("colour_after_changed", []).append(ja["color"] != judged[k]["color"])
            res.setdefault("colour_renorm_changed", []).append(jr["color"] != judged[k]["color"])
            res.setdefault("colour_phrase_changed", []).append(jp["color"] != judged[k]["color"])
        _swap(model, res, sc, ids, prompts, lat, steps, kw)
        log(f"seeds {ids[0]}..{ids[-1]}: {time.perf_counter() - t0:.0f} s", flush=True)
        log(report(res, ids[-1] + 1 - first, steps, w), flush=True)
        if dump:
            Path(dump).write_text(json.dumps(res))
    return res


def _swap(model, res, sc, ids, prompts, lat, steps, kw) -> None:
    """3. word swap: [source, target] pairs from one x_T, with and without the source's maps injected."""
    from pipelines import attention as A
    from pipelines.toyworld.render_judge import locate_by_rendering
    from pipelines.toyworld.world import SHAPES

    targets = [prompt(sc[i][0], random.Random(1000 + i).choice([s for s in SHAPES if s != sc[i][1]]), sc[i][2])
               for i in ids]
    pairs = [p for st in zip(prompts, targets) for p in st]
    lat2 = lat.repeat_interleave(2, dim=0)
    inj = A.run(model, pairs, latents=lat2, control=A.Swap(steps), record=False, **kw)
    plain_t = A.run(model, targets, latents=lat, record=False, **kw)
    ji = locate_by_rendering(inj.image)
    jp = locate_by_rendering(plain_t.image)
    for k, i in enumerate(ids):
        src, tgt = ji[2 * k], ji[2 * k + 1]
        if src["centroid"] is None:
            continue
        d = _dist(src["centroid"], tgt["centroid"])
        res["swap_dist"].append(d)
        res["swap_shape_ok"].append(tgt["shape"] == targets[k].split()[2])
        res["plain_dist"].append(_dist(src["centroid"], jp[k]["centroid"]))


def _dist(a, b) -> float:
    if a is None or b is None:
        return float("inf")
    return ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5


def report(res: dict, n: int, steps: int, w: float, name: str = "toy-sd") -> str:
    pct = lambda xs: f"{100 * sum(xs) / max(len(xs), 1):.0f}%"  # noqa: E731
    lines = [f"{name}, {n} seeds, {steps} DDIM steps, w = {w:g}; judge found a shape in {res['found']}/{n} "
             f"(all three attributes as prompted: {res['match']}/{n})", "",
             "| measure | figure | target |", "|---|---|---|",
             f"| shape word map ∩ true mask, IoU ≥ 0.5 (all steps) | {pct([x >= 0.5 for x in res['iou']])} "
             f"(median IoU {statistics.median(res['iou']):.2f}) | ≥ 80% |"]
    for mode in ("share", "centred"):
        if f"iou_{mode}" in res:
            lines.append(f"| … the shape word's map read as '{mode}' (relative maps) | "
                         f"{pct([x >= 0.5 for x in res[f'iou_{mode}']])} "
                         f"(median {statistics.median(res[f'iou_{mode}']):.2f}) | |")
    for q, ious in enumerate(res["iou_q"]):
        lines.append(f"| … maps of steps quarter {q + 1}/4 only | {pct([x >= 0.5 for x in ious])} "
                     f"(median {statistics.median(ious):.2f}) | |")
    names = {"": "raw DAAM map", "_share": "share of the words' attention (DAAM normalize=True)",
             "_centred": "minus the words' mean map"}
    for key, word in (("bg", "background colour word"), ("bgw", "the word 'background'")):
        for suffix, name in names.items():
            if key + suffix + "_more" not in res:
                continue  # a --json file from before this row existed
            ratio = (f", median ratio {statistics.median(res[key + suffix + '_ratio']):.2f}"
                     if key + suffix + "_ratio" in res else "")
            lines.append(f"| {word}, {name}: mean higher on the background than on the shape | "
                         f"{pct(res[key + suffix + '_more'])}{ratio} | most (for the colour word) |")
            if key + suffix + "_cover" in res:
                lines.append(f"| … thresholded at its mean, covers more of the background than of the shape | "
                             f"{pct(res[key + suffix + '_cover'])} | |")
    rows = [("colour_changed", "×0 on the colour word changes the judged colour (P2P, UNet cross-attention only)",
             "≥ 70%"),
            ("colour_enc_changed", "… ×0 in the text encoder and the UNet (later tokens no longer read the word)",
             "≥ 70%"),
            ("colour_enc_other_kept", "… of those runs: shape and background judged as before", ""),
            ("colour_renorm_changed", "… ×0 renormalised (the word masked out of the softmax)", "(variant)"),
            ("colour_phrase_changed", "… ×0 on the colour word and the shape word after it", "(where the colour is read)"),
            ("colour_tail_changed", "… ×0 on the end token and the padding only", "(where the colour is read)"),
            ("colour_after_changed", "… ×0 on the colour word and every later token", "(contrast)")]
    lines += [f"| {name} | {pct(res[key])} | {target} |" for key, name, target in rows if res.get(key)]
    if res.get("swap_dist"):
        lines += [f"| word swap, maps injected: centroid within 2 px | {pct([d <= 2 for d in res['swap_dist']])} "
                  f"(median {statistics.median(res['swap_dist']):.2f} px) | ≥ 80% |",
                  f"| … target judged as the new shape | {pct(res['swap_shape_ok'])} | |",
                  f"| word swap without injection (same x_T): within 2 px | {pct([d <= 2 for d in res['plain_dist']])} "
                  f"(median {statistics.median(res['plain_dist']):.2f} px) | (contrast) |"]
    lines += readings_report(res)
    return "\n".join(lines) + "\n"


def readings_report(res: dict) -> list[str]:
    """The background test per reading (:func:`readings`): % of seeds whose word map is higher on the
    background than on the shape; per (layer, head) the head chosen on the first half of the seeds, scored on
    the second half (choosing on the seeds it is scored on would flatter it)."""
    pct = lambda xs: f"{100 * sum(xs) / max(len(xs), 1):.0f}%"  # noqa: E731
    keys = [k for k in res if k.startswith("rd:")]
    if not keys:
        return []
    out = ["", "Background test by reading: % of seeds where the word's map is higher on the background than on "
           "the shape (colour word raw / share; the word 'background' raw / share)", "",
           "| layers | steps | colour raw | colour share | 'background' raw | 'background' share |",
           "|---|---|---|---|---|---|"]
    combos = list(dict.fromkeys(tuple(k.split("|")[2:]) for k in keys))
    for g, sp in combos:
        cells = [pct(res.get(f"rd:{w}|{m}|{g}|{sp}", [])) for w in ("colour", "background") for m in ("raw", "share")]
        out.append(f"| {g} | {sp} | " + " | ".join(cells) + " |")
    heads = [k for k in res if k.startswith("hd:")]
    for word in ("colour", "background"):
        for mode in ("raw", "share"):
            ks = [k for k in heads if k.startswith(f"hd:{word}|{mode}|")]
            if not ks:
                continue
            half = len(res[ks[0]]) // 2
            best = max(ks, key=lambda k: sum(res[k][:half]))
            top = max(sum(res[k]) / len(res[k]) for k in ks)
            out.append(f"| one head ({word}, {mode}) | all | best on seeds 1..{half}: {best.split('|', 2)[2]} "
                       f"{pct(res[best][:half])}, on the other {len(res[best]) - half}: {pct(res[best][half:])} "
                       f"(best head over all seeds {100 * top:.0f}%) | | | |")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=40)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--batch", type=int, default=20, help="seeds per batched run (memory)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--model", default=None, help="a registry name (default: the bundled toy-sd)")
    p.add_argument("--first", type=int, default=0, help="first seed (split a long evaluation over processes)")
    p.add_argument("--json", default=None, help="write the raw per-seed figures here after every batch")
    p.add_argument("--merge", nargs="+", default=None, help="print one report from these --json files")
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"comma-separated subset of {PARTS} (the maps and both ×0 re-weightings always run)")
    args = p.parse_args(argv)
    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        res = {k: ([[x for part in parts for x in part[k][q]] for q in range(4)] if k == "iou_q" else
                   sum(part[k] for part in parts) if isinstance(parts[0][k], int) else
                   [x for part in parts for x in part[k]]) for k in parts[0]}
        print(report(res, len(res["iou"]), args.steps, args.guidance))
        return
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from pipelines.models import ModelRegistry

    model = ModelRegistry("cpu").diffusion(args.model)
    parts = tuple(x for x in args.parts.split(",") if x)
    if set(parts) - set(PARTS):
        p.error(f"--parts: choose from {PARTS}")
    res = evaluate(model, args.seeds, args.steps, args.guidance, args.batch, first=args.first, dump=args.json,
                   parts=parts)
    print(report(res, args.seeds, args.steps, args.guidance, model.name))


if __name__ == "__main__":
    main()
