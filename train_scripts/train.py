"""Train an hf-kd ranking model from teacher scores.

    python train_scripts/train.py --config train_scripts/configs/bert_dot.yaml [--key value ...]
    accelerate launch train_scripts/train.py --config train_scripts/configs/bert_dot.yaml
    accelerate launch --multi_gpu --num_processes 2 train_scripts/train.py --config ... --use_cpu true

The last line trains with two CPU processes (gloo). `accelerate launch --cpu --num_processes 2` also runs, but
accelerate starts several CPU processes only through MPI (`--mpirun_hostfile`); without it the run is one process
and a warning says so.

Every field of `hf_kd.training.HfKdArguments` and `transformers.TrainingArguments` can be set in the YAML file or
on the command line (which wins). The final model and tokenizer are saved in `output_dir`, loadable with
`transformers.AutoModel.from_pretrained(output_dir)` after `import hf_kd`; `train_summary.json` sits beside them.
"""

import sys

from hf_kd.training.run import main

if __name__ == "__main__":
    sys.exit(main())
