"""Lecture mode: restore a tab's setup from the URL, a presentation toggle, and a "link to this setup".

URL format (one bookmark per slide)::

    /?tab=guidance&prompt=a+red+circle&scale=7.5&seed=42&present=1

* ``tab`` selects the tab: its id (``start_here``, ``forward_noising``, ``schedules``, ``denoising_viewer``,
  ``inside_model``, ``guidance``, ``clip_guidance``, ``inpainting``, ``train_your_own``) or a short alias
  (``start``, ``forward``, ``viewer``, ``inside``, ``clip``, ``inpaint``, ``train``).
* Bare keys (``prompt``, ``scale``, ...) set the controls of the selected tab; ``<tab>.<key>``
  sets a control of any tab. The keys of each tab are the names its ``create()`` returns.
* ``present=1`` turns on presentation mode (large fonts, high contrast, big images).
* ``run=1`` presses the tab's run button once the preset is applied (the result shows without a click).
* Bad values are never applied: they are listed in a warning and the control keeps its default
  (numbers must be finite and within the control's range, choices must be one of its choices,
  prompts obey :func:`pipelines.validation.prompt`).

UI only: value parsing uses :mod:`pipelines.validation`.
"""

from __future__ import annotations

from urllib.parse import urlencode

import gradio as gr

from demos.style import CSS
from pipelines import validation

ALIASES = {"start": "start_here", "tour": "start_here", "forward": "forward_noising", "viewer": "denoising_viewer",
           "denoise": "denoising_viewer", "clip": "clip_guidance", "inpaint": "inpainting", "cfg": "guidance",
           "inside": "inside_model", "train": "train_your_own",
           "latent": "latent_space"}
PRESENT_KEYS = ("present", "presentation")
RUN_KEY = "run"
RUN_CLASS = "dl-run"  # elem_classes of the button that run=1 presses (one per tab)...
AUTORUN_CLASS = "dl-autorun"  # ...unless the tab has one of these (a preset a URL cannot carry, e.g. a mask)
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


# Injects CSS once per page and applies ?present=1 before the first paint of the controls.
ON_LOAD_JS = """() => {
  if (!document.getElementById('dl-lecture-css')) {
    const s = document.createElement('style'); s.id = 'dl-lecture-css'; s.textContent = %s;
    document.head.appendChild(s);
  }
  const q = new URLSearchParams(window.location.search);
  const p = (q.get('present') ?? q.get('presentation') ?? '').toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(p)) document.body.classList.add('dl-presentation');
}"""
TOGGLE_JS = "(on) => { document.body.classList.toggle('dl-presentation', !!on); }"
# run=1: after the preset is applied, press the selected tab's run button (as a user would).
RUN_JS = """() => {
  const q = new URLSearchParams(window.location.search);
  if (!['1', 'true', 'yes', 'on'].includes((q.get('run') ?? '').toLowerCase())) return;
  const press = (tries) => {  // the visible one: the selected tab's
    const visible = (c) => [...document.querySelectorAll('button.' + c)].find(e => e.offsetParent !== null);
    const b = visible('%s') || visible('%s');
    if (b) b.click(); else if (tries > 0) setTimeout(() => press(tries - 1), 250);
  };
  setTimeout(() => press(40), 300);
}"""
LINK_JS = """(q) => {
  if (!q) return q;
  const u = window.location.origin + window.location.pathname + q;
  try { navigator.clipboard.writeText(u).catch(() => {}); } catch (e) {}
  return u;
}"""


def tab_id(module_name: str) -> str:
    """``demos.guidance`` -> ``guidance`` (the tab's id and the value of ``?tab=``)."""
    return module_name.rsplit(".", 1)[-1]


def resolve_tab(name: str | None, tab_ids) -> str | None:
    if not name:
        return None
    name = name.strip().lower().replace("-", "_")
    name = ALIASES.get(name, name)
    return name if name in tab_ids else None


def parse_value(component, raw: str):
    """A URL string -> a valid value for ``component``; ValueError with a message otherwise."""
    key = getattr(component, "label", None) or "value"
    if isinstance(component, gr.Slider):
        v = validation.number(key, raw, component.minimum, component.maximum)
        return int(v) if float(component.step or 1).is_integer() and v.is_integer() else v
    if isinstance(component, gr.Number):
        v = validation.number(key, raw, component.minimum, component.maximum)
        return int(v) if component.precision == 0 or v.is_integer() else v
    if isinstance(component, gr.Checkbox):
        s = raw.strip().lower()
        if s not in TRUE | FALSE:
            raise ValueError(f"{key} must be 1 or 0, got {raw!r}")
        return s in TRUE
    if isinstance(component, gr.CheckboxGroup):
        values = [c[1] for c in component.choices]
        picked = [s.strip() for s in raw.split(",") if s.strip()]
        for s in picked:
            validation.choice(key, s, values)
        return picked
    if isinstance(component, (gr.Dropdown, gr.Radio)):
        values = [c[1] for c in component.choices]
        for v in values:  # choices may be ints (e.g. sizes); the URL carries text
            if str(v) == raw:
                return v
        return validation.choice(key, raw, values)
    if isinstance(component, gr.ColorPicker):
        s = raw.strip()
        if not (s.startswith("#") and len(s) in (4, 7) and all(c in "0123456789abcdefABCDEF" for c in s[1:])):
            raise ValueError(f"{key} must be a colour like #00c8ff, got {raw!r}")
        return s
    if isinstance(component, gr.Textbox):
        return validation.prompt(raw, key)
    raise ValueError(f"{key} cannot be set from the URL")


def format_value(value) -> str:
    """A control's value -> its URL string (inverse of :func:`parse_value`)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def restore_updates(query: dict[str, str], registry: dict[str, dict]) -> tuple[str | None, list, list[str], bool | None]:
    """Query parameters -> (selected tab id, one value-or-None per control in registry order,
    problems, presentation on/off or None). Pure: no gradio request needed (unit-testable)."""
    tab = resolve_tab(query.get("tab"), registry)
    problems = []
    if query.get("tab") and tab is None:
        problems.append(f"unknown tab {query['tab']!r}; tabs: {', '.join(registry)}")
    known = {"tab", *PRESENT_KEYS, RUN_KEY, "__theme", "view"}
    values = []
    for tid, params in registry.items():
        for key, comp in params.items():
            raw = query.get(f"{tid}.{key}")
            if raw is None and tid == tab:
                raw = query.get(key)
            known.update({f"{tid}.{key}"} | ({key} if tid == tab else set()))
            if raw is None:
                values.append(None)
                continue
            try:
                values.append((parse_value(comp, raw),))
            except ValueError as e:
                problems.append(f"{key}: {e}")
                values.append(None)
    problems += [f"unknown parameter {k!r}" for k in query if k not in known]
    present = None
    for k in PRESENT_KEYS:
        if k in query:
            present = query[k].strip().lower() in TRUE
    return tab, values, problems, present


def link_query(tab: str, registry: dict[str, dict], values: list) -> str:
    """The current tab and its controls' values -> ``?tab=...&key=value...``."""
    pairs = [("tab", tab)]
    i = 0
    for tid, params in registry.items():
        for key in params:
            if tid == tab:
                pairs.append((key, format_value(values[i])))
            i += 1
    return "?" + urlencode(pairs)


def wire(demo: gr.Blocks, tabs: gr.Tabs, tab_items: dict[str, gr.Tab], registry: dict[str, dict],
         present: gr.Checkbox, link_btn: gr.Button, link_box: gr.Textbox) -> None:
    """Connect the URL restore, the presentation toggle and the link button (inside ``demo``)."""
    components = [c for params in registry.values() for c in params.values()]
    current = gr.State(next(iter(registry)))

    def restore(request: gr.Request):
        query = dict(request.query_params) if request is not None else {}
        tab, values, problems, on = restore_updates(query, registry)
        if problems:
            gr.Warning("Some link parameters were ignored: " + "; ".join(problems))
        return ([gr.Tabs(selected=tab) if tab else gr.skip(), tab or gr.skip(),
                 gr.skip() if on is None else on]
                + [gr.skip() if v is None else v[0] for v in values])

    demo.load(None, None, None, js=ON_LOAD_JS % _js_string(CSS))
    demo.load(restore, None, [tabs, current, present, *components], api_name="lecture_restore",
              api_visibility="private", show_progress="hidden").then(
        None, None, None, js=RUN_JS % (AUTORUN_CLASS, RUN_CLASS))
    present.change(None, present, None, js=TOGGLE_JS)
    for tid, item in tab_items.items():
        item.select(lambda t=tid: t, None, current, api_name=f"lecture_tab_{tid}", api_visibility="private",
                    show_progress="hidden")

    def make_link(tab, *values):
        return gr.Textbox(link_query(tab, registry, list(values)), visible=True)  # hidden until first asked

    link_btn.click(make_link, [current, *components], link_box, api_name="lecture_link",
                   api_visibility="private").then(None, link_box, link_box, js=LINK_JS)


def _js_string(s: str) -> str:
    import json

    return json.dumps(s)
