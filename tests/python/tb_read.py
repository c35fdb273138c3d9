#!/usr/bin/env python3
"""Reads a TensorBoard event file (or directory) with TensorBoard's own
EventAccumulator and prints its scalars as JSON, for tests/train/tensorboard_test.cpp:
{"file_version": "brain.Event:2", "scalars": {"tag": [[step, value], ...]}}.
Exit code 3 when the tensorboard package is missing (the C++ test then skips)."""
import json
import sys


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: tb_read.py <event file or directory>", file=sys.stderr)
        return 2
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError as e:  # pragma: no cover - depends on the environment
        print(f"tensorboard is not importable: {e}", file=sys.stderr)
        return 3
    acc = event_accumulator.EventAccumulator(
        sys.argv[1], size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    out = {"file_version": acc.file_version, "scalars": {}}
    for tag in acc.Tags()["scalars"]:
        out["scalars"][tag] = [[e.step, e.value] for e in acc.Scalars(tag)]
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
