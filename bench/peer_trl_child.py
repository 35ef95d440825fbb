"""The TRL side of the peer benchmark, run in a fresh process as `python bench/peer_trl_dpo.py
--trl-child DIR`: DIR/spec.json says the work, DIR/result.json gets the phases' times, the
evaluation and the digests of the token ids TRL trained and evaluated on."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

from peer_inputs import digest


def trl_child(scratch: Path) -> None:
    import datasets
    import polars as pl
    import torch
    import transformers
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    clock = [("start", time.perf_counter(), time.process_time())]  # (phase ended, wall, CPU)

    def lap(phase):
        clock.append((phase, time.perf_counter(), time.process_time()))

    spec = json.loads((scratch / "spec.json").read_text())
    max_length, max_prompt = spec["max_length"], spec["max_prompt_length"]

    def keep_start(example):
        """Our truncation (amber_repro.data.tokenization.truncate) on TRL's token ids."""
        prompt, chosen, rejected = (
            example["prompt_ids"],
            example["chosen_ids"],
            example["rejected_ids"],
        )
        longer = max(len(chosen), len(rejected))
        if len(prompt) + longer > max_length:
            prompt = prompt[:max_prompt]
        if len(prompt) + longer > max_length:
            cut = max_length - max_prompt
            chosen, rejected = chosen[:cut], rejected[:cut]
        return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected}

    class PeerDPOTrainer(DPOTrainer):
        """DPOTrainer with our truncation, our batch order, and a count of training tokens."""

        train_tokens = 0

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            max_length, args.max_length = args.max_length, None  # no prompt-only filter
            try:
                dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            finally:
                args.max_length = max_length
            return dataset.map(keep_start)

        def _get_train_sampler(self, train_dataset=None):
            return spec["order"]

        def training_step(self, model, inputs, *args, **kwargs):
            self.train_tokens += int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, *args, **kwargs)

    def load(path):
        columns = pl.read_parquet(path).select("prompt", "chosen", "rejected")
        return datasets.Dataset.from_dict(columns.to_dict(as_series=False))  # in memory

    tokenizer = AutoTokenizer.from_pretrained(spec["model"], local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # as ours (training.load_tokenizer)
    model = AutoModelForCausalLM.from_pretrained(
        spec["model"], local_files_only=True, use_safetensors=True, dtype=torch.float32
    )
    optimizer = torch.optim.RMSprop(model.parameters(), lr=spec["lr"])
    warmup = spec["warmup_steps"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1))
    )
    args = DPOConfig(
        output_dir=str(scratch / "trainer"),
        per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1,
        per_device_eval_batch_size=spec["eval_batch_size"],
        precompute_ref_log_probs=True,
        precompute_ref_batch_size=spec["reference_batch_size"],
        max_steps=spec["steps"],
        learning_rate=spec["lr"],
        max_grad_norm=spec["max_grad_norm"],
        beta=spec["beta"],
        loss_type=[spec["loss"]],
        max_length=max_length,
        truncation_mode="keep_start",
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        seed=spec["seed"],
        dataloader_num_workers=0,
    )
    trainer = PeerDPOTrainer(
        model=model,
        args=args,
        train_dataset=load(spec["pairs_train"]),
        eval_dataset=load(spec["pairs_test"]),
        processing_class=tokenizer,
        optimizers=(optimizer, scheduler),
    )
    lap("setup_and_reference")
    train_metrics = trainer.train().metrics
    lap("train")
    eval_metrics = trainer.evaluate()
    lap("eval")
    trainer.save_model(spec["out_dir"])
    lap("save")

    def triples(dataset):
        columns = dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"]).to_dict()
        return [list(t) for t in zip(*columns.values(), strict=True)]

    result = {
        "steps_done": trainer.state.global_step,
        "train_tokens": trainer.train_tokens,
        "train_runtime_s": train_metrics["train_runtime"],
        "phases_s": {c[0]: c[1] - b[1] for b, c in itertools.pairwise(clock)},
        "phases_cpu_s": {c[0]: c[2] - b[2] for b, c in itertools.pairwise(clock)},
        "torch_threads": torch.get_num_threads(),
        "activation_checkpointing": bool(trainer.args.activation_checkpointing),
        "eval": {k: v for k, v in eval_metrics.items() if isinstance(v, int | float)},
        "n_train": len(trainer.train_dataset),
        "n_test": len(trainer.eval_dataset),
        "digests": {
            "train": digest(triples(trainer.train_dataset)),
            "test": digest(triples(trainer.eval_dataset)),
        },
        "versions": {
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "datasets": datasets.__version__,
        },
    }
    Path(spec["result"]).write_text(json.dumps(result, indent=1))
