"""The notebook face of nbqueue, which runs in the kernel beside the user's code.

- ``magics``: ``%load_ext nbqueue``, the ``%%enqueue`` cell magic and the ``%nbq`` line
  magic (the ``Magics`` subclass and its state).
- ``enqueue``: the pieces of ``%%enqueue`` that hold no magics state: its records,
  argument conversion, the inputs a cell takes and its variables coming back.
- ``cellstatus``: a ``%%enqueue`` cell's outputs, kept current in the notebook document.
- ``cellsource``: a cell's source as the notebook reads it: the names it reads and
  assigns (``cell_names``), its inputs as they travel, its key (``cell_key``).

What a cell shows (``nbqueue.cellview``) and running a cell as a job in a worker
(``nbqueue.cellrun``) live outside: a worker, the panel and the web desk use them too.
Importing ``magics`` or ``enqueue`` loads IPython; ``import nbqueue`` does not.
"""
