"""Direct preference optimisation from the SFT checkpoint, against stored reference log-probs.

Read top to bottom: tokenize pairs and draw the held-out sample, load the policy, restore a
checkpoint if this same run was interrupted, then one loop over optimizer steps in the reference's
batch order (batch_order.py). Each micro-batch runs chosen and rejected through one forward pass,
takes the loss from `losses.preference_loss`, and logs the reference's metrics; held-out metrics
before the first step and every --eval-every training examples, as the reference logs them.
`--reference-mode live` keeps a frozen reference model in the loop instead of reading stored
log-probs (for comparison; see bench/dpo_reference_modes.py).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import polars as pl
import torch
from tqdm import tqdm

from amber_repro.config.cli import (
    add_settings_arguments,
    add_training_arguments,
    limits,
    training_settings,
)
from amber_repro.config.sections import DPOSettings, ReferenceSettings
from amber_repro.models.export import model_card, write_model_dir
from amber_repro.provenance.hashing import sha256_file
from amber_repro.training import distributed
from amber_repro.training.batch_order import (
    evaluates_before,
    evaluation_sample,
    evaluation_steps,
    prompt_groups,
    training_batches,
)
from amber_repro.training.checkpointing import start_run
from amber_repro.training.losses import preference_loss, reward_metrics
from amber_repro.training.pairs import (
    ON_MALFORMED,
    PAIR_TEXT,
    concatenated_logps,
    drop_or_refuse_eos,
    read_reference_logps,
    tokenize_pairs,
)
from amber_repro.training.runtime import (
    PRECISIONS,
    autocast,
    load_model,
    load_tokenizer,
    peak_memory_bytes,
    processes,
    set_kernels,
)
from amber_repro.training.schedule import (
    micro_batch_size,
    micro_batches,
    optimizer_step,
    total_steps,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", type=Path, required=True, help="pairs-train.parquet")
    parser.add_argument(
        "--ref-logps", type=Path, required=True, help="reference log-probs of --pairs"
    )
    parser.add_argument(
        "--eval-pairs", type=Path, required=True, help="pairs-test.parquet (held out)"
    )
    parser.add_argument(
        "--eval-ref-logps", type=Path, required=True, help="reference log-probs of --eval-pairs"
    )
    # For comparisons only (bench/dpo_reference_modes.py); the workflow always uses stored
    # log-probs.
    parser.add_argument("--reference-mode", choices=["precomputed", "live"], default="precomputed")
    parser.add_argument(
        "--reference-precision",
        choices=["float32", "float16", "bf16"],
        default=ReferenceSettings().precision,
        help="dtype of the live reference model (--reference-mode live)",
    )
    add_training_arguments(parser, DPOSettings)
    add_settings_arguments(parser, ON_MALFORMED)


def load_pairs(
    pairs_path: Path, ref_path: Path, tokenizer, args
) -> tuple[list[dict], torch.Tensor, list[list[int]]]:
    """Tokenized pairs, their reference log-probs as a (pairs, 2) tensor [chosen, rejected], and
    the pairs grouped by prompt (batch_order.prompt_groups)."""
    # The rows ref-logps dropped (the same test, the same tokenizer), so the join below matches.
    frame, _ = drop_or_refuse_eos(
        pl.read_parquet(pairs_path), tokenizer, pairs_path, PAIR_TEXT, args.on_malformed
    )
    reference = read_reference_logps(ref_path, frame)
    ref = torch.tensor(
        reference.select("reference_chosen_logps", "reference_rejected_logps").to_numpy(),
        dtype=torch.float32,
    )
    groups = prompt_groups(frame["prompt"].to_list())
    return tokenize_pairs(tokenizer, frame, limits(args)), ref, groups


def pair_losses(model, reference_model, pairs, ref, pad_id, args, device):
    """Losses and rewards of a micro-batch; the reference's log-probs come stored or live."""
    with autocast(args, device):
        policy_chosen, policy_rejected = concatenated_logps(
            model, pairs, pad_id, device, args.length_group_min_saving, args.share_prompt
        )
    if reference_model is not None:
        with torch.no_grad():
            ref_chosen, ref_rejected = concatenated_logps(
                reference_model,
                pairs,
                pad_id,
                device,
                args.length_group_min_saving,
                args.share_prompt,
            )
    else:
        ref_chosen, ref_rejected = ref[:, 0].to(device), ref[:, 1].to(device)
    losses, chosen_rewards, rejected_rewards = preference_loss(
        policy_chosen,
        policy_rejected,
        ref_chosen,
        ref_rejected,
        beta=args.beta,
        loss_type=args.loss,
        label_smoothing=args.label_smoothing,
        reference_free=args.reference_free,
    )
    return (
        losses,
        chosen_rewards,
        rejected_rewards,
        policy_chosen.detach(),
        policy_rejected.detach(),
    )


@torch.no_grad()
def evaluate(model, reference_model, pairs, ref, sample, pad_id, args, device) -> dict[str, float]:
    """Held-out loss and reward metrics over the sampled pairs (batch_order.evaluation_sample), in
    batches of --eval-batch-size, averaged over pairs as the reference does."""
    model.eval()
    parts = []
    for start in range(0, len(sample), args.eval_batch_size):
        chunk = sample[start : start + args.eval_batch_size]
        parts.append(
            pair_losses(
                model, reference_model, [pairs[i] for i in chunk], ref[chunk], pad_id, args, device
            )
        )
    losses, chosen, rejected, logps_chosen, logps_rejected = (
        torch.cat(t) for t in zip(*parts, strict=True)
    )
    return {
        "eval/loss": losses.mean().item(),
        **{f"eval/{k}": v for k, v in reward_metrics(chosen, rejected).items()},
        "eval/logps/chosen": logps_chosen.mean().item(),
        "eval/logps/rejected": logps_rejected.mean().item(),
    }


def main(args: argparse.Namespace) -> None:
    set_kernels(args.deterministic, args.tf32)
    procs = processes()
    micro = micro_batch_size(args.batch_size, args.gradient_accumulation_steps, procs.world_size)
    every = evaluation_steps(args.eval_every, args.batch_size)  # checked before anything loads
    if procs.world_size > 1 and args.length_group_min_saving:
        # Sharded processes must run the same forward passes; groups differ between processes.
        print(
            f"dpo: length_group_min_saving {args.length_group_min_saving} ignored: applies to "
            f"one process, not {procs.world_size}; recorded as 0"
        )
        args.length_group_min_saving = 0
    tokenizer = load_tokenizer(args.model)
    pad_id = tokenizer.pad_token_id
    train_pairs, train_ref, groups = load_pairs(args.pairs, args.ref_logps, tokenizer, args)
    eval_pairs, eval_ref, eval_groups = load_pairs(
        args.eval_pairs, args.eval_ref_logps, tokenizer, args
    )
    sample = evaluation_sample(eval_groups, args.eval_examples, args.eval_batch_size, args.seed)

    reference_model = None
    if args.reference_mode == "live":
        reference_model = load_model(
            args.model, PRECISIONS[args.reference_precision], procs.device
        ).eval()
        reference_model = distributed.shard(reference_model, "float32")
    model, checkpoints, metrics, start_step = start_run(
        args, "dpo", [args.model, args.pairs, args.ref_logps], procs
    )
    _, optimizer, scheduler, _ = checkpoints.training_state  # the ones checkpoints save and restore

    total = total_steps(len(train_pairs), args)

    def held_out() -> dict[str, float]:
        return evaluate(
            model, reference_model, eval_pairs, eval_ref, sample, pad_id, args, procs.device
        )

    if start_step == 0 and args.do_first_eval:
        metrics.log(0, held_out())
    progress = tqdm(
        total=total,
        initial=start_step,
        desc="dpo",
        unit="step",
        mininterval=5,
        disable=not procs.is_main,
    )
    step, tokens, started = start_step, 0, time.perf_counter()
    final_eval = None
    for step, indices in training_batches(
        args.shuffle, groups, args.batch_size, args.seed, args.n_epochs, start_step
    ):
        if step >= total:
            break
        model.train()
        sums = {
            "loss": 0.0,
            "rewards/chosen": 0.0,
            "rewards/rejected": 0.0,
            "rewards/accuracies": 0.0,
            "rewards/margins": 0.0,
            "logps/chosen": 0.0,
            "logps/rejected": 0.0,
        }
        chunks = micro_batches(indices, micro, procs)
        for index, chunk in enumerate(chunks):
            distributed.gradient_sync(model, index == len(chunks) - 1)
            pairs = [train_pairs[i] for i in chunk]
            losses, chosen_r, rejected_r, logps_c, logps_r = pair_losses(
                model, reference_model, pairs, train_ref[chunk], pad_id, args, procs.device
            )
            loss = losses.mean() / args.gradient_accumulation_steps
            checkpoints.check_finite(loss, step)
            loss.backward()
            values = {
                "loss": loss.item() * args.gradient_accumulation_steps,
                **reward_metrics(chosen_r, rejected_r),
                "logps/chosen": logps_c.mean().item(),
                "logps/rejected": logps_r.mean().item(),
            }
            for key, value in values.items():
                sums[key] += value / args.gradient_accumulation_steps
            tokens += sum(
                len(p["chosen"]["input_ids"]) + len(p["rejected"]["input_ids"]) for p in pairs
            )
        grad_norm = optimizer_step(model, optimizer, scheduler, args.max_grad_norm)
        logged = {
            **distributed.mean_over_processes(sums),
            "grad_norm": grad_norm,
            "lr": scheduler.get_last_lr()[0],
            "examples": (step + 1) * args.batch_size,
        }
        # The reference evaluates every eval_every examples (before the next batch, the same
        # weights); ours also after the last step, for the model card.
        if evaluates_before(step + 1, every, True) or step + 1 == total:
            logged.update(held_out_metrics := held_out())
            if step + 1 == total:  # the final weights' evaluation: not run a second time below
                final_eval = held_out_metrics
        metrics.log(step + 1, logged)
        progress.update(1)
        checkpoints.after_step(step + 1)
        step += 1
    progress.close()
    metrics.close()
    seconds = time.perf_counter() - started
    if final_eval is None:  # resumed at the last step, so the loop ran no step
        final_eval = held_out()
    tokens = distributed.sum_over_processes(tokens)
    weights = distributed.full_state_dict(model)
    speed = {
        "processes": procs.world_size,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens / max(seconds, 1e-9),
        "peak_memory_bytes": peak_memory_bytes(procs.device),
    }
    if procs.is_main:
        print(
            f"dpo: {step} optimizer steps in {seconds:.1f} s on {procs.world_size} process(es), "
            f"{speed['tokens_per_second']:.0f} tokens/s; held-out {final_eval}"
        )

    if procs.is_main:
        settings = training_settings(args)
        inputs = {
            str(p): sha256_file(p)
            for p in (args.pairs, args.ref_logps, args.eval_pairs, args.eval_ref_logps)
        }
        card = model_card(
            "AmberSafe DPO (amber-repro)",
            f"Direct preference optimisation ({args.loss}, beta {args.beta}"
            f"{', label smoothing ' + str(args.label_smoothing) if args.label_smoothing else ''}"
            f"{', reference-free' if args.reference_free else ''}) from the SFT checkpoint on "
            "PKU-SafeRLHF pairs whose safety labels differ (chosen = the safe response), with "
            "the reference model's log-probs precomputed.",
            base_model=str(args.model),
            data={
                "pairs": args.pairs,
                "pairs sha256": inputs[str(args.pairs)],
                "reference log-probs": args.ref_logps,
            },
            settings=settings,
            results={k: v for k, v in final_eval.items()},
        )
        record = {
            "stage": "dpo",
            "settings": settings,
            "base_model": str(args.model),
            "inputs": inputs,
            "results": final_eval,
            "speed": speed,
            # data.on_malformed: drop (the pairs whose text holds the EOS token)
            "pairs_dropped": {
                str(path): pl.scan_parquet(path).select(pl.len()).collect().item() - len(kept)
                for path, kept in ((args.pairs, train_pairs), (args.eval_pairs, eval_pairs))
            },
        }
        write_model_dir(
            model,
            tokenizer,
            args.out_dir,
            card,
            record,
            state_dict=weights,
            extra={"metrics.jsonl": metrics.path, "tensorboard": args.state_dir / "tensorboard"},
        )
        shutil.rmtree(args.state_dir)  # finished: the checkpoints are no longer needed
    distributed.shutdown()
