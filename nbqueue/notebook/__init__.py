"""The notebook face of nbqueue, which runs in the kernel beside the user's code.

- ``magics``: ``%load_ext nbqueue``, the ``%%enqueue`` cell magic and the ``%nbq`` line
  magic (the ``Magics`` subclass and its state).
- ``enqueue``: the pieces of ``%%enqueue`` that hold no magics state: its records,
  argument conversion, the inputs a cell takes and its variables coming back.
- ``cellstatus``: a ``%%enqueue`` cell's outputs, kept current in the notebook document.

What a cell shows (``nbqueue.cellview``) and running a cell as a job in a worker
(``nbqueue.cells``) live outside: a worker, a report and the web desk use them too.
Importing this package loads IPython; ``import nbqueue`` does not import it.
"""
