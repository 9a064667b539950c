"""The app's stylesheet (injected once per page by :mod:`demos.lecture`), and the class names the tabs use.

Classes a tab puts on its components (``elem_classes``):

* ``dl-main``: the tab's first row, controls left (``dl-controls``) and results right (``dl-output``).
* ``dl-big``: the tab's main image (large in presentation mode: ≥ 40% of the screen's width).
* ``dl-pixelated``: an image of a 32 px model, upscaled by the browser without smoothing.
* ``dl-gallery``: a gallery whose items show whole, with whole captions under them, at any count
  (gradio's default crops images to squares and captions to one line, inside a fixed height).
* ``dl-intro``: the two plain sentences a tab opens with.
* ``dl-wrap`` (with ``dl-gallery``): as many columns as fit, wrapping onto more rows (one tile per token).
* ``dl-side``: the column of a ``dl-big`` image beside other results (it takes the big image's width).
* ``dl-pairs`` (with ``dl-gallery dl-big``): in presentation mode and on a phone two items per row (in
  presentation each as large as a big image): a before/after pair side by side, the next pair under it.
* ``dl-lanes``: a row of equal columns (the sampler race's lanes), two per row on a phone.
* ``dl-note``: a one-line remark under an input (smaller type, no margins).
"""

from __future__ import annotations

MAIN, CONTROLS, OUTPUT, BIG, PIXELATED, GALLERY, INTRO = (
    "dl-main", "dl-controls", "dl-output", "dl-big", "dl-pixelated", "dl-gallery", "dl-intro")
PAIRS, NOTE = "dl-pairs", "dl-note"

BASE = """
/* slim header: title, presentation toggle and link button on one line */
.gradio-container { padding-top: 6px !important; }
#dl-header { align-items: center; gap: 10px; flex-wrap: nowrap; margin: 0; }
#dl-title { flex: 1 1 auto; min-width: 0; }
#dl-present { width: auto !important; border: 0 !important; box-shadow: none !important; padding: 0 8px !important;
              background: transparent !important; }
#dl-link-btn { width: auto !important; white-space: nowrap; }
.dl-player { align-items: center !important; gap: 6px !important; flex-wrap: wrap; }
.dl-player > button { flex: 0 0 auto !important; width: auto !important; }
.dl-player > .block { flex: 1 1 160px !important; }
.dl-runrow { align-items: flex-end !important; }
.dl-runrow > button { align-self: flex-end; }
#dl-title h1 { font-size: 1.35rem; margin: 0; white-space: nowrap; display: inline; }
#dl-title p { margin: 0; display: inline; }
#dl-present, #dl-link-btn { flex: 0 0 auto !important; min-width: 0 !important; }
.dl-intro p { margin: 0 0 4px 0; }
.dl-note p { margin: 0; font-size: 0.88em; line-height: 1.35; }
.dl-hidden { display: none !important; }

/* Start here: token chips, box headings, links to the tabs */
.dl-chips { display: flex; flex-wrap: wrap; gap: 4px; padding: 4px 0; }
.dl-chip { border: 1px solid var(--border-color-primary); border-radius: 4px; padding: 1px 6px;
           background: var(--background-fill-secondary); font-family: var(--font-mono); font-size: var(--text-sm); }
.dl-chip-marker, .dl-chip-pad { opacity: 0.65; font-style: italic; }
.dl-box-head h4 { margin: 0 0 2px 0; }
.dl-box-head p { margin: 0; font-size: var(--text-sm); }
button.dl-link { width: auto !important; flex: 0 0 auto !important; }

/* pixel art: model images are sent at 32 px and upscaled here, crisp */
.dl-pixelated img, .dl-gallery img { image-rendering: pixelated; object-fit: contain !important; }
.dl-pixelated img { width: 100%; height: 100%; }

/* galleries: whole images and whole captions, columns follow the count, height follows content */
.dl-gallery .grid-wrap { height: auto !important; max-height: none !important; min-height: 0 !important;
                         overflow: visible !important; }
.dl-gallery .grid-container { grid-template-rows: none !important; grid-auto-rows: auto !important;
                               grid-template-columns: repeat(var(--grid-cols), minmax(0, 1fr)) !important; }
.dl-gallery .grid-wrap { padding-top: 34px !important; }  /* below the label badge */
.dl-gallery .thumbnail-item { aspect-ratio: auto !important; height: auto !important; overflow: visible !important;
                              display: flex !important; flex-direction: column; align-items: stretch; }
.dl-gallery .thumbnail-item > img { aspect-ratio: 1 / 1; height: auto !important; width: 100% !important; }
.dl-gallery .caption-label { position: static !important; max-width: none !important; white-space: normal !important;
                             overflow: visible !important; text-overflow: clip !important; border: 0 !important;
                             text-align: center !important; background: transparent !important; }

.dl-gallery.dl-wrap .grid-container { grid-template-columns: repeat(auto-fill, minmax(84px, 1fr)) !important; }

/* examples tables: long labels wrap, wide tables scroll inside their box instead of being cut */
.table-wrap { overflow-x: auto !important; }
.table-wrap th, .table-wrap td { white-space: normal !important; max-width: 180px; }

/* phone: the header on one line, tabs reachable, two images side by side */
@media (max-width: 500px) {
  .gradio-container { padding-left: 4px !important; padding-right: 4px !important; }
  #dl-title p, #dl-present { display: none !important; }  /* no projector on a phone */
  .dl-panels { flex-wrap: wrap !important; gap: 6px !important; }
  .dl-panels > * { min-width: 150px !important; flex: 1 1 45% !important; height: 190px !important; }
  .dl-panels > .dl-optional { display: none !important; }  /* x_t and x̂0 side by side, the scrubber right under */
  .dl-gallery .grid-container { grid-template-columns: repeat(min(var(--grid-cols), 4), minmax(0, 1fr)) !important; }
  .dl-gallery.dl-pairs .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }
  .dl-lanes { flex-wrap: wrap !important; gap: 6px !important; }
  .dl-lanes > * { min-width: 150px !important; flex: 1 1 45% !important; }  /* two race lanes per row */
}
"""

PRESENTATION = """
body.dl-presentation {
  --body-text-size: 22px; --text-xs: 16px; --text-sm: 18px; --text-md: 22px; --text-lg: 26px; --text-xl: 32px;
  --text-xxl: 40px; --input-text-size: 22px; --block-label-text-size: 19px; --block-info-text-size: 18px;
  --block-title-text-size: 22px; --button-large-text-size: 24px; --button-small-text-size: 20px;
  --section-header-text-size: 22px; --checkbox-label-text-size: 20px;
  --body-text-color: #000; --body-text-color-subdued: #111; --block-label-text-color: #000;
  --block-title-text-color: #000; --input-placeholder-color: #333;
  --background-fill-primary: #fff; --background-fill-secondary: #f2f2f2; --block-background-fill: #fff;
  --border-color-primary: #000; --block-border-color: #000; --block-border-width: 2px; --input-border-color: #000;
  --color-accent: #0033cc; --slider-color: #0033cc;
  --button-primary-background-fill: #0033cc; --button-primary-text-color: #fff;
}
body.dl-presentation, body.dl-presentation .gradio-container { background: #fff !important; color: #000 !important; }
body.dl-presentation .prose, body.dl-presentation .prose * { font-size: 22px; color: #000; }
body.dl-presentation #dl-title h1 { font-size: 30px; }
body.dl-presentation button[role=tab] { font-size: 20px; font-weight: 700; color: #000; flex-shrink: 0 !important; }
/* the bigger tab names wrap onto a second row instead of being squeezed and cut */
body.dl-presentation .tab-container { flex-wrap: wrap !important; height: auto !important; }
/* controls become a compact strip above the results; the results get the full width */
body.dl-presentation .dl-main { flex-direction: column !important; }
body.dl-presentation .dl-controls { flex-direction: row !important; flex-wrap: wrap !important; align-items: flex-end;
                                    width: 100% !important; }
body.dl-presentation .dl-controls > * { flex: 1 1 260px !important; min-width: 220px !important; }
body.dl-presentation .dl-controls > .row { flex: 2 1 480px !important; }  /* a prompt and its button */
body.dl-presentation .dl-controls > .dl-note { flex: 1 1 100% !important; order: 99; }  /* under the row */
body.dl-presentation .dl-output { width: 100% !important; }
body.dl-presentation .dl-panels { flex-wrap: wrap !important; }
body.dl-presentation .dl-story { flex-direction: column !important; }  /* Start here: the story top to bottom */
body.dl-presentation .dl-story > .column { width: 100% !important; }
body.dl-presentation .dl-intro { display: none !important; }  /* the lecturer says it */
body.dl-presentation .dl-big { flex: 0 0 auto !important; width: 41vw !important; min-width: 41vw !important;
                               height: 41vw !important; max-height: none !important; }
body.dl-presentation .dl-gallery.dl-big { width: 100% !important; min-width: 0 !important; height: auto !important; }
body.dl-presentation .dl-gallery.dl-big .grid-container {
  grid-template-columns: repeat(var(--grid-cols), min(41vw, calc((100% - 16px) / var(--grid-cols)))) !important; }
body.dl-presentation .dl-big:not(.dl-gallery) img { width: 100% !important; height: 100% !important; max-height: none !important;
                                                     object-fit: contain !important; image-rendering: pixelated; }
body.dl-presentation .dl-controls > #inpaint-editor { flex: 2 1 520px !important; min-height: 420px; }
body.dl-presentation .dl-big .image-container, body.dl-presentation .dl-big .image-frame { height: 100% !important; }
body.dl-presentation .dl-gallery .grid-container { grid-template-columns: repeat(var(--grid-cols), minmax(160px, 1fr)); }
body.dl-presentation .dl-gallery.dl-wrap .grid-container {
  grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)) !important; }
body.dl-presentation .dl-side { flex: 0 0 41vw !important; min-width: 41vw !important; }
body.dl-presentation .dl-gallery.dl-big.dl-pairs .grid-container {
  grid-template-columns: repeat(2, min(41vw, calc((100% - 16px) / 2))) !important; justify-content: center; }
body.dl-presentation .dl-controls > #latent-examples { flex: 3 1 680px !important; }  /* thumbnails in one row */
"""

CSS = BASE + PRESENTATION
