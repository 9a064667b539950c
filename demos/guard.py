"""Serving guards against a hostile client (gradio/ASGI side; issue 19). ``app.py`` installs them.

* :class:`GuardMiddleware` (plain ASGI, so streamed answers are untouched):
  - **security headers** on every answer: ``X-Content-Type-Options: nosniff`` and
    ``Content-Security-Policy: frame-ancestors 'self' https://huggingface.co https://*.huggingface.co``
    (a Space is shown inside an iframe on huggingface.co; every other site is refused. ``X-Frame-Options``
    cannot name an allowed origin, so it is not sent: browsers that know CSP ignore it anyway);
  - **request size**: every POST body is at most :data:`MAX_REQUEST_BYTES` (one 20 MB file plus the form
    around it), so one upload request carries at most that *in total*, whatever the number of files
    (HTTP 413); a body without ``Content-Length`` is read up to that bound before it is passed on;
  - **private endpoints**: ``/gradio_api/call|run|api/<name>`` of an event marked
    ``api_visibility="private"`` answers 404. (The browser triggers events by index through the queue,
    ``/gradio_api/queue/join``; that path stays open, and every private handler is pure UI: no compute.)
* :func:`check_input_kinds`: every input value is of the right kind before gradio preprocesses it
  (:func:`check_kind`), so None, strings, lists and objects in the wrong place get a message naming the
  parameter, and 1.5 steps are refused on every endpoint alike.
* :func:`compact_session_state`: gradio's per-session ``SessionState`` computes the config of *every*
  component of the app when a session starts (for its deep links, which this app does not offer): 666
  blocks, ~1.2 MB and ~0.1 s of the event loop per fresh session, kept until the session cap evicts it.
  Patched to compute a component's config when the session first uses it (the same dicts, on demand).
* :func:`limit_queue_per_client`: at most ``DL_MAX_JOBS_PER_SESSION`` (6) waiting or running events per
  browser session and ``DL_MAX_JOBS_PER_IP`` (16) per client address, so one client cannot fill the
  queue (``QUEUE_MAX_SIZE`` places) for everyone; beyond it the join is refused at once (HTTP 503) with
  a message saying why.
"""

from __future__ import annotations

import json
import os
import re
from copy import copy

from pipelines import validation

MAX_REQUEST_BYTES = 21 * 2**20
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"frame-ancestors 'self' https://huggingface.co https://*.huggingface.co"),
    (b"referrer-policy", b"strict-origin-when-cross-origin"),
]
_NAMED_CALL = re.compile(r"/gradio_api/(?:call/v2|call|run|api)/([^/]+)/?(?:[^/]+/?)?$")


def private_api_names(demo) -> set[str]:
    """api names of the events marked private (their named routes are refused)."""
    return {fn.api_name for fn in demo.fns.values()
            if getattr(fn, "api_visibility", "public") == "private" and fn.api_name}


class GuardMiddleware:
    """ASGI middleware: security headers, a bound on request bodies, private named endpoints refused."""

    def __init__(self, app, private: set[str] | None = None, max_body: int = MAX_REQUEST_BYTES) -> None:
        self.app, self.private, self.max_body = app, set(private or ()), max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [h for h in SECURITY_HEADERS if h[0] not in have]
            await send(message)

        path = scope.get("path", "")
        m = _NAMED_CALL.search(path)
        if m and m.group(1) in self.private:
            return await _answer(send_with_headers, 404, f"No public endpoint named {m.group(1)!r}.")
        if scope.get("method") == "POST":
            length = dict(scope.get("headers", [])).get(b"content-length")
            if length is not None:
                if not length.isdigit() or int(length) > self.max_body:
                    return await _answer(send_with_headers, 413, f"Request body too large: the limit is "
                                         f"{self.max_body // 2**20} MB per request (all files together).")
            else:  # chunked: read it here, bounded, then replay it
                body, more = bytearray(), True
                while more:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        return
                    body += msg.get("body", b"")
                    more = msg.get("more_body", False)
                    if len(body) > self.max_body:
                        return await _answer(send_with_headers, 413, f"Request body too large: the limit is "
                                             f"{self.max_body // 2**20} MB per request (all files together).")
                replayed = False

                async def receive():  # noqa: F811 - the replay of the bounded body
                    nonlocal replayed
                    if replayed:
                        return {"type": "http.disconnect"}
                    replayed = True
                    return {"type": "http.request", "body": bytes(body), "more_body": False}
        return await self.app(scope, receive, send_with_headers)


async def _answer(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _LazyConfigs(dict):
    """``SessionState.config_values`` filled on demand: ``config[id]`` is computed (as gradio does at session
    start) the first time a caller reads it or lists all of them; what a session sets is kept as set."""

    def __init__(self, blocks_config, root_blocks) -> None:
        super().__init__()
        self._config, self._root = blocks_config, root_blocks

    def _compute(self, key):
        return self._config.config_for_block(key, [], self._config.blocks[key])

    def __missing__(self, key):
        if key not in self._config.blocks or key not in self._root:
            raise KeyError(key)
        value = self[key] = self._compute(key)
        return value

    def _fill(self) -> None:
        """Every component's config, in the app's order (gradio's eager order), before a full listing."""
        missing = [k for k in self._config.blocks if k in self._root and not dict.__contains__(self, k)]
        if missing:
            extra = {k: v for k, v in dict.items(self) if k not in self._root}
            filled = {k: (dict.__getitem__(self, k) if dict.__contains__(self, k) else self._compute(k))
                      for k in self._config.blocks if k in self._root}
            self.clear()
            self.update(filled)
            self.update(extra)

    def items(self):
        self._fill()
        return dict.items(self)

    def values(self):
        self._fill()
        return dict.values(self)


def _lazy_session_init(self, blocks) -> None:
    """gradio.state_holder.SessionState.__init__ (gradio 6) with ``config_values`` computed on demand."""
    self.blocks_config = copy(blocks.default_config)
    self.config_values = _LazyConfigs(self.blocks_config, blocks.blocks)
    self.state_data, self._state_ttl, self.is_closed = {}, {}, False
    self.STATE_TTL_WHEN_CLOSED = 1 if os.getenv("GRADIO_IS_E2E_TEST", None) else 3600


def compact_session_state() -> None:
    """Make every gradio ``SessionState`` of this process compute component configs on demand (process-wide:
    gradio creates sessions inside its routes, before any app code runs)."""
    from gradio import state_holder

    cls = state_holder.SessionState
    if not hasattr(cls, "gradio_init"):
        cls.gradio_init = cls.__init__  # gradio's own, kept for the equivalence test
    cls.__init__ = _lazy_session_init


def client_address(request) -> str:
    """The client's address: behind the Hugging Face proxy (``SPACE_ID`` set) the first X-Forwarded-For
    entry, else the socket's peer."""
    if request is None:
        return "?"
    if os.environ.get("SPACE_ID"):
        fwd = request.headers.get("x-forwarded-for", "")
        if fwd:
            return fwd.split(",")[0].strip()
    return request.client.host if request.client else "?"


def limit_queue_per_client(demo, per_session: int | None = None, per_ip: int | None = None) -> None:
    """Refuse a queue join when its session or address already has that many events waiting or running."""
    per_session = per_session or int(os.environ.get("DL_MAX_JOBS_PER_SESSION", 6))
    per_ip = per_ip or int(os.environ.get("DL_MAX_JOBS_PER_IP", 16))
    queue = demo._queue
    push = queue.push

    async def guarded_push(body, request, username):
        events = [e for q in queue.event_queue_per_concurrency_id.values() for e in q.queue]
        events += [e for job in queue.active_jobs if job for e in job]
        address = client_address(request)
        mine = sum(e.session_hash == body.session_hash for e in events)
        if mine >= per_session:
            return False, (f"You already have {mine} requests waiting or running; wait for them to finish "
                           f"(at most {per_session} per session)."), "queue_full"
        here = sum(client_address(e.request) == address for e in events)
        if here >= per_ip:
            return False, (f"Your address already has {here} requests waiting or running; wait for them to "
                           f"finish (at most {per_ip} per address)."), "queue_full"
        return await push(body, request, username)

    queue.push = guarded_push


def _short(value) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def _choices(block) -> list:
    return [c[1] if isinstance(c, (tuple, list)) else c for c in (block.choices or [])]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_file(v) -> bool:
    return v is None or (isinstance(v, dict) and ("path" in v or "url" in v))


def check_kind(block, value) -> None:
    """One client value for one input component: the right kind, or gr.Error naming the parameter.

    Numbers (sliders, number boxes) must be JSON numbers, and whole numbers where the control steps by
    whole numbers (1.5 steps are refused everywhere, never truncated); ``None`` is refused for a slider
    and passed on for a number box, whose handler refuses it or documents a default (a seed of None is 0). Choices must be one of the control's
    choices (``None`` too is refused), check boxes true/false, text boxes text, files FileData objects
    (upload first: ``/gradio_api/upload``). Ranges are checked by the component and the handler."""
    import gradio as gr

    name = getattr(block, "label", None) or type(block).__name__.lower()
    if isinstance(block, (gr.Slider, gr.Number)):
        if value is None and isinstance(block, gr.Number):
            return  # a number box may be empty: the handler refuses it or documents a default (seed: 0)
        if not _is_number(value):
            raise gr.Error(f"{name} must be a number, got {_short(value)}")
        try:  # finite and in the control's range, with the parameter's name (gradio's own message has none)
            validation.number(name, value, getattr(block, "minimum", None), getattr(block, "maximum", None))
        except ValueError as e:
            raise gr.Error(str(e)) from None
        whole = (isinstance(block, gr.Slider) and float(block.step or 1).is_integer()
                 and float(block.minimum or 0).is_integer()) or getattr(block, "precision", None) == 0
        if whole and value == value and abs(value) != float("inf") and not float(value).is_integer():
            raise gr.Error(f"{name} must be a whole number, got {value:g}")
    elif isinstance(block, gr.Checkbox):
        if not isinstance(value, bool):
            raise gr.Error(f"{name} must be true or false, got {_short(value)}")
    elif isinstance(block, gr.CheckboxGroup) or (isinstance(block, gr.Dropdown) and block.multiselect):
        options = _choices(block)
        if not isinstance(value, list) or any(v not in options for v in value):
            raise gr.Error(f"{name} must be a list of choices from {options}, got {_short(value)}")
    elif isinstance(block, (gr.Dropdown, gr.Radio)):
        options = _choices(block)
        if not getattr(block, "allow_custom_value", False) and value not in options:
            raise gr.Error(f"{name} must be one of {options}, got {_short(value)}")
    elif isinstance(block, (gr.Textbox, gr.ColorPicker)):
        if value is not None and not isinstance(value, str):
            raise gr.Error(f"{name} must be text, got {type(value).__name__} {_short(value)}")
    elif isinstance(block, gr.ImageEditor):
        ok = value is None or (isinstance(value, dict) and _is_file(value.get("background"))
                               and _is_file(value.get("composite")) and isinstance(value.get("layers", []), list)
                               and all(_is_file(x) for x in value.get("layers", [])))
        if not ok:
            raise gr.Error(f"{name} must be an editor value {{'background': file, 'layers': [file, ...], "
                           f"'composite': file}} of uploaded files, got {_short(value)}")
    elif isinstance(block, (gr.File, gr.Image)):
        if not _is_file(value):
            raise gr.Error(f"{name} must be an uploaded file (a FileData object from /gradio_api/upload), "
                           f"got {_short(value)}")


def check_input_kinds(demo) -> None:
    """Every event's inputs go through :func:`check_kind` before gradio preprocesses them, so a wrong kind
    of value gets a message naming the parameter instead of gradio's generic error."""
    preprocess = demo.preprocess_data

    async def checked(block_fn, inputs, state, explicit_call=False):
        props = getattr(block_fn, "component_prop_inputs", ()) or ()
        for i, block in enumerate(block_fn.inputs):
            if i < len(inputs) and not getattr(block, "stateful", False) and i not in props:
                check_kind(block, inputs[i])
        return await preprocess(block_fn, inputs, state, explicit_call)

    demo.preprocess_data = checked
