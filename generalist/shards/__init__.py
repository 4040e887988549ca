"""WebDataset shards: the format and manifest, writing a dataset's records, reading them back
(in order, or by seeking through a tar index), and the image policy applied on the way in."""
