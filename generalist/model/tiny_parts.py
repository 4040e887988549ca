"""What the tiny models built from config share (tests and the demo; no hub access needed): a
tokenizer trained locally with `tokenizers` (word-level or BPE) and wrapped as
PreTrainedTokenizerFast, the image processor and vision tower config sized by the config, and
the special token ids copied onto configs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from generalist.catalog.task import IMAGE_TOKEN
from generalist.errors import ConfigError
from generalist.model.config import TinyModelConfig

if TYPE_CHECKING:
    from transformers import (
        BaseImageProcessor,
        PretrainedConfig,
        PreTrainedTokenizerBase,
        PreTrainedTokenizerFast,
    )

C = TypeVar("C", bound="PretrainedConfig")

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS, IMAGE_TOKEN]


def _corpus(cfg: TinyModelConfig, texts: Iterable[str] | None) -> Iterator[str]:
    if cfg.tokenizer_corpus:
        path = Path(cfg.tokenizer_corpus)
        if not path.is_file():
            raise ConfigError(
                f"model.tiny.tokenizer_corpus: {path} does not exist; give a UTF-8 text file "
                "with one training text per line, or leave it empty to train on the mixture"
            )
        with path.open(encoding="utf-8") as f:
            yield from (line.rstrip("\n") for line in f)
    elif texts is None:
        raise ConfigError(
            "model.tiny: a tiny model trains its tokenizer; set model.tiny.tokenizer_corpus "
            "or pass texts_for_tokenizer"
        )
    else:
        yield from texts


def train_tokenizer(
    cfg: TinyModelConfig, texts: Iterable[str] | None, image_token_attr: bool = True
) -> PreTrainedTokenizerFast:
    """Train a word-level or BPE tokenizer; returns a PreTrainedTokenizerFast (adds <s> first).

    Word-level lower-cases and splits punctuation, so answers are single tokens (tiny models
    learn them fast); BPE is byte-level and never produces <unk>.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    if cfg.tokenizer == "word":
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
        )
        tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
        trainer = trainers.WordLevelTrainer(
            vocab_size=cfg.vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=1
        )
    else:
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    tok.train_from_iterator(_corpus(cfg, texts), trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        # Blip2Processor wants no `image_token` attribute (it adds its own AddedToken)
        extra_special_tokens={"image_token": IMAGE_TOKEN} if image_token_attr else None,
        model_max_length=cfg.max_position_embeddings,
        padding_side="right",
    )


def image_processor_class(name: str) -> type[BaseImageProcessor]:
    """transformers' PIL-backend image processor `<name>Pil`, or `<name>` on older releases.

    The PIL backend because torchvision is not a dependency.
    """
    import transformers

    return getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)


def intermediate_size(cfg: TinyModelConfig) -> int:
    """The MLP width of every tower: cfg.intermediate_size, or 4 x hidden_size when unset."""
    return cfg.intermediate_size or 4 * cfg.hidden_size


def vision_tower_config(config_class: type[C], cfg: TinyModelConfig) -> C:
    """A ViT config (CLIPVisionConfig, Blip2VisionConfig) sized by `cfg`."""
    return config_class(
        hidden_size=cfg.hidden_size,
        intermediate_size=intermediate_size(cfg),
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
    )


def set_special_token_ids(config: C, tokenizer: PreTrainedTokenizerBase, *names: str) -> C:
    """Copy `<name>_token_id` (pad, eos, ...) from the tokenizer onto a config; returns it.

    So a plain `generate()` on an exported model needs no arguments.
    """
    for name in names:
        setattr(config, f"{name}_token_id", getattr(tokenizer, f"{name}_token_id"))
    return config


def make_image_processor(cfg: TinyModelConfig) -> BaseImageProcessor:
    """A CLIPImageProcessor that resizes and crops to cfg.image_size (CLIP's mean and std)."""
    size = cfg.image_size
    return image_processor_class("CLIPImageProcessor")(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
