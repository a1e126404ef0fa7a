"""The paper's experiment at small scale: `python train_scripts/reproduce.py --budget short` (same as
`hf-kd reproduce`)."""

import sys

from hf_kd.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", *sys.argv[1:]]))
