"""The mixture stream: a deterministic, resumable schedule of tasks, each task's shards shared
out to ranks and dataloader workers, and the stream that formats their records as Examples."""
