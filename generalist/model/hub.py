"""Hub ids and the network: a hub id that cannot be fetched is an error in a second, not after
huggingface_hub's retries (about 30 s of "Retrying in 8s" lines with no network).

    check_hub_id("model.name_or_path", "llava-hf/llava-1.5-7b-hf")

HF_HUB_OFFLINE=1 (or TRANSFORMERS_OFFLINE=1): the id must be in the local cache. Otherwise one
HEAD request to the hub endpoint (2 s timeout, through huggingface_hub's own HTTP client, so its
proxy settings apply) tells whether the hub answers; when it does not, a cached id is loaded from
the cache in offline mode (said on stderr) and an uncached one is a ConfigError naming the key.
"""

from __future__ import annotations

import functools
import os
import sys

from generalist.errors import ConfigError

PROBE_TIMEOUT_S = 2.0


def looks_like_path(value: str) -> bool:
    """True for a value that can only be a local path, never a hub id (`org/name`)."""
    # Hub ids are "org/name"; anything absolute, dotted-relative, home-based or deeper is local.
    return value.startswith(("/", ".", "~")) or value.count("/") > 1


def offline_mode() -> bool:
    """True when HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set, now or when huggingface_hub was
    imported (it reads them once, at import)."""
    from huggingface_hub import constants

    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    now = any(os.environ.get(n, "").upper() in ("1", "ON", "YES", "TRUE") for n in names)
    return bool(constants.HF_HUB_OFFLINE) or now


@functools.lru_cache(maxsize=4)
def hub_reachable(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when `endpoint` answers an HTTP request at all (any status); asked once a process."""
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=timeout, follow_redirects=False)
    except Exception:  # no route, no DNS, refused, timed out: the hub cannot be reached
        return False
    return True


def in_cache(name: str) -> bool:
    """True when hub id `name` has a config.json in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def go_offline() -> None:
    """Make huggingface_hub and transformers read the cache only (no retries against the hub)."""
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"  # for child processes
    constants.HF_HUB_OFFLINE = True  # read at import time: this process needs it set here


def check_hub_id(key: str, name: str) -> None:
    """ConfigError naming `key` when hub id `name` cannot be had: not cached and either offline
    mode is set or the hub does not answer. A cached id with no hub switches to offline mode."""
    from huggingface_hub import constants

    if offline_mode():
        go_offline()  # set after huggingface_hub was imported: make it hold in this process
        if not in_cache(name):
            raise ConfigError(
                f"config key {key!r}: {name!r} is not in the local Hugging Face cache "
                f"({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set; download it first "
                f"(`hf download {name}`) or give a local directory"
            )
        return
    if hub_reachable(constants.ENDPOINT):
        return
    if in_cache(name):
        print(
            f"generalist: {constants.ENDPOINT} cannot be reached; {name!r} is loaded from the "
            f"local cache (HF_HUB_OFFLINE=1)",
            file=sys.stderr,
        )
        go_offline()
        return
    raise ConfigError(
        f"config key {key!r}: {name!r} is a hub id, but {constants.ENDPOINT} cannot be reached "
        f"(no network?) and it is not in the local Hugging Face cache "
        f"({constants.HF_HUB_CACHE}); download it where there is a network (`hf download "
        f"{name}`) and copy the cache here, or give a local directory"
    )
