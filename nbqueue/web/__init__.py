"""The review page: pending review gates of the queues a user has, with their payload,
form fields, a comment box, Approve and Reject, served without any kernel.

Two servers share it: the Jupyter server extension (``/nbqueue/``, ``jupyter.py``,
behind Jupyter's own login and XSRF protection) and ``nbqueue serve`` (``standalone.py``,
tornado alone, on 127.0.0.1 behind a token). ``render.py`` makes the HTML, ``desk.py``
reads and decides through the queue API, ``handlers.py`` holds what both servers' request
handlers do. See docs/reviews.md, "The review page".
"""
