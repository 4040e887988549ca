"""The demo mixture on easy-vqa data: VQA, shape classification and a one-line description."""

from generalist.catalog.mixture import MIXTURES, Mixture

MIXTURES.register(
    Mixture(
        name="demo",
        tasks=(("easy_vqa", 0.6), ("easy_vqa_shape", 0.2), ("easy_vqa_caption", 0.2)),
        description="easy-vqa: VQA 60%, shape classification 20%, description 20%.",
        min_per_batch=1,
    )
)
