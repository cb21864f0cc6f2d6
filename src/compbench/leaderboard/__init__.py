"""Leaderboards: records -> tidy frame -> per-page tables (ranks, Pareto flags) -> Markdown, HTML, plots.

- :mod:`~compbench.leaderboard.frame`: ``to_frame(records)`` (one row per record), ``aggregate`` (one row per
  cell, mean/std/n over seeds);
- :mod:`~compbench.leaderboard.ranking`: ``build_leaderboards`` (method x budget per track, task and device, ranks
  among in-budget ok cells, Pareto flags), ``build_overview``;
- :mod:`~compbench.leaderboard.plots`: byte-deterministic PNG Pareto plots (matplotlib Agg);
- :mod:`~compbench.leaderboard.render`: deterministic Markdown and self-contained HTML;
- :mod:`~compbench.leaderboard.report`: ``render_report`` (pure) and ``write_report`` (what ``compbench report`` calls).
"""
