"""``nbqueue serve``: the review page of queues, without Jupyter (nbqueue.web.standalone)."""

from __future__ import annotations

import argparse

from ..queue import default_path
from .common import CommandFailed, _path


def cmd_serve(args: argparse.Namespace) -> int:
    paths = [_path(p) for p in args.paths] or [default_path()]
    for path in paths:
        if not path.is_dir():
            raise CommandFailed(f"no queue or folder at {path}: give a queue directory, or a "
                                "folder under which queues were opened")
    from ..web.standalone import serve  # tornado: only this command needs it

    def say(text: str) -> None:
        print(f"nbqueue serve: {text}", flush=True)

    return serve(paths, port=args.port, say=say)
