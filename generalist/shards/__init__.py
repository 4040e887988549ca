"""WebDataset shards: the format and manifest, writing a dataset's records, reading them back
(in order, or by seeking through a tar index), the image policy applied on the way in, and
shard roots under a URL (storage: object stores through fsspec; cache: fetched shards)."""
