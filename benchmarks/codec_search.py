"""End-to-end LayerNAS search over ``codec-hyperprior`` with the real codec trainer.

The library-call equivalent of ``layernas search --space codec-hyperprior
--target-decoder-gmacs G --lambda L``. On this CPU each trial trains a width-scaled proxy
for a few dozen steps, so the default budget only covers the first searched layers; the
point is that the pieces (space, trainer evaluator, GMACs target, run loop) work together.

    python benchmarks/codec_search.py --budget 6 --target-decoder-gmacs 10 --lambda 0.013

Writes ``results/codec/search/`` (history.csv, frontier.csv, result.json from the run
loop) and provenance.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=int, default=6, help="evaluations")
    p.add_argument("--target-decoder-gmacs", type=float, default=10.0)
    p.add_argument("--lambda", dest="lmbda", type=float, default=0.0130)
    p.add_argument("--width-scale", type=float, default=0.125)
    p.add_argument("--proxy-steps", type=int, default=30)
    p.add_argument("--num-buckets", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "results" / "codec" / "search"))
    args = p.parse_args(argv)

    import layernas
    from layernas.provenance import write_provenance
    from layernas.search_spaces.codec import CodecHyperpriorSpace
    from layernas.target import Target
    from layernas.trainers.codec_train import make_codec_evaluator

    start = time.time()
    space = CodecHyperpriorSpace()
    evaluator = make_codec_evaluator(space, args.lmbda, width_scale=args.width_scale,
                                     steps=args.proxy_steps, seed=args.seed)
    target = Target("decoder_gmacs", max=args.target_decoder_gmacs)
    result = layernas.search(space, evaluator, budget=args.budget, target=target, seed=args.seed,
                             searcher_options={"num_buckets": args.num_buckets}, out_dir=args.out,
                             settings={"lambda": args.lmbda, "width_scale": args.width_scale,
                                       "proxy_steps": args.proxy_steps})
    print(result.summary())
    best = result.best
    if best:
        print(json.dumps({"best_costs": best.get("costs")}, default=str))
    write_provenance(args.out, time.time() - start, " ".join(["python"] + sys.argv), args=vars(args))


if __name__ == "__main__":
    main()
