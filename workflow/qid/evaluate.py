"""Cross-entropy of a model on eval texts, normalised to a reference tokenizer's token count.

Each text is scored as a whole: BOS + its tokens, cut into windows of `context` tokens that
overlap by one token, so every token of the text is predicted exactly once. Windows are
sorted by length and batched up to `batch_tokens`, right-padded (a causal model's logits at
real positions do not see the padding), so little compute goes to padding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from qid import QidError, grid
from qid.divergence import Divergence, TopK
from qid.grid import BASE
from qid.strict_json import dumps


def windows(ids: list[int], bos: int, context: int) -> list[list[int]]:
    seq, stride = [bos, *ids], context - 1
    return [seq[s : s + context] for s in range(0, len(seq) - 1, stride)]


@torch.inference_mode()
def text_nll(
    model,
    token_ids: list[list[int]],
    bos: int,
    context: int,
    batch_tokens: int,
    track: TopK | Divergence | None = None,
) -> np.ndarray:
    """Total NLL in nats of each text (list of token ids), as float64. `track` (qid.divergence)
    sees each batch's logits after its loss is taken, which it leaves untouched."""
    items = [
        (t, j, w)
        for t, ids in enumerate(token_ids)
        for j, w in enumerate(windows(ids, bos, context))
    ]
    items.sort(key=lambda item: len(item[2]), reverse=True)
    nll = np.zeros(len(token_ids), dtype=np.float64)
    device = next(model.parameters()).device
    i = 0
    while i < len(items):
        width = len(items[i][2])
        batch = items[i : i + max(1, batch_tokens // width)]
        i += len(batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, (_, _, w) in enumerate(batch):
            ids[row, : len(w)] = torch.tensor(w)
            mask[row, : len(w)] = 1
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        # Targets are the next tokens; the last position and padding are ignored. Scoring the
        # full logits tensor (not a shifted slice) avoids copying it.
        targets = torch.full_like(ids, -100)
        targets[:, :-1] = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        flat = logits.view(-1, logits.shape[-1])
        if track is None:
            token_nll = F.cross_entropy(flat, targets.view(-1), reduction="none", ignore_index=-100)
        else:  # what cross_entropy computes (ATen: nll_loss of log_softmax), its log-probs kept
            logprobs = torch.log_softmax(flat, dim=-1)
            del logits, flat  # the tracker overwrites the log-probs; the logits are not needed
            token_nll = F.nll_loss(logprobs, targets.view(-1), reduction="none", ignore_index=-100)
        per_row = token_nll.view(ids.shape).sum(dim=1).double().cpu().numpy()
        np.add.at(nll, [t for t, _, _ in batch], per_row)
        if track is not None:
            track.batch(logprobs.view(*ids.shape, -1), mask, [(t, j) for t, j, _ in batch])
    return nll


@dataclass(frozen=True)
class Encoded:
    """Eval texts tokenised for one model tokenizer, with their reference-token count."""

    token_ids: list[list[int]]
    bos: int
    reference_tokens: int
    utf8_bytes: int = 0  # of the texts, for bits per byte (qid.divergence)

    @property
    def model_tokens(self) -> int:
        return sum(len(ids) for ids in self.token_ids)


def encode(tokenizer, texts: list[str], reference_tokenizer=None) -> Encoded:
    """Tokenise once; the reference is the model's own tokenizer when None."""
    if not texts:
        raise ValueError("no eval texts: the eval set is empty")
    token_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if reference_tokenizer is None:
        ref_tokens = sum(len(ids) for ids in token_ids)
    else:
        ref_ids = reference_tokenizer(texts, add_special_tokens=False)["input_ids"]
        ref_tokens = sum(len(ids) for ids in ref_ids)
    utf8_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return Encoded(token_ids, bos, ref_tokens, utf8_bytes)


CPU_BATCH_TOKENS = 2048  # measured on the embedded default: 1.5x faster than 16k on 2 cores


def auto_batch_tokens(model, context: int, free_bytes: int | None = None) -> int:
    """Tokens per forward pass that fit the device: on a GPU, half its free memory over the
    bytes a token costs at the widest point (the fp32 logits, their log-softmax and the loss:
    ~3 x vocabulary x 4 bytes, plus a few hidden-size activations in the weights' dtype)."""
    device = next(model.parameters()).device
    if free_bytes is None:
        if device.type != "cuda":
            return CPU_BATCH_TOKENS
        free_bytes = torch.cuda.mem_get_info(device)[0]
    config = model.config
    itemsize = next(model.parameters()).element_size()
    per_token = 3 * config.vocab_size * 4 + 16 * config.hidden_size * itemsize
    return max(context, int(0.5 * free_bytes / per_token) // context * context)


def score(
    model,
    encoded: Encoded,
    context: int,
    batch_tokens: int | str,
    keep: TopK | None = None,
    reference: TopK | None = None,
) -> dict:
    """Loss per reference token of `model` on tokenised texts. `keep` collects the model's
    top-k log-probabilities (a 16-bit model's); `reference`, such a collection, adds the KL
    from it, top-1 agreement and QiD in bits per byte (qid.divergence)."""
    if batch_tokens == "auto":
        batch_tokens = auto_batch_tokens(model, context)
    start = time.perf_counter()
    track = keep if reference is None else Divergence(reference, len(encoded.token_ids))
    nll = text_nll(model, encoded.token_ids, encoded.bos, context, batch_tokens, track)
    if keep is not None:
        keep.nll_per_text = nll
    divergence = track.summary(nll, encoded.utf8_bytes) if reference is not None else {}
    return {
        "loss": float(nll.sum() / encoded.reference_tokens),
        "loss_per_model_token": float(nll.sum() / encoded.model_tokens),
        "nll_sum": float(nll.sum()),
        "model_tokens": encoded.model_tokens,
        "reference_tokens": encoded.reference_tokens,
        "texts": len(encoded.token_ids),
        "seconds": round(time.perf_counter() - start, 3),
        "batch_tokens": batch_tokens,
        "nll_per_text": nll.tolist(),
        "bytes": encoded.utf8_bytes,
        **divergence,
    }


def evaluate(
    model,
    tokenizer,
    texts: list[str],
    context: int,
    batch_tokens: int,
    reference_tokenizer=None,
    keep: TopK | None = None,
    reference: TopK | None = None,
) -> dict:
    """Loss per reference token; the reference is the model's own tokenizer when None."""
    encoded = encode(tokenizer, texts, reference_tokenizer)
    return score(model, encoded, context, batch_tokens, keep, reference)


def resolve_dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)


@cache
def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("qid", "torch", "transformers", "gptqmodel", "bitsandbytes"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


@cache
def _tokenizer(source: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source)


@cache
def _encoded(tokenizer: str, reference: str | None, texts: Path) -> Encoded:
    """Eval texts tokenised once per (tokenizer, reference) in a process: a checkpoint's job
    scores the 16-bit model and every cell on the same ids."""
    from qid.data import read_texts

    return encode(
        _tokenizer(tokenizer), read_texts(texts), _tokenizer(reference) if reference else None
    )


def run(
    checkpoint: Path,
    texts: list[Path],
    outs: list[Path],
    *,
    method: str | None = None,
    bits: int | None = None,
    quantized: Path | None = None,
    context: int = 128,
    batch_tokens: int | str = "auto",
    reference_tokenizer: str | None = None,
    dtype: str = "auto",
    meta: dict | None = None,
    fake_quant: bool = False,
    settings: str | None = None,
    kl_reference: dict[str, TopK] | None = None,
) -> list[dict]:
    """Evaluate one model (16-bit, or a quantized cell) on several eval sets, loading it once.

    Texts are tokenised with the 16-bit checkpoint's tokenizer, which its quantized cells share.
    settings: the digest of what the result was computed from (qid.cells), kept in each record.
    kl_reference: by eval-set path; the 16-bit model's evaluation fills it (qid.divergence.TopK),
    a quantized cell's reads it and adds kl, kl_se, top1_agreement and qid_bpb to its records.
    """
    from transformers import AutoModelForCausalLM

    from qid.bitnet import restore as restore_bitnet
    from qid.checkpoints import non_embedding_params, open_checkpoint, read_meta
    from qid.data import check_texts
    from qid.grid import CHECKPOINT_META
    from qid.quantize import check_bits, load_quantized

    # Every path is checked before a model loads (one line each, see qid.checkpoints).
    checkpoint = open_checkpoint(checkpoint)
    for text_path in texts:
        check_texts(text_path, "--texts")
    # A trained suite's checkpoint says its suite, step, D and N; any other causal LM has N
    # counted here (below) and the rest left empty.
    own = read_meta(checkpoint) if (Path(checkpoint) / CHECKPOINT_META).is_file() else {}
    meta = {**own, **(meta or {})}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if method is None:
        variant = BASE
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=resolve_dtype(dtype, device))
        model = restore_bitnet(model)  # a BitNet b1.58 checkpoint gets its BitLinears back
        model = model.to(device).eval()
        source = checkpoint
    else:
        if bits is None or quantized is None:
            raise QidError("qid evaluate: --method needs --bits and --quantized")
        check_bits(method, bits)
        quantized = open_checkpoint(quantized, "--quantized")
        variant = grid.variant(method, bits)
        model = load_quantized(method, quantized, fake_quant)
        source = quantized
    if meta.get("n_params") is None and method is None:
        meta["n_params"] = non_embedding_params(model)
    versions = library_versions()
    records = []
    for text_path, out in zip(texts, outs, strict=True):
        encoded = _encoded(str(checkpoint), reference_tokenizer, Path(text_path))
        keep = reference = None
        if kl_reference is not None and method is None:
            keep = kl_reference[str(text_path)] = TopK()
        elif kl_reference is not None:
            reference = kl_reference.get(str(text_path))
        result = score(model, encoded, context, batch_tokens, keep, reference)
        record = {
            **{k: meta.get(k) for k in ("suite", "size", "step", "tokens", "n_params")},
            # The learning-rate schedule at the checkpoint (qid.schedule), where it is known.
            **{k: meta.get(k) for k in ("lr", "schedule", "decay_step")},
            "variant": variant,
            "method": method or BASE,
            "bits": bits or 16,
            "eval_set": Path(text_path).stem,
            "texts_file": str(text_path),
            "checkpoint": str(checkpoint),
            "model": str(source),
            "reference_tokenizer": reference_tokenizer or "own",
            # The settings a loss depends on, so that a result says how it was measured (score's
            # batch_tokens is provenance: padding under a causal mask changes nothing).
            "context": context,
            "dtype": str(resolve_dtype(dtype, device)).removeprefix("torch."),
            "fake_quant": fake_quant,
            "seed": meta.get("seed"),
            # The 16-bit checkpoint's weights (qid.integrity), for aggregate's duplicate check.
            "fingerprint": meta.get("fingerprint"),
            "weights": meta.get("weights"),
            "versions": versions,
            **({"settings": settings} if settings else {}),
            **result,
            **collapse_status(result),
        }
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(dumps(record) + "\n")
        records.append(record)
    return records


def kl_reference(checkpoint: Path, texts: list[Path], **evaluation) -> dict[str, TopK]:
    """The 16-bit model's top-k log-probabilities on each eval set, for a cell evaluated in a
    process of its own (`qid quantize --eval-out`, `qid evaluate --method`): one more 16-bit
    evaluation, freed before the quantized model loads, so no second model is held."""
    import gc
    import tempfile

    references: dict[str, TopK] = {}
    with tempfile.TemporaryDirectory(prefix="qid-kl-") as tmp:
        outs = [Path(tmp) / f"{i}.json" for i in range(len(texts))]
        run(checkpoint, texts, outs, kl_reference=references, **evaluation)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return references


def print_records(records: list[dict]) -> None:
    """One line per evaluation, for the command's log."""
    for r in records:
        print(
            f"{r['eval_set']}: {r['variant']} loss {r['loss']:.5f} "
            f"({r['texts']} texts, {r['seconds']:.1f} s)"
        )


def collapse_status(result: dict) -> dict:
    """`status` "ok", or "collapsed" with the reason when the loss is NaN or infinite (a
    diverged model is a result: the record is kept, its non-finite numbers written as null)."""
    loss = result["loss"]
    if np.isfinite(loss):
        return {"status": "ok"}
    nll = np.asarray(result["nll_per_text"], float)
    bad = int((~np.isfinite(nll)).sum())
    return {
        "status": "collapsed",
        "reason": f"loss is {loss}: {bad} of {nll.size} texts have a non-finite NLL",
    }
