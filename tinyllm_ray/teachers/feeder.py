"""One vLLM engine fed by several callers at once, so its batch never drains between calls (``ContinuousFeeder``)."""

from __future__ import annotations

import concurrent.futures
import itertools
import queue
import threading
from typing import Any

_STOP = object()  # put in the inbox by ``close``


class ContinuousFeeder:
    """Keeps one vLLM engine's batch full across calls: a single thread owns the engine, adds the requests of
    every call that arrives (between two engine steps, so they join the running batch), steps the engine while
    anything is unfinished, and hands each call its outputs when its last request finishes.

    With one ``LLM.generate`` per call, each call drained (its last sequences decoding in a nearly empty batch)
    before the next call's prompts arrived; the bare engine over all prompts keeps one continuous batch. vLLM's
    own ``AsyncLLM`` does this with an engine-core process of its own, which in a Ray actor would start a child
    process outside the actor's resources; ``LLMEngine``'s ``add_request``/``step`` in one thread does it in
    process."""

    def __init__(self, engine: Any, sampling: Any):
        self.engine, self.sampling = engine, sampling
        self.inbox: queue.Queue = queue.Queue()
        self.ids = itertools.count()
        self.thread: threading.Thread | None = None
        self.start_lock = threading.Lock()
        self.failed: BaseException | None = None

    def submit(self, prompt_ids: list[list[int]]) -> list[Any]:
        """The engine's ``RequestOutput`` per prompt, in order (blocks until all of them finished)."""
        if not prompt_ids:
            return []
        done: concurrent.futures.Future = concurrent.futures.Future()
        with self.start_lock:
            if self.failed is not None:
                raise RuntimeError("the vLLM engine failed earlier") from self.failed
            if self.thread is None:
                from vllm.sampling_params import RequestOutputKind

                # Outputs of finished requests only (as ``LLM.generate`` asks), not every running one every step.
                self.sampling = self.sampling.clone()
                self.sampling.output_kind = RequestOutputKind.FINAL_ONLY
                self.thread = threading.Thread(target=self._run, name="vllm-feeder", daemon=True)
                self.thread.start()
            self.inbox.put((prompt_ids, done))
        return done.result()

    def close(self) -> None:
        """Stop the stepping thread once the engine has no work (calls still waiting get no answer): the engine can
        then be freed. For a process that starts another engine after this one (tests); an actor just exits."""
        with self.start_lock:
            thread, self.thread = self.thread, None
            if thread is not None:
                self.inbox.put(_STOP)
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        calls: dict[int, tuple[list[Any], concurrent.futures.Future]] = {}  # call -> (outputs so far, future)
        where: dict[str, tuple[int, int]] = {}  # request id -> (call, index in the call)
        try:
            while True:
                # Wait for work only when the engine has none; else take what arrived and step at once.
                item = self.inbox.get() if not where else None
                if item is _STOP:
                    return
                self._take(item, calls, where)
                while True:
                    try:
                        item = self.inbox.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:  # once the work in the engine is done
                        self.inbox.put(_STOP)
                        break
                    self._take(item, calls, where)
                for out in self.engine.step():
                    if not out.finished or out.request_id not in where:
                        continue
                    call, index = where.pop(out.request_id)
                    outputs, future = calls[call]
                    outputs[index] = out
                    if all(o is not None for o in outputs):
                        del calls[call]
                        future.set_result(outputs)
        except BaseException as err:  # noqa: BLE001 -- every waiting call gets the engine's error
            with self.start_lock:
                self.failed = err
            for _, future in calls.values():
                future.set_exception(err)
            while True:
                try:
                    self.inbox.get_nowait()[1].set_exception(err)
                except queue.Empty:
                    break

    def _take(self, item: tuple[list[list[int]], concurrent.futures.Future] | None,
              calls: dict[int, tuple[list[Any], concurrent.futures.Future]], where: dict[str, tuple[int, int]]) -> None:
        if item is None:
            return
        prompt_ids, future = item
        call = next(self.ids)
        calls[call] = ([None] * len(prompt_ids), future)
        added: list[str] = []
        try:
            for index, ids in enumerate(prompt_ids):
                request = f"{call}-{index}"
                where[request] = (call, index)
                added.append(request)
                self.engine.add_request(request, {"prompt_token_ids": ids}, self.sampling)
        except Exception as err:  # noqa: BLE001 -- a request vLLM refuses fails its own call, not the others
            self.engine.abort_request(added)
            for request in added:
                del where[request]
            del calls[call]
            future.set_exception(err)
