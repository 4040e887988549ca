"""Evaluation: generation and option scoring, each task's metrics, baselines, the leaderboard."""
