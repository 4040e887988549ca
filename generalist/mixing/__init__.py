"""The mixture stream: a deterministic, resumable schedule of tasks (stratified: every prefix
within one example of its rates; or i.i.d.), each task's shards shared out to ranks and
dataloader workers, and the stream that formats their records as Examples."""
