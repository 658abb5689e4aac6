"""``%load_ext nbqueue``: the ``%%enqueue`` cell magic and the ``%nbq`` line magic.

The queue is held by the magics instance (no module globals) and opened at its
first use, so that ``%load_ext`` creates nothing on disk: a directory that exists
already is opened (and served) at once, a new one at the first ``%%enqueue``. A cell
run with ``%%enqueue`` becomes a job calling ``run_cell`` (``nbqueue.cellrun``) with the
cell's source and the values of the notebook variables it reads; the variables it
assigns come back into the notebook at the next cell run (a ``pre_run_cell`` hook) or
at once with ``%nbq wait``, except names assigned in the notebook since the submit.
The cell's outputs are kept current in the document (``nbqueue.notebook.cellstatus``).
"""

from __future__ import annotations

import atexit
import logging
import uuid
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from .. import job as J
from ..cellrun import CellOutputs, run_cell
from ..errors import (
    AmbiguousJob,
    IncompatibleQueue,
    InvalidArgument,
    NoSuchJob,
    SubmitError,
    UnsafeQueue,
)
from ..handle import Job
from ..message import content_key
from ..queue import Queue, default_path
from .cellsource import cell_key, cell_names
from .enqueue import (
    MISSING,
    Binding,
    CellJob,
    Note,
    ResultRef,
    cell_inputs,
    check_defined,
    collect,
    enqueue_options,
    job_name,
    label,
    names,
    unpicklable,
    unquote,
)

log = logging.getLogger(__name__)

WAIT_SLICE = 0.25  # seconds per wait step, so that Interrupt is noticed promptly
MAX_PANELS = 4  # panels shown by %nbq that stay live; older ones are closed


@magics_class
class NbqueueMagics(Magics):
    """``%%enqueue`` and ``%nbq``, bound to one queue.

    Parameters
    ----------
    shell : InteractiveShell
        The shell the magics are registered in.
    queue : Queue, optional
        An open queue; by default ``path`` is opened at first use.
    path : Path, optional
        The queue directory to open at first use; default ``$NBQUEUE_DIR`` or
        ``./.nbqueue`` as they are now.
    """

    def __init__(self, shell: Any, queue: Queue | None = None, *,
                 path: Path | None = None) -> None:
        super().__init__(shell)
        self._queue = queue
        self._path = queue.path if queue is not None else (path or default_path())
        self._seq = 0  # submits of this session, in order
        self._cells: dict[str, CellJob] = {}  # job id -> cell job, in submit order
        self._bound: dict[str, Binding] = {}
        self._seen_changes = -1
        self._refresher: Any = None
        self._panels: list[tuple[Any, str]] = []  # live panels and their display ids

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def queue(self) -> Queue:
        """The queue, opened at first use (its directory created, its dispatcher started)."""
        if self._queue is None:
            self._queue = Queue(self._path)
        return self._queue

    def _existing(self) -> Queue | None:
        """The queue if it is open or its directory exists (it is opened then); None, and
        nothing created, if nothing was ever queued there."""
        if self._queue is None and not self._path.exists():
            return None
        return self.queue

    def close(self) -> None:
        """Stop the status lines, the panels and the queue (running jobs are handed back)."""
        self._close_panels(keep=0)
        if self._refresher is not None:
            self._refresher.stop()
            self._refresher = None
        if self._queue is not None:
            self._queue.close()

    def kernel_stopping(self, restart: bool) -> None:
        """The kernel was asked to restart or shut down: stop the dispatcher now, before
        ipykernel stops its child processes, so that the running jobs go back to the
        queue with no attempt charged and nothing that needs them is cancelled."""
        cause = "the kernel restarted" if restart else "the kernel shut down"
        if self._queue is None:
            return
        try:
            self._queue.stop(cause=cause)
        except Exception:
            log.warning("nbqueue: stopping the queue for the kernel's %s failed",
                        "restart" if restart else "shutdown", exc_info=True)
        # what the document keeps of this kernel's outputs: no live widget, and cells
        # whose jobs go on say that they show them as they were
        try:
            self._close_panels(keep=0)
            for entry in self._cells.values():
                if entry.status is not None and not entry.status.final:
                    entry.status.stopped(cause, f"%nbq wait {entry.name}")
        except Exception:
            log.warning("nbqueue: updating the outputs for the kernel's %s failed",
                        "restart" if restart else "shutdown", exc_info=True)

    def _at_exit(self) -> None:
        # A courtesy: leases and fencing keep the queue right even without it.
        try:
            self.close()
        except Exception:
            log.debug("nbqueue: stopping the queue at exit failed", exc_info=True)

    def _use(self, path: str, detach: bool = False, workers: int | None = None) -> None:
        new = Queue(path, detach=detach, workers=workers)
        old, self._queue, self._path = self._queue, new, new.path
        self._close_panels(keep=0)
        if self._refresher is not None:
            self._refresher.stop()
            self._refresher = None
        self._cells.clear()
        self._bound.clear()
        self._seen_changes = -1
        if old is not None:
            old.close()

    def _show_panel(self, **kwargs: Any) -> None:
        """Show a live panel; when it is closed, its output becomes a static snapshot."""
        from ..widgets import QueuePanel

        # each panel polls the store from its own thread: keep the newest few alive
        self._close_panels(keep=MAX_PANELS - 1)
        panel = QueuePanel(self.queue, **kwargs)
        display_id = f"nbq-panel-{uuid.uuid4().hex[:8]}"
        self._panels.append((panel, display_id))
        display(panel, display_id=display_id)

    def _close_panels(self, keep: int) -> None:
        """Close all but the newest ``keep`` panels, each output replaced by a snapshot of
        the queue, so that the document never keeps a widget without its kernel."""
        while len(self._panels) > keep:
            panel, display_id = self._panels.pop(0)
            try:
                display(panel_snapshot(self._queue), raw=True, display_id=display_id,
                        update=True)
            finally:
                panel.close()

    def _say(self, text: str, error: bool = False) -> None:
        display(Note(text, error))

    def _check_dispatcher(self) -> None:
        if self._queue is None:
            return
        if self.queue.detach:
            self._check_service()
            return
        d = self.queue.dispatcher
        if d is not None and d.error and not d.alive:
            self._say(f"nbqueue: the dispatcher thread of {self.queue.path} died: {d.error}\n"
                      "Jobs of this kernel wait until it runs again: %reload_ext nbqueue, or "
                      "restart the kernel, or serve the queue with `nbqueue worker`.", error=True)

    def _check_service(self) -> None:
        """A detached queue: say so if its service is not running (nothing runs its jobs)."""
        path = self.queue.path
        service = self.queue.service
        if service is not None and service.alive:
            return
        if service is None:
            what = "no service serves it (it was stopped, or exited when idle)"
        elif service.state == "failed":
            last = (service.error or "").strip().splitlines()
            what = f"its service (pid {service.pid}) died" + (f" ({last[-1]})" if last else "")
        else:
            what = (f"its service (pid {service.pid}) is gone without stopping cleanly "
                    "(killed, crashed, or the machine restarted)")
        log_note = f" Its log: {service.log}." if service is not None and service.log else ""
        self._say(f"nbqueue: {path} is detached, but {what}: its jobs wait.{log_note} Start "
                  f"it again: %nbq use {path} --detach (or nbqueue worker {path} --detach).",
                  error=True)

    # -- %%enqueue ----------------------------------------------------------------------------

    @magic_arguments()
    @argument("name", nargs="?", default=None,
              help="a name for the job (default: cell-<hash of the source>)")
    @argument("--after", default=None, metavar="T",
              help='not before this moment: "15:00", "3pm", "in 10m", "tomorrow 9:00", ISO 8601')
    @argument("--resources", default=None, metavar="A,B",
              help="resources held while it runs (name, or name=units)")
    @argument("--needs", default=None, metavar="NAME,...",
              help="jobs (names, ids or keys) that must finish first")
    @argument("--priority", type=int, default=0, help="larger runs first")
    @argument("--retries", type=int, default=0, help="re-run this many times after an exception")
    @argument("--timeout", type=float, default=None, metavar="S",
              help="stop it after S seconds (it fails)")
    @argument("--memory", default=None, metavar="SIZE",
              help='stop it once it uses more memory than this ("4GB"; it fails)')
    @argument("--review", action="store_true",
              help="a person must approve the outputs before they come back")
    @argument("--out", default=None, metavar="A,B",
              help="the variables to hand back (default: every name the cell assigns)")
    @argument("--force", action="store_true",
              help="run it anew even if this cell already ran with these inputs")
    @cell_magic
    def enqueue(self, line: str, cell: str) -> None:
        """Run this cell as a job in a worker process.

        The notebook variables the cell reads are captured now (a name that nothing
        defines is an ``InputNotDefined``, a ``NameError``, and nothing is submitted);
        the variables it assigns come back when it has finished: at the next cell you
        run, or at once with ``%nbq wait NAME``, except names assigned in the notebook
        since the submit. Re-running the same cell with the same inputs attaches to the
        existing job. The cell's outputs follow the job and keep its final state.
        """
        self._check_dispatcher()
        args = parse_argstring(self.enqueue, line)
        for flag in ("name", "after", "resources", "needs", "out"):
            setattr(args, flag, unquote(getattr(args, flag)))
        source = self.shell.transform_cell(cell)
        reads, assigns = cell_names(source)  # a SyntaxError shows as such
        if "get_ipython" in reads:
            raise UsageError("%%enqueue: magics, !shell commands and get_ipython() cannot run in "
                             "a worker process; move them to a cell of their own")
        name = job_name(args, cell)
        check_defined(name, reads, assigns, self.shell.user_ns, self._cells)
        outputs = names(args.out, "--out") if args.out is not None else [
            n for n in assigns if not (n.startswith("__") and n.endswith("__"))]
        opts = enqueue_options(args, self._resolve)
        inputs, from_jobs, needs = cell_inputs(self.queue, reads, opts.pop("needs"),
                                               self.shell.user_ns, self.shell.user_ns_hidden,
                                               self._cells, self._bound)
        key = None if args.force else cell_key(name, source, inputs, outputs, bool(args.out),
                                               from_jobs, needs)
        try:
            job = self.queue.submit(run_cell, source, inputs, outputs, strict=bool(args.out),
                                    from_jobs=tuple(from_jobs), label=name, name=name,
                                    needs=needs, key=key, **opts)
        except SubmitError as exc:
            raise UsageError(unpicklable(inputs) or str(exc)) from None
        gate = None
        if args.review:
            gate = self.queue.review(f"Review {name}", payload=ResultRef(job.id, name),
                                     needs=[job])
        old = self._cells.pop(job.id, None)  # re-running a cell moves its job to the end
        if old is not None and old.status is not None:
            old.status.close()
        self._seq += 1
        ns = self.shell.user_ns
        entry = CellJob(name, job, gate, outputs, seq=self._seq,
                        before={var: ns.get(var, MISSING) for var in outputs})
        self._cells[job.id] = entry
        self._show(entry)

    def _show(self, entry: CellJob) -> None:
        """Show the cell's outputs (kept current from now on)."""
        from ..widgets.refresher import Refresher
        from .cellstatus import CellStatus

        if self._refresher is None:
            self._refresher = Refresher(self.queue.changes)
        for other in self._cells.values():  # the same cell run again: its old outputs are gone
            if other is not entry and other.name == entry.name and other.status is not None:
                other.status.close()
        entry.status = CellStatus(entry.job, entry.gate, refresher=self._refresher)
        self._collect([entry])  # a job that had finished: its variables come back at once

    # -- variables coming back ----------------------------------------------------------------

    def _pre_run_cell(self, info: Any = None) -> None:
        # failed and cancelled cell jobs are looked at too: a retry made anywhere brings
        # their variables back
        if all(e.settled for e in self._cells.values()):
            return
        try:
            changes = self.queue.changes()
            if changes == self._seen_changes:
                return
            self._seen_changes = changes
            self._collect([e for e in self._cells.values() if not e.settled])
        except Exception as exc:  # never break the user's cell over it
            log.warning("nbqueue: could not check cell jobs: %s", exc)

    def _collect(self, entries: list[CellJob]) -> None:
        collect(entries, self.shell.user_ns, self._bound)

    # -- %nbq -----------------------------------------------------------------------------------

    @magic_arguments()
    @argument("command", nargs="?", default=None,
              help="use PATH | reviews | wait [NAME] | cancel NAME | retry NAME | "
                   "result NAME [VARIABLE] | queue (no command: show the panel)")
    @argument("target", nargs="?", default=None, help="a job name, id or key; a path for use")
    @argument("variable", nargs="?", default=None,
              help="result CELL VARIABLE: one variable of a cell job's outputs")
    @argument("--detach", action="store_true",
              help="use PATH --detach: the directory's service (a background process of its "
                   "own) runs the jobs, also after this kernel restarts or shuts down")
    @argument("-w", "--workers", type=int, default=None, metavar="N",
              help="use PATH -w N: worker processes (of the service, with --detach)")
    @line_magic
    def nbq(self, line: str) -> Any:
        """The queue: ``%nbq`` shows the panel; ``%nbq use PATH [--detach] [-w N]`` switches
        queues (``--detach``: the directory's service runs the jobs, not this kernel);
        ``%nbq reviews``, ``%nbq wait [NAME]``, ``%nbq cancel NAME``, ``%nbq retry NAME``,
        ``%nbq result NAME`` (the job's result) or ``%nbq result CELL VARIABLE`` (one
        variable of a cell job, say one the notebook kept); ``%nbq queue`` returns the
        ``Queue``. A NAME is the newest job of that name, or a job id or key.
        """
        self._check_dispatcher()
        args = parse_argstring(self.nbq, line)
        command, target = args.command, unquote(args.target)
        if args.variable is not None and command != "result":
            raise UsageError(f"%nbq {command}: unexpected {args.variable!r}; only "
                             "%nbq result CELL VARIABLE takes a third word")
        if command in (None, "reviews") and self._existing() is None:
            self._say(f"nbqueue: nothing is queued yet: {self._path} does not exist; it is "
                      "created at the first %%enqueue (or q = %nbq queue)")
            return None
        if command is None:
            self._show_panel()
            return None
        if command != "use" and (args.detach or args.workers is not None):
            raise UsageError("--detach and -w go with %nbq use PATH only")
        if command == "use":
            if not target:
                raise UsageError("%nbq use PATH [--detach] [-w N]: give the queue directory")
            if args.workers is not None and args.workers < 1:
                raise UsageError(f"%nbq use: -w {args.workers}: give a number of workers >= 1")
            try:
                self._use(target, detach=args.detach, workers=args.workers)
            except (IncompatibleQueue, UnsafeQueue, InvalidArgument) as exc:
                raise UsageError(f"%nbq use {target}: {exc}") from None
            service = self.queue.service if args.detach else None
            self._say(f"nbqueue: using {self.queue.path}" + (
                f", served by its detached service (pid {service.pid}, {service.workers} "
                f"worker{'s' if service.workers != 1 else ''}, log {service.log or 'its terminal or journal'}); it keeps running "
                f"when this kernel restarts or shuts down (stop it with: nbqueue stop "
                f"{self.queue.path})"
                if service is not None else ""))
            return None
        if command == "queue":
            return self.queue
        if command == "reviews":
            self._show_panel(sections=("reviews",))
            return None
        if command == "wait":
            self._wait(target)
            return None
        if command not in ("cancel", "retry", "result"):
            raise UsageError(f"%nbq {command}: unknown command; one of use, reviews, wait, "
                             "cancel, retry, result, queue")
        if not target:
            raise UsageError(f"%nbq {command} NAME: give a job name, id or key")
        job = self._resolve(target)
        if command == "cancel":
            job.cancel()
            self._say(f"nbqueue: {label(job)}")
            return None
        if command == "retry":
            self._retry(job)
            return None
        record = job.record()
        if record.state not in J.ENDED:
            self._say(f"nbqueue: {label(job)}; %nbq wait {target} waits for it")
            return None
        result = job.result()
        return result if args.variable is None else variable_of(result, target, args.variable)

    def _resolve(self, target: str) -> Job:
        if self._existing() is None:
            raise UsageError(f"no job named {target!r}: nothing was queued yet in "
                             f"{self._path}")
        try:  # a name, an id, a key or the start of an id, as the CLI takes them
            return self.queue.find(target)
        except (NoSuchJob, AmbiguousJob) as exc:
            raise UsageError(str(exc)) from None

    def _entry_for(self, job: Job) -> CellJob | None:
        if job.id in self._cells:
            return self._cells[job.id]
        for entry in self._cells.values():
            if entry.gate is not None and entry.gate.id == job.id:
                return entry
        return None

    def _adopt(self, job: Job) -> CellJob | None:
        """A job this session did not submit (say, before a kernel restart): a cell job's
        variables come back when it has finished, after its review gate if it has one."""
        record = job.record()
        if record.kind != J.CALL:
            return None
        try:
            gate: Job | None = self.queue.job(content_key("gate", (f"Review {record.name}",),
                                                          {}, (job.id,)))
        except NoSuchJob:
            gate = None
        self._seq += 1
        # what the notebook holds now stands for its state at the submit
        entry = CellJob(record.name, job, gate,
                        outputs=[], seq=self._seq, before=dict(self.shell.user_ns))
        self._cells[job.id] = entry
        return entry

    def _retry(self, job: Job) -> None:
        try:
            job.retry()
        except ValueError as exc:
            raise UsageError(f"%nbq retry: {exc}") from None
        entry = self._entry_for(job)
        if entry is not None:
            if entry.gate is not None and entry.gate.state == J.CANCELLED:
                entry.gate = self.queue.review(f"Review {entry.name}",
                                               payload=ResultRef(job.id, entry.name), needs=[job])
            entry.pending, entry.settled = True, False
            if entry.status is not None:
                entry.status.follow(entry.gate)
        self._say(f"nbqueue: {label(job)}")

    def _wait(self, target: str | None) -> None:
        if target is None:
            entries = [e for e in self._cells.values() if e.pending]
            jobs = [e.job for e in entries]
        else:
            job = self._resolve(target)
            entry = self._entry_for(job) or self._adopt(job)
            entries = [entry] if entry is not None else []
            jobs = [entry.job if entry is not None else job]
        try:
            for job, entry in zip(jobs, entries or [None] * len(jobs), strict=True):
                if not self._wait_one(job, entry):
                    return
        except KeyboardInterrupt:
            self._say("nbqueue: stopped waiting; the jobs go on: "
                      + "; ".join(label(j) for j in jobs))

    def _wait_one(self, job: Job, entry: CellJob | None) -> bool:
        """Wait for one job (and its gate); False if it is waiting for a person."""
        gate = entry.gate if entry is not None else None
        while True:
            record = job.record()
            if record.state == J.REVIEW or (gate is not None and record.state == J.DONE
                                             and gate.state == J.REVIEW):
                which = job if record.state == J.REVIEW else gate
                assert which is not None
                self._say(f"nbqueue: {label(which)}, waiting for a person: approve it in the "
                          "panel (%nbq reviews) or with q.approve(id); a click is handled once "
                          "no cell runs, so this wait returns now")
                return False
            if record.state in J.ENDED and (gate is None or record.state != J.DONE
                                            or gate.state in J.ENDED):
                break
            try:
                (gate if record.state == J.DONE and gate is not None else job).wait(WAIT_SLICE)
            except TimeoutError:
                pass
        if entry is not None:  # and any other cell that has finished meanwhile, in order
            self._collect([e for e in self._cells.values() if e.pending])
        if record.state != J.DONE:
            job.result()  # raises JobFailed / JobCancelled with the remote traceback
        if gate is not None:
            gate.result()  # a rejected review raises JobCancelled
        back = f"; back in the notebook: {', '.join(entry.bound)}" if entry and entry.bound else ""
        if entry is not None and entry.kept:
            back += (f"; kept the notebook's {', '.join(entry.kept)} (assigned since the "
                     f"submit): %nbq result {entry.name} {entry.kept[0]} gives the job's value")
        self._say(f"nbqueue: {label(job)}{back}")
        return True


def panel_snapshot(queue: Queue | None) -> dict[str, str]:
    """The static output a closed panel leaves: the queue's status as it was then."""
    from datetime import datetime

    from ..display import queue_html

    when = datetime.now().strftime("%Y-%m-%d %H:%M")
    note = f"the queue as of {when}, when this panel closed; %nbq shows it live"
    if queue is None:
        return {"text/plain": note}
    status = queue.status()
    counts = ", ".join(f"{n} {s}" for s, n in status["counts"].items() if n) or "empty"
    return {"text/html": f'<div class="nbq-panel-snapshot">{queue_html(status)}'
                         f"<small>{note}</small></div>",
            "text/plain": f"nbqueue {status['path']}: {counts}\n{note}"}


def variable_of(result: Any, cell: str, var: str) -> Any:
    """One variable of a cell job's outputs (``%nbq result CELL VARIABLE``)."""
    if isinstance(result, CellOutputs) and var in result:
        return result[var]
    dropped = getattr(result, "dropped", {})
    if var in dropped:
        raise UsageError(f"%nbq result {cell} {var}: {var} was left out of the job's outputs "
                         f"({dropped[var]})")
    if not isinstance(result, CellOutputs):
        raise UsageError(f"%nbq result {cell} {var}: {cell} is not a %%enqueue cell job; "
                         f"%nbq result {cell} gives its result")
    have = ", ".join(result) or "none"
    raise UsageError(f"%nbq result {cell} {var}: the job assigned no {var!r} (its variables: "
                     f"{have})")



def load_ipython_extension(ip: Any) -> None:
    """Register ``%%enqueue`` and ``%nbq`` on the default queue directory.

    A directory that exists is opened and its dispatcher started now (its jobs run
    again); a new one is created at the first ``%%enqueue``, so loading creates nothing
    on disk. Loading twice is harmless: the second time finds the magics registered.
    """
    if _loaded(ip) is not None:
        return
    magics = NbqueueMagics(ip)
    magics._existing()  # an existing queue is served at once
    ip.register_magics(magics)
    ip.events.register("pre_run_cell", magics._pre_run_cell)
    atexit.register(magics._at_exit)
    _hook_kernel_shutdown(ip)


def unload_ipython_extension(ip: Any) -> None:
    """Remove the magics and stop the queue's dispatcher."""
    magics = _loaded(ip)
    if magics is None:
        return
    ip.events.unregister("pre_run_cell", magics._pre_run_cell)
    atexit.unregister(magics._at_exit)
    manager = ip.magics_manager
    manager.magics["cell"].pop("enqueue", None)
    manager.magics["line"].pop("nbq", None)
    manager.registry.pop(type(magics).__name__, None)
    magics.close()


def _loaded(ip: Any) -> NbqueueMagics | None:
    found = ip.magics_manager.registry.get(NbqueueMagics.__name__)
    return found if isinstance(found, NbqueueMagics) else None


def _hook_kernel_shutdown(ip: Any) -> None:
    """Have a shutdown request (Kernel > Restart, Shut Down, closing JupyterLab) stop the
    dispatcher before ipykernel handles it: ipykernel's handler ends the kernel's child
    processes first and runs the exit hooks only afterwards. Installed once per kernel;
    it finds the magics loaded at the time of the request (``%reload_ext`` replaces them)."""
    kernel = getattr(ip, "kernel", None)
    if kernel is None or getattr(kernel, "_nbqueue_shutdown_hook", False):
        return
    for handlers in (getattr(kernel, "control_handlers", None),
                     getattr(kernel, "shell_handlers", None)):
        original = handlers.get("shutdown_request") if isinstance(handlers, dict) else None
        if original is None:
            continue

        def shutdown_request(stream: Any, ident: Any, parent: Any, _original: Any = original) -> Any:
            magics = _loaded(ip)
            if magics is not None:
                content = parent.get("content", {}) if isinstance(parent, dict) else {}
                magics.kernel_stopping(bool(content.get("restart")))
            return _original(stream, ident, parent)

        handlers["shutdown_request"] = shutdown_request
    kernel._nbqueue_shutdown_hook = True
