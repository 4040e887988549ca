"""A tiny LLaVA built from config (CLIP vision tower + Llama LM) and a tokenizer trained locally.

For tests and the demo: no hub access is needed. The tokenizer is trained with `tokenizers`
(word-level or BPE) on the given texts, wrapped as PreTrainedTokenizerFast inside a
LlavaProcessor whose CLIPImageProcessor is sized to the model's image size, so "<image>"
expands into (image_size / patch_size)^2 tokens, exactly as the processor says.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from generalist.errors import ConfigError
from generalist.task import IMAGE_TOKEN

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS, IMAGE_TOKEN]


def _corpus(cfg: Any, texts: Iterable[str] | None) -> Iterator[str]:
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


def train_tokenizer(cfg: Any, texts: Iterable[str] | None, image_token_attr: bool = True) -> Any:
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


def image_processor_class(name: str) -> Any:
    """transformers' PIL-backend image processor `<name>Pil`, or `<name>` on older releases.

    The PIL backend because torchvision is not a dependency.
    """
    import transformers

    return getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)


def intermediate_size(cfg: Any) -> int:
    """The MLP width of every tower: cfg.intermediate_size, or 4 x hidden_size when unset."""
    return cfg.intermediate_size or 4 * cfg.hidden_size


def vision_tower_config(config_class: Any, cfg: Any) -> Any:
    """A ViT config (CLIPVisionConfig, Blip2VisionConfig) sized by `cfg`."""
    return config_class(
        hidden_size=cfg.hidden_size,
        intermediate_size=intermediate_size(cfg),
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
    )


def set_special_token_ids(config: Any, tokenizer: Any, *names: str) -> Any:
    """Copy `<name>_token_id` (pad, eos, ...) from the tokenizer onto a config; returns it.

    So a plain `generate()` on an exported model needs no arguments.
    """
    for name in names:
        setattr(config, f"{name}_token_id", getattr(tokenizer, f"{name}_token_id"))
    return config


def make_image_processor(cfg: Any) -> Any:
    """A CLIPImageProcessor that resizes and crops to cfg.image_size (CLIP's mean and std)."""
    size = cfg.image_size
    return image_processor_class("CLIPImageProcessor")(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )


def make_processor(cfg: Any, tokenizer: Any) -> Any:
    """A LlavaProcessor: CLIPImageProcessor resized to image_size, one CLS token dropped."""
    from transformers import LlavaProcessor

    return LlavaProcessor(
        image_processor=make_image_processor(cfg),
        tokenizer=tokenizer,
        patch_size=cfg.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token=IMAGE_TOKEN,
    )


def tiny_llava_config(cfg: Any, tokenizer: Any) -> Any:
    """LlavaConfig from a CLIPVisionConfig and a LlamaConfig sized by `cfg`."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = vision_tower_config(CLIPVisionConfig, cfg)
    text = LlamaConfig(
        hidden_size=cfg.hidden_size,
        intermediate_size=intermediate_size(cfg),
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        vocab_size=len(tokenizer),
        max_position_embeddings=cfg.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    return set_special_token_ids(config, tokenizer, "pad", "eos", "bos")


def build_tiny(
    cfg: Any,
    texts: Iterable[str] | None = None,
    work_dir: str | os.PathLike[str] | None = None,
) -> tuple[Any, Any, str]:
    """(model, processor, family) with family = cfg.architecture ("llava" or "blip2"); weights
    seeded by cfg.seed, identical on every rank.

    With work_dir, the processor is saved at <work_dir>/processor and reused when present.
    """
    import torch
    from transformers import (
        AutoProcessor,
        Blip2ForConditionalGeneration,
        LlavaForConditionalGeneration,
    )

    from generalist.tiny_blip2 import make_blip2_processor, tiny_blip2_config

    saved = Path(work_dir) / "processor" if work_dir is not None else None
    blip2 = cfg.architecture == "blip2"
    if saved is not None and (saved / "processor_config.json").is_file():
        processor = AutoProcessor.from_pretrained(saved)
    else:
        tokenizer = train_tokenizer(cfg, texts, image_token_attr=not blip2)
        make = make_blip2_processor if blip2 else make_processor
        processor = make(cfg, tokenizer)
        if saved is not None:
            processor.save_pretrained(saved)
    tok = processor.tokenizer
    if blip2:
        config, cls = tiny_blip2_config(cfg, tok), Blip2ForConditionalGeneration
    else:
        config, cls = tiny_llava_config(cfg, tok), LlavaForConditionalGeneration
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = cls(config)
    if cfg.vision_init is not None:
        load_vision_init(model, cfg)
    set_special_token_ids(model.generation_config, tok, "pad", "eos")
    if blip2:
        model.generation_config.decoder_start_token_id = tok.pad_token_id
    else:
        model.generation_config.bos_token_id = tok.bos_token_id
    return model, processor, cfg.architecture


def load_vision_init(model: Any, cfg: Any) -> None:
    """Start a tiny LLaVA's vision tower from a CLIPVisionModel saved at cfg.vision_init (e.g. by
    `generalist pretrain-vision`); ConfigError naming the key when it is missing or mis-sized."""
    from transformers import CLIPVisionModel

    key = "model.tiny.vision_init"
    path = Path(cfg.vision_init)
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"{key}: no saved vision tower at {str(path)!r} (no config.json); write one with "
            "`generalist pretrain-vision` or drop the key"
        )
    tower = CLIPVisionModel.from_pretrained(path)
    target = model.model.vision_tower
    theirs, ours = tower.config, target.config
    sizes = ("hidden_size", "num_hidden_layers", "image_size", "patch_size", "intermediate_size")
    wrong = [
        f"{n} {getattr(theirs, n)} vs {getattr(ours, n)}"
        for n in sizes
        if getattr(theirs, n) != getattr(ours, n)
    ]
    if wrong:
        raise ConfigError(
            f"{key}: the tower at {str(path)!r} does not fit model.tiny ({'; '.join(wrong)})"
        )
    target.load_state_dict(tower.state_dict())
