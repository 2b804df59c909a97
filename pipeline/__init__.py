"""Data stages of the BigTime pipeline: download -> frames -> masks -> shards (see dvc.yaml)."""
