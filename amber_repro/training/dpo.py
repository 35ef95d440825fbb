"""Direct preference optimisation from the SFT checkpoint, against stored reference log-probs.

Read top to bottom: tokenize pairs and draw the held-out sample, load the policy, restore a
checkpoint if this same run was interrupted, then the loop shared with SFT and AmberChat (loop.py:
the reference's batch order, accumulation, held-out metrics before the first step and every
eval_every training examples, checkpoints). DPO's micro-step runs chosen and rejected through one
forward pass, takes the loss from `losses.preference_loss`, and logs the reference's metrics.
`--reference-mode live` keeps a frozen reference model in the loop instead of reading stored
log-probs (for comparison; see bench/dpo_reference_modes.py).
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch

from amber_repro.config.cli import add_training_arguments, run_settings
from amber_repro.config.sections import (
    DataSettings,
    DPOSettings,
    ReferenceSettings,
    Reproducibility,
    Tokenization,
)
from amber_repro.data.tokenization import Limits
from amber_repro.models.export import model_card
from amber_repro.provenance.hashing import sha256_file
from amber_repro.training import distributed, loop
from amber_repro.training.batch_order import evaluation_sample, prompt_groups
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
)

# The settings main receives, in this order.
SECTIONS = (DPOSettings, Tokenization, Reproducibility, ON_MALFORMED)


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
    add_training_arguments(parser, *SECTIONS)


@dataclass(frozen=True)
class Pairs:
    """One split's tokenized pairs, their reference log-probs as a (pairs, 2) tensor [chosen,
    rejected], the pairs grouped by prompt (batch_order.prompt_groups), and the rows dropped."""

    pairs: list[dict]
    ref: torch.Tensor
    groups: list[list[int]]
    dropped: int


def load_pairs(
    pairs_path: Path, ref_path: Path, tokenizer, tokens: Tokenization, on_malformed: str
) -> Pairs:
    # The rows ref-logps dropped (the same test, the same tokenizer), so the join below matches.
    frame, dropped = drop_or_refuse_eos(
        pl.read_parquet(pairs_path), tokenizer, pairs_path, PAIR_TEXT, on_malformed
    )
    reference = read_reference_logps(ref_path, frame)
    ref = torch.tensor(
        reference.select("reference_chosen_logps", "reference_rejected_logps").to_numpy(),
        dtype=torch.float32,
    )
    limits = Limits(tokens.max_length, tokens.max_prompt_length)
    pairs = tokenize_pairs(tokenizer, frame, limits)
    return Pairs(pairs, ref, prompt_groups(frame["prompt"].to_list()), dropped)


def pair_losses(model, reference_model, pairs, ref, pad_id, dpo: DPOSettings, device):
    """Losses and rewards of a micro-batch; the reference's log-probs come stored or live."""
    layout = (dpo.length_group_min_saving, dpo.share_prompt)
    with autocast(dpo.precision, device):
        policy_chosen, policy_rejected = concatenated_logps(model, pairs, pad_id, device, *layout)
    if reference_model is not None:
        with torch.no_grad():
            ref_chosen, ref_rejected = concatenated_logps(
                reference_model, pairs, pad_id, device, *layout
            )
    else:
        ref_chosen, ref_rejected = ref[:, 0].to(device), ref[:, 1].to(device)
    losses, chosen_rewards, rejected_rewards = preference_loss(
        policy_chosen,
        policy_rejected,
        ref_chosen,
        ref_rejected,
        beta=dpo.beta,
        loss_type=dpo.loss,
        label_smoothing=dpo.label_smoothing,
        reference_free=dpo.reference_free,
    )
    return (
        losses,
        chosen_rewards,
        rejected_rewards,
        policy_chosen.detach(),
        policy_rejected.detach(),
    )


def dpo_step(model, reference_model, train: Pairs, pad_id, dpo: DPOSettings, device):
    """DPO's micro-step (loop.MicroStep): chosen and rejected through one forward pass, the loss
    over the accumulation steps, and the reference's metrics."""
    accumulation = dpo.gradient_accumulation_steps

    def step(chunk: list[int]) -> loop.MicroBatch:
        pairs = [train.pairs[i] for i in chunk]
        losses, chosen_r, rejected_r, logps_c, logps_r = pair_losses(
            model, reference_model, pairs, train.ref[chunk], pad_id, dpo, device
        )
        loss = losses.mean() / accumulation
        values = {
            "loss": loss.item() * accumulation,
            **reward_metrics(chosen_r, rejected_r),
            "logps/chosen": logps_c.mean().item(),
            "logps/rejected": logps_r.mean().item(),
        }
        tokens = sum(len(p["chosen"]["input_ids"]) + len(p["rejected"]["input_ids"]) for p in pairs)
        return loop.MicroBatch(loss, {k: v / accumulation for k, v in values.items()}, tokens)

    return step


@torch.no_grad()
def evaluate(model, reference_model, held_out: Pairs, sample, pad_id, dpo, device) -> dict:
    """Held-out loss and reward metrics over the sampled pairs (batch_order.evaluation_sample), in
    batches of dpo.eval_batch_size, averaged over pairs as the reference does."""
    model.eval()
    parts = []
    for start in range(0, len(sample), dpo.eval_batch_size):
        chunk = sample[start : start + dpo.eval_batch_size]
        pairs = [held_out.pairs[i] for i in chunk]
        parts.append(
            pair_losses(model, reference_model, pairs, held_out.ref[chunk], pad_id, dpo, device)
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


def main(
    args: argparse.Namespace,
    dpo: DPOSettings,
    tokens: Tokenization,
    repro: Reproducibility,
    data: DataSettings,
) -> None:
    procs = loop.prepare(dpo, repro)
    one_process_layout(dpo, procs.world_size)
    tokenizer = load_tokenizer(args.model)
    pad_id = tokenizer.pad_token_id
    train = load_pairs(args.pairs, args.ref_logps, tokenizer, tokens, data.on_malformed)
    held_out = load_pairs(
        args.eval_pairs, args.eval_ref_logps, tokenizer, tokens, data.on_malformed
    )
    sample = evaluation_sample(held_out.groups, dpo.eval_examples, dpo.eval_batch_size, dpo.seed)
    reference_model = live_reference(args, procs.device)
    settings = run_settings(args, SECTIONS, (dpo, tokens, repro, data))
    inputs = [args.model, args.pairs, args.ref_logps]
    run = loop.start_run("dpo", dpo, settings, (args.model, args.state_dir), inputs, procs)
    step = dpo_step(run.model, reference_model, train, pad_id, dpo, procs.device)
    held_out_metrics = functools.partial(
        evaluate,
        reference_model=reference_model,
        held_out=held_out,
        sample=sample,
        pad_id=pad_id,
        dpo=dpo,
        device=procs.device,
    )
    done = loop.train(
        run, dpo, len(train.pairs), step, args.max_steps, train.groups, held_out_metrics
    )
    speed = loop.speed(run, done)
    if procs.is_main:
        print(
            f"dpo: {done.steps} optimizer steps in {done.seconds:.1f} s on {procs.world_size} "
            f"process(es), {speed['tokens_per_second']:.0f} tokens/s; held-out {done.final_eval}"
        )
    describe = functools.partial(describe_model, args, dpo, settings, done, speed, train, held_out)
    loop.finish(run, tokenizer, args.out_dir, args.state_dir, describe)


def one_process_layout(dpo: DPOSettings, world_size: int) -> None:
    """Length groups apply to one process: sharded processes must run the same forward passes,
    and groups differ between processes."""
    if world_size > 1 and dpo.length_group_min_saving:
        print(
            f"dpo: length_group_min_saving {dpo.length_group_min_saving} ignored: applies to "
            f"one process, not {world_size}; recorded as 0"
        )
        dpo.length_group_min_saving = 0


def live_reference(args: argparse.Namespace, device):
    """The frozen reference model for --reference-mode live; None for stored log-probs."""
    if args.reference_mode != "live":
        return None
    model = load_model(args.model, PRECISIONS[args.reference_precision], device).eval()
    return distributed.shard(model, "float32")


def describe_model(args, dpo: DPOSettings, settings, done, speed, train, held_out):
    """The DPO folder's model card and record."""
    inputs = {
        str(p): sha256_file(p)
        for p in (args.pairs, args.ref_logps, args.eval_pairs, args.eval_ref_logps)
    }
    card = model_card(
        "AmberSafe DPO (amber-repro)",
        f"Direct preference optimisation ({dpo.loss}, beta {dpo.beta}"
        f"{', label smoothing ' + str(dpo.label_smoothing) if dpo.label_smoothing else ''}"
        f"{', reference-free' if dpo.reference_free else ''}) from the SFT checkpoint on "
        "PKU-SafeRLHF pairs whose safety labels differ (chosen = the safe response), with "
        "the reference model's log-probs precomputed.",
        base_model=str(args.model),
        data={
            "pairs": args.pairs,
            "pairs sha256": inputs[str(args.pairs)],
            "reference log-probs": args.ref_logps,
        },
        settings=settings,
        results=dict(done.final_eval),
    )
    record = {
        "stage": "dpo",
        "settings": settings,
        "base_model": str(args.model),
        "inputs": inputs,
        "results": done.final_eval,
        "speed": speed,
        # data.on_malformed: drop (the pairs whose text holds the EOS token)
        "pairs_dropped": {str(args.pairs): train.dropped, str(args.eval_pairs): held_out.dropped},
    }
    return card, record
