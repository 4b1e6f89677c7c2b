"""NATS-Bench tss comparison of LayerNAS, random search, REA and REINFORCE.

Regenerates everything in results/nats/ (see layernas/nats_comparison.py and
docs/nats_comparison.md):

    python benchmarks/nats_comparison.py            # 100 seeds, 2 processes, < 2 min
    python benchmarks/nats_comparison.py --seeds 5 --out /tmp/nats   # smoke run
"""

import sys

from layernas.nats_comparison import main

if __name__ == "__main__":
    sys.exit(main())
