"""generalist: one vision-language model, many biomedical tasks (MultiMedBench-style).

The package's folders follow the data path: catalog (tasks, mixtures, datasets) -> sources
(reading published files) -> shards -> mixing (the stream) -> model -> batching -> tracking ->
eval -> train -> bench -> cli. A stage imports only from the stages before it
(tests/test_layout.py checks this).
"""

from generalist import legacy_paths

__version__ = "0.2.0"

legacy_paths.install()
