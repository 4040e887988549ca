"""The catalog: what can be trained and evaluated. The public face for user modules:

    from generalist.catalog import TASKS, Task, MIXTURES, Mixture, DATASETS, Dataset, Record

Tasks (instruction templates, exemplar policy, metrics), mixtures (tasks and their rates),
datasets (source adapters) and the records they exchange; each name is defined in one module
of this package and handed on here.
"""

from generalist.catalog.exemplars import ExemplarPool, format_example
from generalist.catalog.loading import import_user_module, load_catalog
from generalist.catalog.mixture import (
    MIXTURES,
    Mixture,
    examples_proportional_mixture,
    mixture_from_rates,
)
from generalist.catalog.parts import (
    PromptParts,
    classification_parts,
    generation_parts,
    multiple_choice_parts,
    vqa_parts,
)
from generalist.catalog.records import DATASETS, BadRecord, Dataset, Example, Record
from generalist.catalog.task import IMAGE_PLACEHOLDER, IMAGE_TOKEN, TASKS, Task, normalize_text

__all__ = [
    "DATASETS",
    "IMAGE_PLACEHOLDER",
    "IMAGE_TOKEN",
    "MIXTURES",
    "TASKS",
    "BadRecord",
    "Dataset",
    "Example",
    "ExemplarPool",
    "Mixture",
    "PromptParts",
    "Record",
    "Task",
    "classification_parts",
    "examples_proportional_mixture",
    "format_example",
    "generation_parts",
    "import_user_module",
    "load_catalog",
    "mixture_from_rates",
    "multiple_choice_parts",
    "normalize_text",
    "vqa_parts",
]
