"""Secrets in URLs, redacted wherever a run writes or shows them.

A shard root or tracking URI may carry a password (`https://user:secret@host/...`, an s3 key
pair as `s3://KEY:SECRET@bucket/...`) or a signed query (`?X-Amz-Signature=...&token=...`).
The real value is used to connect; every file a run writes (params.json, run.json,
mlflow_run.json, a checkpoint's trainer.json), every MLflow param and every warning or error
line shows `user:***@` and `X-Amz-Signature=***` instead (tests/reliability/test_secrets.py).
"""

from __future__ import annotations

import re

REDACTED = "***"
# scheme://user:password@ -> scheme://user:***@ (the user name stays: it says which account)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*):[^@/\s'\"]+@")
# query parameters that carry credentials (AWS/GCS signed URLs, tokens, keys)
_QUERY = re.compile(
    r"(?i)(?P<head>[?&](?:x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature"
    r"|x-goog-credential|awsaccesskeyid|signature|sig|token|access_token|password|secret|key"
    r"|api_key|apikey)=)[^&\s'\"#]+"
)


def redact(text: str) -> str:
    """`text` with URL passwords and credential query values replaced by ***."""
    text = _USERINFO.sub(lambda m: f"{m['head']}:{REDACTED}@", text)
    return _QUERY.sub(lambda m: f"{m['head']}{REDACTED}", text)


def redact_json(value: object) -> object:
    """A JSON-like value (dicts, lists, strings) with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_json(item) for item in value]
    return value
