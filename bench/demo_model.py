"""Quality of the bundled `demo` model on freshly generated held-out sets; prints one JSON document.

Held-out means another seed *and* (colour, shape) combinations never seen in training
(core.demo.HELDOUT_COMBOS). Baselines in the same run: chance level, the same architecture with random
weights, and plain nearest neighbours for the analogy task.

    python bench/demo_model.py [--scale 1.0]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0, help="shrink the evaluation sets (1.0 = full)")
    ap.add_argument("--model", default="demo",
                    help="model id to evaluate (e.g. openclip-local:<folder> of a candidate)")
    args = ap.parse_args()

    import numpy as np
    import open_clip
    import torch

    import core
    from core.demo import COLOURS, SHAPES, evaluate
    from core.encoders import OpenCLIPEncoder, clear_encoder_cache, parse_model_id

    t0 = time.perf_counter()
    enc = core.load_encoder(args.model)
    load_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    m = evaluate.evaluate_all(enc.encode_images, enc.encode_texts, scale=args.scale)
    eval_s = time.perf_counter() - t0

    # baseline: same architecture and preprocessing, random weights
    _, target = parse_model_id(args.model)
    cfg = json.loads((Path(target) / "open_clip_config.json").read_text())
    torch.manual_seed(0)
    rnd = OpenCLIPEncoder("random-init", open_clip.CLIP(**cfg["model_cfg"]), enc.preprocess, enc.tokenizer, "cpu")
    base = evaluate.evaluate_all(rnd.encode_images, rnd.encode_texts, scale=min(args.scale, 0.3))

    # language generalisation probe: words never used in training captions
    items = evaluate.generate(int(400 * args.scale) or 50, seed=4242, p_two=0.0, combos="all")
    X = enc.encode_images([it.image for it in items])
    synonyms = {"colour": {"red": "a crimson object", "blue": "an azure object", "green": "an emerald object",
                           "white": "a snowy object"},
                "shape": {"circle": "a disc", "square": "a box", "star": "a pentagram", "cross": "a plus sign"}}
    syn = {}
    for attr, table in synonyms.items():
        names = list(table)
        T = enc.encode_texts([table[k] for k in names])
        keep = [i for i, it in enumerate(items) if getattr(it.objects[0], attr) in names]
        pred = (X[keep] @ T.T).argmax(1)
        truth = np.array([names.index(getattr(items[i].objects[0], attr)) for i in keep])
        syn[f"synonym_{attr}_accuracy"] = float((pred == truth).mean())
        syn[f"synonym_{attr}_chance"] = 1.0 / len(names)

    ckpt = Path(target) / "open_clip_model.safetensors"
    out = {
        "model": args.model,
        "checkpoint_mb": round(ckpt.stat().st_size / 2**20, 2),
        "load_seconds": round(load_s, 3),
        "eval_seconds": round(eval_s, 1),
        "scale": args.scale,
        "metrics": m,
        "random_init_baseline": base,
        "chance": {"zero_shot_colour": 1 / len(COLOURS), "zero_shot_shape": 1 / len(SHAPES)},
        "language_generalisation": syn,
        "targets": {"zero_shot_colour": 0.97, "zero_shot_shape": 0.95, "t2i_recall@10": 0.9, "analogy_top5": 0.9},
    }
    out["targets_met"] = {k: m[k] >= v for k, v in out["targets"].items()}
    clear_encoder_cache()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
