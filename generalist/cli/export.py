"""`generalist export --checkpoint DIR --out DIR`: merge the LoRA adapter into a plain HF model
(see generalist.model.export)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from generalist.verbosity import quiet_libraries


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="generalist export",
        description="Merge a checkpoint's LoRA adapter into its base model and save a plain "
        "Hugging Face model + processor.",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint dir (or its model/ dir)")
    parser.add_argument("--out", required=True, help="output directory for the merged model")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="cast the merged weights (default: the training dtype)",
    )
    parser.add_argument("--verbose", action="store_true", help="the libraries' own logs and bars")
    args = parser.parse_args(argv)
    quiet_libraries(args.verbose)  # before the model code imports deepspeed (its notice)
    from generalist.model.export import export  # after: transformers' bars are switched off

    out = export(args.checkpoint, args.out, overwrite=args.overwrite, dtype=args.dtype)
    print(f"exported a plain Hugging Face model to {out}")
    return 0
