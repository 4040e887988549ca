"""Tiny random-weight CheXbert and RadGraph scorers built from config, written in the file layout
the f1chexbert and radgraph packages read (what eval.scorers.chexbert / .radgraph point at)."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import torch
from transformers import BertConfig, BertTokenizer

WORDS = [
    "no",
    "acute",
    "cardiopulmonary",
    "process",
    "the",
    "heart",
    "size",
    "is",
    "normal",
    "mildly",
    "enlarged",
    "small",
    "left",
    "right",
    "pleural",
    "effusion",
    "edema",
    "pulmonary",
    "lungs",
    "are",
    "clear",
    "there",
    "focal",
    "consolidation",
    "atelectasis",
    "bibasilar",
    "moderate",
    "cardiomegaly",
    "pneumothorax",
    "unchanged",
]
# BERT's specials, the words, punctuation, and "1"/"2" (radgraph probes its tokenizer with them)
VOCAB = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS)), ".", ",", "1", "2")


def tiny_bert(folder: Path) -> BertConfig:
    """A 1-layer BERT config and a word-level WordPiece vocab (config.json, vocab.txt, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
    )
    config.save_pretrained(str(folder))
    return config


def tiny_chexbert(folder: Path, seed: int = 0) -> torch.nn.Module:
    """f1chexbert's own `bert_labeler` on a tiny BERT (random weights, heads scaled up so that
    reports get different classes), saved as chexbert.pth the way the published file is: a
    {"model_state_dict": ...} of a DataParallel model ("module." prefixes)."""
    from f1chexbert import f1chexbert as package

    config = tiny_bert(folder)

    class LocalConfig:  # the package asks the hub for bert-base-uncased's config
        @staticmethod
        def from_pretrained(name: str) -> BertConfig:
            return config

    torch.manual_seed(seed)
    with mock.patch.object(package, "AutoConfig", LocalConfig):
        model = package.bert_labeler(inference=True)
    with torch.no_grad():
        for head in model.linear_heads:
            head.weight.normal_(0, 4.0)
            head.bias.normal_(0, 1.0)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model_state_dict": state, "epoch": 3}, folder / "chexbert.pth")
    return model.eval()


def radgraph_config(encoder: Path) -> dict:
    """A DyGIE++ config in the layout of the radgraph package's config.json."""
    bert = {"type": "pretrained_transformer_mismatched", "model_name": str(encoder)}
    bert["max_length"] = 64
    return {
        "dataset_reader": {"type": "dygie", "max_span_width": 4, "token_indexers": {"bert": bert}},
        "model": {
            "type": "dygie",
            "embedder": {"token_embedders": {"bert": bert}},
            "feature_size": 8,
            "max_span_width": 4,
            "target_task": "relation",
            "feedforward_params": {"num_layers": 1, "hidden_dims": 8, "dropout": 0.0},
            "loss_weights": {"ner": 1.0, "relation": 1.0, "coref": 0.0, "events": 0.0},
            "initializer": {},
            "module_initializer": {},
            "modules": {
                "ner": {},
                "relation": {"spans_per_word": 0.5},
                "coref": {"spans_per_word": 0.3, "max_antecedents": 10},
                "events": {
                    "trigger_spans_per_word": 0.3,
                    "argument_spans_per_word": 0.8,
                    "loss_weights": {"trigger": 1.0, "arguments": 1.0},
                },
            },
        },
    }


def tiny_radgraph(root: Path, model: str = "radgraph", seed: int = 0) -> Path:
    """root/<model>/{config.json, vocabulary/, weights.th} (RadGraph's labels, random weights)
    with its encoder in root/encoder; returns root (what eval.scorers.radgraph names)."""
    from radgraph.allennlp.common import cached_transformers
    from radgraph.allennlp.data import Vocabulary
    from radgraph.allennlp.modules import text_field_embedders, token_embedders
    from radgraph.dygie.models import dygie

    from generalist.eval.metrics.tokenizer_compat import Transformers4Tokenizer

    encoder = root / "encoder"
    tiny_bert(encoder)
    model_dir = root / model
    model_dir.mkdir(parents=True)
    config = radgraph_config(encoder)
    (model_dir / "config.json").write_text(json.dumps(config))
    vocab = Vocabulary(non_padded_namespaces=["*labels", "*tags"])
    ner = ["", "ANAT-DP", "OBS-DP", "OBS-DA", "OBS-U"]
    vocab.add_tokens_to_namespace(ner, f"{model}__ner_labels")
    relations = ["", "located_at", "modify", "suggestive_of"]
    vocab.add_tokens_to_namespace(relations, f"{model}__relation_labels")
    vocab.save_to_files(str(model_dir / "vocabulary"))
    vocab = Vocabulary.from_files(str(model_dir / "vocabulary"))
    load = cached_transformers.get_tokenizer
    wrapped = mock.patch.object(  # radgraph calls tokenizer methods transformers 5 removed
        cached_transformers, "get_tokenizer", lambda n, **k: Transformers4Tokenizer(load(n, **k))
    )
    with wrapped:
        bert = token_embedders.PretrainedTransformerMismatchedEmbedder(
            model_name=str(encoder), max_length=64
        )
    embedder = text_field_embedders.BasicTextFieldEmbedder({"bert": bert})
    kwargs = {k: v for k, v in config["model"].items() if k not in ("type", "embedder")}
    kwargs = {k: v for k, v in kwargs.items() if k not in ("initializer", "module_initializer")}
    torch.manual_seed(seed)
    network = dygie.DyGIE(vocab=vocab, embedder=embedder, **kwargs)
    torch.save(network.state_dict(), model_dir / "weights.th")
    return root
