"""Train the shipped DEMO model: a tiny char-level BERT pair classifier and tagger.

    python -m geogate.node.demo.train --out node/demo/model --seed 1

Both models are trained from scratch on synthetic addresses from ``node.demo.synth`` and
evaluated on a held-out set drawn with another seed. They learn the shape of Chinese
addresses, not geography: this is a demo that lets the whole system run offline, not MGeo.

The defaults are the shipped model's recipe (150,000 pairs, 10 epochs, 4 layers of
width 64). ``--device cuda`` trains it in under five minutes on one GPU; on a 2-core CPU
it takes much longer (README), and a smaller run such as ``--pairs 36000 --sim-epochs 4``
fits in minutes at lower accuracy. The tokenizer is built from the gazetteer;
``--tokenizer node/demo/model/similarity`` reuses the shipped one instead (needed with
transformers 5, whose ``BertTokenizerFast`` no longer builds from a vocab file).

The green color of the local demo serves a second version, a short continued run from
the first on other data (``node/demo/model-v2``):

    python -m geogate.node.demo.train --init-from node/demo/model --out node/demo/model-v2 \
        --finetune synth_v2 --seed 2 --pairs 40000 --sim-epochs 1 --parse-epochs 1 --lr 2e-4 --sim-lr 2e-4
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertTokenizerFast,
    PreTrainedModel,
    get_linear_schedule_with_warmup,
)

from geogate.node.backends.tags import decode_tags, encode_tags, tag_set
from geogate.node.demo import gazetteer, synth
from geogate.node.identity import METADATA_FILE

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Characters that real addresses use beyond the gazetteer's names, so that the demo's
# tokenizer does not turn everyday inputs into [UNK].
COMMON_CHARS = (
    "省市区县镇乡村街道路巷弄里坊胡同号楼层室栋幢座单元门期区苑园院府邸庭居城廷湾岛"
    "小区花园公寓大厦广场中心商场超市酒店宾馆医院学校大学中学小学幼儿园银行公司厂站"
    "东南西北中上下前后左右内外附近旁边对面侧隔壁往向米公里交叉口路口与和及"
    "一二三四五六七八九十百千零〇两第甲乙丙丁新老大小"
    "社居委会组队屯庄寨营堡桥河江湖海山岭坡塘湾港口埠关台阁楼塔寺庙宫殿"
    "工业园科技产业开发高新经济技术保税自贸"
)
PUNCT = "()（）-－—_/,，.。、:：;；#·~"
LABEL_NAMES = ["not_match", "partial_match", "exact_match"]  # MGeo's order; ids 0, 1, 2
MAX_LEN = 128


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf"


def build_vocab() -> list[str]:
    """[PAD]..[MASK], CJK characters, digits and ASCII letters with ## forms, punctuation.

    Digits and letters come both bare and as ``##`` continuations, so a run like ``969``
    or ``5F`` splits into one token per character (9, ##6, ##9) and element spans always
    fall on token boundaries.
    """
    texts = [*gazetteer.all_strings(), *synth.LITERALS, COMMON_CHARS]
    cjk = sorted({ch for text in texts for ch in text if _is_cjk(ch)})
    alnum = [*"0123456789", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ", *"abcdefghijklmnopqrstuvwxyz"]
    punct = list(dict.fromkeys(PUNCT))
    return [*SPECIALS, *cjk, *alnum, *(f"##{c}" for c in alnum), *punct]


def build_tokenizer(max_len: int) -> BertTokenizerFast:
    with tempfile.TemporaryDirectory() as tmp:
        vocab = Path(tmp) / "vocab.txt"
        vocab.write_text("\n".join(build_vocab()) + "\n", encoding="utf-8")
        # Case is kept: 5F and A座 are written that way, and lower-casing would fold them.
        return BertTokenizerFast(
            vocab_file=str(vocab), do_lower_case=False, tokenize_chinese_chars=True, model_max_length=max_len
        )


def _config(tokenizer: BertTokenizerFast, args: argparse.Namespace, **labels: Any) -> BertConfig:
    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.intermediate,
        max_position_embeddings=MAX_LEN,
        type_vocab_size=2,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        pad_token_id=tokenizer.pad_token_id,
        **labels,
    )


Batch = dict[str, torch.Tensor]
Feature = dict[str, Any]  # input_ids, attention_mask, ... as lists; labels a list or an int


def _batches(features: list[Feature], size: int, rng: random.Random | None) -> list[Batch]:
    """Padded batches; with ``rng``, shuffled but grouped by length so padding stays small."""
    order = list(range(len(features)))
    if rng is not None:
        rng.shuffle(order)
        # sort within windows of 50 batches: random batches, little padding
        window = size * 50
        order = [i for w in range(0, len(order), window) for i in sorted(order[w : w + window], key=lambda i: len(features[i]["input_ids"]))]
    batches = []
    for start in range(0, len(order), size):
        items = [features[i] for i in order[start : start + size]]
        width = max(len(f["input_ids"]) for f in items)
        batch: Batch = {}
        for key, first in items[0].items():
            if isinstance(first, int):  # one label per example
                batch[key] = torch.tensor([f[key] for f in items])
                continue
            pad = -100 if key.endswith("labels") else 0
            batch[key] = torch.tensor([f[key] + [pad] * (width - len(f[key])) for f in items])
        batches.append(batch)
    if rng is not None:
        rng.shuffle(batches)
    return batches


def _fit(
    model: torch.nn.Module,
    loss_of: Callable[[Batch], torch.Tensor],
    train: list[Feature],
    epochs: int,
    lr: float,
    batch: int,
    seed: int,
    log: Callable[[str], None],
    device: torch.device,
) -> None:
    rng = random.Random(seed)
    steps = epochs * math.ceil(len(train) / batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.06 * steps), steps)
    model.train()
    for epoch in range(epochs):
        total, count, started = 0.0, 0, time.monotonic()
        for b in _batches(train, batch, rng):
            loss = loss_of({k: v.to(device) for k, v in b.items()})
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            total, count = total + loss.item(), count + 1
        log(f"  epoch {epoch + 1}/{epochs}: loss {total / count:.4f} ({time.monotonic() - started:.0f}s)")
    model.eval()


def _predict(model: PreTrainedModel, features: list[Feature]) -> list[list[int]]:
    """Argmax per example (sequence) or per token (token classification), unpadded."""
    out: list[list[int]] = []
    device = model.device
    with torch.inference_mode():
        for b in _batches([{k: v for k, v in f.items() if not k.endswith("labels")} for f in features], 256, None):
            pred = model(**{k: v.to(device) for k, v in b.items()}).logits.argmax(-1).cpu()
            lengths = b["attention_mask"].sum(-1).tolist()
            out += [row[:n] if pred.dim() == 2 else [row] for row, n in zip(pred.tolist(), lengths)]
    return out


# ---------------------------------------------------------------------------- similarity


# Auxiliary per-token targets on pairs: does this token's element agree with the other
# address, conflict with it (same type, other value) or is it absent there? Without them
# the tiny model from scratch only learns granularity cues (exact vs partial) and never
# starts comparing the two addresses; with them it learns to, and the pair label follows.
AUX_LABELS = ("agree", "conflict", "extra")


def _aux_labels(offsets: list[tuple[int, int]], segments: list[int | None], sides: tuple[list[synth.Element], list[synth.Element]]) -> list[int]:
    labels = []
    for (start, end), segment in zip(offsets, segments):
        label = -100
        if segment is not None and end > start:
            own, other = sides[segment], sides[1 - segment]
            element = next((el for el in own if el[1] <= start and end <= el[2]), None)
            if element is not None and element[3] is not None:
                values = {key for kind, _, _, key in other if kind == element[0] and key is not None}
                label = 0 if element[3] in values else 1 if values else 2
        labels.append(label)
    return labels


def similarity_features(tokenizer: BertTokenizerFast, pairs: Sequence[synth.AnnotatedPair]) -> list[Feature]:
    enc = tokenizer(
        [p[0] for p in pairs], [p[1] for p in pairs], truncation="longest_first", max_length=MAX_LEN,
        return_offsets_mapping=True,
    )
    label_ids = {name: i for i, name in enumerate(LABEL_NAMES)}
    features = []
    for i, (_, _, label, elements_a, elements_b) in enumerate(pairs):
        features.append({
            "input_ids": enc["input_ids"][i],
            "token_type_ids": enc["token_type_ids"][i],
            "attention_mask": enc["attention_mask"][i],
            "labels": label_ids[label],
            "aux_labels": _aux_labels(enc["offset_mapping"][i], enc.sequence_ids(i), (elements_a, elements_b)),
        })
    return features


def _similarity_loss(model: BertForSequenceClassification, aux_head: torch.nn.Linear, aux_weight: float) -> Callable[[Batch], torch.Tensor]:
    def loss_of(b: Batch) -> torch.Tensor:
        out = model.bert(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"])
        logits = model.classifier(model.dropout(out.pooler_output))
        loss = torch.nn.functional.cross_entropy(logits, b["labels"])
        aux = aux_head(out.last_hidden_state)
        return loss + aux_weight * torch.nn.functional.cross_entropy(aux.flatten(0, 1), b["aux_labels"].flatten())

    return loss_of


def similarity_accuracy(model: PreTrainedModel, features: list[Feature]) -> tuple[float, list[list[int]]]:
    """Accuracy and the confusion matrix (rows: true label, columns: predicted)."""
    confusion = [[0] * len(LABEL_NAMES) for _ in LABEL_NAMES]
    for p, f in zip(_predict(model, features), features):
        confusion[f["labels"]][p[0]] += 1
    return sum(confusion[i][i] for i in range(len(LABEL_NAMES))) / len(features), confusion


# ---------------------------------------------------------------------------- parse


def parse_features(tokenizer: BertTokenizerFast, data: Sequence[tuple[str, list[synth.Span]]], tags: list[str]) -> tuple[list[Feature], list[list[tuple[int, int]]]]:
    tag_ids = {t: i for i, t in enumerate(tags)}
    enc = tokenizer([text for text, _ in data], truncation=True, max_length=MAX_LEN, return_offsets_mapping=True)
    features, offsets = [], []
    for ids, mask, row_offsets, (_, spans) in zip(enc["input_ids"], enc["attention_mask"], enc["offset_mapping"], data):
        labels = [-100 if t is None else tag_ids[t] for t in encode_tags(row_offsets, spans)]
        features.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
        offsets.append([tuple(o) for o in row_offsets])
    return features, offsets


def parse_f1(model: PreTrainedModel, features: list[Feature], offsets: list[list[tuple[int, int]]], data: Sequence[tuple[str, list[synth.Span]]], tags: list[str]) -> float:
    """Entity-level micro F1: an element counts when type, start and end all match."""
    hit = n_pred = n_gold = 0
    for row, row_offsets, (text, spans) in zip(_predict(model, features), offsets, data):
        found = {(e.type, e.start, e.end) for e in decode_tags([tags[i] for i in row], row_offsets, text)}
        gold = set(spans)
        hit, n_pred, n_gold = hit + len(found & gold), n_pred + len(found), n_gold + len(gold)
    precision, recall = hit / max(n_pred, 1), hit / max(n_gold, 1)
    return 2 * precision * recall / max(precision + recall, 1e-9)


# ---------------------------------------------------------------------------- main


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.glob("*.safetensors")) / 1e6


def main(argv: list[str] | None = None) -> None:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%MZ")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "model")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--finetune", default="synth_v1", help="the run's name: the version's middle part")
    parser.add_argument("--version", help="model_version (default: mgeo_demo_tiny-<finetune>-<UTC time>)")
    parser.add_argument("--init-from", type=Path,
                        help="continue training this bundle (its tokenizer and shape) instead of starting from scratch")
    parser.add_argument("--pairs", type=int, default=150000, help="similarity training pairs")
    parser.add_argument("--addresses", type=int, default=12000, help="parse training addresses")
    parser.add_argument("--heldout", type=int, default=3000, help="held-out pairs and addresses")
    parser.add_argument("--sim-epochs", type=int, default=10)
    parser.add_argument("--parse-epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="parse learning rate")
    parser.add_argument("--sim-lr", type=float, default=1e-3, help="similarity learning rate")
    parser.add_argument("--sim-batch", type=int, default=128)
    parser.add_argument("--aux-weight", type=float, default=1.0)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu (the default, minutes on 2 cores) or cuda")
    parser.add_argument("--tokenizer", type=Path, help="reuse this tokenizer (e.g. the shipped one) instead of building it")
    args = parser.parse_args(argv)
    args.version = args.version or f"mgeo_demo_tiny-{args.finetune}-{stamp}"
    init: Path | None = args.init_from
    if init:
        args.tokenizer = init / "similarity"

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # tiny weights late in training go subnormal, which is slow on CPUs
    torch.manual_seed(args.seed)
    heldout_seed = args.seed + 1_000_003  # a different stream than training's
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer) if args.tokenizer else build_tokenizer(MAX_LEN)
    print(f"vocab {len(tokenizer)} tokens")

    # parse first: its encoder then starts the similarity model, which learns faster
    # when it already knows where an address's elements begin and end
    tags = tag_set(synth.TYPES)
    train_addr = synth.address_dataset(args.addresses, args.seed)
    test_addr = synth.address_dataset(args.heldout, heldout_seed)
    parse_train, _ = parse_features(tokenizer, train_addr, tags)
    parse_test, parse_offsets = parse_features(tokenizer, test_addr, tags)
    device = torch.device(args.device)
    if init:
        parse = BertForTokenClassification.from_pretrained(init / "parse").to(device)
        shape = parse.config  # the bundle's shape wins over the flags, and is what the metadata records
        args.hidden, args.layers, args.heads, args.intermediate = (
            shape.hidden_size, shape.num_hidden_layers, shape.num_attention_heads, shape.intermediate_size)
    else:
        parse = BertForTokenClassification(
            _config(tokenizer, args, id2label=dict(enumerate(tags)), label2id={t: i for i, t in enumerate(tags)})
        ).to(device)
    t0 = time.monotonic()
    print(f"parse: {len(parse_train)} addresses, {args.parse_epochs} epochs")
    _fit(parse, lambda b: parse(**b).loss, parse_train, args.parse_epochs, args.lr, args.batch, args.seed, print, device)
    parse_seconds = time.monotonic() - t0
    f1 = parse_f1(parse, parse_test, parse_offsets, test_addr, tags)
    print(f"parse held-out entity F1 {f1:.4f} ({parse_seconds:.0f}s)")

    train_pairs = synth.annotated_pair_dataset(args.pairs, args.seed)
    test_pairs = synth.annotated_pair_dataset(args.heldout, heldout_seed)
    sim_train = similarity_features(tokenizer, train_pairs)
    sim_test = similarity_features(tokenizer, test_pairs)
    if init:
        similarity = BertForSequenceClassification.from_pretrained(init / "similarity").to(device)
    else:
        similarity = BertForSequenceClassification(
            _config(
                tokenizer, args, id2label=dict(enumerate(LABEL_NAMES)), label2id={n: i for i, n in enumerate(LABEL_NAMES)}
            )
        ).to(device)
        similarity.bert.load_state_dict(parse.bert.state_dict(), strict=False)  # the pooler is new
    t0 = time.monotonic()
    print(f"similarity: {len(sim_train)} pairs, {args.sim_epochs} epochs")
    aux_head = torch.nn.Linear(args.hidden, len(AUX_LABELS)).to(device)  # training only; not saved
    loss_of = _similarity_loss(similarity, aux_head, args.aux_weight)
    trainee = torch.nn.ModuleList([similarity, aux_head])
    _fit(trainee, loss_of, sim_train, args.sim_epochs, args.sim_lr, args.sim_batch, args.seed, print, device)
    similarity.eval()
    sim_seconds = time.monotonic() - t0
    accuracy, confusion = similarity_accuracy(similarity, sim_test)
    print(f"similarity held-out accuracy {accuracy:.4f} ({sim_seconds:.0f}s); confusion (rows true, cols predicted, {LABEL_NAMES}): {confusion}")

    out: Path = args.out
    for name, model in (("similarity", similarity), ("parse", parse)):
        model.to("cpu").save_pretrained(out / name)  # safetensors
        tokenizer.save_pretrained(out / name)
    metadata = {
        "model_version": args.version,
        "base": "mgeo_demo_tiny",
        "finetune": args.finetune,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "demo": True,
        "description": "DEMO model: tiny BERT trained on synthetic addresses; not MGeo, not for production",
        "eval": {
            "similarity_accuracy": round(accuracy, 4),
            "parse_f1": round(f1, 4),
            "heldout_pairs": len(test_pairs),
            "heldout_addresses": len(test_addr),
            "seed": heldout_seed,
        },
        "train": {
            "seed": args.seed,
            "init_from": str(init) if init else None,
            "pairs": len(train_pairs),
            "addresses": len(train_addr),
            "similarity_epochs": args.sim_epochs,
            "parse_epochs": args.parse_epochs,
            "similarity_seconds": round(sim_seconds),
            "parse_seconds": round(parse_seconds),
            "seconds": round(time.monotonic() - started),
            "threads": args.threads,
            "device": args.device,
            "config": {k: getattr(args, k) for k in ("hidden", "layers", "heads", "intermediate", "batch", "lr", "sim_batch", "sim_lr", "aux_weight")},
            "vocab": len(tokenizer),
        },
    }
    (out / METADATA_FILE).write_text(json.dumps(metadata, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    sizes = {name: _size_mb(out / name) for name in ("similarity", "parse")}
    print(json.dumps({"model_version": args.version, **metadata["eval"], "weights_mb": sizes}, ensure_ascii=False))


if __name__ == "__main__":
    main()
