"""Pretrained models through transformers' auto classes (AutoModelForImageTextToText for LLaVA,
PaliGemma, Qwen2-VL, BLIP-2, ...; AutoModelForCausalLM for text-only LMs, with AutoProcessor /
AutoTokenizer), and composed ones (a vision encoder + an LM joined by a new projector, as LLaVA
and PaLM-E were built). Depends on transformers only; a saved model dir as a base is
generalist.model.model_dir's job."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from generalist.catalog.task import IMAGE_TOKEN
from generalist.errors import ConfigError
from generalist.model.config import ModelConfig
from generalist.model.hub import check_hub_id, looks_like_path
from generalist.model.qwen2_vl_processor import MRopeProcessor, needs_fallback
from generalist.model.torchvision_guard import broken_torchvision_hint, torchvision_usable
from generalist.model.videoless_processor import load_videoless, needs_videoless

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

T = TypeVar("T")


def _load(what: str, key: str, fn: Callable[[str], T], src: str) -> T:
    """Call a transformers loader; turn a missing/bad checkpoint into a ConfigError naming key."""
    if not looks_like_path(src) and not Path(src).expanduser().exists():
        check_hub_id(key, src)  # no network: an error in a second, not after the hub's retries
    try:
        return fn(src)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"{key}: cannot load {what} from {src!r} ({first}); give a local directory with a "
            "saved Hugging Face model or a hub id that is available offline"
        ) from None


def detect_family(src: str, key: str = "model.name_or_path") -> str:
    """'llava', 'blip2', 'image_text_to_text' (other VLMs: PaliGemma, Qwen2-VL, Idefics3,
    SmolVLM, LLaVA-NeXT / OneVision: model_type llava_next / llava_onevision, not llava) or
    'causal_lm', from the config. generalist.batching.token_layout adapts to each VLM's
    model_type."""
    torchvision_usable()  # a broken torchvision is hidden before transformers imports it
    from transformers import AutoConfig

    config = _load("a model config", key, AutoConfig.from_pretrained, src)
    if config.model_type == "blip-2":
        return "blip2"
    if config.model_type == "llava":
        return "llava"
    if hasattr(config, "vision_config"):
        return "image_text_to_text"
    return "causal_lm"


def load_auto_model(src: str, family: str, key: str = "model.name_or_path") -> PreTrainedModel:
    """The model at `src` through AutoModelForCausalLM or AutoModelForImageTextToText."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    cls = AutoModelForCausalLM if family == "causal_lm" else AutoModelForImageTextToText
    return _load("the model", key, cls.from_pretrained, src)


def load_processor(
    src: str, family: str, key: str = "model.name_or_path"
) -> ProcessorMixin | PreTrainedTokenizerBase:
    """AutoProcessor for VLMs, AutoTokenizer for causal LMs (pad token defaults to eos).

    A Qwen2-VL processor without a usable torchvision is our MRopeProcessor (see there), a
    SmolVLM / LLaVA-OneVision one its own class without a video processor. A local
    model dir saved without its processor is a ConfigError saying so and how to save one.
    """
    torchvision_usable()  # before transformers' image utilities import torchvision
    from transformers import AutoProcessor, AutoTokenizer

    try:
        if family == "causal_lm":
            tok = _load("the tokenizer", key, AutoTokenizer.from_pretrained, src)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            return tok
        if needs_fallback(src):
            return _load("the processor", key, MRopeProcessor.from_pretrained, src)
        if needs_videoless(src):  # SmolVLM, LLaVA-OneVision without torchvision
            return _load("the processor", key, load_videoless, src)
        return _load("the processor", key, AutoProcessor.from_pretrained, src)
    except ImportError:  # a processor that needs the torchvision we had to hide
        if not broken_torchvision_hint():
            raise
        raise ConfigError(
            f"{key}: {src!r} needs torchvision: {broken_torchvision_hint()}"
        ) from None
    except ConfigError:
        missing = _missing_processor_files(src, family)
        if missing:
            what = "tokenizer" if family == "causal_lm" else "processor"
            cls = "AutoTokenizer" if family == "causal_lm" else "AutoProcessor"
            raise ConfigError(
                f"{key}: {src!r} holds a model but no {what} ({missing} not there: "
                f"model.save_pretrained saves the weights only); save the {what} of the model "
                f"it was trained from beside it: {cls}.from_pretrained(BASE).save_pretrained("
                f"{src!r})"
            ) from None
        raise


def _missing_processor_files(src: str, family: str) -> str | None:
    """'tokenizer_config.json' / 'preprocessor_config.json' when a local dir lacks them."""
    path = Path(src).expanduser()
    if not path.is_dir():
        return None
    names = {p.name for p in path.iterdir()}
    missing = []
    if not names & {"tokenizer_config.json", "tokenizer.json", "tokenizer.model", "vocab.json"}:
        missing.append("tokenizer_config.json")
    if family != "causal_lm" and not names & {"preprocessor_config.json", "processor_config.json"}:
        missing.append("preprocessor_config.json")
    return " and ".join(missing) or None


def load_pretrained(
    cfg: ModelConfig,
) -> tuple[PreTrainedModel, ProcessorMixin | PreTrainedTokenizerBase, str]:
    """(model, processor, family) for a hub id or Hugging Face directory `cfg.name_or_path`."""
    src = str(cfg.name_or_path)
    family = detect_family(src) if cfg.family == "auto" else cfg.family
    if cfg.family == "llava" and detect_family(src) != "llava":
        raise ConfigError(f"model.family: {src!r} is not a LLaVA model; use family: auto")
    processor = load_processor(src, family)  # first: a missing one is found before the weights
    return load_auto_model(src, family), processor, family


def compose(cfg: ModelConfig) -> tuple[PreTrainedModel, ProcessorMixin, str]:
    """A LLaVA from a pretrained vision encoder and a pretrained causal LM, new projector.

    The projector is freshly initialised (seeded); train it (lora.modules_to_save keeps it
    trainable under LoRA, or freeze_language_model for projector-only pre-alignment).
    """
    import torch
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModelForCausalLM,
        AutoTokenizer,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    vkey, lkey = "model.vision_encoder", "model.language_model"
    vconf = _load("a vision config", vkey, AutoConfig.from_pretrained, cfg.vision_encoder)
    vconf = getattr(vconf, "vision_config", vconf)  # a full CLIP/SigLIP checkpoint
    lm = _load("the language model", lkey, AutoModelForCausalLM.from_pretrained, cfg.language_model)
    tok = _load("the tokenizer", lkey, AutoTokenizer.from_pretrained, cfg.language_model)
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    image_proc = _load(
        "the image processor", vkey, AutoImageProcessor.from_pretrained, cfg.vision_encoder
    )
    siglip = vconf.model_type.startswith("siglip")  # SigLIP has no CLS token to drop
    strategy, extra = ("full", 0) if siglip else ("default", 1)
    config = LlavaConfig(
        vision_config=vconf,
        text_config=lm.config,
        image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy=strategy,
        vision_feature_layer=-1,
        projector_hidden_act=cfg.projector_hidden_act,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlavaForConditionalGeneration(config)
    tower = model.model.vision_tower
    vision = _load("the vision encoder", vkey, type(tower).from_pretrained, cfg.vision_encoder)
    tower.load_state_dict(vision.state_dict())
    model.model.language_model.load_state_dict(lm.get_decoder().state_dict())
    model.lm_head.load_state_dict(lm.get_output_embeddings().state_dict())
    if len(tok) != model.config.text_config.vocab_size:
        model.resize_token_embeddings(len(tok))
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    processor = LlavaProcessor(
        image_processor=image_proc,
        tokenizer=tok,
        patch_size=vconf.patch_size,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=extra,
        image_token=IMAGE_TOKEN,
    )
    return model, processor, "llava"
