"""The parts of a dispatcher (``nbqueue.dispatcher.Dispatcher``), each owning its state.

- ``slots.Slots``: the slots and what runs in each, oldest first; what ended there and
  waits for the next commit; which jobs handed ahead started; how long each function's
  jobs take (whether they are *short*).
- ``reserve.Reserve``: jobs claimed ahead while short jobs stream, packed for a slot
  while the workers run, given back once they would wait.
- ``enforce.Enforcer``: timeouts and cancel requests of the jobs in the slots and the
  reserve.
- ``fence.Fence``: what a dispatcher does first when its lease lapsed.
- ``failures.StoreFailures``: outcomes held while the store fails, settled one by one.
- ``firings.Firings``: the schedules' firings, made as they come due.
- ``inprocess.InProcessSlot``: a slot that runs jobs in the dispatcher's own process,
  for tests that drive a dispatcher with ``step(now)`` on a fake clock.

The ``Dispatcher`` keeps the cycle (``step``) and the lifecycle (``open``, ``start``,
``stop``); see docs/concepts.md, "Inside a dispatcher".
"""
