"""An outcome travels from a worker to its dispatcher as a tuple of its fields
(``runtime.pack_outcome``): every field of ``Outcome`` arrives, in its place."""

from __future__ import annotations

import dataclasses

from nbqueue.job import Outcome, RemoteError
from nbqueue.runtime import pack_outcome, unpack_outcome


def test_every_field_of_an_outcome_arrives() -> None:
    values = {  # no field at its default
        "id": "j1", "claim": 3, "kind": "failed", "result": b"\x80\x05N.",
        "error": RemoteError("ValueError", "kaput"), "retryable": False,
        "spawned": ("a spawned job",), "yielded": ("a generator's step",), "log": "printed\n",
        "started": 1.5, "worker_ended": True,
    }
    assert set(values) == {f.name for f in dataclasses.fields(Outcome)}, \
        "Outcome has a field pack_outcome does not know: add it there (in order) and here"
    sent = Outcome(**values)
    assert unpack_outcome(pack_outcome(sent)) == sent


def test_a_plain_outcome_arrives_with_its_defaults() -> None:
    sent = Outcome("j2", 1, "done", result=b"\x80\x05N.")
    assert unpack_outcome(pack_outcome(sent)) == sent
