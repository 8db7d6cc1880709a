"""The experiments layer: the paper's protocol built on the library, driven by the command line.

Data flows one way, library → experiments → cli (``tests/test_structure.py`` checks it, lazy
imports included):

- ``config``: immutable experiment and reproduction configurations and their presets (imports no
  other module of this layer);
- ``pipeline``: one experiment cell (data → model → attack → dictionary → denoise → evaluate), each
  stage cached in the run folder and verified on load;
- ``reproduce``: every cell of a preset, then the figures and the report;
- ``tune``: the defence's parameters chosen on a validation split of the training set;
- ``figure_data``: the arrays the figures need, saved by the pipeline; ``figures`` draws only from
  those saved arrays, and ``report`` writes Markdown/HTML only from the saved results;
- ``robustness_run`` / ``robustness_report``: the oblivious-vs-adaptive evaluation and its table.

The library beneath (``ddl.sparse``, ``ddl.defence``, ``ddl.attacks``, ``ddl.robustness``,
``ddl.models``, ``ddl.data``, ``ddl.metrics``, ``ddl.plots``, ``ddl.zoo``) imports nothing from here.
"""
