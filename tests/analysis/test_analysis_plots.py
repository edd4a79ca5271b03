"""Figures: written only when there is data, never blank, reference lines where a human value exists."""

from pathlib import Path

import numpy as np
from PIL import Image

from analysis import plots
from analysis.report import build_report
from analysis.runs import load_runs, runs_frame
from analysis.sweeps import QUALITY_PARAMS, SPEED_PARAMS, swept
from tests.analysis.conftest import config_for, metrics_for, write_job


def assert_real_png(path: Path, min_bytes: int = 5000) -> None:
    """A PNG of sane size that is not one flat colour."""
    assert path.is_file() and path.stat().st_size > min_bytes, path
    image = Image.open(path)
    image.verify()
    pixels = np.asarray(Image.open(path).convert("L"), dtype=float)
    height, width = pixels.shape
    assert 200 <= width <= 4000 and 150 <= height <= 4000, (path.name, width, height)
    assert pixels.var() > 10, f"{path.name} looks blank"
    assert (pixels < 128).mean() > 0.002, f"{path.name} has almost no dark pixels (no lines, no text)"


def test_sweep_figures_are_written_and_not_blank(top_p_dir, tmp_path):
    frame = runs_frame(load_runs([top_p_dir]).runs)
    (curve_set,) = swept(frame, QUALITY_PARAMS).values()
    plot = plots.quality_curves(frame, "decoding.top_p", curve_set, tmp_path)
    assert plot.file == "quality_vs_decoding_top_p.png"
    assert_real_png(tmp_path / plot.file)
    for made in (plots.perplexity_vs_generation(frame, tmp_path), plots.quality_diversity(frame, tmp_path)):
        assert_real_png(tmp_path / made.file)


def test_no_data_no_figure(tmp_path):
    metrics = {k: v for k, v in metrics_for(3.0).items() if not k.startswith(("gen/", "speed/"))}
    write_job(tmp_path / "runs" / "ppl_only", config_for({"name": "greedy", "do_sample": False}), metrics)
    frame = runs_frame(load_runs([tmp_path / "runs"]).runs)
    assert plots.perplexity_vs_generation(frame, tmp_path) is None
    assert plots.quality_diversity(frame, tmp_path) is None
    assert not list(tmp_path.glob("*.png"))


def test_speed_figures_for_cache_settings_and_batch_sizes(tmp_path):
    decoding = {"name": "greedy", "do_sample": False}
    for cache, speed in (("none", 20.0), ("dynamic", 80.0), ("static", 120.0)):
        write_job(tmp_path / "runs" / f"cache={cache}", config_for(decoding, cache=cache),
                  metrics_for(2.0, tok_s=speed))
    for batch, speed in ((1, 30.0), (4, 90.0)):
        write_job(tmp_path / "runs" / f"b={batch}", config_for(decoding, batch_size=batch),
                  metrics_for(2.0, tok_s=speed))
    frame = runs_frame(load_runs([tmp_path / "runs"]).runs)
    found = swept(frame, SPEED_PARAMS)
    for param in ("cache.setting", "prompts.batch_size"):
        plot = plots.speed_curves(frame, param, found[param], tmp_path)
        assert_real_png(tmp_path / plot.file)


def test_a_report_of_a_sweep_lists_its_figures_beside_the_page(top_p_dir, tmp_path):
    page = build_report([str(top_p_dir)], tmp_path / "report")
    html = page.read_text()
    pngs = sorted(p.name for p in page.parent.glob("*.png"))
    assert pngs == ["perplexity_vs_generation.png", "quality_vs_decoding_top_p.png", "quality_vs_diversity.png"]
    for name in pngs:
        assert f'src="{name}"' in html
        assert_real_png(page.parent / name)
    assert (page.parent / "runs.csv").read_text().count("\n") == 4  # header + three runs


def test_values_not_measurable_are_left_out_of_the_figures(tmp_path):
    """null (not measurable) is not a number to draw: a panel whose every value is null is not drawn, and a
    figure with some nulls is drawn from the rest."""
    for p, mauve in ((0.5, None), (0.9, None), (1.0, None)):
        metrics = metrics_for(10.0 * p, rep=1.0)
        metrics["gen/mauve"] = mauve
        metrics["meta/not_measurable"] = {"gen/mauve": "every generated text empty"}
        write_job(tmp_path / "runs" / f"top_p={p}", config_for({"name": "top_p", "do_sample": True, "top_k": 0,
                                                                "top_p": p}), metrics)
    frame = runs_frame(load_runs([tmp_path / "runs"]).runs)
    (curve_set,) = swept(frame, QUALITY_PARAMS).values()
    plot = plots.quality_curves(frame, "decoding.top_p", curve_set, tmp_path)
    assert "MAUVE" not in plot.caption and "Generation perplexity" in plot.caption
    frame.loc[frame.index[1], "gen/ppl"] = float("nan")  # one gap in the perplexity bars and curve
    assert_real_png(tmp_path / plots.quality_curves(frame, "decoding.top_p", curve_set, tmp_path).file)
    assert_real_png(tmp_path / plots.perplexity_vs_generation(frame, tmp_path).file)
