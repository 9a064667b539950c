"""guard.compact_session_state: a session computes component configs on demand, and whatever gradio reads
from them (a component's config, a session's full listing for deep links) is what gradio's own eager
SessionState gives, also after events set values and replace components."""

from __future__ import annotations

import json

import gradio as gr
from gradio import state_holder

from demos import guard


def _demo() -> gr.Blocks:
    with gr.Blocks() as demo:
        a = gr.Slider(0, 10, value=3, label="a")
        b = gr.Textbox("hello", label="b")
        with gr.Row():
            c = gr.Image(label="c")
            st = gr.State({"x": 1}, time_to_live=60)
        a.change(lambda v: v, a, b)
    demo.parts = a, b, c, st
    return demo


def _sessions(demo):
    guard.compact_session_state()
    cls = state_holder.SessionState
    eager = cls.__new__(cls)
    cls.gradio_init(eager, demo)
    return eager, cls(demo)


def _listing(session) -> str:
    return json.dumps(list(session.components), default=str)


def test_a_fresh_session_computes_no_config_until_asked():
    demo = _demo()
    eager, lazy = _sessions(demo)
    assert len(dict.keys(lazy.config_values)) == 0 < len(eager.config_values)
    assert sorted(vars(eager)) == sorted(vars(lazy))  # same attributes as gradio's (version drift shows here)
    assert _listing(lazy) == _listing(eager)


def test_values_set_and_components_replaced_list_as_gradio_does():
    demo = _demo()
    a, b, c, st = demo.parts
    eager, lazy = _sessions(demo)
    for s in (eager, lazy):
        s._update_value_in_config(b._id, "typed")  # an event's input value
        s[c._id] = gr.Image(label="replaced", render=False)  # an update that rebuilds a component
        s._update_config(c._id)
        s[st._id] = {"x": 2}  # a gr.State set by an event
        s._update_value_in_config(a._id, 7)
    assert lazy.config_values[b._id]["props"]["value"] == "typed"
    assert _listing(lazy) == _listing(eager)
    assert lazy[st._id] == eager[st._id] == {"x": 2}
    assert [x[1] for x in lazy.state_components] == [x[1] for x in eager.state_components]
