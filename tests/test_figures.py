"""The variance-share figure draws intervals that need not contain the raw share (population-share intervals)."""

from reprogrid.report.fmt import Est
from reprogrid.report.figures import fig_variance_shares


def test_variance_shares_figure_accepts_an_interval_that_excludes_the_raw_share():
    rows = [
        {"effect": "answer_prefix", "share": Est(0.30, 0.10, 0.50, unit="%"), "above": True, "floor": 0.05,
         "explained_txt": "80%"},
        # the test-inversion interval for the population share lies below the raw (noise-inflated) share
        {"effect": "template_family", "share": Est(0.04, 0.0, 0.02, unit="%"), "above": False, "floor": 0.06,
         "explained_txt": "10%"},
    ]
    fig = fig_variance_shares({"rows": rows, "v_all": Est(0.4, 0.3, 0.5, unit="%"), "residual": None})
    assert not fig.placeholder and fig.png.startswith(b"\x89PNG") and fig.width > 0
